"""BF16: MXNet AMP with bfloat16 where oneDNN has bf16 kernels (AVX-512).

:func:`convert_bf16` runs convolutions and dense layers in bfloat16; input and output stay
float32 (AMP's ``amp_cast`` nodes, which :func:`~.symbol.write_block` keeps in the files).
Elsewhere it raises :class:`UnsupportedOnThisCPU` with the probe's reason.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Dict, Optional, Tuple

import mxnet as mx
from mxnet.base import MXNetError
from mxnet.gluon import HybridBlock, SymbolBlock

from .._compat.onednn import cpu_flags
from .symbol import check_block, export_symbol, input_size, load_symbol

__all__ = ["UnsupportedOnThisCPU", "bf16_support", "convert_bf16"]


class UnsupportedOnThisCPU(RuntimeError):
    """The requested precision has no oneDNN kernels on this CPU."""


_BF16: Dict[str, Tuple[bool, str]] = {}




def bf16_support() -> Tuple[bool, str]:
    """(supported, reason): whether MXNet's oneDNN runs bfloat16 convolutions on this CPU.

    MXNet 1.9.1 is built with oneDNN (``mx.runtime.Features()['MKLDNN']``), whose bf16 kernels
    need AVX-512 (native with avx512_bf16 / AMX, emulated on avx512_core). Decided by a probe:
    a tiny bfloat16 convolution.
    """
    if "r" not in _BF16:
        flags = [f for f in sorted(cpu_flags()) if f.startswith(("avx512", "amx"))]
        features = mx.runtime.Features()
        if not features.is_enabled("MKLDNN"):
            _BF16["r"] = (False, "this MXNet build has no oneDNN (MKLDNN feature off)")
        else:
            from mxnet.contrib import amp
            try:
                x = mx.nd.ones((1, 4, 6, 6)).astype(amp.amp.bfloat16)
                w = mx.nd.ones((4, 4, 3, 3)).astype(amp.amp.bfloat16)
                y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True)
                ok = float(y.astype("float32").asnumpy()[0, 0, 2, 2]) == 36.0
                _BF16["r"] = (ok, "oneDNN bfloat16 convolution works" if ok else
                              "oneDNN bfloat16 convolution gave a wrong result")
            except MXNetError as err:
                _BF16["r"] = (False, "oneDNN has no bfloat16 convolution on this CPU ("
                              + str(err).splitlines()[0][:120] + "); AVX-512 flags: "
                              + (", ".join(flags) or "none"))
    return _BF16["r"]


def convert_bf16(net: HybridBlock, size: Optional[int] = None) -> SymbolBlock:
    """BF16 mixed-precision model of ``net`` (MXNet AMP, ``target_dtype='bfloat16'``).

    Convolutions and dense layers run in bfloat16, numerically sensitive ops (softmax, BN
    statistics) stay FP32 per AMP's lists; input and output are float32.
    Raises :class:`UnsupportedOnThisCPU` where oneDNN has no bf16 kernels.
    """
    ok, reason = bf16_support()
    if not ok:
        raise UnsupportedOnThisCPU(f"BF16 is not available here: {reason}")
    from mxnet.contrib import amp
    check_block(net)
    size = input_size(net, size)
    with tempfile.TemporaryDirectory() as tmp:
        export_symbol(net, os.path.join(tmp, "m"), size)
        fp32 = load_symbol(os.path.join(tmp, "m"))
    fp32.hybridize()
    fp32(mx.nd.zeros((1, 3, size, size)))
    with warnings.catch_warnings():   # AMP's type inference warns on every graph we give it
        warnings.filterwarnings("ignore", message="Cannot decide type")
        return amp.convert_hybrid_block(fp32, target_dtype="bfloat16", ctx=mx.cpu(),
                                        cast_optional_params=True)
