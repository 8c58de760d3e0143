"""PyTorch + timm ResNeSt-50 on this CPU, next to ours: where we stand against PyTorch.

    python bench/bench_torch.py              # about 5 minutes on 2 cores
    python bench/bench_torch.py --no-compile # eager only

Needs the test extra (torch, timm). timm's ``resnest50d`` (eager, NCHW and channels-last, and
``torch.compile`` channels-last) and our ``resnest50`` (MXNet, fused inference graph) take
turns, each in its own child process per round (MXNet and PyTorch each size their thread
pools for the whole machine), for ``--rounds`` rounds; inference images/s at batch 1 and 16,
224 px, float32, medians. Writes ``torch.json`` and ``torch.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = ["ours_resnest50", "timm_resnest50d_eager", "timm_resnest50d_eager_channels_last",
         "timm_resnest50d_compile_channels_last"]


def _time(fn, bs: int, calls: int) -> float:
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return bs * calls / (time.perf_counter() - t0)


def _child(case: str, bs: int) -> float:
    calls = 8 if bs == 1 else 2
    if case == "ours_resnest50":
        import mxnet as mx

        import gluon_resnest
        net = gluon_resnest.build("resnest50")
        net.initialize()
        net.hybridize(static_alloc=True, static_shape=True)
        x = mx.nd.random.uniform(shape=(bs, 3, 224, 224))
        return _time(lambda: net(x).wait_to_read(), bs, calls)
    import torch

    from gluon_resnest._compat import import_timm
    timm = import_timm()
    model = timm.create_model("resnest50d").eval()
    x = torch.rand(bs, 3, 224, 224)
    if "channels_last" in case:
        model, x = model.to(memory_format=torch.channels_last), x.to(
            memory_format=torch.channels_last)
    if "compile" in case:
        model = torch.compile(model)
    with torch.inference_mode():
        return _time(lambda: model(x), bs, calls)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]))))
        return 0
    cases = [c for c in CASES if not (args.no_compile and "compile" in c)]
    samples: Dict[str, Dict[int, List[float]]] = {c: {1: [], 16: []} for c in cases}
    errors: Dict[str, str] = {}
    for r in range(args.rounds):
        for bs in (1, 16):
            for case in cases:
                if case in errors:
                    continue
                run = subprocess.run([sys.executable, __file__, "--child", case, str(bs)],
                                     capture_output=True, text=True, timeout=1800)
                if run.returncode:
                    errors[case] = (run.stderr.strip().splitlines() or ["failed"])[-1]
                    print(f"{case}: {errors[case]}", flush=True)
                    continue
                samples[case][bs].append(json.loads(run.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} bs{bs} {case}: {samples[case][bs][-1]:.2f} img/s", flush=True)
    med = {c: {bs: sorted(v)[len(v) // 2] for bs, v in s.items() if v} for c, s in samples.items()}
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "median": med,
           "samples": samples, "errors": errors}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "torch.json"), "w") as f:
        json.dump(res, f, indent=1)
    ours = med.get("ours_resnest50", {})
    lines = [f"# ResNeSt-50 inference: ours (MXNet) vs PyTorch + timm ({res['date']})", "",
             f"224 px, float32, images/s, median of {args.rounds} rounds (one child process per "
             "measurement).", "", "| case | bs1 | bs16 | ours / this (bs1, bs16) |",
             "|---|---|---|---|"]
    for c, m in med.items():
        ratios = ", ".join(f"{ours[bs] / m[bs]:.2f}" if bs in m and bs in ours else "-"
                           for bs in (1, 16))
        lines.append(f"| {c} | {m.get(1, float('nan')):.2f} | {m.get(16, float('nan')):.2f} | "
                     f"{ratios} |")
    lines += [""] + [f"- {c} failed: {e}" for c, e in errors.items()]
    with open(os.path.join(args.out, "torch.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
