"""Split-Attention convolution (ResNeSt, Zhang et al. 2020, Sec. 3).

Symbols follow the paper. A cardinal group k (K groups) holds R splits
U_{R(k-1)+i}, i = 1..R, each with C/K channels. With ``Û^k = sum_i U_{R(k-1)+i}``:

    (1) s^k_c  = 1/(H W) sum_{i,j} Û^k_c(i, j)                      global average pool
    (2) a^k_i(c) = softmax_i G^c_i(s^k)   (R > 1),  sigmoid(G^c_i(s^k))  (R = 1)
    (3) V^k_c  = sum_i a^k_i(c) U_{R(k-1)+i, c}                      attention-weighted sum

G is two grouped 1x1 convolutions (``fc1`` -> BN -> ReLU -> ``fc2``, groups = K).

Layout (shared with GluonCV and the official code, so their weights load):
``conv`` outputs R*C channels *radix-major*: split i is channels [i*C, (i+1)*C), and
inside it group k holds channels [k*C/K, (k+1)*C/K). ``fc2`` outputs R*C channels
*cardinal-major* (k, i, c'), so its output is transposed to radix-major before (3).

Speed: the radix sum and the weighted sum use ``split`` + ``add_n`` and a
channel-scale helper instead of 5-D ``reshape``/``sum``/``broadcast_mul``; MXNet's
generic 5-D reductions cost more than all convolutions of the network on a CPU
(:func:`weighted_sum` has the details per mode).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from mxnet import autograd
from mxnet.gluon import nn
from mxnet.gluon.nn import BatchNorm, HybridBlock

__all__ = ["SplitAttention", "inter_channels"]


def inter_channels(channels: int, radix: int, reduction_factor: int = 4,
                   min_channels: int = 32) -> int:
    """Width of the attention bottleneck: ``max(C * R // reduction_factor, min_channels)``."""
    return max(channels * radix // reduction_factor, min_channels)


def _pair(value: Any, name: str) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return tuple(value)
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def channel_scale(F, x, scale):
    """``x * scale`` for x (N, C, H, W) and scale (N, C, 1, 1).

    Traced for training, it is a batch of N*C products (1 x 1) @ (1 x HW): the gradients
    are batched matrix products instead of MXNet's generic reduction in ``broadcast_mul``'s
    backward (~4x slower), and the backward pass keeps only x and the scale (a rank-1
    expansion of the scale to (N, C, H, W) kept 0.23 GB more in a bs16 ResNeSt-50 step).
    Inference uses broadcast_mul.
    """
    if not autograd.is_training():
        return F.broadcast_mul(x, scale)
    x3 = x.reshape((-3, 1, -1))                                         # (N*C, 1, H*W)
    return F.batch_dot(scale.reshape((-1, 1, 1)), x3).reshape_like(x)


def weighted_sum(F, x, a, radix: int):
    """Eq. (3), ``sum_i a_i * U_i`` for radix-major U = x (N, R*C, H, W), a (N, R*C, 1, 1).

    Inference splits U first (R products of C channels, then ``add_n``): with oneDNN that
    keeps about half the memory of one R*C product. Training weights all splits at once
    with :func:`channel_scale` and splits after: 1.4x faster for the step than per split.
    """
    if autograd.is_training():
        return F.add_n(*F.split(channel_scale(F, x, a), num_outputs=radix, axis=1))
    splits, weights = F.split(x, num_outputs=radix, axis=1), F.split(a, num_outputs=radix, axis=1)
    return F.add_n(*[F.broadcast_mul(u, w) for u, w in zip(splits, weights)])


class SplitAttention(HybridBlock):
    """Split-Attention convolution: (N, C_in, H, W) -> (N, C, H', W').

    Parameters
    ----------
    channels : C, output channels (= channels of one split).
    kernel_size, strides, padding, dilation : of the R*C-channel grouped convolution.
    radix : R >= 1, splits per cardinal group.
    cardinality : K >= 1, cardinal groups; C must be divisible by K.
    in_channels : C_in (0 = inferred); must be divisible by K*R when given.
    reduction_factor, min_inter_channels : width of G, see :func:`inter_channels`.
    norm_layer, norm_kwargs : normalisation after ``conv`` and ``fc1`` (None: no norm).
    drop_ratio : dropout inside G (after fc1's ReLU); 0 disables it.
    """

    def __init__(self, channels: int, kernel_size=3, strides=1, padding=1, dilation=1,
                 radix: int = 2, cardinality: int = 1, in_channels: int = 0,
                 reduction_factor: int = 4, min_inter_channels: int = 32,
                 norm_layer: Optional[Callable[..., HybridBlock]] = BatchNorm,
                 norm_kwargs: Optional[dict] = None, drop_ratio: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, value in (("channels", channels), ("radix", radix),
                            ("cardinality", cardinality), ("in_channels", in_channels),
                            ("reduction_factor", reduction_factor),
                            ("min_inter_channels", min_inter_channels)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if radix < 1:
            raise ValueError(f"radix must be >= 1 (R splits per cardinal group), got {radix}")
        if cardinality < 1:
            raise ValueError(f"cardinality must be >= 1, got {cardinality}")
        if channels < 1 or channels % cardinality:
            raise ValueError(f"channels={channels} must be a positive multiple of "
                             f"cardinality={cardinality}")
        if in_channels < 0 or in_channels % (cardinality * radix):
            raise ValueError(f"in_channels={in_channels} must be divisible by "
                             f"cardinality x radix = {cardinality * radix}")
        if reduction_factor < 1 or min_inter_channels < 1:
            raise ValueError("reduction_factor and min_inter_channels must be >= 1")
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
        norm_kwargs = dict(norm_kwargs or {})
        inter = inter_channels(channels, radix, reduction_factor, min_inter_channels)
        if inter % cardinality:
            raise ValueError(f"attention width {inter} must be divisible by "
                             f"cardinality={cardinality}")
        self.channels, self.radix, self.cardinality = channels, radix, cardinality
        with self.name_scope():
            self.conv = nn.Conv2D(channels * radix, _pair(kernel_size, "kernel_size"),
                                  _pair(strides, "strides"), _pair(padding, "padding"),
                                  _pair(dilation, "dilation"), groups=cardinality * radix,
                                  use_bias=False, in_channels=in_channels)
            self.bn = norm_layer(in_channels=channels * radix, **norm_kwargs) if norm_layer else None
            self.fc1 = nn.Conv2D(inter, 1, in_channels=channels, groups=cardinality)
            self.bn1 = norm_layer(in_channels=inter, **norm_kwargs) if norm_layer else None
            self.drop = nn.Dropout(drop_ratio) if drop_ratio > 0 else None
            self.fc2 = nn.Conv2D(channels * radix, 1, in_channels=inter, groups=cardinality)

    def hybrid_forward(self, F, x):
        return self.attend(F, x)

    def attend(self, F, x, pool: Optional[Callable] = None):
        """Eqs. (1)-(3); with ``pool``, returns ``pool(V)`` computed as ``sum_i a_i pool(U_i)``.

        ``pool`` must be linear and act on each channel alone (avd's 3x3 average pool): it
        then commutes with the per-channel weights a_i. (1) still reads the unpooled U, and
        (3) runs on the pooled map, a quarter of the positions at stride 2.
        """
        R, K = self.radix, self.cardinality
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        x = F.Activation(x, act_type="relu")                   # U: (N, R*C, H, W)
        # (1) s = GAP(sum_i U_i) = sum_i GAP(U_i): pool first, add the small (N, C, 1, 1) maps
        s = F.Pooling(x, kernel=(1, 1), pool_type="avg", global_pool=True)
        if R > 1:
            s = F.add_n(*F.split(s, num_outputs=R, axis=1))
        g = self.fc1(s)
        if self.bn1 is not None:
            g = self.bn1(g)
        g = F.Activation(g, act_type="relu")
        if self.drop is not None:
            g = self.drop(g)
        g = self.fc2(g)                                        # G(s): (N, K*R*C/K, 1, 1)
        if pool is not None:
            x = pool(x)
        if R > 1:                                              # (2) softmax over the R splits
            g = F.transpose(g.reshape((0, K, R, -1)), (0, 2, 1, 3))   # (N, R, K, C/K)
            a = F.softmax(g, axis=1).reshape((0, -1, 1, 1))    # radix-major (N, R*C, 1, 1)
            return weighted_sum(F, x, a, R)                    # (3) V = sum_i a_i U_i
        return channel_scale(F, x, F.sigmoid(g))               # R = 1: SE-like gate

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(channels={self.channels}, radix={self.radix}, "
                f"cardinality={self.cardinality}, conv={self.conv})")
