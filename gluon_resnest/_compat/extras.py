"""Optional dependencies: one import helper and one error that names the extra to install.

The extras are declared in ``setup.py``; :data:`EXTRAS` maps each to its install command so
every message points at the same one.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict

__all__ = ["EXTRAS", "MissingExtraError", "import_extra"]

#: extra name -> the command that installs it
EXTRAS: Dict[str, str] = {name: f"pip install 'gluon_resnest[{name}]'"
                          for name in ("torch", "onnx", "openvino")}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or :class:`MissingExtraError` saying that ``purpose`` needs ``extra``.

    ``purpose`` completes "<purpose> needs <module>", e.g. ``"reading PyTorch checkpoints"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{purpose} needs {module}, part of the optional {extra!r} "
                                f"extra: {EXTRAS[extra]}") from err
