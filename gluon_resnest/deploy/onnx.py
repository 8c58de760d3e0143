"""ONNX: export with MXNet's own exporter, run with onnxruntime.

:func:`export_onnx` converts the inference graph (``mx.onnx.export_model``) into ONNX
**opset 13** with a dynamic batch dimension. MXNet 1.9.1's translation tables stop at opset 13
(its ``Split`` has no ``num_outputs``, which opset 18 requires), so the model is declared
opset 13 whatever the installed onnx's newest opset is, then checked with ``onnx.checker``
(full check). Split-Attention becomes Conv (grouped), Split, Sum, GlobalAveragePool, Reshape,
Transpose, Softmax, Sigmoid and Mul; the average-pool shortcut becomes Pad + AveragePool
(+ Shape/ScatterND/GatherND/Div for ``count_include_pad=False``). String metadata goes into
the model's ``metadata_props``. Tested with onnx 1.18.0 and onnxruntime 1.30.0 (onnx >= 1.19
lost ``onnx.mapping``, which the exporter needs). Both are the optional ``onnx`` extra.
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, Mapping, Optional, Set

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock

from .._compat.extras import MissingExtraError, import_extra
from .symbol import check_block, export_symbol, input_size

__all__ = ["ONNX_OPSET", "export_onnx", "OnnxRunner", "run_onnx"]

#: The ONNX opset written by :func:`export_onnx` (MXNet 1.9.1's newest translation tables).
ONNX_OPSET = 13


def _import_onnx():
    onnx = import_extra("onnx", "onnx", "ONNX export")
    if not hasattr(onnx, "mapping"):
        raise MissingExtraError(f"onnx {onnx.__version__} has no onnx.mapping, which MXNet "
                                f"1.9.1's exporter needs: pip install 'onnx==1.18.0'")
    return onnx


def export_onnx(net: HybridBlock, path: str, size: Optional[int] = None, batch: int = 1,
                dynamic_spatial: bool = False,
                metadata: Optional[Mapping[str, str]] = None) -> str:
    """Export ``net`` to an ONNX file (opset :data:`ONNX_OPSET`) with a dynamic batch size.

    ``size`` is the input resolution (default: the variant's); with ``dynamic_spatial`` the
    height and width are dynamic too. ``batch`` is the batch used for tracing only.
    ``metadata`` (str -> str) is stored in the model's ``metadata_props``. Returns ``path``.
    """
    onnx = _import_onnx()
    check_block(net)
    size = input_size(net, size)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder {folder!r} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        export_symbol(net, os.path.join(tmp, "m"), size)
        sym, args, aux = mx.model.load_checkpoint(os.path.join(tmp, "m"), 0)
    dyn = (None, 3, None, None) if dynamic_spatial else (None, 3, size, size)
    mx.onnx.export_model(sym, {**args, **aux}, in_shapes=[(batch, 3, size, size)],
                         in_types=[np.float32], onnx_file_path=path, dynamic=True,
                         dynamic_input_shapes=[dyn])
    model = onnx.load(path)
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", ONNX_OPSET))
    # MXNet lists the weights as graph inputs too; runtimes then treat them as overridable
    # inputs and skip constant folding. Keep only the image input.
    _prune_initializers(model.graph)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _used_names(graph) -> Set[str]:
    """Every tensor name a node of ``graph`` (or of a subgraph in its attributes) reads, and
    the graph's outputs."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                used |= _used_names(sub)
    return used


def _prune_initializers(graph) -> int:
    """Drop the initializers no node reads (MXNet's exporter writes some, e.g. the BatchNorm
    statistics its fused translations do not use; onnxruntime warns about each one at every
    session start). Returns how many were dropped."""
    used = _used_names(graph)
    keep = [t for t in graph.initializer if t.name in used]
    dropped = len(graph.initializer) - len(keep)
    if dropped:
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return dropped


class OnnxRunner:
    """An ONNX model in onnxruntime (CPU): ``runner(x)`` maps an (N, 3, H, W) float32 batch to
    the model's output; :attr:`metadata` is the file's ``metadata_props``. ``threads``: the
    session's intra-op threads (default: onnxruntime's own choice)."""

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model {path!r} does not exist")
        ort = import_extra("onnxruntime", "onnx", "running an ONNX model")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ValueError(f"{path!r} is not a readable ONNX model: "
                             f"{str(err).splitlines()[0]}") from None
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(x, np.float32)})[0]


def run_onnx(path: str, x: np.ndarray) -> np.ndarray:
    """Run an exported ONNX model on ``x`` (N, 3, H, W) with onnxruntime's CPU provider."""
    return OnnxRunner(path)(x)
