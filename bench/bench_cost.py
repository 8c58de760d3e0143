"""Cost per multiply-add: our resnest50 vs GluonCV's resnet50_v1d, and training peak memory.

Issue 13, item 4: our resnest50 should reach at least 0.81x resnet50_v1d's images/s (its share of
our multiply-adds) for bs16 inference and a bs16 training step, and its training peak memory
should be no higher than GluonCV's resnest50.

    python bench/bench_cost.py                    # ~4 min on 2 idle cores (bench/results/cost.md)
    python bench/bench_cost.py --rounds 9 --no-memory

Throughput: one process, both networks hybridized (static_alloc, static_shape) as a user runs
them, rounds interleaved (ours, reference, ours, ...), medians of per-round ratios, so load
from other processes hits both alike. Peak memory: VmHWM of one child process per case.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Callable, Dict, List

import mxnet as mx
import numpy as np

import gluon_resnest
from gluon_resnest.model import profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_resnest import gluoncv_resnet50_v1d, make_infer, make_train, peak_memory, randomize  # noqa: E402

TARGET_RATIO = 0.81   # resnet50_v1d's multiply-adds / ours: equal cost per multiply-add


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def interleaved(cases: Dict[str, Callable[[], int]], rounds: int, warmup: int) -> Dict[str, List[float]]:
    """Images/s of every case per round, cases alternating within each round."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    out: Dict[str, List[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for key, fn in cases.items():
            t0 = time.perf_counter()
            n = fn()
            out[key].append(n / (time.perf_counter() - t0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per mode (default 5)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")

    ours = gluon_resnest.get_model("resnest50")
    ours.initialize()
    randomize(ours)
    ref = gluoncv_resnet50_v1d()
    ref.initialize()
    ref(mx.nd.zeros((1, 3, 224, 224)))
    randomize(ref)
    for net in (ours, ref):
        net.hybridize(static_alloc=True, static_shape=True)
    macs_ours = profile.count_macs(gluon_resnest.build("resnest50"), 224)
    macs_ref = profile.count_macs(gluoncv_resnet50_v1d(), 224)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; mxnet {mx.__version__}; GMACs/image: "
          f"resnest50 {macs_ours / 1e9:.2f}, resnet50_v1d {macs_ref / 1e9:.2f} "
          f"({macs_ref / macs_ours:.2f}x)")
    print("| mode (bs16, 224) | ours img/s | resnet50_v1d img/s | ratio (median per round) | target |")
    print("|---|---|---|---|---|")
    for mode, make, warm in (("inference", make_infer, 2), ("training step", make_train, 1)):
        s = interleaved({"ours": make(ours, 16, 224), "ref": make(ref, 16, 224)}, args.rounds, warm)
        ratio = float(np.median(np.array(s["ours"]) / np.array(s["ref"])))
        print(f"| {mode} | {np.median(s['ours']):.2f} | {np.median(s['ref']):.2f} | {ratio:.3f} "
              f"| >= {TARGET_RATIO} |", flush=True)
    if not args.no_memory:
        print("\n| training step bs16 peak RSS (child process) | MB |\n|---|---|")
        for case in ("ours_resnest50", "gluoncv_resnest50"):
            m = peak_memory(case, "train", 16, 224)
            print(f"| {case} | {m.get('peak_rss_mb', m)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
