"""The one norm table of the detectors and segmenters, and GroupNorm for one-image batches.

:data:`NORMS` says, for each norm option (``syncbn``, ``frozen``, ``bn``, ``gn``), which layer
normalises the backbone, the FPN, the box head and the mask head; every builder and training
step reads it (:func:`backbone_kwargs`, :func:`get_norm`), and :data:`NAME_TOKENS` /
:func:`norm_from_layers` translate GluonCV's spellings (model names, ``norm_layer`` arguments).

GroupNorm: with one or two images per step, BatchNorm's batch statistics degenerate, worst in
the Split-Attention MLP, whose BatchNorm sees one value per channel (a (N, C, 1, 1) map): in
training it outputs its bias whatever the input, at inference it uses running statistics, so
the trained network and the evaluated one differ. GluonCV and the paper avoid this with
SyncBatchNorm over many devices (or frozen statistics of an ImageNet model); on one CPU,
training from scratch, GroupNorm (Wu and He, 2018) normalises per image instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.contrib.nn import SyncBatchNorm

__all__ = ["GroupNorm", "Norm", "NORMS", "NAME_TOKENS", "get_norm", "backbone_kwargs",
           "norm_from_layers"]


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` accepting ``in_channels`` (groups: gcd(32, in_channels)).

    (N, C, H, W) -> same. MXNet 1.x keeps one scale and shift per group.
    """

    def __init__(self, in_channels: int = 0, num_groups: int = 32, **kwargs: Any) -> None:
        if kwargs.pop("use_global_stats", False):
            raise ValueError("GroupNorm has no running statistics to freeze "
                             "(use_global_stats=True): use norm='frozen' for a frozen BatchNorm")
        for key in ("momentum", "num_devices"):   # BatchNorm's: nothing to do per image
            kwargs.pop(key, None)
        groups = math.gcd(num_groups, in_channels) if in_channels else num_groups
        super().__init__(num_groups=groups, **kwargs)


@dataclass(frozen=True)
class Norm:
    """How one norm option normalises each part of a detector or segmenter.

    ``layer``: the Gluon norm of the backbone (and of GluonCV's segmentation heads);
    ``frozen``: its statistics and affine stay fixed (``use_global_stats``, not trained);
    ``fpn``: the FPN's symbolic norm (None: none, the FPN convs have a bias);
    ``box_head``: the R-CNN box head's norm after each conv (None: no convs, two FC layers);
    ``mask_head``: the Mask R-CNN head's norm (None: GluonCV's default, none);
    ``per_device``: takes a device count (SyncBatchNorm's ``num_devices`` / ``ndev``).
    """

    layer: Callable[..., Any]
    frozen: bool
    fpn: Optional[Callable[..., Any]]
    box_head: Optional[Callable[..., Any]]
    mask_head: Optional[Callable[..., Any]]
    per_device: bool
    summary: str

    def layer_kwargs(self, num_devices: int = 0) -> Dict[str, Any]:
        """Keyword arguments of ``layer`` / ``box_head`` / ``mask_head`` (not ``frozen``)."""
        return {"num_devices": num_devices} if self.per_device and num_devices >= 1 else {}

    def fpn_kwargs(self, num_devices: int = 0) -> Dict[str, Any]:
        """Keyword arguments of ``fpn``."""
        return {"ndev": num_devices} if self.per_device and num_devices >= 1 else {}


#: Every norm option. ``syncbn``: GluonCV's ``*_fpn_syncbn_*`` models and the paper's setting;
#: ``frozen``: GluonCV's plain ``*_fpn_*`` models (ImageNet statistics kept, stem and stage 1
#: fixed); ``bn``: ordinary BatchNorm on one device; ``gn``: GroupNorm, for training from
#: scratch with one image per step (see the module doc).
NORMS: Dict[str, Norm] = {
    "syncbn": Norm(SyncBatchNorm, False, mx.sym.contrib.SyncBatchNorm, SyncBatchNorm,
                   SyncBatchNorm, True, "SyncBatchNorm in backbone, FPN and heads"),
    "frozen": Norm(nn.BatchNorm, True, None, None, None, False,
                   "BatchNorm with frozen statistics in the backbone, none elsewhere"),
    "bn": Norm(nn.BatchNorm, False, mx.sym.BatchNorm, nn.BatchNorm, None, False,
               "BatchNorm in backbone, FPN and box head"),
    "gn": Norm(GroupNorm, False, None, GroupNorm, None, False,
               "GroupNorm in backbone and box head, none in the FPN"),
}

#: The norm token of GluonCV's composed model names -> the norm option:
#: train_faster_rcnn.py writes ``syncbn``, train_mask_rcnn.py ``bn`` (both SyncBatchNorm);
#: no token is the frozen BatchNorm.
NAME_TOKENS: Dict[str, str] = {"syncbn": "syncbn", "bn": "syncbn", "": "frozen"}


def get_norm(name: str) -> Norm:
    """The :data:`NORMS` row of ``name``, or a ValueError listing the options."""
    if name not in NORMS:
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {name!r}")
    return NORMS[name]


def backbone_kwargs(name: str, num_devices: int = 0) -> Dict[str, Any]:
    """``norm_layer``/``norm_kwargs`` for a backbone (ResNeSt) or a GluonCV segmenter."""
    norm = get_norm(name)
    kwargs = norm.layer_kwargs(num_devices)
    if norm.frozen:
        kwargs["use_global_stats"] = True
    return {"norm_layer": norm.layer, "norm_kwargs": kwargs}


def norm_from_layers(norm_layer: Any, sym_norm_layer: Any = None) -> str:
    """The norm option meant by GluonCV's ``custom_*_rcnn_fpn(norm_layer=, sym_norm_layer=)``:
    SyncBatchNorm -> ``syncbn``; BatchNorm (or None) -> ``frozen``, or ``bn`` with a symbolic
    BatchNorm for the FPN."""
    if sym_norm_layer is not None and sym_norm_layer not in (mx.sym.contrib.SyncBatchNorm,
                                                            mx.sym.BatchNorm):
        raise ValueError(f"sym_norm_layer must be mx.sym.contrib.SyncBatchNorm, mx.sym.BatchNorm"
                         f" or None, got {sym_norm_layer!r}")
    if norm_layer is SyncBatchNorm:
        return "syncbn"
    if norm_layer is nn.BatchNorm or norm_layer is None:
        return "frozen" if sym_norm_layer is None else "bn"
    raise ValueError(f"norm_layer must be mx.gluon.nn.BatchNorm (frozen, GluonCV's default) "
                     f"or mx.gluon.contrib.nn.SyncBatchNorm, got {norm_layer!r}")
