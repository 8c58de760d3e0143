"""MXNet symbol files: ``PREFIX-symbol.json`` + ``PREFIX-0000.params``, and graph rewrites.

:func:`export_symbol` writes the plain inference graph of a network (traced in predict mode,
in-graph constants folded into parameters so ONNX export and INT8 quantization see them);
:func:`write_block` writes an already converted graph (INT8, BF16) as it is;
:func:`load_symbol` reads either back as a ``SymbolBlock``.
"""
from __future__ import annotations

import ast
import json
import os
import warnings
from typing import Any, Dict, Optional, Tuple

import mxnet as mx
from mxnet.gluon import HybridBlock, SymbolBlock

from .._compat.mxnet_blocks import is_hybridized
from ..data.paths import check_output_folder
from ..model.resnest import _param_ctx

__all__ = ["check_block", "input_size", "fold_constants", "export_symbol", "write_block",
           "load_symbol", "read_graph", "write_graph", "symbol_files"]


def symbol_files(prefix: str) -> Tuple[str, str]:
    """The two files of an exported model: ``(PREFIX-symbol.json, PREFIX-0000.params)``."""
    return f"{prefix}-symbol.json", f"{prefix}-0000.params"


def input_size(net, size: Optional[int]) -> int:
    """``size``, or the variant's input size (``net.default_cfg``), checked against the
    network's total stride."""
    if size is None:
        cfg = getattr(net, "default_cfg", None) or {}
        if "input_size" not in cfg:
            raise ValueError("give the input size: this network has no default_cfg")
        size = cfg["input_size"][-1]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    minimum = getattr(net, "min_input_size", 1)
    if size < minimum:
        raise ValueError(f"size {size} is smaller than the network's total stride {minimum}")
    return size


def check_block(net) -> None:
    """A Gluon HybridBlock with every parameter initialised, or a clear error."""
    if not isinstance(net, HybridBlock):
        raise TypeError(f"expected a Gluon HybridBlock (a ResNeSt or SymbolBlock), got "
                        f"{type(net).__name__}")
    for name, p in net.collect_params().items():
        try:
            p.list_ctx()
        except RuntimeError:
            raise ValueError(f"parameter {name} is not initialised: load weights (or call "
                             f"net.initialize()) before exporting") from None


def _check_folder(path: str) -> None:
    # before tracing: MXNet's own error for an unwritable path is a C++ dump
    check_output_folder(os.path.dirname(os.path.abspath(path)))


# -- graph rewrites ----------------------------------------------------------------------------
_CONSTANT_OPS = ("_full", "_zeros", "_ones")
_IDENTITY_OPS = ("BlockGrad", "stop_gradient", "identity", "_copy")


def read_graph(prefix: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(graph JSON dict, parameters) of an exported model, for a rewrite."""
    sym_file, params_file = symbol_files(prefix)
    with open(sym_file) as f:
        return json.load(f), mx.nd.load(params_file)


def write_graph(prefix: str, graph: Dict[str, Any], params: Dict[str, Any]) -> None:
    """Write a rewritten graph (JSON dict) and the parameters it still uses to ``prefix``.
    Re-serialising through MXNet drops unreachable nodes."""
    sym = mx.sym.load_json(json.dumps(graph))
    sym_file, params_file = symbol_files(prefix)
    sym.save(sym_file)
    keep = {f"arg:{n}" for n in sym.list_arguments()} | {
        f"aux:{n}" for n in sym.list_auxiliary_states()}
    mx.nd.save(params_file, {k: v for k, v in params.items() if k in keep})


def fold_constants(prefix: str) -> int:
    """Rewrite an exported model so in-graph constants become parameters.

    Input-free constant ops (``_full``, ``_zeros``, ``_ones``: e.g. the fixed weights of an
    average pool written as a convolution) become parameters of the same name, and
    ``BlockGrad``/``stop_gradient`` (identities at inference) are bypassed. ONNX export and
    INT8 quantization need weights to be parameters. Returns the number of nodes changed.
    """
    graph, params = read_graph(prefix)
    nodes = graph["nodes"]
    changed = 0
    for i, node in enumerate(nodes):
        if node["op"] in _CONSTANT_OPS and not node["inputs"]:
            attrs = node.get("attrs", {})
            shape = ast.literal_eval(attrs["shape"])
            value = {"_zeros": 0.0, "_ones": 1.0}.get(node["op"], float(attrs.get("value", 0)))
            dtype = attrs.get("dtype", "float32")
            params[f"arg:{node['name']}"] = mx.nd.full(shape, value, dtype=dtype)
            nodes[i] = {"op": "null", "name": node["name"], "inputs": []}
            graph["arg_nodes"] = sorted(set(graph["arg_nodes"]) | {i})
            changed += 1
    source = {i: n["inputs"][0] for i, n in enumerate(nodes)
              if n["op"] in _IDENTITY_OPS and len(n["inputs"]) == 1}

    def follow(entry):
        while entry[0] in source:
            entry = source[entry[0]]
        return entry
    for node in nodes:
        node["inputs"] = [follow(e) for e in node["inputs"]]
    graph["heads"] = [follow(e) for e in graph["heads"]]
    changed += len(source)
    if changed:
        write_graph(prefix, graph, params)
    return changed


# -- write and read ----------------------------------------------------------------------------
def export_symbol(net: HybridBlock, prefix: str, size: Optional[int] = None,
                  fold: bool = True) -> Tuple[str, str]:
    """Write the inference graph: ``prefix-symbol.json`` and ``prefix-0000.params``.

    The graph is traced on a (1, 3, size, size) batch in predict mode; the exported files
    accept any batch size and any resolution >= the network's total stride. With ``fold``,
    in-graph constants become parameters (:func:`fold_constants`). Returns the two paths.
    """
    check_block(net)
    size = input_size(net, size)
    _check_folder(prefix)
    if not is_hybridized(net):
        net.hybridize(static_alloc=True, static_shape=True)
    with mx.autograd.predict_mode():
        net(mx.nd.zeros((1, 3, size, size), ctx=_param_ctx(net)))
    net.export(prefix, 0)
    if fold:
        fold_constants(prefix)
    return symbol_files(prefix)


def write_block(block: HybridBlock, prefix: str, size: int) -> Tuple[str, str]:
    """Write a converted graph (INT8 or BF16 ``SymbolBlock``) as it is, casts included: a
    BF16 graph keeps its ``amp_cast`` nodes, so it takes and returns float32."""
    check_block(block)
    _check_folder(prefix)
    if not is_hybridized(block):
        block.hybridize(static_alloc=True, static_shape=True)
    with mx.autograd.predict_mode():
        block(mx.nd.zeros((1, 3, size, size), ctx=_param_ctx(block)))
    block.export(prefix, 0, remove_amp_cast=False)
    return symbol_files(prefix)


def load_symbol(prefix: str, ctx=None) -> SymbolBlock:
    """Load ``prefix-symbol.json`` / ``prefix-0000.params`` as a SymbolBlock (input ``data``).

    Parameters keep the dtype they were saved with (bfloat16 in a BF16 model)."""
    sym_file, params_file = symbol_files(prefix)
    for f in (sym_file, params_file):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"exported model file {f!r} does not exist")
    with warnings.catch_warnings():   # "Cannot decide type for data": it is float32
        warnings.simplefilter("ignore")
        return SymbolBlock.imports(sym_file, ["data"], params_file, ctx=ctx or mx.cpu())
