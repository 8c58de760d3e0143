"""A variant with its weights, by GluonCV's ``pretrained=`` convention (local files only)."""
from __future__ import annotations

from typing import Any, Optional, Union

import mxnet as mx

from ..model.parameters import load_parameters
from ..model.resnest import ResNeSt, build
from ..model.variants import resolve_name
from .gluoncv import resolve_pretrained

__all__ = ["get_model"]


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
