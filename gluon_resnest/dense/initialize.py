"""Initialising detectors and segmenters whose backbone has no pretrained weights."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import mxnet as mx
from mxnet.gluon import Block

from .._compat.mxnet_blocks import is_initialized
from ..model.blocks import Bottleneck

__all__ = ["BACKBONE_INIT", "ByName", "initialize_missing"]

#: The official ImageNet initialisation of ResNeSt (scripts/gluon/train.py).
BACKBONE_INIT = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


class ByName(mx.init.Uniform):
    """Uniform(0.07) weights, but norm statistics and scales by their names.

    MXNet hands a global initializer every parameter that has none of its own, named or not, so
    a symbolic BatchNorm's ``moving_var`` (GluonCV's FPN) would get random, even negative,
    values; here ``*gamma``/``*_var`` start at 1 and ``*beta``/``*_mean``/``*bias`` at 0.
    """

    def _init_weight(self, name, arr):
        if name.endswith(("gamma", "_var")):
            arr[:] = 1.0
        elif name.endswith(("beta", "_mean", "bias")):
            arr[:] = 0.0
        else:
            super()._init_weight(name, arr)


def initialize_missing(net: Block, backbone: Optional[Iterable[Block]] = None,
                       ctx: Any = None, last_gamma: bool = False) -> None:
    """Initialise every parameter not loaded yet.

    ``backbone`` blocks get :data:`BACKBONE_INIT`; the others their own initializer, else
    :class:`ByName` (GluonCV's training scripts use Uniform), which also covers the FPN's symbolic
    BatchNorm. Loaded parameters are kept. ``last_gamma``: a fresh bottleneck's last norm
    (``bn3``) starts with gamma 0, so every residual block starts as the identity (Goyal et al.
    2017; the official ResNeSt ImageNet recipe's ``--last-gamma``, and this package's
    classification recipe). From scratch it is what lets DeepLabV3 and Mask R-CNN on the
    generated shapes set get past the all-background prediction; loaded weights are never touched.
    """
    ctx = ctx if ctx is not None else mx.cpu()
    for block in backbone or ():
        fresh = {id(p) for p in block.collect_params().values() if not is_initialized(p)}
        for p in block.collect_params().values():
            if not is_initialized(p):
                p.initialize(ctx=ctx, default_init=BACKBONE_INIT)
        if last_gamma:
            for unit in _bottlenecks(block):
                if id(unit.bn3.gamma) in fresh:
                    unit.bn3.gamma.set_data(mx.nd.zeros_like(unit.bn3.gamma.data()))
    for p in net.collect_params().values():
        if not is_initialized(p):
            p.initialize(ctx=ctx, default_init=ByName())


def _bottlenecks(block: Block) -> list:
    found: list = []
    block.apply(lambda b: found.append(b) if isinstance(b, Bottleneck) else None)
    return found
