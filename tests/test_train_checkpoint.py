"""Checkpoints and never losing work: atomic writes, exact resume, signals, NaN stops."""
import os
import signal
import zipfile

import mxnet as mx
import numpy as np
import pytest

from gluon_resnest.train import checkpoint as ck
from gluon_resnest.train import load_config, run
from gluon_resnest.train.trainer import NonFiniteLossError, Trainer, TrainingInterrupted

EPOCHS = 4


def tiny(**extra):
    """A small ResNeSt on 96 digits with the whole recipe switched on (mixup, label smoothing,
    DropBlock, AutoAugment, colour jitter, random crops), so every random source is exercised."""
    over = {"model.kwargs": {"bottleneck_width": 8, "stem_width": 8}, "model.dropblock_prob": 0.1,
            "data.limit": 96, "optim.batch_size": 32, "optim.lr_batch_size": 32,
            "optim.lr": 0.05, "optim.epochs": EPOCHS, "optim.mixup": 0.2,
            "aug.auto_augment": True, "aug.jitter": 0.2, "run.progress": False,
            "run.export": False}
    over.update(extra)
    return load_config("demo", list(over.items()))


def params_of(path):
    with zipfile.ZipFile(path) as zf, zf.open("model.params") as f:
        raw = f.read()
    return {k: v.asnumpy() for k, v in mx.nd.load_frombuffer(raw).items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """EPOCHS epochs in one go."""
    out = str(tmp_path_factory.mktemp("straight"))
    summary = run(tiny(), out_dir=out, log=lambda s: None)
    return out, summary


def test_checkpoint_contents(straight):
    out, summary = straight
    meta = ck.read_meta(os.path.join(out, "last.ckpt"))
    assert (meta["epoch"], meta["iteration"]) == (EPOCHS, 0)
    assert meta["config"]["optim"]["epochs"] == EPOCHS
    assert meta["classes"] == [str(c) for c in range(10)]
    assert set(meta["rng"]) == {"python", "numpy"} and len(meta["history"]) == EPOCHS
    with zipfile.ZipFile(os.path.join(out, "last.ckpt")) as zf:
        assert {"meta.json", "model.params", "trainer.states"} <= set(zf.namelist())
    best = ck.read_meta(os.path.join(out, "best.ckpt"))
    assert best["epoch"] == summary["best"]["epoch"]
    with open(os.path.join(out, "metrics.csv")) as f:
        assert len(f.read().strip().splitlines()) == EPOCHS + 1
    assert not [f for f in os.listdir(out) if f.startswith(".")]    # no temp files left


def test_resume_equals_uninterrupted(straight, tmp_path):
    """N epochs in one go == N/2, then --resume for the other N/2 (same parameters)."""
    out, _ = straight
    first = run(tiny(**{"run.stop_after": EPOCHS // 2}), out_dir=str(tmp_path),
                log=lambda s: None)
    assert first["status"] == "stopped" and first["epochs"] == EPOCHS // 2
    second = run(tiny(), out_dir=str(tmp_path), resume=str(tmp_path), log=lambda s: None)
    assert second["status"] == "finished"
    assert_same_params(params_of(os.path.join(out, "last.ckpt")),
                       params_of(os.path.join(tmp_path, "last.ckpt")))
    assert [r["train_loss"] for r in second["history"]] == \
        pytest.approx([r["train_loss"] for r in run_history(out)], rel=1e-5)


def run_history(out):
    return ck.read_meta(os.path.join(out, "last.ckpt"))["history"]


def test_sigint_mid_epoch_checkpoints_and_resumes_exactly(straight, tmp_path):
    out, _ = straight

    def interrupt(event, trainer, info):
        if event == "iteration_end" and (info["epoch"], info["iteration"]) == (1, 0):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="SIGINT at epoch 2, iteration 1") as err:
        run(tiny(), out_dir=str(tmp_path), callbacks=[interrupt], log=lambda s: None)
    meta = ck.read_meta(err.value.checkpoint)
    assert (meta["epoch"], meta["iteration"]) == (1, 1)     # mid-epoch position
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored
    run(tiny(), out_dir=str(tmp_path), resume=err.value.checkpoint, log=lambda s: None)
    assert_same_params(params_of(os.path.join(out, "last.ckpt")),
                       params_of(os.path.join(tmp_path, "last.ckpt")))
    assert [r["train_acc"] for r in run_history(str(tmp_path))] == \
        pytest.approx([r["train_acc"] for r in run_history(out)])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(event, trainer, info):
        if event == "epoch_end" and info["epoch"] == 1:
            w = trainer.net.fc.weight
            w.set_data(w.data() * np.nan)

    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, iteration 0.*"
                                                 r"last good checkpoint is .*last\.ckpt \(epoch 1\)"):
        run(tiny(), out_dir=str(tmp_path), callbacks=[poison], log=lambda s: None)
    meta = ck.read_meta(os.path.join(tmp_path, "last.ckpt"))
    assert meta["epoch"] == 1
    assert all(np.isfinite(v).all() for v in params_of(os.path.join(tmp_path, "last.ckpt"))
               .values())


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    trainer = Trainer(tiny(**{"optim.epochs": 1}), out_dir=str(tmp_path), log=lambda s: None)
    path = trainer.save()
    before = open(path, "rb").read()

    class Boom(RuntimeError):
        pass

    def fail(*a, **k):
        raise Boom("disk full")
    trainer.trainer.save_states = fail
    trainer.epoch = 1
    with pytest.raises(Boom):
        trainer.save()
    assert open(path, "rb").read() == before                       # untouched
    assert os.listdir(tmp_path) == ["last.ckpt"]                   # no temp files


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint .* does not exist"):
        ck.read_meta(str(tmp_path / "none.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a gluon_resnest checkpoint"):
        ck.read_meta(str(bad))


def test_rng_state_round_trip():
    import random
    state = ck.rng_state()
    a = (random.random(), np.random.rand())
    ck.set_rng_state(state)
    assert (random.random(), np.random.rand()) == a
