"""The one model loader, evaluation and prediction.

:func:`load` accepts every form a model takes: a variant name (with its weights), an exported
artifact (symbol ``PREFIX`` or ``.onnx`` file, see :mod:`gluon_resnest.deploy.artifact`), a
``.ckpt`` checkpoint or a run folder. It returns a
:class:`~gluon_resnest.deploy.artifact.LoadedModel`: call it on a batch preprocessed with
``model.meta.transform``. Checkpoints carry their training config, from which the network
and its metadata (:func:`meta_from_config`) are rebuilt.
"""
from __future__ import annotations

import os
import random
from typing import Any, Dict, List, Optional, Sequence, Union

import mxnet as mx
import numpy as np

from ..data.transforms import CorruptImageError, read_image
from ..deploy.artifact import LoadedModel, ModelMeta, load_artifact, load_variant
from ..deploy.runtimes import Predictor, check_request, load_predictor
from ..deploy.symbol import symbol_files
from ..model.resnest import build
from ..model.variants import ALIASES, VARIANTS, resolve_name
from . import checkpoint

__all__ = ["LoadedModel", "Predictor", "load", "meta_from_config", "evaluate", "predict_files",
           "topk_correct", "describe"]


def meta_from_config(cfg: Dict[str, Any], classes: Sequence[str], **details: Any) -> ModelMeta:
    """The metadata of a network trained with ``cfg``: its test transform, its classes."""
    d, m = cfg["data"], cfg["model"]
    if m.get("kwargs"):
        details = {"model_kwargs": dict(m["kwargs"]), **details}
    return ModelMeta(resolve_name(m["name"]), d["test_size"], d["crop_pct"], d["interpolation"],
                     d["mean"], d["std"], len(classes), tuple(classes),
                     task=cfg.get("task", "classification"), details=details)


def _is_variant(name: str) -> bool:
    return name.lower() in VARIANTS or name.lower() in ALIASES


def _load_checkpoint(path: str, ctx=None) -> LoadedModel:
    """A ``.ckpt`` file, or a run folder: its ``best.ckpt`` (the epoch the run exported),
    else its ``last.ckpt``."""
    ctx = ctx or mx.cpu()
    run = path if os.path.isdir(path) else None
    best = os.path.join(path, "best.ckpt") if run else None
    ckpt = best if best and os.path.isfile(best) else checkpoint.resolve_checkpoint(path)
    info = checkpoint.read_meta(ckpt)
    cfg = info["config"]
    task = cfg.get("task", "classification")
    if task != "classification" or "classes" not in info:
        raise ValueError(f"checkpoint {ckpt!r} is from a {task} run; eval and predict handle "
                         f"classifiers")
    classes = info["classes"]
    net = build(cfg["model"]["name"], classes=len(classes), **cfg["model"]["kwargs"])
    # load_checkpoint also restores the global Python/numpy RNG states (for resuming);
    # loading a model to evaluate must leave the caller's generators alone
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        checkpoint.load_checkpoint(ckpt, net, ctx=ctx)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    net.hybridize(static_alloc=True, static_shape=True)
    epoch = info["epoch"]
    meta = meta_from_config(cfg, classes, epoch=epoch)
    source = f"checkpoint {ckpt} (epoch {epoch})"
    if run:
        exported = os.path.join(run, "export", "model")
        which = "best.ckpt" if ckpt == best else "last.ckpt (no best.ckpt)"
        top1 = (info.get("best") or {}).get("val_top1")
        source = (f"run folder {run}: {which}, epoch {epoch}"
                  + (f" (best validation top-1 {100 * top1:.2f}%)" if top1 is not None
                     and ckpt == best else "")
                  + (f", the epoch exported to {exported}"
                     if ckpt == best and os.path.isfile(symbol_files(exported)[0]) else ""))
    return LoadedModel(meta, source, block=net, path=ckpt, ctx=ctx)


def load(model: str, params: Optional[str] = None, pretrained: Union[bool, str] = False,
         random_init: bool = False, classes: Optional[int] = None, ctx=None,
         runtime: Optional[str] = None,
         precision: Optional[str] = None) -> Union[LoadedModel, Predictor]:
    """Load any form of model.

    ``model``: a variant name (weights from ``params``, ``pretrained`` or ``random_init``,
    head size ``classes``; a variant name wins over a file of that name: write
    ``./resnest50``), an exported ``PREFIX`` (or ``PREFIX-symbol.json``), an ``.onnx`` file
    (needs onnxruntime, the ``onnx`` extra), a ``.ckpt`` file or a run folder.

    With ``runtime`` (``"auto"``, ``"mxnet"``, ``"onnxruntime"``, ``"openvino"``) or
    ``precision`` (``"fp32"``, ``"bf16"``, ``"int8"``) it returns a
    :class:`~gluon_resnest.deploy.runtimes.Predictor` in that runtime (``"auto"``: the fastest
    installed, measured here once and cached: see :mod:`gluon_resnest.deploy.runtimes`);
    without either, the :class:`LoadedModel` as read.
    """
    if not isinstance(model, str):
        raise TypeError(f"model must be a str (variant name or path), got {type(model).__name__}")
    if runtime is not None or precision is not None:
        runtime = runtime or "auto"
        check_request(runtime, precision)           # before any loading
        path = os.path.expanduser(model)
        if not _is_variant(model) and path.lower().endswith(".onnx"):
            # read by the runtime itself: OpenVINO needs no onnxruntime
            return load_predictor(path, runtime, precision)
        return load_predictor(load(model, params, pretrained, random_init, classes, ctx),
                              runtime, precision)
    if _is_variant(model):
        return load_variant(model, params, pretrained, random_init, classes, ctx)
    if params or pretrained or random_init or classes is not None:
        raise ValueError("--params/--pretrained/--random/--classes apply to a variant name, not "
                         f"to {model!r}")
    path = os.path.expanduser(model)
    if path.lower().endswith(".onnx") or path.endswith("-symbol.json") or \
            os.path.isfile(symbol_files(path)[0]):
        return load_artifact(path, ctx)
    if os.path.isdir(path) or path.endswith(".ckpt"):
        return _load_checkpoint(path, ctx)
    raise FileNotFoundError(f"no model at {model!r}: give a variant name, an exported prefix "
                            f"(PREFIX-symbol.json beside it), an .onnx file, a .ckpt "
                            f"checkpoint or a run folder")


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among the k largest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def _logits(net: Any, x: np.ndarray, ctx) -> np.ndarray:
    if isinstance(net, (LoadedModel, Predictor)):
        return net(x).astype(np.float64)
    with mx.autograd.predict_mode():
        return net(mx.nd.array(x, ctx=ctx)).astype("float32").asnumpy().astype(np.float64)


def evaluate(net: Any, loader, ctx=None) -> Dict[str, Any]:
    """Top-1, top-5 accuracy and mean cross-entropy of ``net`` (a LoadedModel, a Predictor
    or a Gluon block) over every batch of ``loader``; also returns the logits (``'logits'``) in loader
    order."""
    ctx = ctx or mx.cpu()
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    outs = []
    for _, x, y in loader.batches(0):
        if len(y) == 0:
            continue
        logits = _logits(net, x, ctx)
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


def predict_files(model: Union[LoadedModel, Predictor], files: Sequence[str], topk: int = 5,
                  batch_size: int = 32, on_error: str = "raise") -> List[Dict[str, Any]]:
    """Top-k (label, probability) for each image file, preprocessed with the model's
    transform: one ``{"file", "top"}`` per file, in order.

    ``on_error='raise'``: a missing or undecodable file raises before any prediction;
    ``'report'``: it gets ``{"file", "error"}`` (the message) and the others are predicted.
    """
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    if on_error not in ("raise", "report"):
        raise ValueError(f"on_error must be 'raise' or 'report', got {on_error!r}")
    if on_error == "raise":
        for path in files:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image {path!r} does not exist")
    names = model.classes
    results: List[Dict[str, Any]] = [{} for _ in files]
    for start in range(0, len(files), batch_size):
        index, arrays = [], []
        for i in range(start, min(start + batch_size, len(files))):
            try:
                arrays.append(model.preprocess(read_image(files[i])))
                index.append(i)
            except (FileNotFoundError, CorruptImageError) as err:
                if on_error == "raise":
                    raise
                results[i] = {"file": files[i], "error": str(err)}
        if not arrays:
            continue
        logits = model(np.stack(arrays)).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for i, p in zip(index, probs):
            order = np.argsort(-p)[:min(topk, len(p))]
            results[i] = {"file": files[i], "top": [(names[j], float(p[j])) for j in order]}
    return results


def describe(metrics: Dict[str, Any]) -> str:
    return (f"top-1 {100 * metrics['top1']:.2f}%  top-5 {100 * metrics['top5']:.2f}%  "
            f"loss {metrics['loss']:.4f}  ({metrics['count']} images)")
