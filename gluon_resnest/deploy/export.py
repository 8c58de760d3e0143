"""Export a loaded model as an artifact (symbol, ONNX, INT8, BF16), checked on reload.

:func:`export` is what ``gluon-resnest export`` runs: it takes a :class:`~.artifact.LoadedModel`
(a variant with weights, a checkpoint or an earlier artifact), converts it, writes it with its
metadata (:func:`~.artifact.save`; the source's record is kept, arguments only override it),
loads the written files back and compares them with the source. The pieces live in
:mod:`.symbol`, :mod:`.onnx`, :mod:`.int8` and :mod:`.bf16`; the names most callers use are
re-exported here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .._compat.extras import MissingExtraError
from ..data.paths import check_output_folder
from .artifact import LoadedModel, ModelMeta, load_artifact, save, split_prefix
from .bf16 import UnsupportedOnThisCPU, bf16_support, convert_bf16
from .int8 import describe as describe_int8
from .int8 import generated_images, graph_transitions, quantize_int8, split_grouped_convs
from .onnx import ONNX_OPSET, export_onnx, run_onnx
from .symbol import export_symbol, fold_constants, input_size, load_symbol

__all__ = ["ExportResult", "export", "check_options", "default_output", "ONNX_OPSET", "UnsupportedOnThisCPU",
           "bf16_support", "convert_bf16", "export_onnx", "export_symbol", "fold_constants",
           "generated_images", "graph_transitions", "load_symbol", "quantize_int8", "run_onnx",
           "split_grouped_convs"]

_SUFFIX = {"fp32": "", "int8": "-int8", "bf16": "-bf16"}


@dataclass
class ExportResult:
    """What :func:`export` wrote and what it checked."""

    files: List[str]
    meta: ModelMeta
    lines: List[str] = field(default_factory=list)   # conversion report and checks, to print


def default_output(model: LoadedModel, fmt: str, precision: str) -> str:
    """Where an export goes without ``out``: beside the input file (its prefix, or the
    checkpoint's name without ``.ckpt``), or ``./VARIANT`` for a variant, plus ``-int8`` /
    ``-bf16`` and ``.onnx``."""
    if model.path is not None:
        base = split_prefix(model.path)
        base = base[:-len(".ckpt")] if base.endswith(".ckpt") else base
    else:
        base = model.meta.variant or "model"
    base += _SUFFIX[precision] if precision != model.meta.precision else ""
    return base + ".onnx" if fmt == "onnx" else base


def check_options(fmt: str, precision: Optional[str], out: Optional[str] = None) -> None:
    """Reject an impossible request before anything is loaded."""
    if fmt not in ("symbol", "onnx"):
        raise ValueError(f"format must be 'symbol' or 'onnx', got {fmt!r}")
    if precision is not None and precision not in _SUFFIX:
        raise ValueError(f"precision must be fp32, int8 or bf16, got {precision!r}")
    if precision in ("int8", "bf16") and fmt == "onnx":
        raise ValueError("--int8/--bf16 make MXNet (oneDNN) graphs: use --format symbol; "
                         "MXNet's ONNX exporter has no quantized/bfloat16 operators")
    if out is not None:
        check_output_folder(os.path.dirname(os.path.abspath(out)))


def _check_request(model: LoadedModel, fmt: str, precision: str, out: str) -> None:
    if model.block is None:
        raise ValueError(f"{model.source} runs in onnxruntime and cannot be converted again: "
                         f"export from its MXNet source (symbol files, checkpoint or variant)")
    src = model.meta.precision
    if src != "fp32" and (precision != src or fmt == "onnx"):
        raise ValueError(f"{model.source} is already {src}: export its FP32 source instead")
    check_options(fmt, precision, out)
    if model.path is not None and fmt == "symbol" and \
            os.path.abspath(split_prefix(out)) == os.path.abspath(split_prefix(model.path)):
        raise ValueError(f"exporting {model.path!r} to itself would overwrite the input: give "
                         f"another output (--out)")


def export(model: LoadedModel, out: Optional[str] = None, fmt: str = "symbol",
           precision: Optional[str] = None, size: Optional[int] = None,
           calib: str = "generated", num_calib: int = 64, calib_mode: str = "naive",
           dynamic_spatial: bool = False) -> ExportResult:
    """Write ``model`` as a ``fmt`` artifact in ``precision`` (default: the model's own).

    The record is the model's metadata with ``size`` (input size) overridden when given.
    INT8 calibrates on ``calib`` (``'generated'`` or an image folder, read with the model's
    transform). The written files are loaded back and compared with ``model``.
    """
    precision = precision or model.meta.precision
    out = out or default_output(model, fmt, precision)
    if fmt == "onnx" and not out.lower().endswith(".onnx"):
        out += ".onnx"
    _check_request(model, fmt, precision, out)
    if size is not None:
        input_size(model.block, size)     # checked against the total stride before any work
    meta = model.meta.updated(input_size=size, format=fmt, precision=precision)
    lines: List[str] = []
    net = model.block
    if precision != model.meta.precision and precision == "int8":
        net = quantize_int8(model.block, calib, num_calib, meta.input_size, calib_mode,
                            transform=meta.transform)
        info = dict(net.int8_info)
        lines.append(f"INT8 (oneDNN): {describe_int8(info)}")
        t = graph_transitions(net)
        lines.append(f"graph: {t['int8_ops']} INT8 ops, {t['quantize']} quantize and "
                     f"{t['dequantize']} dequantize nodes (int8<->fp32 conversions)")
        meta = meta.updated(details={**meta.details, "int8": info})
    elif precision != model.meta.precision and precision == "bf16":
        net = convert_bf16(model.block, meta.input_size)
        lines.append("BF16 (MXNet AMP): convolutions and dense layers in bfloat16, input and "
                     "output float32")
    files = save(net, out, meta, dynamic_spatial=dynamic_spatial)
    if fmt == "onnx":
        lines.append(f"wrote {files[0]} (ONNX opset {ONNX_OPSET}, input 'data' (batch, 3, "
                     f"{'H, W' if dynamic_spatial else f'{meta.input_size}, {meta.input_size}'})"
                     f", metadata in metadata_props)")
    else:
        lines.append(f"wrote {', '.join(files)}")
    lines.append(_check(model, files[0], meta))
    return ExportResult(files, meta, lines)


def _check(model: LoadedModel, written: str, meta: ModelMeta) -> str:
    """Reload the written artifact and compare it with the source model."""
    s = meta.input_size
    try:
        again = load_artifact(written, ctx=model.ctx)
    except MissingExtraError:
        return "check skipped: onnxruntime is not installed (the 'onnx' extra)"
    if meta.precision == "int8" and model.meta.precision != "int8":
        x = generated_images(32, s, meta.mean, meta.std, seed=1)
        agree = float((again(x).argmax(1) == model(x).argmax(1)).mean())
        return (f"check: reloaded INT8 vs FP32 top-1 agreement on 32 generated images: "
                f"{agree:.1%}")
    x = np.random.RandomState(0).normal(size=(2, 3, s, s)).astype(np.float32)
    diff = float(np.abs(again(x) - model(x)).max())
    what = {"onnx": "onnxruntime", "symbol": "reloaded"}[meta.format]
    kind = " BF16" if meta.precision == "bf16" else ""
    return f"check: {what}{kind} vs the source on a batch of 2: max |diff| {diff:.2e}"
