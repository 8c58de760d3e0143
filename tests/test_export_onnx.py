"""ONNX export: onnxruntime reproduces MXNet's outputs to 1e-4 at two batch sizes.

Variants cover radix 1/2/4 and cardinality 1/2/4 (the Split-Attention paths: sigmoid gate,
softmax over 2 and 4 splits, grouped convolutions); fast variants run with one block per
stage and a 64x64 input to keep time down (the operators are the same in every block).
"""
import json

import mxnet as mx
import numpy as np
import pytest
from conftest import randomize
from mxnet.gluon import HybridBlock, nn

from gluon_resnest.cli import main
from gluon_resnest.deploy.onnx import ONNX_OPSET, export_onnx, run_onnx
from gluon_resnest.deploy.symbol import export_symbol, fold_constants, load_symbol
from gluon_resnest.model.resnest import build

onnx = pytest.importorskip("onnx", reason="needs the onnx/test extra (pip install -e '.[test]')")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime, part of the test extra")

SIZE = 64
CASES = [  # (variant, overrides): radix R, cardinality K
    ("resnest14", {}),                                         # R2 K1, full depth
    ("resnest50_fast_1s1x64d", {"layers": (1, 1, 1, 1)}),      # R1 K1 (sigmoid)
    ("resnest50_fast_4s1x64d", {"layers": (1, 1, 1, 1)}),      # R4 K1
    ("resnest50_fast_2s2x40d", {"layers": (1, 1, 1, 1)}),      # R2 K2
    ("resnest50_fast_4s2x40d", {"layers": (1, 1, 1, 1)}),      # R4 K2
    ("resnest50_fast_1s4x24d", {"layers": (1, 1, 1, 1)}),      # R1 K4
]
STANDARD_OPS = {"Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool",
                "GlobalAveragePool", "Split", "Sum", "Add", "Mul", "Reshape", "Transpose",
                "Softmax", "Sigmoid", "Flatten", "Gemm", "Pad", "Shape", "ScatterND",
                "GatherND", "Concat", "Sub", "Div", "Identity"}


def _unused_initializers(model):
    """Initializers no node reads (the exported graphs have no subgraphs; checked)."""
    assert not any(a.HasField("g") or len(a.graphs) for n in model.graph.node for a in n.attribute)
    read = {name for n in model.graph.node for name in n.input}
    return [t.name for t in model.graph.initializer if t.name not in read]


def _unknown_shapes(model):
    """Tensors whose shape ONNX shape inference cannot give, the batch dimension aside."""
    unknown = []
    for value in onnx.shape_inference.infer_shapes(model).graph.value_info:
        dims = value.type.tensor_type.shape.dim
        if not dims or not all(d.HasField("dim_value") for d in dims[1:]):
            unknown.append(value.name)
    return unknown


def _net(name, overrides, seed=0):
    net = build(name, classes=10, **overrides)
    net.initialize()
    randomize(net, seed)
    return net


@pytest.mark.parametrize("name,overrides", CASES)
def test_onnxruntime_matches_mxnet(tmp_path, name, overrides):
    net = _net(name, overrides)
    path = export_onnx(net, str(tmp_path / f"{name}.onnx"), size=SIZE)
    model = onnx.load(path)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", ONNX_OPSET)]
    assert [i.name for i in model.graph.input] == ["data"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    ops = {n.op_type for n in model.graph.node}
    assert ops <= STANDARD_OPS, f"non-standard ONNX ops: {ops - STANDARD_OPS}"
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    radix = name.split("_")[-1][0] if "fast" in name else "2"
    assert ("Softmax" in ops) == (radix != "1") and ("Sigmoid" in ops) == (radix == "1")
    assert _unused_initializers(model) == []
    # onnxruntime fuses the residual Add and ReLU into its convolutions only where it knows
    # the shapes (MXNet's swapaxes exported as a dynamic Shape/ScatterND chain blocked it)
    assert _unknown_shapes(model) == []
    rng = np.random.RandomState(1)
    for batch in (1, 3):
        x = rng.normal(size=(batch, 3, SIZE, SIZE)).astype(np.float32)
        ref = net(mx.nd.array(x)).asnumpy()
        out = run_onnx(path, x)
        assert out.shape == ref.shape == (batch, 10)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_dynamic_spatial_and_resnest50(tmp_path, capfd):
    net = _net("resnest50", {}, seed=3)
    path = export_onnx(net, str(tmp_path / "r50.onnx"), size=SIZE, dynamic_spatial=True)
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[2].dim_value and not dims[3].dim_value
    # no unused weights: onnxruntime (warnings shown) has none to remove at session start
    assert _unused_initializers(model) == []
    capfd.readouterr()
    opts = ort.SessionOptions()
    opts.log_severity_level = 2
    ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    assert "Removing initializer" not in capfd.readouterr().err
    x = np.random.RandomState(2).normal(size=(2, 3, 96, 96)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, x), net(mx.nd.array(x)).asnumpy(),
                               rtol=0, atol=1e-4)


class _WithConstants(HybridBlock):
    """In-graph constants (``_full``, ``_ones``, ``_zeros``) and a ``BlockGrad``: a channel
    average written as a 1x1 convolution with fixed weights, plus constant offsets."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.conv = nn.Conv2D(4, 3, padding=1, in_channels=3)

    def hybrid_forward(self, F, x):
        avg = F.full((4, 4, 1, 1), 0.25)
        y = F.Convolution(F.BlockGrad(self.conv(x)), avg, kernel=(1, 1), num_filter=4,
                          no_bias=True)
        return F.broadcast_add(F.broadcast_add(y, F.ones((1, 4, 1, 1))), F.zeros((1, 4, 1, 1)))


def test_fold_constants_turns_constants_into_parameters(tmp_path):
    net = _WithConstants()
    net.initialize(mx.init.Normal(0.5))
    x = mx.nd.array(np.random.RandomState(5).normal(size=(2, 3, 8, 8)).astype(np.float32))
    ref = net(x).asnumpy()
    prefix = str(tmp_path / "m")
    sym_file, _ = export_symbol(net, prefix, size=8, fold=False)
    ops = [n["op"] for n in json.load(open(sym_file))["nodes"]]
    assert {"_full", "_ones", "_zeros", "BlockGrad"} <= set(ops)
    assert fold_constants(prefix) == 4                  # three constants, one identity
    nodes = json.load(open(sym_file))["nodes"]
    assert not {n["op"] for n in nodes} & {"_full", "_zeros", "_ones", "BlockGrad"}
    params = mx.nd.load(f"{prefix}-0000.params")
    full = [k for k in params if "full" in k]
    assert len(full) == 1 and np.all(params[full[0]].asnumpy() == 0.25)
    np.testing.assert_allclose(load_symbol(prefix)(x).asnumpy(), ref, rtol=0, atol=1e-5)
    assert fold_constants(prefix) == 0                  # nothing left to fold
    path = export_onnx(net, str(tmp_path / "m.onnx"), size=8)   # needs the weights as params
    np.testing.assert_allclose(run_onnx(path, x.asnumpy()), ref, rtol=0, atol=1e-5)


def test_resnest_export_keeps_outputs(tmp_path):
    net = _net("resnest14", {}, seed=4)
    sym_file, params_file = export_symbol(net, str(tmp_path / "m"), size=SIZE)
    ops = {n["op"] for n in json.load(open(sym_file))["nodes"]}
    assert not ops & {"_full", "_zeros", "_ones", "BlockGrad"}
    x = mx.nd.array(np.random.RandomState(5).normal(size=(2, 3, 80, 80)).astype(np.float32))
    np.testing.assert_allclose(load_symbol(str(tmp_path / "m"))(x).asnumpy(),
                               net(x).asnumpy(), rtol=0, atol=1e-5)


def test_cli_export_onnx_and_symbol(tmp_path, capsys):
    params = tmp_path / "r14.params"
    net = _net("resnest14", {}, seed=6)
    net.save_parameters(str(params))
    out = tmp_path / "r14"
    assert main(["export", "resnest14", "--params", str(params), "--classes", "10",
                 "--format", "onnx", "--size", "64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}.onnx (ONNX opset 13" in text and "max |diff|" in text
    assert main(["export", "resnest14", "--params", str(params), "--classes", "10",
                 "--size", "64", "--out", str(out)]) == 0
    assert (tmp_path / "r14-symbol.json").is_file() and "check: reloaded vs the source" in \
        capsys.readouterr().out
    # an exported prefix is a valid MODEL too: its ONNX file lands beside it, at the size
    # its metadata records (64, not the variant's 224), with that metadata inside
    (tmp_path / "r14.onnx").unlink()
    assert main(["export", str(out), "--format", "onnx"]) == 0
    assert f"wrote {out}.onnx (ONNX opset 13, input 'data' (batch, 3, 64, 64)" in \
        capsys.readouterr().out
    model = onnx.load(str(tmp_path / "r14.onnx"))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:]] == [64, 64]
    record = json.loads({p.key: p.value for p in model.metadata_props}["gluon_resnest"])
    assert (record["variant"], record["input_size"], record["num_classes"]) == \
        ("resnest14", 64, 10)


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", "resnest14"]) == 2
    assert "give the weights" in capsys.readouterr().err
    assert main(["export", "resnest14", "--random", "--int8", "--format", "onnx"]) == 2
    assert "--format symbol" in capsys.readouterr().err
    assert main(["export", "resnest14", "--random", "--calib", "generated"]) == 2
    assert "--calib applies to --int8" in capsys.readouterr().err
    assert main(["export", "resnest14", "--random", "--size", "16"]) == 2
    assert "smaller than the network's total stride 32" in capsys.readouterr().err
    assert main(["export", "resnest14", "--random", "--out", str(tmp_path / "no" / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_uninitialised_net_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not initialised"):
        export_onnx(build("resnest14"), str(tmp_path / "x.onnx"))
    with pytest.raises(TypeError, match="HybridBlock"):
        export_onnx(object(), str(tmp_path / "x.onnx"))
