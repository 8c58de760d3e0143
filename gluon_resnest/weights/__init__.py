"""Weights: GluonCV's files (naming, local lookup), PyTorch/timm conversion, and
:func:`get_model`, a variant with its weights by GluonCV's ``pretrained=`` convention."""
from ..model.parameters import ParameterMismatchError, load_arrays, load_parameters, read_arrays
from .gluoncv import KNOWN_SHA1, default_root, resolve_pretrained
from .pretrained import IMAGENET_CLASSES, get_model

__all__ = ["IMAGENET_CLASSES", "KNOWN_SHA1", "ParameterMismatchError", "default_root",
           "get_model", "load_arrays", "load_parameters", "read_arrays", "resolve_pretrained"]
