"""Bad input on the command line: one line naming the value and what was expected, exit
status 1 or 2, no traceback, and before long work (loading, calibration, training) starts.

The model is the demo trained for one epoch (its accuracy does not matter here).
"""
import io
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from gluon_resnest import cli


def gr(*argv):
    """Run ``gluon-resnest ARGV`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_clean_error(code, err, *needles, status=(2,)):
    assert code in status, err
    assert "Traceback" not in err and "MXNetError" not in err, err
    for n in needles:
        assert n in err, err


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    code, _, err = gr("train", "--out", root / "run", "optim.epochs=1", "run.progress=false")
    assert code == 0, err
    assert gr("demo-data", root / "digits")[0] == 0
    files = sorted(str(p) for p in (root / "digits" / "val" / "0").glob("*.png"))[:2]
    blocker = root / "a_file"
    blocker.write_text("not a folder")
    return SimpleNamespace(root=root, prefix=root / "run" / "export" / "model", files=files,
                           blocker=blocker)


# -- 1. output folders that cannot be written ------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--int8"], ["--format", "onnx"], ["--bf16"]])
def test_export_into_a_path_under_a_file_fails_before_work(demo, flags):
    out = demo.blocker / "sub" / "model"
    t0 = time.time()
    code, _, err = gr("export", demo.prefix, *flags, "--out", out)
    assert_clean_error(code, err, f"{demo.blocker}' is a file, not a folder",
                       str(demo.blocker / "sub"))
    assert time.time() - t0 < 10      # INT8 calibration (about 25 s) never started
    assert not list(demo.root.glob("**/model-int8*"))


def test_export_into_a_missing_folder(demo):
    code, _, err = gr("export", demo.prefix, "--out", demo.root / "nope" / "model")
    assert_clean_error(code, err, "output folder", "does not exist")


def test_train_into_a_path_under_a_file_fails_before_training(demo):
    code, out, err = gr("train", "--out", demo.blocker / "run", "optim.epochs=1",
                        "run.progress=false")
    assert_clean_error(code, err, "run folder", f"{demo.blocker}' is a file, not a folder")
    assert "epoch" not in out


# -- 2. summary --size -----------------------------------------------------------------------
@pytest.mark.parametrize("size, expected", [
    (8, "input size 8 is smaller than the network's total stride 32"),
    (-1, "--size must be a positive int (pixels), got -1"),
    (0, "--size must be a positive int (pixels), got 0"),
])
def test_summary_bad_size(size, expected):
    code, out, err = gr("summary", "resnest50", f"--size={size}")
    assert_clean_error(code, err, expected)
    assert out == ""


def test_summary_size_check_from_the_console():
    """The installed entry point: status 2 and one line, no MXNet traceback."""
    r = subprocess.run([sys.executable, "-m", "gluon_resnest", "summary", "resnest50",
                        "--size", "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "gluon-resnest summary: error: input size 8 is smaller than the network's total "
        "stride 32: use a size >= 32"]


def test_summary_smallest_valid_size_runs():
    code, out, err = gr("summary", "resnest50", "--size", "32")
    assert code == 0, err
    assert "resnest50 at 32x32" in out


# -- 3. predict ------------------------------------------------------------------------------
@pytest.mark.parametrize("topk", [0, -3])
def test_predict_topk_must_be_positive(demo, topk):
    code, out, err = gr("predict", demo.prefix, demo.files[0], f"--topk={topk}")
    assert_clean_error(code, err, "--topk must be a positive int", f"got {topk}")
    assert out == ""


def test_predict_reports_bad_files_and_predicts_the_rest(demo):
    bad = demo.root / "broken.png"
    bad.write_bytes(b"junk")
    missing = demo.root / "missing.png"
    code, out, err = gr("predict", demo.prefix, demo.files[0], bad, missing, demo.files[1],
                        "--topk", "2")
    assert_clean_error(code, err, f"cannot decode image {bad}", f"image '{missing}' does not "
                       f"exist", "2 of 4 file(s) could not be read", status=(1,))
    lines = out.splitlines()
    assert [ln for ln in lines if not ln.startswith("  ")] == demo.files
    assert len(lines) == 2 * 3      # two files, a name and two rows each


def test_predict_reads_a_gif_as_its_first_frame(demo):
    png = demo.files[0]
    gif = demo.root / "digit.gif"
    first = Image.open(png).convert("RGB")
    other = Image.new("RGB", first.size, (255, 0, 0))
    first.save(gif, save_all=True, append_images=[other])
    code, out_gif, err = gr("predict", demo.prefix, gif)
    assert code == 0, err
    # reference: the first frame as written in the GIF (palette-quantised), saved as PNG
    ref = demo.root / "frame0.png"
    with Image.open(gif) as im:
        im.seek(0)
        frame = im.convert("RGB")
    frame.save(ref)
    code, out_ref, err = gr("predict", demo.prefix, ref)
    assert code == 0, err
    assert out_gif.splitlines()[1:] == out_ref.splitlines()[1:]
    assert np.asarray(frame).shape == np.asarray(first).shape


def test_predict_on_a_detection_artifact_is_refused(demo):
    det = demo.root / "det"
    det.mkdir()
    for suffix in ("-symbol.json", "-0000.params"):
        shutil.copy(f"{demo.prefix}{suffix}", det / f"model{suffix}")
    with open(f"{demo.prefix}-meta.json") as f:
        meta = json.load(f)
    meta["task"] = "detection"
    (det / "model-meta.json").write_text(json.dumps(meta))
    code, out, err = gr("predict", det / "model", demo.files[0])
    assert_clean_error(code, err, "predict is for classifiers", "detection model",
                       "expected 'classification'")
    assert out == ""


# -- 4. eval ---------------------------------------------------------------------------------
def test_eval_corrupt_image_names_its_own_flag(demo):
    data = demo.root / "val_corrupt"
    shutil.copytree(demo.root / "digits" / "val", data)
    (data / "3" / "zz_broken.png").write_bytes(b"junk")
    code, _, err = gr("eval", demo.prefix, "--data", data)
    assert_clean_error(code, err, "zz_broken.png", "add --on-corrupt skip")
    assert "data.on_corrupt" not in err
    code, out, err = gr("eval", demo.prefix, "--data", data, "--on-corrupt", "skip")
    assert code == 0, err
    assert "skipped 1 unreadable image(s)" in out


def test_eval_class_mismatch_shows_the_difference(demo):
    data = demo.root / "val_renamed"
    shutil.copytree(demo.root / "digits" / "val", data)
    os.rename(data / "9", data / "nine")
    code, _, err = gr("eval", demo.prefix, "--data", data)
    assert_clean_error(code, err, "only the data has 'nine'", "only the model has '9'")


def test_predict_with_no_readable_file_is_status_2(demo):
    code, out, err = gr("predict", demo.prefix, demo.root / "nope.png")
    assert_clean_error(code, err, "image '", "nope.png' does not exist",
                       "1 of 1 file(s) could not be read")
    assert out == ""
