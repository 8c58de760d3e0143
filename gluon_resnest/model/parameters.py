"""Named arrays into a network: strict key and shape checks, one mismatch report.

Keys are MXNet's structural parameter names (``layer1.0.conv2.fc1.weight``), the format of
GluonCV's and the official ResNeSt files. Every loader of this package ends here: files through
:func:`load_parameters`, arrays already in memory through :func:`load_arrays`.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Tuple

import mxnet as mx
from mxnet.base import MXNetError

from .._compat.mxnet_blocks import load_into_param, structural_params

__all__ = ["ParameterMismatchError", "check_keys", "read_arrays", "load_arrays",
           "load_parameters"]


class ParameterMismatchError(ValueError):
    """A parameter file whose keys or shapes do not fit the network."""


def read_arrays(filename: str) -> Dict[str, mx.nd.NDArray]:
    """The name -> array map of an MXNet ``.params`` file, with clear errors.

    ``export()``'s ``arg:``/``aux:`` key prefixes are removed.
    """
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"parameter file {filename!r} does not exist")
    try:
        loaded = mx.nd.load(filename)
    except MXNetError as err:
        size = os.path.getsize(filename)
        raise ValueError(f"cannot read parameter file {filename!r} ({size} bytes): it is "
                         f"truncated or not an MXNet .params file ({str(err).splitlines()[0]})"
                         ) from None
    if not isinstance(loaded, dict):
        raise ValueError(f"parameter file {filename!r} holds an unnamed list, not a name->array map")
    return _strip_export_prefixes(loaded)


def _strip_export_prefixes(arrays: Mapping[str, mx.nd.NDArray]) -> Dict[str, mx.nd.NDArray]:
    return {k.split(":", 1)[1] if k[:4] in ("arg:", "aux:") else k: v for k, v in arrays.items()}


def _limited(names: List[str], n: int = 10) -> str:
    more = f" ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


_LOAD_HINT = (" Check the variant name (e.g. stem width 32 for resnest50, 64 for resnest101) and "
              "classes=; pass allow_missing/ignore_extra to load a subset.")


def check_keys(expected: Mapping[str, Tuple[int, ...]], given: Mapping[str, Tuple[int, ...]],
               source: str, target: str, allow_missing: bool = False,
               ignore_extra: bool = False, labels: Tuple[str, str] = ("file", "net"),
               hint: str = _LOAD_HINT) -> None:
    """The one mismatch report: raise :class:`ParameterMismatchError` listing every shape
    mismatch, missing key and unexpected key of ``given`` ({key: shape}) against ``expected``.

    ``source`` and ``target`` name both sides (``"parameter file 'x.params'"``, ``"ResNeSt"``),
    ``labels`` the two shapes of a mismatch; ``hint`` ends the message. Unknown (deferred)
    expected shapes are not compared.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [f"{k}: {labels[0]} {tuple(given[k])} vs {labels[1]} {tuple(expected[k])}"
              for k in expected if k in given and expected[k] and 0 not in expected[k]
              and tuple(given[k]) != tuple(expected[k])]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_limited(shapes)}")
    if missing and not allow_missing:
        problems.append(f"{len(missing)} missing keys: {_limited(missing)}")
    if unexpected and not ignore_extra:
        problems.append(f"{len(unexpected)} unexpected keys: {_limited(unexpected)}")
    if problems:
        raise ParameterMismatchError(f"{source} does not fit {target}: " + "; ".join(problems)
                                     + "." + hint)


def load_arrays(net: mx.gluon.Block, arrays: Mapping[str, mx.nd.NDArray],
                source: str = "the arrays", ctx=None, allow_missing: bool = False,
                ignore_extra: bool = False, cast_dtype: bool = False,
                dtype_source: str = "current", skip: tuple = ()) -> None:
    """Load named arrays into ``net``, listing every mismatch in one error.

    Keys are structural (``layer1.0.conv1.weight``); a map without any dotted key is taken as
    the legacy format, full parameter names without the net's prefix (``Block.save_params``).
    ``source`` names the arrays in errors (``"parameter file 'x.params'"``). ``skip``: key prefixes (e.g.
    ``("fc.",)``) neither loaded nor reported.
    """
    arrays = _strip_export_prefixes(arrays)
    if arrays and not any("." in k for k in arrays):  # legacy prefixed names
        params = dict(net.collect_params().items())
        arrays = {net.prefix + k: v for k, v in arrays.items()}
    else:
        params = structural_params(net)
    if skip:
        arrays = {k: v for k, v in arrays.items() if not k.startswith(skip)}
        params = {k: v for k, v in params.items() if not k.startswith(skip)}
    check_keys({k: tuple(p.shape or ()) for k, p in params.items()},
               {k: tuple(v.shape) for k, v in arrays.items()}, source, type(net).__name__,
               allow_missing=allow_missing, ignore_extra=ignore_extra)
    if ctx is None:
        ctx = [mx.cpu()]
    elif isinstance(ctx, mx.Context):
        ctx = [ctx]
    for name, param in params.items():
        if name in arrays:
            load_into_param(param, arrays[name], ctx, cast_dtype=cast_dtype,
                            dtype_source=dtype_source)


def load_parameters(net: mx.gluon.Block, filename: str, ctx=None, allow_missing: bool = False,
                    ignore_extra: bool = False, cast_dtype: bool = False,
                    dtype_source: str = "current", skip: tuple = ()) -> None:
    """Load a ``.params`` file into ``net`` (:func:`read_arrays` + :func:`load_arrays`)."""
    load_arrays(net, read_arrays(filename), f"parameter file {filename!r}", ctx=ctx,
                allow_missing=allow_missing, ignore_extra=ignore_extra, cast_dtype=cast_dtype,
                dtype_source=dtype_source, skip=skip)
