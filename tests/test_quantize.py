"""INT8 (oneDNN) quantization and the BF16 option.

What the INT8 test measures: top-1 agreement between the INT8 model and its FP32 source on a
real image set, scikit-learn's handwritten digits (8x8 scans, bilinearly resized to 32x32, 797
held-out images). The FP32 model is a ResNeSt-14 whose convolutions keep random weights, with
BatchNorm statistics taken from 128 training digits and a linear classifier fitted (ridge
regression) on the features of 1000 training digits: a real classifier (about 97% validation
accuracy) whose decisions depend on the whole network. Calibration uses the *generated* set
(the default) or a folder of digit PNGs. The graph check counts int8<->fp32 conversion nodes.
"""
import json
import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from gluon_resnest.cli import main
from gluon_resnest.data.transforms import EvalTransform
from gluon_resnest.deploy import bf16, int8
from gluon_resnest.deploy.artifact import read_meta
from gluon_resnest.deploy.symbol import export_symbol, load_symbol
from gluon_resnest.model.resnest import StageFeatures, build
from gluon_resnest.model.variants import IMAGENET_MEAN as MEAN
from gluon_resnest.model.variants import IMAGENET_STD as STD

SIZE = 32


def _digits():
    datasets = pytest.importorskip("sklearn.datasets",
                                   reason="needs scikit-learn (test extra) for the digits images")
    d = datasets.load_digits()
    imgs = mx.nd.array(d.images[:, None].astype(np.float32) / 16.0).tile((1, 3, 1, 1))
    imgs = mx.nd.contrib.BilinearResize2D(imgs, height=SIZE, width=SIZE).asnumpy()
    norm = (imgs - np.array(MEAN, np.float32).reshape(1, 3, 1, 1)) / \
        np.array(STD, np.float32).reshape(1, 3, 1, 1)
    perm = np.random.RandomState(0).permutation(len(d.target))
    return imgs, norm.astype(np.float32), d.target, perm[:1000], perm[1000:]


@pytest.fixture(scope="module")
def digits_model():
    raw, x, y, train, val = _digits()
    mx.random.seed(0)
    net = build("resnest14", classes=10, norm_kwargs={"momentum": 0.0})
    net.initialize(mx.init.MSRAPrelu())
    with autograd.record(train_mode=True):  # momentum 0: BN statistics of these 128 digits
        net(mx.nd.array(x[train[:128]]))
    feats = StageFeatures(net)
    feats.hybridize(static_alloc=True)
    f = np.concatenate([feats(mx.nd.array(x[i:i + 256]))[-1].mean(axis=(2, 3)).asnumpy()
                        for i in range(0, len(x), 256)])
    ftr, mu, scale = f[train], f[train].mean(0), f[train].std()
    a = np.hstack([(ftr - mu) / scale, np.ones((len(train), 1))])
    w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ np.eye(10)[y[train]])
    net.fc.weight.set_data(mx.nd.array((w[:-1] / scale).T))
    net.fc.bias.set_data(mx.nd.array(w[-1] - (mu / scale) @ w[:-1]))
    net.hybridize(static_alloc=True, static_shape=True)
    logits = np.concatenate([net(mx.nd.array(x[i:i + 256])).asnumpy()
                             for i in range(0, len(x), 256)])
    return net, raw, x, y, val, logits


def _predict(block, x):
    return np.concatenate([block(mx.nd.array(x[i:i + 256])).asnumpy().argmax(1)
                           for i in range(0, len(x), 256)])


def test_int8_agrees_with_fp32_on_real_digits(digits_model):
    net, _, x, y, val, logits = digits_model
    assert (logits[val].argmax(1) == y[val]).mean() > 0.9   # the reference is a real classifier
    q = int8.quantize_int8(net, "generated", num_calib=32, size=SIZE)
    agree = (_predict(q, x[val]) == logits[val].argmax(1)).mean()
    assert agree >= 0.95, f"INT8/FP32 top-1 agreement {agree:.3f} on 797 digits"
    # int8 <-> fp32 conversions: at most 4 per bottleneck (+2 at the ends), not per op
    t = int8.graph_transitions(q)
    blocks = 4
    assert t["quantize"] + t["dequantize"] <= 4 * blocks + 2, t
    assert t["int8_ops"] >= 12, t
    # the attention MLP and GAP (1x1 maps) stay FP32: 4 blocks x (GAP, fc1, fc2)
    nodes = {n["name"]: n["op"] for n in json.loads(q(mx.sym.var("data")).tojson())["nodes"]}
    kept = q.int8_info["fp32_layers"]
    assert sum(bool(re.search(r"splitattention\d+_pooling0", k)) for k in kept) == blocks
    assert len(kept) >= 3 * blocks
    for layer in kept:
        assert layer in nodes and f"quantized_{layer}" not in nodes
    # MXNet's INT8 grouped conv is wrong here, so every Split-Attention conv is split into
    # dense ones and all convolutions run in INT8 (none is left grouped in FP32)
    assert q.int8_info["grouped_conv_split"] == (0 if int8.grouped_int8_ok() else blocks)
    assert q.int8_info["grouped_conv_fp32"] == 0


def test_int8_calibration_from_a_folder(digits_model, tmp_path):
    from PIL import Image
    net, raw, x, _, val, logits = digits_model
    folder = tmp_path / "calib" / "digits"
    folder.mkdir(parents=True)
    for i in range(24):
        img = (raw[i].transpose(1, 2, 0) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    (folder / "broken.png").write_bytes(b"not a png")          # skipped
    (folder / "notes.txt").write_text("ignored")
    transform = EvalTransform(SIZE, 1.0, "bilinear", MEAN, STD)   # the data's preprocessing
    images = int8.folder_images(str(tmp_path / "calib"), 64, transform)
    assert images.shape == (24, 3, SIZE, SIZE)
    np.testing.assert_allclose(images[0], x[0], atol=0.02)      # same transform as the data
    q = int8.quantize_int8(net, str(tmp_path / "calib"), num_calib=24, transform=transform)
    assert q.int8_info["num_calib"] == 24
    agree = (_predict(q, x[val]) == logits[val].argmax(1)).mean()
    assert agree >= 0.95, f"INT8/FP32 top-1 agreement {agree:.3f} (folder calibration)"


def test_grouped_conv_probe_detects_wrong_int8():
    """The probe's verdict matches a direct check on a grouped conv with unequal groups."""
    rng = np.random.RandomState(1)
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(32, 3, padding=1, groups=2, in_channels=16, use_bias=False))
    net.initialize()
    w = rng.uniform(-0.1, 0.1, (32, 8, 3, 3)).astype(np.float32)
    w[16:] *= 2.5
    net[0].weight.set_data(mx.nd.array(w))
    net.hybridize()
    xin = np.maximum(rng.normal(size=(4, 16, 8, 8)), 0).astype(np.float32)
    ref = net(mx.nd.array(xin)).asnumpy()
    q = int8._quantize(net, xin, [], "naive", 4)
    err = int8._rel_rms(q(mx.nd.array(xin)).asnumpy(), ref)
    assert (err < 0.05) == int8.grouped_int8_ok(), err


@pytest.mark.parametrize("name, blocks, groups", [
    ("resnest14", 4, 2),                     # radix 2, avd pool after the 3x3 conv
    ("resnest50_fast_2s2x40d", 16, 4),       # radix 2 x cardinality 2, avd pool before it
])
def test_split_grouped_convs_is_exact(tmp_path, name, blocks, groups):
    """The rewrite for INT8 gives the same FP32 outputs as the network, with no grouped 3x3
    conv left and one Concat per Split-Attention block."""
    net = build(name, classes=10)
    net.initialize(mx.init.MSRAPrelu())
    rng = np.random.RandomState(0)
    for key, p in net._collect_params_with_prefix().items():   # non-trivial BN per channel
        if key.endswith(("gamma", "running_var")):
            p.set_data(mx.nd.array(rng.uniform(0.3, 2.0, p.shape)))
        elif key.endswith(("beta", "running_mean")):
            p.set_data(mx.nd.array(rng.normal(0, 0.2, p.shape)))
    x = mx.nd.array(rng.normal(size=(3, 3, SIZE, SIZE)))
    ref = net(x).asnumpy()
    prefix = str(tmp_path / "m")
    export_symbol(net, prefix, SIZE)
    assert int8.split_grouped_convs(prefix) == blocks
    nodes = json.load(open(prefix + "-symbol.json"))["nodes"]
    grouped = [n["name"] for n in nodes if n["op"] == "Convolution"
               and int(n["attrs"].get("num_group", 1)) > 1]
    # only the attention MLP (fc1/fc2 on 1x1 maps, cardinality groups) stays grouped
    assert all(re.search(r"splitattention\d+_conv[12]_fwd$", g) for g in grouped), grouped
    concats = [n for n in nodes if n["op"] == "Concat"]
    assert len(concats) == blocks and all(len(n["inputs"]) == groups for n in concats)
    out = load_symbol(prefix)(x).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert int8.split_grouped_convs(prefix) == 0            # nothing grouped is left


def test_generated_images_are_deterministic_and_normalised():
    a = int8.generated_images(8, 48, MEAN, STD, seed=3)
    np.testing.assert_array_equal(a, int8.generated_images(8, 48, MEAN, STD, seed=3))
    raw = a * np.array(STD).reshape(1, 3, 1, 1) + np.array(MEAN).reshape(1, 3, 1, 1)
    assert a.shape == (8, 3, 48, 48) and raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert raw.std() > 0.1


def test_calibration_errors(tmp_path):
    net = build("resnest14", classes=10)
    net.initialize()
    with pytest.raises(FileNotFoundError, match="calibration folder"):
        int8.quantize_int8(net, str(tmp_path / "missing"), size=SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        int8.quantize_int8(net, str(tmp_path / "empty"), size=SIZE)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"xx")
    with pytest.raises(ValueError, match="could be read"):
        int8.quantize_int8(net, str(tmp_path / "bad"), size=SIZE)
    with pytest.raises(ValueError, match="calib_mode"):
        int8.quantize_int8(net, "generated", calib_mode="kl", size=SIZE)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        int8.quantize_int8(net, np.zeros((2, 1, 32, 32), np.float32), size=SIZE)


def test_cli_int8(tmp_path, capsys):
    out = tmp_path / "r14-int8"
    assert main(["export", "resnest14", "--random", "--int8", "--size", "32",
                 "--num-calib", "16", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "INT8 (oneDNN): calibration: generated (16 images, naive)" in text
    assert "quantize and" in text and (tmp_path / "r14-int8-symbol.json").is_file()
    block = load_symbol(str(out))
    assert block(mx.nd.zeros((2, 3, 32, 32))).shape == (2, 1000)
    meta = read_meta(str(out))                      # the artifact says what it is
    assert (meta.variant, meta.precision, meta.input_size) == ("resnest14", "int8", 32)
    assert meta.details["int8"]["num_calib"] == 16


def test_bf16_where_supported_else_clear_error(digits_model, capsys):
    net, _, x, _, val, logits = digits_model
    ok, reason = bf16.bf16_support()
    if ok:
        bf = bf16.convert_bf16(net, size=SIZE)
        pred = np.concatenate([bf(mx.nd.array(x[val][i:i + 256])).astype("float32").asnumpy()
                               .argmax(1) for i in range(0, len(val), 256)])
        assert (pred == logits[val].argmax(1)).mean() >= 0.95
    else:
        assert "bfloat16" in reason
        with pytest.raises(bf16.UnsupportedOnThisCPU, match="BF16 is not available here"):
            bf16.convert_bf16(net, size=SIZE)
        assert main(["export", "resnest14", "--random", "--bf16", "--size", "32"]) == 2
        assert "BF16 is not available here" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["resnest14", "resnest50_fast_4s2x40d"])
def test_attention_layers_are_found_by_structure(tmp_path, name):
    """The layers kept FP32 are each Split-Attention block's GAP, fc1 and fc2 (3 per block),
    found from the graph's structure; the head's global pooling is not among them."""
    net = build(name, classes=4)
    net.initialize()
    export_symbol(net, str(tmp_path / "m"), 64)
    sym, _, _ = mx.model.load_checkpoint(str(tmp_path / "m"), 0)
    nodes = {n["name"]: n for n in json.loads(sym.tojson())["nodes"]}
    found = int8._attention_nodes(sym)
    blocks = sum(len(getattr(net, f"layer{i}")) for i in range(1, 5))
    assert len(found) == 3 * blocks
    ops = sorted(nodes[n]["op"] for n in found)
    assert ops.count("Pooling") == blocks and ops.count("Convolution") == 2 * blocks
    pools = [n for n, v in nodes.items() if v["op"] == "Pooling"
             and v.get("attrs", {}).get("global_pool") == "True"]
    assert len(pools) == blocks + 1 and len(set(pools) - found) == 1   # the head's GAP
