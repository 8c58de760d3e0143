"""Initialising detectors and segmenters whose backbone has no pretrained weights."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import mxnet as mx
from mxnet.gluon import Block

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
                       ctx: Any = None) -> None:
    """Initialise every parameter not loaded yet.

    ``backbone`` blocks get :data:`BACKBONE_INIT`; the others their own initializer, else
    :class:`ByName` (GluonCV's training scripts use Uniform), which also covers the FPN's symbolic
    BatchNorm. Loaded parameters are kept.
    """
    ctx = ctx if ctx is not None else mx.cpu()
    for block in backbone or ():
        for p in block.collect_params().values():
            if p._data is None:
                p.initialize(ctx=ctx, default_init=BACKBONE_INIT)
    for p in net.collect_params().values():
        if p._data is None:
            p.initialize(ctx=ctx, default_init=ByName())
