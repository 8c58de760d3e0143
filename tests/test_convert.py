"""PyTorch -> MXNet weight conversion, checked against PyTorch itself.

References: timm's ResNeSt models (every depth timm has and both of its fast variants) and the
official ResNeSt code (PyPI ``resnest==0.0.5``, module ``resnest.torch``, whose state_dicts use
the official naming), all with random weights and random BatchNorm statistics, in eval mode.
Our converted network must give the same logits to 1e-4 relative to the logits' scale:
``|ours - torch| <= 1e-4 * max(1, max|torch|)`` (logits here are O(1)-O(10); float32 sums
over up to 89 blocks differ in the last bits between the two frameworks).

Running timm here needs a workaround for PyPI's CUDA torchvision next to the CPU torch wheel:
:func:`gluon_resnest._compat.import_timm` explains it.
"""
import importlib.util
import sys

import mxnet as mx
import numpy as np
import pytest

from gluon_resnest import _compat
from gluon_resnest.cli import main
from gluon_resnest.model.parameters import ParameterMismatchError
from gluon_resnest.model.resnest import build
from gluon_resnest.weights.pytorch import (
    TIMM_NAMES,
    MissingExtraError,
    convert_checkpoint,
    convert_state_dict,
    load_torch_checkpoint,
    map_state_dict,
    net_from_state_dict,
    read_state_dict,
    resolve_arch,
)

EXTRA = "needs the torch/test extra (pip install -e '.[test]'): "
TOL = 1e-4


def import_torch():
    return pytest.importorskip("torch", reason=EXTRA + "PyTorch is not installed")


def import_timm():
    import_torch()
    if importlib.util.find_spec("timm") is None:
        pytest.skip(EXTRA + "timm is not installed")
    return _compat.import_timm()


def randomize_torch(model, seed=0):
    """Random weights and BN statistics. Residual-branch gammas shrink with depth (as in
    trained nets, activations stay O(1) instead of growing over 89 blocks)."""
    torch = import_torch()
    gen = torch.Generator().manual_seed(seed)
    blocks = sum(k.endswith("bn3.weight") for k in model.state_dict())
    depth_scale = min(1.0, float(np.sqrt(16 / blocks)))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            shape = t.shape
            if name.endswith("running_var"):
                val = torch.rand(shape, generator=gen) + 0.5
            elif name.endswith(("bn3.weight", "downsample.2.weight")):
                val = (torch.rand(shape, generator=gen) * 0.3 + 0.2) * depth_scale
            elif t.dim() == 1 and name.endswith("weight"):  # BN gamma
                val = torch.rand(shape, generator=gen) + 0.5
            elif name.endswith(("bias", "running_mean")):
                val = torch.randn(shape, generator=gen) * 0.1
            else:
                fan_in = int(np.prod(shape[1:]))
                gain = 1.0 if name.startswith("fc") else 2.0
                val = torch.randn(shape, generator=gen) * np.sqrt(gain / fan_in)
            t.copy_(val)
    return model.eval()


def compare(model, arch, size, batch=2, seed=0):
    """Convert ``model``'s state_dict and compare logits with PyTorch's (eval mode)."""
    torch = import_torch()
    x = np.random.RandomState(seed).normal(size=(batch, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    net = net_from_state_dict(state, arch)
    ours = net(mx.nd.array(x)).asnumpy()
    assert ours.shape == ref.shape
    assert np.isfinite(ref).all() and np.abs(ref).std() > 0.1, "degenerate reference logits"
    np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL * max(1.0, np.abs(ref).max()))


# -- timm ------------------------------------------------------------------------------------
TIMM_CASES = [  # (timm name, input size): deep ones at a small size to keep time down
    ("resnest14d", 96), ("resnest26d", 64), ("resnest50d", 64), ("resnest101e", 64),
    pytest.param("resnest200e", 32, marks=pytest.mark.slow),
    pytest.param("resnest269e", 32, marks=pytest.mark.slow),
    ("resnest50d_4s2x40d", 64), ("resnest50d_1s4x24d", 64),
]


def test_timm_table_covers_every_timm_resnest():
    timm = import_timm()
    assert sorted(timm.list_models("resnest*")) == sorted(TIMM_NAMES)


@pytest.mark.parametrize("timm_name,size", TIMM_CASES)
def test_timm_model_converts_exactly(timm_name, size):
    timm = import_timm()
    model = randomize_torch(timm.create_model(timm_name, pretrained=False))
    compare(model, timm_name, size)


# -- the official ResNeSt code ---------------------------------------------------------------
# resnest101/200/269 are the same networks as timm's resnest101e/200e/269e (tested above).
OFFICIAL_CASES = ["resnest50", "resnest50_fast_1s1x64d", "resnest50_fast_2s1x64d",
                  "resnest50_fast_4s1x64d", "resnest50_fast_1s2x40d", "resnest50_fast_2s2x40d",
                  "resnest50_fast_4s2x40d", "resnest50_fast_1s4x24d"]


def official(name):
    import_torch()
    module = pytest.importorskip("resnest.torch", reason=EXTRA + "resnest (official) is missing")
    return getattr(module, name)(pretrained=False)


@pytest.mark.parametrize("name", OFFICIAL_CASES)
def test_official_model_converts_exactly(name):
    compare(randomize_torch(official(name), seed=1), name, 64)


def test_official_checkpoint_file_roundtrip(tmp_path):
    """torch.save -> weights_only load -> our .params -> get_model(pretrained=file)."""
    torch = import_torch()
    from gluon_resnest import get_model
    model = randomize_torch(official("resnest50_fast_2s2x40d"), seed=2)
    src, dst = tmp_path / "official.pth", tmp_path / "ours.params"
    torch.save({"state_dict": model.state_dict()}, src)  # nested, as training scripts save
    assert convert_checkpoint(str(src), str(dst), "resnest50_fast_2s2x40d") == \
        "resnest50_fast_2s2x40d"
    net = get_model("resnest50_fast_2s2x40d", pretrained=str(dst))
    x = np.random.RandomState(3).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), ref, rtol=0, atol=TOL)


def test_cli_convert_timm_pth(tmp_path, capsys):
    torch = import_torch()
    timm = import_timm()
    model = randomize_torch(timm.create_model("resnest14d"), seed=4)
    src, dst = tmp_path / "r14.pth", tmp_path / "r14.params"
    torch.save(model.state_dict(), src)
    assert main(["convert", "--arch", "resnest14d", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "timm resnest14d -> resnest14" in out and str(dst) in out
    net = load_torch_checkpoint(str(src), "resnest14d")
    ours = build("resnest14")
    ours.load_parameters(str(dst))
    x = mx.nd.array(np.random.RandomState(5).normal(size=(1, 3, 64, 64)).astype(np.float32))
    np.testing.assert_array_equal(ours(x).asnumpy(), net(x).asnumpy())


def test_safetensors_file(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch", reason=EXTRA + "no safetensors")
    timm = import_timm()
    model = randomize_torch(timm.create_model("resnest14d"), seed=6)
    path = tmp_path / "r14.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(path))
    state = read_state_dict(str(path))
    assert set(state) == set(model.state_dict())
    compare_net = net_from_state_dict(state, "resnest14d")
    torch = import_torch()
    x = np.random.RandomState(7).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(compare_net(mx.nd.array(x)).asnumpy(), ref, rtol=0, atol=TOL)


# -- safe loading and clear errors -----------------------------------------------------------
class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    torch = import_torch()
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "args": NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(str(path))


def test_truncated_checkpoint(tmp_path):
    torch = import_torch()
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_state_dict(str(path))


def test_missing_torch_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "x.pth"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # looks like a torch zip
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(MissingExtraError, match=r"gluon_resnest\[torch\]"):
        read_state_dict(str(path))
    assert main(["convert", "--arch", "resnest50", str(path), str(tmp_path / "o.params")]) == 2


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="neither a PyTorch checkpoint"):
        read_state_dict(str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(str(tmp_path / "missing.pth"))


def test_unknown_arch_suggests_names():
    with pytest.raises(ValueError, match="resnest50d"):
        resolve_arch("resnest50dd")
    assert resolve_arch("ResNeSt101e") == "resnest101"
    assert resolve_arch("resnest50_fast") == "resnest50_fast_2s1x64d"


# -- the key mapping, on PyTorch-layout fixtures made from our own networks ------------------
def torch_layout(net, seed=0):
    """Our parameters under PyTorch's names (BN weight/bias, conv2.bn0, num_batches_tracked)."""
    rng = np.random.RandomState(seed)
    out = {}
    for key, p in net._collect_params_with_prefix().items():
        module, leaf = key.rsplit(".", 1)
        if module.endswith("conv2.bn"):
            module += "0"
        leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf)
        out[f"module.{module}.{leaf}"] = rng.normal(size=p.shape).astype(np.float32)
        if leaf == "running_var":
            out[f"module.{module}.num_batches_tracked"] = np.array(7)
    return out


def test_mapping_rules_roundtrip():
    net = build("resnest50_fast_4s2x40d")
    fixture = torch_layout(net)
    mapped = map_state_dict(fixture)
    assert set(mapped) == set(net._collect_params_with_prefix())
    assert "layer1.0.conv2.bn.gamma" in mapped and "conv1.1.beta" in mapped
    np.testing.assert_array_equal(mapped["layer2.0.conv2.bn.gamma"],
                                  fixture["module.layer2.0.conv2.bn0.weight"])
    np.testing.assert_array_equal(mapped["layer2.0.downsample.1.weight"],
                                  fixture["module.layer2.0.downsample.1.weight"])


def test_shape_mismatch_lists_first_mismatches_and_guesses_arch():
    fixture = torch_layout(build("resnest101"))
    with pytest.raises(ParameterMismatchError) as info:
        convert_state_dict(fixture, "resnest50")
    msg = str(info.value)
    assert "conv1.0.weight: checkpoint (64, 3, 3, 3) vs resnest50 (32, 3, 3, 3)" in msg
    assert "shape mismatches" in msg and "missing keys" not in msg
    assert "391 unexpected keys: layer3.10.bn1.beta" in msg  # layer3.6 .. layer3.22
    assert "try --arch resnest101" in msg


def test_avd_placement_ambiguity_is_explained():
    fixture = torch_layout(build("resnest50"))
    del fixture["module.fc.bias"]
    fixture["module.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ParameterMismatchError) as info:
        convert_state_dict(fixture, "resnest50")
    msg = str(info.value)
    assert "1 missing keys: fc.bias" in msg and "1 unexpected keys: extra.weight" in msg
    assert "resnest50 or resnest50_fast_2s1x64d" in msg and "avd" in msg


def test_classes_follow_the_checkpoint_and_arch_fields_are_refused():
    net = build("resnest14", classes=10)
    fixture = torch_layout(net)
    ours = net_from_state_dict(fixture, "resnest14d")
    assert ours.num_classes == 10 and ours.classes is None
    with pytest.raises(TypeError, match="radix"):
        net_from_state_dict(fixture, "resnest14d", radix=4)
