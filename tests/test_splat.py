"""SplitAttention against a plain-numpy implementation of the paper's three equations."""
import mxnet as mx
import numpy as np
import pytest

from gluon_resnest import SplitAttention

EPS = 1e-5


def conv2d(x, w, b=None, stride=1, pad=0, dilation=1, groups=1):
    """Plain grouped convolution, x (N, C, H, W), w (O, C/groups, kh, kw)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation:i * dilation + stride * oh:stride,
                           j * dilation:j * dilation + stride * ow:stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def bn(x, p, prefix):
    g, b, m, v = (p[prefix + k] for k in ("gamma", "beta", "running_mean", "running_var"))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + EPS) * g.reshape(shape) + b.reshape(shape)


def reference(x, p, C, R, K, stride, pad):
    """The paper's Split-Attention, written from its equations (inference mode)."""
    U = np.maximum(bn(conv2d(x, p["conv.weight"], stride=stride, pad=pad, groups=K * R), p, "bn."), 0)
    n, _, h, w = U.shape
    splits = [U[:, i * C:(i + 1) * C] for i in range(R)]       # U_i, radix-major
    U_hat = sum(splits)
    s = U_hat.mean(axis=(2, 3), keepdims=True)                  # eq. (1)
    z = np.maximum(bn(conv2d(s, p["fc1.weight"], p["fc1.bias"], groups=K), p, "bn1."), 0)
    G = conv2d(z, p["fc2.weight"], p["fc2.bias"], groups=K)[:, :, 0, 0]   # (N, K*R*C/K)
    G = G.reshape(n, K, R, C // K)                              # cardinal-major logits
    if R > 1:                                                   # eq. (2)
        e = np.exp(G - G.max(axis=2, keepdims=True))
        a = e / e.sum(axis=2, keepdims=True)
    else:
        a = 1 / (1 + np.exp(-G))
    V = np.zeros_like(U_hat)
    for k in range(K):                                          # eq. (3), per cardinal group
        cs = slice(k * C // K, (k + 1) * C // K)
        for i in range(R):
            V[:, cs] += a[:, k, i, :, None, None] * splits[i][:, cs]
    return V


def random_params(blk, rng):
    """Initialise blk with random weights and BN statistics; returns them in float64 by key."""
    blk.initialize()
    params = {}
    for key, prm in blk._collect_params_with_prefix().items():
        lo, hi = (0.5, 1.5) if key.endswith(("running_var", "gamma")) else (-1, 1)
        val = rng.uniform(lo, hi, prm.shape).astype("float32")
        prm.set_data(mx.nd.array(val))
        params[key] = val.astype("float64")
    return params


@pytest.mark.parametrize("R", [1, 2, 4])
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("hybrid", [False, True])
def test_matches_numpy_equations(R, K, hybrid):
    C, cin, stride = 8 * K, 4 * K * R, 2 if K == 2 else 1
    rng = np.random.RandomState(R * 10 + K)
    blk = SplitAttention(C, 3, stride, 1, radix=R, cardinality=K, in_channels=cin)
    params = random_params(blk, rng)
    if hybrid:
        blk.hybridize(static_alloc=True, static_shape=True)
    x = rng.uniform(-1, 1, (2, cin, 9, 11)).astype("float32")
    out = blk(mx.nd.array(x)).asnumpy()
    ref = reference(x.astype("float64"), params, C, R, K, stride, 1)
    assert out.shape == ref.shape == (2, C) + ref.shape[2:]
    assert np.abs(ref).max() > 0.1                      # not a trivially small output
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def avg_pool3x3(x, stride):
    """3x3 average pool, zero padding 1 counted (avd's pool), x (N, C, H, W)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(3):
        for j in range(3):
            out += xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return out / 9


@pytest.mark.parametrize("R,K", [(1, 1), (2, 1), (2, 2), (4, 1)])
@pytest.mark.parametrize("stride", [1, 2])
def test_attend_pools_before_the_weighted_sum(R, K, stride):
    """attend(pool=P) gives P(V): P is linear per channel, so it commutes with eq. (3)."""
    C, cin = 8 * K, 4 * K * R
    rng = np.random.RandomState(7 * R + K)
    blk = SplitAttention(C, 3, 1, 1, radix=R, cardinality=K, in_channels=cin)
    params = random_params(blk, rng)
    x = rng.uniform(-1, 1, (2, cin, 9, 12)).astype("float32")
    pool = lambda u: mx.nd.Pooling(u, kernel=(3, 3), stride=(stride, stride), pad=(1, 1),  # noqa: E731
                                   pool_type="avg", count_include_pad=True)
    out = blk.attend(mx.nd, mx.nd.array(x), pool=pool).asnumpy()
    ref = avg_pool3x3(reference(x.astype("float64"), params, C, R, K, 1, 1), stride)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_inter_channels_and_param_layout():
    blk = SplitAttention(64, radix=2, cardinality=1, in_channels=64)
    keys = sorted(blk._collect_params_with_prefix())
    assert "fc1.weight" in keys and "fc2.bias" in keys and "bn.gamma" in keys
    assert blk.fc1.weight.shape == (32, 64, 1, 1)        # max(64*2//4, 32)
    assert blk.fc2.weight.shape == (128, 32, 1, 1)
    big = SplitAttention(256, radix=2, cardinality=2, in_channels=256)
    assert big.fc1.weight.shape == (128, 128, 1, 1)      # 256*2//4, groups=2


def test_without_norm_and_with_dropout():
    blk = SplitAttention(16, radix=2, in_channels=16, norm_layer=None, drop_ratio=0.5)
    blk.initialize()
    assert blk.bn is None and blk.bn1 is None
    assert not any("gamma" in k for k in blk._collect_params_with_prefix())
    x = mx.nd.random.uniform(shape=(2, 16, 8, 8))
    # dropout is inactive outside training: two calls agree exactly
    np.testing.assert_array_equal(blk(x).asnumpy(), blk(x).asnumpy())


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=64, radix=0), "radix must be >= 1"),
    (dict(channels=64, radix=-2), "radix must be >= 1"),
    (dict(channels=30, cardinality=4), "multiple of cardinality"),
    (dict(channels=64, radix=2, cardinality=2, in_channels=6), "divisible by cardinality x radix"),
    (dict(channels=64, drop_ratio=1.5), "drop_ratio"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitAttention(**kwargs)


def test_bad_types():
    with pytest.raises(TypeError, match="radix must be an int"):
        SplitAttention(64, radix=2.0)
    with pytest.raises(TypeError, match="kernel_size"):
        SplitAttention(64, kernel_size="3")


@pytest.mark.parametrize("training", [False, True])
def test_channel_scale_values_and_gradients(training):
    """Both formulations (inference: broadcast, training: rank-1 expansion) against numpy."""
    from gluon_resnest.model.splat import channel_scale
    rng = np.random.RandomState(0)
    x_np = rng.uniform(-1, 1, (3, 5, 4, 6)).astype("float32")
    a_np = rng.uniform(-1, 1, (3, 5, 1, 1)).astype("float32")
    dy = rng.uniform(-1, 1, x_np.shape).astype("float32")
    x, a = mx.nd.array(x_np), mx.nd.array(a_np)
    x.attach_grad()
    a.attach_grad()
    with mx.autograd.record(train_mode=training):
        y = channel_scale(mx.nd, x, a)
    y.backward(mx.nd.array(dy), train_mode=training)
    np.testing.assert_allclose(y.asnumpy(), x_np * a_np, rtol=1e-6)
    np.testing.assert_allclose(x.grad.asnumpy(), dy * a_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.grad.asnumpy(), (dy * x_np).sum(axis=(2, 3), keepdims=True),
                               rtol=1e-5, atol=1e-5)
