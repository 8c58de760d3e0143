import os
import subprocess
import sys
import tempfile
import time
import zipfile

import mxnet as mx
import numpy as np
import pytest

import gluon_resnest  # noqa: F401  (first: imports gluoncv even where torch >= 2 is installed)

os.environ.setdefault("MXNET_HOME", os.path.join(os.path.dirname(__file__), ".mxnet_home_unused"))
# runtime="auto" caches what it measured: never in the user's cache, never across test runs
os.environ["GLUON_RESNEST_CACHE"] = tempfile.mkdtemp(prefix="gluon_resnest_test_cache_")


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    np.random.seed(0)


def randomize(net, seed=0, residual_gamma=(0.2, 0.5)):
    """Random weights everywhere, BN statistics included, so outputs are far from trivial."""
    rng = np.random.RandomState(seed)
    for name, p in sorted(net._collect_params_with_prefix().items()):
        shape = p.shape
        if name.endswith("running_var"):
            val = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("bn3.gamma", "downsample.2.gamma")):
            val = rng.uniform(*residual_gamma, shape)  # keeps the residual sum O(1) in deep nets
        elif name.endswith("gamma"):
            val = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "running_mean", "bias")):
            val = rng.normal(0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            val = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        p.set_data(mx.nd.array(val.astype("float32")))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def signal_when(args, ready, sig, start_timeout=120, stop_timeout=60):
    """Run ``python -m gluon_resnest ARGS``, send ``sig`` once a stdout line starts with
    ``ready``; returns (exit code, stderr). Every wait is bounded; the process never outlives
    the call."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gluon_resnest", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.time() + start_timeout
        for line in proc.stdout:
            if line.startswith(ready) or time.time() > deadline:
                break
        assert time.time() < deadline, "training did not start in time"
        proc.send_signal(sig)
        code = proc.wait(timeout=stop_timeout)
        return code, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def checkpoint_params(path):
    """The parameters of a ``.ckpt`` file as numpy arrays, by name."""
    with zipfile.ZipFile(path) as zf:
        return {k: v.asnumpy() for k, v in mx.nd.load_frombuffer(zf.read("model.params")).items()}


def assert_resumed_run_matches(full, resumed):
    """A dense run resumed after an interruption ends where the uninterrupted ``full`` run
    did: the same loss history and the same parameters (float32 summation order: 1e-5)."""
    assert [h["total"] for h in resumed["loss_history"]] == \
        pytest.approx([h["total"] for h in full["loss_history"]], rel=1e-5)
    a, b = checkpoint_params(full["checkpoint"]), checkpoint_params(resumed["checkpoint"])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
