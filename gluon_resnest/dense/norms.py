"""GroupNorm with BatchNorm's constructor arguments, for training on one small batch.

With one or two images per step, BatchNorm's batch statistics degenerate, worst in the
Split-Attention MLP, whose BatchNorm sees one value per channel (a (N, C, 1, 1) map): in
training it outputs its bias whatever the input, at inference it uses running statistics, so
the trained network and the evaluated one differ. GluonCV and the paper avoid this with
SyncBatchNorm over many devices (or frozen statistics of an ImageNet model); on one CPU,
training from scratch, GroupNorm (Wu and He, 2018) normalises per image instead.
"""
from __future__ import annotations

import math
from typing import Any

from mxnet.gluon import nn

__all__ = ["GroupNorm"]


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` accepting ``in_channels`` (groups: gcd(32, in_channels)).

    (N, C, H, W) -> same. MXNet 1.x keeps one scale and shift per group.
    """

    def __init__(self, in_channels: int = 0, num_groups: int = 32, **kwargs: Any) -> None:
        for key in ("use_global_stats", "momentum", "num_devices"):
            kwargs.pop(key, None)
        groups = math.gcd(num_groups, in_channels) if in_channels else num_groups
        super().__init__(num_groups=groups, **kwargs)
