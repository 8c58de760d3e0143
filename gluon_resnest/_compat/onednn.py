"""AMX for MXNet's oneDNN, and what oneDNN runs on this CPU.

MXNet 1.9.1 bundles oneDNN 2.4.4, which leaves AMX off unless ``DNNL_MAX_CPU_ISA`` is
``AVX512_CORE_AMX`` when it creates its first primitive, and which never asks Linux for the
AMX tile state (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``): without that request
the first AMX instruction kills the process with SIGILL. :func:`enable_amx` does both, once per
process, from ``gluon_resnest/__init__.py`` before any operator runs (subprocesses that import
gluon_resnest, like the INT8 quantization, ask again). ``GLUON_RESNEST_AMX=0`` turns it off.

This module imports nothing from MXNet: it must run before MXNet's first primitive.
"""
from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterable, MutableMapping, Optional, TextIO, Tuple

__all__ = ["FLAGS_OF_INTEREST", "AmxStatus", "OneDnnProbe", "cpu_flags", "cpu_model", "enable_amx",
           "amx_status", "isa_report", "note_bf16_speed", "bf16_speed_note"]

#: /proc/cpuinfo flags that decide which oneDNN kernels can run.
FLAGS_OF_INTEREST = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f",
                     "avx2")
OPT_OUT_VAR = "GLUON_RESNEST_AMX"
ISA_VAR = "DNNL_MAX_CPU_ISA"
AMX_ISA = "AVX512_CORE_AMX"
# set beside ISA_VAR when this module set it, so a subprocess that inherits both can tell the
# value was ours (not the user's) and drop it if its own tile request is refused
_OURS_VAR = "_GLUON_RESNEST_SET_DNNL_ISA"

_ARCH_PRCTL = 158                 # x86-64 syscall number
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def _cpuinfo_field(name: str, cpuinfo: str) -> Optional[str]:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The CPU's flags from ``cpuinfo`` (empty where there is no such file, e.g. not Linux)."""
    return frozenset((_cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, or ``platform.processor()`` where ``cpuinfo`` has none."""
    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or "unknown"


def _request_tile_permission() -> Tuple[bool, str]:
    """Ask Linux for the AMX tile state for this process: (granted, reason)."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return False, f"arch_prctl is x86-64 Linux only ({sys.platform}, {platform.machine()})"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        rc = libc.syscall(ctypes.c_long(_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                          ctypes.c_long(_XFEATURE_XTILEDATA))
    except (OSError, AttributeError) as err:
        return False, f"cannot call syscall(): {err}"
    if rc != 0:
        errno = ctypes.get_errno()
        return False, (f"arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) returned {rc} "
                       f"(errno {errno}: {os.strerror(errno)}; Linux 5.16+ is needed)")
    return True, "granted"


@dataclass(frozen=True)
class AmxStatus:
    """What :func:`enable_amx` found and did.

    ``state``: ``"enabled"`` (oneDNN may use AMX), ``"not available"`` (no ``amx_tile``),
    ``"disabled"`` (``GLUON_RESNEST_AMX=0``), ``"permission refused"`` (Linux refused the tile
    state) or ``"limited"`` (the user's ``DNNL_MAX_CPU_ISA`` excludes AMX).
    """
    state: str
    detail: str
    isa_var: Optional[str] = None       # DNNL_MAX_CPU_ISA after the call
    set_isa: bool = False               # this process's call set it
    permission: Optional[bool] = None   # None: not asked

    @property
    def enabled(self) -> bool:
        return self.state == "enabled"

    def describe(self) -> str:
        return f"{self.state}: {self.detail}"


_STATUS: Dict[str, AmxStatus] = {}


def enable_amx(flags: Optional[Iterable[str]] = None,
               environ: Optional[MutableMapping[str, str]] = None,
               request: Optional[Callable[[], Tuple[bool, str]]] = None) -> AmxStatus:
    """Turn AMX on for MXNet's oneDNN where the CPU has it; elsewhere do nothing.

    Where ``amx_tile`` is present and ``GLUON_RESNEST_AMX`` is not ``0``: ask Linux for the tile
    state and, when granted, set ``DNNL_MAX_CPU_ISA=AVX512_CORE_AMX`` unless the user set that
    variable. When refused, the variable is not set (oneDNN then never issues an AMX
    instruction, so no SIGILL). Must run before MXNet's first oneDNN primitive.

    The arguments replace the CPU flags, the environment and the permission request (tests);
    only a call with none of them is recorded as this process's status (:func:`amx_status`).
    """
    real = flags is None and environ is None and request is None
    if real and "r" in _STATUS:
        return _STATUS["r"]
    flags = frozenset(cpu_flags() if flags is None else flags)
    env = os.environ if environ is None else environ
    status = _decide(flags, env, request or _request_tile_permission)
    if real:
        _STATUS["r"] = status
    return status


def _decide(flags: FrozenSet[str], env: MutableMapping[str, str],
            request: Callable[[], Tuple[bool, str]]) -> AmxStatus:
    ours = env.get(_OURS_VAR) == "1" and env.get(ISA_VAR) == AMX_ISA
    user_isa = None if ours else env.get(ISA_VAR)

    def drop_ours() -> None:
        if ours:
            env.pop(ISA_VAR, None)
            env.pop(_OURS_VAR, None)

    if "amx_tile" not in flags:
        drop_ours()
        return AmxStatus("not available", "this CPU has no AMX (no amx_tile flag)",
                         env.get(ISA_VAR))
    if env.get(OPT_OUT_VAR, "").strip() == "0":
        drop_ours()
        return AmxStatus("disabled", f"{OPT_OUT_VAR}=0", env.get(ISA_VAR))
    granted, reason = request()
    if not granted:
        drop_ours()
        detail = f"Linux refused the AMX tile state: {reason}"
        if user_isa and "AMX" in user_isa.upper():
            detail += (f"; {ISA_VAR}={user_isa} (set outside gluon_resnest) will make oneDNN's "
                       f"first AMX instruction kill the process (SIGILL): unset it")
        return AmxStatus("permission refused", detail, env.get(ISA_VAR), permission=False)
    if user_isa is not None:
        if "AMX" in user_isa.upper():
            return AmxStatus("enabled", f"{ISA_VAR}={user_isa} (yours), tile state granted",
                             user_isa, permission=True)
        return AmxStatus("limited", f"{ISA_VAR}={user_isa} (yours) keeps oneDNN off AMX",
                         user_isa, permission=True)
    env[ISA_VAR] = AMX_ISA
    env[_OURS_VAR] = "1"
    return AmxStatus("enabled", f"{ISA_VAR}={AMX_ISA} set by gluon_resnest, tile state granted",
                     AMX_ISA, set_isa=not ours, permission=True)


def amx_status() -> AmxStatus:
    """This process's AMX status (what the :func:`enable_amx` call at import did)."""
    return enable_amx()


@dataclass(frozen=True)
class OneDnnProbe:
    """oneDNN's dispatch line and the kernel it picked for a small convolution."""
    isa: str             # e.g. "Intel AVX-512 with Intel DL Boost and bfloat16 support"
    version: str         # e.g. "oneDNN v2.4.4 (commit ...)"
    kernel: str          # implementation of the convolution, e.g. "brgconv:avx512_core"
    dtype: str


# a subprocess: the verbose variables must be set before MXNet starts, and the parent's own
# oneDNN already started. It imports gluon_resnest first, so it asks for AMX like any user.
_PROBE = """
import sys
import gluon_resnest  # noqa: F401  (enables AMX first, as in any process using the package)
import mxnet as mx
from mxnet.contrib import amp
dtype = amp.amp.bfloat16 if sys.argv[1] == "bfloat16" else "float32"
x = mx.nd.ones((1, 64, 14, 14)).astype(dtype)
w = mx.nd.ones((64, 64, 3, 3)).astype(dtype)
mx.nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=64, no_bias=True).wait_to_read()
"""

_PROBES: Dict[str, OneDnnProbe] = {}


def isa_report(dtype: str = "float32", timeout: float = 120.0) -> OneDnnProbe:
    """Which ISA MXNet's oneDNN uses here: runs a small ``dtype`` (``float32`` or ``bfloat16``)
    convolution in a subprocess with ``MKLDNN_VERBOSE=1`` and parses its output (cached).

    Raises RuntimeError when the subprocess fails or prints no dispatch line.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if dtype in _PROBES:
        return _PROBES[dtype]
    env = {**os.environ, "MKLDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    run = subprocess.run([sys.executable, "-c", _PROBE, dtype], env=env, capture_output=True,
                         text=True, timeout=timeout)
    isa = version = kernel = ""
    for line in run.stdout.splitlines():
        parts = line.split(",")
        if line.startswith("dnnl_verbose,info,cpu,isa:"):
            isa = line.split("isa:", 1)[1].strip()
        elif line.startswith("dnnl_verbose,info,oneDNN"):
            version = parts[2].strip()
        elif line.startswith("dnnl_verbose,exec,cpu,convolution,") and not kernel:
            kernel = parts[4]
    if run.returncode != 0 or not isa:
        tail = " | ".join(run.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"the oneDNN probe ({dtype} convolution with MKLDNN_VERBOSE=1) "
                           f"exited with status {run.returncode} and "
                           f"{'a' if isa else 'no'} dispatch line: {tail or 'no stderr'}")
    _PROBES[dtype] = OneDnnProbe(isa, version, kernel, dtype)
    return _PROBES[dtype]


def bf16_speed_note(flags: Optional[Iterable[str]] = None, status: Optional[AmxStatus] = None,
                    see_info: bool = True) -> Optional[str]:
    """Why MXNet's BF16 is slower than FP32 here (AMX present but not in use, or bfloat16
    emulated with AVX-512), or unavailable (no AVX-512); None where it is faster: on AMX, or
    on native AVX512-BF16 without AMX hardware (``bench/results/deploy.md``)."""
    flags = frozenset(cpu_flags() if flags is None else flags)
    status = amx_status() if status is None else status
    if status.enabled:
        return None
    if "amx_bf16" in flags:       # oneDNN falls back to this CPU's AVX512-BF16 kernels
        how = f"AMX {status.describe()}"
    elif "avx512_bf16" in flags:
        return None
    elif "avx512f" in flags:
        how = "no AVX512-BF16: bfloat16 is emulated with AVX-512"
    else:
        return "BF16 is not available here (no AVX-512: oneDNN has no bfloat16 kernels)"
    return (f"BF16 runs without AMX here ({how}): expect it slower than FP32"
            + ("; see `gluon-resnest info`" if see_info else ""))


def note_bf16_speed(command: str, precision: Optional[str], runtime: str = "mxnet",
                    stream: Optional[TextIO] = None) -> bool:
    """Print ``gluon-resnest COMMAND: hint: ...`` when MXNet runs ``precision`` ``bf16`` and
    BF16 is slower than FP32 on this CPU (no AMX in use). Returns whether it printed.

    ``hint:``, not ``note:``: the commands' notes say what was assumed about the model."""
    if precision != "bf16" or runtime != "mxnet":
        return False
    note = bf16_speed_note()
    if note is None:
        return False
    print(f"gluon-resnest {command}: hint: {note}", file=stream or sys.stderr)
    return True
