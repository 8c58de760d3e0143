"""The variant table: exactness to the paper, every variant runs, hybridizes and exports."""
import json

import mxnet as mx
import numpy as np
import pytest
from conftest import randomize

import gluon_resnest
from gluon_resnest.model import profile
from gluon_resnest.model.variants import ALIASES, VARIANTS

# The paper's Table 3: (params in M, GFLOPs = multiply-adds at 224x224).
TABLE3 = {
    "resnest50": (27.5, 5.39),
    "resnest50_fast": (27.5, 4.34),
    "resnest101": (48.3, 10.2),
    "resnest101_fast": (48.2, 8.07),
}


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_paper_table3_params_and_macs(name):
    params, gflops = TABLE3[name]
    net = gluon_resnest.build(name)
    assert abs(profile.count_params(net) / 1e6 - params) < 0.1
    macs = profile.count_macs(net, 224) / 1e9
    assert abs(macs - gflops) / gflops < 0.02


def test_mac_counter_on_a_known_layer():
    """Independent check of the counter: one conv and one dense layer, computed by hand."""
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(8, 3, 2, 1, in_channels=3, groups=1),
            mx.gluon.nn.Conv2D(8, 3, 1, 1, in_channels=8, groups=4),
            mx.gluon.nn.Flatten(), mx.gluon.nn.Dense(5, in_units=8 * 16 * 16))
    by_hand = 8 * 16 * 16 * 3 * 9 + 8 * 16 * 16 * 2 * 9 + 5 * 8 * 16 * 16
    assert profile.count_macs(net, 32) == by_hand


def test_variant_specs_follow_the_official_models():
    assert VARIANTS["resnest50"].stem_width == 32 and VARIANTS["resnest101"].stem_width == 64
    assert all(VARIANTS[n].avd_first for n in VARIANTS if "fast" in n)
    assert not any(VARIANTS[n].avd_first for n in VARIANTS if "fast" not in n)
    assert VARIANTS["resnest269"].default_cfg["input_size"] == (3, 416, 416)
    assert ALIASES["resnest50_fast"] == "resnest50_fast_2s1x64d"
    net = gluon_resnest.get_model("resnest50_fast_4s2x40d")
    assert net.layer1[0].conv2.radix == 4 and net.layer1[0].conv2.cardinality == 2
    assert net.layer1[0].conv2.channels == 80  # group width int(64*40/64)*2


def _roundtrip(name, tmp_path, size, size2, residual_gamma=(0.2, 0.5)):
    net = gluon_resnest.get_model(name)
    net.initialize()
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, size, size))
    net(x)
    randomize(net, seed=3, residual_gamma=residual_gamma)
    y = net(x).asnumpy()
    assert np.isfinite(y).all() and y.shape == (2, 1000)
    net.hybridize(static_alloc=True, static_shape=True)
    y_h = net(x).asnumpy()
    np.testing.assert_allclose(y_h, y, rtol=1e-5, atol=1e-5 * np.abs(y).max())
    prefix = str(tmp_path / name)
    net.export(prefix)
    with open(prefix + "-symbol.json") as f:
        ops = {n["op"] for n in json.load(f)["nodes"]}
    assert not {o for o in ops if o.startswith(("_sg_", "_full", "_random"))}, ops  # portable graph
    sb = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    np.testing.assert_allclose(sb(x).asnumpy(), y, rtol=1e-5, atol=1e-5 * np.abs(y).max())
    x2 = mx.nd.random.uniform(-1, 1, shape=(3, 3, size2, size2 + 32))  # other batch and size
    y2 = net(x2).asnumpy()
    np.testing.assert_allclose(sb(x2).asnumpy(), y2, rtol=1e-5, atol=1e-5 * np.abs(y2).max())


FAST_AND_SMALL = [n for n in VARIANTS if n not in ("resnest200", "resnest269")]


@pytest.mark.parametrize("name", FAST_AND_SMALL)
def test_every_variant_hybridizes_and_exports(name, tmp_path):
    _roundtrip(name, tmp_path, 64, 96)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnest200", "resnest269"])
def test_deep_variants_hybridize_and_export(name, tmp_path):
    _roundtrip(name, tmp_path, 64, 32, residual_gamma=(0.02, 0.05))  # 66/89 blocks deep


def test_resnest50_at_224_hybridized():
    net = gluon_resnest.get_model("resnest50")
    net.initialize()
    x = mx.nd.random.uniform(shape=(1, 3, 224, 224))
    y = net(x)
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(x).asnumpy(), y.asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("os_, c5", [(32, 2), (16, 4), (8, 8)])
def test_output_stride_and_stage_outputs(os_, c5):
    net = gluon_resnest.get_model("resnest14", output_stride=os_)
    net.initialize()
    feats = gluon_resnest.StageFeatures(net)
    outs = feats(mx.nd.zeros((1, 3, 64, 64)))
    assert [o.shape for o in outs] == [(1, 256, 16, 16), (1, 512, 8, 8),
                                       (1, 1024, 8 if os_ == 8 else 4, 8 if os_ == 8 else 4),
                                       (1, 2048, c5, c5)]
    # GluonCV's spelling
    assert gluon_resnest.get_model("resnest14", dilation=4).output_stride == 8
    assert gluon_resnest.get_model("resnest14", dilated=True).output_stride == 8


def test_options_classes_norm_final_drop_last_gamma():
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    net = gluon_resnest.get_model("resnest14", classes=7, norm_layer=SyncBatchNorm,
                                  norm_kwargs={"num_devices": 1}, final_drop=0.3,
                                  last_gamma=True)
    net.initialize()
    assert isinstance(net.bn1, SyncBatchNorm) and isinstance(net.layer1[0].conv2.bn, SyncBatchNorm)
    assert net.drop is not None and net.fc._units == 7
    assert (net.layer1[0].bn3.gamma.data().asnumpy() == 0).all()
    assert net(mx.nd.zeros((2, 3, 32, 32))).shape == (2, 7)


@pytest.mark.parametrize("strides,dilation", [(2, 1), (1, 2)])
@pytest.mark.parametrize("hybrid", [False, True])
def test_avd_bottleneck_inference_pools_first_with_the_same_result(strides, dilation, hybrid):
    """At inference a stride-2 avd block pools U_i before eq. (3), with the paper order's result."""
    from mxnet.gluon import nn

    from gluon_resnest.model.blocks import Bottleneck, make_shortcut

    down = make_shortcut(64, 128, strides, nn.BatchNorm, {}, prefix="down_")
    blk = Bottleneck(32, 64, strides=strides, dilation=dilation, downsample=down)
    assert blk.avd and not blk.avd_first
    blk.initialize()
    randomize(blk, seed=3)
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 64, 14, 15)))
    out1 = mx.nd.relu(blk.bn1(blk.conv1(x)))                 # conv2, then avd's pool
    paper = mx.nd.relu(blk.bn3(blk.conv3(blk.avd_layer(blk.conv2(out1)))) + down(x))
    if hybrid:
        blk.hybridize(static_alloc=True, static_shape=True)
    out = blk(x)
    assert out.shape == paper.shape == (2, 128, 7 if strides == 2 else 14, 8 if strides == 2 else 15)
    np.testing.assert_allclose(out.asnumpy(), paper.asnumpy(), rtol=1e-5, atol=1e-5)
