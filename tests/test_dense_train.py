"""Detection/segmentation training: the recipes in configs/, and the safeguards it shares with
classification (run folder first, SIGINT/SIGTERM save, exact resume, NaN guard, validated
counts), in Python and through ``gluon-resnest train``. The long runs on the shapes set are in
test_dense_detection.py and test_dense_segmentation.py; the runs here use ResNeSt-14 at 64 px
on 4 generated images (a few seconds each)."""
import glob
import os
import re
import signal

import mxnet as mx
import numpy as np
import pytest
import yaml
from conftest import assert_resumed_run_matches, checkpoint_params, signal_when

from gluon_resnest import cli
from gluon_resnest.dense.registry import DENSE_MODELS, parse_dense_name
from gluon_resnest.deploy import artifact
from gluon_resnest.model.variants import VARIANTS
from gluon_resnest.train import checkpoint as ck
from gluon_resnest.train import config as C
from gluon_resnest.train import dense
from gluon_resnest.train.loop import NonFiniteLossError, TrainingInterrupted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
FILES = sorted(glob.glob(os.path.join(CONFIGS, "detection", "*.yaml"))
               + glob.glob(os.path.join(CONFIGS, "segmentation", "*.yaml")))
TASKS = ("detection", "segmentation")


def tiny(task, **train):
    """A config of ``task`` small enough for a few seconds of CPU."""
    data = {"num_train": 4, "num_val": 2, "image_size": 64}
    if task == "segmentation":
        data.update(base_size=64, crop_size=64)
    return {"task": task, "model": {"backbone": "resnest14"}, "data": data,
            "train": {"iterations": 6, "batch_size": 2, "log_interval": 0, "eval_before": False,
                      "export": False, **train}}


TINY_ARGS = ["--model", "resnest14", "data.num_train=4", "data.num_val=2", "data.image_size=64",
             "train.log_interval=0", "train.eval_before=false"]


def gr(capsys, *argv):
    """Run ``gluon-resnest ARGV`` in-process; returns (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def quiet(_line):
    pass


# -- the recipes ----------------------------------------------------------------------------
def test_there_are_recipes_for_every_data_set():
    names = {os.path.basename(p) for p in FILES}
    for expected in ("shapes_faster_rcnn.yaml", "shapes_mask_rcnn.yaml", "shapes_deeplab.yaml",
                     "coco_faster_rcnn_fpn_syncbn_resnest50.yaml",
                     "coco_mask_rcnn_fpn_syncbn_resnest50.yaml",
                     "voc_faster_rcnn_fpn_resnest50.yaml", "ade20k_deeplab_resnest269.yaml",
                     "citys_deeplab_resnest101.yaml"):
        assert expected in names


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_every_config_resolves_to_a_registered_recipe(path):
    cfg = C.load_config(path)
    task, model, data = cfg["task"], cfg["model"], cfg["data"]
    assert os.path.basename(os.path.dirname(path)) == task
    if data["dataset"] == "shapes":
        assert data["root"] is None and cfg["train"]["iterations"] <= 120
        return
    # real data sets: the recipe's model is one of the registered GluonCV names
    if task == "detection":
        sync = "_syncbn" if model["norm"] == "syncbn" else ""
        name = f"{model['arch'].replace('_fpn', '')}_fpn{sync}_{model['backbone']}_{data['dataset']}"
    else:
        suffix = {"ade20k": "ade", "citys": "citys"}[data["dataset"]]
        name = f"deeplab_{model['backbone']}_{suffix}"
        assert data["crop_size"] % 8 == 0 and model["norm"] == "syncbn"
    assert name in DENSE_MODELS, name
    parse_dense_name(name)


def test_real_data_sets_need_a_root_and_never_download(tmp_path):
    cfg = C.load_yaml(os.path.join(CONFIGS, "detection", "voc_faster_rcnn_fpn_resnest50.yaml"))
    with pytest.raises(FileNotFoundError, match="needs data.root"):
        dense.run(cfg, str(tmp_path / "a"), log=quiet)
    cfg = C.load_yaml(os.path.join(CONFIGS, "segmentation", "ade20k_deeplab_resnest50.yaml"))
    cfg["data"]["root"] = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        dense.run(cfg, str(tmp_path / "b"), log=quiet)


@pytest.mark.parametrize("cfg, err, match", [
    ({"task": "keypoints"}, ValueError, "'keypoints' is not one of"),
    ({"task": "detection", "trian": {}}, ValueError, "'trian' in config; did you mean train"),
    ({"task": "detection", "train": {"lr_rate": 1}}, ValueError, "'train.lr_rate'"),
    ({"task": "detection", "model": {"arch": "deeplab"}}, ValueError, "model.arch"),
    ({"task": "segmentation", "data": {"dataset": "coco"}}, ValueError, "data.dataset"),
    ({"task": "segmentation", "train": {"epochs": 2, "iterations": 3}}, ValueError,
     "exactly one"),
    ({"task": "detection", "train": {"batch_size": 0}}, ValueError, "batch_size"),
    ({"task": "detection", "train": {"iterations": -5}}, ValueError,
     "train.iterations: expected a positive integer, got -5"),
    ({"task": "detection", "data": 3}, TypeError, "mapping"),
])
def test_bad_configs(cfg, err, match, tmp_path):
    with pytest.raises(err, match=match):
        C.resolve(cfg)
    with pytest.raises(err, match=match):          # before anything is built or written
        dense.run(cfg, str(tmp_path / "run"), log=quiet)
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_the_data_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"train.batch_size 8 is larger than the training set "
                                         r"\(4 images\)"):
        dense.run(tiny("segmentation", batch_size=8), str(tmp_path), log=quiet)


# -- the safeguards -------------------------------------------------------------------------
@pytest.fixture(scope="module", params=TASKS)
def straight(request, tmp_path_factory):
    """Six iterations in one go (a checkpoint every two)."""
    task = request.param
    out = str(tmp_path_factory.mktemp(f"straight-{task}"))
    return task, out, dense.run(tiny(task, checkpoint_interval=2), out, log=quiet)


def test_sigint_saves_and_resume_continues_exactly(straight, tmp_path):
    """SIGINT after iteration 3 of 6: the loop finishes the iteration, saves and raises; the
    resumed run ends with the parameters of the uninterrupted one (same data order, random
    transforms, RoI sampling, optimizer state and schedule position). Tolerance: MXNet's CPU
    kernels may sum in another order with another thread count; at one thread they agree
    exactly."""
    task, out, full = straight
    assert full["iterations"] == 6 and ck.read_meta(full["checkpoint"])["iteration"] == 6

    def interrupt(event, trainer, info):
        if event == "iteration_end" and info["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    run_dir = str(tmp_path / "run")
    with pytest.raises(TrainingInterrupted, match=r"interrupted by SIGINT at iteration 3/6; "
                                                  r"checkpoint saved to .*last\.ckpt \(continue "
                                                  r"with: gluon-resnest train --resume ") as err:
        dense.run(tiny(task, checkpoint_interval=2), run_dir, callbacks=[interrupt], log=quiet)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # restored
    meta = ck.read_meta(err.value.checkpoint)
    assert (meta["task"], meta["iteration"], len(meta["history"])) == (task, 3, 3)
    with open(os.path.join(run_dir, "config.yaml")) as f:
        assert yaml.safe_load(f)["run"]["out"] == run_dir              # the real folder
    left = os.listdir(run_dir)
    assert {"config.yaml", "last.ckpt"} <= set(left) and not [f for f in left if f[0] == "."]

    lines = []
    resumed = dense.run(tiny(task, checkpoint_interval=2), run_dir, resume=run_dir,
                        log=lines.append)
    assert lines[0] == f"resumed from {err.value.checkpoint}: iteration 3 of 6"
    assert resumed["iterations"] == 6
    assert_resumed_run_matches(full, resumed)


@pytest.mark.parametrize("task", TASKS)
def test_a_huge_learning_rate_stops_and_keeps_the_last_good_checkpoint(task, tmp_path):
    """train.lr=1e20: the weights overflow after the first update and the loss turns NaN. The
    run stops with an error naming the checkpoint it keeps, written before the NaN losses,
    with finite weights. (Segmentation stops at the first NaN; detection skips isolated ones,
    as GluonCV's mask loss can be NaN for a batch without mask targets, and stops at three in
    a row.)"""
    with pytest.raises(NonFiniteLossError, match=r"the training loss became nan") as err:
        dense.run(tiny(task, lr=1e20, batch_size=1, checkpoint_interval=1), str(tmp_path),
                  log=quiet)
    message = str(err.value)
    held = int(re.search(r"last good checkpoint is .*last\.ckpt \(iteration (\d+)\)", message)
               .group(1))
    assert "Lower train.lr (now 1e+20)" in message and "--resume" in message
    meta = ck.read_meta(str(tmp_path / "last.ckpt"))
    assert meta["iteration"] == held and meta["history"]
    assert all(np.isfinite(h["total"]) for h in meta["history"])
    assert all(np.isfinite(v).all() for v in checkpoint_params(str(tmp_path / "last.ckpt")).values())


# -- the export -----------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_export_is_an_artifact_with_the_runs_record(task, tmp_path, capsys):
    """Two iterations with train.export: the graph is written with model-meta.json through
    deploy.artifact (task, the data set's class names, the run's input size, the backbone
    variant's mean/std); loaded back, it computes what the trained network computes (same
    operators on the same weights: float32 tolerance); eval and predict refuse it naming the
    task, before reading any data."""
    out = str(tmp_path / task)
    trainer = dense.DenseTrainer(C.resolve(tiny(task, iterations=2, export=True)), out,
                                 log=quiet)
    result = trainer.fit()
    assert result["export"] == os.path.join(out, "model")
    meta = artifact.read_meta(result["export"])
    variant = VARIANTS["resnest14"].default_cfg
    classes = ["circle", "square", "triangle"]
    assert (meta.task, meta.format, meta.precision, meta.input_size) == (task, "symbol", "fp32", 64)
    assert meta.classes == tuple(classes if task == "detection" else ["background"] + classes)
    assert meta.mean == tuple(variant["mean"]) and meta.std == tuple(variant["std"])
    assert (meta.crop_pct, meta.interpolation, meta.variant) == (1.0, "bilinear", "resnest14")
    assert not [f for f in os.listdir(out) if f.startswith(".export-")]

    loaded = artifact.load_artifact(result["export"])
    x = mx.nd.array(np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32))
    with mx.autograd.predict_mode():
        want, got = trainer.net(x), loaded.block(x)
    want, got = (want, got) if isinstance(want, (list, tuple)) else ([want], [got])
    assert len(got) == len(want)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-4)

    code, _, err = gr(capsys, "predict", result["export"], str(tmp_path / "missing.png"))
    assert code == 2 and f"is a {task} model" in err and "Traceback" not in err


# -- the command line -----------------------------------------------------------------------
def test_cli_trains_writes_the_run_folder_and_resumes(tmp_path, capsys):
    """`train --task detection` with overrides (train.lr=1e-3 once failed in the schedule),
    then `--resume DIR` with more iterations continues from the checkpoint."""
    out = str(tmp_path / "det")
    code, text, err = gr(capsys, "train", "--task", "detection", *TINY_ARGS,
                         "train.iterations=2", "train.lr=1e-3", "train.warmup_iters=1",
                         "--out", out)
    assert code == 0, err
    assert text.startswith("resolved config:") and os.path.join(out, "config.yaml") in text
    assert "detection training finished: 2 iterations" in text and "validation: mAP=" in text
    for name in ("config.yaml", "last.ckpt", "model.params", "metrics.json",
                 "model-symbol.json", "model-0000.params"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["run"]["out"] == out and saved["train"]["lr"] == 0.001
    assert saved["model"]["backbone"] == "resnest14"

    code, text, err = gr(capsys, "train", "--resume", out, "train.iterations=4")
    assert code == 0, err
    assert f"resumed from {os.path.join(out, 'last.ckpt')}: iteration 2 of 4" in text
    meta = ck.read_meta(os.path.join(out, "last.ckpt"))
    assert (meta["iteration"], len(meta["history"])) == (4, 4)
    assert meta["config"]["train"]["lr"] == 0.001          # the run's own config, plus overrides
    code, _, err = gr(capsys, "train", "--resume", out, "--task", "segmentation")
    assert code == 2 and "contradicts the checkpoint's task detection" in err


@pytest.mark.parametrize("args, message", [
    (["train.iterations=0"], "train.iterations: expected a positive integer, got 0"),
    (["train.iterations=-5"], "train.iterations: expected a positive integer, got -5"),
    (["train.lr_rate=1"], "did you mean train.lr_mode, train.lr"),
    (["--data", "imgs"], "--data applies to classification"),
    (["-c", "segmentation/shapes_deeplab"], "task 'detection' contradicts task: segmentation"),
])
def test_cli_rejects_bad_dense_configs_before_starting(args, message, tmp_path, capsys):
    code, _, err = gr(capsys, "train", "--task", "detection", *args, "--out",
                      str(tmp_path / "o"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sigint_at_the_cli_saves_and_tells_how_to_resume(tmp_path):
    """Ctrl-C during `gluon-resnest train --task segmentation`: no traceback, a checkpoint, the
    resume command, exit status 128 + SIGINT."""
    out = tmp_path / "seg"
    code, err = signal_when(["train", "--task", "segmentation", *TINY_ARGS[:-2],
                             "data.base_size=64", "data.crop_size=64", "train.iterations=1000",
                             "train.log_interval=1", "--out", str(out)],
                            "[segmentation] iter 2/1000", signal.SIGINT, 180, 120)
    assert code == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert re.search(r"interrupted by SIGINT at iteration \d+/1000; checkpoint saved to "
                     r".*last\.ckpt \(continue with: gluon-resnest train --resume ", err), err
    assert ck.read_meta(str(out / "last.ckpt"))["iteration"] >= 2
