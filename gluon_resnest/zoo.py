"""The model zoo: ``get_model`` and the one place that touches GluonCV's internals.

``register()`` (run by ``import gluon_resnest``) puts every variant into GluonCV's private
name table ``gluoncv.model_zoo.model_zoo._models``, replacing GluonCV's own entries of the
same names, so ``gluoncv.model_zoo.get_model('resnest50')`` builds ours. Registering again is
a no-op. GluonCV internals used here: ``model_zoo.model_zoo._models``; the detection and
segmentation hooks live beside it in ``zoo_dense.py``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Union

import mxnet as mx

from .resnest import ResNeSt, build, resolve_name, variant_names
from .weights import load_parameters, resolve_pretrained

__all__ = ["get_model", "register", "registered_names", "SUPPORTED_GLUONCV"]

SUPPORTED_GLUONCV = ("0.10.", "0.11.")
_REGISTERED: Dict[str, Callable[..., Any]] = {}


def get_model(name: str, pretrained: Union[bool, str] = False, ctx: Any = None,
              root: Optional[str] = None, **kwargs: Any) -> ResNeSt:
    """Build ResNeSt variant ``name`` with GluonCV's conventions.

    pretrained : False (random init, uninitialised like GluonCV), True (GluonCV's file
        ``{root}/{name}-{sha8}.params``), a hash tag, or a local file path. Nothing is downloaded.
    ctx : context(s) the weights are loaded to (default CPU).
    root : folder holding GluonCV-named weight files (default ``$MXNET_HOME/models`` or
        ``~/.mxnet/models``).
    kwargs : ``classes``, ``dilated``/``output_stride``, ``norm_layer``, ``norm_kwargs``,
        ``dropblock_prob``, ``final_drop``, ``last_gamma``, ... (see :class:`ResNeSt`).
        With ``pretrained`` and ``classes`` other than 1000, all but the classifier is loaded
        and ``fc`` is freshly initialised (fine-tuning).
    """
    canonical = resolve_name(name)
    net = build(canonical, **kwargs)
    if pretrained:
        path = resolve_pretrained(canonical, pretrained, root)
        ctx = ctx if ctx is not None else mx.cpu()
        if net.classes == 1000:
            load_parameters(net, path, ctx=ctx)
            _attach_imagenet_labels(net)
        else:
            load_parameters(net, path, ctx=ctx, allow_missing=True, ignore_extra=True,
                            skip=("fc.",))
            net.fc.initialize(mx.init.Xavier(), ctx=ctx)
    return net


def _attach_imagenet_labels(net: ResNeSt) -> None:
    try:
        from gluoncv.data import ImageNet1kAttr
    except ImportError:  # pragma: no cover
        return
    attrib = ImageNet1kAttr()
    net.synset, net.classes_names = attrib.synset, attrib.classes


def _constructor(name: str) -> Callable[..., ResNeSt]:
    @functools.wraps(get_model)
    def make(**kwargs: Any) -> ResNeSt:
        return get_model(name, **kwargs)
    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"ResNeSt variant {name!r} (gluon_resnest). " + (get_model.__doc__ or "")
    make._gluon_resnest = True
    return make


def _gluoncv_table() -> dict:
    import gluoncv
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


def register() -> None:
    """Add every variant to GluonCV's model zoo (idempotent)."""
    table = _gluoncv_table()
    for name in variant_names():
        fn = _REGISTERED.get(name) or _constructor(name)
        _REGISTERED[name] = fn
        table[name] = fn
    from .zoo_dense import register_dense  # detection/segmentation names, backbone hook
    register_dense(table)


def registered_names() -> list:
    """Names this package provides to GluonCV's ``get_model``."""
    return list(_REGISTERED)
