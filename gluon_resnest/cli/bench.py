"""``gluon-resnest bench MODEL``: which runtime and precision is fastest for a model on this CPU."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .options import add_model_arguments, load_model

__all__ = ["add_commands", "parse_list", "parse_batch_sizes"]

EXAMPLES = """examples:
  gluon-resnest bench runs/demo                        # a run folder (its best checkpoint)
  gluon-resnest bench model.onnx --batch-sizes 1,8,32  # an ONNX export: onnxruntime, OpenVINO
  gluon-resnest bench resnest50 --params resnest50.params --precisions fp32,bf16
  gluon-resnest bench export/model --calib val_images/ --json bench.json

Every installed runtime x precision the predictor supports on this CPU (mxnet fp32/bf16/int8,
onnxruntime fp32, openvino fp32/bf16) runs on the same generated batch in one process, in
interleaved rounds (medians, min-max); logits are compared with MXNet fp32 (for an .onnx model:
its first fp32 runtime). INT8 is calibrated on generated images unless --calib DIR is given:
its speed is representative either way, its agreement only with your own images.
"""


def _progress(msg: str) -> None:
    print(f"gluon-resnest bench: {msg}", file=sys.stderr, flush=True)


def parse_list(text: str, valid: Sequence[str], option: str) -> List[str]:
    """``a,b`` -> ``['a', 'b']``, each checked against ``valid`` (duplicates dropped)."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option} needs at least one of {', '.join(valid)}, got {text!r}")
    bad = [t for t in items if t not in valid]
    if bad:
        raise ValueError(f"unknown {option} value(s) {', '.join(map(repr, bad))}: valid are "
                         f"{', '.join(valid)}")
    return list(dict.fromkeys(items))


def parse_batch_sizes(text: str) -> List[int]:
    """``'1,16'`` -> ``[1, 16]``; every size a positive int."""
    sizes = []
    for t in (t.strip() for t in text.split(",")):
        try:
            b = int(t)
        except ValueError:
            b = 0
        if b < 1:
            raise ValueError(f"--batch-sizes takes positive ints separated by commas (e.g. "
                             f"1,16), got {text!r}")
        sizes.append(b)
    return sorted(set(sizes))


def _combos(runtimes: List[str], precisions: List[str]) -> List[Tuple[str, str]]:
    from ..deploy.runtimes import SUPPORTED, check_request
    combos = [(r, p) for r in runtimes for p in precisions if p in SUPPORTED[r]]
    if not combos:
        check_request(runtimes[0], precisions[0])     # the error that lists what exists
    return combos


def _check_args(args: argparse.Namespace) -> Tuple[List[int], List[Tuple[str, str]]]:
    """Every option checked before the model is loaded."""
    from ..data.paths import check_output_folder
    from ..deploy.benchmark import missing_extra
    from ..deploy.runtimes import PRECISIONS, RUNTIMES
    sizes = parse_batch_sizes(args.batch_sizes)
    runtimes = parse_list(args.runtimes, RUNTIMES, "--runtimes") if args.runtimes \
        else list(RUNTIMES)
    precisions = parse_list(args.precisions, PRECISIONS, "--precisions") if args.precisions \
        else list(PRECISIONS)
    if args.rounds < 1 or args.warmup < 0:
        raise ValueError(f"--rounds must be >= 1 and --warmup >= 0, got {args.rounds} and "
                         f"{args.warmup}")
    if not args.sample_seconds > 0:
        raise ValueError(f"--sample-seconds must be > 0, got {args.sample_seconds}")
    if args.calib is not None:
        if "int8" not in precisions:
            raise ValueError("--calib applies to int8, which --precisions leaves out")
        from ..data.transforms import IMAGE_EXTENSIONS, list_images
        if not os.path.isdir(os.path.expanduser(args.calib)):
            raise FileNotFoundError(f"--calib folder {args.calib!r} does not exist")
        if not list_images(os.path.expanduser(args.calib)):
            raise ValueError(f"--calib folder {args.calib!r} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
    if args.json:
        check_output_folder(os.path.dirname(os.path.abspath(args.json)), "--json folder")
    if args.runtimes:             # named by the user: not installed is an error, not a skip
        for runtime in runtimes:
            missing = missing_extra(runtime)
            if missing:
                raise ValueError(missing)
    return sizes, _combos(runtimes, precisions)


def _load(args: argparse.Namespace) -> Tuple[Any, Any, str]:
    """(model for runtime_cases, its metadata or None for an .onnx file, description)."""
    path = os.path.expanduser(args.model)
    if path.lower().endswith(".onnx") and args.model.lower() not in _variants():
        if args.size is not None:
            raise ValueError("--size does not apply to an .onnx model: its input size was "
                             "fixed when it was exported")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model {path!r} does not exist")
        return path, None, f"ONNX model {path}"
    model = load_model(args)
    if model.meta.task != "classification":
        raise ValueError(f"bench runs classifiers; {model.source} is a {model.meta.task} model")
    model.meta = model.meta.updated(input_size=args.size)
    for note in model.notes:
        print(f"gluon-resnest bench: note: {note}", file=sys.stderr)
    return model, model.meta, model.source


def _variants() -> List[str]:
    from ..model.variants import variant_names
    return variant_names()


def _reference(model: Any, cases: List[Any], agree_x: Any) -> Optional[Any]:
    """MXNet fp32 (timed, or the loaded model itself), else the first fp32 case."""
    names = [c.name for c in cases]
    if "mxnet fp32" in names:
        return "mxnet fp32"
    if not isinstance(model, str) and model.meta.precision == "fp32":
        return ("mxnet fp32", model(agree_x))
    fp32 = [c.name for c in cases if c.precision == "fp32"]
    return fp32[0] if fp32 else None


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..deploy import benchmark as bm
    sizes, combos = _check_args(args)
    model, meta, source = _load(args)
    info = bm.machine_info()    # before the conversions: its load average is the others' work
    cases, skipped, failed = bm.runtime_cases(model, combos, calib=args.calib,
                                              progress=_progress)
    if not cases:
        why = "; ".join(f"{k}: {v}" for k, v in {**skipped, **failed}.items())
        print(f"gluon-resnest bench: error: nothing to measure for {source}: {why}",
              file=sys.stderr)
        return 1 if failed else 2
    meta = meta or cases[0].run.meta
    inputs, agree_x = bm.bench_inputs(meta, sizes)
    reference = _reference(model, cases, agree_x)
    _progress(f"timing {len(cases)} cases, {args.rounds} interleaved rounds at batch size(s) "
              f"{', '.join(map(str, sizes))}")
    result = bm.run_benchmark(cases, inputs, args.rounds, args.warmup,
                              target_seconds=args.sample_seconds, agree_x=agree_x,
                              reference=reference, progress=_progress)
    result.skipped.update(skipped)
    result.failed = {**failed, **result.failed}
    names = [c.name for c in cases]
    baseline = "mxnet fp32" if "mxnet fp32" in names else (
        reference if isinstance(reference, str) else names[0])
    onnx_file = isinstance(model, str)
    # what runtime="auto" would do with this model: an INT8/BF16 export stays in MXNet
    verdict = bm.verdict(result, baseline, onnx_only=onnx_file,
                         mxnet_only=not onnx_file and meta.precision != "fp32")
    print("\n".join(_report(source, meta, info, cases, result, baseline, verdict, args)))
    if args.json:
        record = {"command": "gluon-resnest bench", "date": time.strftime("%Y-%m-%d %H:%M"),
                  "model": source, "input_size": meta.input_size, "machine": info,
                  "baseline": baseline, **result.to_dict(), "failed": result.failed,
                  "fastest": {str(bs): bm.fastest(result, bs) for bs in sizes},
                  "verdict": verdict}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if result.failed else 0


def _report(source: str, meta: Any, info: Dict[str, Any], cases: List[Any], result: Any,
            baseline: str, verdict: List[str], args: argparse.Namespace) -> List[str]:
    from ..deploy import benchmark as bm
    lines = [f"model: {source} ({meta.input_size} px input)"] + bm.describe_machine(info)
    lines.append(f"timing: {args.rounds} interleaved round{'s' * (args.rounds != 1)} after "
                 f"{args.warmup} warm-up "
                 f"call(s) per case and batch size; a sample is about {args.sample_seconds:g} s "
                 f"of calls; images/s, median (min-max); inputs: generated images at the "
                 f"model's size, mean and std")
    for c in cases:
        for note in c.notes:
            lines.append(f"note: {c.name}: {note}")
            if "slower than FP32" in note:
                lines += _measured_bf16(result)
    if meta.precision == "fp32" and args.calib is None and \
            any(c.precision == "int8" for c in cases):
        lines.append("note: INT8 is calibrated on generated images: its speed is "
                     "representative, its agreement is not (give --calib DIR with your images)")
    if "random weights" in source:
        lines.append("note: random weights: the speed is the trained model's, the top-1 "
                     "agreement of bf16/int8 is not")
    for name, why in result.skipped.items():
        lines.append(f"skipped {name}: {why}")
    if result.reference is None:
        lines.append(f"no agreement check: no fp32 case to compare with (the model is "
                     f"{meta.precision})")
    lines += ["", bm.table(result, baseline), ""]
    for name, err in result.failed.items():
        lines.append(f"failed {name}: {err}")
    return lines + verdict


def _measured_bf16(result: Any) -> List[str]:
    """The hint says MXNet's BF16 is slower than FP32 here: what was measured."""
    ratios = [f"{result.median('mxnet bf16', bs) / result.median('mxnet fp32', bs):.2f}x "
              f"(bs{bs})" for bs in sorted(result.timings)
              if result.median("mxnet bf16", bs) > 0 and result.median("mxnet fp32", bs) > 0]
    return [f"note: mxnet bf16: measured here at {', '.join(ratios)} the images/s of mxnet "
            f"fp32"] if ratios else []


def add_commands(sub) -> None:
    p = sub.add_parser(
        "bench", help="time a model in every installed runtime and precision on this CPU",
        description="Which runtime is fastest for MODEL on this machine: times every installed "
                    "runtime x precision side by side, checks their logits against MXNet fp32 "
                    "and says what runtime='auto' picks. MODEL is a variant name (with "
                    "--params, --pretrained or --random), an exported PREFIX, an .onnx file, a "
                    ".ckpt checkpoint or a run folder.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, "exported PREFIX, .onnx file, .ckpt or run folder")
    p.add_argument("--size", type=int, default=None,
                   help="input resolution (default: the model's, from its metadata)")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated (default 1,16)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved timing rounds per batch size (default 5)")
    p.add_argument("--warmup", type=int, default=2,
                   help="warm-up calls per case and batch size before the rounds (default 2)")
    p.add_argument("--sample-seconds", type=float, default=1.0,
                   help="about how long one sample of a case runs (default 1.0)")
    p.add_argument("--runtimes", default=None,
                   help="comma-separated subset of mxnet,onnxruntime,openvino (default: every "
                        "installed one; a named one that is not installed is an error)")
    p.add_argument("--precisions", default=None,
                   help="comma-separated subset of fp32,bf16,int8 (default: all this CPU runs)")
    p.add_argument("--calib", metavar="DIR", default=None,
                   help="calibrate INT8 on these images (default: generated images)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results here")
    p.set_defaults(func=_cmd_bench)
