"""Checkpoints: one zip file written atomically (temp file in the same folder, then rename).

Members (format 2), none of them a pickle:

- ``meta.json``: format, epoch, iteration, config, history, class names, and the Python and
  numpy random generators' states (integer lists).
- ``model.params``: the weights by structural name (``net.save_parameters``).
- ``optimizer.params``: the optimizer state as named arrays in MXNet's NDArray file format,
  ``<state>:<parameter>`` (``momentum:features.0.weight``; ``mean``/``var`` for Adam,
  ``weight32`` for a multi-precision master copy).
- ``optimizer.json``: the optimizer's scalars (kind, update counts per device and parameter,
  learning rate, the learning-rate schedule's position) and which states each parameter has.

MXNet has no API to read its random generator's state, so training reseeds it from
``(seed, epoch, iteration)`` before every iteration. Format 1 (gluon_resnest 0.1) stored the
optimizer state as a pickle (``trainer.states``), which can run code when loaded: its weights
and metadata are still read, but it is never unpickled, so it cannot be resumed.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from .._compat import mxnet as mxc
from .._compat.mxnet_blocks import structural_params
from .._files import atomic_write
from ..model.parameters import load_arrays

__all__ = ["FORMAT", "atomic_write", "save_checkpoint", "read_meta", "load_checkpoint", "read_params",
           "rng_state", "set_rng_state", "resolve_checkpoint", "check_resumable",
           "UnsafeCheckpointError"]

FORMAT = "gluon_resnest-checkpoint/2"
_PICKLE_FORMAT = "gluon_resnest-checkpoint/1"   # optimizer state as a pickle: never resumed
_PICKLE_MEMBER = "trainer.states"

#: Names of an optimizer's state arrays, in MXNet's order, per (optimizer, multi-precision).
#: Other optimizers (and unexpected layouts) get positional names ``state0``, ``state1``, ...
_STATE_NAMES = {
    ("sgd", False): ("momentum",), ("sgd", True): ("momentum", "weight32"),
    ("nag", False): ("momentum",), ("nag", True): ("momentum", "weight32"),
    ("adam", False): ("mean", "var"), ("adam", True): ("weight32", "mean", "var"),
}


class UnsafeCheckpointError(ValueError):
    """The checkpoint would have to be unpickled (run code) to be resumed."""


# -- random generators ------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """Python's and numpy's global generator states as JSON-able lists of integers."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`; a malformed state is a ValueError naming the part."""
    try:
        version, internal, gauss = state["python"]
        internal = tuple(int(v) for v in internal)
        if gauss is not None:
            gauss = float(gauss)
        name, keys, pos, has_gauss, cached = state["numpy"]
        keys = np.asarray(keys, dtype=np.int64)
        if name != "MT19937" or keys.shape != (624,) or keys.min() < 0 or keys.max() >= 2 ** 32:
            raise ValueError("numpy state is not MT19937 with 624 32-bit keys")
        numpy_state = (name, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached))
        random.setstate((int(version), internal, gauss))
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"malformed random-generator state in the checkpoint: {err}") from None
    np.random.set_state(numpy_state)


# -- optimizer state as named arrays ----------------------------------------------------------
def _flatten(state) -> List[Any]:
    """An optimizer state (NDArray, None or nested tuples/lists) as its leaves in order."""
    if isinstance(state, (tuple, list)):
        return [leaf for part in state for leaf in _flatten(part)]
    return [state]


def _state_labels(optimizer, weight, count: int) -> Tuple[str, ...]:
    kind = type(optimizer).__name__.lower()
    mp = bool(getattr(optimizer, "multi_precision", False)) and weight.dtype == np.float16
    names = _STATE_NAMES.get((kind, mp))
    return names if names is not None and len(names) == count else \
        tuple(f"state{i}" for i in range(count))


def _param_names(net, params: List[Any]) -> List[str]:
    """Structural name of each trainer parameter (its optimizer index is its position)."""
    by_id: Dict[int, str] = {}
    for name, p in structural_params(net).items():
        by_id.setdefault(id(p), name)
    missing = [p.name for p in params if id(p) not in by_id]
    if missing:
        raise ValueError(f"the trainer updates {len(missing)} parameter(s) that are not part of "
                         f"the network given to the checkpoint ({', '.join(missing[:3])}...)")
    return [by_id[id(p)] for p in params]


def _scheduler_state(sched) -> Optional[Dict[str, Any]]:
    """A learning-rate schedule's JSON-able attributes (its position: ``count``, ``base_lr``
    of a factor schedule, ...), recursing into lists of schedules (GluonCV's LRSequential)."""
    if sched is None:
        return None
    attrs, children = {}, {}
    for key, value in vars(sched).items():
        if _plain(value):
            attrs[key] = list(value) if isinstance(value, tuple) else value
        elif isinstance(value, (list, tuple)) and value and all(
                callable(v) and hasattr(v, "__dict__") for v in value):
            children[key] = [_scheduler_state(v) for v in value]
    cls = type(sched)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "attrs": attrs, "children": children}


def _scheduler_layout(state: Optional[Dict[str, Any]]) -> Any:
    """A schedule snapshot's classes and parts, for comparing two schedules."""
    if state is None:
        return None
    return (state["class"], {k: [_scheduler_layout(p) for p in parts]
                             for k, parts in sorted(state["children"].items())})


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str))
                                                 for v in value))


def _set_scheduler_state(sched, state: Dict[str, Any]) -> None:
    """Inverse of :func:`_scheduler_state` for a schedule of the same layout. Only plain
    attributes (numbers, strings, lists of them) are set, never one holding an object."""
    for key, value in state["attrs"].items():
        current = getattr(sched, key, None)
        if key.startswith("__") or not _plain(value) or not _plain(current):
            raise TypeError(f"learning-rate schedule attribute {key!r} = {value!r}")
        setattr(sched, key, tuple(value) if isinstance(current, tuple) else value)
    for key, parts in state["children"].items():
        for sub, part in zip(getattr(sched, key), parts):
            _set_scheduler_state(sub, part)


def _optimizer_snapshot(net, trainer) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(``<state>:<parameter>`` -> NDArray, the JSON of scalars) for ``trainer``."""
    mxc.prepare_trainer(trainer)
    opt = trainer.optimizer
    params = mxc.trainer_parameters(trainer)
    names = _param_names(net, params)
    num_update, begin, counts, device = mxc.update_counts(opt)
    info: Dict[str, Any] = {
        "optimizer": type(opt).__name__.lower(), "num_update": num_update,
        "begin_num_update": begin, "current_device": device,
        "index_update_counts": {str(d): {names[i]: n for i, n in sorted(c.items())}
                                for d, c in counts.items()},
        "lr": None if opt.lr is None else float(opt.lr),
        "lr_scheduler": _scheduler_state(opt.lr_scheduler)}
    arrays: Dict[str, Any] = {}
    updaters = mxc.trainer_updaters(trainer)
    if updaters is None:
        info["states"] = None
        info["no_states_because"] = ("the optimizer runs on the parameter servers "
                                     "(update_on_kvstore), where MXNet cannot read its state")
        return arrays, info
    info["states"] = {}
    for idx, state in sorted(mxc.updater_states(updaters[0]).items()):
        name = names[int(idx)]
        leaves = _flatten(state)
        labels = _state_labels(opt, params[int(idx)].list_data()[0], len(leaves))
        info["states"][name] = [label for label, leaf in zip(labels, leaves) if leaf is not None]
        for label, leaf in zip(labels, leaves):
            if leaf is not None:
                arrays[f"{label}:{name}"] = leaf.as_in_context(mx.cpu())
    return arrays, info


def _check_optimizer_info(where: str, net, trainer, info: Dict[str, Any]) -> Dict[str, int]:
    """Refuse a state this trainer cannot take, before anything is loaded; returns structural
    name -> optimizer index."""
    opt = trainer.optimizer
    kind = type(opt).__name__.lower()
    if info.get("optimizer") != kind:
        raise ValueError(f"{where} holds the state of optimizer {info.get('optimizer')!r}, this "
                         f"trainer uses {kind!r}; resume with the optimizer it was saved with")
    if info.get("states") is None:
        raise ValueError(f"{where} holds no optimizer state "
                         f"({info.get('no_states_because', 'not saved')}), so training cannot "
                         f"resume exactly; start a new run from its weights with "
                         f"model.pretrained={where}")
    mine = _scheduler_layout(_scheduler_state(opt.lr_scheduler))
    theirs = _scheduler_layout(info.get("lr_scheduler"))
    if mine != theirs:
        raise ValueError(f"{where}: the checkpoint's learning-rate schedule is "
                         f"{theirs[0] if theirs else None}, this trainer's is "
                         f"{mine[0] if mine else None} (or their parts differ); resume with "
                         f"the configuration it was saved with")
    index = {name: i for i, name in enumerate(_param_names(net, mxc.trainer_parameters(trainer)))}
    unknown = sorted(set(info["states"]) - set(index))
    if unknown:
        raise ValueError(f"{where} holds optimizer state for {len(unknown)} parameter(s) this "
                         f"trainer does not update: {', '.join(unknown[:3])}")
    return index


def _restore_optimizer(where: str, trainer, index: Dict[str, int], arrays: Dict[str, Any],
                       info: Dict[str, Any]) -> None:
    """Put the checkpoint's optimizer state into ``trainer`` (after the weights are loaded:
    the kvstore, if any, is initialised from them here, as ``Trainer.load_states`` does)."""
    mxc.prepare_trainer(trainer)
    opt = trainer.optimizer
    updaters = mxc.trainer_updaters(trainer)
    if updaters is None:
        raise ValueError(f"{where}: this trainer runs the optimizer on the parameter servers "
                         f"(update_on_kvstore), where MXNet cannot set its state")
    params = mxc.trainer_parameters(trainer)
    for dev, updater in enumerate(updaters):
        states = {}
        for name, saved in info["states"].items():
            i = index[name]
            weights = params[i].list_data()
            template = opt.create_state_multi_precision(i, weights[min(dev, len(weights) - 1)])
            leaves = _flatten(template)
            labels = _state_labels(opt, weights[0], len(leaves))
            expected = [label for label, leaf in zip(labels, leaves) if leaf is not None]
            if sorted(saved) != sorted(expected):
                raise ValueError(f"{where}: parameter {name!r} has optimizer state "
                                 f"{saved or 'none'}, this {type(opt).__name__.lower()} "
                                 f"optimizer keeps {expected or 'none'}; resume with the "
                                 f"settings it was saved with")
            for label, leaf in zip(labels, leaves):
                if leaf is None:
                    continue
                key = f"{label}:{name}"
                src = arrays.get(key)
                if src is None:
                    raise ValueError(f"{where}: optimizer.params lacks {key!r}")
                if src.shape != leaf.shape or src.dtype != leaf.dtype:
                    raise ValueError(f"{where}: {key!r} is {src.shape} {np.dtype(src.dtype).name}, "
                                     f"expected {leaf.shape} {np.dtype(leaf.dtype).name}")
                src.copyto(leaf)
            states[i] = template
        mxc.replace_updater_states(updater, states)
    counts = {int(d): {index[n]: int(c) for n, c in table.items() if n in index}
              for d, table in info["index_update_counts"].items()}
    mxc.set_update_counts(opt, info["num_update"], info["begin_num_update"], counts,
                          info["current_device"])
    if opt.lr_scheduler is not None:
        _set_scheduler_state(opt.lr_scheduler, info["lr_scheduler"])
    elif info.get("lr") is not None:
        trainer.set_learning_rate(float(info["lr"]))


# -- files ------------------------------------------------------------------------------------
def save_checkpoint(path: str, net, trainer, meta: Dict[str, Any]) -> str:
    """Write ``path`` atomically: a reader sees the old file or the new one, never a mix."""
    mx.nd.waitall()  # let every pending update (BatchNorm statistics included) land first
    meta = dict(meta, format=FORMAT, rng=rng_state())

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            with tempfile.TemporaryDirectory(dir=os.path.dirname(tmp), prefix=".ckpt-") as work:
                params = os.path.join(work, "model.params")
                net.save_parameters(params)
                with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
                    zf.writestr("meta.json", json.dumps(meta))
                    zf.write(params, "model.params")
                    if trainer is not None:
                        arrays, info = _optimizer_snapshot(net, trainer)
                        states = os.path.join(work, "optimizer.params")
                        mx.nd.save(states, arrays)
                        zf.write(states, "optimizer.params")
                        zf.writestr("optimizer.json", json.dumps(info))
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, write)


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
    """The checkpoint's metadata (epoch, iteration, config, history, ...). Reads only JSON, so
    it also reads format-1 checkpoints (whose pickled optimizer state stays untouched)."""
    with _open(path) as zf:
        try:
            meta = json.loads(zf.read("meta.json"))
        except ValueError as err:
            raise ValueError(f"{path!r}: meta.json is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, _PICKLE_FORMAT):
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path!r}: unsupported checkpoint format {found!r}, expected {FORMAT!r}")
    return meta


def read_params(path: str) -> Dict[str, mx.nd.NDArray]:
    """The checkpoint's weights (``model.params``) as a structural name -> array map, read in
    memory (no temporary file)."""
    with _open(path) as zf:
        return _params_from(path, zf)


def _params_from(path: str, zf: zipfile.ZipFile) -> Dict[str, mx.nd.NDArray]:
    try:
        arrays = mx.nd.load_frombuffer(zf.read("model.params"))
    except (KeyError, mx.base.MXNetError) as err:
        raise ValueError(f"checkpoint {path!r}: unreadable model.params "
                         f"({str(err).splitlines()[0]})") from None
    if not isinstance(arrays, dict):
        raise ValueError(f"checkpoint {path!r}: model.params holds no named arrays")
    return arrays


def _check_resumable(path: str, meta: Dict[str, Any], names: List[str]) -> None:
    if meta.get("format") == _PICKLE_FORMAT or _PICKLE_MEMBER in names:
        raise UnsafeCheckpointError(
            f"cannot resume from {path!r}: it was written by gluon_resnest 0.1 (checkpoint "
            f"format 1) and stores the optimizer state as a pickle ({_PICKLE_MEMBER}), which "
            f"can run arbitrary code when loaded, so it is never unpickled. Its weights are "
            f"safe to use: start a new run from them with model.pretrained={path} (optimizer "
            f"state and position start afresh), or evaluate them with "
            f"`gluon-resnest eval {path}`")
    if "optimizer.json" not in names or "optimizer.params" not in names:
        raise ValueError(f"checkpoint {path!r} holds no optimizer state (saved without a "
                         f"trainer); start a new run from its weights with "
                         f"model.pretrained={path}")


def check_resumable(path: str) -> Dict[str, Any]:
    """The metadata of ``path`` if training can resume from it (reads only JSON and the member
    list): :class:`UnsafeCheckpointError` for a format-1 checkpoint (pickled optimizer state),
    ValueError when it holds no optimizer state. Lets a caller refuse before building a run."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    with _open(path) as zf:
        _check_resumable(path, meta, zf.namelist())
    return meta


def _malformed_is_valueerror(path: str, fn, *args):
    try:
        return fn(*args)
    except (KeyError, TypeError, AttributeError) as err:   # a field missing or of another type
        raise ValueError(f"checkpoint {path!r}: malformed optimizer.json ({err!r})") from None


def load_checkpoint(path: str, net, trainer=None, ctx=None) -> Dict[str, Any]:
    """Load parameters (and optimizer state, when ``trainer`` is given) into ``net``; restore
    the global Python/numpy RNG states; return the metadata. Nothing is unpickled: a format-1
    checkpoint is refused with :class:`UnsafeCheckpointError` when ``trainer`` is given."""

    path = resolve_checkpoint(path)
    meta = read_meta(path)
    arrays: Dict[str, Any] = {}
    info: Dict[str, Any] = {}
    with _open(path) as zf:
        names = zf.namelist()
        if trainer is not None:
            _check_resumable(path, meta, names)
            try:
                info = json.loads(zf.read("optimizer.json"))
                arrays = mx.nd.load_frombuffer(zf.read("optimizer.params"))
                arrays = arrays or {}     # MXNet reads an empty dict back as []
            except (ValueError, mx.base.MXNetError) as err:
                raise ValueError(f"checkpoint {path!r}: unreadable optimizer state "
                                 f"({str(err).splitlines()[0]})") from None
            if not isinstance(info, dict) or not isinstance(arrays, dict):
                raise ValueError(f"checkpoint {path!r}: optimizer.json/optimizer.params do "
                                 f"not hold named entries")
        params = _params_from(path, zf)
    index = _malformed_is_valueerror(path, _check_optimizer_info, path, net, trainer,
                                     info) if trainer is not None else {}
    load_arrays(net, params, f"checkpoint {path!r}", ctx=ctx)
    if trainer is not None:
        _malformed_is_valueerror(path, _restore_optimizer, path, trainer, index, arrays, info)
    set_rng_state(meta["rng"])
    return meta
