"""What every training loop here shares: signals, atomic files, guarded checkpoints, seeding.

Classification (:mod:`.trainer`) and detection/segmentation (:mod:`.dense`) both train
under a :class:`SignalGuard` (SIGINT/SIGTERM finish the iteration, then the loop saves and
raises :class:`TrainingInterrupted`), write every file through a temporary file and
``os.replace`` (a reader sees the old file or the new one), save checkpoints only while the
parameters are finite (:func:`save_guarded`) and stop on a NaN/Inf loss with
:class:`NonFiniteLossError`, keeping the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable, ContextManager, Dict, Iterable, Iterator, Optional

import mxnet as mx
import numpy as np

from . import checkpoint as ckpt_mod
from .checkpoint import atomic_write
from .config import format_config

__all__ = ["TrainingInterrupted", "NonFiniteLossError", "SignalGuard", "non_finite_error",
           "atomic_write", "atomic_write_text", "atomic_copy", "write_run_config",
           "params_finite", "save_guarded", "iteration_seed", "seed_all", "resume_hint",
           "RunLog", "progress_bar", "drop_stderr_lines", "PoolingNoteFilter"]


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


# -- output -------------------------------------------------------------------------------
class RunLog:
    """A ``log`` callable that also appends each line to ``path`` (the run folder's
    ``train.log``), opened on the first line so the folder may come later. As a context manager
    it closes the file on exit and records the exception that ended the run, if any (the caller
    prints it); every session (a resume too) starts with a dated header line."""

    def __init__(self, path: str, log: Callable[[str], None] = print) -> None:
        self.path, self._log = path, log
        self._file: Optional[Any] = None

    def __call__(self, line: str) -> None:
        self._log(line)
        self.note(line)

    def note(self, text: str) -> None:
        """Write ``text`` to the file only (what the caller prints itself)."""
        if self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
        self._file.write(text.rstrip("\n") + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.note(f"stopped: {exc_type.__name__}: {exc}")
        self.close()


def progress_bar(enabled: bool, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal: in a log
    file or a pipe (a distributed worker's log, a captured run) its ``\\r`` frames are noise."""
    from tqdm import tqdm
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):     # replaced or closed stderr
        tty = False
    return tqdm(file=sys.stderr, disable=not (enabled and tty), **kwargs)


@contextlib.contextmanager
def drop_stderr_lines(fragment: bytes) -> Iterator[None]:
    """Lines written to file descriptor 2 inside the block (by native code: MXNet's C++ logging
    bypasses Python) that contain ``fragment`` are dropped; the others are passed on to stderr
    when the block ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):    # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True) if fragment not in line]
            if kept:
                os.write(2, b"".join(kept))


class PoolingNoteFilter:
    """MXNet's oneDNN average pooling logs "MKLDNN Pooling: training with prop_kind is
    forward_scoring" (C++ INFO, to stderr) each time it builds a primitive for training: at the
    first training step of each input shape. Average pooling needs no workspace, so it is
    expected and says nothing about the run. ``with filter(shape):`` drops that line around the
    steps of a new input shape only; every other line passes."""

    NOTE = b"MKLDNN Pooling: training with prop_kind is forward_scoring"

    def __init__(self) -> None:
        self._seen: set = set()

    def __call__(self, shape: Any) -> ContextManager[None]:
        if shape in self._seen:
            return contextlib.nullcontext()
        self._seen.add(shape)
        return drop_stderr_lines(self.NOTE)


# -- randomness -----------------------------------------------------------------------------
def iteration_seed(*parts: int) -> int:
    """A 32-bit seed from integers (seed, epoch, iteration, ...): no two positions share one."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and MXNet's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)
