"""Building blocks of ResNeSt: DropBlock, the Split-Attention bottleneck and the stem.

Attribute names (``conv1``, ``bn1``, ``conv2``, ``conv3``, ``bn3``, ``downsample``) and the
Sequential layouts of the stem and the shortcut are part of the weight format: they give the
structural parameter keys of GluonCV's and the official ResNeSt files
(``layer1.0.conv2.fc1.weight``, ``layer1.0.downsample.1.weight``, ...).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

from mxnet import autograd
from mxnet.gluon import nn
from mxnet.gluon.nn import HybridBlock

from .._compat import gluoncv_dropblock_class
from .splat import SplitAttention

# GluonCV's set_drop_prob() only recognises its own class: subclass it.
_GluonCVDropBlock = gluoncv_dropblock_class()

__all__ = ["DropBlock", "Bottleneck", "make_stem", "make_shortcut", "graph_generation",
           "portable_graph"]

_GENERATION = [0]
_PORTABLE = [False]


@contextlib.contextmanager
def portable_graph():
    """Trace with standard operators only (for export): AvgPool3x3 becomes a Pooling node."""
    saved, _PORTABLE[0] = _PORTABLE[0], True
    try:
        yield
    finally:
        _PORTABLE[0] = saved


def graph_generation() -> int:
    """Counter bumped whenever a setting baked into traced graphs (a drop probability) changes."""
    return _GENERATION[0]


class DropBlock(_GluonCVDropBlock):
    """DropBlock (Ghiasi et al. 2018) for (N, C, H, W) maps of any size.

    In training, seeds are drawn with rate
    ``gamma = p * H * W / (b^2 * (H - b + 1) * (W - b + 1))`` computed from the runtime
    shape, each seed zeroes a b x b block, and the kept activations are rescaled by
    ``numel / kept``. ``shared_mask`` (default): one (1, C, H, W) mask for the whole batch,
    as the official Gluon code and GluonCV draw it; at batch 16 that is 1.35 GB less training
    memory for ResNeSt-50 than one mask per sample (``shared_mask=False``, (N, C, H, W)).
    Outside training it is the identity and adds no node to the graph;
    ResNeSt keeps one traced graph per mode, so the mode is decided at call time.
    Setting ``drop_prob`` (directly or with GluonCV's ``set_drop_prob``) takes effect at the
    next call, also on a hybridized ResNeSt.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 3,
                 channels: Optional[int] = None, shared_mask: bool = True) -> None:
        HybridBlock.__init__(self)  # GluonCV's __init__ wants a static (c, h, w): skip it
        if not isinstance(block_size, int) or block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"block_size must be a positive odd int, got {block_size!r}")
        self.block_size = block_size
        self.channels = channels
        self.shared_mask = bool(shared_mask)
        self.dtype = "float32"
        self._drop_prob = 0.0
        self.drop_prob = drop_prob

    @property
    def drop_prob(self) -> float:
        return self._drop_prob

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {value}")
        if value != getattr(self, "_drop_prob", None):
            self._drop_prob = value
            _GENERATION[0] += 1

    def hybrid_forward(self, F, x):
        if self._drop_prob <= 0 or not autograd.is_training():
            return x
        b = self.block_size
        # the mask's shape; BlockGrad first, so no gradient is traced through the mask. `slice`
        # has a oneDNN kernel: it copies one sample, where slice_axis and shape_array on x
        # first convert all of x from oneDNN's layout (0.26 GB less at bs16 for ResNeSt-50)
        like = F.BlockGrad(F.slice(x, begin=(0, None, None, None), end=(1, None, None, None))
                           if self.shared_mask else x)
        hw = F.cast(F.slice_axis(F.shape_array(like), axis=0, begin=2, end=4), self.dtype)
        valid = F.maximum(hw - (b - 1), 1.0)                   # seed-able positions per axis
        gamma = F.prod(hw) / F.prod(valid) * (self._drop_prob / (b * b))
        seeds = F.broadcast_lesser(F.random.uniform_like(like), gamma.reshape((1, 1, 1, 1)))
        # A position is dropped when a seed lies in its b x b window: count seeds with a
        # box-filter convolution (oneDNN's stride-1 max pooling is ~10x slower).
        keep = box_sum(F, seeds, b, self.channels, dtype=self.dtype) == 0
        kept_frac = F.mean(keep)
        mask = F.BlockGrad(F.broadcast_div(keep, F.maximum(kept_frac, 1e-6).reshape((1, 1, 1, 1))))
        # Fed straight from a oneDNN op, the product kept far more memory for its backward pass
        # than x itself; reshape, a oneDNN op, first writes x in the plain layout products use.
        x = x.reshape((0, 0, 0, 0))
        if self.shared_mask:
            # expanded to (N, C, H, W) for an elementwise product, as broadcast_mul's backward is
            # MXNet's slow generic reduction; the outer product ones(N) x mask runs as a GEMM,
            # several times faster than broadcast_like
            ones = F.ones_like(F.slice_axis(x.reshape((0, -1)), axis=1, begin=0, end=1))
            mask = F.BlockGrad(F.dot(ones, mask.reshape((1, -1))).reshape_like(x))
        return x * mask

    def cast(self, dtype):
        HybridBlock.cast(self, dtype)
        self.dtype = dtype

    def __repr__(self) -> str:
        return (f"DropBlock(drop_prob={self._drop_prob}, block_size={self.block_size}, "
                f"shared_mask={self.shared_mask})")


def box_sum(F, x, size: int, channels: Optional[int] = None, strides: int = 1,
            scale: float = 1.0, dtype: str = "float32"):
    """``scale`` x the sum over each size x size window (zero padding size // 2), per channel.

    A depthwise convolution with constant weights when ``channels`` is known, else a
    1-channel convolution over (N*C, 1, H, W). (N, C, H, W) -> (N, C, H', W').
    """
    kw = dict(kernel=(size, size), stride=(strides, strides), pad=(size // 2, size // 2),
              no_bias=True)
    if channels:
        w = F.full((channels, 1, size, size), scale, dtype=dtype)
        return F.Convolution(x, F.BlockGrad(w), num_filter=channels, num_group=channels, **kw)
    if strides != 1:
        raise ValueError("box_sum without channels supports strides=1 only")
    w = F.full((1, 1, size, size), scale, dtype=dtype)
    y = F.Convolution(x.reshape((-3, -2)).expand_dims(1), F.BlockGrad(w), num_filter=1, **kw)
    return y.reshape_like(x)


class AvgPool3x3(HybridBlock):
    """``AvgPool2D(3, strides, padding=1)`` (padding counted) as a depthwise convolution.

    Same numbers as the pooling layer; oneDNN runs it 2-3x faster. No parameters. Traced
    under :func:`portable_graph` (export) it is the standard pooling operator.
    """

    def __init__(self, channels: int, strides: int) -> None:
        super().__init__()
        self.channels, self.strides = channels, strides
        self.dtype = "float32"

    def cast(self, dtype):
        super().cast(dtype)
        self.dtype = dtype

    def hybrid_forward(self, F, x):
        return self.pool(F, x, self.channels)

    def pool(self, F, x, channels: int):
        """The pool of an x with ``channels`` channels."""
        if _PORTABLE[0]:
            return F.Pooling(x, kernel=(3, 3), stride=(self.strides, self.strides), pad=(1, 1),
                             pool_type="avg", count_include_pad=True)
        return box_sum(F, x, 3, channels, self.strides, scale=1.0 / 9, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"AvgPool3x3(channels={self.channels}, strides={self.strides})"


class Identity(HybridBlock):
    """Placeholder keeping a Sequential index; returns its input."""

    def hybrid_forward(self, F, x):
        return x


def make_stem(stem_width: int, norm_layer: Callable, norm_kwargs: dict) -> nn.HybridSequential:
    """Deep stem: three 3x3 convs (3 -> s, stride 2; s -> s; s -> 2s). (N,3,H,W) -> (N,2s,H/2,W/2).

    Sequential indices 0..6 are conv, norm, relu, conv, norm, relu, conv; the last norm is
    the network's ``bn1``.
    """
    stem = nn.HybridSequential(prefix="conv1_")
    with stem.name_scope():
        stem.add(nn.Conv2D(stem_width, 3, 2, 1, use_bias=False, in_channels=3),
                 norm_layer(in_channels=stem_width, **norm_kwargs),
                 nn.Activation("relu"),
                 nn.Conv2D(stem_width, 3, 1, 1, use_bias=False, in_channels=stem_width),
                 norm_layer(in_channels=stem_width, **norm_kwargs),
                 nn.Activation("relu"),
                 nn.Conv2D(stem_width * 2, 3, 1, 1, use_bias=False, in_channels=stem_width))
    return stem


def make_shortcut(in_channels: int, channels: int, strides: int,
                  norm_layer: Callable, norm_kwargs: dict, prefix: str) -> nn.HybridSequential:
    """ResNet-D shortcut: [AvgPool(strides), 1x1 conv, norm] (indices 0, 1, 2).

    Where the stride is 1 the pool is a no-op, and an :class:`Identity` holds index 0 so the
    conv and norm keep indices 1 and 2 as in the published weight files.
    """
    down = nn.HybridSequential(prefix=prefix)
    with down.name_scope():
        down.add(nn.AvgPool2D(strides, strides, ceil_mode=True, count_include_pad=False)
                 if strides > 1 else Identity(),
                 nn.Conv2D(channels, 1, 1, use_bias=False, in_channels=in_channels),
                 norm_layer(in_channels=channels, **norm_kwargs))
    return down


class Bottleneck(HybridBlock):
    """ResNeSt bottleneck: 1x1 -> Split-Attention 3x3 -> 1x1, with a residual.

    (N, C_in, H, W) -> (N, 4*planes, H/strides, W/strides).

    ``group_width = int(planes * bottleneck_width / 64) * cardinality``.
    avd (average downsampling) moves the stride out of the 3x3 conv into a 3x3 average pool,
    placed before the Split-Attention conv when ``avd_first`` (the paper's "-fast" variants)
    or after it. ``dilation`` is this block's 3x3 dilation; ``previous_dilation`` the
    stage's, as in GluonCV: avd is active when ``strides > 1 or dilation != previous_dilation``.
    """

    expansion = 4

    def __init__(self, planes: int, in_channels: int, strides: int = 1, dilation: int = 1,
                 previous_dilation: int = 1, downsample: Optional[HybridBlock] = None,
                 radix: int = 2, cardinality: int = 1, bottleneck_width: int = 64,
                 avd: bool = True, avd_first: bool = False, dropblock_prob: float = 0.0,
                 norm_layer: Callable = nn.BatchNorm, norm_kwargs: Optional[dict] = None,
                 last_gamma: bool = False, split_drop_ratio: float = 0.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        norm_kwargs = dict(norm_kwargs or {})
        group_width = int(planes * (bottleneck_width / 64.0)) * cardinality
        out_channels = planes * self.expansion
        self.avd = avd and (strides > 1 or previous_dilation != dilation)
        self.avd_first = avd_first
        with self.name_scope():
            self.conv1 = nn.Conv2D(group_width, 1, use_bias=False, in_channels=in_channels)
            self.bn1 = norm_layer(in_channels=group_width, **norm_kwargs)
            self.conv2 = SplitAttention(group_width, 3, 1 if self.avd else strides, dilation,
                                        dilation, radix=radix, cardinality=cardinality,
                                        in_channels=group_width, norm_layer=norm_layer,
                                        norm_kwargs=norm_kwargs, drop_ratio=split_drop_ratio)
            self.avd_layer = AvgPool3x3(group_width, strides) if self.avd else None
            self.conv3 = nn.Conv2D(out_channels, 1, use_bias=False, in_channels=group_width)
            gamma_init = {"gamma_initializer": "zeros"} if last_gamma else {}
            self.bn3 = norm_layer(in_channels=out_channels, **gamma_init, **norm_kwargs)
            self.downsample = downsample
            if dropblock_prob > 0:
                self.dropblock1 = DropBlock(dropblock_prob, channels=group_width)
                self.dropblock2 = DropBlock(dropblock_prob, channels=group_width)
                self.dropblock3 = DropBlock(dropblock_prob, channels=out_channels)
            else:
                self.dropblock1 = self.dropblock2 = self.dropblock3 = None

    def _drop(self, block, x):
        return x if block is None else block(x)

    def hybrid_forward(self, F, x):
        out = F.Activation(self._drop(self.dropblock1, self.bn1(self.conv1(x))), act_type="relu")
        if self.avd and self.avd_first:
            out = self.avd_layer(out)
        if (self.avd and not self.avd_first and self.avd_layer.strides > 1
                and not autograd.is_training()):
            # avd's pool after eq. (3) equals pooling each split before it (see attend), which
            # runs eq. (3) on a quarter of the positions. Only at inference: in training,
            # DropBlock sits between the two, and pooled batched products made the step slower.
            width = self.conv2.channels * self.conv2.radix
            with self.conv2.name_scope():   # the node names a call of conv2 gives
                out = self.conv2.attend(F, out, pool=lambda u: self.avd_layer.pool(F, u, width))
        else:
            out = self._drop(self.dropblock2, self.conv2(out))
            if self.avd and not self.avd_first:
                out = self.avd_layer(out)
        out = self._drop(self.dropblock3, self.bn3(self.conv3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return F.Activation(out + residual, act_type="relu")
