"""DropBlock: any input size, mode decided per call (also hybridized), GluonCV's set_drop_prob."""
from functools import partial

import mxnet as mx
import numpy as np
import pytest
from gluoncv.nn.dropblock import set_drop_prob

import gluon_resnest
from gluon_resnest import DropBlock


def test_drop_rate_and_rescaling_match_the_dropblock_formula():
    p, b, h, w = 0.1, 3, 28, 28
    blk = DropBlock(p, b)
    x = mx.nd.ones((64, 32, h, w))
    with mx.autograd.record(train_mode=True):
        y = blk(x).asnumpy()
    gamma = p * h * w / (b * b * (h - b + 1) * (w - b + 1))
    interior = (y[:, :, 2:-2, 2:-2] == 0).mean()      # a pixel dies if any seed in its b x b window
    expected = 1 - (1 - gamma) ** (b * b)
    assert abs(interior - expected) < 0.1 * expected
    kept = y[y > 0]
    np.testing.assert_allclose(kept, kept[0])          # one scale for every kept activation
    np.testing.assert_allclose(y.mean(), 1.0, rtol=1e-5)  # numel / kept preserves the mean


@pytest.mark.parametrize("hybrid", [False, True])
def test_gradient_is_the_mask_times_the_output_gradient(hybrid):
    """dL/dx = dL/dy * M, for the one mask M that y = x * M used (shared over the batch)."""
    blk = DropBlock(0.3, 3, channels=8)
    if hybrid:
        blk.hybridize(static_alloc=True, static_shape=True)
    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.uniform(0.5, 1.5, (4, 8, 12, 12)))      # no zeros: M = y / x
    dy = mx.nd.array(rng.uniform(-1, 1, x.shape))
    x.attach_grad()
    with mx.autograd.record(train_mode=True):
        y = blk(x)
    y.backward(dy)
    mask = y.asnumpy() / x.asnumpy()
    np.testing.assert_allclose(mask, np.broadcast_to(mask[:1], mask.shape), rtol=1e-6)
    scale = mask.max()
    assert 0 < (mask == 0).mean() < 1 and np.allclose(mask[mask > 0], scale, rtol=1e-6)
    np.testing.assert_allclose(x.grad.asnumpy(), dy.asnumpy() * mask, rtol=1e-6, atol=1e-7)


def test_identity_outside_training_and_any_size():
    blk = DropBlock(0.2)
    blk.hybridize()
    for size in (7, 13, 30):
        x = mx.nd.random.uniform(shape=(2, 4, size, size))
        np.testing.assert_array_equal(blk(x).asnumpy(), x.asnumpy())
        with mx.autograd.record():
            assert blk(x).shape == x.shape


def _net():
    net = gluon_resnest.get_model("resnest14", dropblock_prob=0.3, classes=10)
    net.initialize()
    return net


def _train_call(net, x):
    with mx.autograd.record(train_mode=True):
        return net(x).asnumpy()


@pytest.mark.parametrize("first", ["train", "infer"])
def test_hybridized_mode_is_decided_at_call_time(first):
    """GluonCV's DropBlock keeps the mode of the first traced call; ours follows every call."""
    x = mx.nd.random.uniform(shape=(4, 3, 64, 64))
    eager = _net()
    ref_infer = eager(x).asnumpy()
    net = _net()
    src = eager._collect_params_with_prefix()
    for key, prm in net._collect_params_with_prefix().items():
        prm.set_data(src[key].data())
    net.hybridize(static_alloc=True, static_shape=True)
    calls = ["train", "infer", "train", "infer"] if first == "train" else \
        ["infer", "train", "infer", "train"]
    outs = {"train": [], "infer": []}
    for mode in calls:
        outs[mode].append(_train_call(net, x) if mode == "train" else net(x).asnumpy())
    for y in outs["infer"]:                       # inference: deterministic, no dropping
        np.testing.assert_allclose(y, ref_infer, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outs["train"][0], outs["train"][1])   # training: random masks


def test_set_drop_prob_from_gluoncv_takes_effect_after_hybridize():
    net = _net()
    net.hybridize()
    x = mx.nd.random.uniform(shape=(4, 3, 64, 64))
    assert not np.allclose(_train_call(net, x), _train_call(net, x))
    net.apply(partial(set_drop_prob, 0.0))
    assert all(b.drop_prob == 0 for b in net.layer3[0]._children.values()
               if isinstance(b, DropBlock))
    np.testing.assert_allclose(_train_call(net, x), _train_call(net, x), rtol=1e-6)


def test_training_at_sizes_other_than_224():
    net = _net()
    net.hybridize(static_alloc=True)
    for size in (64, 112, 96):   # GluonCV's static DropBlock fails at any size but 224
        assert np.isfinite(_train_call(net, mx.nd.random.uniform(shape=(2, 3, size, size)))).all()


@pytest.mark.parametrize("kwargs", [dict(drop_prob=1.0), dict(drop_prob=-0.1),
                                    dict(drop_prob=0.1, block_size=4)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DropBlock(**kwargs)


def test_shared_mask_is_one_mask_per_batch_and_per_sample_is_not():
    """Default: one (1, C, H, W) mask for the batch (official Gluon code, GluonCV);
    shared_mask=False: every sample gets its own, with the same drop rate."""
    x = mx.nd.ones((8, 16, 28, 28))
    for shared in (True, False):
        blk = DropBlock(0.2, 3, shared_mask=shared)
        with mx.autograd.record(train_mode=True):
            y = blk(x).asnumpy()
        same = all(np.array_equal(y[0], y[i]) for i in range(1, 8))
        assert same == shared
        np.testing.assert_allclose(y.mean(), 1.0, rtol=1e-5)
        assert 0.05 < (y == 0).mean() < 0.5
