"""Data-parallel training: devices of one process, MXNet's parameter server, Horovod.

* ``device`` / ``local``: one process, the batch split over ``run.devices``; gradients are
  summed by a local kvstore.
* ``dist_sync`` / ``dist_device_sync``: MXNet's parameter server. Every process is started the
  standard way, with the ``DMLC_*`` environment: one scheduler, one or more servers, N workers
  (``DMLC_ROLE``, ``DMLC_PS_ROOT_URI``, ``DMLC_PS_ROOT_PORT``, ``DMLC_NUM_SERVER``,
  ``DMLC_NUM_WORKER``). Schedulers and servers are ``python -c "import mxnet"``; workers run
  ``gluon-resnest train ... run.kvstore=dist_sync``. Worker r trains on the r-th slice of every
  global batch; the servers sum the gradients, and every worker applies the same update
  (``update_on_kvstore=False``), so optimizer states stay in the workers' checkpoints.
* ``horovod``: ``horovod.mxnet`` when it is installed (``horovodrun -np N gluon-resnest train
  ... run.kvstore=horovod``).

:func:`launch_local` starts a whole parameter-server job on this machine (127.0.0.1).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._compat.mxnet import prepare_trainer

__all__ = ["Parallel", "setup_parallel", "parse_devices", "launch_local", "free_port",
           "JobFailed", "DIST_KVSTORES"]

DIST_KVSTORES = ("dist_sync", "dist_device_sync", "dist_async")
_AUX_KEY = 1 << 20   # kvstore keys of averaged BatchNorm statistics (parameters use 0..n-1)


def parse_devices(devices: Sequence[str]) -> list:
    """['cpu'] / ['cpu:0', 'cpu:1'] / ['gpu:0'] -> MXNet contexts."""
    import mxnet as mx
    out = []
    for d in devices:
        kind, _, idx = str(d).strip().lower().partition(":")
        if kind not in ("cpu", "gpu") or (idx and not idx.isdigit()):
            raise ValueError(f"run.devices: {d!r} is not a device; use cpu, cpu:N or gpu:N")
        if kind == "gpu" and int(idx or 0) >= mx.context.num_gpus():
            raise ValueError(f"run.devices: {d!r} requested but this machine has "
                             f"{mx.context.num_gpus()} GPU(s)")
        out.append(mx.Context(kind, int(idx or 0)))
    return out


@dataclass
class Parallel:
    """How this process takes part in training."""

    kind: str                 # device | local | dist_* | horovod
    rank: int = 0
    num_workers: int = 1
    kvstore: Any = None       # what gluon.Trainer gets
    hvd: Any = None

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1 or self.kind in DIST_KVSTORES or self.kind == "horovod"

    def make_trainer(self, params, optimizer: str, optimizer_params: Dict[str, Any]):
        from mxnet import gluon
        if self.kind == "horovod":
            self.hvd.broadcast_parameters(params, root_rank=0)
            return self.hvd.DistributedTrainer(params, optimizer, optimizer_params)
        update_on_kv = False if self.kind != "dist_async" else None
        trainer = gluon.Trainer(params, optimizer, optimizer_params, kvstore=self.kvstore,
                                update_on_kvstore=update_on_kv)
        if self.kind in DIST_KVSTORES:
            # MXNet 1.9's Trainer initialises the kvstore inside the first step(), where the
            # pull of rank 0's initial weights and the push of the first gradients are not
            # ordered: a worker's weight pull can reach the server after the summed gradients
            # replaced the weights there, and that worker starts from the gradient sum. So
            # initialise and pull first, and wait (Trainer internals, in _compat).
            import mxnet as mx
            prepare_trainer(trainer)
            mx.nd.waitall()
        return trainer

    def average_aux(self, net) -> None:
        """Average the state that gradients do not update (BatchNorm running statistics) over
        every device of every worker, so that all workers validate and save the same model."""
        if not self.distributed:
            return
        aux = [p for p in net.collect_params().values() if p.grad_req == "null"]
        if self.kind == "horovod":
            for i, p in enumerate(aux):
                p.set_data(self.hvd.allreduce(p.data(), average=True, name=f"aux{i}"))
            return
        import mxnet as mx
        initialised = self.__dict__.setdefault("_aux_keys", set())
        for i, p in enumerate(aux):
            key, arrays = _AUX_KEY + i, p.list_data()
            if key not in initialised:
                self.kvstore.init(key, mx.nd.zeros_like(arrays[0]))
                initialised.add(key)
            outs = [mx.nd.zeros_like(a) for a in arrays]
            self.kvstore.pushpull(key, arrays, out=outs)
            p.set_data(outs[0] / (self.num_workers * len(arrays)))

    def step_batch(self, local_count: int) -> int:
        """What ``trainer.step`` divides the summed gradient by."""
        if self.kind in DIST_KVSTORES:
            return local_count * self.num_workers   # the servers sum over all workers
        return local_count                          # local; Horovod averages itself


def setup_parallel(kind: str) -> Parallel:
    """Create the kvstore named by ``run.kvstore`` (joining the job for dist kinds)."""
    if kind in ("device", "local"):
        return Parallel(kind, kvstore=kind)
    if kind == "horovod":
        try:
            import horovod.mxnet as hvd
        except ImportError:
            raise ValueError("run.kvstore=horovod needs Horovod built with MXNet support "
                             "(pip install horovod with HOROVOD_WITH_MXNET=1); it is not "
                             "installed. Use run.kvstore=dist_sync for MXNet's own parameter "
                             "server.") from None
        hvd.init()
        return Parallel(kind, hvd.rank(), hvd.size(), None, hvd)
    if kind in DIST_KVSTORES:
        missing = [v for v in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT",
                               "DMLC_NUM_SERVER", "DMLC_NUM_WORKER") if v not in os.environ]
        if missing:
            raise ValueError(f"run.kvstore={kind} needs the parameter-server environment; "
                             f"{', '.join(missing)} not set (see 'Distributed training' in "
                             f"the README, or gluon_resnest.train.distributed.launch_local)")
        import mxnet as mx
        kv = mx.kv.create(kind)
        return Parallel(kind, kv.rank, kv.num_workers, kv)
    raise ValueError(f"run.kvstore: unknown kind {kind!r}; use device, local, dist_sync, "
                     f"dist_device_sync, dist_async or horovod")


# -- a parameter-server job on this machine -------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: List[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class JobFailed(RuntimeError):
    """A process of a local parameter-server job ended early or with an error; every other
    process was stopped. ``role`` is e.g. ``'worker1'``, ``'server0'`` or ``'scheduler'``."""

    def __init__(self, role: str, pid: int, code: int, message: str) -> None:
        super().__init__(message)
        self.role, self.pid, self.code = role, pid, code


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


#: How long the workers may still run after a scheduler or server ended with status 0 (they
#: end together at the close of a job; a parameter-server role ending alone is a failure).
_PS_EXIT_GRACE = 30.0


def launch_local(worker_cmds: Sequence[Sequence[str]], num_servers: int = 1,
                 timeout: float = 600, env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None, log_dir: Optional[str] = None) -> List[int]:
    """Run a parameter-server job on 127.0.0.1: a scheduler, ``num_servers`` servers and one
    worker per command in ``worker_cmds``. Returns the workers' exit codes (all 0).

    When any process fails (non-zero status or a signal; a scheduler or server that ends while
    workers still run), every other process is stopped at once and :class:`JobFailed` names
    it; otherwise the remaining ones would wait for it forever. Every process is bounded by
    ``timeout`` seconds (TimeoutError) and stopped (terminate, then kill) when the job ends;
    ``log_dir`` receives each process's output.
    """
    for cmd in worker_cmds:
        if not cmd or (shutil.which(cmd[0], path=(env or os.environ).get("PATH")) is None
                       and not os.path.isfile(cmd[0])):
            raise FileNotFoundError(f"worker command {cmd[0] if cmd else ''!r} not found "
                                    f"(is its virtual environment active?)")
    base = dict(os.environ if env is None else env)
    base.update(DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(free_port()),
                DMLC_NODE_HOST="127.0.0.1", DMLC_NUM_SERVER=str(num_servers),
                DMLC_NUM_WORKER=str(len(worker_cmds)))
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    procs: List[Tuple[str, subprocess.Popen]] = []
    files = []

    def start(role: str, cmd: Sequence[str], tag: str) -> subprocess.Popen:
        out = None  # inherit this process's output
        if log_dir:
            out = open(os.path.join(log_dir, f"{tag}.log"), "w")  # noqa: SIM115
            files.append(out)
        p = subprocess.Popen(list(cmd), env=dict(base, DMLC_ROLE=role), cwd=cwd, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append((tag, p))
        return p

    def failed(tag: str, p: subprocess.Popen, why: str) -> JobFailed:
        others = [t for t, q in procs if q is not p]
        log = f"; its log: {os.path.join(log_dir, tag + '.log')}" if log_dir else ""
        return JobFailed(tag, p.pid, p.returncode if p.returncode is not None else -1,
                         f"{tag} (pid {p.pid}) {why}: stopped the other processes "
                         f"({', '.join(others)}){log}")

    ps_cmd = [sys.executable, "-c", "import mxnet"]
    try:
        start("scheduler", ps_cmd, "scheduler")
        for i in range(num_servers):
            start("server", ps_cmd, f"server{i}")
        workers = [start("worker", cmd, f"worker{i}") for i, cmd in enumerate(worker_cmds)]
        deadline = time.time() + timeout
        ps_ended: Optional[Tuple[str, subprocess.Popen, float]] = None
        while True:
            for tag, p in procs:
                code = p.poll()
                if code not in (None, 0):
                    raise failed(tag, p, _describe_exit(code))
                if code == 0 and p not in workers and ps_ended is None:
                    ps_ended = (tag, p, time.time())
            if all(w.returncode == 0 for w in workers):
                return [0] * len(workers)
            if ps_ended and time.time() - ps_ended[2] > _PS_EXIT_GRACE:
                tag, p, _ = ps_ended
                raise failed(tag, p, f"ended (status 0) while workers were still running "
                                     f"{_PS_EXIT_GRACE:.0f} s later")
            if time.time() > deadline:
                raise TimeoutError(f"distributed job did not finish within {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        _stop([p for _, p in procs])
        for f in files:
            f.close()


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m gluon_resnest.train.distributed -n 2 [-s 1] -- CMD ...``: run CMD as N
    workers of a parameter-server job on 127.0.0.1 (``gluon-resnest train`` writes worker 0's
    outputs to its run folder and worker r's checkpoints to ``<run folder>/rank<r>``)."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m gluon_resnest.train.distributed",
                                 description="Run a command as N parameter-server workers on "
                                             "this machine (scheduler and servers included).")
    ap.add_argument("-n", "--workers", type=int, default=2)
    ap.add_argument("-s", "--servers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--log-dir", default=None, help="one log file per process")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the worker command")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the worker command after --")
    if args.workers < 1 or args.servers < 1:
        ap.error(f"--workers and --servers must be at least 1, got {args.workers} and "
                 f"{args.servers}")
    try:
        codes = launch_local([cmd] * args.workers, args.servers, args.timeout,
                             log_dir=args.log_dir)
    except JobFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"worker exit codes: {codes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
