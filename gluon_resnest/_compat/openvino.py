"""OpenVINO's CPU plugin and the thread's alternate signal stack.

OpenVINO 2026.4's CPU plugin installs its own alternate signal stack (``sigaltstack``) on the
calling thread when it compiles a model, and when a compiled model is released it can put back
one it has already unmapped. Python installs its signal handlers with ``SA_ONSTACK``, so the
next signal on that thread (Ctrl-C, or the SIGINT/SIGTERM the trainers catch to save a
checkpoint) then finds no stack and the kernel kills the process with SIGSEGV.
:class:`CompiledModel` compiles, runs and releases a model with the caller's stack kept in
place around each step. Linux only; elsewhere the stack is left alone.
"""
from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

import numpy as np

__all__ = ["CompiledModel", "kept_signal_stack"]


class _Stack(ctypes.Structure):      # struct stack_t, <signal.h>
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


_LIBC: Optional[ctypes.CDLL] = ctypes.CDLL(None, use_errno=True) \
    if sys.platform.startswith("linux") else None


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block, then give this thread back the alternate signal stack it had before."""
    if _LIBC is None:
        yield
        return
    before = _Stack()
    _LIBC.sigaltstack(None, ctypes.byref(before))
    try:
        yield
    finally:
        # "disabled" is restored as disabled; SS_ONSTACK is a state, not a flag to set
        before.ss_flags &= ~1
        _LIBC.sigaltstack(ctypes.byref(before), None)


class CompiledModel:
    """An ONNX file compiled by OpenVINO's CPU plugin: ``model(x)`` maps a float32 batch to the
    first output (a fresh array). ``config``: the plugin's properties."""

    def __init__(self, ov: Any, path: str, config: Dict[str, Any]) -> None:
        with kept_signal_stack():
            self._compiled = ov.Core().compile_model(path, "CPU", config)
            self._request = self._compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # the request's output buffer is reused by the next call: copy it out
        return np.array(self._request.infer({0: x})[0], dtype=np.float32, copy=True)

    def close(self) -> None:
        """Release the plugin's objects now (also done when the model is garbage collected)."""
        if getattr(self, "_compiled", None) is not None:
            with kept_signal_stack():
                self._request = self._compiled = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:      # noqa: BLE001  (interpreter shutdown: module globals may be gone)
            pass
