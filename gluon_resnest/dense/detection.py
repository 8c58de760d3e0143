"""Faster R-CNN and Mask R-CNN with a feature pyramid on a ResNeSt backbone.

Built from GluonCV's public classes: :class:`gluoncv.nn.feature.FPNFeatureExpander` for the
pyramid, :class:`~gluoncv.model_zoo.rcnn.faster_rcnn.FasterRCNN` and
:class:`~gluoncv.model_zoo.rcnn.mask_rcnn.MaskRCNN` for the detectors, with GluonCV's
predefined-model settings (:data:`RECIPES`).

The pyramid taps the backbone's stage outputs through :class:`StageTaps`, whose symbolic
outputs carry the stable names ``{prefix}c2`` .. ``{prefix}c5`` (:data:`TAP_NAMES`; strides 4, 8,
16, 32), never MXNet's auto-generated node names. Likewise the frozen-BatchNorm detectors choose
the backbone parameters they train by block structure (:data:`FROZEN_TRAINED_STAGES`).

Detector I/O (GluonCV's): inference ``net(x)`` with x (1, 3, H, W) returns ``ids`` (1, M, 1),
``scores`` (1, M, 1), ``bboxes`` (1, M, 4) in input pixels (M = classes x post-NMS boxes,
invalid rows have id -1); Mask R-CNN adds ``masks`` (1, K, S, S) probabilities, one per kept box
(K = ``rcnn_max_dets``, S = mask size). Training ``net(x, gt_box, gt_label)`` returns GluonCV's
training tuple (class/box predictions, RPN outputs, targets).
"""
from __future__ import annotations

import itertools
import re
import warnings
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
from gluoncv.data import COCODetection, VOCDetection
from gluoncv.model_zoo import resnest as gluoncv_resnest
from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
from gluoncv.model_zoo.rcnn.mask_rcnn import MaskRCNN
from gluoncv.nn.dropblock import set_drop_prob
from gluoncv.nn.feature import FPNFeatureExpander
from mxnet import autograd
from mxnet.gluon import nn

from .._compat.gluoncv_dense import (
    fix_pyramid_roi_pooling,
    rcnn_batch_size,
    rcnn_positive_fraction,
)
from .._compat.mxnet_blocks import is_initialized, structural_params
from ..model.parameters import load_arrays, read_arrays
from ..model.resnest import STAGE_BLOCKS, ResNeSt, StageFeatures
from ..model.variants import resolve_name
from ..weights.gluoncv import resolve_pretrained
from ..weights.pretrained import get_model as get_backbone_model
from .initialize import initialize_missing
from .norms import NAME_TOKENS, NORMS, Norm, backbone_kwargs, get_norm, norm_from_layers

__all__ = ["TAP_NAMES", "NORMS", "RECIPES", "FROZEN_TRAINED_STAGES", "StageTaps", "fpn_features",
           "ResNeStFasterRCNN", "ResNeStMaskRCNN", "frozen_backbone_params", "faster_rcnn_fpn",
           "mask_rcnn_fpn", "custom_faster_rcnn_fpn", "custom_mask_rcnn_fpn", "dataset_classes",
           "check_classes", "initialize_detector", "load_detector", "build_detector",
           "custom_detector"]

#: Names of the stage outputs the pyramid taps (C2..C5, strides 4, 8, 16, 32).
TAP_NAMES: Tuple[str, ...] = ("c2", "c3", "c4", "c5")

#: With ``norm='frozen'`` (GluonCV's plain ``*_fpn_*`` models) the backbone trains only the
#: convolutions of these stages; the stem, stage 1 and every norm keep their ImageNet values.
FROZEN_TRAINED_STAGES: Tuple[str, ...] = STAGE_BLOCKS[1:]


# GluonCV's predefined FPN settings (rcnn/{faster,mask}_rcnn/predefined_models.py).
_FPN = dict(min_stage=2, max_stage=6, roi_mode="align", strides=(4, 8, 16, 32, 64), base_size=16,
            scales=(2, 4, 8, 16, 32), ratios=(0.5, 1, 2), alloc_size=(384, 384),
            rpn_nms_thresh=0.7, rpn_train_pre_nms=12000, rpn_train_post_nms=2000,
            rpn_test_pre_nms=6000, rpn_test_post_nms=1000, rpn_min_size=1, num_sample=512,
            pos_iou_thresh=0.5, pos_ratio=0.25, max_num_gt=100)
#: Per data set: image sizes and NMS settings. COCO: GluonCV's FPN COCO models (multi-scale
#: short side 640-800 with SyncBN, 800 with frozen BN, long side <= 1333). VOC: GluonCV's VOC
#: Faster R-CNN (short 600, long <= 1000, NMS 0.3, top 400, 100 boxes per image).
RECIPES: Dict[str, Dict[str, Any]] = {
    "coco": dict(_FPN, short=800, max_size=1333, nms_thresh=0.5, nms_topk=-1, post_nms=-1),
    "voc": dict(_FPN, short=600, max_size=1000, nms_thresh=0.3, nms_topk=400, post_nms=100),
    "custom": dict(_FPN, short=600, max_size=1000, nms_thresh=0.5, nms_topk=400, post_nms=100),
}
_SYNCBN_SHORT = {"coco": (640, 800)}
_CLIP = {"faster": 4.14, "mask": 4.42}   # log(1000/16) and GluonCV's Mask R-CNN value


def dataset_classes(dataset: str) -> List[str]:
    """Class names of a named detection data set (``coco``: 80, ``voc``: 20)."""
    table = {"coco": COCODetection.CLASSES, "voc": VOCDetection.CLASSES}
    if dataset not in table:
        raise ValueError(f"unknown detection data set {dataset!r}: expected one of "
                         f"{sorted(table)}, or dataset='custom' with classes=[...]")
    return list(table[dataset])


def check_classes(classes: Any) -> List[str]:
    """``classes`` as a list of distinct non-empty names, or a clear TypeError/ValueError."""
    if isinstance(classes, str):
        raise TypeError(f"classes must be a list of class names, got the string {classes!r} "
                        f"(did you mean [{classes!r}]?)")
    if not isinstance(classes, (list, tuple)):
        raise TypeError(f"classes must be a list of class names, got {type(classes).__name__}")
    if not classes:
        raise ValueError("classes is empty: a detector needs at least one foreground class")
    bad = [c for c in classes if not isinstance(c, str) or not c]
    if bad:
        raise ValueError(f"every class must be a non-empty str, got {bad[:5]!r}")
    dupes = sorted({c for c in classes if list(classes).count(c) > 1})
    if dupes:
        raise ValueError(f"duplicate class names {dupes!r} in classes")
    if "background" in classes:
        raise ValueError("classes lists foreground classes only; the detector adds background")
    return list(classes)


class StageTaps(StageFeatures):
    """(N, 3, H, W) -> (C2, C3, C4, C5) of a ResNeSt, each output named for feature taps.

    In a symbolic graph the outputs are ``{prefix}c2_output`` .. ``{prefix}c5_output``
    (an identity node per stage), so ``FPNFeatureExpander(network=taps,
    outputs=list(TAP_NAMES))`` finds them. Parameters are the backbone's own (shared).
    """

    def __init__(self, net: ResNeSt, prefix: str = "resnest_taps_") -> None:
        super().__init__(net, prefix=prefix)

    def hybrid_forward(self, F, x):
        outs = [F.identity(c, name=n) for c, n in zip(self.net.stages(F, x), TAP_NAMES)]
        return F.Group(outs) if F is mx.sym else tuple(outs)


def fpn_features(backbone: ResNeSt, num_filters: int = 256, sym_norm_layer: Any = None,
                 sym_norm_kwargs: Optional[dict] = None, no_bias: Optional[bool] = None,
                 taps: Optional[nn.HybridBlock] = None) -> FPNFeatureExpander:
    """GluonCV's FPN on the backbone's C2..C5: (N, 3, H, W) -> [P2, P3, P4, P5, P6].

    Pi has ``num_filters`` channels and stride 2**i. ``sym_norm_layer`` (e.g.
    ``mx.sym.contrib.SyncBatchNorm``) normalises the FPN convs, which then have no bias.
    ``taps``: a block like :class:`StageTaps` for another backbone (default: StageTaps).
    """
    if no_bias is None:
        no_bias = sym_norm_layer is not None
    if sym_norm_layer is not None and sym_norm_layer is not mx.sym.contrib.SyncBatchNorm:
        sym_norm_layer = _named_norm(sym_norm_layer)    # GluonCV names SyncBatchNorm only
    return FPNFeatureExpander(
        network=taps if taps is not None else StageTaps(backbone), outputs=list(TAP_NAMES),
        num_filters=[num_filters] * 4, use_1x1=True, use_upsample=True, use_elewadd=True,
        use_p6=True, no_bias=no_bias, pretrained=False, norm_layer=sym_norm_layer,
        norm_kwargs=dict(sym_norm_kwargs or {}))


def _named_norm(layer: Callable) -> Callable:
    """``layer`` with stable names ``fpn_bn0``, ``fpn_bn1``, ... in call order (else MXNet
    would number them from a process-wide counter and saved files would not load back)."""
    count = itertools.count()

    def norm(data, **kwargs):
        return layer(data, name=f"fpn_bn{next(count)}", **kwargs)
    return norm


def _box_head(norm: Norm, roi_pool: bool, convs: int, conv_filters: int, dense: int,
              norm_kwargs: dict) -> nn.HybridSequential:
    """RoI features (R, C, r, r) -> (R, dense). ``roi_pool`` halves 14x14 RoIs to 7x7 first."""
    head = nn.HybridSequential()
    if roi_pool:
        head.add(nn.AvgPool2D(pool_size=(3, 3), strides=2, padding=1))
    if norm.box_head is None:           # GluonCV's frozen-BN head: two FC layers
        for _ in range(2):
            head.add(nn.Dense(dense, weight_initializer=mx.init.Normal(0.01)),
                     nn.Activation("relu"))
        return head
    for _ in range(convs):
        head.add(nn.Conv2D(conv_filters, 3, padding=1, use_bias=False),
                 norm.box_head(**norm_kwargs), nn.Activation("relu"))
    head.add(nn.Dense(dense, weight_initializer=mx.init.Normal(0.01)), nn.Activation("relu"))
    return head


def _train_patterns(norm: Norm) -> Optional[str]:
    # frozen: None, the structural choice of _Detector.collect_train_params; else every
    # parameter but the FPN's symbolic BatchNorm statistics (MXNet names them *_moving_*)
    return None if norm.frozen else "(?!.*moving)"


def frozen_backbone_params(backbone: ResNeSt) -> List[mx.gluon.Parameter]:
    """The backbone parameters a frozen-BatchNorm detector does not train: all but the
    convolutions (``nn.Conv2D`` blocks) of :data:`FROZEN_TRAINED_STAGES`."""
    trained: set = set()
    for name in FROZEN_TRAINED_STAGES:
        getattr(backbone, name).apply(
            lambda b: trained.update(id(p) for p in b.params.values())
            if isinstance(b, nn.Conv2D) else None)
    return [p for p in backbone.collect_params().values() if id(p) not in trained]


def _check_input(net: FasterRCNN, x: mx.nd.NDArray, gt_box: Any, gt_label: Any) -> None:
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"{type(net).__name__} expects a (N, 3, H, W) batch, got shape {shape}")
    stride = getattr(net.backbone, "min_input_size", 32)   # C5's stride (GluonCV's nets: 32)
    if min(shape[2:]) < stride:
        raise ValueError(f"input {shape[2]}x{shape[3]} is smaller than the backbone's total "
                         f"stride {stride}; use H, W >= {stride} (GluonCV's transforms resize "
                         f"to short side {net.short})")
    if autograd.is_training():
        if gt_box is None or gt_label is None:
            raise ValueError("training needs net(x, gt_box, gt_label); got no ground truth")
        if shape[0] != rcnn_batch_size(net):
            raise ValueError(f"training batch is {shape[0]} images but the detector was built "
                             f"with per_device_batch_size={rcnn_batch_size(net)}")
        valid = (gt_label.reshape((shape[0], -1)) >= 0).sum(axis=1).asnumpy()
        if (valid == 0).any():
            raise ValueError(f"empty annotation set: image {int((valid == 0).argmax())} of the "
                             f"batch has no box (labels are all -1 padding); every training "
                             f"image needs at least one box (filter out unannotated images)")
    elif shape[0] != 1:
        raise ValueError(f"inference takes one image at a time (GluonCV's R-CNN), got a batch "
                         f"of {shape[0]}")


class _Detector:
    """Checks an NDArray call before GluonCV's R-CNN forward (see :func:`_check_input`), and
    chooses the trained parameters of a frozen-BatchNorm detector by structure."""

    def forward(self, x, gt_box=None, gt_label=None):
        if isinstance(x, mx.nd.NDArray):
            _check_input(self, x, gt_box, gt_label)
        if gt_box is None:
            return super().forward(x)
        return super().forward(x, gt_box, gt_label)

    def collect_train_params(self, select: Optional[str] = None):
        """GluonCV's trainable parameters. With no ``train_patterns`` regex (``norm='frozen'``):
        every parameter except :func:`frozen_backbone_params`, as GluonCV's frozen models."""
        if select is not None or self.train_patterns is not None:
            return super().collect_train_params(select)
        frozen = {id(p) for p in frozen_backbone_params(self.backbone)}
        names = [n for n, p in self.collect_params().items() if id(p) not in frozen]
        return self.collect_params("^(?:" + "|".join(map(re.escape, names)) + ")$")


class ResNeStFasterRCNN(_Detector, FasterRCNN):
    """GluonCV's FasterRCNN with input checks and deterministic FPN RoI pooling; see the module
    docstring for shapes."""


class ResNeStMaskRCNN(_Detector, MaskRCNN):
    """GluonCV's MaskRCNN with input checks; see the module docstring for shapes."""


# GluonCV's FPN RoI pooling reads uninitialised ROIAlign output on MXNet 1.9 (_compat.gluoncv_dense).
fix_pyramid_roi_pooling(ResNeStFasterRCNN, ResNeStMaskRCNN)


def _backbone(name: str, norm: str, pretrained_base: Union[bool, str], ctx: Any,
              root: Optional[str], num_devices: int) -> ResNeSt:
    kw = backbone_kwargs(norm, num_devices)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Caution using SyncBatchNorm")
        net = get_backbone_model(name, pretrained=pretrained_base, ctx=ctx, root=root,
                                 dilated=False, dropblock_prob=0.0, **kw)
    net.apply(partial(set_drop_prob, 0.0))   # as GluonCV's predefined ResNeSt detectors do
    return net


def _build(kind: str, backbone: str, classes: Optional[Sequence[str]], dataset: str,
           norm: str, pretrained: Union[bool, str], pretrained_base: Union[bool, str],
           ctx: Any, root: Optional[str], num_devices: int, num_fpn_filters: int,
           num_box_head_conv: int, num_box_head_conv_filters: int,
           num_box_head_dense_filters: int, fpn_norm_kwargs: Optional[dict] = None,
           net_class: Optional[type] = None, base: Any = None,
           taps: Optional[nn.HybridBlock] = None, **kwargs: Any) -> FasterRCNN:
    if base is None:                     # else a backbone the caller built (and its taps)
        backbone = resolve_name(backbone)
    spec = get_norm(norm)
    if dataset not in RECIPES:
        raise ValueError(f"unknown detection data set {dataset!r}: expected one of "
                         f"{sorted(RECIPES)} (custom needs classes=[...])")
    if dataset == "custom":
        if classes is None:
            raise ValueError("dataset='custom' needs classes=[...], the foreground class names")
        classes = check_classes(classes)
    else:
        known = dataset_classes(dataset)
        if classes is not None and list(check_classes(classes)) != known:
            raise ValueError(f"the {dataset} model has {dataset.upper()}'s {len(known)} classes, "
                             f"got {len(classes)} others; for your own classes use "
                             f"custom_{kind}_rcnn_fpn(classes=[...], base_network_name="
                             f"{backbone!r}) or net.reset_class(classes)")
        classes = known
    if pretrained:
        pretrained_base = False
    ctx = ctx if ctx is not None else mx.cpu()
    if base is None:
        base = _backbone(backbone, norm, pretrained_base, ctx, root, num_devices)
    sym_kw = {**spec.fpn_kwargs(num_devices),
              **_check_fpn_norm_kwargs(fpn_norm_kwargs, norm, num_devices)}
    features = fpn_features(base, num_fpn_filters, spec.fpn, sym_kw, taps=taps)
    gl_kw = spec.layer_kwargs(num_devices)
    settings = dict(RECIPES[dataset])
    if norm == "syncbn" and dataset in _SYNCBN_SHORT:
        settings["short"] = _SYNCBN_SHORT[dataset]
    mask = kind.endswith("mask")     # mask, cascade_mask
    roi = 14 if mask else 7          # Mask R-CNN: 14x14 RoIs, box head pools to 7x7
    settings.update(roi_size=(roi, roi), clip=_CLIP["mask" if mask else "faster"],
                    rpn_channel=1024 if spec.frozen else 256,   # GluonCV's frozen-BN recipes
                    train_patterns=_train_patterns(spec))
    settings.update(kwargs)
    # a cascade (net_class.num_box_heads > 1) has one box head per stage
    heads = [_box_head(spec, mask, num_box_head_conv, num_box_head_conv_filters,
                       num_box_head_dense_filters, gl_kw)
             for _ in range(getattr(net_class, "num_box_heads", 1))]
    common = dict(features=features, top_features=None, classes=classes, box_features=heads[0])
    if len(heads) > 1:
        common["stage_box_features"] = heads[1:]
    if net_class is None:
        net_class = ResNeStMaskRCNN if mask else ResNeStFasterRCNN
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Caution using SyncBatchNorm")
        if mask:
            settings.setdefault("target_roi_scale", 2)
            settings.setdefault("num_fcn_convs", 4)
            settings.setdefault("mask_channels", 256)
            settings.setdefault("rcnn_max_dets", 1000)
            if spec.mask_head is not None:
                settings.setdefault("norm_layer", spec.mask_head)
                settings.setdefault("norm_kwargs", gl_kw)
        net = net_class(**common, **settings)
    net.base_network_name, net.dataset, net.norm = backbone, dataset, norm
    object.__setattr__(net, "backbone", base)    # a reference, not a second child
    token = next((t for t, n in NAME_TOKENS.items() if n == norm), "")   # syncbn, or none
    net.model_name = "_".join(p for p in (f"{kind}_rcnn_fpn", token, backbone, dataset) if p)
    if pretrained:
        load_detector(net, resolve_pretrained(net.model_name, pretrained, root), ctx=ctx)
    else:
        for p in net.collect_params().values():
            try:
                p.reset_ctx(ctx)
            except ValueError:
                pass
    return net


def _check_fpn_norm_kwargs(kwargs: Optional[dict], norm: str, num_devices: int) -> dict:
    """The FPN norm's extra arguments (GluonCV's ``sym_norm_kwargs``), checked."""
    if not kwargs:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"sym_norm_kwargs must be a dict, got {type(kwargs).__name__}")
    spec = get_norm(norm)
    if spec.fpn is None:
        raise ValueError(f"sym_norm_kwargs={kwargs!r}, but with norm={norm!r} the FPN has no "
                         f"norm layer (only {[n for n, s in NORMS.items() if s.fpn]} normalise it)")
    allowed = {"eps", "momentum", "fix_gamma", "use_global_stats"} | (
        {"ndev"} if spec.per_device else set())
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"sym_norm_kwargs: unknown key(s) {unknown} for the FPN's "
                         f"{spec.fpn.__name__}; expected some of {sorted(allowed)}")
    ndev = kwargs.get("ndev")
    if ndev is not None and num_devices >= 1 and int(ndev) != num_devices:
        raise ValueError(f"sym_norm_kwargs ndev={ndev} contradicts num_devices={num_devices} "
                         f"(norm_kwargs); SyncBatchNorm needs one device count")
    return dict(kwargs)


_DEFAULTS = dict(norm="syncbn", pretrained=False, pretrained_base=True, ctx=None, root=None,
                 num_devices=0, num_fpn_filters=256, num_box_head_conv=4,
                 num_box_head_conv_filters=256, num_box_head_dense_filters=1024)


def faster_rcnn_fpn(backbone: str = "resnest50", dataset: str = "coco",
                    classes: Optional[Sequence[str]] = None, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN + FPN on a ResNeSt (GluonCV's FasterRCNN and FPNFeatureExpander).

    backbone : any ResNeSt variant name. dataset : ``coco``, ``voc`` (their class lists and
    :data:`RECIPES` settings) or ``custom`` (needs ``classes``).
    norm : one of :data:`NORMS` (default ``syncbn``). num_devices : SyncBatchNorm devices.
    pretrained : detector weights, GluonCV's convention (file
    ``{root}/faster_rcnn_fpn[_syncbn]_{backbone}_{dataset}-*.params``; GluonCV's own published
    files load too). pretrained_base : ImageNet backbone weights (local file, never downloaded).
    num_fpn_filters, num_box_head_conv, num_box_head_conv_filters, num_box_head_dense_filters :
    head sizes, as GluonCV's ``custom_faster_rcnn_fpn``. Other kwargs go to FasterRCNN
    (``short``, ``max_size``, ``num_sample``, ``rpn_train_post_nms``, ``per_device_batch_size``...).
    """
    opts = {**_DEFAULTS, **kwargs}
    return _build("faster", backbone, classes, dataset, **opts)


def mask_rcnn_fpn(backbone: str = "resnest50", dataset: str = "coco",
                  classes: Optional[Sequence[str]] = None, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN + FPN on a ResNeSt; arguments as :func:`faster_rcnn_fpn`.

    14x14 RoIs (pooled to 7x7 for the box head), a 4-conv mask head with a 2x deconvolution:
    28x28 masks, as GluonCV's FPN Mask R-CNN models.
    """
    opts = {**_DEFAULTS, **kwargs}
    return _build("mask", backbone, classes, dataset, **opts)


def build_detector(kind: str, backbone: str, dataset: str, classes: Optional[Sequence[str]],
                   net_class: type, **kwargs: Any) -> FasterRCNN:
    """A detector of class ``net_class`` (a FasterRCNN subclass) built as
    :func:`faster_rcnn_fpn` builds its own: ``kind`` names it (``{kind}_rcnn_fpn_...``; a kind
    ending in ``mask`` gets Mask R-CNN's RoI size and mask head settings). ``base``/``taps``
    in kwargs: a backbone block built by the caller and its C2..C5 taps (see :func:`fpn_features`).
    """
    return _build(kind, backbone, classes, dataset, net_class=net_class, **{**_DEFAULTS, **kwargs})


def custom_detector(build: Callable[..., FasterRCNN], classes: Sequence[str],
                    transfer: Optional[str], dataset: str, pretrained_base: Union[bool, str],
                    base_network_name: str, norm_layer: Any, norm_kwargs: Optional[dict],
                    sym_norm_layer: Any, sym_norm_kwargs: Optional[dict],
                    kwargs: Dict[str, Any]) -> FasterRCNN:
    """GluonCV's ``custom_*_rcnn_fpn`` arguments turned into a call of ``build(backbone,
    dataset, classes, **kwargs)`` (e.g. :func:`faster_rcnn_fpn`); see
    :func:`custom_faster_rcnn_fpn`."""
    return _custom(build, classes, transfer, dataset, pretrained_base, base_network_name,
                   norm_layer, norm_kwargs, sym_norm_layer, sym_norm_kwargs, kwargs)


def _custom(build, classes, transfer, dataset, pretrained_base, base_network_name,
            norm_layer, norm_kwargs, sym_norm_layer, sym_norm_kwargs, kwargs):
    norm = norm_from_layers(norm_layer, sym_norm_layer)
    extra = sorted(set(norm_kwargs or {}) - ({"num_devices"} if get_norm(norm).per_device
                                             else set()))
    if extra:
        raise ValueError(f"norm_kwargs: unsupported key(s) {extra} with norm_layer "
                         f"{norm_layer.__name__ if norm_layer else None} (SyncBatchNorm takes "
                         f"num_devices; the frozen BatchNorm takes none)")
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty str (it names the network), got {dataset!r}")
    num_devices = int((norm_kwargs or {}).get("num_devices") or 0)
    common = dict(norm=norm, num_devices=num_devices, fpn_norm_kwargs=sym_norm_kwargs)
    if transfer is None:
        net = build(base_network_name, "custom", classes, pretrained_base=pretrained_base,
                    **common, **kwargs)
        # GluonCV's custom models use dataset only in their name
        net.model_name = net.model_name[:-len("custom")] + dataset
        return net
    classes = check_classes(classes)
    net = build(base_network_name, str(transfer), None,
                pretrained=kwargs.pop("pretrained", True), **common, **kwargs)
    net.reset_class(classes, reuse_weights=[c for c in classes if c in net.classes])
    return net


def custom_faster_rcnn_fpn(classes: Sequence[str], transfer: Optional[str] = None,
                           dataset: str = "custom", pretrained_base: Union[bool, str] = True,
                           base_network_name: str = "resnest50", norm_layer: Any = nn.BatchNorm,
                           norm_kwargs: Optional[dict] = None, sym_norm_layer: Any = None,
                           sym_norm_kwargs: Optional[dict] = None, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN + FPN for your own ``classes``, with GluonCV's ``custom_faster_rcnn_fpn``
    signature and a ResNeSt ``base_network_name``.

    norm_layer : ``nn.BatchNorm`` (frozen statistics, GluonCV's default) or
    ``SyncBatchNorm`` (``norm_kwargs={'num_devices': n}``); ``sym_norm_layer`` with
    ``nn.BatchNorm`` selects trainable BatchNorm. sym_norm_kwargs : arguments of the FPN's
    norm (SyncBatchNorm/BatchNorm only; e.g. ``{'ndev': n}``, as GluonCV's train_mask_rcnn.py
    passes). dataset : names the network (``net.model_name``), as in GluonCV; the settings are
    the ``custom`` recipe's plus ``kwargs``. transfer : ``'coco'``/``'voc'`` starts from that
    detector's local weights and keeps the classes both share (``reset_class``).
    """
    return _custom(faster_rcnn_fpn, classes, transfer, dataset, pretrained_base, base_network_name,
                   norm_layer, norm_kwargs, sym_norm_layer, sym_norm_kwargs, kwargs)


def custom_mask_rcnn_fpn(classes: Sequence[str], transfer: Optional[str] = None,
                         dataset: str = "custom", pretrained_base: Union[bool, str] = True,
                         base_network_name: str = "resnest50", norm_layer: Any = nn.BatchNorm,
                         norm_kwargs: Optional[dict] = None, sym_norm_layer: Any = None,
                         sym_norm_kwargs: Optional[dict] = None, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN + FPN for your own ``classes``; arguments as :func:`custom_faster_rcnn_fpn`."""
    return _custom(mask_rcnn_fpn, classes, transfer, dataset, pretrained_base, base_network_name,
                   norm_layer, norm_kwargs, sym_norm_layer, sym_norm_kwargs, kwargs)


#: GluonCV's FPNFeatureExpander declares this initializer for its convolutions, but as a symbol
#: attribute, which holds only the initializer's repr, so MXNet falls back to the global one.
FPN_INIT = mx.init.Xavier(rnd_type="uniform", factor_type="in", magnitude=1.0)
_FPN_CONV = re.compile(r"^P\d_conv\w*_weight$")


def initialize_detector(net: FasterRCNN, ctx: Any = None, last_gamma: bool = False) -> None:
    """Initialise what is not loaded: a fresh backbone with Xavier(gaussian, in, 2) (the
    official ImageNet init), the FPN convolutions with :data:`FPN_INIT`, every other parameter
    as GluonCV's training scripts do, except that a fresh R-CNN classifier's bias starts at the
    sampler's class frequencies (background ``1 - pos_ratio``, each class
    ``pos_ratio / num_class``; the usual prior initialisation), so the first iterations do not
    spend their updates learning that most RoIs are background (a cascade: every stage's
    classifier, ``net.class_predictors``). ``last_gamma``: a fresh backbone's residual blocks
    start as the identity (see :func:`.initialize_missing`).
    """
    predictors = list(getattr(net, "class_predictors", [net.class_predictor]))
    fresh = [p for p in predictors if not is_initialized(p.bias)]
    for name, p in net.features.collect_params().items():
        if not is_initialized(p) and p.init is None and _FPN_CONV.match(name):
            p.init = FPN_INIT
    initialize_missing(net, [net.backbone], ctx, last_gamma=last_gamma)
    pos = rcnn_positive_fraction(net)
    prior = [1.0 - pos] + [pos / net.num_class] * net.num_class
    for predictor in fresh:
        predictor.bias.set_data(mx.nd.log(mx.nd.array(prior)))


# -- weights --------------------------------------------------------------------------------
def _gluoncv_backbone_names(net: FasterRCNN) -> Dict[str, str]:
    """{GluonCV's backbone parameter name: ours} for the detector's backbone variant.

    Detector files store the backbone under MXNet's parameter names, which differ between
    GluonCV's ResNeSt and ours; both share the structural keys (``layer1.0.conv1.weight``), so
    GluonCV's own ResNeSt of the same variant gives the correspondence.
    """
    variant = net.base_network_name
    if not hasattr(gluoncv_resnest, variant):
        raise ValueError(f"GluonCV has no {variant!r} to translate its detection file from")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Caution using SyncBatchNorm")
        theirs = structural_params(getattr(gluoncv_resnest, variant)(
            norm_layer=get_norm(net.norm).layer))
    mine = structural_params(net.backbone)
    return {theirs[k].name: mine[k].name for k in mine if k in theirs}


def load_detector(net: FasterRCNN, filename: str, ctx: Any = None) -> None:
    """Load a detector file: ours, or GluonCV's (backbone names translated).

    Keys are checked strictly (every mismatch listed), except the training target generator's
    constants, which a net has only after training.
    """
    skip = ("_target_generator.",)
    arrays = read_arrays(filename)
    backbone = {id(p) for p in net.backbone.collect_params().values()}
    expected = {k for k, p in structural_params(net).items() if id(p) in backbone}
    if not expected <= set(arrays):
        # the backbone of the FPN (net.features) under GluonCV's parameter names?
        rename = {f"features.{a}": f"features.{b}" for a, b in
                  _gluoncv_backbone_names(net).items()}
        if set(rename) & set(arrays):
            arrays = {rename.get(k, k): v for k, v in arrays.items()}
    load_arrays(net, arrays, f"parameter file {filename!r}", ctx=ctx, skip=skip)
