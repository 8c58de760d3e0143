"""GluonCV's private detection/segmentation members this package relies on, each named once.

GluonCV internals used here, checked at import or, for instance attributes, at use (a
RuntimeError naming the GluonCV version if one is not as expected):

- ``gluoncv.model_zoo.segbase.get_backbone``: the module-level lookup ``SegBaseModel`` calls;
  :func:`patch_segmentation_backbone` replaces it by one that answers ResNeSt names with the
  given builder (``integrations.gluoncv_dense``: our dilated ResNeSt, loaded on first use) and
  passes other names on.
- ``FasterRCNN._batch_size`` (``per_device_batch_size``) and the sampler's ``_max_pos`` /
  ``_num_sample``: :func:`rcnn_batch_size`, :func:`rcnn_positive_fraction`,
  :func:`rcnn_max_positives`; ``_num_sample``, ``_rpn_test_post_nms``, ``_roi_size``,
  ``_strides``, ``_roi_mode``: :func:`rcnn_settings`; ``_pyramid_roi_feats`` called with them:
  :func:`rcnn_roi_features` (the cascade's stages); MXNet's ``HybridBlock._clear_cached_op``:
  :func:`clear_cached_graph`.
- ``SegBaseModel._up_kwargs`` (the crop a segmenter was built for): :func:`segmentation_crop`.
- ``SegmentationDataset._sync_transform`` / ``_val_sync_transform`` / ``_img_transform`` /
  ``_mask_transform`` (GluonCV's random scale/crop/flip/blur and its validation resize/crop of
  an image and its mask): :func:`segmentation_pair_transform`.
- ``gluoncv.model_zoo.rcnn.{faster,mask}_rcnn.data_parallel.ForwardBackwardTask``: the
  forward/backward step (losses) of GluonCV's R-CNN training scripts, an undocumented helper
  of their multi-device ``Parallel``: :func:`rcnn_training_step`, checked when first used.
- ``FasterRCNN._pyramid_roi_feats(F, features, rpn_rois, roi_size, strides, roi_mode, ...)``:
  the FPN RoI pooling that ``FasterRCNN``/``MaskRCNN.hybrid_forward`` call. On MXNet 1.9 it
  gives wrong RoI features: it pools each level with the other levels' RoIs marked by batch
  index -1, for which ``ROIAlign`` leaves its output uninitialised (garbage that changes from
  call to call), and sums the levels. :func:`fix_pyramid_roi_pooling` overrides it in this
  package's detector classes with one that pools every RoI and masks by level.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Callable, Dict, Sequence

from . import check_gluoncv_version, import_gluoncv

gluoncv = import_gluoncv()

__all__ = ["fail", "fix_pyramid_roi_pooling", "gluoncv_get_backbone",
           "patch_segmentation_backbone", "rcnn_batch_size", "rcnn_max_positives",
           "rcnn_positive_fraction", "rcnn_settings", "rcnn_roi_features", "clear_cached_graph",
           "rcnn_training_step", "segmentation_crop", "segmentation_pair_transform"]

_SUPPORTED = "gluoncv 0.10.x/0.11.x (tested with 0.10.5.post0)"
_STATE: Dict[str, Any] = {}


def fail(what: str) -> None:
    """Raise the RuntimeError for a GluonCV internal that is not as expected."""
    raise RuntimeError(f"gluon_resnest cannot wire its detection/segmentation models into "
                       f"GluonCV {gluoncv.__version__}: {what}. Supported: {_SUPPORTED}")


def _check_gluoncv() -> None:
    check_gluoncv_version(gluoncv, "detection/segmentation")
    try:
        from gluoncv.model_zoo import segbase
    except ImportError as err:
        fail(f"cannot import gluoncv.model_zoo.segbase ({err})")
    lookup = getattr(segbase, "get_backbone", None)
    if not callable(lookup) or list(inspect.signature(lookup).parameters)[:1] != ["name"]:
        fail("gluoncv.model_zoo.segbase.get_backbone(name, **kwargs) is missing")
    if not hasattr(segbase, "SegBaseModel"):
        fail("gluoncv.model_zoo.segbase.SegBaseModel is missing")
    from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
    pool = getattr(FasterRCNN, "_pyramid_roi_feats", None)
    if pool is None or list(inspect.signature(pool).parameters)[:7] != [
            "self", "F", "features", "rpn_rois", "roi_size", "strides", "roi_mode"]:
        fail("FasterRCNN._pyramid_roi_feats(self, F, features, rpn_rois, roi_size, strides, "
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


def _private(obj: Any, name: str, owner: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        fail(f"{owner}.{name} is missing")


def rcnn_batch_size(net: Any) -> int:
    """The per-device training batch a GluonCV R-CNN was built for (``per_device_batch_size``)."""
    return int(_private(net, "_batch_size", "FasterRCNN"))


def rcnn_positive_fraction(net: Any) -> float:
    """The share of positive RoIs the R-CNN's sampler draws (``pos_ratio``, as rounded)."""
    sampler = _private(net, "sampler", "FasterRCNN")
    return (_private(sampler, "_max_pos", "RCNNTargetSampler")
            / float(_private(sampler, "_num_sample", "RCNNTargetSampler")))


def rcnn_max_positives(net: Any) -> int:
    """The number of positive RoIs per image the R-CNN's sampler draws at most (``_max_pos``)."""
    return int(_private(_private(net, "sampler", "FasterRCNN"), "_max_pos", "RCNNTargetSampler"))


def rcnn_settings(net: Any) -> Dict[str, Any]:
    """A FasterRCNN's construction settings it keeps privately: ``batch_size``
    (per_device_batch_size), ``num_sample`` (RoIs per training image), ``rpn_test_post_nms``
    (RoIs per test image), ``roi_size``, ``strides``, ``roi_mode``."""
    owner = "FasterRCNN"
    return {"batch_size": int(_private(net, "_batch_size", owner)),
            "num_sample": int(_private(net, "_num_sample", owner)),
            "rpn_test_post_nms": int(_private(net, "_rpn_test_post_nms", owner)),
            "roi_size": tuple(_private(net, "_roi_size", owner)),
            "strides": _private(net, "_strides", owner),
            "roi_mode": _private(net, "_roi_mode", owner)}


def rcnn_roi_features(net: Any, F: Any, features: Sequence[Any], rois: Any,
                      roi_size: Any = None) -> Any:
    """(R, 5) RoIs [batch index, x1, y1, x2, y2] -> (R, C, h, w) FPN RoI features through the
    R-CNN's pyramid pooling (``_pyramid_roi_feats``; see :func:`fix_pyramid_roi_pooling`) with
    its own RoI size (or ``roi_size``), strides and mode."""
    pool = _private(net, "_pyramid_roi_feats", "FasterRCNN")
    return pool(F, features, rois, roi_size or _private(net, "_roi_size", "FasterRCNN"),
                _private(net, "_strides", "FasterRCNN"),
                roi_mode=_private(net, "_roi_mode", "FasterRCNN"))


def clear_cached_graph(block: Any) -> None:
    """Drop a hybridized block's traced graph (MXNet's ``_clear_cached_op``), as GluonCV's
    ``reset_class`` does: the next call traces the changed network."""
    _private(block, "_clear_cached_op", "HybridBlock")()


def segmentation_crop(net: Any) -> tuple:
    """(height, width) a GluonCV segmenter was built for (its ``crop_size``)."""
    up = _private(net, "_up_kwargs", "SegBaseModel")
    return up["height"], up["width"]


#: The constructor arguments of GluonCV's R-CNN training steps after the net and the trainer:
#: the four box losses, then the mix-up ratio (Faster) or the mask loss (Mask), then AMP.
_TASK_ARGS = {False: ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss",
                      "mix_ratio", "amp_enabled"),
              True: ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss",
                     "rcnn_mask_loss", "amp_enabled")}


def rcnn_training_step(net: Any, trainer: Any, losses: Sequence[Any],
                       mask_loss: Any = None) -> Callable[[Any], tuple]:
    """GluonCV's R-CNN forward/backward of one shard (its training scripts' losses), as a
    function of the batchified shard returning the loss values (RPN cls, RPN box, R-CNN cls,
    R-CNN box, [mask]) first. ``losses``: the four box losses; ``mask_loss`` for Mask R-CNN.
    Without mix-up (ratio 1) and AMP."""
    masks = mask_loss is not None
    kind = "mask_rcnn" if masks else "faster_rcnn"
    try:
        module = importlib.import_module(f"gluoncv.model_zoo.rcnn.{kind}.data_parallel")
    except ImportError as err:
        fail(f"cannot import gluoncv.model_zoo.rcnn.{kind}.data_parallel ({err})")
    task = getattr(module, "ForwardBackwardTask", None)
    if task is None or tuple(inspect.signature(task.__init__).parameters)[3:] != _TASK_ARGS[masks]:
        fail(f"gluoncv.model_zoo.rcnn.{kind}.data_parallel.ForwardBackwardTask(net, optimizer, "
             f"{', '.join(_TASK_ARGS[masks])}) is missing or has changed")
    if len(losses) != 4:
        raise ValueError(f"expected the four box losses, got {len(losses)}")
    return task(net, trainer, *losses, mask_loss if masks else 1.0, False).forward_backward


def segmentation_pair_transform(dataset: Any, img: Any, mask: Any) -> tuple:
    """(img, mask) PIL images through a GluonCV ``SegmentationDataset``'s transform for its
    ``mode``: ``train`` random flip/scale/crop/blur, ``val`` resize and centre crop, otherwise
    array conversion only."""
    owner = "SegmentationDataset"
    if dataset.mode == "train":
        return _private(dataset, "_sync_transform", owner)(img, mask)
    if dataset.mode == "val":
        return _private(dataset, "_val_sync_transform", owner)(img, mask)
    return (_private(dataset, "_img_transform", owner)(img),
            _private(dataset, "_mask_transform", owner)(mask))


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
