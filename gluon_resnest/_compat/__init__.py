"""Imports that need a workaround in this environment.

* ``import gluoncv`` (0.10.5) raises RuntimeError when any torch >= 2.0 is installed: its
  package ``__init__`` insists on torch < 2 although the MXNet side never uses torch. The
  check treats a missing torch as fine, so :func:`import_gluoncv` hides torch from that one
  import and then restores it. Import gluon_resnest (or use ``gluon-resnest run``) before
  gluoncv in environments with torch >= 2.
* ``import timm`` (used by the tests and ``bench/`` as a reference): PyPI's torchvision for
  x86_64 is a CUDA build whose C extension cannot load next to the CPU torch wheel, and its
  import then dies in ``torchvision._meta_registrations``, which registers fake kernels for
  the missing C++ ops (nms, roi_align, ...). timm only uses torchvision's pure-Python parts,
  so :func:`import_timm` retries with that one module stubbed out, only when that exact
  failure happens; with a matching torchvision it changes nothing.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

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


def import_timm():
    """``import timm`` next to a torchvision whose C ops cannot load (see the module doc).
    Raises ImportError when torch or timm is not installed."""
    import torch  # noqa: F401
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations")
    except ImportError:
        pass
    return importlib.import_module("timm")


def gluoncv_model_table() -> dict:
    """GluonCV's private name table ``gluoncv.model_zoo.model_zoo._models`` (name -> constructor)."""
    gluoncv = import_gluoncv()
    try:
        from gluoncv.model_zoo import model_zoo as gcv_zoo
        table = gcv_zoo._models
    except (ImportError, AttributeError) as err:
        raise RuntimeError(
            f"gluon_resnest cannot register in GluonCV {gluoncv.__version__}: "
            f"gluoncv.model_zoo.model_zoo._models is missing ({err}). Supported: gluoncv "
            f"0.10.5.post0") from None
    if not isinstance(table, dict):
        raise RuntimeError(f"GluonCV {gluoncv.__version__}: model_zoo._models is a "
                           f"{type(table).__name__}, expected a dict")
    return table
