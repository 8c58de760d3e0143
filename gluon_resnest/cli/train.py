"""``gluon-resnest train | eval | predict | demo-data``: parse, call the library, print."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

from .._compat.onednn import note_bf16_speed

__all__ = ["add_commands"]

_TRAIN_EPILOG = """\
examples:
  gluon-resnest train                                  # the embedded demo (configs/demo.yaml)
  gluon-resnest train optim.epochs=5 --out runs/quick  # key=value overrides, own run folder
  gluon-resnest train --data my_images/                # fine-tune resnest50, recipe sized to the data
  gluon-resnest train -c imagenet/resnest101 --data ~/imagenet   # the paper's ImageNet recipe
  gluon-resnest train -c finetune --data my_images/ model.pretrained=resnest50.params
  gluon-resnest train --task detection --out runs/faster  # Faster R-CNN on generated shapes
  gluon-resnest train --resume runs/demo-20240101-120000     # continue exactly where it stopped

Outputs (run folder): config.yaml, last.ckpt, and for classification metrics.csv, curves.png,
best.ckpt, export/model-symbol.json + model-0000.params + model-meta.json; for detection and
segmentation model.params, metrics.json, model-symbol.json + model-0000.params.
Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and exits; --resume continues from it.
"""


def _overrides(args: argparse.Namespace) -> List[Tuple[str, Any]]:
    from ..train.config import parse_override
    out = [parse_override(t) for t in args.overrides]
    out += [(k, v) for k, v in (args.set or [])]
    return out


def _task_of(args: argparse.Namespace) -> str:
    """The task a new run trains: --task, else the config file's, else classification."""
    if args.task:
        return args.task
    if args.config:
        from ..train.config import find_config, load_yaml
        return load_yaml(find_config(args.config)).get("task", "classification")
    return "classification"


def _shortcuts(args: argparse.Namespace, task: str) -> List[Tuple[str, Any]]:
    """--data/--model/--epochs/--batch-size as the config keys of ``task``."""
    out: List[Tuple[str, Any]] = []
    if task == "classification":
        if args.data is not None:
            out += [("data.train", args.data), ("data.val", None)]
        keys = ("model.name", "optim.epochs", "optim.batch_size")
    else:
        if args.data is not None:
            raise ValueError(f"--data applies to classification; for {task} set data.dataset "
                             f"and data.root=DIR (key=value)")
        keys = ("model.backbone", "train.epochs", "train.batch_size")
    for key, value in zip(keys, (args.model, args.epochs, args.batch_size)):
        if value is not None:
            out.append((key, value))
    return out


def _config_name(args: argparse.Namespace) -> Any:
    if args.config:
        return args.config
    if args.task in ("detection", "segmentation"):
        return None
    if args.data and args.data != "demo":
        return "finetune"             # sized to the data by trainer.fit_to_data
    return "demo"


def _cmd_train(args: argparse.Namespace) -> int:
    from ..data.paths import check_output_folder
    from ..train import checkpoint
    from ..train.config import apply_overrides, format_config, load_config, resolve
    overrides = _overrides(args)
    if args.resume and args.config:
        raise ValueError("give either --resume (the run's own config is used) or -c/--config")
    resume, notes = None, []
    if args.resume:
        resume = checkpoint.resolve_checkpoint(os.path.expanduser(args.resume))
        raw = checkpoint.read_meta(resume)["config"]
        task = raw.get("task", "classification")
        if args.task and args.task != task:
            raise ValueError(f"--task {args.task} contradicts the checkpoint's task {task} "
                             f"({resume})")
        cfg = resolve(apply_overrides(raw, _shortcuts(args, task) + overrides), resume)
        out = args.out or os.path.dirname(os.path.abspath(resume))
    else:
        task = _task_of(args)
        given = _shortcuts(args, task) + overrides
        name = _config_name(args)
        cfg = load_config(name, given, task=args.task)
        if name == "finetune" and not args.config:
            from ..train.trainer import fit_to_data
            cfg, notes = fit_to_data(cfg, {k for k, _ in given})
        out = args.out
    if cfg["task"] == "classification":
        from ..train.trainer import default_out_dir
    else:
        from ..train.dense import default_out_dir
    out = os.path.expanduser(out or cfg["run"]["out"] or default_out_dir(cfg))
    check_output_folder(out, "run folder", create=True)     # before any training
    cfg["run"]["out"] = out
    print("resolved config: " + format_config(cfg, compact=True))
    print(flush=True)
    if notes:
        print(f"no -c given: fine-tuning {cfg['model']['name']} with configs/finetune.yaml "
              f"sized to {cfg['data']['train']}: " + "; ".join(notes) + f". For the paper's "
              f"ImageNet recipe: -c imagenet/{cfg['model']['name']}", flush=True)
    if cfg["task"] != "classification":
        from ..train.dense import run as run_dense
        return _guarded(lambda: _print_dense(cfg, run_dense(cfg, out, resume=resume)), out)
    from ..train.trainer import run
    return _guarded(lambda: _print_summary(run(cfg, out_dir=out, resume=resume)), out)


def _guarded(train: Callable[[], None], out: str) -> int:
    """Run ``train`` (which prints its summary); a stop by signal or a non-finite loss is one
    line on stderr and an exit status, never a traceback."""
    from ..train.loop import NonFiniteLossError, TrainingInterrupted
    try:
        train()
    except TrainingInterrupted as err:
        print(f"gluon-resnest train: {err}", file=sys.stderr)
        return 128 + err.signum
    except NonFiniteLossError as err:
        print(f"gluon-resnest train: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as err:
        return _stopped_at_once(err, out)
    return 0


def _stopped_at_once(err: BaseException, out: str) -> int:
    """KeyboardInterrupt outside the training loop's guard (during setup) or a second Ctrl-C:
    one line, no traceback."""
    if os.path.isfile(os.path.join(out, "last.ckpt")):
        kept = (f"the checkpoints already in {out} are intact (continue with: gluon-resnest "
                f"train --resume {out})")
    else:
        kept = "no checkpoint had been written yet"
    print(f"gluon-resnest train: {err or 'stopped by SIGINT'}; {kept}", file=sys.stderr)
    return 130


def _print_dense(cfg: Dict[str, Any], result: Dict[str, Any]) -> None:
    def numbers(m: Dict[str, Any]) -> str:
        return ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
    minutes, seconds = divmod(int(round(result["seconds"])), 60)
    print(f"{cfg['task']} training finished: {result['iterations']} iterations with a finite "
          f"loss in {minutes}m{seconds:02d}s (this run), loss {result['loss_first']:.3f} -> "
          f"{result['loss_last']:.3f}" + (f"; {result['skipped']} non-finite iteration(s) "
                                          f"skipped" if result["skipped"] else ""))
    before = result.get("metrics_before")
    print(f"validation: {numbers(result['metrics'])}"
          + (f" (untrained: {numbers(before)})" if before else ""))
    files = ["train.log", "config.yaml", "last.ckpt", "model.params", "metrics.json"]
    if result["export"]:
        files += ["model-symbol.json", "model-0000.params", "model-meta.json"]
    print(f"run folder: {result['out']} ({', '.join(files)})")


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
    print(f"run folder: {s['out']} (train.log, metrics.csv, curves.png, best.ckpt, last.ckpt, "
          f"config.yaml)")
    if "val_top1" in final:
        print(f"final validation accuracy: {100 * final['val_top1']:.2f}% top-1, "
              f"{100 * final['val_top5']:.2f}% top-5")


def _test_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """Metadata fields set on the command line (None: keep the model's)."""
    return {"input_size": args.size, "crop_pct": args.crop_pct,
            "interpolation": args.interpolation, "mean": args.mean, "std": args.std}


def _load_for_inference(args: argparse.Namespace):
    from .._compat.extras import MissingExtraError
    from ..model.variants import variant_names
    from ..train.inference import load
    if args.model.lower() in variant_names():
        raise ValueError(f"{args.command} needs a trained model (an exported prefix, .onnx "
                         f"file, .ckpt or run folder), not the variant name {args.model!r}; "
                         f"write ./{args.model} for a prefix of that name, or export the variant "
                         f"with its weights first: gluon-resnest export {args.model} --params ...")
    from ..deploy.runtimes import check_request, load_predictor
    runtime, precision = getattr(args, "runtime", None), getattr(args, "precision", None)
    convert = runtime is not None or precision is not None
    if convert:
        runtime = runtime or "auto"
        check_request(runtime, precision)           # before the model is loaded
    try:
        if convert and args.model.lower().endswith(".onnx"):    # OpenVINO reads it itself
            model = load(args.model, runtime=runtime, precision=precision)
        else:                            # the model as it is (MXNet, or ORT for .onnx)
            model = load(args.model)
        if model.meta.task != "classification":
            raise ValueError(f"{args.command} is for classifiers, but {model.source} is a "
                             f"{model.meta.task} model (its metadata's task is "
                             f"{model.meta.task!r}, expected 'classification')")
        model.meta = model.meta.updated(**_test_overrides(args))
        if convert and not args.model.lower().endswith(".onnx"):
            # after the overrides: an ONNX export or INT8 calibration uses the overridden size
            model = load_predictor(model, runtime, precision)
    except MissingExtraError as err:     # an .onnx model without onnxruntime, or a missing extra
        raise ValueError(str(err)) from None
    for note in model.notes:
        print(f"gluon-resnest {args.command}: note: {note}", file=sys.stderr)
    return model


def _class_difference(data: List[str], model: List[str]) -> str:
    """Where two class lists differ, shortly: names only one side has, else the first position
    whose name differs."""
    only_data = [c for c in data if c not in set(model)]
    only_model = [c for c in model if c not in set(data)]

    def few(names: List[str]) -> str:
        return ", ".join(map(repr, names[:5])) + (f" (+{len(names) - 5} more)" if len(names) > 5
                                                  else "")
    parts = []
    if only_data:
        parts.append(f"only the data has {few(only_data)}")
    if only_model:
        parts.append(f"only the model has {few(only_model)}")
    if len(data) != len(model):
        parts.insert(0, f"{len(data)} classes in the data, {len(model)} in the model")
    if not parts:
        i = next(k for k, (a, b) in enumerate(zip(data, model)) if a != b)
        parts.append(f"same names in another order: class {i} is {data[i]!r} in the data but "
                     f"{model[i]!r} in the model")
    return "; ".join(parts)


def _check_classes(src: Any, model: Any) -> None:
    names, n = model.meta.classes, model.meta.num_classes
    if src.classes is None:
        return
    if names is not None and list(src.classes) != list(names):
        raise ValueError(f"the data ({src.description}) does not have the classes the model "
                         f"was trained on: "
                         f"{_class_difference(list(src.classes), list(names))}")
    if names is None and len(src.classes) != n:
        raise ValueError(f"the data ({src.description}) has {len(src.classes)} classes but the "
                         f"model has {n} outputs")


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..train.data import BatchLoader, open_source
    from ..train.inference import describe, evaluate
    model = _load_for_inference(args)
    note_bf16_speed(args.command, model.meta.precision, getattr(model, "runtime", "mxnet"))
    path = args.data
    if path != "demo" and os.path.isdir(os.path.join(os.path.expanduser(path), "val")):
        path = os.path.join(os.path.expanduser(path), "val")      # a data root: its val/
    src = open_source(path, "--data", "val", args.demo_size)
    _check_classes(src, model)
    transform = model.meta.transform
    loader = BatchLoader(src, args.batch_size, transform, train=False, workers=args.workers,
                         on_corrupt=args.on_corrupt, classes=model.meta.num_classes,
                         skip_hint="add --on-corrupt skip")
    t0 = time.time()
    m = evaluate(model, loader)
    loader.close()
    print(f"model: {model.source}")
    if hasattr(model, "runtime"):
        print(f"runtime: {model.runtime} {model.precision}")
    print(f"data: {src.description}; test transform: {transform.describe()}")
    if loader.skipped:
        print(f"skipped {len(loader.skipped)} unreadable image(s), first: {loader.skipped[0][1]}")
    print(f"{describe(m)} in {time.time() - t0:.1f} s")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..train.inference import predict_files
    if args.topk < 1:      # before the model is loaded
        raise ValueError(f"--topk must be a positive int (how many labels per image), got "
                         f"{args.topk}")
    model = _load_for_inference(args)
    note_bf16_speed(args.command, model.meta.precision, getattr(model, "runtime", "mxnet"))
    failed = 0
    for r in predict_files(model, args.images, topk=args.topk, on_error="report"):
        if "error" in r:      # reported, and the other files still predicted
            failed += 1
            print(f"gluon-resnest predict: error: {r['error']}", file=sys.stderr, flush=True)
            continue
        print(r["file"], flush=True)
        for rank, (label, prob) in enumerate(r["top"], 1):
            print(f"  {rank}. {label:<20} {100 * prob:6.2f}%")
    if failed:
        print(f"gluon-resnest predict: {failed} of {len(args.images)} file(s) could not be "
              f"read", file=sys.stderr)
        return 2 if failed == len(args.images) else 1    # 2: nothing could be predicted
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


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=("auto", "mxnet", "onnxruntime", "openvino"),
                   default=None, help="run the model in this runtime; auto: the fastest installed for "
                                      "the precision, measured here at batch 1 once and cached "
                                      "(GLUON_RESNEST_AUTO=rule: openvino, else onnxruntime, "
                                      "else mxnet). Default: the model's own (mxnet, "
                                      "onnxruntime for .onnx)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                   help="convert to this precision (default: the model's own); with no "
                        "--runtime, auto picks one")


def _add_test_transform(p: argparse.ArgumentParser) -> None:
    from ..data.transforms import INTERPOLATION
    p.add_argument("--size", type=int, default=None,
                   help="test crop size (default: the model's, from its metadata)")
    p.add_argument("--crop-pct", type=float, default=None,
                   help="resize the short side to size/crop_pct before the centre crop")
    p.add_argument("--interpolation", choices=tuple(INTERPOLATION), default=None)
    p.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), default=None,
                   help="normalisation mean on a 0..1 scale (default: the model's)")
    p.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), default=None,
                   help="normalisation std (default: the model's)")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "train", help="train a ResNeSt classifier, detector or segmenter (no arguments: the "
                      "embedded demo)",
        description="Train with a YAML config (configs/), printed resolved at start. Without "
                    "-c and --data it runs configs/demo.yaml: a small ResNeSt on scikit-learn's "
                    "handwritten digits, no download. With --data DIR and no -c it fine-tunes "
                    "with configs/finetune.yaml sized to the data (classes, batch, warm-up).",
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="config file or name (demo, finetune, "
                                          "imagenet/resnest50, ...)")
    p.add_argument("--data", help="training data: image folder (with train/ and val/ inside, or "
                                  "class folders), a .rec file, or 'demo'")
    p.add_argument("--model", help="variant name (sets model.name; model.backbone for "
                                   "detection/segmentation)")
    p.add_argument("--epochs", type=int, help="sets optim.epochs (train.epochs)")
    p.add_argument("--batch-size", type=int, help="sets optim.batch_size, the total "
                                                  "(train.batch_size)")
    p.add_argument("--out", help="run folder (default: ./runs/<config>-<time>)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint file or run folder to continue "
                                                    "(any task; its config, plus overrides)")
    p.add_argument("--task", choices=("classification", "detection", "segmentation"),
                   default=None, help="sets the config's task (without -c: that task's "
                                      "defaults, a short run on generated shapes)")
    p.add_argument("--set", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a config key (repeatable), same as KEY=VALUE")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.lr=0.2 model.name=resnest26")
    p.set_defaults(func=_cmd_train)
    _allow_trailing_overrides(p)

    p = sub.add_parser("eval", help="top-1/top-5 of a model on a labelled data set",
                       description="Evaluate an exported model (PREFIX of PREFIX-symbol.json, "
                                   "or an .onnx file), a checkpoint (.ckpt) or a run folder (its "
                                   "best epoch) with the model's own test transform from its "
                                   "metadata: resize, then centre crop at crop_pct.")
    p.add_argument("model", help="exported prefix, .onnx file, .ckpt file or run folder")
    p.add_argument("--data", required=True, help="image folder (class sub-folders), .rec, or "
                                                 "'demo' (the digits validation split)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="decoding threads")
    p.add_argument("--on-corrupt", choices=("error", "skip"), default="error")
    p.add_argument("--demo-size", type=int, default=32, help=argparse.SUPPRESS)
    _add_runtime(p)
    _add_test_transform(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="top-5 labels and probabilities for image files",
                       description="Classify image files with an exported model (prefix or "
                                   ".onnx), a checkpoint or a run folder.")
    p.add_argument("model", help="exported prefix, .onnx file, .ckpt file or run folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--topk", type=int, default=5)
    _add_runtime(p)
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
