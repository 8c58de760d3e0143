"""Training configs: YAML files, ``base:`` inheritance, ``key=value`` overrides, validation.

A config is a nested dict with the sections of :data:`DEFAULTS`. Files may name a ``base:``
file (relative to themselves) whose values they override. Every key is checked against
:data:`DEFAULTS`; an unknown key is a ``ValueError`` that suggests the closest known keys.
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

__all__ = ["DEFAULTS", "CHOICES", "load_config", "load_yaml", "resolve", "apply_overrides",
           "parse_override", "find_config", "config_dirs", "format_config", "flatten"]

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
        "train_size": 224,            # training resolution
        "test_size": 224,             # test resolution (crop size)
        "crop_pct": 0.875,            # test: resize the short side to test_size / crop_pct
        "interpolation": "bilinear",  # bilinear | bicubic | area | nearest
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
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

#: Allowed values of enumerated keys.
CHOICES: Dict[str, Tuple[str, ...]] = {
    "task": ("classification", "detection", "segmentation"),
    "model.init": ("xavier", "msra"),
    "data.interpolation": ("bilinear", "bicubic", "area", "nearest"),
    "data.on_corrupt": ("error", "skip"),
    "optim.optimizer": ("nag", "sgd", "adam"),
    "optim.schedule": ("cosine", "constant"),
    "run.kvstore": ("device", "local", "dist_sync", "dist_device_sync", "dist_async",
                    "horovod"),
}

#: Keys whose value is free-form (not checked against a default's type).
_FREE = {"model.kwargs", "model.pretrained", "model.classes", "model.dropblock_prob",
         "model.final_drop", "data.train", "data.val", "data.limit", "run.out", "run.stop_after", "run.name"}


def flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (``model.kwargs`` stays one value)."""
    out: Dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "model.kwargs":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _known_keys() -> List[str]:
    return list(flatten(DEFAULTS))


def _suggest(key: str) -> str:
    known = _known_keys()
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    leaves = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in known],
                                       n=2, cutoff=0.75)
    close += [k for k in known if k.split(".")[-1] in leaves and k not in close]
    return f"; did you mean {', '.join(close)}?" if close else ""


def _unknown(key: str, where: str) -> ValueError:
    return ValueError(f"unknown config key {key!r} in {where}{_suggest(key)} "
                      f"(sections: {', '.join(k for k in DEFAULTS if k != 'task')})")


def load_yaml(path: str) -> Dict[str, Any]:
    """One YAML file as a dict, its ``base:`` chain merged in (the file's values win)."""
    return _load_yaml(path, ())


def _load_yaml(path: str, seen: Tuple[str, ...]) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    if path in seen:
        raise ValueError(f"config {path!r} inherits from itself (base chain: {' -> '.join(seen)})")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
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


def parse_override(text: str) -> Tuple[str, Any]:
    """'optim.lr=0.2' -> ('optim.lr', 0.2); the value is parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. optim.epochs=10)")
    key, value = text.split("=", 1)
    return key.strip(), _parse_value(value)


def _parse_value(value: str) -> Any:
    try:
        return yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return value


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[Tuple[str, Any]],
                    check: bool = True) -> Dict[str, Any]:
    """Set dotted keys in a copy of ``cfg``. ``check``: only keys of :data:`DEFAULTS`."""
    cfg = copy.deepcopy(cfg)
    known = set(_known_keys())
    for key, value in overrides:
        if isinstance(value, str):
            value = _parse_value(value)
        if check and key not in known and not key.startswith("model.kwargs."):
            raise _unknown(key, "the command line")
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return cfg


def _check_type(key: str, value: Any, default: Any) -> Any:
    if key in _FREE or value is None and default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {key}: expected true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key}: expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            if float(value).is_integer():
                value = int(value)
            else:
                raise ValueError(f"config key {key}: expected an integer, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"config key {key}: expected a string, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"config key {key}: {value!r} is not one of "
                             f"{', '.join(CHOICES[key])}")
    elif isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key}: expected a list, got {value!r}")
        value = list(value)
    return value


def resolve(raw: Dict[str, Any], where: str = "config") -> Dict[str, Any]:
    """Validate a classification config and fill in every default; returns a new dict."""
    flat_raw = flatten(raw)
    known = flatten(DEFAULTS)
    for key in flat_raw:
        if key not in known:
            raise _unknown(key, where)
    flat = dict(known)
    for key, value in flat_raw.items():
        flat[key] = _check_type(key, value, known[key])
    if not isinstance(flat["model.kwargs"], dict):
        raise ValueError(f"config key model.kwargs: expected a mapping, got "
                         f"{flat['model.kwargs']!r}")
    cfg: Dict[str, Any] = {}
    for key, value in flat.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = copy.deepcopy(value)
    _check_values(cfg)
    return cfg


def _check_values(cfg: Dict[str, Any]) -> None:
    o, d, a = cfg["optim"], cfg["data"], cfg["aug"]
    for key, val, lo in (("optim.batch_size", o["batch_size"], 1), ("optim.epochs", o["epochs"], 1),
                         ("data.train_size", d["train_size"], 1),
                         ("data.test_size", d["test_size"], 1)):
        if val < lo:
            raise ValueError(f"config key {key}: must be >= {lo}, got {val}")
    if o["lr"] <= 0:
        raise ValueError(f"config key optim.lr: must be > 0, got {o['lr']}")
    if not 0 <= o["warmup_epochs"] < o["epochs"] + 1:
        raise ValueError(f"config key optim.warmup_epochs: must be in [0, epochs], got "
                         f"{o['warmup_epochs']}")
    if not 0.0 <= o["label_smoothing"] < 1.0:
        raise ValueError(f"config key optim.label_smoothing: must be in [0, 1), got "
                         f"{o['label_smoothing']}")
    if o["mixup"] < 0:
        raise ValueError(f"config key optim.mixup: must be >= 0, got {o['mixup']}")
    if not 0.0 < d["crop_pct"] <= 1.0:
        raise ValueError(f"config key data.crop_pct: must be in (0, 1], got {d['crop_pct']}")
    if not 0.0 <= d["val_fraction"] < 1.0:
        raise ValueError(f"config key data.val_fraction: must be in [0, 1), got "
                         f"{d['val_fraction']}")
    for key in ("data.mean", "data.std"):
        vals = d[key.split(".")[1]]
        if len(vals) != 3:
            raise ValueError(f"config key {key}: expected 3 numbers (RGB), got {vals!r}")
    for key in ("aug.crop_area", "aug.crop_ratio"):
        lo_hi = a[key.split(".")[1]]
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            raise ValueError(f"config key {key}: expected [low, high] with 0 < low <= high, "
                             f"got {lo_hi!r}")
    limit = d["limit"]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"config key data.limit: expected a positive integer or null, got "
                         f"{limit!r}")
    classes = cfg["model"]["classes"]
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)
                                or classes < 1):
        raise ValueError(f"config key model.classes: expected a positive integer or null, got "
                         f"{classes!r}")
    if not cfg["run"]["devices"]:
        raise ValueError("config key run.devices: list at least one device, e.g. [cpu]")


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
    if os.path.isfile(name):
        return name
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
    """Load a config by path or name, apply overrides, and resolve it.

    Classification configs are validated and completed with :data:`DEFAULTS`; detection and
    segmentation configs are returned as written (their trainer validates them).
    """
    raw: Dict[str, Any] = {}
    where = "config"
    if name is not None:
        path = find_config(name)
        raw = load_yaml(path)
        where = path
    if task is not None:
        raw["task"] = task
    kind = raw.get("task", "classification")
    if kind not in CHOICES["task"]:
        raise ValueError(f"config key task: {kind!r} is not one of {', '.join(CHOICES['task'])}")
    if kind != "classification":
        return apply_overrides(raw, overrides, check=False)
    for key, _ in overrides:
        if key not in flatten(DEFAULTS) and not key.startswith("model.kwargs."):
            raise _unknown(key, "the command line")
    run = raw.setdefault("run", {})
    if name is not None and isinstance(run, dict) and not run.get("name"):
        run["name"] = os.path.splitext(os.path.basename(where))[0]
    return resolve(apply_overrides(raw, overrides, check=False), where)


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for lists ([0.5, 0.5, 0.5])."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v,
                                                                flow_style=True))


def format_config(cfg: Dict[str, Any]) -> str:
    """The resolved config as YAML (what the run uses)."""
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=100).rstrip()
