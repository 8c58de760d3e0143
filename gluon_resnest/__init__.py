"""gluon_resnest: ResNeSt (Split-Attention Networks) for MXNet Gluon and GluonCV.

``import gluon_resnest`` registers every variant in GluonCV's model zoo.
"""
from .integrations.gluoncv import register
from .model.blocks import Bottleneck, DropBlock
from .model.parameters import load_parameters
from .model.resnest import ResNeSt, StageFeatures, build
from .model.splat import SplitAttention
from .model.variants import ALIASES, VARIANTS, VariantSpec, variant_names
from .weights.pretrained import get_model

__version__ = "0.1.0"
__all__ = ["SplitAttention", "DropBlock", "Bottleneck", "ResNeSt", "StageFeatures",
           "VariantSpec", "VARIANTS", "ALIASES", "build", "get_model", "load_parameters",
           "register", "variant_names", "__version__"]

register()
