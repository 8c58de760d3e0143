"""Dilated ResNeSt backbones for GluonCV's segmentation heads, and DeepLabV3 builders.

GluonCV's ``SegBaseModel`` asks its backbone lookup for ``name`` with ``pretrained, dilated,
ctx, root, norm_layer, norm_kwargs`` and keeps ``conv1, bn1, relu, maxpool, layer1..layer4``.
:func:`dilated_backbone` answers that call for every ResNeSt variant
(``gluon_resnest.integrations.gluoncv_dense`` routes GluonCV's lookup to it), so
``get_segmentation_model(model='deeplab'|'fcn'|'psp'|'danet', backbone='resnest50')``
runs on this package's network.

The backbone is dilated as GluonCV's ResNeSt and the official one are: output stride 8, stage 3
with dilation 2 and stage 4 with dilation 4 (the first block of each keeps the previous
dilation). None of GluonCV's heads uses multi-grid, nor do its published ResNeSt DeepLab weights,
so there is none here either.

DeepLabV3 I/O (GluonCV's): x (N, 3, crop, crop) -> ``(out,)`` or ``(out, aux)`` with (N,
classes, crop, crop) logits; ``net.predict(x)`` takes other sizes. ``aux`` comes from an FCN
head on C4 (stride 8, 1024 channels).
"""
from __future__ import annotations

from typing import Any, Optional, Union

import mxnet as mx
from gluoncv.data import datasets as gluoncv_datasets
from gluoncv.model_zoo.deeplabv3 import DeepLabV3
from mxnet.gluon import nn

from .._compat.gluoncv_dense import patch_segmentation_backbone, segmentation_crop
from ..model.parameters import load_parameters
from ..model.resnest import ResNeSt
from ..model.variants import resolve_name
from ..weights.gluoncv import resolve_pretrained
from ..weights.pretrained import get_model as get_backbone_model

__all__ = ["SEG_DATASETS", "dilated_backbone", "ResNeStDeepLabV3", "deeplab", "dataset_info"]

#: Segmentation data sets: name -> (GluonCV's ``datasets`` key, file-name acronym).
SEG_DATASETS = {
    "ade20k": ("ade20k", "ade"), "ade": ("ade20k", "ade"),
    "citys": ("citys", "citys"), "cityscapes": ("citys", "citys"),
    "pascal_voc": ("pascal_voc", "voc"), "voc": ("pascal_voc", "voc"),
    "pascal_aug": ("pascal_aug", "voc"), "coco": ("coco", "coco"),
}


def dataset_info(dataset: str):
    """(GluonCV key, acronym, number of classes, class names) of a segmentation data set."""
    if dataset not in SEG_DATASETS:
        raise ValueError(f"unknown segmentation data set {dataset!r}: expected one of "
                         f"{sorted(SEG_DATASETS)}, or dataset=None with nclass=N")
    key, acronym = SEG_DATASETS[dataset]
    cls = gluoncv_datasets[key]
    return key, acronym, cls.NUM_CLASS, list(cls.CLASSES)


def dilated_backbone(name: str, pretrained: Union[bool, str] = False, dilated: bool = True,
                     ctx: Any = None, root: Optional[str] = None, norm_layer: Any = nn.BatchNorm,
                     norm_kwargs: Optional[dict] = None, dropblock_prob: float = 0.0,
                     **kwargs: Any) -> ResNeSt:
    """A ResNeSt for GluonCV's segmentation heads: output stride 8 when ``dilated``.

    ``pretrained`` loads ImageNet weights from a local file (GluonCV's names under ``root``);
    nothing is downloaded. DropBlock is off by default, as GluonCV's segmentation recipe sets it
    (a head traces its graph once, so a DropBlock decision would be frozen into it).
    """
    return get_backbone_model(resolve_name(name), pretrained=pretrained, ctx=ctx, root=root,
                              dilated=dilated, norm_layer=norm_layer,
                              norm_kwargs=norm_kwargs, dropblock_prob=dropblock_prob, **kwargs)


class ResNeStDeepLabV3(DeepLabV3):
    """GluonCV's DeepLabV3 with input checks (its ASPP pooling is sized for the crop)."""

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):
            shape = tuple(x.shape)
            if len(shape) != 4 or shape[1] != 3:
                raise ValueError(f"DeepLabV3 expects a (N, 3, H, W) batch, got shape {shape}")
            if min(shape[2:]) < 8:
                raise ValueError(f"input {shape[2]}x{shape[3]} is smaller than the output "
                                 f"stride 8 of the dilated backbone")
            want = segmentation_crop(self)
            if shape[2:] != want:
                raise ValueError(f"this DeepLabV3 was built for {want[0]}x{want[1]} inputs "
                                 f"(crop_size), got {shape[2]}x{shape[3]}; build it with "
                                 f"crop_size={shape[2]} or use net.predict(x) for any size")
        return super().forward(x, *args)


def deeplab(backbone: str = "resnest50", dataset: Optional[str] = "ade20k",
            nclass: Optional[int] = None, pretrained: Union[bool, str] = False,
            pretrained_base: Union[bool, str] = True, root: Optional[str] = None,
            ctx: Any = None, aux: bool = True, crop_size: int = 480, base_size: int = 520,
            **kwargs: Any) -> ResNeStDeepLabV3:
    """DeepLabV3 (GluonCV's class, ASPP rates 12/24/36) on a dilated ResNeSt.

    dataset : a key of :data:`SEG_DATASETS` (its class count), or None with ``nclass``.
    pretrained : whole-model weights, GluonCV's convention and file name
    ``deeplab_{backbone}_{acronym}-*.params`` under ``root`` (GluonCV's published files load).
    pretrained_base : ImageNet backbone weights. Both are local files, never downloaded.
    crop_size : training/inference input size, a multiple of 8. kwargs : ``norm_layer``,
    ``norm_kwargs`` (e.g. SyncBatchNorm, as the paper trains), ``height``, ``width``.
    """
    backbone = resolve_name(backbone)
    if not isinstance(crop_size, int) or crop_size < 8 or crop_size % 8:
        raise ValueError(f"crop_size must be a multiple of 8 (the output stride), got "
                         f"{crop_size!r}")
    acronym = None
    if dataset is not None:
        _, acronym, num, classes = dataset_info(dataset)
        if nclass is not None and nclass != num:
            raise ValueError(f"{dataset} has {num} classes, got nclass={nclass}; pass "
                             f"dataset=None to train on other classes")
        nclass = num
    else:
        classes = None
        if not isinstance(nclass, int) or isinstance(nclass, bool) or nclass < 2:
            raise ValueError(f"dataset=None needs nclass, an int >= 2 (background counts), got "
                             f"{nclass!r}")
    if pretrained:
        pretrained_base = False
        if acronym is None:
            raise ValueError("pretrained= needs a named dataset (the weights' file name)")
    ctx = ctx if ctx is not None else mx.cpu()
    root_kw = {"root": root} if root is not None else {}
    patch_segmentation_backbone(dilated_backbone)   # SegBaseModel looks its backbone up by name
    net = ResNeStDeepLabV3(nclass, backbone=backbone, aux=aux, ctx=ctx,
                           pretrained_base=pretrained_base, crop_size=crop_size,
                           base_size=base_size, **root_kw, **kwargs)
    net.classes = classes
    net.model_name = f"deeplab_{backbone}_{acronym}" if acronym else f"deeplab_{backbone}"
    if pretrained:
        load_parameters(net, resolve_pretrained(net.model_name, pretrained, root), ctx=ctx)
    return net
