"""What every training loop here shares: signals, atomic files, guarded checkpoints, seeding.

Classification (:mod:`.trainer`) and detection/segmentation (:mod:`.dense`) both train
under a :class:`SignalGuard` (SIGINT/SIGTERM finish the iteration, then the loop saves and
raises :class:`TrainingInterrupted`), write every file through a temporary file and
``os.replace`` (a reader sees the old file or the new one), save checkpoints only while the
parameters are finite (:func:`save_guarded`) and stop on a NaN/Inf loss with
:class:`NonFiniteLossError`, keeping the last good checkpoint.
"""
from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import threading
from typing import Any, Callable, Dict, Iterable, Optional

import mxnet as mx
import numpy as np

from . import checkpoint as ckpt_mod
from .config import format_config

__all__ = ["TrainingInterrupted", "NonFiniteLossError", "SignalGuard", "non_finite_error",
           "atomic_write", "atomic_write_text", "atomic_copy", "write_run_config",
           "params_finite", "save_guarded", "iteration_seed", "seed_all", "resume_hint"]


def resume_hint(path: str) -> str:
    return f"continue with: gluon-resnest train --resume {path}"


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; the loop finished its iteration and wrote a checkpoint (None:
    stopped before the first update, nothing to keep)."""

    def __init__(self, signum: int, checkpoint: Optional[str], where: str) -> None:
        name = signal.Signals(signum).name
        if checkpoint:
            super().__init__(f"interrupted by {name} at {where}; checkpoint saved to "
                             f"{checkpoint} ({resume_hint(checkpoint)})")
        else:
            super().__init__(f"interrupted by {name} at {where}, before the first update: "
                             f"nothing to save; run the same command to start again")
        self.signum, self.checkpoint = signum, checkpoint


class NonFiniteLossError(RuntimeError):
    """The loss (or the parameters) became NaN or infinite; the bad state was not saved."""


def non_finite_error(what: str, where: str, last_checkpoint: Optional[str], advice: str,
                     position: Optional[str] = None) -> NonFiniteLossError:
    """The error for ``what`` (e.g. "loss became nan") at ``where``, naming the checkpoint that
    is kept (``position``: where in training it was written) and how to go on."""
    if last_checkpoint and os.path.isfile(last_checkpoint):
        at = f" ({position})" if position else ""
        kept = (f"the last good checkpoint is {last_checkpoint}{at}. {advice}, then start "
                f"again or {resume_hint(last_checkpoint)}")
    else:
        kept = f"no checkpoint was written yet. {advice}"
    return NonFiniteLossError(f"{what} at {where}; training stopped and {kept}")


class SignalGuard:
    """While active (``with``), SIGINT/SIGTERM set :attr:`received` instead of stopping the
    process; the loop checks it after each iteration. A second signal raises
    KeyboardInterrupt at once (checkpoints already written stay intact). Only the main
    thread can own signal handlers; elsewhere the guard does nothing."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.received: Optional[int] = None
        self._log = log
        self._old: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - handler signature
        name = signal.Signals(signum).name
        if self.received is not None:
            raise KeyboardInterrupt(f"second {name}: stopped at once, without a new checkpoint")
        self.received = signum
        self._log(f"\n{name} received: finishing this iteration, then saving a checkpoint "
                  f"(send it again to stop at once)")

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}


# -- files ----------------------------------------------------------------------------------
def atomic_write(path: str, write: Callable[[str], None]) -> str:
    """``write(tmp)`` into a temporary file next to ``path``, then rename it onto ``path``.
    The file gets the mode of any new file (0666 minus the umask), not a temp file's 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: str, text: str) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def atomic_copy(src: str, dst: str) -> str:
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def write_run_config(out: str, cfg: Dict[str, Any]) -> str:
    """``out/config.yaml``: the resolved config, with ``run.out`` the real run folder."""
    cfg.setdefault("run", {})["out"] = out
    return atomic_write_text(os.path.join(out, "config.yaml"), format_config(cfg) + "\n")


# -- checkpoints ----------------------------------------------------------------------------
def params_finite(params: Iterable[Any]) -> bool:
    """True when every array of these Gluon parameters is finite."""
    for p in params:
        try:
            data = p.list_data()[0]
        except RuntimeError:              # not initialised (deferred): nothing to check
            continue
        if not np.isfinite(data.asnumpy()).all():
            return False
    return True


def save_guarded(path: str, net: Any, trainer: Any, meta: Dict[str, Any], where: str,
                 advice: str) -> str:
    """Save a checkpoint (atomically, :func:`checkpoint.save_checkpoint`) unless a parameter is
    NaN/Inf: then raise :class:`NonFiniteLossError` and leave the previous checkpoint as is."""
    if not params_finite(net.collect_params().values()):
        raise non_finite_error("the parameters became non-finite", where, path, advice)
    return ckpt_mod.save_checkpoint(path, net, trainer, meta)


# -- randomness -----------------------------------------------------------------------------
def iteration_seed(*parts: int) -> int:
    """A 32-bit seed from integers (seed, epoch, iteration, ...): no two positions share one."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and MXNet's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)
