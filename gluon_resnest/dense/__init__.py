"""ResNeSt backbones in GluonCV's detectors and segmenters.

- :mod:`.detection`: Faster/Mask R-CNN + FPN on a ResNeSt (GluonCV's FasterRCNN, MaskRCNN,
  FPNFeatureExpander), the pyramid tapping the stage outputs C2..C5 by name (:class:`StageTaps`).
- :mod:`.segmentation`: the dilated backbone for GluonCV's segmentation heads, DeepLabV3 builders.
- :mod:`.cascade`: Cascade R-CNN and Cascade Mask R-CNN + FPN on the same parts.
- :mod:`.registry`: the name table GluonCV's ``get_model`` learns (see ``integrations.gluoncv_dense``).
- :mod:`.synthetic`: a generated data set (shapes with boxes, masks and a segmentation map).

Training them is :mod:`gluon_resnest.train.dense` (in the train layer, with the config and
the safeguards every task shares).

The names below are loaded on first access (PEP 562), so importing the package, or its
cheap :mod:`.registry`, does not load the detection and segmentation modules.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule defining it.
_EXPORTS = {
    "StageTaps": "detection", "fpn_features": "detection", "faster_rcnn_fpn": "detection",
    "mask_rcnn_fpn": "detection", "custom_faster_rcnn_fpn": "detection",
    "custom_mask_rcnn_fpn": "detection", "cascade_rcnn_fpn": "cascade",
    "cascade_mask_rcnn_fpn": "cascade", "custom_cascade_rcnn_fpn": "cascade",
    "custom_cascade_mask_rcnn_fpn": "cascade", "deeplab": "segmentation",
    "dilated_backbone": "segmentation", "DENSE_MODELS": "registry",
    "dense_model_names": "registry", "get_dense_model": "registry",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(list(globals()) + __all__)
