"""deploy.runtimes: one model in MXNet, onnxruntime and OpenVINO.

Reference: the same weights run by MXNet FP32 (``LoadedModel``), in the same process. Every
installed runtime's FP32 logits must equal it to 1e-4 relative (largest |difference| over the
largest |logit|); BF16 (fewer mantissa bits) to 3e-2 relative. Runtimes that are not installed
are skipped with the reason; "missing" is also simulated by making the import fail.
"""
import io
import json
import re
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from gluon_resnest import cli
from gluon_resnest._compat.extras import MissingExtraError
from gluon_resnest.deploy import runtimes as rt
from gluon_resnest.deploy.artifact import load_variant
from gluon_resnest.deploy.bf16 import bf16_support
from gluon_resnest.train.inference import load

FP32_TOL = 1e-4
BF16_TOL = 3e-2
SIZE = 64


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def needs(runtime):
    return pytest.mark.skipif(not rt.installed(runtime), reason=f"{runtime} is not installed")


def gr(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small():
    """resnest14 with random weights at 64 px, 10 classes, and a batch of 3."""
    model = load_variant("resnest14", random_init=True, classes=10)
    model.meta = model.meta.updated(input_size=SIZE)
    x = np.random.RandomState(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    return model, x, model(x)


@pytest.mark.parametrize("runtime", ["mxnet", pytest.param("onnxruntime", marks=needs(
    "onnxruntime")), pytest.param("openvino", marks=needs("openvino"))])
def test_fp32_logits_equal_mxnet(small, runtime):
    model, x, ref = small
    p = rt.load_predictor(model, runtime, "fp32")
    assert (p.runtime, p.precision) == (runtime, "fp32")
    assert p.meta.transform == model.meta.transform       # the artifact's preprocessing
    y = p(x)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert rel(y, ref) <= FP32_TOL, rel(y, ref)
    assert rel(p(x[:1]), ref[:1]) <= FP32_TOL               # another batch size


def test_auto_rule_without_measuring(small, monkeypatch):
    monkeypatch.setenv("GLUON_RESNEST_AUTO", "rule")
    model, x, ref = small
    p = rt.load_predictor(model, "auto")
    expected = ("openvino" if rt.installed("openvino") else
                "onnxruntime" if rt.installed("onnxruntime") else "mxnet")
    assert (p.runtime, p.precision) == (expected, "fp32")
    assert rel(p(x), ref) <= FP32_TOL
    assert rt.auto_runtime("int8") == "mxnet"
    assert rt.auto_runtime("bf16") == ("openvino" if rt.openvino_bf16()[0] else "mxnet")


def _slowed(monkeypatch, slow):
    """Make the predictors of the runtimes in ``slow`` take 0.1 s more per call."""
    real = rt._build

    def build(model, runtime, precision, onnx_path=None):
        p = real(model, runtime, precision, onnx_path)
        if runtime in slow:
            inner = p._run
            p._run = lambda x: (time.sleep(0.1), inner(x))[1]
        return p
    monkeypatch.setattr(rt, "_build", build)


@needs("onnxruntime")
def test_auto_measures_picks_the_fastest_and_caches(small, monkeypatch, tmp_path):
    monkeypatch.setenv("GLUON_RESNEST_CACHE", str(tmp_path))
    model, x, ref = small
    others = [r for r in ("onnxruntime", "openvino") if rt.installed(r)]
    _slowed(monkeypatch, others)
    p = rt.load_predictor(model, "auto", "fp32")
    assert p.runtime == "mxnet" and rel(p(x), ref) == 0.0
    assert any("measured at batch 1" in n and "picked mxnet" in n for n in p.notes), p.notes
    cache = json.loads((tmp_path / "auto_runtime.json").read_text())
    (entry,) = cache.values()
    assert entry["runtime"] == "mxnet" and set(entry["images_per_s_bs1"]) == {"mxnet", *others}

    # cached: taken at once, even though MXNet is now the slow one
    _slowed(monkeypatch, ["mxnet"])
    monkeypatch.setattr(rt, "interleave", lambda *a, **k: pytest.fail("measured again"))
    assert rt.load_predictor(model, "auto", "fp32").runtime == "mxnet"

    # a new cache (another machine): measured again, and the ONNX runtimes win
    monkeypatch.undo()
    monkeypatch.setenv("GLUON_RESNEST_CACHE", str(tmp_path / "other"))
    _slowed(monkeypatch, ["mxnet"])
    p = rt.load_predictor(model, "auto", "fp32")
    assert p.runtime in others and rel(p(x), ref) <= FP32_TOL


@needs("onnxruntime")
def test_auto_survives_a_damaged_or_unwritable_cache(small, monkeypatch, tmp_path):
    model, x, ref = small
    (tmp_path / "auto_runtime.json").write_text("{not json")
    monkeypatch.setenv("GLUON_RESNEST_CACHE", str(tmp_path))
    p = rt.load_predictor(model, "auto", "fp32")
    assert rel(p(x), ref) <= FP32_TOL
    assert json.loads((tmp_path / "auto_runtime.json").read_text())      # rewritten
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("GLUON_RESNEST_CACHE", str(blocked / "sub"))     # cannot be created
    p = rt.load_predictor(model, "auto", "fp32")
    assert rel(p(x), ref) <= FP32_TOL
    assert any("not cached" in n for n in p.notes), p.notes


def test_auto_without_extras_is_mxnet(small, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)        # import openvino -> ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model, x, ref = small
    p = rt.load_predictor(model, "auto", "fp32")
    assert p.runtime == "mxnet"
    assert rel(p(x), ref) == 0.0


@pytest.mark.parametrize("runtime,extra", [("onnxruntime", "[onnx]"),
                                           ("openvino", "[openvino]")])
def test_missing_runtime_names_the_extra(small, monkeypatch, runtime, extra):
    monkeypatch.setitem(sys.modules, runtime, None)
    with pytest.raises(MissingExtraError, match=re.escape(f'gluon_resnest{extra}')):
        rt.load_predictor(small[0], runtime, "fp32")


@pytest.mark.parametrize("runtime,precision,match", [
    ("onnxruntime", "bf16", "runtime 'onnxruntime' has no bf16; supported: mxnet: fp32, bf16, "
                            "int8; onnxruntime: fp32; openvino: fp32, bf16"),
    ("openvino", "int8", "runtime 'openvino' has no int8"),
    ("tensorrt", "fp32", "runtime must be one of auto, mxnet, onnxruntime, openvino, got "
                         "'tensorrt'"),
    ("mxnet", "fp16", "precision must be one of fp32, bf16, int8, got 'fp16'")])
def test_bad_combinations_are_clear_errors(small, runtime, precision, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        rt.load_predictor(small[0], runtime, precision)
    with pytest.raises(ValueError, match=re.escape(match)):   # before any loading
        load("no-such-model.ckpt", runtime=runtime, precision=precision)


@needs("openvino")
def test_openvino_bf16(small):
    ok, reason = rt.openvino_bf16()
    if not ok:
        with pytest.raises(RuntimeError, match="OpenVINO BF16 is not available here"):
            rt.load_predictor(small[0], "openvino", "bf16")
        pytest.skip(f"no native BF16 for OpenVINO here: {reason}")
    model, x, ref = small
    p = rt.load_predictor(model, "openvino", "bf16")
    assert (p.runtime, p.precision) == ("openvino", "bf16")
    assert rel(p(x), ref) <= BF16_TOL, rel(p(x), ref)


def test_mxnet_bf16(small):
    ok, reason = bf16_support()
    if not ok:
        pytest.skip(f"MXNet has no BF16 here: {reason}")
    model, x, ref = small
    p = rt.load_predictor(model, "mxnet", "bf16")
    assert (p.runtime, p.precision, p.meta.precision) == ("mxnet", "bf16", "bf16")
    assert rel(p(x), ref) <= BF16_TOL, rel(p(x), ref)


_SIGNAL_AFTER_OPENVINO = """
import os, signal
import numpy as np
from gluon_resnest.deploy import runtimes as rt
from gluon_resnest.deploy.artifact import load_variant
model = load_variant("resnest14", random_init=True, classes=10)
model.meta = model.meta.updated(input_size=32)
x = np.zeros((1, 3, 32, 32), np.float32)
p = rt.load_predictor(model, "openvino", "fp32")
p(x)
p = rt.load_predictor(model, "openvino", "fp32")   # releases the first one
p(x)
del p
caught = []
signal.signal(signal.SIGINT, lambda *a: caught.append(a[0]))
os.kill(os.getpid(), signal.SIGINT)
print("caught", caught)
"""


@needs("openvino")
def test_signals_still_work_after_openvino_releases_a_model():
    # OpenVINO's CPU plugin can leave the thread an unmapped alternate signal stack when a
    # compiled model is released; the next signal was a SIGSEGV (_compat/openvino.py)
    run = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _SIGNAL_AFTER_OPENVINO],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "caught [2]" in run.stdout, (run.returncode, run.stderr[-2000:])

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo trained for one epoch (enough for a classifier to compare runtimes on), its
    FP32 export and an ONNX export of it."""
    root = tmp_path_factory.mktemp("runtimes")
    code, _, err = gr("train", "--out", root / "run", "optim.epochs=1", "run.progress=false")
    assert code == 0, err
    prefix = root / "run" / "export" / "model"
    code, _, err = gr("export", prefix, "--format", "onnx")
    assert code == 0, err
    return prefix


def _top1(text):
    return float(re.search(r"top-1 ([\d.]+)%", text).group(1))


@needs("onnxruntime")
def test_eval_with_onnxruntime_matches_mxnet(demo):
    code, ref, err = gr("eval", demo, "--data", "demo", "--runtime", "mxnet")
    assert code == 0, err
    assert "runtime: mxnet fp32" in ref
    for model in (demo, f"{demo}.onnx"):
        code, text, err = gr("eval", model, "--data", "demo", "--runtime", "onnxruntime")
        assert code == 0, err
        assert "runtime: onnxruntime fp32" in text
        assert _top1(text) == _top1(ref), (model, text, ref)


@needs("openvino")
def test_python_loader_runs_every_form_in_openvino(demo):
    ref_model = load(str(demo))
    x = np.stack([ref_model.preprocess(np.full((32, 32, 3), v, np.uint8)) for v in (0, 90, 255)])
    ref = ref_model(x)
    for form in (str(demo), f"{demo}.onnx", str(demo.parent.parent)):
        p = load(form, runtime="openvino", precision="fp32")
        assert p.runtime == "openvino" and p.meta.input_size == ref_model.meta.input_size
        assert rel(p(x), ref) <= FP32_TOL, form


def test_predict_takes_runtime_and_rejects_onnx_in_mxnet(demo, tmp_path):
    img = tmp_path / "x.png"
    import cv2
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    code, ref, err = gr("predict", demo, img)
    assert code == 0, err
    runtime = "auto" if (rt.installed("openvino") or rt.installed("onnxruntime")) else "mxnet"
    code, text, err = gr("predict", demo, img, "--runtime", runtime)
    assert code == 0, err
    assert text.splitlines()[1].split()[1] == ref.splitlines()[1].split()[1]   # same top-1
    code, _, err = gr("predict", f"{demo}.onnx", img, "--runtime", "mxnet")
    assert code != 0 and "runtime 'mxnet' cannot run the ONNX model" in err, err


def test_eval_int8_auto_runs_in_mxnet(demo):
    code, ref, err = gr("eval", demo, "--data", "demo")
    assert code == 0, err
    code, text, err = gr("eval", demo, "--data", "demo", "--precision", "int8")
    assert code == 0, err
    assert "runtime: mxnet int8" in text and "quantized to INT8" in err
    assert abs(_top1(text) - _top1(ref)) <= 3.0, (text, ref)     # 360 images: <= 11 flips


def test_cli_bad_combination_exits_before_loading(capsys):
    code, _, err = gr("eval", "no-such-model", "--data", "demo", "--runtime", "onnxruntime",
                      "--precision", "int8")
    assert code == 2 and "runtime 'onnxruntime' has no int8" in err, (code, err)
