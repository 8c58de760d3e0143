"""The model artifact: every export writes its metadata, every reader uses it.

The demo is trained once (configs/demo.yaml for 5 of its 10 epochs: about 99 % top-1 on the
360 validation digits, 32 px, mean/std 0.5 -- far from the ImageNet defaults a reader would
fall back to). Its export is then re-exported with no flags but the conversion (symbol, INT8
calibrated on a folder of digit PNGs, BF16 where the CPU has it, ONNX), and each re-export is
evaluated and used for prediction with no flags at all: the metadata alone must carry the
preprocessing. Reference: the FP32 export's own accuracy and predictions.
"""
import io
import json
import os
import re
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import numpy as np
import pytest

from gluon_resnest import cli
from gluon_resnest.deploy import artifact as art
from gluon_resnest.deploy.bf16 import bf16_support
from gluon_resnest.train.inference import load

DEMO_EPOCHS = 5
PREDICT_PER_CLASS = 3


def gr(*argv):
    """Run ``gluon-resnest ARGV`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def top1(text):
    return float(re.search(r"top-1 ([\d.]+)%", text).group(1))


def predictions(text):
    """{file: top-1 label} from ``predict`` output."""
    lines = text.strip().split("\n")
    return {lines[i]: re.match(r"\s+1\. (\S+)", lines[i + 1]).group(1)
            for i in range(0, len(lines), 6)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifact")
    run = root / "run"
    code, text, err = gr("train", "--out", run, f"optim.epochs={DEMO_EPOCHS}",
                         "run.progress=false")
    assert code == 0, err
    assert gr("demo-data", root / "digits")[0] == 0
    files = sorted(str(p) for c in range(10)
                   for p in sorted((root / "digits" / "val" / str(c)).glob("*.png"))
                   [:PREDICT_PER_CLASS])
    prefix = run / "export" / "model"
    code, text, err = gr("eval", prefix, "--data", "demo")
    assert code == 0, err
    code, pred, err = gr("predict", prefix, *files)
    assert code == 0, err
    return SimpleNamespace(root=root, run=run, prefix=prefix, files=files, top1=top1(text),
                           predictions=predictions(pred))


@pytest.fixture(scope="module")
def reexports(demo):
    """Re-exports of the train export: {kind: (model path, export stdout) or skip reason}."""
    out = {}
    again = demo.root / "again"
    again.mkdir()
    jobs = {"symbol": (["--out", again / "model"], again / "model"),
            "int8": (["--int8", "--calib", demo.root / "digits" / "train"],
                     f"{demo.prefix}-int8"),
            "onnx": (["--format", "onnx"], f"{demo.prefix}.onnx")}
    ok, reason = bf16_support()
    if ok:
        jobs["bf16"] = (["--bf16"], f"{demo.prefix}-bf16")
    else:
        out["bf16"] = f"BF16 needs oneDNN bfloat16 kernels: {reason}"
    for kind, (flags, path) in jobs.items():
        code, text, err = gr("export", demo.prefix, *flags)
        assert code == 0, f"{kind}: {err}"
        out[kind] = (str(path), text)
    return out


def _get(reexports, kind):
    value = reexports[kind]
    if isinstance(value, str):
        pytest.skip(value)
    return value


def test_the_demo_export_is_a_real_classifier(demo):
    assert demo.top1 >= 97.0, demo.top1
    right = sum(label == os.path.basename(os.path.dirname(f))
                for f, label in demo.predictions.items())
    assert right >= 0.9 * len(demo.files)


@pytest.mark.parametrize("kind", ["symbol", "int8", "bf16", "onnx"])
def test_reexport_evaluates_like_the_source_without_flags(demo, reexports, kind):
    path, _ = _get(reexports, kind)
    code, text, err = gr("eval", path, "--data", "demo")
    assert code == 0, err
    assert "resize to 32 (crop_pct 1.000), centre crop 32, bilinear, mean (0.5, 0.5, 0.5)" \
        in text
    assert abs(top1(text) - demo.top1) <= 1.0, (kind, top1(text), demo.top1)
    assert "note:" not in err                     # nothing was assumed


@pytest.mark.parametrize("kind", ["symbol", "int8", "bf16", "onnx"])
def test_reexport_predicts_like_the_source(demo, reexports, kind):
    path, _ = _get(reexports, kind)
    code, text, err = gr("predict", path, *demo.files)
    assert code == 0, err
    assert predictions(text) == demo.predictions


@pytest.mark.parametrize("kind", ["symbol", "int8", "bf16", "onnx"])
def test_reexport_keeps_the_metadata(demo, reexports, kind):
    path, _ = _get(reexports, kind)
    source = art.read_meta(str(demo.prefix)).to_dict()
    meta = load(path).meta.to_dict()
    want = {**source, "precision": kind if kind in ("int8", "bf16") else "fp32",
            "format": "onnx" if kind == "onnx" else "symbol"}
    details, source_details = meta.pop("details"), want.pop("details")
    assert meta == want
    int8 = details.pop("int8", None)
    assert details == source_details                   # best epoch, model kwargs
    if kind == "int8":
        assert int8["calibration"].endswith("train") and int8["num_calib"] == 64


def test_onnx_file_carries_the_metadata_beside_its_input(demo, reexports):
    onnx = pytest.importorskip("onnx", reason="needs the onnx extra")
    path, text = _get(reexports, "onnx")
    assert os.path.dirname(path) == str(demo.prefix.parent)      # beside the input, not cwd
    assert f"wrote {path} (ONNX opset 13, input 'data' (batch, 3, 32, 32)" in text
    model = onnx.load(path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 32, 32]                                    # the model's own size
    props = {p.key: p.value for p in model.metadata_props}
    record = json.loads(props[art.ONNX_META_KEY])
    assert record["input_size"] == 32 and record["mean"] == [0.5, 0.5, 0.5]
    assert record["classes"] == [str(c) for c in range(10)] and record["format"] == "onnx"
    code, text, err = gr("eval", path, "--data", "demo")
    assert code == 0 and text.startswith(f"model: ONNX model {path}"), err


def test_flags_override_the_metadata(demo, reexports):
    out = demo.root / "sized"
    code, text, err = gr("export", demo.prefix, "--size", "48", "--out", out)
    assert code == 0, err
    meta = art.read_meta(str(out))
    assert meta.input_size == 48
    assert (meta.crop_pct, meta.mean, meta.std) == (1.0, (0.5,) * 3, (0.5,) * 3)
    code, text, err = gr("eval", out, "--data", "demo", "--size", "40")
    assert code == 0 and "resize to 40 (crop_pct 1.000), centre crop 40" in text, err


def test_python_loader_accepts_every_form(demo, reexports):
    x = np.stack([load(str(demo.prefix)).preprocess(np.zeros((32, 32, 3), np.uint8))] * 2)
    ref = load(str(demo.prefix))(x)
    forms = [str(demo.prefix), f"{demo.prefix}-symbol.json", str(demo.run),
             str(demo.run / "best.ckpt")]
    if not isinstance(reexports["onnx"], str):
        forms.append(reexports["onnx"][0])
    for form in forms:
        model = load(form)
        assert model.meta.input_size == 32 and model.classes == [str(c) for c in range(10)]
        out = model(x)
        assert out.dtype == np.float32 and out.shape == (2, 10)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4, err_msg=form)
    variant = load("resnest14", random_init=True, classes=10)
    assert variant.meta.input_size == 224 and variant.meta.interpolation == "bilinear"
    assert variant.meta.classes is None and variant.classes[:2] == ["0", "1"]


def test_eval_of_a_run_folder_uses_the_exported_epoch_and_says_so(demo):
    code, text, err = gr("eval", demo.run, "--data", "demo")
    assert code == 0, err
    best = json.loads(open(f"{demo.prefix}-meta.json").read())["details"]["epoch"]
    assert re.search(rf"run folder .*: best\.ckpt, epoch {best} .*the epoch exported to", text)
    assert top1(text) == pytest.approx(demo.top1, abs=0.01)


def test_bf16_artifact_takes_float32_input(demo, reexports):
    path, _ = _get(reexports, "bf16")
    model = load(path)
    assert model.meta.precision == "bf16"
    x = np.random.RandomState(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    out = model(x)
    assert out.dtype == np.float32
    ref = load(str(demo.prefix))(x)
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_files_without_metadata_say_what_is_assumed(demo, tmp_path):
    for end in ("-symbol.json", "-0000.params"):
        shutil.copy(f"{demo.prefix}{end}", tmp_path / f"bare{end}")
    code, text, err = gr("eval", tmp_path / "bare", "--data", "demo")
    assert code == 0
    assert "bare-meta.json does not exist: assuming the ImageNet defaults" in err
    assert "centre crop 224" in text                  # what was assumed, shown
    code, text, err = gr("eval", tmp_path / "bare", "--data", "demo", "--size", "32",
                         "--crop-pct", "1", "--mean", ".5", ".5", ".5", "--std", ".5", ".5", ".5")
    assert code == 0 and "resize to 32 (crop_pct 1.000)" in text
    assert top1(text) == pytest.approx(demo.top1, abs=0.01)     # the flags recover it


def test_first_format_metadata_is_read(demo, tmp_path):
    """Run folders written before the schema carry {variant, classes, data}."""
    for end in ("-symbol.json", "-0000.params"):
        shutil.copy(f"{demo.prefix}{end}", tmp_path / f"old{end}")
    (tmp_path / "old-meta.json").write_text(json.dumps({
        "variant": "resnest14", "classes": [str(c) for c in range(10)],
        "data": {"test_size": 32, "crop_pct": 1.0, "interpolation": "bilinear",
                 "mean": [0.5] * 3, "std": [0.5] * 3}}))
    code, text, err = gr("eval", tmp_path / "old", "--data", "demo")
    assert code == 0 and top1(text) == pytest.approx(demo.top1, abs=0.01), err


def test_export_refuses_what_cannot_work(demo, reexports, tmp_path):
    int8, _ = _get(reexports, "int8")
    code, _, err = gr("export", int8, "--format", "onnx", "--out", tmp_path / "x")
    assert code == 2 and "is already int8: export its FP32 source" in err
    code, _, err = gr("export", int8, "--bf16", "--out", tmp_path / "x")
    assert code == 2 and "is already int8" in err
    code, _, err = gr("export", demo.prefix)
    assert code == 2 and "would overwrite the input" in err
    if not isinstance(reexports["onnx"], str):
        code, _, err = gr("export", reexports["onnx"][0], "--int8", "--out", tmp_path / "y")
        assert code == 2 and "runs in onnxruntime and cannot be converted" in err
    code, _, err = gr("export", demo.prefix, "--params", "w.params")
    assert code == 2 and "apply to a variant name" in err
    bad = tmp_path / "bad-meta.json"
    for end in ("-symbol.json", "-0000.params"):
        shutil.copy(f"{demo.prefix}{end}", tmp_path / f"bad{end}")
    bad.write_text(json.dumps({**art.read_meta(str(demo.prefix)).to_dict(),
                               "interpolation": "lanczos"}))
    code, _, err = gr("eval", tmp_path / "bad", "--data", "demo")
    assert code == 2 and "interpolation must be one of" in err and "lanczos" in err


def test_onnx_without_onnxruntime_names_the_extra(demo, reexports, monkeypatch):
    path, _ = _get(reexports, "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = gr("eval", path, "--data", "demo")
    assert code == 2 and "onnxruntime" in err and "gluon_resnest[onnx]" in err
