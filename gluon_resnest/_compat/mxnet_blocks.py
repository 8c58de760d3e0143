"""MXNet 1.9's private Block/HybridBlock/Parameter members this package relies on, each named once.

Checked at import (a RuntimeError naming the MXNet version if one is missing or the version is
not 1.9.x):

- ``Block._collect_params_with_prefix()``: parameters by structural key
  (``layer1.0.conv2.fc1.weight``), the key format of GluonCV's and the official weight files.
- ``Parameter._load_init(data, ctx, cast_dtype, dtype_source)``: puts loaded data into a
  parameter, initialising it if needed (what ``Block.load_parameters`` does per parameter).
- ``Parameter._data``: None until the parameter is initialised (MXNet has no public test for
  "initialised, deferred or not", only ``data()`` that raises).
- HybridBlock's traced-graph cache: the fields :data:`_CACHE_FIELDS`, ``_active`` (hybridized),
  ``_call_cached_op`` (run / trace the graph) and the hook ``_clear_cached_op``.
  :class:`PerKeyGraphCache` keeps one traced graph per key on top of them.
- ``Block._children``: the registered child blocks (``apply`` visits them but cannot stop).
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, Iterator, Optional

import mxnet as mx
from mxnet.gluon import Block, HybridBlock, Parameter

__all__ = ["SUPPORTED_MXNET", "structural_params", "load_into_param", "is_initialized",
           "is_hybridized", "children", "PerKeyGraphCache"]

SUPPORTED_MXNET = "1.9.x (tested with 1.9.1)"

#: HybridBlock's (MXNet 1.9) traced-graph fields, and their values before any trace.
_CACHE_FIELDS = ("_cached_graph", "_cached_op", "_cached_op_args", "_in_format", "_out_format",
                 "_backend")


def _fail(what: str) -> None:
    raise RuntimeError(f"gluon_resnest needs MXNet {SUPPORTED_MXNET}; MXNet {mx.__version__} "
                       f"{what}")


def _check_mxnet() -> None:
    if not str(mx.__version__).startswith("1.9."):
        _fail("is a different version: its private Block/Parameter members may differ")
    probe = HybridBlock()
    missing = [f for f in _CACHE_FIELDS + ("_active", "_children") if not hasattr(probe, f)]
    missing += [f"HybridBlock.{m}" for m in ("_call_cached_op", "_clear_cached_op")
                if not callable(getattr(HybridBlock, m, None))]
    if not callable(getattr(Block, "_collect_params_with_prefix", None)):
        missing.append("Block._collect_params_with_prefix")
    if not callable(getattr(Parameter, "_load_init", None)):
        missing.append("Parameter._load_init")
    if not hasattr(Parameter("probe"), "_data"):
        missing.append("Parameter._data")
    if missing:
        _fail(f"lacks {', '.join(missing)}")


_check_mxnet()


def structural_params(block: Block) -> Dict[str, Parameter]:
    """``{structural key: Parameter}``, e.g. ``layer1.0.conv2.fc1.weight`` (attribute path)."""
    return block._collect_params_with_prefix()


def load_into_param(param: Parameter, data: mx.nd.NDArray, ctx: Any, cast_dtype: bool = False,
                    dtype_source: str = "current") -> None:
    """Set ``param`` to ``data`` on ``ctx`` (a list of contexts), initialising it if needed."""
    param._load_init(data, ctx, cast_dtype=cast_dtype, dtype_source=dtype_source)


def is_initialized(param: Parameter) -> bool:
    """True once ``param`` holds data (initialised or loaded, deferred shapes resolved)."""
    return param._data is not None


def is_hybridized(block: HybridBlock) -> bool:
    """True after ``block.hybridize()`` (and not ``hybridize(active=False)``)."""
    return bool(block._active)


def children(block: Block) -> Iterator[Block]:
    """The registered child blocks of ``block``, in registration order."""
    return iter(block._children.values())


class PerKeyGraphCache(HybridBlock):
    """A HybridBlock that keeps one traced graph per key instead of one.

    MXNet traces a hybridized block once; a subclass whose graph depends on a setting (training
    or inference, a backend, ...) calls :meth:`use_graph` with a key for that setting before
    the call, and the graph traced for the key is swapped in (traced on first use).
    ``keep_others=False`` drops every kept graph (when a value baked into them changed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._graphs: Dict[Hashable, tuple] = {}
        self._graph_key: Optional[Hashable] = None

    def use_graph(self, key: Hashable, backend: Optional[str] = None,
                  keep_others: bool = True) -> None:
        """Swap in the graph traced for ``key`` (a fresh one with ``backend`` if none yet).

        ``keep_others=False`` forgets the graphs of every other key.
        """
        if key == self._graph_key:
            return
        if self._graph_key is not None and keep_others:
            self._graphs[self._graph_key] = tuple(getattr(self, f) for f in _CACHE_FIELDS)
        if not keep_others:
            self._graphs = {}
        fresh = ((), None, [], None, None, backend)
        for field, value in zip(_CACHE_FIELDS, self._graphs.pop(key, fresh)):
            object.__setattr__(self, field, value)
        self._graph_key = key

    @property
    def graph_key(self) -> Optional[Hashable]:
        """The key of the graph in use (None before the first :meth:`use_graph`)."""
        return self._graph_key

    def has_graph(self) -> bool:
        """True if the graph in use has been traced."""
        return bool(self._cached_graph)

    def trace(self, *args: Any) -> Any:
        """Run the hybridized graph on NDArray ``args`` (tracing it if needed)."""
        return self._call_cached_op(*args)

    def _clear_cached_op(self) -> None:   # MXNet's hook: hybridize() and cast() call it
        super()._clear_cached_op()
        self._graphs = {}
        self._graph_key = None
