"""GluonCV's weight files: naming and local lookup (the loading itself is ``model.parameters``).

GluonCV stores pretrained weights as ``{root}/{name}-{sha1[:8]}.params`` with structural
keys (``layer1.0.conv2.fc1.weight``). Nothing is ever downloaded here: a file that is not
on disk is a FileNotFoundError that lists where it was looked for.
"""
from __future__ import annotations

import glob
import os
from typing import Optional, Union

__all__ = ["KNOWN_SHA1", "default_root", "resolve_pretrained"]

#: sha1 of GluonCV's published classification files (gluoncv/model_zoo/model_store.py).
KNOWN_SHA1 = {
    "resnest14": "7e0b0cae2fd7e9084d1e498b858af1429a6eb1cb",
    "resnest26": "364590740605b6a2b95f5bb77436d781a817436f",
    "resnest50": "bcfefe1dd1dd1ef5cfed5563123c1490ea37b42e",
    "resnest101": "5da943b3230f071525a98639945a6b3b3a45ac95",
    "resnest200": "0c5d117df664ace220aa6fc2922c094bb079d381",
    "resnest269": "11ae7f5da2bcdbad05ba7e84f9b74383e717f3e3",
}


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
