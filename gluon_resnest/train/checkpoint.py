"""Checkpoints: one zip file written atomically (temp file in the same folder, then rename).

Members: ``meta.json`` (format, epoch, iteration, config, RNG states, history, class names),
``model.params`` (structural keys, as ``net.save_parameters``) and ``trainer.states``
(MXNet's optimizer states, momentum included). MXNet has no API to read its random
generator's state, so training reseeds it from ``(seed, epoch, iteration)`` before every
iteration; the seed is part of the config and the position is ``epoch``/``iteration``.
Checkpoints hold pickled optimizer states (MXNet's format): load only files you trust.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import zipfile
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["FORMAT", "save_checkpoint", "read_meta", "load_checkpoint", "extract_params",
           "rng_state", "set_rng_state", "resolve_checkpoint"]

FORMAT = "gluon_resnest-checkpoint/1"


def rng_state() -> Dict[str, Any]:
    """Python's and numpy's global generator states as JSON-able lists."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(path: str, net, trainer, meta: Dict[str, Any]) -> str:
    """Write ``path`` atomically: a reader sees the old file or the new one, never a mix."""
    import mxnet as mx
    mx.nd.waitall()  # let every pending update (BatchNorm statistics included) land first
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    meta = dict(meta, format=FORMAT, rng=rng_state())
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".ckpt-") as work:
            params = os.path.join(work, "model.params")
            net.save_parameters(params)
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr("meta.json", json.dumps(meta))
                zf.write(params, "model.params")
                if trainer is not None:
                    states = os.path.join(work, "trainer.states")
                    trainer.save_states(states)
                    zf.write(states, "trainer.states")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a run folder (its ``last.ckpt``)."""
    if os.path.isdir(path):
        path = os.path.join(path, "last.ckpt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    return path


def _open(path: str) -> zipfile.ZipFile:
    path = resolve_checkpoint(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path!r} is not a gluon_resnest checkpoint (not a zip file; "
                         f"truncated or another format)") from None
    if "meta.json" not in zf.namelist() or "model.params" not in zf.namelist():
        zf.close()
        raise ValueError(f"{path!r} is not a gluon_resnest checkpoint (no meta.json/model.params)")
    return zf


def read_meta(path: str) -> Dict[str, Any]:
    """The checkpoint's metadata (epoch, iteration, config, history, ...)."""
    with _open(path) as zf:
        meta = json.loads(zf.read("meta.json"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path!r}: unsupported checkpoint format {meta.get('format')!r}, "
                         f"expected {FORMAT!r}")
    return meta


def extract_params(path: str, dest_dir: str) -> str:
    """Write the checkpoint's ``model.params`` into ``dest_dir``; returns its path."""
    with _open(path) as zf:
        return zf.extract("model.params", dest_dir)


def load_checkpoint(path: str, net, trainer=None, ctx=None) -> Dict[str, Any]:
    """Load parameters (and optimizer states, when ``trainer`` is given) into ``net``; restore
    the global Python/numpy RNG states; return the metadata."""
    from ..model.parameters import load_parameters
    meta = read_meta(path)
    with tempfile.TemporaryDirectory(prefix="gluon_resnest-ckpt-") as work:
        with _open(path) as zf:
            zf.extractall(work)
        load_parameters(net, os.path.join(work, "model.params"), ctx=ctx)
        states = os.path.join(work, "trainer.states")
        if trainer is not None:
            if not os.path.isfile(states):
                raise ValueError(f"checkpoint {path!r} holds no optimizer states")
            trainer.load_states(states)
    set_rng_state(meta["rng"])
    return meta


def best_metric(meta: Optional[Dict[str, Any]]) -> float:
    return float((meta or {}).get("best", {}).get("val_top1", float("-inf")))
