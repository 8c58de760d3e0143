"""Detection and segmentation names in GluonCV's model zoo (called from ``register``).

Adds :data:`~gluon_resnest.dense.registry.DENSE_MODELS` to GluonCV's name table, wraps
``custom_faster_rcnn_fpn`` / ``custom_mask_rcnn_fpn`` so a ResNeSt ``base_network_name`` builds
on our backbone (others go to GluonCV's own), adds ``custom_cascade_rcnn_fpn`` /
``custom_cascade_mask_rcnn_fpn`` (ours for every backbone: GluonCV has no cascade), and
routes GluonCV's segmentation backbone lookup for ResNeSt names to our dilated ResNeSt. The
GluonCV internals involved live in ``_compat.gluoncv_dense``. Nothing here imports the
detection/segmentation modules: the registered constructors and the backbone route load them
on their first call.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict

from .._compat.gluoncv_dense import fail, patch_segmentation_backbone
from ..dense.registry import CUSTOM_MODELS, DENSE_MODELS, GLUONCV_CUSTOM
from ..model.resnest import ResNeSt
from ..model.variants import resolve_name

__all__ = ["register_dense", "is_resnest_name"]


def is_resnest_name(name: Any) -> bool:
    """True if ``name`` is one of this package's ResNeSt variants (or aliases)."""
    try:
        resolve_name(name)
    except (TypeError, ValueError):
        return False
    return True


def _custom_dispatch(name: str, ours: Callable[..., Any], theirs: Callable[..., Any]):
    @functools.wraps(ours)
    def make(*args: Any, **kwargs: Any):
        base = kwargs.get("base_network_name", "resnet18_v1b")
        if is_resnest_name(base):
            return ours(*args, **kwargs)
        return theirs(*args, **kwargs)
    make.__name__ = make.__qualname__ = name
    make._gluon_resnest = True
    make._gluoncv_original = theirs
    return make


def dilated_backbone(name: str, **kwargs: Any) -> ResNeSt:
    """GluonCV's segmentation backbone lookup for a ResNeSt name: our dilated ResNeSt
    (:func:`gluon_resnest.dense.segmentation.dilated_backbone`, loaded on first use)."""
    from ..dense.segmentation import dilated_backbone as build
    return build(name, **kwargs)


def register_dense(gcv_models: Dict[str, Callable[..., Any]]) -> None:
    """Add the detection/segmentation names to GluonCV's table ``gcv_models`` (idempotent).

    Also wraps the custom R-CNN constructors and patches the segmentation backbone lookup.
    """
    if not isinstance(gcv_models, dict):
        fail(f"the model table is a {type(gcv_models).__name__}, expected a dict")
    for name, fn in DENSE_MODELS.items():
        gcv_models[name] = fn
    for name, fn in CUSTOM_MODELS.items():
        current = gcv_models.get(name)
        if name not in GLUONCV_CUSTOM:         # GluonCV has no cascade: ours for every backbone
            gcv_models[name] = fn
            continue
        if current is None:
            fail(f"gluoncv.model_zoo has no {name!r}")
        if not getattr(current, "_gluon_resnest", False):
            gcv_models[name] = _custom_dispatch(name, fn, current)
    patch_segmentation_backbone(dilated_backbone)
