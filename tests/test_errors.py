"""Bad input gets a clear, specific error."""
import mxnet as mx
import numpy as np
import pytest

import gluon_resnest
from gluon_resnest.model.parameters import ParameterMismatchError


def test_unknown_variant_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown ResNeSt variant 'resnest5'.*'resnest50'"):
        gluon_resnest.get_model("resnest5")
    with pytest.raises(ValueError, match=r"Did you mean.*resnest50_fast"):
        gluon_resnest.get_model("resnest50fast")
    with pytest.raises(TypeError):
        gluon_resnest.get_model(50)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(radix=0), ValueError, "radix must be an int >= 1"),
    (dict(radix=-1), ValueError, "radix must be an int >= 1"),
    (dict(cardinality=0), ValueError, "cardinality must be an int >= 1"),
    (dict(bottleneck_width=20, cardinality=3), ValueError, "divisible by cardinality=3"),
    (dict(classes=0), ValueError, "classes must be a positive int"),
    (dict(output_stride=4), ValueError, "output_stride must be 32, 16 or 8"),
    (dict(dilation=3), ValueError, "dilation must be 1, 2 or 4"),
    (dict(final_drop=1.0), ValueError, "final_drop"),
    (dict(dropblock_prob=2.0), ValueError, "drop_prob"),
    (dict(layers=(3, 4, 6)), ValueError, "four positive ints"),
])
def test_bad_architecture_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gluon_resnest.get_model("resnest14", **kwargs)


@pytest.fixture(scope="module")
def net():
    n = gluon_resnest.get_model("resnest14")
    n.initialize()
    return n


@pytest.mark.parametrize("shape, match", [
    ((3, 64, 64), r"4-D \(N, 3, H, W\)"),
    ((1, 1, 64, 64), "3 input channels"),
    ((1, 64, 64, 3), "3 input channels"),
    ((1, 3, 16, 64), "smaller than the network's total stride 32"),
])
@pytest.mark.parametrize("hybrid", [False, True])
def test_bad_input_shapes(net, shape, match, hybrid):
    net.hybridize(active=hybrid)
    with pytest.raises(ValueError, match=match):
        net(mx.nd.zeros(shape))


def test_missing_pretrained_file_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resnest50-bcfefe1d\.params.*Nothing is downloaded"):
        gluon_resnest.get_model("resnest50", pretrained=True, root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gluon_resnest.get_model("resnest50", pretrained=str(tmp_path / "nope.params"))
    with pytest.raises(FileNotFoundError, match=r"resnest50_fast_2s1x64d-<hash>\.params"):
        gluon_resnest.get_model("resnest50_fast", pretrained=True, root=str(tmp_path))


def test_pretrained_true_finds_gluoncv_named_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MXNET_HOME", raising=False)
    src = gluon_resnest.get_model("resnest14")
    src.initialize()
    src.save_parameters(str(tmp_path / "resnest14-7e0b0cae.params"))
    net = gluon_resnest.get_model("resnest14", pretrained=True, root=str(tmp_path))
    np.testing.assert_array_equal(net.fc.weight.data().asnumpy(), src.fc.weight.data().asnumpy())
    assert len(net.synset) == 1000
    # a 10-class head for fine-tuning: everything but fc loaded
    ft = gluon_resnest.get_model("resnest14", pretrained=True, root=str(tmp_path), classes=10)
    np.testing.assert_array_equal(ft.layer1[0].conv1.weight.data().asnumpy(),
                                  src.layer1[0].conv1.weight.data().asnumpy())
    assert ft.fc.weight.shape == (10, 2048)


def test_truncated_file(tmp_path):
    src = gluon_resnest.get_model("resnest14")
    src.initialize()
    path = tmp_path / "x.params"
    src.save_parameters(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not an MXNet .params file"):
        gluon_resnest.get_model("resnest14", pretrained=str(path))
    path.write_bytes(b"not a params file at all")
    with pytest.raises(ValueError, match="truncated or not an MXNet"):
        gluon_resnest.get_model("resnest14").load_parameters(str(path))


def test_key_mismatch_lists_missing_and_unexpected(tmp_path):
    src = gluon_resnest.get_model("resnest26")
    src.initialize()
    path = str(tmp_path / "r26.params")
    src.save_parameters(path)
    with pytest.raises(ParameterMismatchError) as err:
        gluon_resnest.get_model("resnest14", pretrained=path)
    msg = str(err.value)
    assert "unexpected keys" in msg and "layer1.1.conv1.weight" in msg
    src101 = gluon_resnest.get_model("resnest101")
    src101.initialize()
    path = str(tmp_path / "r101.params")
    src101.save_parameters(path)
    with pytest.raises(ParameterMismatchError, match=r"shape mismatches.*conv1\.0\.weight"):
        gluon_resnest.get_model("resnest50", pretrained=path)
    with pytest.raises(ParameterMismatchError, match="missing keys"):
        gluon_resnest.get_model("resnest101", pretrained=str(tmp_path / "r26.params"))
