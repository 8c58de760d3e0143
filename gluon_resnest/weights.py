"""Parameter files: GluonCV's naming and lookup, local files only, strict key checks.

GluonCV stores pretrained weights as ``{root}/{name}-{sha1[:8]}.params`` with structural
keys (``layer1.0.conv2.fc1.weight``). Nothing is ever downloaded here: a file that is not
on disk is a FileNotFoundError that lists where it was looked for.
"""
from __future__ import annotations

import glob
import os
from typing import List, Optional, Union

import mxnet as mx
from mxnet.base import MXNetError

__all__ = ["KNOWN_SHA1", "default_root", "resolve_pretrained", "load_parameters",
           "ParameterMismatchError"]

#: sha1 of GluonCV's published classification files (gluoncv/model_zoo/model_store.py).
KNOWN_SHA1 = {
    "resnest14": "7e0b0cae2fd7e9084d1e498b858af1429a6eb1cb",
    "resnest26": "364590740605b6a2b95f5bb77436d781a817436f",
    "resnest50": "bcfefe1dd1dd1ef5cfed5563123c1490ea37b42e",
    "resnest101": "5da943b3230f071525a98639945a6b3b3a45ac95",
    "resnest200": "0c5d117df664ace220aa6fc2922c094bb079d381",
    "resnest269": "11ae7f5da2bcdbad05ba7e84f9b74383e717f3e3",
}


class ParameterMismatchError(ValueError):
    """A parameter file whose keys or shapes do not fit the network."""


def default_root(root: Optional[str] = None) -> str:
    """GluonCV's model folder: ``$MXNET_HOME/models`` if set, else ``root`` or ~/.mxnet/models."""
    if "MXNET_HOME" in os.environ:
        return os.path.join(os.environ["MXNET_HOME"], "models")
    return os.path.expanduser(root or os.path.join("~", ".mxnet", "models"))


def resolve_pretrained(name: str, pretrained: Union[bool, str],
                       root: Optional[str] = None) -> str:
    """Path of the weights meant by GluonCV's ``pretrained=`` convention.

    ``True``: ``{root}/{name}-{sha8}.params`` (any ``{name}-*.params`` when the hash is unknown);
    a str naming an existing file: that file; another str: a hash tag, ``{root}/{name}-{tag}.params``.
    """
    root_dir = default_root(root)
    if isinstance(pretrained, str):
        path = os.path.expanduser(pretrained)
        if os.path.isfile(path):
            return path
        if os.sep in pretrained or pretrained.endswith(".params"):
            raise FileNotFoundError(f"pretrained weights file {pretrained!r} does not exist")
        candidates = [os.path.join(root_dir, f"{name}-{pretrained[:8]}.params")]
    elif pretrained is True:
        sha = KNOWN_SHA1.get(name)
        candidates = ([os.path.join(root_dir, f"{name}-{sha[:8]}.params")] if sha else
                      sorted(glob.glob(os.path.join(root_dir, f"{name}-*.params"))))
        if not sha and not candidates:
            candidates = [os.path.join(root_dir, f"{name}-<hash>.params")]
    else:
        raise TypeError(f"pretrained must be a bool, a hash tag or a file path, got {pretrained!r}")
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"no pretrained weights for {name!r}: looked for {', '.join(candidates)}. Nothing is "
        f"downloaded; put GluonCV's file there, pass root=DIR, or pass pretrained='/path/x.params'")


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
