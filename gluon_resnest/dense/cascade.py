"""Cascade R-CNN and Cascade Mask R-CNN + FPN (Cai & Vasconcelos, CVPR 2018) on GluonCV's parts.

GluonCV 0.10 has no cascade; this module adds only what the cascade needs on top of its
FasterRCNN (backbone + FPN, RPN, anchor generator, RoI sampler, FPN RoIAlign pooling), its box
coders (``NormalizedBoxCenterEncoder`` / ``Decoder``, ``MultiClassEncoder``,
``MultiPerClassDecoder``), ``BBoxClipToImage``, and its Mask R-CNN mask head and mask target
generator. The detector is built as :mod:`.detection` builds Faster R-CNN (same recipes, norms,
box head per stage); the settings of the cascade are :data:`STAGE_IOU`, :data:`STAGE_STDS` and
:data:`STAGE_WEIGHTS`, as the ResNeSt detectron2 cascade configs use them.

Stages (``t`` = 1, 2, 3), each a box head, a classifier (``num_class + 1``) and a
class-agnostic box regressor (4 deltas normalised by the stage's stds):

- training: stage 1 takes GluonCV's sampled RPN proposals (``num_sample`` RoIs, ground-truth
  boxes appended, foreground at IoU >= 0.5), exactly as Faster R-CNN. Stage t > 1 takes the boxes
  stage t - 1 regressed from its RoIs (decoded with stage t - 1's stds, clipped to the image,
  gradient stopped) and relabels them against the ground truth with its own threshold (0.6,
  0.7): foreground if the best IoU reaches it, background otherwise, ignored where stage 1's RoI
  was (a padding proposal); no resampling, as detectron2's cascade. Box targets are encoded with
  the stage's stds; stage losses are weighted 1 / 0.5 / 0.25 (the paper's; detectron2 weights
  the stages equally and scales the gradient into the pooled features by 1/3 instead).
- inference: stage 1 runs on the RPN's proposals, stage t on stage t - 1's regressed boxes of
  the same proposals; the class probabilities of the three stages are averaged per proposal
  (each stage scoring the boxes it was given, as detectron2's ``CascadeROIHeads`` and the
  paper's ensemble do), the boxes are the last stage's, clipped to the image, then GluonCV's
  per-class NMS. Output as Faster R-CNN: ``ids`` (1, M, 1), ``scores`` (1, M, 1), ``bboxes``
  (1, M, 4), M = classes x RPN test proposals.
- Cascade Mask R-CNN: the mask head (GluonCV's, 14x14 RoIs -> 28x28 masks) is trained on stage
  1's foreground RoIs (as detectron2's cascade mask head: the sampled proposals) and runs at
  inference on the final boxes: adds ``masks`` (1, K, 28, 28) probabilities, K =
  ``rcnn_max_dets`` highest-scoring detections.

Training output (``net(x, gt_box, gt_label)`` in ``autograd.train_mode``): see
:func:`split_training_outputs`; :func:`cascade_losses` turns it into the weighted losses.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
from gluoncv.model_zoo import get_model as gluoncv_get_model
from gluoncv.model_zoo import get_model_list as gluoncv_model_list
from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
from gluoncv.model_zoo.rcnn.mask_rcnn.mask_rcnn import Mask
from gluoncv.model_zoo.rcnn.mask_rcnn.rcnn_target import MaskTargetGenerator
from gluoncv.model_zoo.resnetv1b import ResNetV1b
from gluoncv.nn.bbox import BBoxClipToImage
from gluoncv.nn.coder import (
    MultiClassEncoder,
    MultiPerClassDecoder,
    NormalizedBoxCenterDecoder,
    NormalizedBoxCenterEncoder,
)
from mxnet import autograd
from mxnet.gluon import nn

from .._compat.gluoncv_dense import (
    clear_cached_graph,
    fix_pyramid_roi_pooling,
    rcnn_max_positives,
    rcnn_roi_features,
    rcnn_settings,
)
from ..model.variants import resolve_name
from .detection import TAP_NAMES, _Detector, build_detector, custom_detector
from .norms import backbone_kwargs

__all__ = ["STAGE_IOU", "STAGE_STDS", "STAGE_WEIGHTS", "ResNeStCascadeRCNN",
           "ResNeStCascadeMaskRCNN", "cascade_rcnn_fpn", "cascade_mask_rcnn_fpn",
           "custom_cascade_rcnn_fpn", "custom_cascade_mask_rcnn_fpn", "split_training_outputs",
           "cascade_losses", "GluonCVTaps"]

#: Foreground IoU threshold of each stage's training targets.
STAGE_IOU: Tuple[float, ...] = (0.5, 0.6, 0.7)
#: Box-delta normalisation (dx, dy, dw, dh) of each stage: targets are divided by these.
STAGE_STDS: Tuple[Tuple[float, ...], ...] = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1),
                                             (0.033, 0.033, 0.067, 0.067))
#: Weight of each stage's (classification + box) loss.
STAGE_WEIGHTS: Tuple[float, ...] = (1.0, 0.5, 0.25)
_PER_STAGE = ("rois", "samples", "matches", "cls_pred", "box_pred", "cls_target", "box_target",
              "box_mask")


class ResNeStCascadeRCNN(_Detector, FasterRCNN):
    """Cascade R-CNN on GluonCV's FasterRCNN (see the module doc). ``box_features`` is stage
    1's head, ``stage_box_features`` the heads of the later stages; ``stage_iou``,
    ``stage_stds``, ``stage_weights`` one value per stage. Other arguments: FasterRCNN's
    (``pos_iou_thresh`` is ``stage_iou[0]``)."""

    num_box_heads = len(STAGE_IOU)

    def __init__(self, features, top_features, classes, box_features,
                 stage_box_features: Sequence[nn.HybridBlock] = (),
                 stage_iou: Sequence[float] = STAGE_IOU,
                 stage_stds: Sequence[Sequence[float]] = STAGE_STDS,
                 stage_weights: Sequence[float] = STAGE_WEIGHTS, **kwargs: Any) -> None:
        n = len(stage_iou)
        if not (len(stage_stds) == len(stage_weights) == n == len(stage_box_features) + 1):
            raise ValueError(f"a cascade of {n} stages (stage_iou {tuple(stage_iou)}) needs {n} "
                             f"stage_stds, {n} stage_weights and {n - 1} stage_box_features, "
                             f"got {len(stage_stds)}, {len(stage_weights)} and "
                             f"{len(stage_box_features)}")
        if list(stage_iou) != sorted(stage_iou) or not all(0 < t < 1 for t in stage_iou):
            raise ValueError(f"stage_iou must rise within (0, 1), got {tuple(stage_iou)}")
        if kwargs.pop("pos_iou_thresh", stage_iou[0]) != stage_iou[0]:
            raise ValueError("pos_iou_thresh is the first stage's IoU threshold: set stage_iou")
        super().__init__(features, top_features, classes, box_features=box_features,
                         pos_iou_thresh=stage_iou[0], **kwargs)
        self._cfg = rcnn_settings(self)
        self.stage_iou = tuple(float(t) for t in stage_iou)
        self.stage_stds = tuple(tuple(float(v) for v in s) for s in stage_stds)
        self.stage_weights = tuple(float(w) for w in stage_weights)
        clip = kwargs.get("clip")
        with self.name_scope():
            # class-agnostic regression: 4 deltas per RoI (GluonCV's box_predictor has 4 x C)
            self.box_predictor = nn.Dense(4, weight_initializer=mx.init.Normal(0.001))
            self.box_decoder = NormalizedBoxCenterDecoder(self.stage_stds[0], convert_anchor=True,
                                                          clip=clip)
            self.box_clip = BBoxClipToImage()
            self.cls_encoder = MultiClassEncoder()
            self.box_encoders = nn.HybridSequential()
            for stds in self.stage_stds:
                self.box_encoders.add(NormalizedBoxCenterEncoder(stds=stds))
            for t, head in enumerate(stage_box_features, start=2):
                setattr(self, f"box_features_{t}", head)
                setattr(self, f"class_predictor_{t}",
                        nn.Dense(self.num_class + 1, weight_initializer=mx.init.Normal(0.01)))
                setattr(self, f"box_predictor_{t}",
                        nn.Dense(4, weight_initializer=mx.init.Normal(0.001)))
                setattr(self, f"box_decoder_{t}",
                        NormalizedBoxCenterDecoder(self.stage_stds[t - 1], convert_anchor=True,
                                                   clip=clip))

    # -- the stages -----------------------------------------------------------------------
    def _stage(self, t: int) -> Tuple[nn.HybridBlock, ...]:
        """(box head, classifier, box regressor, decoder) of stage ``t`` (0-based)."""
        if t == 0:
            return self.box_features, self.class_predictor, self.box_predictor, self.box_decoder
        k = t + 1
        return (getattr(self, f"box_features_{k}"), getattr(self, f"class_predictor_{k}"),
                getattr(self, f"box_predictor_{k}"), getattr(self, f"box_decoder_{k}"))

    @property
    def class_predictors(self) -> List[nn.Dense]:
        """The classifier of every stage, first to last."""
        return [self._stage(t)[1] for t in range(len(self.stage_iou))]

    @property
    def box_predictors(self) -> List[nn.Dense]:
        """The class-agnostic box regressor of every stage, first to last."""
        return [self._stage(t)[2] for t in range(len(self.stage_iou))]

    def _pool(self, F, feat, rois, batch_size: int):
        """(B, N, 4) boxes -> (B * N, C, r, r) RoI features (GluonCV's FPN RoIAlign)."""
        with autograd.pause():
            ids = F.repeat(F.arange(0, batch_size), repeats=self._rois_per_image())
            roi = F.stop_gradient(F.concat(ids.reshape((-1, 1)), rois.reshape((-1, 4)), dim=-1))
        return rcnn_roi_features(self, F, feat, roi)

    def _rois_per_image(self) -> int:
        return self._cfg["num_sample" if autograd.is_training() else "rpn_test_post_nms"]

    def _run_stage(self, F, t: int, feat, rois, batch_size: int):
        """Stage ``t`` on (B, N, 4) boxes: class logits (B, N, C + 1), deltas (B, N, 4), the
        decoded boxes (B, N, 4) and the pooled RoI features."""
        head, classify, regress, decode = self._stage(t)
        pooled = self._pool(F, feat, rois, batch_size)
        box_feat = head(pooled)
        cls_pred = classify(box_feat).reshape((batch_size, -1, self.num_class + 1))
        box_pred = regress(box_feat).reshape((batch_size, -1, 4))
        return cls_pred, box_pred, decode(box_pred, rois), pooled

    def _relabel(self, F, rois, gt_box, samples, thresh: float):
        """Stage targets for new boxes: +1 where the best IoU with a ground-truth box reaches
        ``thresh``, -1 below, 0 (ignored) where ``samples`` was 0; and the best match."""
        with autograd.pause():
            new_samples, new_matches = [], []
            for i in range(self._cfg["batch_size"]):
                roi = F.squeeze(F.slice_axis(rois, axis=0, begin=i, end=i + 1), axis=0)
                gt = F.squeeze(F.slice_axis(gt_box, axis=0, begin=i, end=i + 1), axis=0)
                old = F.squeeze(F.slice_axis(samples, axis=0, begin=i, end=i + 1), axis=0)
                ious = F.contrib.box_iou(roi, gt, format="corner")       # (N, M); padding: 0
                best = ious.max(axis=-1)
                label = F.where(best >= thresh, F.ones_like(best), -F.ones_like(best))
                new_samples.append(F.where(old == 0, F.zeros_like(old), label))
                new_matches.append(ious.argmax(axis=-1))
            return F.stack(*new_samples, axis=0), F.stack(*new_matches, axis=0)

    def hybrid_forward(self, F, x, gt_box=None, gt_label=None):
        feat = self.features(x)
        if not isinstance(feat, (list, tuple)):
            feat = [feat]
        image = F.zeros_like(x)                  # the RPN and the box clip read its shape only
        training = autograd.is_training()
        if training:
            rpn_score, rpn_box, raw_rpn_score, raw_rpn_box, _ = self.rpn(image, *feat)
            rois, samples, matches = self.sampler(rpn_box, rpn_score, gt_box)
            batch_size = self._cfg["batch_size"]
        else:
            _, rois = self.rpn(image, *feat)
            batch_size = 1
        stages, probs, pooled_first, decoded = [], [], None, None
        for t, thresh in enumerate(self.stage_iou):
            if t > 0:
                # the boxes stage t - 1 regressed, on the image, without gradient into them
                rois = F.stop_gradient(self.box_clip(decoded, image))
                if training:
                    samples, matches = self._relabel(F, rois, gt_box, samples, thresh)
            cls_pred, box_pred, decoded, pooled = self._run_stage(F, t, feat, rois, batch_size)
            if t == 0:
                pooled_first = pooled
            if training:
                with autograd.pause():
                    cls_target = self.cls_encoder(samples, matches, gt_label)
                    box_target, box_mask = self.box_encoders[t](samples, matches, rois, gt_box)
                stages += [rois, samples, matches, cls_pred, box_pred, cls_target, box_target,
                           box_mask]
            else:
                probs.append(F.softmax(cls_pred, axis=-1))
        if training:
            return (raw_rpn_score, raw_rpn_box, *stages,
                    *self._mask_training(F, pooled_first, stages[1], batch_size))
        scores = F.ElementWiseSum(*probs) / len(probs)             # (1, N, C + 1)
        boxes = self.box_clip(decoded, image)                      # (1, N, 4), last stage
        ids, scores, boxes = self._detections(F, scores, boxes)
        return self._outputs(F, feat, ids, scores, boxes)

    def _detections(self, F, probs, boxes):
        """Per-class NMS of (1, N, C + 1) probabilities and (1, N, 4) class-agnostic boxes ->
        ids, scores (1, C * N, 1) and boxes (1, C * N, 4), GluonCV's layout."""
        cls_ids, scores = self.cls_decoder(probs)                   # (1, N, C) each
        cls_ids = cls_ids.transpose((0, 2, 1)).expand_dims(-1)      # (1, C, N, 1)
        scores = scores.transpose((0, 2, 1)).expand_dims(-1)
        boxes = F.tile(boxes.expand_dims(1), reps=(1, self.num_class, 1, 1))
        res = F.concat(cls_ids, scores, boxes, dim=-1).reshape((-3, 0, 0))   # (C, N, 6)
        if self.force_nms:
            res = res.reshape((1, -1, 0))
        res = F.contrib.box_nms(res, overlap_thresh=self.nms_thresh, topk=self.nms_topk,
                                valid_thresh=0.0001, id_index=0, score_index=1, coord_start=2,
                                force_suppress=self.force_nms)
        res = res.reshape((1, -1, 6))
        return (F.slice_axis(res, axis=-1, begin=0, end=1), F.slice_axis(res, axis=-1, begin=1, end=2),
                F.slice_axis(res, axis=-1, begin=2, end=6))

    def _mask_training(self, F, pooled, samples, batch_size: int) -> tuple:
        return ()

    def _outputs(self, F, feat, ids, scores, boxes) -> tuple:
        """The inference outputs from the detections (the mask variant adds masks)."""
        return ids, scores, boxes

    # -- classes --------------------------------------------------------------------------
    def reset_class(self, classes: Sequence[str], reuse_weights: Any = None) -> None:
        """New classes for every stage's classifier; the rows of ``reuse_weights`` (a list of
        names kept, or {new: old} by name or index) keep their trained weights. The box
        regressors are class-agnostic and stay as they are."""
        clear_cached_graph(self)
        old = list(self.classes)
        mapping = _class_mapping(old, list(classes), reuse_weights)
        self.classes, self.num_class = list(classes), len(classes)
        self.cls_decoder = MultiPerClassDecoder(num_class=self.num_class + 1)
        for t in range(len(self.stage_iou)):
            name = "class_predictor" if t == 0 else f"class_predictor_{t + 1}"
            before = getattr(self, name)
            ctx = before.weight.list_ctx()
            with self.name_scope():
                after = nn.Dense(self.num_class + 1, weight_initializer=mx.init.Normal(0.01),
                                 prefix=before.prefix, in_units=before.weight.shape[1])
            after.initialize(ctx=ctx)
            for src, dst in ((before.weight, after.weight), (before.bias, after.bias)):
                data, new = src.data(), dst.data()
                new[0] = data[0]                                       # background
                for k, v in mapping.items():
                    new[k + 1] = data[v + 1]
                dst.set_data(new)
            setattr(self, name, after)


def _class_mapping(old: List[str], new: List[str], reuse: Any) -> Dict[int, int]:
    """{new index: old index} from GluonCV's ``reuse_weights`` forms."""
    if not reuse:
        return {}
    if isinstance(reuse, dict):
        pairs = reuse.items()
    elif isinstance(reuse, (list, tuple)):
        pairs = [(c, c) for c in reuse if c in old and c in new]
    else:
        raise TypeError(f"reuse_weights must be a dict or a list of class names, got "
                        f"{type(reuse).__name__}")
    out = {}
    for k, v in pairs:
        k = new.index(k) if isinstance(k, str) else int(k)
        v = old.index(v) if isinstance(v, str) else int(v)
        if not (0 <= k < len(new) and 0 <= v < len(old)):
            raise ValueError(f"reuse_weights maps class {k} to {v}: out of range "
                             f"({len(new)} new, {len(old)} old classes)")
        out[k] = v
    return out


class ResNeStCascadeMaskRCNN(ResNeStCascadeRCNN):
    """Cascade Mask R-CNN: :class:`ResNeStCascadeRCNN` plus GluonCV's mask head (see the
    module doc). ``mask_channels``, ``num_fcn_convs``, ``target_roi_scale``, ``norm_layer``,
    ``norm_kwargs``, ``rcnn_max_dets``: as GluonCV's MaskRCNN."""

    def __init__(self, features, top_features, classes, mask_channels: int = 256,
                 rcnn_max_dets: int = 1000, target_roi_scale: int = 2, num_fcn_convs: int = 4,
                 norm_layer: Any = None, norm_kwargs: Optional[dict] = None, **kwargs: Any) -> None:
        super().__init__(features, top_features, classes, **kwargs)
        cfg = self._cfg
        self.rcnn_max_dets = min(int(rcnn_max_dets), self.num_class * cfg["rpn_test_post_nms"])
        self.mask_size = tuple(s * target_roi_scale for s in cfg["roi_size"])
        with self.name_scope():
            self.mask = Mask(cfg["batch_size"], classes, mask_channels,
                             num_fcn_convs=num_fcn_convs, norm_layer=norm_layer,
                             norm_kwargs=norm_kwargs)
        self.mask_target = MaskTargetGenerator(cfg["batch_size"], cfg["num_sample"],
                                               self.num_class, self.mask_size)

    def _mask_training(self, F, pooled, samples, batch_size: int) -> tuple:
        # stage 1's RoIs, foreground first: the mask head sees up to max_pos of them per image
        with autograd.pause():
            indices = F.slice_axis(F.argsort(samples, axis=1, is_ascend=False), axis=1, begin=0,
                                   end=rcnn_max_positives(self))
        pooled = pooled.expand_dims(0).reshape((batch_size, -1, 0, 0, 0))
        picked = F.concat(*[F.take(F.slice_axis(pooled, axis=0, begin=i, end=i + 1).squeeze(axis=0),
                                   F.slice_axis(indices, axis=0, begin=i, end=i + 1).squeeze(axis=0))
                            for i in range(batch_size)], dim=0)
        return self.mask(picked), indices

    def _outputs(self, F, feat, ids, scores, boxes) -> tuple:
        # the rcnn_max_dets best detections, and their masks from the same FPN features
        k = self.rcnn_max_dets
        top = F.slice_axis(F.argsort(scores.reshape((1, -1)), axis=1, is_ascend=False), axis=1,
                           begin=0, end=k).reshape((-1,))
        ids, scores, boxes = (F.take(v.reshape((-3, 0)), top).expand_dims(0)
                              for v in (ids, scores, boxes))
        with autograd.pause():
            roi = F.stop_gradient(F.concat(F.zeros((k, 1)), boxes.reshape((-1, 4)), dim=-1))
        pooled = rcnn_roi_features(self, F, feat, roi)
        logits = self.mask(pooled).reshape((-3, 0, 0, 0))          # (K, C, S, S)
        channel = F.clip(ids.reshape((-1,)), 0, self.num_class - 1)   # invalid (-1): any
        picked = F.gather_nd(logits, F.stack(F.arange(0, k), channel, axis=0))   # (K, S, S)
        return ids, scores, boxes, F.sigmoid(picked).expand_dims(0)

    def reset_class(self, classes: Sequence[str], reuse_weights: Any = None) -> None:
        reuse = dict(_class_mapping(list(self.classes), list(classes), reuse_weights))
        super().reset_class(classes, reuse)
        self.mask.reset_class(classes, dict(reuse))
        self.mask_target = MaskTargetGenerator(self._cfg["batch_size"], self._cfg["num_sample"],
                                               self.num_class, self.mask_size)


fix_pyramid_roi_pooling(ResNeStCascadeRCNN)      # (inherited by the mask variant)


# -- training outputs and losses ---------------------------------------------------------------
def split_training_outputs(net: ResNeStCascadeRCNN, outs: Sequence[Any]) -> Dict[str, Any]:
    """The training output as ``{"rpn_score", "rpn_box", "stages": [per stage: {rois (B, N, 4)
    the boxes the stage was given, samples (B, N) +1/-1/0, matches (B, N), cls_pred (B, N, C+1),
    box_pred (B, N, 4), cls_target (B, N), box_target (B, N, 4), box_mask (B, N, 4)}],
    ["mask_pred" (B, P, C, S, S), "mask_indices" (B, P)]}``."""
    n = len(net.stage_iou)
    size = len(_PER_STAGE)
    out: Dict[str, Any] = {"rpn_score": outs[0], "rpn_box": outs[1]}
    out["stages"] = [dict(zip(_PER_STAGE, outs[2 + t * size: 2 + (t + 1) * size]))
                     for t in range(n)]
    rest = outs[2 + n * size:]
    if rest:
        out["mask_pred"], out["mask_indices"] = rest
    return out


def cascade_losses(net: ResNeStCascadeRCNN, outs: Sequence[Any], rpn_targets: Sequence[Any],
                   losses: Sequence[Any], gt_mask: Any = None,
                   mask_loss: Any = None) -> Dict[str, Any]:
    """Named scalar losses of one training forward (call under ``autograd.record``).

    ``rpn_targets``: GluonCV's batchified (cls_targets, box_targets, box_masks); ``losses``:
    the RPN classification, RPN box, R-CNN classification and R-CNN box losses (GluonCV's
    training-script choices). Each is normalised as GluonCV's R-CNN training step normalises
    it (per valid anchor / RoI); a stage's classification and box losses are multiplied by its
    weight (``cls{t}``, ``box{t}``); ``mask``: the mask loss of stage 1's foreground RoIs. The
    total loss is the sum of the values."""
    rpn_cls_loss, rpn_box_loss, rcnn_cls_loss, rcnn_box_loss = losses
    parts = split_training_outputs(net, outs)
    rpn_cls_t, rpn_box_t, rpn_box_m = rpn_targets
    rpn_score = parts["rpn_score"].squeeze(axis=-1)
    num_rpn = (rpn_cls_t >= 0).sum()
    out = {"rpn_conf": (rpn_cls_loss(rpn_score, rpn_cls_t, rpn_cls_t >= 0)
                        * rpn_cls_t.size / num_rpn).sum(),
           "rpn_box": (rpn_box_loss(parts["rpn_box"], rpn_box_t, rpn_box_m)
                       * parts["rpn_box"].size / num_rpn).sum()}
    for t, (stage, weight) in enumerate(zip(parts["stages"], net.stage_weights), start=1):
        cls_t = stage["cls_target"]
        valid = mx.nd.maximum((cls_t >= 0).sum(), 1)
        out[f"cls{t}"] = weight * (rcnn_cls_loss(stage["cls_pred"], cls_t, cls_t.expand_dims(-1) >= 0)
                                   * cls_t.size / valid).sum()
        out[f"box{t}"] = weight * (rcnn_box_loss(stage["box_pred"], stage["box_target"],
                                                 stage["box_mask"])
                                   * stage["box_pred"].size / valid).sum()
    if "mask_pred" in parts:
        if gt_mask is None or mask_loss is None:
            raise ValueError("Cascade Mask R-CNN training needs gt_mask and mask_loss")
        first, idx = parts["stages"][0], parts["mask_indices"]
        take = [(lambda v, i=i: mx.nd.take(v[i], idx[i])) for i in range(idx.shape[0])]
        rois = mx.nd.stack(*[f(first["rois"]) for f in take])
        matches = mx.nd.stack(*[f(first["matches"]) for f in take])
        cls_t = mx.nd.stack(*[f(first["cls_target"]) for f in take])
        targets, weights = net.mask_target(rois, gt_mask, matches, cls_t)
        out["mask"] = (mask_loss(parts["mask_pred"], targets, weights) * targets.size
                       / weights.sum()).sum()
    return out


# -- builders ---------------------------------------------------------------------------------
def _kind(masks: bool) -> Tuple[str, type]:
    return ("cascade_mask", ResNeStCascadeMaskRCNN) if masks else ("cascade", ResNeStCascadeRCNN)


def cascade_rcnn_fpn(backbone: str = "resnest50", dataset: str = "coco",
                     classes: Optional[Sequence[str]] = None, **kwargs: Any) -> ResNeStCascadeRCNN:
    """Cascade R-CNN + FPN on a ResNeSt; arguments as
    :func:`gluon_resnest.dense.detection.faster_rcnn_fpn` (same recipes, norms and heads; one
    box head per stage), plus ``stage_iou``, ``stage_stds``, ``stage_weights`` (defaults:
    :data:`STAGE_IOU`, :data:`STAGE_STDS`, :data:`STAGE_WEIGHTS`). Weights file:
    ``{root}/cascade_rcnn_fpn[_syncbn]_{backbone}_{dataset}-*.params``."""
    kind, cls = _kind(False)
    return build_detector(kind, backbone, dataset, classes, cls, **kwargs)


def cascade_mask_rcnn_fpn(backbone: str = "resnest50", dataset: str = "coco",
                          classes: Optional[Sequence[str]] = None,
                          **kwargs: Any) -> ResNeStCascadeMaskRCNN:
    """Cascade Mask R-CNN + FPN on a ResNeSt: :func:`cascade_rcnn_fpn` with GluonCV's FPN mask
    head (14x14 RoIs, 4 convs, 28x28 masks)."""
    kind, cls = _kind(True)
    return build_detector(kind, backbone, dataset, classes, cls, **kwargs)


class GluonCVTaps(nn.HybridBlock):
    """(N, 3, H, W) -> C2..C5 of a GluonCV ``ResNetV1b`` (resnet*_v1b/c/d/s), each output named
    like :class:`~gluon_resnest.dense.detection.StageTaps`' (``{prefix}c2_output`` ...), for the
    FPN. Parameters are the network's (shared); its classifier is not used."""

    def __init__(self, net: ResNetV1b, prefix: str = "gluoncv_taps_") -> None:
        super().__init__(prefix=prefix)
        object.__setattr__(self, "net", net)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.register_child(getattr(net, name), name)

    def hybrid_forward(self, F, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        outs = []
        for layer, name in zip((n.layer1, n.layer2, n.layer3, n.layer4), TAP_NAMES):
            x = layer(x)
            outs.append(F.identity(x, name=name))
        return F.Group(outs) if F is mx.sym else tuple(outs)


def _gluoncv_backbone(name: str, norm: str, pretrained_base: Union[bool, str],
                      num_devices: int) -> ResNetV1b:
    """GluonCV's ResNetV1b ``name`` (a control backbone), with the norm option's layers."""
    known = [m for m in gluoncv_model_list() if m.startswith("resnet") and "_v1" in m
             and not m.endswith(("_gn",)) and "_kinetics" not in m and "_custom" not in m]
    if name not in known:
        raise ValueError(f"base_network_name {name!r} is neither a ResNeSt variant nor one of "
                         f"GluonCV's ResNetV1b backbones ({', '.join(sorted(known)[:8])}, ...)")
    if pretrained_base:
        raise ValueError(f"pretrained_base={pretrained_base!r} for GluonCV's {name}: its "
                         f"ImageNet weights would be downloaded, which this package never does; "
                         f"pass pretrained_base=False and load weights yourself")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Caution using SyncBatchNorm")
        net = gluoncv_get_model(name, pretrained=False, dilated=False,
                                **backbone_kwargs(norm, num_devices))
    if not isinstance(net, ResNetV1b):
        raise ValueError(f"base_network_name {name!r} is not a ResNetV1b in GluonCV "
                         f"({type(net).__name__}); use one of resnet*_v1b/c/d/s")
    return net


def _custom_build(masks: bool):
    def build(backbone: str, dataset: str, classes: Optional[Sequence[str]], **kwargs: Any):
        kind, cls = _kind(masks)
        try:
            resolve_name(backbone)
        except (TypeError, ValueError):
            if not isinstance(backbone, str):
                raise
            # a GluonCV backbone: ours only in the taps; trained parameters as GluonCV's
            # frozen recipes choose them by name when the norm is frozen
            norm = kwargs.get("norm", "syncbn")
            base = _gluoncv_backbone(backbone, norm, kwargs.pop("pretrained_base", False),
                                     int(kwargs.get("num_devices") or 0))
            kwargs.update(base=base, taps=GluonCVTaps(base))
        return build_detector(kind, backbone, dataset, classes, cls, **kwargs)
    return build


def custom_cascade_rcnn_fpn(classes: Sequence[str], transfer: Optional[str] = None,
                            dataset: str = "custom", pretrained_base: Union[bool, str] = True,
                            base_network_name: str = "resnest50", norm_layer: Any = nn.BatchNorm,
                            norm_kwargs: Optional[dict] = None, sym_norm_layer: Any = None,
                            sym_norm_kwargs: Optional[dict] = None,
                            **kwargs: Any) -> ResNeStCascadeRCNN:
    """Cascade R-CNN + FPN for your own ``classes``, with the signature of GluonCV's
    ``custom_faster_rcnn_fpn`` (see :func:`gluon_resnest.dense.detection.custom_faster_rcnn_fpn`).
    ``base_network_name``: a ResNeSt variant, or GluonCV's ``resnet50_v1b`` (any ResNetV1b) as a
    control (``pretrained_base=False``: its ImageNet file would be downloaded)."""
    return custom_detector(_custom_build(False), classes, transfer, dataset, pretrained_base,
                           base_network_name, norm_layer, norm_kwargs, sym_norm_layer,
                           sym_norm_kwargs, kwargs)


def custom_cascade_mask_rcnn_fpn(classes: Sequence[str], transfer: Optional[str] = None,
                                 dataset: str = "custom", pretrained_base: Union[bool, str] = True,
                                 base_network_name: str = "resnest50",
                                 norm_layer: Any = nn.BatchNorm, norm_kwargs: Optional[dict] = None,
                                 sym_norm_layer: Any = None, sym_norm_kwargs: Optional[dict] = None,
                                 **kwargs: Any) -> ResNeStCascadeMaskRCNN:
    """Cascade Mask R-CNN + FPN for your own ``classes``; arguments as
    :func:`custom_cascade_rcnn_fpn`."""
    return custom_detector(_custom_build(True), classes, transfer, dataset, pretrained_base,
                           base_network_name, norm_layer, norm_kwargs, sym_norm_layer,
                           sym_norm_kwargs, kwargs)

