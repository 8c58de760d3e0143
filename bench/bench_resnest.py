"""Side-by-side CPU benchmark: gluon_resnest vs GluonCV's built-in ResNeSt (and ResNet-50-D).

One process, the same weights for ours and GluonCV's resnest50, cases interleaved round-robin
after a warm-up, medians of the timed repeats, ratios against GluonCV. Writes
``results.json``, ``results.md`` and ``results.png`` to ``--out``.

    python bench/bench_resnest.py                 # full run (~15-25 min on 2 cores)
    python bench/bench_resnest.py --quick         # smoke run (~3 min)

Peak memory is measured per case in a child process (``--no-memory`` skips it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

import gluon_resnest  # noqa: F401  (registers; imports gluoncv safely)
from gluon_resnest.deploy import export as gexport
from gluon_resnest.model import profile

HERE = os.path.dirname(os.path.abspath(__file__))


# -- models ------------------------------------------------------------------------------------
def gluoncv_resnest50():
    from gluoncv.model_zoo import resnest as gcv
    return gcv.resnest50()


def gluoncv_resnet50_v1d():
    from gluoncv.model_zoo import resnetv1b
    return resnetv1b.resnet50_v1d()


def randomize(net, seed: int = 0) -> None:
    """Random weights and BN statistics (residual BN gammas small so logits stay O(1-10))."""
    rng = np.random.RandomState(seed)
    for key, p in sorted(net._collect_params_with_prefix().items()):
        if key.endswith("running_var") or key.endswith("gamma"):
            lo, hi = (0.2, 0.5) if key.endswith(("bn3.gamma", "downsample.2.gamma")) else (0.5, 1.5)
            val = rng.uniform(lo, hi, p.shape)
        elif key.endswith(("beta", "running_mean", "bias")):
            val = rng.normal(0, 0.1, p.shape)
        else:
            val = rng.normal(0, np.sqrt(2.0 / max(int(np.prod(p.shape[1:])), 1)), p.shape)
        p.set_data(mx.nd.array(val.astype("float32")))


def build_models(tmpdir: str) -> Dict[str, gluon.HybridBlock]:
    """GluonCV's resnest50 with random weights; ours loaded from its saved file."""
    x = mx.nd.zeros((1, 3, 224, 224))
    gcv = gluoncv_resnest50()
    gcv.initialize()
    gcv(x)
    randomize(gcv)
    path = os.path.join(tmpdir, "gcv_resnest50.params")
    gcv.save_parameters(path)
    ours = gluon_resnest.get_model("resnest50", pretrained=path)
    r50d = gluoncv_resnet50_v1d()
    r50d.initialize()
    fast = gluon_resnest.get_model("resnest50_fast")
    fast.initialize()
    r101 = gluon_resnest.get_model("resnest101")
    r101.initialize()
    return {"gluoncv_resnest50": gcv, "ours_resnest50": ours, "gluoncv_resnet50_v1d": r50d,
            "ours_resnest50_fast": fast, "ours_resnest101": r101}


# -- timed steps -------------------------------------------------------------------------------
def make_infer(net, bs: int, size: int) -> Callable[[], int]:
    x = mx.nd.random.uniform(shape=(bs, 3, size, size))

    def run() -> int:
        net(x).wait_to_read()
        return bs
    return run


def make_infer_bs1(net, size: int, calls: int = 4) -> Callable[[], int]:
    xs = [mx.nd.random.uniform(shape=(1, 3, size, size)) for _ in range(calls)]

    def run() -> int:
        for x in xs:
            net(x).wait_to_read()
        return calls
    return run


def make_train(net, bs: int, size: int) -> Callable[[], int]:
    x = mx.nd.random.uniform(shape=(bs, 3, size, size))
    y = mx.nd.array(np.arange(bs) % 1000)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": 1e-6, "momentum": 0.9})

    def run() -> int:
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(bs)
        mx.nd.waitall()
        return bs
    return run


def timed(cases: Dict[str, Callable[[], int]], repeats: int, warmup: int) -> Dict[str, dict]:
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for key, fn in cases.items():  # round-robin: drift hits every case alike
            t0 = time.perf_counter()
            n = fn()
            samples[key].append(n / (time.perf_counter() - t0))
    return {k: {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v)),
                "samples": [round(s, 3) for s in v]} for k, v in samples.items()}


# -- peak memory (child process per case) --------------------------------------------------------
def _vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it starts afresh at exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _memory_child(case: str, mode: str, bs: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        before = _vm_hwm_mb()
        net = build_one(case, tmp)
        net.hybridize(static_alloc=True, static_shape=True)
        fn = make_train(net, bs, size) if mode == "train" else make_infer(net, bs, size)
        for _ in range(2):
            fn()
        peak = _vm_hwm_mb()
    print(json.dumps({"peak_rss_mb": round(peak), "delta_mb": round(peak - before)}))


def build_one(case: str, tmp: str):
    if case == "gluoncv_resnest50":
        net = gluoncv_resnest50()
    elif case == "gluoncv_resnet50_v1d":
        net = gluoncv_resnet50_v1d()
    else:
        net = gluon_resnest.get_model(case.replace("ours_", ""))
    net.initialize()
    return net


def peak_memory(case: str, mode: str, bs: int, size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", case, mode, str(bs),
                          str(size)], capture_output=True, text=True, timeout=900)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------------
def chart(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [(f"{k} ({mode})", v["median"]) for mode, table in results["throughput"].items()
            for k, v in table.items()]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    colors = ["tab:orange" if "ours" in r[0] else "tab:gray" for r in rows]
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("images / s (median)")
    ax.set_title("ResNeSt on CPU: gluon_resnest (orange) vs GluonCV (gray)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def markdown(results: dict) -> str:
    lines = [f"# ResNeSt CPU benchmark ({results['date']})", "",
             f"Machine: {results['machine']}; mxnet {results['mxnet']}, "
             f"{results['threads']} threads; repeats {results['repeats']} (medians, images/s).", ""]
    for mode, table in results["throughput"].items():
        base = table.get("gluoncv_resnest50", {}).get("median")
        lines += [f"## {mode}", "", "| case | img/s (median) | min-max | vs GluonCV resnest50 |",
                  "|---|---|---|---|"]
        for k, v in table.items():
            ratio = f"{v['median'] / base:.2f}x" if base else "-"
            lines.append(f"| {k} | {v['median']:.2f} | {v['min']:.2f}-{v['max']:.2f} | {ratio} |")
        lines.append("")
    lines += ["## Ratios", ""] + [f"- {k}: {v:.2f}" for k, v in results["ratios"].items()] + [""]
    lines += ["## Agreement", ""] + [f"- {k}: {v}" for k, v in results["agreement"].items()] + [""]
    if results.get("memory"):
        lines += ["## Peak memory (child process RSS, MB)", "", "| case | mode | peak RSS |",
                  "|---|---|---|"]
        for key, m in results["memory"].items():
            case, mode = key.split("|")
            lines.append(f"| {case} | {mode} | {m.get('peak_rss_mb', m)} |")
        lines.append("")
    lines += ["## Compute", "", results["compute"], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats, no memory, no INT8/BF16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory table")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        case, mode, bs, size = args.memory_child
        _memory_child(case, mode, int(bs), int(size))
        return 0
    if args.memory_only:
        for c in ("gluoncv_resnest50", "ours_resnest50"):
            for m in ("infer", "train"):
                print(c, m, peak_memory(c, m, 16, 224), flush=True)
        return 0
    repeats = 2 if args.quick else args.repeats
    os.makedirs(args.out, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor()
                     or platform.machine(), "mxnet": mx.__version__,
                     "threads": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count())),
                     "repeats": repeats, "throughput": {}, "ratios": {}, "agreement": {}}
    with tempfile.TemporaryDirectory() as tmp:
        nets = build_models(tmp)
        x = mx.nd.random.uniform(-1, 1, shape=(4, 3, 224, 224))
        y_gcv = nets["gluoncv_resnest50"](x).asnumpy()  # imperative, inference
        for net in nets.values():
            net.hybridize(static_alloc=True, static_shape=True)
        y_ours = nets["ours_resnest50"](x).asnumpy()
        results["agreement"]["max |ours - gluoncv| logits (same weights, fused graph)"] = \
            f"{np.abs(y_ours - y_gcv).max():.2e} (logit scale {np.abs(y_gcv).max():.2f})"

        main_cases = ["gluoncv_resnest50", "ours_resnest50", "gluoncv_resnet50_v1d",
                      "ours_resnest50_fast"]
        print("inference bs1 ...", flush=True)
        results["throughput"]["inference bs1 224"] = timed(
            {k: make_infer_bs1(nets[k], 224) for k in main_cases}, repeats, 2)
        print("inference bs16 ...", flush=True)
        bs16 = {k: make_infer(nets[k], 16, 224) for k in main_cases}
        bs16["ours_resnest101@256"] = make_infer(nets["ours_resnest101"], 16, 256)
        if not args.quick:
            ours = nets["ours_resnest50"]
            qnet = gexport.quantize_int8(ours, "generated", num_calib=32, size=224)
            qnet.hybridize(static_alloc=True, static_shape=True)
            bs16["ours_resnest50_int8"] = make_infer(qnet, 16, 224)
            results["agreement"]["int8 graph"] = json.dumps(gexport.graph_transitions(qnet))
            ok, why = gexport.bf16_support()
            if ok:
                bnet = gexport.convert_bf16(ours, 224)
                bnet.hybridize(static_alloc=True, static_shape=True)
                bs16["ours_resnest50_bf16"] = make_infer(bnet, 16, 224)
            results["agreement"]["bf16"] = why
        results["throughput"]["inference bs16 224"] = timed(bs16, repeats, 2)
        print("training bs16 ...", flush=True)
        results["throughput"]["train step bs16 224"] = timed(
            {k: make_train(nets[k], 16, 224) for k in ["gluoncv_resnest50", "ours_resnest50",
                                                      "gluoncv_resnet50_v1d"]},
            max(2, repeats - 2), 1)

    t = results["throughput"]

    def ratio(mode, a, b):
        return t[mode][a]["median"] / t[mode][b]["median"]
    results["ratios"] = {
        "infer bs16 ours/gluoncv resnest50 (target >= 2.5)":
            ratio("inference bs16 224", "ours_resnest50", "gluoncv_resnest50"),
        "infer bs1 ours/gluoncv resnest50 (target >= 1.6)":
            ratio("inference bs1 224", "ours_resnest50", "gluoncv_resnest50"),
        "infer bs16 ours resnest50 / gluoncv resnet50_v1d (target >= 0.8)":
            ratio("inference bs16 224", "ours_resnest50", "gluoncv_resnet50_v1d"),
        "train bs16 ours/gluoncv resnest50 (target >= 2.2)":
            ratio("train step bs16 224", "ours_resnest50", "gluoncv_resnest50"),
    }
    if "ours_resnest50_int8" in t["inference bs16 224"]:
        results["ratios"]["int8/fp32 ours resnest50 bs16 (target >= 2.5)"] = ratio(
            "inference bs16 224", "ours_resnest50_int8", "ours_resnest50")
    if "ours_resnest50_bf16" in t["inference bs16 224"]:
        results["ratios"]["bf16/fp32 ours resnest50 bs16"] = ratio(
            "inference bs16 224", "ours_resnest50_bf16", "ours_resnest50")
    macs = profile.count_macs(gluon_resnest.build("resnest50"), 224)
    best = t["inference bs16 224"]["ours_resnest50"]["median"]
    results["compute"] = (f"resnest50: {macs / 1e9:.2f} GMACs = {2 * macs / 1e9:.2f} GFLOP per "
                          f"image; ours fp32 bs16 reaches {best * 2 * macs / 1e9:.0f} GFLOP/s.")
    if not args.quick and not args.no_memory:
        print("peak memory ...", flush=True)
        results["memory"] = {f"{c}|{m}": peak_memory(c, m, 16, 224)
                             for c in ("gluoncv_resnest50", "ours_resnest50")
                             for m in ("infer", "train")}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    chart(results, os.path.join(args.out, "results.png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
