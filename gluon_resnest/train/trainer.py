"""The classification training loop: recipe, checkpoints, resume, signals, export.

``run(cfg, out_dir)`` trains a resolved config (see :mod:`.config`) and returns a summary.
The run folder receives ``config.yaml``, ``metrics.csv``, ``curves.png``, ``last.ckpt``,
``best.ckpt`` and ``export/model-{symbol.json,0000.params,meta.json}``.

Exact resume: the data order and augmentation come from ``(seed, epoch, sample)``, mixup from
``(seed, epoch, iteration)``, MXNet's generator (DropBlock, dropout) is reseeded from
``(seed, epoch, iteration)`` before each iteration, the learning rate is a function of the
iteration, and checkpoints carry parameters, optimizer states and the position inside the
epoch, so ``--resume`` continues with the very batches and updates an uninterrupted run makes.
"""
from __future__ import annotations

import csv
import math
import os
import time
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..deploy.artifact import load_artifact
from ..deploy.artifact import save as save_artifact
from ..model import profile
from ..model.parameters import load_arrays, read_arrays
from ..model.resnest import build
from ..model.variants import VARIANTS, resolve_name
from ..weights.gluoncv import resolve_pretrained
from . import checkpoint as ckpt_mod
from . import recipe
from .config import format_config
from .data import BatchLoader, open_data
from .distributed import parse_devices, setup_parallel
from .inference import evaluate, meta_from_config
from .loop import (
    NonFiniteLossError,
    PoolingNoteFilter,
    RunLog,
    SignalGuard,
    TrainingInterrupted,
    atomic_copy,
    atomic_write,
    iteration_seed,
    non_finite_error,
    progress_bar,
    save_guarded,
    write_run_config,
)

__all__ = ["run", "Trainer", "build_net", "fit_to_data", "TrainingInterrupted",
           "NonFiniteLossError", "default_out_dir"]

Callback = Callable[[str, "Trainer", Dict[str, Any]], None]
_METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5",
                  "images_per_s", "seconds", "dropblock_prob"]


def default_out_dir(cfg: Dict[str, Any]) -> str:
    name = cfg["run"].get("name") or cfg["model"]["name"]
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def fit_to_data(cfg: Dict[str, Any], fixed: Collection[str] = ()
                ) -> Tuple[Dict[str, Any], List[str]]:
    """A fine-tuning config sized to its training data (:func:`recipe.size_to_data` with the
    training split's image and class counts; keys in ``fixed`` are kept). With
    ``model.pretrained: true`` GluonCV's file for the variant must be there (nothing is
    downloaded). Returns the config and one line per decision."""
    train_src, _ = open_data(cfg["data"])
    names = train_src.classes
    if names is None:                    # RecordIO without its .lst: read the labels
        names = range(max(getattr(train_src, "source", train_src).scan_labels()) + 1)
    cfg, notes = recipe.size_to_data(cfg, len(train_src), len(names), fixed)
    m = cfg["model"]
    if m["pretrained"] is True:
        try:
            notes.append(f"pretrained weights: {resolve_pretrained(m['name'], True)}")
        except FileNotFoundError as err:
            raise ValueError(f"fine-tuning {m['name']} starts from its ImageNet weights, and "
                             f"none were found ({err}). Give model.pretrained=FILE (a GluonCV "
                             f".params file, a .ckpt or a run folder), model.pretrained=null to "
                             f"train from scratch, or -c CONFIG") from None
    elif m["pretrained"]:
        notes.append(f"pretrained weights: {m['pretrained']}")
    else:
        notes.append("no pretrained weights (model.pretrained=null): training from scratch")
    return cfg, notes


def final_dropblock(cfg: Dict[str, Any]) -> float:
    m = cfg["model"]
    if m["dropblock_prob"] is not None:
        return float(m["dropblock_prob"])
    return float(m["kwargs"].get("dropblock_prob",
                                 VARIANTS[resolve_name(m["name"])].dropblock_prob))


def build_net(cfg: Dict[str, Any], classes: int):
    """The (uninitialised) ResNeSt a config describes, with ``classes`` outputs."""
    m = cfg["model"]
    kw = dict(m["kwargs"])
    kw["dropblock_prob"] = final_dropblock(cfg)
    if m["final_drop"] is not None:
        kw["final_drop"] = m["final_drop"]
    kw.setdefault("last_gamma", m["last_gamma"])
    kw.setdefault("use_global_stats", m["use_global_stats"])
    try:
        return build(m["name"], classes=classes, **kw)
    except TypeError as err:
        raise ValueError(f"model.kwargs {m['kwargs']!r} do not fit {m['name']}: {err}") from None


def _initializer(kind: str):
    import mxnet as mx
    if kind == "msra":
        return mx.init.MSRAPrelu()
    return mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


class Trainer:
    """One training run of a resolved classification config."""

    def __init__(self, cfg: Dict[str, Any], out_dir: Optional[str] = None,
                 resume: Optional[str] = None, log: Callable[[str], None] = print) -> None:
        import mxnet as mx
        self.mx, self.cfg, self.log = mx, cfg, log
        run_cfg, o = cfg["run"], cfg["optim"]
        self.resume_meta = ckpt_mod.read_meta(resume) if resume else None
        self.parallel = setup_parallel(run_cfg["kvstore"])
        self.rank = self.parallel.rank
        self.ctx = parse_devices(run_cfg["devices"])
        nw, nd = self.parallel.num_workers, len(self.ctx)
        if o["batch_size"] % (nw * nd):
            raise ValueError(f"optim.batch_size {o['batch_size']} must be divisible by "
                             f"{nw} worker(s) x {nd} device(s)")
        self.seed = int(run_cfg["seed"])
        out = out_dir or run_cfg["out"] or default_out_dir(cfg)
        self.out = out if self.rank == 0 else os.path.join(out, f"rank{self.rank}")
        self.log = RunLog(os.path.join(self.out, "train.log"), log)

        # data
        self.train_src, self.val_src = open_data(cfg["data"])
        self.class_names = self._classes()
        self.classes = len(self.class_names)
        d = cfg["data"]
        self.train_loader = BatchLoader(
            self.train_src, o["batch_size"], d, cfg["aug"], train=True, seed=self.seed,
            workers=d["workers"], on_corrupt=d["on_corrupt"], part=(self.rank, nw),
            classes=self.classes)
        self.val_loader = None
        if self.val_src is not None:
            self.val_loader = BatchLoader(
                self.val_src, max(1, o["batch_size"] // nw), d, train=False,
                workers=d["workers"], on_corrupt=d["on_corrupt"], classes=self.classes)
        self.iters = len(self.train_loader)
        self.base_lr = recipe.scaled_lr(o["lr"], o["batch_size"], o["lr_batch_size"])

        # network
        mx.random.seed(self.seed)
        np.random.seed(self.seed)
        self.net = build_net(cfg, self.classes)
        self.final_p = final_dropblock(cfg)
        self.net.initialize(_initializer(cfg["model"]["init"]), ctx=self.ctx)
        self.pretrained_note = self._load_pretrained() if cfg["model"]["pretrained"] else None
        self.no_wd = recipe.exclude_from_wd(self.net) if o["no_wd"] else []
        if run_cfg["hybridize"]:
            self.net.hybridize(static_alloc=True, static_shape=True)
        opt_params: Dict[str, Any] = {"learning_rate": self.base_lr, "wd": o["wd"]}
        if o["optimizer"] in ("nag", "sgd"):
            opt_params["momentum"] = o["momentum"]
        self.trainer = self.parallel.make_trainer(self.net.collect_params(), o["optimizer"],
                                                  opt_params)
        self.loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)

        # state
        self.epoch, self.iteration = 0, 0
        self.history: List[Dict[str, Any]] = []
        self.best: Dict[str, Any] = {}
        self.partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.guard = SignalGuard(self.log)
        self.pooling_note = PoolingNoteFilter()
        if resume:
            self._resume(resume)

    # -- setup helpers ----------------------------------------------------------------------
    def _classes(self) -> List[str]:
        names = self.train_src.classes
        wanted = self.cfg["model"]["classes"]
        if names is None and wanted is None:  # RecordIO without its .lst: read the labels
            src = getattr(self.train_src, "source", self.train_src)
            names = [str(c) for c in range(max(src.scan_labels()) + 1)]
        if names is None:
            return [str(c) for c in range(wanted)]
        if wanted is not None and wanted != len(names):
            raise ValueError(f"class-count mismatch: the training data "
                             f"({self.train_src.description}) has {len(names)} classes "
                             f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}) but "
                             f"model.classes is {wanted}; set model.classes={len(names)} or "
                             f"model.classes=null to use the data's")
        return list(names)

    def _load_pretrained(self) -> str:
        src = self.cfg["model"]["pretrained"]
        if src is True or (isinstance(src, str) and not os.path.exists(src)
                           and not src.endswith((".params", ".ckpt"))):
            path = resolve_pretrained(self.net.variant, src)
            loaded = read_arrays(path)
        elif isinstance(src, str) and (src.endswith(".ckpt") or os.path.isdir(src)):
            path = ckpt_mod.resolve_checkpoint(src)
            loaded = ckpt_mod.read_params(path)
        elif isinstance(src, str):
            if not os.path.isfile(src):
                raise FileNotFoundError(f"model.pretrained: {src!r} does not exist")
            path = src
            loaded = read_arrays(path)
        else:
            raise ValueError(f"model.pretrained must be a file path or true, got {src!r}")
        fc_w = loaded.get("fc.weight")
        same_head = fc_w is not None and fc_w.shape[0] == self.classes
        load_arrays(self.net, loaded, f"model.pretrained {path!r}", ctx=self.ctx,
                    skip=() if same_head else ("fc.",))
        head = "classifier loaded" if same_head else \
            f"classifier re-initialised for {self.classes} classes"
        return f"pretrained weights from {src} ({head})"

    def _resume(self, path: str) -> None:
        meta = ckpt_mod.load_checkpoint(path, self.net, self.trainer, ctx=self.ctx)
        if meta["classes"] != self.class_names:
            raise ValueError(f"checkpoint {path!r} was trained on classes "
                             f"{meta['classes'][:5]}..., the data has {self.class_names[:5]}...")
        self.epoch, self.iteration = meta["epoch"], meta["iteration"]
        self.history, self.best = meta["history"], meta.get("best", {})
        self.partial = meta.get("partial") or self.partial
        self.log(f"resumed from {path}: epoch {self.epoch + 1}, iteration {self.iteration}")

    # -- checkpoints and logs ---------------------------------------------------------------
    def _meta(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "iteration": self.iteration, "config": self.cfg,
                "classes": self.class_names, "history": self.history, "best": self.best,
                "partial": self.partial, "variant": self.net.variant,
                "mxnet_rng": {"seed": self.seed, "reseeded": "every iteration from (seed, "
                                                             "epoch, iteration)"},
                "saved": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save(self, name: str = "last.ckpt") -> str:
        """Write a checkpoint atomically, unless a parameter became NaN/Inf
        (:class:`NonFiniteLossError`; the previous file stays)."""
        return save_guarded(os.path.join(self.out, name), self.net, self.trainer, self._meta(),
                            f"epoch {self.epoch + 1}, iteration {self.iteration}",
                            self._advice())

    def _advice(self, lr: Optional[float] = None) -> str:
        o = self.cfg["optim"]
        now = f", {lr:.4g} at this step" if lr is not None else ""
        return (f"Lower optim.lr (now {o['lr']} per {o['lr_batch_size']} images{now}) or check "
                f"the data")

    def _write_metrics(self) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=_METRIC_FIELDS)
                w.writeheader()
                for row in self.history:
                    w.writerow({k: row.get(k, "") for k in _METRIC_FIELDS})
        atomic_write(os.path.join(self.out, "metrics.csv"), write)

    def _plot(self) -> Optional[str]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        if not self.history:
            return None
        ep = [r["epoch"] for r in self.history]
        fig = Figure(figsize=(10, 3.6))
        FigureCanvasAgg(fig)
        ax1, ax2, ax3 = fig.subplots(1, 3)
        ax1.plot(ep, [r["train_loss"] for r in self.history], "o-", label="train")
        ax2.plot(ep, [100 * r["train_acc"] for r in self.history], "o-",
                 label="train (augmented)")
        if self.val_loader is not None:
            ax1.plot(ep, [r["val_loss"] for r in self.history], "o-", label="validation")
            ax2.plot(ep, [100 * r["val_top1"] for r in self.history], "o-",
                     label="validation top-1")
        ax1.set_yscale("log")
        ax3.plot(ep, [r["lr"] for r in self.history], "o-")
        for ax, title in ((ax1, "loss"), (ax2, "accuracy %"), (ax3, "learning rate (epoch end)")):
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        ax1.legend()
        ax2.legend()
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
        path = os.path.join(self.out, "curves.png")
        fig.savefig(path, dpi=90)
        return path

    # -- the loop ---------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        o = self.cfg["optim"]
        return recipe.lr_at(step, self.iters, o["epochs"], self.base_lr, o["warmup_epochs"],
                            o["warmup_lr"], o["final_lr"], o["schedule"])

    def _train_step(self, epoch: int, it: int, x: np.ndarray, y: np.ndarray) -> tuple:
        mx, o = self.mx, self.cfg["optim"]
        targets = recipe.smooth_targets(y, self.classes, o["label_smoothing"])
        hard = y
        if o["mixup"] > 0 and epoch < o["epochs"] - o["mixup_off_epochs"]:
            lam = float(np.random.default_rng([self.seed, epoch, it, 0x313]).beta(o["mixup"],
                                                                                    o["mixup"]))
            x, targets = recipe.mixup(x, targets, lam)
            hard = y if lam >= 0.5 else y[::-1]
        lr = self.lr_at(epoch * self.iters + it)
        self.trainer.set_learning_rate(lr)
        mx.random.seed(iteration_seed(self.seed, epoch, it, 0xD20))
        xs = mx.gluon.utils.split_and_load(x, self.ctx, even_split=False)
        ts = mx.gluon.utils.split_and_load(targets, self.ctx, even_split=False)
        with mx.autograd.record():
            outs = [self.net(a) for a in xs]
            losses = [self.loss_fn(out, t) for out, t in zip(outs, ts)]
        mx.autograd.backward(losses)
        loss_sum = float(sum(loss.sum().asscalar() for loss in losses))
        if not math.isfinite(loss_sum):
            raise non_finite_error(f"loss became {loss_sum}", f"epoch {epoch + 1}, iteration "
                                   f"{it}", os.path.join(self.out, "last.ckpt"),
                                   self._advice(lr), f"epoch {len(self.history)}")
        self.trainer.step(self.parallel.step_batch(len(y)))
        pred = np.concatenate([out.asnumpy() for out in outs]).argmax(axis=1)
        return loss_sum, int((pred == hard).sum()), lr

    def fit(self, callbacks: Sequence[Callback] = ()) -> Dict[str, Any]:
        """Train from the current position to ``optim.epochs`` (or ``run.stop_after``).
        What it prints also goes to ``train.log`` in the run folder, with the config and a
        closing summary line."""
        with self.log:
            summary = self._fit(callbacks)
            self.log.note(self._summary_line(summary))
        return summary

    def _summary_line(self, s: Dict[str, Any]) -> str:
        what = "stopped (run.stop_after)" if s["status"] == "stopped" else "finished"
        text = f"{what} after epoch {s['epochs']} of {self.cfg['optim']['epochs']} in " \
               f"{s['seconds']:.1f} s (this run)"
        best, final = s.get("best") or {}, s.get("final") or {}
        if best.get("val_top1") is not None:
            text += f"; best epoch {best['epoch']} (validation top-1 {100 * best['val_top1']:.2f}%)"
        if "val_top1" in final:
            text += (f"; final validation top-1 {100 * final['val_top1']:.2f}%, top-5 "
                     f"{100 * final['val_top5']:.2f}%")
        if s.get("export"):
            text += f"; exported {s['export']['prefix']} (epoch {s['export']['epoch']})"
        return text

    def _fit(self, callbacks: Sequence[Callback]) -> Dict[str, Any]:
        o, run_cfg = self.cfg["optim"], self.cfg["run"]
        write_run_config(self.out, self.cfg)
        self.log.note("resolved config: " + format_config(self.cfg, compact=True))
        self._describe()
        stop_after = run_cfg["stop_after"]
        t_start = time.time()
        status = "finished"
        try:
            with self.guard:
                while self.epoch < o["epochs"]:
                    if stop_after is not None and self.epoch >= stop_after:
                        status = "stopped"
                        break
                    self._run_epoch(callbacks)
                    if self.guard.received is not None:
                        raise TrainingInterrupted(self.guard.received,
                                                  os.path.join(self.out, "last.ckpt"),
                                                  f"epoch {self.epoch + 1}, iteration 0")
        finally:
            self.train_loader.close()
            if self.rank == 0:
                self._plot()
        summary = {"status": status, "out": self.out, "epochs": self.epoch,
                   "seconds": time.time() - t_start, "history": self.history,
                   "best": self.best, "skipped": len(self.train_loader.skipped)}
        if self.history:
            summary["final"] = self.history[-1]
        if status == "finished" and self.rank == 0 and run_cfg["export"]:
            summary["export"] = self.export_best()
        if self.val_loader is not None:
            self.val_loader.close()
        return summary

    def _describe(self) -> None:
        o = self.cfg["optim"]
        d = self.cfg["data"]
        params = profile.count_params(self.net) / 1e6
        lines = [f"model: {self.net.variant} {self.cfg['model']['kwargs'] or ''} "
                 f"({params:.2f}M parameters, {self.classes} classes)",
                 f"data: {self.train_src.description}; validation: "
                 f"{self.val_src.description if self.val_src is not None else 'none'}",
                 f"recipe: {o['optimizer']} batch {o['batch_size']}, lr {o['lr']} x "
                 f"{o['batch_size']}/{o['lr_batch_size']} = {self.base_lr:.4g}, {o['schedule']}"
                 f" after {o['warmup_epochs']} warm-up epoch(s), {o['epochs']} epochs, label "
                 f"smoothing {o['label_smoothing']}, mixup {o['mixup']}, DropBlock 0 -> "
                 f"{self.final_p}, AutoAugment {'on' if self.cfg['aug']['auto_augment'] else 'off'}"
                 f", no weight decay on {len(self.no_wd)} bias/BN tensors, "
                 f"{d['train_size']}px train / {d['test_size']}px test",
                 f"devices: {', '.join(str(c) for c in self.ctx)}; kvstore "
                 f"{self.parallel.kind} (worker {self.rank} of {self.parallel.num_workers})",
                 f"run folder: {self.out}"]
        if self.pretrained_note:
            lines.insert(1, self.pretrained_note)
        for line in lines:
            self.log(line)

    def _run_epoch(self, callbacks: Sequence[Callback]) -> None:
        o, run_cfg = self.cfg["optim"], self.cfg["run"]
        epoch = self.epoch
        p = recipe.dropblock_prob_at(epoch, o["epochs"], self.final_p) if self.final_p else 0.0
        recipe.set_dropblock(self.net, p)
        acc = self.partial
        skipped_before = len(self.train_loader.skipped)
        bar = progress_bar(run_cfg["progress"] and self.rank == 0, total=self.iters,
                           initial=self.iteration, desc=f"epoch {epoch + 1}/{o['epochs']}",
                           unit="batch", leave=True, dynamic_ncols=True)
        t0 = time.time() - acc["seconds"]
        lr = self.lr_at(epoch * self.iters + self.iteration)
        try:
            for it, x, y in self.train_loader.batches(epoch, self.iteration):
                if len(y) == 0:
                    self.iteration = it + 1
                    continue
                with self.pooling_note(x.shape):
                    loss_sum, correct, lr = self._train_step(epoch, it, x, y)
                acc["loss"] += loss_sum
                acc["correct"] += correct
                acc["seen"] += len(y)
                acc["seconds"] = time.time() - t0
                self.iteration = it + 1
                bar.update(1)
                rate = acc["seen"] * self.parallel.num_workers / max(acc["seconds"], 1e-9)
                bar.set_postfix(loss=f"{acc['loss'] / acc['seen']:.3f}",
                                acc=f"{100 * acc['correct'] / acc['seen']:.1f}%",
                                lr=f"{lr:.3g}", img_s=f"{rate:.0f}", refresh=False)
                for cb in callbacks:
                    cb("iteration_end", self, {"epoch": epoch, "iteration": it})
                if self.guard.received is not None and self.iteration < self.iters:
                    bar.close()
                    path = self.save()
                    raise TrainingInterrupted(self.guard.received, path,
                                              f"epoch {epoch + 1}, iteration {self.iteration}")
        finally:
            bar.close()
        self.parallel.average_aux(self.net)
        seconds = time.time() - t0
        row: Dict[str, Any] = {
            "epoch": epoch + 1, "lr": lr, "train_loss": acc["loss"] / max(acc["seen"], 1),
            "train_acc": acc["correct"] / max(acc["seen"], 1),
            "images_per_s": acc["seen"] * self.parallel.num_workers / max(seconds, 1e-9),
            "seconds": seconds, "dropblock_prob": p}
        if self.val_loader is not None:
            m = evaluate(self.net, self.val_loader, self.ctx[0])
            row.update(val_loss=m["loss"], val_top1=m["top1"], val_top5=m["top5"])
        self.history.append(row)
        self.epoch, self.iteration = epoch + 1, 0
        self.partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        score = row.get("val_top1", row["train_acc"])
        improved = not self.best or score > self.best.get("score", -1)
        if improved:
            self.best = {"epoch": epoch + 1, "score": score,
                         "val_top1": row.get("val_top1"), "train_acc": row["train_acc"]}
        last = self.save()
        if improved:
            atomic_copy(last, os.path.join(self.out, "best.ckpt"))
        self._write_metrics()
        if self.rank == 0 and seconds > 60:   # long epochs: keep the curves current
            self._plot()
        self.log(self._epoch_line(row, len(self.train_loader.skipped) - skipped_before))
        for cb in callbacks:
            cb("epoch_end", self, row)

    def _epoch_line(self, row: Dict[str, Any], skipped: int) -> str:
        s = (f"epoch {row['epoch']}/{self.cfg['optim']['epochs']}: train loss "
             f"{row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%")
        if "val_top1" in row:
            s += (f" | val loss {row['val_loss']:.4f} top-1 {100 * row['val_top1']:.2f}% "
                  f"top-5 {100 * row['val_top5']:.2f}%")
        s += f" | lr {row['lr']:.4g} | {row['images_per_s']:.0f} img/s | {row['seconds']:.1f} s"
        if skipped:
            first = self.train_loader.skipped[-skipped]
            s += f" | skipped {skipped} unreadable image(s), first: {first[1]}"
        return s

    # -- export -----------------------------------------------------------------------------
    def export_best(self) -> Dict[str, Any]:
        """Export the best checkpoint's network as an artifact (symbol files + metadata) and
        check the exported model's predictions on the validation split against the
        network's own."""
        best = os.path.join(self.out, "best.ckpt")
        load_arrays(self.net, ckpt_mod.read_params(best), f"checkpoint {best!r}", ctx=self.ctx)
        prefix = os.path.join(self.out, "export", "model")
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        meta = meta_from_config(self.cfg, self.class_names, epoch=self.best.get("epoch"))
        save_artifact(self.net, prefix, meta.updated(format="symbol"))
        result: Dict[str, Any] = {"prefix": prefix, "epoch": self.best.get("epoch")}
        if self.val_loader is None:
            result["checked"] = 0
            return result
        exported = load_artifact(prefix, ctx=self.ctx[0])
        ours = evaluate(self.net, self.val_loader, self.ctx[0])
        theirs = evaluate(exported, self.val_loader, self.ctx[0])
        diff = float(np.abs(ours["logits"] - theirs["logits"]).max())
        same = bool((ours["logits"].argmax(1) == theirs["logits"].argmax(1)).all())
        result.update(checked=ours["count"], max_abs_diff=diff, predictions_equal=same,
                      val_top1=ours["top1"], val_top5=ours["top5"])
        if not same or diff > 1e-3:
            raise RuntimeError(f"the exported model at {prefix} does not reproduce the trained "
                               f"network (max |logit difference| {diff:.3g}, identical "
                               f"predictions: {same})")
        return result


def run(cfg: Dict[str, Any], out_dir: Optional[str] = None, resume: Optional[str] = None,
        callbacks: Sequence[Callback] = (), log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train a resolved classification config; see :class:`Trainer`."""
    return Trainer(cfg, out_dir, resume, log).fit(callbacks)
