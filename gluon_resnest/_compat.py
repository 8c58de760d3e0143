"""Importing GluonCV next to PyTorch 2.

``import gluoncv`` (0.10.5) raises RuntimeError when any torch >= 2.0 is installed: its
package ``__init__`` insists on torch < 2 although the MXNet side never uses torch. The
check treats a missing torch as fine, so :func:`import_gluoncv` hides torch from that one
import and then restores it. Import gluon_resnest (or use ``gluon-resnest run``) before
gluoncv in environments with torch >= 2.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

_MISSING = object()


def import_gluoncv():
    """``import gluoncv``, tolerating an installed torch >= 2."""
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    if sys.modules.get("torch") is None and importlib.util.find_spec("torch") is None:
        return importlib.import_module("gluoncv")  # no torch: nothing to hide
    saved = sys.modules.get("torch", _MISSING)
    sys.modules["torch"] = None  # makes `import torch` raise ImportError inside the check
    try:
        return importlib.import_module("gluoncv")
    finally:
        if saved is _MISSING:
            sys.modules.pop("torch", None)
        else:
            sys.modules["torch"] = saved
