"""A variant with its weights, by GluonCV's ``pretrained=`` convention (local files only)."""
from __future__ import annotations

from typing import Any, Optional, Union

import mxnet as mx

from .._compat import import_gluoncv
from ..model.parameters import load_parameters
from ..model.resnest import ResNeSt, build
from ..model.variants import resolve_name
from .gluoncv import resolve_pretrained

__all__ = ["IMAGENET_CLASSES", "get_model"]

#: Size of the ImageNet-1k classifier GluonCV's pretrained files carry.
IMAGENET_CLASSES = 1000


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

    As GluonCV's classifiers, the net carries ``num_classes`` (the head size) and ``classes``:
    with ``pretrained`` and 1000 classes, ImageNet's class names (also ``synset`` and
    ``classes_long``), else None.
    """
    canonical = resolve_name(name)
    net = build(canonical, **kwargs)
    if pretrained:
        path = resolve_pretrained(canonical, pretrained, root)
        ctx = ctx if ctx is not None else mx.cpu()
        if net.num_classes == IMAGENET_CLASSES:
            load_parameters(net, path, ctx=ctx)
            _attach_imagenet_labels(net)
        else:
            load_parameters(net, path, ctx=ctx, allow_missing=True, ignore_extra=True,
                            skip=("fc.",))
            net.fc.initialize(mx.init.Xavier(), ctx=ctx)
    return net


def _attach_imagenet_labels(net: ResNeSt) -> None:
    """ImageNet's names on a pretrained classifier, from GluonCV's table as its models do."""
    attrib = import_gluoncv().data.ImageNet1kAttr()
    net.classes = attrib.classes
    net.synset, net.classes_long = list(attrib.synset), list(attrib.classes_long)
