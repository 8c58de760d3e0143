"""gluon_resnest: ResNeSt (Split-Attention Networks) for MXNet Gluon and GluonCV.

``import gluon_resnest`` registers every variant in GluonCV's model zoo.
"""
from .blocks import Bottleneck, DropBlock
from .resnest import ALIASES, VARIANTS, ResNeSt, StageFeatures, VariantSpec, build, variant_names
from .splat import SplitAttention
from .weights import load_parameters
from .zoo import get_model, register

__version__ = "0.1.0"
__all__ = ["SplitAttention", "DropBlock", "Bottleneck", "ResNeSt", "StageFeatures",
           "VariantSpec", "VARIANTS", "ALIASES", "build", "get_model", "load_parameters",
           "register", "variant_names", "__version__"]

register()
