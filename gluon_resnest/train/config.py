"""Training configs for every task: YAML files, ``base:`` inheritance, ``key=value`` overrides,
validation.

A config is a nested dict; its ``task`` (classification, detection, segmentation) picks the
schema: :data:`DEFAULTS` for classification, :data:`DENSE_DEFAULTS` for the other two. Files may
name a ``base:`` file (relative to themselves) whose values they override. :func:`resolve`
checks every key against the task's schema (an unknown key is a ``ValueError`` naming the
closest known keys), reads numbers in any YAML spelling (``1e-3`` included), expands ``~`` in
paths, validates values and counts, and fills in the defaults.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from ..dense.registry import parse_dense_name
from ..model.variants import VARIANTS, resolve_name

__all__ = ["TASKS", "DEFAULTS", "DENSE_DEFAULTS", "CHOICES", "defaults", "load_config",
           "load_yaml", "resolve", "apply_overrides", "parse_override", "find_config",
           "config_dirs", "format_config", "flatten"]

TASKS: Tuple[str, ...] = ("classification", "detection", "segmentation")

#: Every classification config key with its default (the paper's ImageNet recipe).
DEFAULTS: Dict[str, Any] = {
    "task": "classification",        # classification | detection | segmentation
    "model": {
        "name": "resnest50",          # any variant name (see `gluon-resnest list`)
        "kwargs": {},                 # extra build() arguments: layers, radix, stem_width, ...
        "classes": None,              # null: the number of classes found in the data
        "dropblock_prob": None,       # DropBlock p reached at the last epoch (ramped from 0);
                                      # null: the variant's
        "final_drop": None,           # dropout before the classifier; null: the variant's
        "last_gamma": True,           # zero-init the last BN gamma of every bottleneck
        "use_global_stats": False,    # freeze BatchNorm statistics
        "pretrained": None,           # fine-tune from: .params / .ckpt path, or true (GluonCV file)
        "init": "xavier",             # xavier (gaussian, in, 2) | msra
    },
    "data": {
        "train": None,                # 'demo', an image folder, or a .rec file (with its .idx)
        "val": None,                  # same; null: hold out data.val_fraction of data.train
        "val_fraction": 0.0,          # used when data.val is null (0: no validation)
        "limit": None,                # use at most N images of each split (quick trials)
        # null in the next six: the variant's (model/variants.py, as its pretrained weights)
        "train_size": None,           # training resolution
        "test_size": None,            # test resolution (crop size)
        "crop_pct": None,             # test: resize the short side to test_size / crop_pct
        "interpolation": None,        # bilinear | bicubic | area | nearest
        "mean": None,                 # RGB, 0..1 scale
        "std": None,
        "on_corrupt": "error",        # error | skip (skipped images are counted and reported)
        "workers": 4,                 # image decoding threads (0: decode in the main thread)
        "demo_size": 32,              # the demo digits are upsampled from 8x8 to this size
    },
    "optim": {
        "optimizer": "nag",           # nag | sgd | adam
        "batch_size": 256,            # total over devices and workers
        "lr": 0.1,                    # learning rate per lr_batch_size images
        "lr_batch_size": 256,         # lr is scaled by batch_size / lr_batch_size
        "momentum": 0.9,
        "wd": 0.0001,
        "no_wd": True,                # no weight decay on biases and BatchNorm gamma/beta
        "epochs": 270,
        "warmup_epochs": 5,           # linear warm-up from warmup_lr
        "warmup_lr": 0.0,
        "schedule": "cosine",         # cosine | constant (after warm-up)
        "final_lr": 0.0,              # cosine end point
        "label_smoothing": 0.1,
        "mixup": 0.2,                 # Beta(alpha, alpha); 0 disables
        "mixup_off_epochs": 0,        # no mixup in the last N epochs
    },
    "aug": {
        "crop_area": [0.08, 1.0],     # random-resized-crop area range
        "crop_ratio": [0.75, 1.3333333333333333],
        "flip": True,
        "auto_augment": True,         # AutoAugment, the paper's ImageNet policy
        "jitter": 0.4,                # brightness / contrast / saturation
        "lighting": 0.1,              # AlexNet-style PCA lighting noise
    },
    "run": {
        "seed": 0,
        "out": None,                  # run folder; null: ./runs/<config>-<time>
        "devices": ["cpu"],           # e.g. [gpu:0, gpu:1] or [cpu:0, cpu:1]
        "kvstore": "device",          # device | local | dist_sync | dist_device_sync | horovod
        "hybridize": True,
        "progress": True,             # per-epoch tqdm progress bar
        "export": True,               # export the best model and check its predictions
        "stop_after": None,           # end this run after this epoch (resume continues)
        "name": None,                 # name of the config (set by the loader)
    },
}

_DENSE_TRAIN: Dict[str, Any] = {
    "iterations": None,              # set exactly one of iterations and epochs
    "epochs": None,
    "batch_size": 1,
    "lr": 0.01,
    "lr_mode": "step",               # step | poly | cosine | linear | constant
    "lr_decay_epochs": [],           # step mode: multiply by lr_decay at these epochs
    "lr_decay": 0.1,
    "warmup_iters": 0,               # linear warm-up from lr * warmup_factor
    "warmup_factor": 1 / 3,
    "momentum": 0.9,
    "wd": 1e-4,
    "clip_gradient": None,           # global gradient norm limit; null: none
    "log_interval": 10,              # print every N iterations (0: no per-iteration lines)
    "checkpoint_interval": None,     # save last.ckpt every N iterations; null: once per epoch
    "seed": 0,
    "export": True,                  # export the inference graph at the end
    "eval_before": True,             # also evaluate the untrained network
}

#: Every detection and segmentation config key with its default: the small end-to-end runs on
#: the generated shapes set (about 2 min on 2 cores).
DENSE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "detection": {
        "task": "detection",
        # model.name: a registered detector name (e.g. cascade_rcnn_fpn_syncbn_resnest50_coco);
        # when set it decides model.arch and model.backbone, and model.norm unless the data
        # set is the generated shapes set (see _check_dense)
        "model": {"arch": "faster_rcnn_fpn", "backbone": "resnest50", "norm": "gn",
                  "pretrained_base": False, "last_gamma": True, "kwargs": {}, "name": None},
        "data": {"dataset": "shapes", "root": None, "num_train": 16, "num_val": 8,
                 "image_size": 96, "seed": 0},
        "train": dict(_DENSE_TRAIN, iterations=120, rpn_smoothl1_rho=1 / 9,
                      rcnn_smoothl1_rho=1.0),
        "run": {"out": None, "name": None},
    },
    "segmentation": {
        "task": "segmentation",
        "model": {"arch": "deeplab", "backbone": "resnest50", "norm": "gn",
                  "pretrained_base": False, "last_gamma": True, "aux": True, "aux_weight": 0.5,
                  "kwargs": {}},
        "data": {"dataset": "shapes", "root": None, "num_train": 16, "num_val": 8,
                 "image_size": 96, "seed": 0, "base_size": 96, "crop_size": 96},
        "train": dict(_DENSE_TRAIN, iterations=40, batch_size=2, lr_mode="poly"),
        "run": {"out": None, "name": None},
    },
}

#: Allowed values of enumerated classification keys.
CHOICES: Dict[str, Tuple[str, ...]] = {
    "task": TASKS,
    "model.init": ("xavier", "msra"),
    "data.interpolation": ("bilinear", "bicubic", "area", "nearest"),
    "data.on_corrupt": ("error", "skip"),
    "optim.optimizer": ("nag", "sgd", "adam"),
    "optim.schedule": ("cosine", "constant"),
    "run.kvstore": ("device", "local", "dist_sync", "dist_device_sync", "dist_async",
                    "horovod"),
}
_LR_MODES = ("step", "poly", "cosine", "linear", "constant")
_CHOICES_BY_TASK: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "classification": CHOICES,
    "detection": {"task": TASKS, "model.arch": ("faster_rcnn_fpn", "mask_rcnn_fpn",
                                                "cascade_rcnn_fpn", "cascade_mask_rcnn_fpn"),
                  "model.norm": ("gn", "bn", "syncbn", "frozen"),
                  "data.dataset": ("shapes", "voc", "coco"), "train.lr_mode": _LR_MODES},
    "segmentation": {"task": TASKS, "model.arch": ("deeplab",),
                     "model.norm": ("gn", "bn", "syncbn"),
                     "data.dataset": ("shapes", "ade20k", "citys", "pascal_voc"),
                     "train.lr_mode": _LR_MODES},
}

# Keys whose type is not their default's. count: a positive integer; number: a finite
# number; numbers: a list of them; path: a file or folder (``~`` expanded); weights: true/false
# or a path / GluonCV hash tag; text: a string; mapping: a dict passed on as is. A trailing
# '?' allows null.
_KINDS: Dict[str, str] = {
    "model.kwargs": "mapping", "model.pretrained": "weights?", "model.pretrained_base": "weights",
    "model.classes": "count?", "model.dropblock_prob": "number?", "model.final_drop": "number?",
    "data.train": "path?", "data.val": "path?", "data.root": "path?", "data.limit": "count?",
    "data.train_size": "count?", "data.test_size": "count?", "data.crop_pct": "number?",
    "data.interpolation": "text?", "data.mean": "numbers?", "data.std": "numbers?",
    "aug.crop_area": "numbers", "aug.crop_ratio": "numbers",
    "run.out": "path?", "run.name": "text?", "run.stop_after": "count?",
    "train.iterations": "count?", "train.epochs": "count?", "train.clip_gradient": "number?",
    "train.checkpoint_interval": "count?", "train.lr_decay_epochs": "numbers",
    "optim.batch_size": "count", "optim.epochs": "count", "optim.lr_batch_size": "count",
    "train.batch_size": "count", "data.num_train": "count", "data.num_val": "count",
    "data.image_size": "count", "data.base_size": "count", "data.crop_size": "count",
}
#: Pairs of which a config sets exactly one: naming one (non-null) without the other nulls it.
_EXCLUSIVE = {"train.iterations": "train.epochs", "train.epochs": "train.iterations"}
#: Data keys whose null means "the variant's" (model/variants.py holds the values).
_VARIANT_DATA = {"train_size": "input_size", "test_size": "input_size", "crop_pct": "crop_pct",
                 "interpolation": "interpolation", "mean": "mean", "std": "std"}


def defaults(task: str) -> Dict[str, Any]:
    """The schema (every key with its default) of ``task``."""
    if task not in TASKS:
        raise ValueError(f"config key task: {task!r} is not one of {', '.join(TASKS)}")
    return copy.deepcopy(DEFAULTS if task == "classification" else DENSE_DEFAULTS[task])


def _is_leaf_section(key: str) -> bool:
    return key.endswith(".kwargs") or key == "kwargs"


def flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (``model.kwargs`` and empty mappings stay one value)."""
    out: Dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not _is_leaf_section(key):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _suggest(key: str, known: Sequence[str]) -> str:
    candidates = list(known) + sorted({k.split(".")[0] for k in known if "." in k})
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    leaves = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in known],
                                       n=2, cutoff=0.75)
    close += [k for k in known if k.split(".")[-1] in leaves and k not in close]
    return f"; did you mean {', '.join(close)}?" if close else ""


def _unknown(key: str, where: str, schema: Dict[str, Any]) -> ValueError:
    known = list(flatten(schema))
    sections = ", ".join(k for k in schema if k != "task")
    return ValueError(f"unknown config key {key!r} in {where}{_suggest(key, known)} "
                      f"(task {schema['task']}; sections: {sections})")


# -- YAML -----------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML 1.1 plus the number spellings it misses: ``1e-3``, ``2E5``, ``1.0e3``, ``.5e-2``
    (YAML 1.1 wants a dot and a signed exponent, and reads these as strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+"
               r"|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?)$"),
    list("-+0123456789."))


def _yaml_load(text: Any) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only


def load_yaml(path: str) -> Dict[str, Any]:
    """One YAML file as a dict, its ``base:`` chain merged in (the file's values win)."""
    return _load_yaml(path, ())


def _load_yaml(path: str, seen: Tuple[str, ...]) -> Dict[str, Any]:
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    if path in seen:
        raise ValueError(f"config {path!r} inherits from itself (base chain: {' -> '.join(seen)})")
    with open(path, encoding="utf-8") as f:
        try:
            data = _yaml_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config {path!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {path!r} must hold a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base:
        parent = _load_yaml(os.path.join(os.path.dirname(path), base), seen + (path,))
        data = _merge(parent, data)
    return data


def _merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "kwargs":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# -- overrides ------------------------------------------------------------------------------
def parse_override(text: str) -> Tuple[str, Any]:
    """'optim.lr=1e-3' -> ('optim.lr', 0.001); the value is parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. optim.epochs=10)")
    key, value = text.split("=", 1)
    return key.strip(), _parse_value(value)


def _parse_value(value: str) -> Any:
    try:
        return _yaml_load(value) if value.strip() else None
    except yaml.YAMLError:
        return value


def _known(key: str, schema: Dict[str, Any]) -> bool:
    flat = flatten(schema)
    return key in flat or any(key.startswith(k + ".") for k in flat if _is_leaf_section(k))


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[Tuple[str, Any]],
                    check: bool = True) -> Dict[str, Any]:
    """Set dotted keys in a copy of ``cfg``. ``check``: only keys of the task's schema."""
    cfg = copy.deepcopy(cfg)
    overrides = [(k, _parse_value(v) if isinstance(v, str) else v) for k, v in overrides]
    for key, value in overrides:            # the task first: it decides the schema
        if key == "task":
            cfg["task"] = value
    schema = defaults(_task_of(cfg, "the command line"))
    given = {k for k, _ in overrides}
    implied = [(_EXCLUSIVE[k], None) for k, v in overrides
               if k in _EXCLUSIVE and v is not None and _EXCLUSIVE[k] not in given]
    for key, value in overrides + implied:
        if check and not _known(key, schema):
            if isinstance(schema.get(key), dict):
                raise ValueError(f"config key {key} is a section; set its keys, e.g. "
                                 f"{key}.{next(iter(schema[key]))}=...")
            raise _unknown(key, "the command line", schema)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return cfg


# -- validation -----------------------------------------------------------------------------
def _task_of(raw: Dict[str, Any], where: str) -> str:
    task = raw.get("task", "classification")
    if task not in TASKS:
        raise ValueError(f"config key task in {where}: {task!r} is not one of {', '.join(TASKS)}")
    return task


def _number(key: str, value: Any) -> float:
    if isinstance(value, str):              # "1e-3" from Python or another YAML reader
        parsed = _parse_value(value)
        value = parsed if isinstance(parsed, (int, float)) else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"config key {key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"config key {key}: expected a finite number, got {value!r}")
    return value


def _integer(key: str, value: Any) -> int:
    value = _number(key, value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"config key {key}: expected an integer, got {value!r}")
        value = int(value)
    return value


def _check_type(key: str, value: Any, default: Any) -> Any:
    kind = _KINDS.get(key)
    if kind is None:                                      # the default's type
        kind = ("bool" if isinstance(default, bool) else "int" if isinstance(default, int)
                else "number" if isinstance(default, float) else "text"
                if isinstance(default, str) else "list" if isinstance(default, list) else "any")
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"config key {key}: expected true or false, got {value!r}")
    elif kind == "int":
        value = _integer(key, value)
    elif kind == "count":
        value = _integer(key, value)
        if value < 1:
            raise ValueError(f"config key {key}: expected a positive integer, got {value!r}")
    elif kind == "number":
        value = _number(key, value)
    elif kind == "text":
        if not isinstance(value, str):
            raise ValueError(f"config key {key}: expected a string, got {value!r}")
    elif kind in ("list", "numbers"):
        if isinstance(value, str):
            value = [_parse_value(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key}: expected a list, got {value!r}")
        value = [_number(key, v) for v in value] if kind == "numbers" else \
            [str(v).strip() for v in value]
    elif kind == "path":
        if not isinstance(value, str):
            raise ValueError(f"config key {key}: expected a path, got {value!r}")
        value = os.path.expanduser(value)
    elif kind == "weights":
        if isinstance(value, str):
            value = os.path.expanduser(value)
        elif not isinstance(value, bool):
            raise ValueError(f"config key {key}: expected true, false or a file path, got "
                             f"{value!r}")
    elif kind == "mapping":
        if not isinstance(value, dict):
            raise ValueError(f"config key {key}: expected a mapping, got {value!r}")
    return value


def resolve(raw: Dict[str, Any], where: str = "config") -> Dict[str, Any]:
    """Validate a config of any task and fill in every default; returns a new dict."""
    if not isinstance(raw, dict):
        raise TypeError(f"{where}: a config must be a mapping, got {type(raw).__name__}")
    task = _task_of(raw, where)
    schema = defaults(task)
    known = flatten(schema)
    sections = {k for k, v in schema.items() if isinstance(v, dict)}
    flat = dict(known)
    flat_raw = flatten(raw)
    for key, other in _EXCLUSIVE.items():
        if key in known and flat_raw.get(key) is not None and other not in flat_raw:
            flat[other] = None
    for key, value in flat_raw.items():
        if key in sections:
            if value == {}:
                continue
            raise TypeError(f"config key {key} in {where}: expected a mapping (the {key} "
                            f"section), got {value!r}")
        if key not in known:
            raise _unknown(key, where, schema)
        flat[key] = _check_type(key, value, known[key])
    choices = _CHOICES_BY_TASK[task]
    for key, allowed in choices.items():
        if flat.get(key) is not None and flat[key] not in allowed:
            raise ValueError(f"config key {key}: {flat[key]!r} is not one of "
                             f"{', '.join(allowed)}")
    cfg: Dict[str, Any] = {}
    for key, value in flat.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = copy.deepcopy(value)
    if task == "classification":
        _check_classification(cfg)
    else:
        _check_dense(cfg)
    return cfg


def _at_least(key: str, value: float, lo: float, strict: bool = False) -> None:
    if value < lo or (strict and value == lo):
        raise ValueError(f"config key {key}: must be {'>' if strict else '>='} {lo}, "
                         f"got {value}")


def _in_range(key: str, value: float, lo: float, hi: float, closed_hi: bool = True) -> None:
    if not (lo <= value <= hi if closed_hi else lo <= value < hi):
        raise ValueError(f"config key {key}: must be in [{lo}, {hi}{']' if closed_hi else ')'}, "
                         f"got {value}")


def _variant(key: str, name: str) -> str:
    try:
        return resolve_name(name)
    except (ValueError, TypeError) as err:
        raise ValueError(f"config key {key}: {err}") from None


def _check_classification(cfg: Dict[str, Any]) -> None:
    m, o, d, a = cfg["model"], cfg["optim"], cfg["data"], cfg["aug"]
    m["name"] = _variant("model.name", m["name"])
    spec = VARIANTS[m["name"]]
    for key, field in _VARIANT_DATA.items():             # null: the variant's own value
        if d[key] is None:
            value = getattr(spec, field)
            d[key] = list(value) if isinstance(value, tuple) else value
    if d["interpolation"] not in CHOICES["data.interpolation"]:
        raise ValueError(f"config key data.interpolation: {d['interpolation']!r} is not one of "
                         f"{', '.join(CHOICES['data.interpolation'])}")
    _at_least("optim.lr", o["lr"], 0, strict=True)
    _at_least("optim.wd", o["wd"], 0)
    _in_range("optim.momentum", o["momentum"], 0.0, 1.0, closed_hi=False)
    if not 0 <= o["warmup_epochs"] <= o["epochs"]:
        raise ValueError(f"config key optim.warmup_epochs: must be in [0, epochs={o['epochs']}],"
                         f" got {o['warmup_epochs']}")
    _in_range("optim.label_smoothing", o["label_smoothing"], 0.0, 1.0, closed_hi=False)
    _at_least("optim.mixup", o["mixup"], 0)
    _at_least("optim.mixup_off_epochs", o["mixup_off_epochs"], 0)
    if not 0.0 < d["crop_pct"] <= 1.0:
        raise ValueError(f"config key data.crop_pct: must be in (0, 1], got {d['crop_pct']}")
    _in_range("data.val_fraction", d["val_fraction"], 0.0, 1.0, closed_hi=False)
    _at_least("data.workers", d["workers"], 0)
    for key in ("mean", "std"):
        if len(d[key]) != 3:
            raise ValueError(f"config key data.{key}: expected 3 numbers (RGB), got {d[key]!r}")
    if min(d["std"]) <= 0:
        raise ValueError(f"config key data.std: must be > 0, got {d['std']!r}")
    for key in ("crop_area", "crop_ratio"):
        lo_hi = a[key]
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            raise ValueError(f"config key aug.{key}: expected [low, high] with 0 < low <= high, "
                             f"got {lo_hi!r}")
    for key in ("dropblock_prob", "final_drop"):
        if m[key] is not None:
            _in_range(f"model.{key}", m[key], 0.0, 1.0, closed_hi=False)
    if not cfg["run"]["devices"]:
        raise ValueError("config key run.devices: list at least one device, e.g. [cpu]")


def _apply_detector_name(cfg: Dict[str, Any]) -> None:
    """``model.name`` (a registered detector name) -> model.arch, model.backbone and, on a
    real data set (which must be the name's), model.norm. On the generated shapes set the
    config's norm stays: its runs train from scratch with one image per step, where the
    name's SyncBatchNorm or frozen statistics do not apply (dense/norms.py)."""
    m, data = cfg["model"], cfg["data"]
    name = m.get("name")
    if name is None:
        return
    if not isinstance(name, str):
        raise ValueError(f"config key model.name: expected a detector name, got {name!r}")
    try:
        spec = parse_dense_name(name)
    except ValueError as err:
        raise ValueError(f"config key model.name: {err}") from None
    if spec["arch"] == "deeplab":
        raise ValueError(f"config key model.name: {name!r} is a segmentation model; task "
                         f"detection takes a detector name, e.g. cascade_rcnn_fpn_syncbn_"
                         f"resnest50_coco")
    if data["dataset"] not in ("shapes", spec["dataset"]):
        raise ValueError(f"config key model.name: {name!r} is a {spec['dataset']} model but "
                         f"data.dataset is {data['dataset']!r}")
    m["arch"], m["backbone"] = spec["arch"], spec["backbone"]
    if data["dataset"] != "shapes":
        m["norm"] = spec["norm"]


def _check_dense(cfg: Dict[str, Any]) -> None:
    m, t = cfg["model"], cfg["train"]
    if cfg["task"] == "detection":
        _apply_detector_name(cfg)
    m["backbone"] = _variant("model.backbone", m["backbone"])
    if (t["iterations"] is None) == (t["epochs"] is None):
        raise ValueError(f"set exactly one of train.iterations and train.epochs (a positive "
                         f"integer; the other null), got iterations={t['iterations']!r}, "
                         f"epochs={t['epochs']!r}")
    _at_least("train.lr", t["lr"], 0, strict=True)
    _at_least("train.wd", t["wd"], 0)
    _in_range("train.momentum", t["momentum"], 0.0, 1.0, closed_hi=False)
    _at_least("train.warmup_iters", t["warmup_iters"], 0)
    if not 0 < t["warmup_factor"] <= 1:
        raise ValueError(f"config key train.warmup_factor: must be in (0, 1], got "
                         f"{t['warmup_factor']}")
    if not 0 < t["lr_decay"] <= 1:
        raise ValueError(f"config key train.lr_decay: must be in (0, 1], got {t['lr_decay']}")
    for e in t["lr_decay_epochs"]:
        _at_least("train.lr_decay_epochs", e, 0)
    if t["clip_gradient"] is not None:
        _at_least("train.clip_gradient", t["clip_gradient"], 0, strict=True)
    _at_least("train.log_interval", t["log_interval"], 0)
    for key in ("rpn_smoothl1_rho", "rcnn_smoothl1_rho"):
        if key in t:
            _at_least(f"train.{key}", t[key], 0, strict=True)
    if "aux_weight" in m:
        _at_least("model.aux_weight", m["aux_weight"], 0)


# -- files ----------------------------------------------------------------------------------
def config_dirs() -> List[str]:
    """Where config names are looked up: ./configs, the checkout's configs/ (editable install),
    then the copy a wheel carries in the package (gluon_resnest/configs)."""
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [os.path.join(os.getcwd(), "configs"),
            os.path.normpath(os.path.join(here, "..", "..", "configs")),
            os.path.normpath(os.path.join(here, "..", "configs"))]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def find_config(name: str) -> str:
    """Path of a config given as a file path or a name such as ``demo`` or ``imagenet/resnest50``."""
    if os.path.isfile(os.path.expanduser(name)):
        return os.path.expanduser(name)
    stem = name[:-5] if name.endswith(".yaml") else name
    tried = []
    for d in config_dirs():
        path = os.path.join(d, stem + ".yaml")
        tried.append(path)
        if os.path.isfile(path):
            return path
    known = sorted({os.path.relpath(os.path.join(r, f), d)[:-5]
                    for d in config_dirs() for r, _, fs in os.walk(d) for f in fs
                    if f.endswith(".yaml") and not f.startswith("_")})
    close = difflib.get_close_matches(stem, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise FileNotFoundError(f"config {name!r} not found (looked for {', '.join(tried) or name})."
                            f"{hint}")


def load_config(name: Optional[str], overrides: Sequence[Tuple[str, Any]] = (),
                task: Optional[str] = None) -> Dict[str, Any]:
    """Load a config by path or name (None: the task's defaults), apply overrides, resolve it.

    ``task`` sets the config's task (an error if the file names another one).
    """
    raw: Dict[str, Any] = {}
    where = "config"
    if name is not None:
        where = find_config(name)
        raw = load_yaml(where)
    if task is not None:
        if raw.get("task", task) != task:
            raise ValueError(f"task {task!r} contradicts task: {raw['task']} in {where}")
        raw["task"] = task
    _task_of(raw, where)
    raw = apply_overrides(raw, overrides)
    run = raw.setdefault("run", {})
    if name is not None and isinstance(run, dict) and not run.get("name"):
        run["name"] = os.path.splitext(os.path.basename(where))[0]
    return resolve(raw, where)


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for lists ([0.5, 0.5, 0.5])."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v,
                                                                flow_style=True))


def format_config(cfg: Dict[str, Any], compact: bool = False, width: int = 100) -> str:
    """The resolved config as YAML (what the run uses, ``config.yaml``).

    ``compact``: for printing, only the keys whose value differs from the task's defaults, as
    ``key=value`` pairs (the override syntax) wrapped at ``width`` characters, after a line
    saying where the full config is (``run.out``/config.yaml)."""
    if not compact:
        return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         width=width).rstrip()
    task = cfg.get("task", "classification")
    base = flatten(defaults(task))
    pairs = [f"{k}={_flow(v)}" for k, v in flatten(cfg).items()
             if k not in ("run.out", "run.name") and (k not in base or base[k] != v)]
    out = (cfg.get("run") or {}).get("out")
    where = os.path.join(out, "config.yaml") if out else "the run folder's config.yaml"
    if not pairs:
        return f"the {task} defaults, unchanged (full config: {where})"
    lines = [f"{len(pairs)} key(s) set, the rest are the {task} defaults (full config: {where}):"]
    line = ""
    for pair in pairs:
        if line and len(line) + 1 + len(pair) > width:
            lines.append(line)
            line = ""
        line = f"{line} {pair}" if line else f"  {pair}"
    if line:
        lines.append(line)
    return "\n".join(lines)


def _flow(value: Any) -> str:
    """A value as one line of YAML flow style (what ``key=value`` reads back)."""
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, sort_keys=False,
                     width=10 ** 6)
    return text.strip().removesuffix("...").strip()
