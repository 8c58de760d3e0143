"""Every deployment path of issue 13 on this CPU: ResNeSt-50 at 224 px, the same weights.

    python bench/bench_deploy.py            # full run (about 15-20 minutes on 2 idle cores)
    python bench/bench_deploy.py --quick    # smoke run (about 3 minutes), deploy-quick.*
    python bench/bench_deploy.py --no-torch # without the timm child processes

One process, every installed path timed in interleaved rounds at bs1 and bs16 with the engine
of ``gluon-resnest bench`` (:mod:`gluon_resnest.deploy.benchmark`): ours MXNet fp32
(``get_model``, hybridized), GluonCV's resnest50 (the same weights), GluonCV's resnet50_v1d,
ours INT8 (oneDNN, the quantization of ``export --int8``, calibrated on generated images),
ours BF16 (MXNet AMP, as ``export --bf16``, where the CPU runs BF16), onnxruntime fp32 and
OpenVINO f32/bf16 on our ONNX export (where installed / where the CPU has native BF16).
Logits are compared with ours MXNet fp32 on 16 generated images. Where the CPU has AMX, two
child processes re-run MXNet fp32/bf16/int8 with AMX on and off (oneDNN picks its ISA once
per process). timm's ``resnest50d`` (eager and ``torch.compile``, channels-last) runs in child
processes next to ours, through ``bench_torch.py --child``. Writes ``deploy.json`` and
``deploy.md`` (``deploy-quick.*`` with ``--quick``) to ``--out``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np

import gluon_resnest  # noqa: F401  (first: enables AMX before any operator, imports gluoncv)
from gluon_resnest._compat import onednn
from gluon_resnest.deploy import benchmark as bm
from gluon_resnest.deploy import runtimes as rt
from gluon_resnest.deploy.artifact import LoadedModel, ModelMeta, load_variant
from gluon_resnest.model import profile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_resnest import gluoncv_resnest50, gluoncv_resnet50_v1d, randomize  # noqa: E402

SIZE = 224
BATCH_SIZES = (1, 16)
BASE = "mxnet fp32"
#: the predictor combinations of the main table (the engine names them "runtime precision")
COMBOS = [("mxnet", "fp32"), ("mxnet", "int8"), ("mxnet", "bf16"), ("onnxruntime", "fp32"),
          ("openvino", "fp32"), ("openvino", "bf16")]
#: bench_torch.py's child cases: ours in a fresh process, then timm's
TORCH_CASES = ("ours_resnest50", "timm_resnest50d_eager_channels_last",
               "timm_resnest50d_compile_channels_last")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def labels(macs_ratio: float) -> Dict[str, str]:
    """The issue's names of the rows."""
    ort, ov = _version("onnxruntime"), _version("openvino")
    return {"mxnet fp32": "ours, MXNet fp32 (get_model, hybridized)",
            "gluoncv resnest50": "GluonCV resnest50, MXNet fp32 (same weights)",
            "gluoncv resnet50_v1d": f"GluonCV resnet50_v1d, MXNet fp32 ({macs_ratio:.2f}x our "
                                    f"multiply-adds)",
            "mxnet int8": "ours INT8 (export --int8 quantization)",
            "mxnet bf16": "ours BF16 (export --bf16 conversion)",
            "onnxruntime fp32": f"onnxruntime {ort}, fp32, our ONNX",
            "openvino fp32": f"OpenVINO {ov}, f32, our ONNX",
            "openvino bf16": f"OpenVINO {ov}, bf16, our ONNX"}


# -- the models ------------------------------------------------------------------------------------
def build(tmp: str) -> Dict[str, Any]:
    """GluonCV's resnest50 with random weights (seed 0), saved; ours loaded from that file;
    GluonCV's resnet50_v1d with its own random weights (not compared)."""
    x = mx.nd.zeros((1, 3, SIZE, SIZE))
    gcv = gluoncv_resnest50()
    gcv.initialize()
    gcv(x)
    randomize(gcv, seed=0)
    params = os.path.join(tmp, "resnest50-gluoncv.params")
    gcv.save_parameters(params)
    gcv.hybridize(static_alloc=True, static_shape=True)
    r50d = gluoncv_resnet50_v1d()
    r50d.initialize()
    r50d(x)
    randomize(r50d, seed=1)
    r50d.hybridize(static_alloc=True, static_shape=True)
    ours = load_variant("resnest50", pretrained=params)    # get_model, hybridized
    macs = profile.count_macs(r50d, SIZE) / profile.count_macs(ours.block, SIZE)
    meta = ModelMeta.for_variant("resnest50")
    return {"ours": ours, "params": params, "macs_ratio": macs,
            "gluoncv resnest50": LoadedModel(meta, "GluonCV resnest50", block=gcv),
            "gluoncv resnet50_v1d": LoadedModel(meta, "GluonCV resnet50_v1d", block=r50d)}


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- AMX on/off: one child process each ------------------------------------------------------------
def amx_child(mode: str, params: str, rounds: int, seconds: float) -> Dict[str, Any]:
    """MXNet fp32/bf16/int8 of ``params`` in this process (started with AMX ``mode``)."""
    model = load_variant("resnest50", pretrained=params)
    cases, skipped, failed = bm.runtime_cases(
        model, [("mxnet", "fp32"), ("mxnet", "bf16"), ("mxnet", "int8")])
    inputs, agree_x = bm.bench_inputs(model.meta, BATCH_SIZES)
    res = bm.run_benchmark(cases, inputs, rounds, 2, target_seconds=seconds, agree_x=agree_x,
                           reference=BASE)
    res.skipped.update(skipped)
    res.failed.update(failed)
    info = bm.machine_info()
    return {"mode": mode, "amx": info["amx"], "onednn_isa": info.get("onednn_isa"),
            **res.to_dict(), "failed": res.failed}


def run_amx_children(params: str, rounds: int, seconds: float) -> Dict[str, Any]:
    status = onednn.amx_status()
    if "amx_tile" not in onednn.cpu_flags():
        return {"skipped": f"AMX {status.describe()}"}
    out: Dict[str, Any] = {}
    for mode in ("on", "off"):
        _progress(f"AMX {mode}: child process (MXNet fp32, bf16, int8)")
        env = dict(os.environ)
        if mode == "off":
            env[onednn.OPT_OUT_VAR] = "0"
        else:
            env.pop(onednn.OPT_OUT_VAR, None)
        run = subprocess.run([sys.executable, __file__, "--amx-child", mode, params,
                              "--rounds", str(rounds), "--sample-seconds", str(seconds)],
                             env=env, capture_output=True, text=True, timeout=3600)
        if run.returncode:
            out[mode] = {"error": f"exit status {run.returncode}: "
                                  + " | ".join(run.stderr.strip().splitlines()[-3:])}
        else:
            out[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


# -- timm: child processes (bench_torch.py) --------------------------------------------------------
def run_torch_children(rounds: int, compile_too: bool) -> Dict[str, Any]:
    missing = [m for m in ("torch", "timm") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"{' and '.join(missing)} not installed (the test extra)"}
    cases = [c for c in TORCH_CASES if compile_too or "compile" not in c]
    samples: Dict[str, Dict[str, List[float]]] = {c: {str(b): [] for b in BATCH_SIZES}
                                                  for c in cases}
    errors: Dict[str, str] = {}
    script = os.path.join(HERE, "bench_torch.py")
    for r in range(rounds):
        for bs in BATCH_SIZES:
            for case in cases:       # round-robin over the cases, one process each
                if case in errors:
                    continue
                _progress(f"timm children: round {r + 1}/{rounds}, bs{bs}, {case}")
                run = subprocess.run([sys.executable, script, "--child", case, str(bs)],
                                     capture_output=True, text=True, timeout=1800)
                if run.returncode:
                    errors[case] = (run.stderr.strip().splitlines() or ["failed"])[-1]
                    continue
                samples[case][str(bs)].append(float(run.stdout.strip().splitlines()[-1]))
    return {"rounds": rounds, "torch": _version("torch"), "timm": _version("timm"),
            "median": {c: {b: float(np.median(v)) for b, v in s.items() if v}
                       for c, s in samples.items()},
            "samples": samples, "errors": errors}


# -- the report ------------------------------------------------------------------------------------
def _ratio(res: bm.BenchResult, name: str, base: str, bs: int) -> Optional[float]:
    a, b = res.median(name, bs), res.median(base, bs)
    return None if np.isnan(a) or np.isnan(b) else a / b


def targets(res: bm.BenchResult, amx: Dict[str, Any], has_amx: bool) -> List[str]:
    """The issue's targets: measured value, target, met or why not measurable here."""
    out = []

    def line(what: str, value: Optional[float], target: float, why_not: str = "") -> None:
        if value is None:
            out.append(f"- {what}: not measured here ({why_not or 'the case did not run'})")
        else:
            out.append(f"- {what}: {value:.2f}x (target >= {target}x): "
                       f"{'met' if value >= target else 'NOT met'}")
    # what runtime="auto" picks: the fastest of its candidates, measured at batch 1
    auto = bm.fastest(res, 1, [bm.case_name(r, "fp32") for r in rt.auto_candidates("fp32")]) or ""
    for bs in BATCH_SIZES:
        value = _ratio(res, auto, BASE, bs) if auto and auto != BASE else None
        line(f'deploy.load(runtime="auto") fp32 ({auto or "-"}) / ours MXNet fp32 at bs{bs}',
             value, 2.0, "auto picks MXNet itself: neither onnxruntime nor OpenVINO installed"
             if auto == BASE else "")
    if auto and auto in res.agreement:
        a = res.agreement[auto]
        out.append(f"- auto fp32 outputs: {a.max_rel:.1e} relative to ours MXNet fp32 "
                   f"(target <= 1e-4): {'met' if a.max_rel <= 1e-4 else 'NOT met'}")
    no_amx = "" if has_amx else "this CPU has no AMX"
    line("OpenVINO bf16 / ours MXNet fp32 at bs16 (AMX CPUs)",
         _ratio(res, "openvino bf16", BASE, 16) if has_amx else None, 10.0, no_amx)
    on = amx.get("on", {})
    for p, target in (("bf16", 3.0), ("int8", 3.5)):
        value = None
        if has_amx and "cases" in on:
            med = {c["name"]: c["timing"].get("16", {}).get("median") for c in on["cases"]}
            if med.get(f"mxnet {p}") and med.get(BASE):
                value = med[f"mxnet {p}"] / med[BASE]
        line(f"MXNet {p.upper()} / its FP32 at bs16 with AMX", value, target,
             no_amx or on.get("error", ""))
    line("item 4: ours MXNet fp32 / GluonCV resnet50_v1d at bs16 inference",
         _ratio(res, BASE, "gluoncv resnet50_v1d", 16), 0.81)
    return out


def _amx_table(amx: Dict[str, Any]) -> List[str]:
    if "skipped" in amx:
        return [f"Not measured: {amx['skipped']}."]
    lines = ["| AMX | case | bs1 img/s | bs16 img/s | bs16 vs MXNet fp32 (same process) | "
             "oneDNN isa |", "|---|---|---|---|---|---|"]
    for mode, child in amx.items():
        if "error" in child:
            lines.append(f"| {mode} | failed: {child['error']} | | | | |")
            continue
        med = {c["name"]: {b: t["median"] for b, t in c["timing"].items()}
               for c in child["cases"]}
        for name, m in med.items():
            r = m.get("16", 0) / med[BASE]["16"] if BASE in med and m.get("16") else None
            lines.append(f"| {mode} | {name} | {m.get('1', 0):.2f} | {m.get('16', 0):.2f} | "
                         f"{'-' if r is None else f'{r:.2f}x'} | {child.get('onednn_isa')} |")
        lines += [f"| {mode} | {k}: skipped ({v}) | | | | |" for k, v in child["skipped"].items()]
        lines += [f"| {mode} | {k}: failed ({v}) | | | | |" for k, v in child["failed"].items()]
    return lines


def _torch_table(torch_res: Dict[str, Any]) -> List[str]:
    if "skipped" in torch_res:
        return [f"Not measured: {torch_res['skipped']}."]
    med = torch_res["median"]
    ours = med.get("ours_resnest50", {})
    lines = [f"torch {torch_res['torch']}, timm {torch_res['timm']}; one child process per "
             f"measurement, median of {torch_res['rounds']} round(s); speed only (timm has its "
             f"own random weights).", "",
             "| case | bs1 img/s | bs16 img/s | vs ours MXNet fp32 (child), bs1 / bs16 |",
             "|---|---|---|---|"]
    for case, m in med.items():
        ratios = " / ".join(f"{m[b] / ours[b]:.2f}x" if b in m and b in ours else "-"
                            for b in ("1", "16"))
        lines.append(f"| {case} | {m.get('1', float('nan')):.2f} | "
                     f"{m.get('16', float('nan')):.2f} | {ratios} |")
    lines += [f"- {c} failed: {e}" for c, e in torch_res["errors"].items()]
    return lines


def markdown(rec: Dict[str, Any], res: bm.BenchResult, names: Dict[str, str]) -> str:
    m = rec["machine"]
    lines = [f"# Deployment paths on this CPU: ResNeSt-50, 224 px ({rec['date']}"
             f"{', quick run' if rec['quick'] else ''})", ""]
    lines += [f"- {x}" for x in bm.describe_machine(m)]
    lines += ["- versions: " + ", ".join(f"{k} {v}" for k, v in rec["versions"].items()),
              f"- one process, {rec['rounds']} interleaved rounds after warm-up, a sample about "
              f"{rec['sample_seconds']} s; images/s median (min-max); the same random weights "
              f"(seed 0) for ours, GluonCV resnest50 and every runtime; agreement on 16 "
              f"generated images against ours MXNet fp32 (INT8 calibrated on generated images: "
              f"its agreement on random weights says little)", ""]
    lines += ["## Every path, one process", "", bm.table(res, BASE, names, "ours MXNet fp32"), ""]
    lines += [f"- skipped {k}: {v}" for k, v in res.skipped.items()]
    lines += [f"- failed {k}: {v}" for k, v in res.failed.items()]
    lines += [f"- {v}" for v in rec["verdict"]]
    lines += ["", "## MXNet with AMX on and off (one child process each)", ""]
    lines += _amx_table(rec["amx"])
    lines += ["", "## timm resnest50d (child processes)", ""] + _torch_table(rec["timm"])
    lines += ["", "## The issue's targets", ""] + rec["targets"] + [""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds, shorter samples, timm eager only, 1 round")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 8)")
    ap.add_argument("--sample-seconds", type=float, default=None,
                    help="about how long one sample runs (default 1.0)")
    ap.add_argument("--no-torch", action="store_true", help="skip the timm child processes")
    ap.add_argument("--no-compile", action="store_true", help="timm eager only")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--amx-child", nargs=2, metavar=("MODE", "PARAMS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 8)
    seconds = args.sample_seconds or (0.5 if args.quick else 1.0)
    warmup = 1 if args.quick else 2     # besides the agreement call (at bs16)
    if args.amx_child:
        print(json.dumps(amx_child(args.amx_child[0], args.amx_child[1], rounds, seconds)))
        return 0
    if rounds < 1 or seconds <= 0:
        ap.error(f"--rounds must be >= 1 and --sample-seconds > 0, got {rounds} and {seconds}")
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()
    info = bm.machine_info()
    for line in bm.describe_machine(info):
        _progress(line)
    with tempfile.TemporaryDirectory() as tmp:
        _progress("building: GluonCV resnest50 (random weights), ours from its file, "
                  "resnet50_v1d")
        nets = build(tmp)
        ours = nets["ours"]
        cases, skipped, failed = bm.runtime_cases(ours, COMBOS, progress=_progress)
        for name in ("gluoncv resnest50", "gluoncv resnet50_v1d"):
            cases.insert(1 if name.endswith("resnest50") else 2,
                         bm.Case(name, nets[name], None, "fp32"))   # not a predictor runtime
        inputs, agree_x = bm.bench_inputs(ours.meta, BATCH_SIZES)
        _progress(f"timing {len(cases)} cases: {rounds} interleaved rounds at bs1 and bs16")
        res = bm.run_benchmark(cases, inputs, rounds, warmup, target_seconds=seconds,
                               agree_x=agree_x, reference=BASE, progress=_progress)
        res.agreement.pop("gluoncv resnet50_v1d", None)      # other weights: not comparable
        res.skipped.update(skipped)
        res.failed = {**failed, **res.failed}
        amx = run_amx_children(nets["params"], max(2, rounds // 2), seconds)
    torch_res = {"skipped": "--no-torch"} if args.no_torch else run_torch_children(
        1 if args.quick else 2, not (args.quick or args.no_compile))
    names = labels(nets["macs_ratio"])
    rec = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "machine": info,
           "versions": {d: _version(d) for d in ("mxnet", "gluoncv", "onnxruntime", "openvino",
                                                 "torch", "timm")},
           "rounds": rounds, "sample_seconds": seconds, "labels": names,
           "main": {**res.to_dict(), "failed": res.failed},
           "verdict": bm.verdict(res, BASE), "amx": amx, "timm": torch_res,
           "targets": targets(res, amx, "amx_tile" in onednn.cpu_flags()),
           "seconds": round(time.time() - t_start)}
    stem = "deploy-quick" if args.quick else "deploy"
    with open(os.path.join(args.out, f"{stem}.json"), "w") as f:
        json.dump(rec, f, indent=1)
    md = markdown(rec, res, names)
    with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {os.path.join(args.out, stem)}.json and .md in {rec['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
