"""The only home of MXNet's and GluonCV's private members, and imports that need a workaround.

Private members, each named once and checked when first used (a RuntimeError naming the
installed version if one is missing or the version is not the supported one):

* :mod:`.mxnet_blocks`: MXNet's Block/HybridBlock/Parameter internals (structural keys,
  loading into a parameter, the traced-graph cache).
* :mod:`.gluoncv_dense`: GluonCV's detection/segmentation internals.
* here: GluonCV's model name table (:func:`gluoncv_model_table`) and its DropBlock class
  (:func:`gluoncv_dropblock_class`).

Imports:

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

#: The GluonCV versions whose private members this package was checked against.
SUPPORTED_GLUONCV = ("0.10.", "0.11.")


def check_gluoncv_version(gluoncv: types.ModuleType, what: str) -> None:
    """RuntimeError unless ``gluoncv`` is a supported version (``what`` says what needs it)."""
    version = str(getattr(gluoncv, "__version__", "unknown"))
    if not version.startswith(SUPPORTED_GLUONCV):
        raise RuntimeError(f"gluon_resnest {what} relies on GluonCV internals checked against "
                           f"gluoncv {' / '.join(v + 'x' for v in SUPPORTED_GLUONCV)} (tested with "
                           f"0.10.5.post0); installed: gluoncv {version}")


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
    check_gluoncv_version(gluoncv, "registering its models in GluonCV's zoo")
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


def gluoncv_dropblock_class() -> type:
    """GluonCV's DropBlock class. ``gluoncv.nn.dropblock.set_drop_prob`` sets ``drop_prob`` only
    on instances of it, so a DropBlock GluonCV's recipes can switch off must subclass it."""
    gluoncv = import_gluoncv()
    try:
        from gluoncv.nn import dropblock
        cls, setter = dropblock.DropBlock, dropblock.set_drop_prob
    except (ImportError, AttributeError) as err:
        raise RuntimeError(f"GluonCV {gluoncv.__version__}: gluoncv.nn.dropblock.DropBlock / "
                           f"set_drop_prob missing ({err})") from None
    if not (isinstance(cls, type) and callable(setter)):
        raise RuntimeError(f"GluonCV {gluoncv.__version__}: gluoncv.nn.dropblock.DropBlock is "
                           f"not a class")
    return cls
