"""Importing GluonCV next to PyTorch 2.

``import gluoncv`` (0.10.5) raises RuntimeError when any torch >= 2.0 is installed: its
package ``__init__`` insists on torch < 2 although the MXNet side never uses torch. The
check treats a missing torch as fine, so :func:`import_gluoncv` hides torch from that one
import and then restores it. Import gluon_resnest (or use ``gluon-resnest run``) before
gluoncv in environments with torch >= 2.
"""
from __future__ import annotations

import importlib
import sys

_MISSING = object()


def import_gluoncv():
    """``import gluoncv``, tolerating an installed torch >= 2."""
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    try:
        return importlib.import_module("gluoncv")
    except RuntimeError as err:
        if "torch" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "gluoncv" or m.startswith("gluoncv.")]:
        del sys.modules[name]
    saved = sys.modules.get("torch", _MISSING)
    sys.modules["torch"] = None  # makes `import torch` raise ImportError inside the check
    try:
        return importlib.import_module("gluoncv")
    finally:
        if saved is _MISSING:
            sys.modules.pop("torch", None)
        else:
            sys.modules["torch"] = saved
