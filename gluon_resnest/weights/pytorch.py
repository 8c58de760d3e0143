"""PyTorch ResNeSt checkpoints (the official repo's and timm's) -> our parameters.

Both PyTorch codebases name their modules the way ours are named (deep stem ``conv1.0..6``,
``bn1``, ``layerX.Y.conv2.{conv,fc1,fc2}``, ``downsample.1/2``, ``fc``), so the state_dict
maps onto :class:`~gluon_resnest.resnest.ResNeSt`'s structural keys by three rules:

* a BatchNorm's ``weight``/``bias`` become ``gamma``/``beta`` (a module is a BatchNorm when
  the checkpoint holds its ``running_mean``); ``running_mean``/``running_var`` keep their names;
* the Split-Attention conv's norm ``conv2.bn0.`` becomes ``conv2.bn.``;
* ``num_batches_tracked`` is dropped, a DataParallel ``module.`` prefix is stripped.

Convolution and ``fc`` weights have the same (out, in, kh, kw) / (out, in) layout in both
frameworks and are copied as they are (cast to float32).

The weights do not record where avd sits (before or after the 3x3 conv: resnest50 and
resnest50_fast_2s1x64d have identical shapes), so the architecture comes from its name:
ours, the official repo's (the same names) or timm's (:data:`TIMM_NAMES`).

Loading is safe: ``torch.load(..., weights_only=True)`` (no pickled code runs) and
``.safetensors`` files through safetensors. torch and safetensors are the optional ``torch``
extra; without them the error names the extra to install.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import mxnet as mx
import numpy as np

from .._compat.extras import EXTRAS, MissingExtraError, import_extra
from .._compat.mxnet_blocks import structural_params
from .._files import atomic_write
from ..model.parameters import check_keys, load_arrays
from ..model.resnest import ResNeSt, build
from ..model.variants import ALIASES, VARIANTS, resolve_name

__all__ = ["TIMM_NAMES", "MissingExtraError", "resolve_arch", "describe_arch", "read_state_dict",
           "map_state_dict", "convert_state_dict", "net_from_state_dict", "load_torch_checkpoint",
           "convert_checkpoint"]

#: timm's ResNeSt models -> our variant with the same architecture (stem, avg-down shortcut,
#: avd placement, radix, cardinality, width): timm's ``d`` / ``e`` suffixes are the deep stem
#: of width 32 / 64, ``4s2x40d`` is radix 4, cardinality 2, width 40 with avd before the 3x3.
TIMM_NAMES: Dict[str, str] = {
    "resnest14d": "resnest14",
    "resnest26d": "resnest26",
    "resnest50d": "resnest50",
    "resnest101e": "resnest101",
    "resnest200e": "resnest200",
    "resnest269e": "resnest269",
    "resnest50d_4s2x40d": "resnest50_fast_4s2x40d",
    "resnest50d_1s4x24d": "resnest50_fast_1s4x24d",
}

EXTRA_HINT = EXTRAS["torch"]


def resolve_arch(arch: str) -> str:
    """Our variant name for ``arch``: ours, an official-repo name, an alias or a timm name.

    Raises ValueError listing the closest known names.
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a str, got {type(arch).__name__}")
    key = arch.lower()
    if key in TIMM_NAMES:
        return TIMM_NAMES[key]
    if key in VARIANTS or key in ALIASES:
        return resolve_name(key)
    known = list(VARIANTS) + list(ALIASES) + list(TIMM_NAMES)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown ResNeSt architecture {arch!r}.{hint} Known: ours/official "
                     f"({', '.join(list(VARIANTS) + list(ALIASES))}) and timm "
                     f"({', '.join(TIMM_NAMES)})")


def describe_arch(name: str) -> str:
    """One line with the architecture options of variant ``name``."""
    spec = VARIANTS[resolve_arch(name)]
    return (f"layers {spec.layers}, radix {spec.radix}, cardinality {spec.cardinality}, "
            f"width {spec.bottleneck_width}, deep stem {spec.stem_width}, avg-down shortcut, "
            f"avd {'before' if spec.avd_first else 'after'} the 3x3 conv")


# -- reading ---------------------------------------------------------------------------------
def _import_torch():
    return import_extra("torch", "torch", "reading PyTorch checkpoints")


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch"            # zip container (torch >= 1.6) or a legacy pickle
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"      # 8-byte header length, then the JSON header
    return "unknown"


def _read_torch(path: str) -> Dict[str, Any]:
    torch = _import_torch()
    import pickle
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path!r} holds Python objects besides tensors, which safe loading "
                         f"(torch.load(weights_only=True)) refuses to run: "
                         f"{str(err).splitlines()[0]}. Re-save only the state_dict "
                         f"(torch.save(model.state_dict(), ...)) or use .safetensors") from None
    except (RuntimeError, EOFError, OSError) as err:
        size = os.path.getsize(path)
        raise ValueError(f"cannot read {path!r} ({size} bytes): truncated or not a PyTorch "
                         f"checkpoint ({str(err).splitlines()[0]})") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):  # training checkpoints nest the weights
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} is not a state_dict (a name -> tensor mapping, possibly under "
                         f"'state_dict' or 'model'); got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        v = v.detach().cpu()
        out[k] = (v.to(torch.float32) if v.is_floating_point() else v).numpy()
    return out


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    safetensors = import_extra("safetensors", "torch", "reading .safetensors files")
    SafetensorError, safe_open = safetensors.SafetensorError, safetensors.safe_open
    out = {}
    try:
        with safe_open(path, framework="numpy") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read safetensors file {path!r}: {err}") from None
    except TypeError:  # bfloat16 has no numpy dtype: read through torch
        torch = _import_torch()
        with safe_open(path, framework="pt") as f:
            out = {k: f.get_tensor(k).to(torch.float32).numpy() for k in f.keys()}
    return out


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """Read a PyTorch state_dict (``.pth``/``.pt``/``.bin`` or ``.safetensors``) safely.

    Returns name -> numpy array (floating tensors as float32). The format is recognised
    from the file's first bytes. Raises FileNotFoundError, ValueError (unreadable, unsafe or
    not a state_dict) or :class:`MissingExtraError` (torch/safetensors not installed).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    kind = _sniff(path)
    if kind == "unknown" and path.endswith(".safetensors"):
        kind = "safetensors"
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "torch":
        return _read_torch(path)
    raise ValueError(f"{path!r} ({os.path.getsize(path)} bytes) is neither a PyTorch checkpoint "
                     f"(zip or pickle) nor a safetensors file")


# -- mapping ---------------------------------------------------------------------------------
def map_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Rename a PyTorch ResNeSt state_dict to our structural keys (see the module doc)."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state_dict]
    values = list(state_dict.values())
    bn_modules = {k[:-len(".running_mean")] for k in keys if k.endswith(".running_mean")}
    out: Dict[str, np.ndarray] = {}
    for key, value in zip(keys, values):
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        if module in bn_modules:
            leaf = {"weight": "gamma", "bias": "beta"}.get(leaf, leaf)
        if module.endswith("conv2.bn0"):
            module = module[:-len("bn0")] + "bn"
        out[f"{module}.{leaf}" if module else leaf] = np.asarray(value, dtype=np.float32)
    return out


def _guess(mapped: Mapping[str, np.ndarray]) -> str:
    """A hint naming the architecture a mapped state_dict looks like (empty if unknown)."""
    try:
        stem = mapped["conv1.0.weight"].shape[0]
        layers = tuple(1 + max(int(k.split(".")[1]) for k in mapped if k.startswith(f"layer{i}."))
                       for i in range(1, 5))
        width = mapped["layer1.0.conv1.weight"].shape[0]          # C = group width of layer1
        radix = mapped["layer1.0.conv2.conv.weight"].shape[0] // width
        card = width // mapped["layer1.0.conv2.fc1.weight"].shape[1]
    except (KeyError, ValueError, IndexError, ZeroDivisionError):
        return ""
    found = dict(layers=layers, radix=radix, cardinality=card, bottleneck_width=width // card,
                 stem_width=stem)
    names = [n for n, s in VARIANTS.items()
             if all(getattr(s, f) == v for f, v in found.items())]
    desc = ", ".join(f"{k} {v}" for k, v in found.items())
    if not names:
        return f" The checkpoint looks like {desc}, which is none of our variants."
    note = (" (the weights do not record whether avd sits before or after the 3x3 conv: "
            "pick by the checkpoint's name)" if len(names) > 1 else "")
    return f" The checkpoint looks like {desc}: try --arch {' or '.join(names)}{note}."


def _check(mapped: Mapping[str, np.ndarray], net: ResNeSt, name: str, source: str) -> None:
    check_keys({k: tuple(p.shape) for k, p in structural_params(net).items()},
               {k: tuple(v.shape) for k, v in mapped.items()}, source,
               f"{name} ({describe_arch(name)})", labels=("checkpoint", name),
               hint=_guess(mapped))


def convert_state_dict(state_dict: Mapping[str, Any], arch: str, classes: Optional[int] = None,
                       source: str = "checkpoint") -> Tuple[str, Dict[str, np.ndarray]]:
    """Map ``state_dict`` to variant ``arch`` and check every key and shape.

    Returns (our variant name, {structural key: float32 array}). ``classes`` defaults to the
    checkpoint's ``fc`` size. Raises ParameterMismatchError (a ValueError) listing the first
    shape mismatches and the missing/unexpected keys.
    """
    name = resolve_arch(arch)
    mapped = map_state_dict(state_dict)
    if classes is None:
        fc = mapped.get("fc.weight")
        classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    net = build(name, classes=classes)
    _check(mapped, net, name, source)
    return name, mapped


_ARCH_FIELDS = ("layers", "radix", "cardinality", "bottleneck_width", "stem_width", "avd_first")


def net_from_state_dict(state_dict: Mapping[str, Any], arch: str, ctx=None,
                        classes: Optional[int] = None, source: str = "checkpoint",
                        **build_kwargs: Any) -> ResNeSt:
    """Build variant ``arch`` and fill it with a PyTorch ResNeSt ``state_dict``.

    ``build_kwargs`` go to :func:`~gluon_resnest.resnest.build` (e.g. ``output_stride``);
    the architecture itself comes from ``arch``. Returns an initialised, non-hybridized net.
    """
    bad = [k for k in build_kwargs if k in _ARCH_FIELDS or k == "classes"]
    if bad:
        raise TypeError(f"{', '.join(bad)} cannot be overridden: the architecture comes from "
                        f"arch={arch!r} and must match the checkpoint")
    name, mapped = convert_state_dict(state_dict, arch, classes, source)
    net = build(name, classes=int(mapped["fc.weight"].shape[0]), **build_kwargs)
    load_arrays(net, {k: mx.nd.array(v) for k, v in mapped.items()}, source,
                ctx=ctx or mx.cpu())
    return net


def load_torch_checkpoint(path: str, arch: str, ctx=None, classes: Optional[int] = None,
                          **build_kwargs: Any) -> ResNeSt:
    """:func:`read_state_dict` + :func:`net_from_state_dict`: a ready network."""
    return net_from_state_dict(read_state_dict(path), arch, ctx, classes, source=repr(path),
                               **build_kwargs)


def convert_checkpoint(src: str, dst: str, arch: str, classes: Optional[int] = None) -> str:
    """Convert the PyTorch checkpoint ``src`` to an MXNet ``.params`` file ``dst``.

    ``dst`` has our structural keys: ``get_model(variant, pretrained=dst)`` or
    ``net.load_parameters(dst)`` loads it. Returns our variant name.
    """
    name, mapped = convert_state_dict(read_state_dict(src), arch, classes, source=repr(src))
    out_dir = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"output folder {out_dir!r} does not exist")
    atomic_write(dst, lambda tmp: mx.nd.save(tmp, {k: mx.nd.array(v) for k, v in mapped.items()}))
    return name
