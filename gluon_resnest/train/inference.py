"""Evaluation and prediction with a trained model: an exported symbol or a checkpoint.

An exported model is ``PREFIX-symbol.json`` + ``PREFIX-0000.params`` (``net.export``); training
also writes ``PREFIX-meta.json`` with the class names and the test transform. A checkpoint
(``.ckpt`` or a run folder) carries its config, so the network is rebuilt from it.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import data as data_mod

__all__ = ["LoadedModel", "load_model", "evaluate", "predict_files", "topk_correct",
           "write_export_meta"]


@dataclass
class LoadedModel:
    """A ready-to-run network and what is needed to feed it."""

    net: Any                          # HybridBlock: (N, 3, S, S) -> (N, classes) logits
    classes: List[str]
    data: Dict[str, Any]              # test_size, crop_pct, interpolation, mean, std
    source: str
    info: Dict[str, Any] = field(default_factory=dict)


_TEST_KEYS = ("test_size", "crop_pct", "interpolation", "mean", "std")


def write_export_meta(prefix: str, variant: str, classes: Sequence[str],
                      data_cfg: Dict[str, Any]) -> str:
    path = prefix + "-meta.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"variant": variant, "classes": list(classes),
                   "data": {k: data_cfg[k] for k in _TEST_KEYS}}, f, indent=1)
    return path


def _default_test_data(variant: Optional[str]) -> Dict[str, Any]:
    from ..model.variants import VARIANTS, resolve_name
    spec = VARIANTS[resolve_name(variant or "resnest50")]
    return {"test_size": spec.input_size, "crop_pct": spec.crop_pct,
            "interpolation": spec.interpolation, "mean": list(spec.mean), "std": list(spec.std)}


def load_model(path: str, ctx=None, overrides: Optional[Dict[str, Any]] = None) -> LoadedModel:
    """Load an exported model (``PREFIX`` or ``PREFIX-symbol.json``) or a checkpoint
    (``.ckpt`` file or run folder). ``overrides``: test transform keys to replace."""
    import mxnet as mx
    ctx = ctx or mx.cpu()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    prefix = path[:-len("-symbol.json")] if path.endswith("-symbol.json") else path
    if os.path.isfile(prefix + "-symbol.json"):
        params = prefix + "-0000.params"
        if not os.path.isfile(params):
            raise FileNotFoundError(f"exported model {prefix!r}: {params!r} does not exist")
        meta: Dict[str, Any] = {}
        if os.path.isfile(prefix + "-meta.json"):
            with open(prefix + "-meta.json", encoding="utf-8") as f:
                meta = json.load(f)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], params, ctx=ctx)
        test = dict(meta.get("data") or _default_test_data(meta.get("variant")), **overrides)
        classes = meta.get("classes")
        if classes is None:
            n = net(mx.nd.zeros((1, 3, test["test_size"], test["test_size"]), ctx=ctx)).shape[1]
            classes = [str(i) for i in range(n)]
        return LoadedModel(net, classes, test, f"exported model {prefix}",
                           {"variant": meta.get("variant")})
    if path.endswith("-symbol.json") or (not os.path.exists(path)
                                         and not os.path.exists(path + "-symbol.json")):
        raise FileNotFoundError(f"no model at {path!r}: give an exported prefix (with "
                                f"PREFIX-symbol.json and PREFIX-0000.params), a .ckpt "
                                f"checkpoint, or a run folder")
    from . import checkpoint
    from .trainer import build_net
    ckpt = checkpoint.resolve_checkpoint(path)
    meta = checkpoint.read_meta(ckpt)
    cfg = meta["config"]
    classes = meta["classes"]
    net = build_net(cfg, len(classes))
    with tempfile.TemporaryDirectory(prefix="gluon_resnest-") as work:
        from ..model.parameters import load_parameters
        load_parameters(net, checkpoint.extract_params(ckpt, work), ctx=ctx)
    net.hybridize(static_alloc=True)
    test = dict({k: cfg["data"][k] for k in _TEST_KEYS}, **overrides)
    return LoadedModel(net, classes, test, f"checkpoint {ckpt} (epoch {meta['epoch']})",
                       {"variant": cfg["model"]["name"], "epoch": meta["epoch"]})


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among the k largest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def evaluate(net, loader, ctx=None) -> Dict[str, float]:
    """Top-1, top-5 accuracy and mean cross-entropy of ``net`` over every batch of ``loader``;
    also returns the logits (``'logits'``) in loader order."""
    import mxnet as mx
    ctx = ctx or mx.cpu()
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    outs = []
    for _, x, y in loader.batches(0):
        if len(y) == 0:
            continue
        with mx.autograd.predict_mode():
            logits = net(mx.nd.array(x, ctx=ctx)).asnumpy().astype(np.float64)
        outs.append(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum += float(-logp[np.arange(len(y)), y].sum())
        correct1 += topk_correct(logits, y, 1)
        correct5 += topk_correct(logits, y, 5)
        n += len(y)
    if n == 0:
        raise ValueError("no readable images to evaluate")
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "count": n,
            "logits": np.concatenate(outs)}


def predict_files(model: LoadedModel, files: Sequence[str], topk: int = 5, ctx=None,
                  batch_size: int = 32) -> List[Dict[str, Any]]:
    """Top-k (label, probability) for each image file."""
    import mxnet as mx
    ctx = ctx or mx.cpu()
    results = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        xs = []
        for path in chunk:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image {path!r} does not exist")
            with open(path, "rb") as f:
                xs.append(data_mod.eval_transform(data_mod.decode(f.read(), path), model.data))
        with mx.autograd.predict_mode():
            logits = model.net(mx.nd.array(np.stack(xs), ctx=ctx)).asnumpy().astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for path, p in zip(chunk, probs):
            order = np.argsort(-p)[:min(topk, len(p))]
            results.append({"file": path, "top": [(model.classes[i] if i < len(model.classes)
                                                   else str(i), float(p[i])) for i in order]})
    return results


def describe(metrics: Dict[str, float]) -> str:
    return (f"top-1 {100 * metrics['top1']:.2f}%  top-5 {100 * metrics['top5']:.2f}%  "
            f"loss {metrics['loss']:.4f}  ({metrics['count']} images)")

