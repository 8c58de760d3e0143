"""gluon_resnest: ResNeSt (Split-Attention Networks) for MXNet Gluon and GluonCV.

``import gluon_resnest`` registers every variant in GluonCV's model zoo.
``gluon_resnest.load(model)`` loads any form of model (a variant, an exported prefix, an
``.onnx`` file, a ``.ckpt`` or a run folder) with the metadata that says how to feed it.
"""
# ruff: noqa: E402  (AMX must be switched on before any import that could run an operator)
from ._compat.onednn import enable_amx as _enable_amx

_enable_amx()  # where the CPU has AMX: oneDNN reads its ISA variable at its first primitive

from .integrations.gluoncv import register
from .model.blocks import Bottleneck, DropBlock
from .model.parameters import load_parameters
from .model.resnest import ResNeSt, StageFeatures, build
from .model.splat import SplitAttention
from .model.variants import ALIASES, VARIANTS, VariantSpec, variant_names
from .weights.pretrained import get_model

__version__ = "0.2.0"
__all__ = ["SplitAttention", "DropBlock", "Bottleneck", "ResNeSt", "StageFeatures",
           "VariantSpec", "VARIANTS", "ALIASES", "build", "get_model", "load_parameters",
           "register", "variant_names", "load", "__version__"]

register()


def __getattr__(name: str):
    # the loader pulls in the training and deployment code: only when asked for
    if name == "load":
        from .train.inference import load
        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
