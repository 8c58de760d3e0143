"""Named arrays into a network: strict key and shape checks, one mismatch report.

Keys are MXNet's structural parameter names (``layer1.0.conv2.fc1.weight``), the format of
GluonCV's and the official ResNeSt files. Every loader of this package ends here.
"""
from __future__ import annotations

import os
from typing import List

import mxnet as mx
from mxnet.base import MXNetError

__all__ = ["ParameterMismatchError", "load_parameters"]

class ParameterMismatchError(ValueError):
    """A parameter file whose keys or shapes do not fit the network."""



def _read(filename: str) -> dict:
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
    # export() writes 'arg:'/'aux:' prefixes; accept them too.
    return {k.split(":", 1)[1] if k[:4] in ("arg:", "aux:") else k: v for k, v in loaded.items()}


def _limited(names: List[str], n: int = 20) -> str:
    more = f" ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_parameters(net: mx.gluon.Block, filename: str, ctx=None, allow_missing: bool = False,
                    ignore_extra: bool = False, cast_dtype: bool = False,
                    dtype_source: str = "current", skip: tuple = ()) -> None:
    """Load structural-key parameters into ``net``, listing every mismatch in one error.

    ``skip``: key prefixes (e.g. ``("fc.",)``) neither loaded nor reported.
    """
    loaded = _read(filename)
    params = net._collect_params_with_prefix()
    if skip:
        loaded = {k: v for k, v in loaded.items() if not k.startswith(skip)}
        params = {k: v for k, v in params.items() if not k.startswith(skip)}
    if loaded and not any("." in k for k in loaded):  # legacy prefixed names
        net.collect_params().load(filename, ctx, allow_missing, ignore_extra, net.prefix,
                                  cast_dtype=cast_dtype, dtype_source=dtype_source)
        return
    missing = sorted(set(params) - set(loaded))
    unexpected = sorted(set(loaded) - set(params))
    shapes = [f"{k}: file {tuple(loaded[k].shape)} vs net {params[k].shape}"
              for k in sorted(set(params) & set(loaded))
              if params[k].shape and 0 not in params[k].shape
              and tuple(loaded[k].shape) != tuple(params[k].shape)]
    problems = []
    if missing and not allow_missing:
        problems.append(f"missing keys ({len(missing)}): {_limited(missing)}")
    if unexpected and not ignore_extra:
        problems.append(f"unexpected keys ({len(unexpected)}): {_limited(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_limited(shapes, 10)}")
    if problems:
        raise ParameterMismatchError(
            f"parameter file {filename!r} does not fit {type(net).__name__}: " + "; ".join(problems)
            + ". Check the variant name (e.g. stem width 32 for resnest50, 64 for resnest101) "
              "and classes=; pass allow_missing/ignore_extra to load a subset.")
    if ctx is None:
        ctx = [mx.cpu()]
    elif isinstance(ctx, mx.Context):
        ctx = [ctx]
    for name, param in params.items():
        if name in loaded:
            param._load_init(loaded[name], ctx, cast_dtype=cast_dtype, dtype_source=dtype_source)
