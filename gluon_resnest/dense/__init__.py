"""ResNeSt backbones in GluonCV's detectors and segmenters.

- :mod:`.detection`: Faster/Mask R-CNN + FPN on a ResNeSt (GluonCV's FasterRCNN, MaskRCNN,
  FPNFeatureExpander), the pyramid tapping the stage outputs C2..C5 by name (:class:`StageTaps`).
- :mod:`.segmentation`: the dilated backbone for GluonCV's segmentation heads, DeepLabV3 builders.
- :mod:`.registry`: the name table GluonCV's ``get_model`` learns (see ``integrations.gluoncv_dense``).
- :mod:`.synthetic`: a generated data set (shapes with boxes, masks and a segmentation map).
- :mod:`.train`: ``run(cfg, out_dir)`` trains and evaluates a detector or segmenter.
"""
from .detection import (
           StageTaps,
           custom_faster_rcnn_fpn,
           custom_mask_rcnn_fpn,
           faster_rcnn_fpn,
           fpn_features,
           mask_rcnn_fpn,
)
from .registry import DENSE_MODELS, dense_model_names, get_dense_model
from .segmentation import deeplab, dilated_backbone

__all__ = ["StageTaps", "fpn_features", "faster_rcnn_fpn", "mask_rcnn_fpn",
           "custom_faster_rcnn_fpn", "custom_mask_rcnn_fpn", "deeplab", "dilated_backbone",
           "DENSE_MODELS", "dense_model_names", "get_dense_model"]
