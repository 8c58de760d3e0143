"""What a training run prints and keeps: no progress-bar frames in captured output, no MXNet
notes we cause, a train.log in the run folder, the config printed compactly."""
import os
import re
import subprocess
import sys

import pytest

from gluon_resnest.train import config as C
from gluon_resnest.train.loop import PoolingNoteFilter, RunLog, drop_stderr_lines

TINY = ["model.kwargs={bottleneck_width: 8, stem_width: 8}", "data.limit=96",
        "optim.batch_size=32", "optim.epochs=2", "run.export=false"]
POOLING_NOTE = PoolingNoteFilter.NOTE.decode()


def _train(*argv, timeout=600):
    """``gluon-resnest train ARGV`` in a subprocess with its output piped (as in a log file)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "gluon_resnest", "train", *argv],
                          capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def _log_lines(out):
    with open(os.path.join(out, "train.log"), encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.mark.slow
def test_classification_output_captured_has_no_bar_frames_and_a_train_log(tmp_path):
    out = str(tmp_path / "run")
    stdout, stderr = _train("--out", out, *TINY)      # run.progress is true (the default)
    assert "\r" not in stdout and "\r" not in stderr
    assert "%|" not in stderr                           # no tqdm frame either
    assert POOLING_NOTE not in stderr
    epoch_lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert [line[:10] for line in epoch_lines] == ["epoch 1/2:", "epoch 2/2:"]
    lines = _log_lines(out)
    for line in epoch_lines:                            # what the trainer printed, in order
        assert line in lines
    assert lines.index(epoch_lines[0]) < lines.index(epoch_lines[1])
    assert lines[1].startswith("resolved config: ")
    assert lines[-1].startswith("finished after epoch 2 of 2 in ")


@pytest.mark.slow
def test_segmentation_output_captured_is_clean_and_logged(tmp_path):
    out = str(tmp_path / "seg")
    stdout, stderr = _train("-c", "segmentation/shapes_deeplab", "--out", out,
                            "data.image_size=64", "data.base_size=64", "data.crop_size=64",
                            "data.num_train=4", "data.num_val=2", "train.iterations=3")
    assert "\r" not in stdout + stderr and POOLING_NOTE not in stderr
    assert "Cannot decide type" not in stderr
    done = [line for line in stdout.splitlines() if line.startswith("[segmentation] done:")]
    assert len(done) == 1
    assert _log_lines(out)[-1] == done[0]


def test_run_log_appends_sessions_and_records_the_error(tmp_path):
    path = str(tmp_path / "later" / "train.log")
    printed = []
    with RunLog(path, printed.append) as log:
        log("epoch 1")
        log.note("file only")
    with pytest.raises(RuntimeError), RunLog(path, printed.append) as log:
        log("resumed")
        raise RuntimeError("loss became nan")
    lines = open(path, encoding="utf-8").read().splitlines()
    assert printed == ["epoch 1", "resumed"]
    assert [line for line in lines if not line.startswith("# ")] == \
        ["epoch 1", "file only", "resumed", "stopped: RuntimeError: loss became nan"]
    assert sum(line.startswith("# ") for line in lines) == 2      # one header per session


def test_drop_stderr_lines_drops_only_the_matching_native_lines(capfd):
    with drop_stderr_lines(b"NOISE"):
        os.write(2, b"keep me\n[12:00:00] pooling.cc:58: NOISE here\nkeep too\n")
    os.write(2, b"NOISE after the block passes\n")
    assert capfd.readouterr().err == "keep me\nkeep too\nNOISE after the block passes\n"


def test_pooling_filter_only_wraps_new_shapes(capfd):
    note = PoolingNoteFilter()
    for shape in ((2, 3), (2, 3), (1, 3)):
        with note(shape):
            os.write(2, PoolingNoteFilter.NOTE + b"\n")
    assert capfd.readouterr().err == POOLING_NOTE + "\n"       # the repeated shape's only


@pytest.mark.parametrize("name,task", [("demo", None), ("imagenet/resnest50", None),
                                       ("segmentation/shapes_deeplab", None), (None, "detection")])
def test_compact_config_names_the_changes_and_reads_back(name, task):
    cfg = C.load_config(name, task=task)
    cfg["run"]["out"] = os.path.join("runs", "x")
    text = C.format_config(cfg, compact=True)
    lines = text.splitlines()
    assert os.path.join("runs", "x", "config.yaml") in lines[0]
    assert all(len(line) <= 100 for line in lines[1:])
    assert len(lines) < 12
    # the printed key=value pairs, applied to the task's defaults, give the config back
    # a value may hold spaces ({a: 1, b: 2}); each pair starts with a dotted key and "="
    pairs = re.split(r" (?=[a-z_]+\.[a-z_.]+=)", " ".join(line.strip() for line in lines[1:]))
    pairs = [p for p in pairs if p]
    raw = C.apply_overrides({"task": cfg["task"]}, [C.parse_override(p) for p in pairs])
    raw.setdefault("run", {}).update(out=cfg["run"]["out"], name=cfg["run"]["name"])
    assert C.resolve(raw) == cfg
    if name == "demo":
        assert "model.name=resnest14" in text and "optim.lr=0.05" in text
        assert "optim.momentum" not in text                    # the default's
