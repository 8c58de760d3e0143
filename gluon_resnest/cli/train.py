"""``gluon-resnest train | eval | predict | demo-data``: parse, call the library, print."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Dict, List, Tuple

__all__ = ["add_commands"]

_TRAIN_EPILOG = """\
examples:
  gluon-resnest train                                  # the embedded demo (configs/demo.yaml)
  gluon-resnest train optim.epochs=5 --out runs/quick  # key=value overrides, own run folder
  gluon-resnest train --data ~/imagenet --model resnest101   # configs/imagenet/resnest101.yaml
  gluon-resnest train -c finetune --data my_images/ model.pretrained=resnest50.params
  gluon-resnest train --resume runs/demo-20240101-120000     # continue exactly where it stopped

Outputs (run folder): config.yaml, metrics.csv, curves.png, last.ckpt, best.ckpt,
export/model-symbol.json + model-0000.params + model-meta.json.
Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and exits; --resume continues from it.
"""


def _overrides(args: argparse.Namespace) -> List[Tuple[str, Any]]:
    from ..train.config import parse_override
    out = [parse_override(t) for t in args.overrides]
    out += [(k, v) for k, v in (args.set or [])]
    return out


def _config_name(args: argparse.Namespace) -> Any:
    if args.config:
        return args.config
    if args.task in ("detection", "segmentation"):
        return None
    if args.data and args.data != "demo":
        from ..model.variants import resolve_name
        return f"imagenet/{resolve_name(args.model or 'resnest50')}"
    return "demo"


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train import checkpoint
    from ..train.config import format_config, load_config, resolve
    overrides = _overrides(args)
    if args.resume and args.config:
        raise ValueError("give either --resume (the run's own config is used) or -c/--config")
    shortcuts: List[Tuple[str, Any]] = []
    if args.data is not None:
        shortcuts += [("data.train", args.data), ("data.val", None)]
    if args.model:
        shortcuts.append(("model.name", args.model))
    if args.epochs is not None:
        shortcuts.append(("optim.epochs", args.epochs))
    if args.batch_size is not None:
        shortcuts.append(("optim.batch_size", args.batch_size))
    resume = None
    if args.resume:
        from ..train.config import apply_overrides
        resume = checkpoint.resolve_checkpoint(args.resume)
        meta = checkpoint.read_meta(resume)
        cfg = resolve(apply_overrides(meta["config"], shortcuts + overrides), resume)
        out = args.out or os.path.dirname(os.path.abspath(resume))
    else:
        cfg = load_config(_config_name(args), shortcuts + overrides if args.task not in
                          ("detection", "segmentation") else overrides, task=args.task)
        out = args.out
    if cfg.get("task", "classification") != "classification":
        if args.data or args.model:
            raise ValueError(f"--data/--model apply to classification; for task "
                             f"{cfg['task']} set the keys of its config (key=value)")
        return _run_dense(cfg, out)
    out = out or cfg["run"]["out"]
    print("resolved config:")
    print(format_config(cfg))
    print(flush=True)
    from ..train.trainer import NonFiniteLossError, TrainingInterrupted, run
    try:
        summary = run(cfg, out_dir=out, resume=resume)
    except TrainingInterrupted as err:
        print(f"gluon-resnest train: {err}", file=sys.stderr)
        return 128 + err.signum
    except NonFiniteLossError as err:
        print(f"gluon-resnest train: error: {err}", file=sys.stderr)
        return 3
    _print_summary(summary)
    return 0


def _run_dense(cfg: Dict[str, Any], out: Any) -> int:
    try:
        from gluon_resnest.dense.train import run as dense_run
    except ModuleNotFoundError as err:
        if (err.name or "").startswith("gluon_resnest.dense"):
            raise ValueError(f"task {cfg['task']!r} needs gluon_resnest.dense.train, which is "
                             f"not part of this installation") from None
        raise
    out = out or (cfg.get("run") or {}).get("out") or os.path.join(
        "runs", f"{cfg['task']}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = dense_run(cfg, out)
    print(f"{cfg['task']} training finished; run folder: {out}")
    for k, v in (result or {}).items():
        if k != "loss_history":  # one number per iteration: it is in the run folder's metrics
            print(f"  {k}: {v}")
    return 0


def _print_summary(s: Dict[str, Any]) -> None:
    minutes, seconds = divmod(int(round(s["seconds"])), 60)
    if s["status"] == "stopped":
        print(f"stopped after epoch {s['epochs']} (run.stop_after) in {minutes}m{seconds:02d}s; "
              f"continue with: gluon-resnest train --resume {s['out']}")
    else:
        print(f"finished {s['epochs']} epochs in {minutes}m{seconds:02d}s (this run)")
    best, final = s.get("best") or {}, s.get("final") or {}
    if best.get("val_top1") is not None:
        print(f"best: epoch {best['epoch']}, validation top-1 {100 * best['val_top1']:.2f}%")
    if s.get("skipped"):
        print(f"skipped {s['skipped']} unreadable training image(s)")
    ex = s.get("export")
    if ex:
        print(f"exported (best epoch {ex['epoch']}): {ex['prefix']}-symbol.json, "
              f"{ex['prefix']}-0000.params, {ex['prefix']}-meta.json")
        if ex.get("checked"):
            print(f"export check: the exported model reproduces the trained network on "
                  f"{ex['checked']} validation images (identical predictions, max |logit "
                  f"difference| {ex['max_abs_diff']:.2g})")
    print(f"run folder: {s['out']} (metrics.csv, curves.png, best.ckpt, last.ckpt, "
          f"config.yaml)")
    if "val_top1" in final:
        print(f"final validation accuracy: {100 * final['val_top1']:.2f}% top-1, "
              f"{100 * final['val_top5']:.2f}% top-5")


def _test_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    return {"test_size": args.size, "crop_pct": args.crop_pct,
            "interpolation": args.interpolation}


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..train.data import BatchLoader, open_source
    from ..train.inference import describe, evaluate, load_model
    model = load_model(args.model, overrides=_test_overrides(args))
    path = args.data
    if path != "demo" and os.path.isdir(os.path.join(os.path.expanduser(path), "val")):
        path = os.path.join(os.path.expanduser(path), "val")      # a data root: its val/
    src = open_source(path, "--data", "val", args.demo_size)
    if src.classes is not None and src.classes != model.classes:
        raise ValueError(f"the data ({src.description}) has classes "
                         f"{src.classes[:5]}{'...' if len(src.classes) > 5 else ''} but the model "
                         f"was trained on {len(model.classes)} classes "
                         f"{model.classes[:5]}{'...' if len(model.classes) > 5 else ''}")
    loader = BatchLoader(src, args.batch_size, model.data, train=False, workers=args.workers,
                         on_corrupt=args.on_corrupt, classes=len(model.classes))
    t0 = time.time()
    m = evaluate(model.net, loader)
    loader.close()
    d = model.data
    print(f"model: {model.source}")
    print(f"data: {src.description}; test transform: resize to "
          f"{math.ceil(d['test_size'] / d['crop_pct'])} (crop_pct {d['crop_pct']:.3f}), centre "
          f"crop {d['test_size']}, {d['interpolation']}")
    if loader.skipped:
        print(f"skipped {len(loader.skipped)} unreadable image(s), first: {loader.skipped[0][1]}")
    print(f"{describe(m)} in {time.time() - t0:.1f} s")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..train.inference import load_model, predict_files
    model = load_model(args.model, overrides=_test_overrides(args))
    for r in predict_files(model, args.images, topk=args.topk):
        print(r["file"])
        for rank, (label, prob) in enumerate(r["top"], 1):
            print(f"  {rank}. {label:<20} {100 * prob:6.2f}%")
    return 0


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from ..train.data import DigitsSource, write_folder, write_record
    for split in ("train", "val"):
        src = DigitsSource(split, args.size)
        if args.format in ("folder", "both"):
            n = write_folder(src, os.path.join(args.out, split))
            print(f"wrote {n} images to {os.path.join(args.out, split)}/<class>/")
        if args.format in ("rec", "both"):
            n = write_record(src, os.path.join(args.out, split))
            print(f"wrote {n} records to {os.path.join(args.out, split)}.rec (+ .idx, .lst)")
    return 0


def _allow_trailing_overrides(parser: argparse.ArgumentParser) -> None:
    """Accept KEY=VALUE overrides anywhere, also after options (argparse takes one run of
    positionals only and would reject ``train a=1 --out d b=2``)."""
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = parse(args, namespace)
        kv = [a for a in extras if "=" in a and not a.startswith("-")]
        ns.overrides = list(getattr(ns, "overrides", None) or []) + kv
        return ns, [a for a in extras if a not in kv]
    parser.parse_known_args = parse_known_args


def _add_test_transform(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=None, help="test crop size (default: the model's)")
    p.add_argument("--crop-pct", type=float, default=None,
                   help="resize the short side to size/crop_pct before the centre crop")
    p.add_argument("--interpolation", choices=("bilinear", "bicubic", "area", "nearest"),
                   default=None)


def add_commands(sub) -> None:
    p = sub.add_parser(
        "train", help="train a ResNeSt classifier (no arguments: the embedded demo)",
        description="Train with a YAML config (configs/), printed resolved at start. Without "
                    "-c and --data it runs configs/demo.yaml: a small ResNeSt on scikit-learn's "
                    "handwritten digits, no download.",
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="config file or name (demo, finetune, "
                                          "imagenet/resnest50, ...)")
    p.add_argument("--data", help="training data: image folder (with train/ and val/ inside, or "
                                  "class folders), a .rec file, or 'demo'")
    p.add_argument("--model", help="variant name (sets model.name)")
    p.add_argument("--epochs", type=int, help="sets optim.epochs")
    p.add_argument("--batch-size", type=int, help="sets optim.batch_size (total)")
    p.add_argument("--out", help="run folder (default: ./runs/<config>-<time>)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint file or run folder to continue")
    p.add_argument("--task", choices=("classification", "detection", "segmentation"),
                   default=None, help="sets the config's task (detection and segmentation are "
                                      "trained by gluon_resnest.dense)")
    p.add_argument("--set", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a config key (repeatable), same as KEY=VALUE")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.lr=0.2 model.name=resnest26")
    p.set_defaults(func=_cmd_train)
    _allow_trailing_overrides(p)

    p = sub.add_parser("eval", help="top-1/top-5 of a model on a labelled data set",
                       description="Evaluate an exported model (PREFIX of PREFIX-symbol.json) or "
                                   "a checkpoint (.ckpt or run folder) with the model's test "
                                   "transform: resize, then centre crop at crop_pct.")
    p.add_argument("model", help="exported prefix, .ckpt file or run folder")
    p.add_argument("--data", required=True, help="image folder (class sub-folders), .rec, or "
                                                 "'demo' (the digits validation split)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="decoding threads")
    p.add_argument("--on-corrupt", choices=("error", "skip"), default="error")
    p.add_argument("--demo-size", type=int, default=32, help=argparse.SUPPRESS)
    _add_test_transform(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="top-5 labels and probabilities for image files",
                       description="Classify image files with an exported model or a "
                                   "checkpoint.")
    p.add_argument("model", help="exported prefix, .ckpt file or run folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--topk", type=int, default=5)
    _add_test_transform(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("demo-data", help="write the demo digits as image folders and/or RecordIO",
                       description="Write scikit-learn's digits (the demo's train/val split) as "
                                   "OUT/{train,val}/<class>/*.png and/or OUT/{train,val}.rec, for "
                                   "trying --data, eval and predict.")
    p.add_argument("out", help="output folder")
    p.add_argument("--format", choices=("folder", "rec", "both"), default="folder")
    p.add_argument("--size", type=int, default=32, help="image size (upsampled from 8x8)")
    p.set_defaults(func=_cmd_demo_data)
