"""GluonCV registration: every variant's name in GluonCV's model zoo.

``register()`` (run by ``import gluon_resnest``) puts every variant into GluonCV's name table,
replacing GluonCV's own entries of the same names, so ``gluoncv.model_zoo.get_model('resnest50')``
builds ours. Registering again is a no-op. The detection and segmentation names are added by
:mod:`.gluoncv_dense`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict

from .._compat import gluoncv_model_table
from ..model.resnest import ResNeSt
from ..model.variants import variant_names
from ..weights.pretrained import get_model
from .gluoncv_dense import register_dense

__all__ = ["register"]

_REGISTERED: Dict[str, Callable[..., Any]] = {}


def _constructor(name: str) -> Callable[..., ResNeSt]:
    @functools.wraps(get_model)
    def make(**kwargs: Any) -> ResNeSt:
        return get_model(name, **kwargs)
    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"ResNeSt variant {name!r} (gluon_resnest). " + (get_model.__doc__ or "")
    make._gluon_resnest = True
    return make


def register() -> None:
    """Add every variant to GluonCV's model zoo (idempotent)."""
    table = gluoncv_model_table()
    for name in variant_names():
        fn = _REGISTERED.get(name) or _constructor(name)
        _REGISTERED[name] = fn
        table[name] = fn
    register_dense(table)

