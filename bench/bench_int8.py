"""INT8 (oneDNN) against FP32: top-1 agreement on real images, and the speed-up, side by side.

    python bench/bench_int8.py            # about 8 minutes on 2 cores
    python bench/bench_int8.py --no-speed # agreement only (about 4 minutes)

Writes ``int8.json`` and ``int8.md`` to ``--out`` (default ``bench/results``). Measures:

1. **The trained demo**: ``configs/demo.yaml`` is trained (about 45 s), then quantized with
   calibration on 64 training digits and, separately, on the generated set (the default of
   ``gluon-resnest export --int8``). Top-1 agreement with FP32 and accuracy on the 360
   validation digits.
2. **A linear probe at 64 px**, the same protocol for our ResNeSt-50 and GluonCV's
   ResNet-50-D: random convolution weights, BatchNorm statistics of 128 training digits, a
   ridge classifier fitted on the pooled features of 1000 digits; agreement on the other 797.
   The plain ResNet shows how much of the disagreement is INT8 itself on such a network.
3. **Speed** at batch 16, 224 px: INT8 / FP32 for ours and for GluonCV's ResNet-50-D (what
   INT8 gives a network without grouped convolutions on this CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict

import mxnet as mx
import numpy as np
from mxnet import autograd

import gluon_resnest
from gluon_resnest.deploy import export as gexport
from gluon_resnest.deploy.int8 import _rel_rms
from gluon_resnest.model.variants import IMAGENET_MEAN as MEAN
from gluon_resnest.model.variants import IMAGENET_STD as STD

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_resnest import gluoncv_resnet50_v1d, make_infer, timed  # noqa: E402


def _batches(net, x: np.ndarray, bs: int = 128) -> np.ndarray:
    return np.concatenate([net(mx.nd.array(x[i:i + bs])).asnumpy() for i in range(0, len(x), bs)])


def _agreement(fp32: np.ndarray, int8: np.ndarray, labels=None) -> Dict[str, float]:
    out = {"top1_agreement": float((fp32.argmax(1) == int8.argmax(1)).mean()),
           "rel_rms_logits": _rel_rms(int8, fp32), "n": int(len(fp32))}
    if labels is not None:
        out["fp32_accuracy"] = float((fp32.argmax(1) == labels).mean())
        out["int8_accuracy"] = float((int8.argmax(1) == labels).mean())
    return out


# -- 1. the trained demo -------------------------------------------------------------------------
def trained_demo(tmp: str) -> Dict[str, dict]:
    from gluon_resnest.train.data import DigitsSource
    from gluon_resnest.train.inference import load
    run = os.path.join(tmp, "demo")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "gluon_resnest", "train", "--out", run],
                   check=True, capture_output=True, text=True)
    print(f"  demo trained in {time.time() - t0:.0f} s", flush=True)
    model = load(os.path.join(run, "best.ckpt"))

    def split(name):
        src = DigitsSource(name, 32)
        return np.stack([model.preprocess(im) for im in src.images]), src.labels
    xtr, _ = split("train")
    xva, yva = split("val")
    fp32 = _batches(model.block, xva)
    calib = xtr[np.random.RandomState(0).permutation(len(xtr))[:64]]
    out = {}
    for name, source in (("calibrated on 64 training digits", calib),
                         ("calibrated on 64 generated images", "generated")):
        q = gexport.quantize_int8(model.block, source, num_calib=64,
                                  transform=model.meta.transform)
        out[name] = {**_agreement(fp32, _batches(q, xva), yva),
                     "graph": gexport.graph_transitions(q)}
    return out


# -- 2. linear probe -----------------------------------------------------------------------------
def _digits(size: int):
    from sklearn.datasets import load_digits
    d = load_digits()
    imgs = mx.nd.array(d.images[:, None].astype(np.float32) / 16.0).tile((1, 3, 1, 1))
    imgs = mx.nd.contrib.BilinearResize2D(imgs, height=size, width=size).asnumpy()
    x = (imgs - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    perm = np.random.RandomState(0).permutation(len(d.target))
    return x.astype(np.float32), d.target, perm[:1000], perm[1000:]


def probe(make: Callable[[int], mx.gluon.HybridBlock], x, y, train, width: int):
    """Random backbone + BN statistics of 128 digits + ridge classifier -> 10-class network."""
    mx.random.seed(0)
    feat = make(width)               # classes = width; fc set to the identity: pooled features
    feat.initialize(mx.init.MSRAPrelu())
    with autograd.record(train_mode=True):   # BN momentum 0: statistics of this batch
        feat(mx.nd.array(x[train[:128]]))
    feat.fc.weight.set_data(mx.nd.array(np.eye(width)))
    feat.fc.bias.set_data(mx.nd.zeros(width))
    feat.hybridize(static_alloc=True)
    f = _batches(feat, x[train])
    mu, scale = f.mean(0), f.std()
    a = np.hstack([(f - mu) / scale, np.ones((len(train), 1))])
    w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ np.eye(10)[y[train]])
    net = make(10)
    net.initialize()
    net(mx.nd.array(x[:1]))
    params = feat._collect_params_with_prefix()
    for key, p in net._collect_params_with_prefix().items():
        if not key.startswith("fc."):
            p.set_data(params[key].data())
    net.fc.weight.set_data(mx.nd.array((w[:-1] / scale).T))
    net.fc.bias.set_data(mx.nd.array(w[-1] - (mu / scale) @ w[:-1]))
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def linear_probes(size: int = 64) -> Dict[str, dict]:
    x, y, train, val = _digits(size)
    nk = {"momentum": 0.0}
    makers = {
        "ours resnest50": (lambda c: gluon_resnest.build("resnest50", classes=c, norm_kwargs=nk),
                           2048),
        "gluoncv resnet50_v1d": (lambda c: gluoncv_resnet50_v1d_probe(c, nk), 2048),
    }
    out = {}
    for name, (make, width) in makers.items():
        net = probe(make, x, y, train, width)
        fp32 = _batches(net, x[val])
        q = gexport.quantize_int8(net, x[train[:64]], size=size)
        out[name] = {**_agreement(fp32, _batches(q, x[val]), y[val]),
                     "graph": gexport.graph_transitions(q)}
        print(f"  probe {name}: {out[name]['top1_agreement']:.4f}", flush=True)
    return out


def gluoncv_resnet50_v1d_probe(classes: int, norm_kwargs: dict):
    from gluoncv.model_zoo import resnetv1b
    return resnetv1b.resnet50_v1d(classes=classes, norm_kwargs=norm_kwargs)


# -- 3. speed ------------------------------------------------------------------------------------
def speed(repeats: int) -> Dict[str, dict]:
    cases = {}
    for name, net in (("ours_resnest50", gluon_resnest.build("resnest50")),
                      ("gluoncv_resnet50_v1d", gluoncv_resnet50_v1d())):
        net.initialize(mx.init.MSRAPrelu())
        net.hybridize(static_alloc=True, static_shape=True)
        q = gexport.quantize_int8(net, "generated", num_calib=32, size=224)
        q.hybridize(static_alloc=True, static_shape=True)
        cases[name] = make_infer(net, 16, 224)
        cases[name + "_int8"] = make_infer(q, 16, 224)
    return timed(cases, repeats, 2)


def markdown(res: dict) -> str:
    lines = [f"# INT8 vs FP32 ({res['date']})", "", "## Top-1 agreement with FP32", "",
             "| model | calibration / protocol | agreement | rel. RMS logits | accuracy fp32 -> int8 "
             "| int8<->fp32 nodes |", "|---|---|---|---|---|---|"]
    rows = [("trained demo (resnest14-style, 360 val digits)", name, r)
            for name, r in res["demo"].items()]
    rows += [(f"{name} (64 px, 797 digits)", "linear probe", r) for name, r in res["probe"].items()]
    for model, how, r in rows:
        lines.append(f"| {model} | {how} | {100 * r['top1_agreement']:.2f} % | "
                     f"{r['rel_rms_logits']:.3f} | {100 * r['fp32_accuracy']:.2f} % -> "
                     f"{100 * r['int8_accuracy']:.2f} % | {r['graph']['quantize']} q / "
                     f"{r['graph']['dequantize']} dq |")
    if res.get("speed"):
        t = res["speed"]
        lines += ["", "## Speed, batch 16, 224 px (images/s, medians)", "",
                  "| model | fp32 | int8 | int8 / fp32 |", "|---|---|---|---|"]
        for name in ("ours_resnest50", "gluoncv_resnet50_v1d"):
            f, i = t[name]["median"], t[name + "_int8"]["median"]
            lines.append(f"| {name} | {f:.2f} | {i:.2f} | {i / f:.2f} |")
    ok, why = gexport.bf16_support()
    lines += ["", f"BF16: {why}", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "mxnet": mx.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        print("trained demo ...", flush=True)
        res["demo"] = trained_demo(tmp)
    print("linear probes ...", flush=True)
    res["probe"] = linear_probes()
    if not args.no_speed:
        print("speed ...", flush=True)
        res["speed"] = speed(args.repeats)
    with open(os.path.join(args.out, "int8.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(args.out, "int8.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
