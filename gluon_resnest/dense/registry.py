"""The name table of the detection and segmentation models, and a name parser.

:data:`DENSE_MODELS` holds the names GluonCV's training scripts compose and that
``gluon_resnest.integrations.gluoncv_dense.register_dense`` adds to GluonCV's ``get_model``:

- ``faster_rcnn_fpn_syncbn_resnest{50,101,200,269}_coco`` (SyncBatchNorm everywhere)
- ``faster_rcnn_fpn_resnest{50,101}_{coco,voc}`` (frozen BatchNorm)
- ``mask_rcnn_fpn_syncbn_resnest{50,101}_coco``, ``mask_rcnn_fpn_resnest{50,101}_coco``, and
  ``mask_rcnn_fpn_bn_resnest{50,101}_coco``: GluonCV's ``train_mask_rcnn.py --norm-layer bn``
  spells SyncBatchNorm ``bn``
- ``cascade_rcnn_fpn[_syncbn]_resnest{50,101,200}_coco`` and
  ``cascade_mask_rcnn_fpn[_syncbn]_resnest{50,101,200}_coco``: Cascade (Mask) R-CNN
  (:mod:`.cascade`; GluonCV has none), named by GluonCV's conventions
- ``deeplab_resnest{50,101,200,269}_ade``, ``deeplab_resnest{50,101}_citys``

:func:`get_dense_model` builds these and any other valid combination of a ResNeSt variant,
data set and norm (e.g. ``faster_rcnn_fpn_syncbn_resnest50_fast_voc``) with clear errors.
The custom constructors (your own ``classes``) are :data:`CUSTOM_MODELS`.

Building this table imports nothing of the detection/segmentation code: every constructor
imports its builder on its first call, so ``import gluon_resnest`` stays cheap.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Dict, List, Tuple

from ..model.variants import resolve_name
from .norms import NAME_TOKENS

__all__ = ["DENSE_MODELS", "CUSTOM_MODELS", "GLUONCV_CUSTOM", "dense_model_names", "get_dense_model",
           "parse_dense_name"]

_DET_DATASETS = ("coco", "voc")
_TOKENS = "|".join(t for t in NAME_TOKENS if t)
_DET_KINDS = ("faster", "mask", "cascade", "cascade_mask")
_DET_NAME = re.compile(rf"^({'|'.join(_DET_KINDS)})_rcnn_fpn(?:_({_TOKENS}))?_(resnest[a-z0-9_]*?)"
                       rf"_([a-z0-9]+)$")
#: The module defining each builder (loaded on its first call).
_MODULES = {"faster_rcnn_fpn": "detection", "mask_rcnn_fpn": "detection",
            "cascade_rcnn_fpn": "cascade", "cascade_mask_rcnn_fpn": "cascade",
            "custom_faster_rcnn_fpn": "detection", "custom_mask_rcnn_fpn": "detection",
            "custom_cascade_rcnn_fpn": "cascade", "custom_cascade_mask_rcnn_fpn": "cascade",
            "deeplab": "segmentation"}
_SEG_NAME = re.compile(r"^deeplab_(resnest[a-z0-9_]*?)_([a-z0-9]+)$")
_SEG_SUFFIXES = {"ade": "ade20k", "citys": "citys", "voc": "pascal_voc", "coco": "coco"}


def _builder(arch: str) -> Callable[..., Any]:
    """The builder function of ``arch``, importing its module on first use (see module doc)."""
    return getattr(importlib.import_module(f"{__package__}.{_MODULES[arch]}"), arch)


def _constructor(name: str, arch: str, **fixed: Any) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise TypeError(f"{name}() fixes {', '.join(clash)}; got {clash[0]}="
                            f"{kwargs[clash[0]]!r}")
        return _builder(arch)(**fixed, **kwargs)
    make.__name__ = make.__qualname__ = name
    module = _MODULES[arch]
    make.__doc__ = (f"{name}: see gluon_resnest.dense.{module}.{arch} "
                    f"({', '.join(f'{k}={v!r}' for k, v in fixed.items())}).")
    make._gluon_resnest = True
    return make


def parse_dense_name(name: str) -> Dict[str, Any]:
    """The builder and its fixed arguments for a composed model name, or a clear ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = name.lower()
    m = _DET_NAME.match(key)
    if m:
        kind, norm, variant, dataset = m.groups()
        resolve_name(variant)
        if kind != "mask" and norm == "bn":
            raise ValueError(f"{name!r}: GluonCV's {kind.replace('_', ' ')} R-CNN names spell "
                             f"SyncBatchNorm 'syncbn' ({kind}_rcnn_fpn_syncbn_{variant}_"
                             f"{dataset}); only its Mask R-CNN script writes 'bn'")
        if dataset not in _DET_DATASETS:
            raise ValueError(f"unknown dataset suffix {dataset!r} in {name!r}: detection models "
                             f"exist for {', '.join(_DET_DATASETS)}; for your own data use "
                             f"custom_{kind}_rcnn_fpn(classes=[...], "
                             f"base_network_name={variant!r})")
        return {"arch": f"{kind}_rcnn_fpn", "backbone": variant, "dataset": dataset,
                "norm": NAME_TOKENS[norm or ""]}
    m = _SEG_NAME.match(key)
    if m:
        variant, suffix = m.groups()
        resolve_name(variant)
        if suffix not in _SEG_SUFFIXES:
            raise ValueError(f"unknown dataset suffix {suffix!r} in {name!r}: DeepLabV3 models "
                             f"exist for {', '.join(_SEG_SUFFIXES)}; for your own data use "
                             f"gluon_resnest.dense.deeplab({variant!r}, dataset=None, nclass=N)")
        return {"arch": "deeplab", "backbone": variant, "dataset": _SEG_SUFFIXES[suffix]}
    raise ValueError(f"{name!r} is not a detection/segmentation model name: expected "
                     f"'{{faster,mask,cascade,cascade_mask}}_rcnn_fpn[_syncbn]_<resnest variant>_"
                     f"{{coco,voc}}', "
                     f"'mask_rcnn_fpn_bn_<resnest variant>_coco' or "
                     f"'deeplab_<resnest variant>_{{{','.join(_SEG_SUFFIXES)}}}'")


def _table() -> Dict[str, Callable[..., Any]]:
    names: List[str] = []
    names += [f"faster_rcnn_fpn_syncbn_resnest{d}_coco" for d in (50, 101, 200, 269)]
    names += [f"faster_rcnn_fpn_resnest{d}_{s}" for d in (50, 101) for s in ("coco", "voc")]
    names += [f"mask_rcnn_fpn_syncbn_resnest{d}_coco" for d in (50, 101)]
    names += [f"mask_rcnn_fpn_resnest{d}_coco" for d in (50, 101)]
    names += [f"mask_rcnn_fpn_bn_resnest{d}_coco" for d in (50, 101)]
    names += [f"{k}_rcnn_fpn{n}_resnest{d}_coco" for k in ("cascade", "cascade_mask")
              for n in ("_syncbn", "") for d in (50, 101, 200)]
    names += [f"deeplab_resnest{d}_ade" for d in (50, 101, 200, 269)]
    names += [f"deeplab_resnest{d}_citys" for d in (50, 101)]
    table = {}
    for name in names:
        spec = parse_dense_name(name)
        table[name] = _constructor(name, spec.pop("arch"), **spec)
    return table


#: Registered detection and segmentation names -> constructors (GluonCV kwargs).
DENSE_MODELS: Dict[str, Callable[..., Any]] = _table()


def _custom(name: str) -> Callable[..., Any]:
    module = _MODULES[name]

    def make(*args: Any, **kwargs: Any) -> Any:
        return _builder(name)(*args, **kwargs)
    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"{name}: see gluon_resnest.dense.{module}.{name} (GluonCV's signature)."
    make._gluon_resnest = True
    return make


#: Custom-class constructors, GluonCV's names and signatures, ResNeSt backbones (the cascades
#: also GluonCV's ResNetV1b backbones, e.g. resnet50_v1b, as a control).
CUSTOM_MODELS: Dict[str, Callable[..., Any]] = {
    name: _custom(name) for name in ("custom_faster_rcnn_fpn", "custom_mask_rcnn_fpn",
                                     "custom_cascade_rcnn_fpn", "custom_cascade_mask_rcnn_fpn")}
#: The custom constructors GluonCV itself has (ours wrap them; the cascades it lacks are added).
GLUONCV_CUSTOM: Tuple[str, ...] = ("custom_faster_rcnn_fpn", "custom_mask_rcnn_fpn")


def dense_model_names() -> List[str]:
    """Every registered detection and segmentation name."""
    return list(DENSE_MODELS)


def get_dense_model(name: str, **kwargs: Any) -> Any:
    """Build a detection or segmentation model by composed name (GluonCV's kwargs)."""
    spec = parse_dense_name(name)
    return _constructor(name.lower(), spec.pop("arch"), **spec)(**kwargs)
