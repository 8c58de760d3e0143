"""Faster R-CNN vs Cascade R-CNN on the generated shapes set: AP at IoU 0.5 and 0.75.

    python bench/bench_cascade.py                      # seeds 0 1 2, 120 iterations each
    python bench/bench_cascade.py --seeds 0 --models cascade_rcnn_fpn   # one more run
    DNNL_MAX_CPU_ISA=AVX2 python bench/bench_cascade.py --seeds 0 --models cascade_rcnn_fpn

Each run is ``configs/detection/shapes_{faster_rcnn,cascade_rcnn}.yaml`` (the same settings
but the architecture: ResNeSt-50 from scratch, GroupNorm, 96 px, batch 1, 16 training and 8
validation images) with ``train.seed`` = the seed and ``--iterations``; both models see the
same images in the same order. AP: GluonCV's VOC07 (11-point) mAP on the validation split at
IoU 0.5 and 0.75; the untrained network's mAP is measured too. Runs accumulate in
``cascade.json`` (keyed by model, seed, iterations and oneDNN ISA limit) and ``cascade.md`` is
rewritten from all of them. Nothing is tuned for either model: what it measures is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from typing import Any, Dict, List

import numpy as np

import gluon_resnest  # noqa: F401  (first: imports gluoncv next to torch)
from gluon_resnest.train import dense
from gluon_resnest.train.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"faster_rcnn_fpn": "shapes_faster_rcnn.yaml", "cascade_rcnn_fpn": "shapes_cascade_rcnn.yaml"}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def run_one(model: str, seed: int, iterations: int) -> Dict[str, Any]:
    cfg = load_config(os.path.join(ROOT, "configs", "detection", CONFIGS[model]),
                      [("train.seed", seed), ("train.iterations", iterations),
                       ("train.log_interval", 0), ("train.export", False)])
    with tempfile.TemporaryDirectory() as out:
        res = dense.run(cfg, out, log=lambda _line: None)
    hist = res["loss_history"]
    totals = np.array([h["total"] for h in hist])
    faster_part = np.array([h["rpn_conf"] + h["rpn_box"] + h.get("rcnn_cls", h.get("cls1", 0))
                            + h.get("rcnn_box", h.get("box1", 0)) for h in hist])
    rpn = np.array([h["rpn_conf"] + h["rpn_box"] for h in hist])
    ratio = lambda v: float(np.mean(v[-10:]) / np.mean(v[:5]))  # noqa: E731
    return {"model": model, "seed": seed, "iterations": iterations,
            "isa": os.environ.get("DNNL_MAX_CPU_ISA", "default"),
            "AP50": res["metrics"]["mAP"], "AP75": res["metrics"]["mAP75"],
            "AP50_untrained": res["metrics_before"]["mAP"],
            "AP75_untrained": res["metrics_before"]["mAP75"],
            "loss_ratio": ratio(totals), "rpn_stage1_loss_ratio": ratio(faster_part),
            "rpn_loss_ratio": ratio(rpn), "skipped": res["skipped"],
            "seconds": res["seconds"]}


def _key(r: Dict[str, Any]) -> str:
    return f"{r['model']}/seed{r['seed']}/it{r['iterations']}/{r['isa']}"


def write_markdown(path: str, runs: List[Dict[str, Any]], cpu: str) -> None:
    lines = ["# Faster R-CNN vs Cascade R-CNN on the shapes set", "",
             f"CPU: {cpu}. Command: `python bench/bench_cascade.py` (see its docstring). "
             "VOC07 mAP on the 8 validation images at IoU 0.5 (AP50) and 0.75 (AP75); "
             "loss ratios: mean of the last 10 iterations over the first 5 (total; RPN + the "
             "first R-CNN stage; RPN only).", "",
             "## Per model (mean +- std over seeds, default ISA)", "",
             "| model | iterations | seeds | AP50 | AP75 | untrained AP50 |",
             "|---|---|---|---|---|---|"]
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in runs:
        if r["isa"] == "default":
            groups.setdefault((r["model"], r["iterations"]), []).append(r)
    for (model, its), rs in sorted(groups.items()):
        def ms(k, rs=rs):
            v = np.array([r[k] for r in rs])
            return f"{v.mean():.3f} +- {v.std():.3f}"
        lines.append(f"| {model} | {its} | {','.join(str(r['seed']) for r in rs)} | {ms('AP50')} "
                     f"| {ms('AP75')} | {ms('AP50_untrained')} |")
    lines += ["", "## Every run", "",
              "| model | seed | iterations | DNNL_MAX_CPU_ISA | AP50 | AP75 | untrained AP50 | "
              "loss ratio total | RPN + stage 1 | RPN | skipped | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=_key):
        lines.append(f"| {r['model']} | {r['seed']} | {r['iterations']} | {r['isa']} | "
                     f"{r['AP50']:.3f} | {r['AP75']:.3f} | {r['AP50_untrained']:.3f} | "
                     f"{r['loss_ratio']:.2f} | {r['rpn_stage1_loss_ratio']:.2f} | "
                     f"{r['rpn_loss_ratio']:.2f} | {r['skipped']} | {r['seconds']:.0f} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=120)
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cascade.json")
    data = {"cpu": cpu_name(), "runs": {}}
    if os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
    for seed in args.seeds:
        for model in args.models:          # interleaved: both models under the same load
            start = time.time()
            r = run_one(model, seed, args.iterations)
            data["runs"][_key(r)] = r
            print(f"{_key(r)}: AP50 {r['AP50']:.3f} AP75 {r['AP75']:.3f} (untrained "
                  f"{r['AP50_untrained']:.3f}) loss ratio {r['loss_ratio']:.2f} "
                  f"[{time.time() - start:.0f} s]", flush=True)
            with open(path, "w") as f:
                json.dump(data, f, indent=1)
            write_markdown(os.path.join(args.out, "cascade.md"), list(data["runs"].values()),
                           data["cpu"])


if __name__ == "__main__":
    main()
