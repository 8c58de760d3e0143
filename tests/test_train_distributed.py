"""Data-parallel training: two devices in one process, and MXNet's parameter server with a
scheduler, one server and two workers on 127.0.0.1, both against a single-process run.

Why the comparison can be exact: with BatchNorm in batch-statistics mode, two workers that
each normalise 8 images do not compute what one process normalising all 16 does, so these
runs freeze BatchNorm (``model.use_global_stats``): every layer is then per-sample, the
gradient of the combined batch is exactly the sum of the workers' gradients, and the
parameters must agree up to float rounding. Mixup pairs images across the batch and DropBlock
draws from each process's own generator, so both are off; random crops, flips and label
smoothing stay on (they are per sample and seeded by sample index).
"""
import importlib.util
import os
import sys
import zipfile

import mxnet as mx
import numpy as np
import pytest

from gluon_resnest.train import load_config, run
from gluon_resnest.train.distributed import launch_local, setup_parallel

OVERRIDES = {"model.kwargs": {"bottleneck_width": 8, "stem_width": 8},
             "model.use_global_stats": True, "model.dropblock_prob": 0.0,
             "data.limit": 64, "optim.batch_size": 16, "optim.lr_batch_size": 16,
             "optim.lr": 0.02, "optim.epochs": 1, "optim.warmup_epochs": 0,
             "optim.mixup": 0.0, "aug.flip": True, "run.progress": False,
             "run.export": False}


def params_of(path):
    with zipfile.ZipFile(path) as zf, zf.open("model.params") as f:
        return {k: v.asnumpy() for k, v in mx.nd.load_frombuffer(f.read()).items()}


def assert_close(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], err_msg=k, **tol)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single"))
    run(load_config("demo", list(OVERRIDES.items())), out_dir=out, log=lambda s: None)
    return params_of(os.path.join(out, "last.ckpt"))


def test_two_devices_equal_one(single, tmp_path):
    cfg = load_config("demo", list(OVERRIDES.items()) + [("run.devices", ["cpu:0", "cpu:1"])])
    run(cfg, out_dir=str(tmp_path), log=lambda s: None)
    moved = params_of(os.path.join(tmp_path, "last.ckpt"))
    assert_close(moved, single, rtol=1e-4, atol=1e-6)
    # the parameters really moved away from their initial values
    assert max(np.abs(v).max() for k, v in moved.items() if k.endswith("bias")) > 0


@pytest.mark.slow
def test_parameter_server_two_workers_equal_single_process(single, tmp_path):
    cfg = tmp_path / "dist.yaml"
    import yaml
    flat = dict(OVERRIDES, **{"run.kvstore": "dist_sync"})
    nested = {}
    for key, value in flat.items():
        section, leaf = key.split(".")
        nested.setdefault(section, {})[leaf] = value
    cfg.write_text("base: " + os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                                          "configs", "demo.yaml")) + "\n"
                   + yaml.safe_dump(nested))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gluon_resnest", "train", "-c", str(cfg), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    codes = launch_local([cmd, cmd], num_servers=1, timeout=240, env=env,
                         log_dir=str(tmp_path / "logs"))
    logs = {f: (tmp_path / "logs" / f).read_text() for f in os.listdir(tmp_path / "logs")}
    assert codes == [0, 0], logs
    assert "kvstore dist_sync (worker 0 of 2)" in logs["worker0.log"] + logs["worker1.log"]
    epochs = "\n".join(line for text in logs.values() for line in text.splitlines()
                       if line.startswith(("epoch", "devices")))
    rank0 = params_of(str(out / "last.ckpt"))
    rank1 = params_of(str(out / "rank1" / "last.ckpt"))
    for k in rank0:                                   # identical updates on both workers
        np.testing.assert_array_equal(rank0[k], rank1[k], err_msg=f"{k}\n{epochs}")
    assert_close(rank0, single, rtol=1e-4, atol=1e-6)


def test_parameter_server_needs_its_environment(monkeypatch):
    for var in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="DMLC_ROLE, DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT"):
        setup_parallel("dist_sync")
    with pytest.raises(ValueError, match="unknown kind 'nccl'"):
        setup_parallel("nccl")


@pytest.mark.skipif(importlib.util.find_spec("horovod") is not None,
                    reason="Horovod is installed here; this checks the error without it")
def test_horovod_missing_is_a_clear_error():
    with pytest.raises(ValueError, match="needs Horovod.*not installed"):
        setup_parallel("horovod")


def _children():
    """Live child processes of this one (Linux /proc)."""
    kids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            kids.append(int(pid))
    return kids


def test_launcher_times_out_and_cleans_up(tmp_path):
    before = set(_children())
    code = "import time; time.sleep(60)"
    with pytest.raises(TimeoutError, match="did not finish within 3 s"):
        launch_local([[sys.executable, "-c", code]], timeout=3, log_dir=str(tmp_path))
    assert set(_children()) <= before          # scheduler, server and worker are gone


# a worker that joins the job and keeps synchronising until it is stopped
_WORKER = """
import os, sys, time
import mxnet as mx
kv = mx.kv.create("dist_sync")
with open(os.path.join(sys.argv[1], "rank%d.pid" % kv.rank), "w") as f:
    f.write(str(os.getpid()))
kv.init(0, mx.nd.zeros((4,)))
out = mx.nd.zeros((4,))
for _ in range(100000):
    kv.pushpull(0, mx.nd.ones((4,)), out=out)
    out.wait_to_read()
    time.sleep(0.05)
"""


def _kill_when_running(pid_file, timeout=60):
    """In a thread: SIGKILL the process whose pid ``pid_file`` receives, once it is running."""
    import signal
    import threading
    import time
    killed = {}

    def kill():
        deadline = time.time() + timeout
        while not os.path.isfile(pid_file) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)                       # mid-run: a few synchronised steps done
        with open(pid_file) as f:
            killed["pid"] = int(f.read())
        os.kill(killed["pid"], signal.SIGKILL)
    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t, killed


def test_launcher_stops_every_role_when_a_worker_is_killed(tmp_path, capsys):
    from gluon_resnest.train.distributed import main
    before = set(_children())
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    thread, killed = _kill_when_running(str(tmp_path / "rank1.pid"))
    import time
    t0 = time.time()
    code = main(["-n", "2", "--timeout", "90", "--log-dir", str(tmp_path / "logs"), "--",
                 sys.executable, str(script), str(tmp_path)])
    thread.join(5)
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"(pid {killed['pid']}) was killed by SIGKILL" in err
    assert "stopped the other processes (scheduler, server0, worker" in err
    assert time.time() - t0 < 60               # stopped at once, not at the timeout
    assert set(_children()) <= before          # every role is gone


def test_launcher_names_a_failing_worker(tmp_path):
    from gluon_resnest.train.distributed import JobFailed
    before = set(_children())
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    fail = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(JobFailed, match=r"worker1 \(pid \d+\) exited with status 3") as info:
        launch_local([[sys.executable, str(script), str(tmp_path)], fail], timeout=90,
                     log_dir=str(tmp_path / "logs"))
    assert info.value.role == "worker1" and info.value.code == 3
    assert set(_children()) <= before
