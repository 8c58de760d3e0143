"""GluonCV's private detection/segmentation members this package relies on, each named once.

GluonCV internals used here, all checked at import (a RuntimeError naming the GluonCV version
if one is not as expected):

- ``gluoncv.model_zoo.model_zoo._models``: the name table (passed in as ``gcv_models``); our
  names are added, and ``custom_faster_rcnn_fpn`` / ``custom_mask_rcnn_fpn`` are wrapped so a
  ResNeSt ``base_network_name`` builds on our backbone (others go to GluonCV's own).
- ``gluoncv.model_zoo.segbase.get_backbone``: the module-level lookup ``SegBaseModel`` calls;
  it is replaced by one that answers ResNeSt names with
  :func:`gluon_resnest.dense.segmentation.dilated_backbone` and passes other names on.
- ``gluoncv.nn.dropblock.DropBlock``/``set_drop_prob``: our DropBlock must be a subclass, so
  GluonCV's detection and segmentation code can switch it off.
- ``FasterRCNN._pyramid_roi_feats(F, features, rpn_rois, roi_size, strides, roi_mode, ...)``:
  the FPN RoI pooling that ``FasterRCNN``/``MaskRCNN.hybrid_forward`` call. On MXNet 1.9 it
  gives wrong RoI features: it pools each level with the other levels' RoIs marked by batch
  index -1, for which ``ROIAlign`` leaves its output uninitialised (garbage that changes from
  call to call), and sums the levels. :func:`fix_pyramid_roi_pooling` overrides it in this
  package's detector classes with one that pools every RoI and masks by level.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict

from . import import_gluoncv

gluoncv = import_gluoncv()

__all__ = ["fix_pyramid_roi_pooling", "gluoncv_get_backbone", "patch_segmentation_backbone"]

_SUPPORTED = "gluoncv 0.10.x/0.11.x (tested with 0.10.5.post0)"
_STATE: Dict[str, Any] = {}


def _fail(what: str) -> None:
    raise RuntimeError(f"gluon_resnest cannot wire its detection/segmentation models into "
                       f"GluonCV {gluoncv.__version__}: {what}. Supported: {_SUPPORTED}")


def _check_gluoncv() -> None:
    try:
        from gluoncv.model_zoo import segbase
        from gluoncv.nn import dropblock
    except ImportError as err:
        _fail(f"cannot import gluoncv.model_zoo.segbase / gluoncv.nn.dropblock ({err})")
    lookup = getattr(segbase, "get_backbone", None)
    if not callable(lookup) or list(inspect.signature(lookup).parameters)[:1] != ["name"]:
        _fail("gluoncv.model_zoo.segbase.get_backbone(name, **kwargs) is missing")
    if not hasattr(segbase, "SegBaseModel"):
        _fail("gluoncv.model_zoo.segbase.SegBaseModel is missing")
    if not callable(getattr(dropblock, "set_drop_prob", None)):
        _fail("gluoncv.nn.dropblock.set_drop_prob is missing")
    from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
    pool = getattr(FasterRCNN, "_pyramid_roi_feats", None)
    if pool is None or list(inspect.signature(pool).parameters)[:7] != [
            "self", "F", "features", "rpn_rois", "roi_size", "strides", "roi_mode"]:
        _fail("FasterRCNN._pyramid_roi_feats(self, F, features, rpn_rois, roi_size, strides, "
              "roi_mode, ...) is missing or has changed")


_check_gluoncv()


def _pyramid_roi_feats(self, F, features, rpn_rois, roi_size, strides, roi_mode="align",
                       roi_canonical_scale=224.0, sampling_ratio=2, eps=1e-6):
    """RoI features (R, C, h, w) from the level each RoI belongs to (FPN paper, eq. 1:
    k = floor(4 + log2(sqrt(wh) / 224)), clipped to P2..P5; P6 feeds the RPN only)."""
    top = self._max_stage - 1 if self._max_stage > 5 else self._max_stage
    _, x1, y1, x2, y2 = F.split(rpn_rois, axis=-1, num_outputs=5)
    size = F.sqrt((x2 - x1 + 1) * (y2 - y1 + 1))
    level = F.clip(F.floor(4 + F.log2(size / roi_canonical_scale + eps)), self._min_stage, top)
    pooled = []
    for i, lvl in enumerate(range(self._min_stage, top + 1)):
        if roi_mode == "align":
            feat = F.contrib.ROIAlign(features[i], rpn_rois, roi_size, 1.0 / strides[i],
                                      sample_ratio=sampling_ratio)
        elif roi_mode == "pool":
            feat = F.ROIPooling(features[i], rpn_rois, roi_size, 1.0 / strides[i])
        else:
            raise ValueError(f"roi_mode must be 'align' or 'pool', got {roi_mode!r}")
        pooled.append(F.broadcast_mul(feat, (level == lvl).reshape((-1, 1, 1, 1))))
    return F.ElementWiseSum(*pooled)


def fix_pyramid_roi_pooling(*classes: type) -> None:
    """Give these FasterRCNN subclasses the deterministic FPN RoI pooling (see module doc)."""
    for cls in classes:
        cls._pyramid_roi_feats = _pyramid_roi_feats


def gluoncv_get_backbone() -> Callable[..., Any]:
    """GluonCV's own segmentation backbone lookup (before any patch)."""
    from gluoncv.model_zoo import segbase
    return _STATE.get("get_backbone", segbase.get_backbone)


def patch_segmentation_backbone(dilated_backbone: Callable[..., Any]) -> None:
    """Route GluonCV's segmentation backbone lookup for ``resnest*`` names to
    ``dilated_backbone(name, **kwargs)`` (idempotent)."""
    from gluoncv.model_zoo import segbase

    if getattr(segbase.get_backbone, "_gluon_resnest", False):
        return
    original = _STATE.setdefault("get_backbone", segbase.get_backbone)

    @functools.wraps(original)
    def get_backbone(name: str, **kwargs: Any):
        if isinstance(name, str) and name.lower().startswith("resnest"):
            return dilated_backbone(name, **kwargs)   # unknown resnest names: our suggestions
        return original(name, **kwargs)

    get_backbone._gluon_resnest = True
    segbase.get_backbone = get_backbone
