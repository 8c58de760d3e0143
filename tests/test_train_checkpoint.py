"""Checkpoints and never losing work: atomic writes, exact resume, signals, NaN stops."""
import os
import signal
import zipfile

import mxnet as mx
import numpy as np
import pytest
from conftest import checkpoint_params

from gluon_resnest.model.parameters import load_arrays
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
        assert set(zf.namelist()) == {"meta.json", "model.params", "optimizer.params",
                                      "optimizer.json"}
        momenta = {k for k in mx.nd.load_frombuffer(zf.read("optimizer.params"))}
    # NAG keeps one momentum per trained parameter (BatchNorm running statistics have none)
    trained = {k for k in checkpoint_params(os.path.join(out, "last.ckpt")) if "running_" not in k}
    assert momenta == {f"momentum:{k}" for k in trained}
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
    assert_same_params(checkpoint_params(os.path.join(out, "last.ckpt")),
                       checkpoint_params(os.path.join(tmp_path, "last.ckpt")))
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
    assert_same_params(checkpoint_params(os.path.join(out, "last.ckpt")),
                       checkpoint_params(os.path.join(tmp_path, "last.ckpt")))
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
    assert all(np.isfinite(v).all() for v in checkpoint_params(os.path.join(tmp_path, "last.ckpt"))
               .values())


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    trainer = Trainer(tiny(**{"optim.epochs": 1}), out_dir=str(tmp_path), log=lambda s: None)
    path = trainer.save()
    before = open(path, "rb").read()

    class Boom(RuntimeError):
        pass

    save = mx.nd.save

    def fail(fname, data):      # the optimizer state is the last member written
        if fname.endswith("optimizer.params"):
            raise Boom("disk full")
        save(fname, data)
    monkeypatch.setattr(mx.nd, "save", fail)
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


def test_malformed_rng_state_is_a_clear_error():
    state = ck.rng_state()
    state["numpy"][1] = state["numpy"][1][:10]
    with pytest.raises(ValueError, match="malformed random-generator state"):
        ck.set_rng_state(state)


def test_checkpoints_get_the_mode_of_any_new_file(straight, tmp_path):
    """last.ckpt and best.ckpt: 0666 minus the umask (0644 under the usual 022), like any file
    the user creates; never the 0600 of a temp file."""
    out, _ = straight
    umask = os.umask(0)
    os.umask(umask)
    modes = {name: os.stat(os.path.join(out, name)).st_mode & 0o777
             for name in ("last.ckpt", "best.ckpt")}
    assert modes == {"last.ckpt": 0o666 & ~umask, "best.ckpt": 0o666 & ~umask}
    trainer = Trainer(tiny(**{"optim.epochs": 1}), out_dir=str(tmp_path), log=lambda s: None)
    old = os.umask(0o027)
    try:
        path = trainer.save()
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640


# -- no pickle in any load path ----------------------------------------------------------------
class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: loading the pickle creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def crafted_pickle(marker):
    import pickle
    return pickle.dumps(_CreatesFile(marker))


def craft_checkpoint(real, dest, marker, fmt="gluon_resnest-checkpoint/1"):
    """``real``'s weights and metadata (claiming format ``fmt``) with a malicious pickle as
    ``trainer.states``, as gluon_resnest 0.1 stored the optimizer state."""
    import json
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(dest, "w") as zf:
        meta = json.loads(src.read("meta.json"))
        meta["format"] = fmt
        zf.writestr("meta.json", json.dumps(meta))
        zf.writestr("model.params", src.read("model.params"))
        zf.writestr("trainer.states", crafted_pickle(marker))
    return str(dest)


@pytest.fixture(scope="module")
def fresh_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("fresh")
    trainer = Trainer(tiny(**{"optim.epochs": 1}), out_dir=str(out), log=lambda s: None)
    return trainer.save()


def test_the_crafted_pickle_does_create_its_file(tmp_path):
    """Positive control: the payload used below really runs when unpickled."""
    import pickle
    marker = tmp_path / "control"
    pickle.loads(crafted_pickle(marker)).close()
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["gluon_resnest-checkpoint/1", ck.FORMAT])
def test_resume_refuses_a_pickled_checkpoint_and_runs_nothing(fresh_checkpoint, tmp_path, fmt):
    marker = tmp_path / "pwned"
    crafted = craft_checkpoint(fresh_checkpoint, tmp_path / "crafted.ckpt", marker, fmt)
    with pytest.raises(ck.UnsafeCheckpointError,
                       match=r"optimizer state as a pickle .*can run arbitrary code.*"
                             r"model\.pretrained=.*crafted\.ckpt"):
        run(tiny(**{"optim.epochs": 1}), out_dir=str(tmp_path / "run"), resume=crafted,
            log=lambda s: None)
    assert not marker.exists()
    with pytest.raises(ck.UnsafeCheckpointError, match="written by gluon_resnest 0.1"):
        ck.check_resumable(crafted)      # the same refusal from the member list alone
    assert ck.check_resumable(fresh_checkpoint)["format"] == ck.FORMAT
    # its weights stay usable: weights-only loading never touches trainer.states
    trainer = Trainer(tiny(**{"optim.epochs": 1, "model.pretrained": crafted}),
                      out_dir=str(tmp_path / "ft"), log=lambda s: None)
    ck.load_checkpoint(crafted, trainer.net)
    assert_same_params({k: p.data().asnumpy()
                        for k, p in trainer.net._collect_params_with_prefix().items()},
                       checkpoint_params(fresh_checkpoint))
    assert not marker.exists()


def test_cli_resume_refuses_a_pickled_checkpoint(fresh_checkpoint, tmp_path, capsys):
    from gluon_resnest import cli
    marker = tmp_path / "pwned"
    crafted = craft_checkpoint(fresh_checkpoint, tmp_path / "crafted.ckpt", marker)
    code = cli.main(["train", "--resume", crafted, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "written by gluon_resnest 0.1" in err and "pickle" in err and \
        f"model.pretrained={crafted}" in err
    assert not marker.exists()


def test_resume_needs_matching_optimizer_state(fresh_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="holds the state of optimizer 'nag', this trainer "
                                         "uses 'adam'"):
        Trainer(tiny(**{"optim.epochs": 1, "optim.optimizer": "adam"}),
                out_dir=str(tmp_path), resume=fresh_checkpoint, log=lambda s: None)
    trainer = Trainer(tiny(**{"optim.epochs": 1}), out_dir=str(tmp_path), log=lambda s: None)
    weights_only = ck.save_checkpoint(str(tmp_path / "w.ckpt"), trainer.net, None, {})
    with pytest.raises(ValueError, match="holds no optimizer state"):
        ck.load_checkpoint(weights_only, trainer.net, trainer.trainer)


# -- optimizer state round trip, against MXNet's own (pickle) save/load as the reference -----
class Toy(mx.gluon.Block):
    """Two trained parameters and one that no gradient updates (like BatchNorm's statistics);
    element-wise ops only, so float16 runs on the CPU too."""

    def __init__(self):
        super().__init__()
        self.w = self.params.get("w", shape=(3, 4))
        self.b = self.params.get("b", shape=(4,), init="ones")
        self.stat = self.params.get("stat", shape=(4,), init="zeros", grad_req="null")

    def forward(self, x):
        ctx = x.context
        return ((self.w.data(ctx) * x + self.b.data(ctx) + self.stat.data(ctx)) ** 2).sum()


def toy(optimizer, opt_params, dtype="float32", ctxs=(mx.cpu(),), on_kvstore=False):
    ctxs = list(ctxs)
    mx.random.seed(7)
    net = Toy()
    net.initialize(mx.init.Xavier(), ctx=ctxs)
    net.cast(dtype)
    trainer = mx.gluon.Trainer(net.collect_params(), optimizer,
                               dict(opt_params, learning_rate=0.05,
                                    multi_precision=dtype == "float16"),
                               kvstore="device", update_on_kvstore=on_kvstore)
    return net, trainer


def toy_step(net, trainer, ctxs, dtype, step):
    x = np.random.RandomState(step).rand(2 * len(ctxs), 3, 4)
    xs = mx.gluon.utils.split_and_load(mx.nd.array(x, dtype=dtype), ctxs)
    with mx.autograd.record():
        losses = [net(a) for a in xs]
    mx.autograd.backward(losses)
    trainer.step(len(x))


def toy_weights(net, ctxs):
    return {k: np.stack([p.data(c).asnumpy() for c in ctxs])
            for k, p in net._collect_params_with_prefix().items()}


def state_arrays(trainer):
    """Index -> flat list of numpy arrays of every updater's state (None kept)."""
    from gluon_resnest._compat import mxnet as mxc
    out = []
    for upd in mxc.trainer_updaters(trainer):
        out.append({i: [None if a is None else a.asnumpy() for a in ck._flatten(s)]
                    for i, s in mxc.updater_states(upd).items()})
    return out


CASES = [("nag", {"momentum": 0.9}), ("sgd", {"momentum": 0.9}), ("sgd", {}), ("adam", {})]
LAYOUTS = [("float32", 1, False), ("float32", 2, False), ("float32", 2, True),
           ("float16", 1, False)]


@pytest.mark.parametrize("optimizer,opt_params", CASES)
@pytest.mark.parametrize("dtype,devices,on_kvstore", LAYOUTS)
def test_optimizer_state_round_trip(tmp_path, optimizer, opt_params, dtype, devices,
                                    on_kvstore):
    """Save after 3 steps, load into a fresh net/trainer: the states are the original arrays
    and the update counts agree; then 3 more steps on each give the same weights as the
    uninterrupted trainer and as MXNet's own ``save_states``/``load_states`` resume."""
    from gluon_resnest._compat import mxnet as mxc
    ctxs = [mx.cpu(i) for i in range(devices)]
    a, ta = toy(optimizer, opt_params, dtype, ctxs, on_kvstore)
    for s in range(3):
        toy_step(a, ta, ctxs, dtype, s)
    path = ck.save_checkpoint(str(tmp_path / "t.ckpt"), a, ta, {"epoch": 0})
    ta.save_states(str(tmp_path / "reference.states"))       # MXNet's pickle, our own file
    b, tb = toy(optimizer, opt_params, dtype, ctxs, on_kvstore)
    ck.load_checkpoint(path, b, tb, ctx=ctxs)
    expected, got = state_arrays(ta), state_arrays(tb)
    assert len(got) == len(expected) and [g.keys() for g in got] == [e.keys() for e in expected]
    for e, g in zip(expected, got):
        for i in e:
            assert [x is None for x in e[i]] == [x is None for x in g[i]]
            for x, y in zip(e[i], g[i]):
                if x is not None:
                    assert x.dtype == y.dtype
                    np.testing.assert_array_equal(x, y)
    assert mxc.update_counts(tb.optimizer) == mxc.update_counts(ta.optimizer)
    carried = any(x is not None for leaves in expected[0].values() for x in leaves)
    assert carried == bool(opt_params.get("momentum") or optimizer == "adam" or
                           dtype == "float16")         # a state exists wherever MXNet keeps one
    c, tc = toy(optimizer, opt_params, dtype, ctxs, on_kvstore)
    load_arrays(c, ck.read_params(path), ctx=ctxs)
    tc.load_states(str(tmp_path / "reference.states"))
    for s in range(3, 6):
        for net, trainer in ((a, ta), (b, tb), (c, tc)):
            toy_step(net, trainer, ctxs, dtype, s)
    nets = {"uninterrupted": toy_weights(a, ctxs), "ours": toy_weights(b, ctxs),
            "mxnet": toy_weights(c, ctxs)}
    for k in nets["ours"]:
        np.testing.assert_array_equal(nets["ours"][k], nets["uninterrupted"][k], err_msg=k)
        np.testing.assert_array_equal(nets["ours"][k], nets["mxnet"][k], err_msg=k)


def test_learning_rate_schedule_position_round_trip(tmp_path):
    """A stateful MXNet schedule (MultiFactorScheduler keeps its step index and current lr) is
    back where it was, and the resumed run follows the uninterrupted one."""
    def sched():
        return mx.lr_scheduler.MultiFactorScheduler(step=[2, 4, 6], factor=0.5, base_lr=0.05)
    ctxs = [mx.cpu()]
    a, ta = toy("nag", {"momentum": 0.9, "lr_scheduler": sched()})
    for s in range(5):
        toy_step(a, ta, ctxs, "float32", s)
    path = ck.save_checkpoint(str(tmp_path / "t.ckpt"), a, ta, {})
    b, tb = toy("nag", {"momentum": 0.9, "lr_scheduler": sched()})
    ck.load_checkpoint(path, b, tb)
    assert vars(tb.optimizer.lr_scheduler) == vars(ta.optimizer.lr_scheduler)
    assert vars(ta.optimizer.lr_scheduler)["cur_step_ind"] == 2        # it did move
    for s in range(5, 8):
        toy_step(a, ta, ctxs, "float32", s)
        toy_step(b, tb, ctxs, "float32", s)
        assert tb.learning_rate == ta.learning_rate
    for k, v in toy_weights(a, ctxs).items():
        np.testing.assert_array_equal(toy_weights(b, ctxs)[k], v, err_msg=k)
    c, tc = toy("nag", {"momentum": 0.9})
    with pytest.raises(ValueError, match="learning-rate schedule is mxnet.lr_scheduler."
                                         "MultiFactorScheduler, this trainer's is None"):
        ck.load_checkpoint(path, c, tc)


def rewrite(src, dest, **members):
    """``src`` with some members replaced (bytes) or dropped (None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for name in zin.namelist():
            if name not in members:
                zout.writestr(name, zin.read(name))
        for name, data in members.items():
            if data is not None:
                zout.writestr(name, data)
    return str(dest)


def test_tampered_optimizer_members_are_clear_errors(fresh_checkpoint, tmp_path):
    trainer = Trainer(tiny(**{"optim.epochs": 1}), out_dir=str(tmp_path), log=lambda s: None)
    cases = {"garbage.ckpt": ({"optimizer.params": b"\x00" * 64}, "unreadable optimizer state"),
             "list.ckpt": ({"optimizer.json": b"[1, 2]"}, "do not hold named entries"),
             "fields.ckpt": ({"optimizer.json": b'{"optimizer": "nag", "states": [1]}'},
                             "malformed optimizer.json"),
             "stranger.ckpt": ({"optimizer.json": b'{"optimizer": "nag", "states": {"x": []},'
                                                  b' "lr_scheduler": null}'},
                               "optimizer state for 1 parameter.* does not update: x")}
    for name, (members, message) in cases.items():
        bad = rewrite(fresh_checkpoint, tmp_path / name, **members)
        with pytest.raises(ValueError, match=message):
            ck.load_checkpoint(bad, trainer.net, trainer.trainer)
