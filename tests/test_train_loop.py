"""The pieces every training loop shares (train/loop.py), the dense schedules and the sizing
of a fine-tuning recipe (train/recipe.py)."""
import os
import signal

import mxnet as mx
import numpy as np
import pytest
import yaml

from gluon_resnest.train import checkpoint as ck
from gluon_resnest.train import loop, recipe
from gluon_resnest.train.config import load_config


# -- schedules ------------------------------------------------------------------------------
def gluoncv_schedule(total, lr, mode, steps, decay, warm, factor):
    """GluonCV's own schedulers, as its detection/segmentation scripts compose them."""
    from gluoncv.utils import LRScheduler, LRSequential
    main = LRScheduler(mode, base_lr=lr, niters=total - warm, nepochs=1,
                       step_iter=steps or [total * 10], step_factor=decay, power=0.9)
    if warm <= 0:
        return main
    return LRSequential([LRScheduler("linear", base_lr=lr * factor, target_lr=lr,
                                     niters=warm), main])


@pytest.mark.parametrize("mode", ["step", "poly", "cosine", "linear", "constant"])
@pytest.mark.parametrize("warm", [0, 7])
def test_dense_schedule_equals_gluoncvs(mode, warm):
    """dense_lr_at(it) is what GluonCV's LRScheduler (LRSequential with a warm-up) gives the
    optimizer at its update count ``it`` (1-based), for every iteration."""
    total, lr, steps = 60, 0.02, [20, 35]
    ref = gluoncv_schedule(total, lr, mode, steps, 0.1, warm, 1 / 3)
    ours = [recipe.dense_lr_at(it, total, lr, mode, steps, 0.1, warm, 1 / 3)
            for it in range(1, total + 1)]
    theirs = [ref(it) for it in range(1, total + 1)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert len(set(ours)) == 1 if mode == "constant" and not warm else len(set(ours)) > 2


def test_dense_schedule_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="lr mode must be"):
        recipe.dense_lr_at(1, 10, 0.1, "exp")


# -- sizing a recipe to the data ------------------------------------------------------------
def test_size_to_data_fits_batch_classes_and_warmup():
    cfg = load_config("finetune", [("optim.epochs", 3), ("optim.warmup_epochs", 3)])
    sized, notes = recipe.size_to_data(cfg, train_images=20, classes=4)
    o = sized["optim"]
    assert (sized["model"]["classes"], o["batch_size"], o["warmup_epochs"]) == (4, 20, 2)
    assert cfg["optim"]["batch_size"] == 32                         # the input is not changed
    assert notes[0] == "4 classes (from the data)"
    assert "batch 20 of 20 training images (1 iteration(s) per epoch)" in notes[1]
    assert notes[2] == "2 warm-up epoch(s) of 3"
    big, _ = recipe.size_to_data(cfg, train_images=1000, classes=4)
    assert big["optim"]["batch_size"] == 32                         # the recipe's, if it fits
    two = load_config("finetune", [("run.devices", ["cpu:0", "cpu:1"]), ("optim.epochs", 1)])
    sized, _ = recipe.size_to_data(two, train_images=21, classes=4)
    assert (sized["optim"]["batch_size"], sized["optim"]["warmup_epochs"]) == (20, 0)
    kept, _ = recipe.size_to_data(cfg, 20, 4, fixed={"optim.batch_size", "optim.warmup_epochs",
                                                     "model.classes"})
    assert (kept["optim"]["batch_size"], kept["optim"]["warmup_epochs"],
            kept["model"]["classes"]) == (32, 3, None)


# -- files ----------------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "metrics.json")
    loop.atomic_write_text(path, "old")

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        loop.atomic_write(path, fail)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["metrics.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask       # a new file's mode, not 0600
    loop.atomic_copy(path, str(tmp_path / "copy.json"))
    assert open(tmp_path / "copy.json").read() == "old"


def test_run_config_records_the_real_folder(tmp_path):
    cfg = load_config(None, task="segmentation")
    assert cfg["run"]["out"] is None
    loop.write_run_config(str(tmp_path / "run"), cfg)
    with open(tmp_path / "run" / "config.yaml") as f:
        saved = yaml.safe_load(f)
    assert saved["run"]["out"] == str(tmp_path / "run") and saved["task"] == "segmentation"


def test_save_guarded_refuses_non_finite_weights(tmp_path):
    net = mx.gluon.nn.Dense(3, in_units=2)
    net.initialize()
    path = str(tmp_path / "last.ckpt")
    loop.save_guarded(path, net, None, {"iteration": 1}, "iteration 1", "Lower the lr")
    before = open(path, "rb").read()
    net.weight.set_data(net.weight.data() * np.inf)
    with pytest.raises(loop.NonFiniteLossError,
                       match=r"the parameters became non-finite at iteration 2; training stopped "
                             r"and the last good checkpoint is .*last\.ckpt\. Lower the lr"):
        loop.save_guarded(path, net, None, {"iteration": 2}, "iteration 2", "Lower the lr")
    assert open(path, "rb").read() == before
    assert ck.read_meta(path)["iteration"] == 1


# -- signals --------------------------------------------------------------------------------
def test_signal_guard_defers_the_first_signal_and_restores_handlers():
    lines = []
    before = signal.getsignal(signal.SIGTERM)
    with loop.SignalGuard(lines.append) as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.received == signal.SIGTERM                    # still running
        assert "SIGTERM received: finishing this iteration" in lines[0]
        with pytest.raises(KeyboardInterrupt, match="second SIGINT: stopped at once"):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    err = loop.TrainingInterrupted(signal.SIGTERM, "run/last.ckpt", "iteration 3/9")
    assert str(err) == ("interrupted by SIGTERM at iteration 3/9; checkpoint saved to "
                        "run/last.ckpt (continue with: gluon-resnest train --resume "
                        "run/last.ckpt)")
    assert err.signum == signal.SIGTERM


def test_iteration_seeds_differ_per_position():
    seeds = {loop.iteration_seed(0, e, i) for e in range(3) for i in range(50)}
    assert len(seeds) == 150 and loop.iteration_seed(0, 1, 2) == loop.iteration_seed(0, 1, 2)
