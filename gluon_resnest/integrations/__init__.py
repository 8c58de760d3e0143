"""Where gluon_resnest plugs into other libraries: GluonCV's model zoo (:mod:`.gluoncv`)."""
from .gluoncv import register

__all__ = ["register"]
