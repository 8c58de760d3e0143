"""Train and evaluate a ResNeSt detector or segmenter: ``run(cfg, out_dir, resume) -> dict``.

The steps are GluonCV's: its R-CNN train/val transforms, batchify functions and training
step (the losses of its training scripts, via :mod:`gluon_resnest._compat.gluoncv_dense`), its
segmentation data transforms,
``MixSoftmaxCrossEntropyLoss``, ``VOC07MApMetric`` and ``SegmentationMetric``; the schedules are
GluonCV's ``LRScheduler`` modes (:func:`.recipe.dense_lr_at`). By default it trains on the
generated shapes set (:mod:`gluon_resnest.dense.synthetic`) and reports mAP / mIoU on its
validation split. Real data sets (``voc``, ``coco``, ``ade20k``, ``citys``) load through
GluonCV's dataset classes from ``data.root``; nothing is downloaded.

Config: ``task: detection | segmentation`` and the keys of
:data:`gluon_resnest.train.config.DENSE_DEFAULTS` (YAML in ``configs/detection`` and
``configs/segmentation``), validated by :func:`gluon_resnest.train.config.resolve`.

The classification trainer's safeguards (:mod:`.loop`): the run folder and its
``config.yaml`` come first; ``last.ckpt`` is written atomically every
``train.checkpoint_interval`` iterations (default: once per epoch), on SIGINT/SIGTERM (after
the current iteration; then :class:`TrainingInterrupted`) and when training ends; a NaN/Inf
loss stops the run with :class:`NonFiniteLossError` and keeps the last good checkpoint.
Resume is exact: epoch ``e`` visits the samples in the order ``permutation(seed, e)``;
Python's, numpy's and MXNet's generators (GluonCV's random transforms, RoI sampling) are
reseeded from ``(seed, iteration)`` before every iteration; the learning rate is a function of
the iteration; the checkpoint holds the parameters and the optimizer state.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from gluoncv import data as gdata
from gluoncv.data.batchify import FasterRCNNTrainBatchify, MaskRCNNTrainBatchify
from gluoncv.data.transforms.presets import rcnn as presets
from gluoncv.loss import MixSoftmaxCrossEntropyLoss
from gluoncv.nn.dropblock import set_drop_prob
from gluoncv.utils.metrics.segmentation import SegmentationMetric
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric
from mxnet import autograd, gluon
from mxnet.gluon.data.vision import transforms

from .._compat.gluoncv_dense import rcnn_training_step
from ..dense.cascade import cascade_losses, cascade_mask_rcnn_fpn, cascade_rcnn_fpn
from ..dense.detection import faster_rcnn_fpn, initialize_detector, mask_rcnn_fpn
from ..dense.initialize import initialize_missing
from ..dense.norms import backbone_kwargs
from ..dense.segmentation import deeplab
from ..dense.synthetic import ShapesConfig, ShapesDetection, ShapesSegmentation
from ..deploy.artifact import ModelMeta
from ..deploy.artifact import save as save_artifact
from ..model.resnest import STAGE_BLOCKS, STEM_BLOCKS
from ..model.variants import VARIANTS, resolve_name
from . import checkpoint as ckpt_mod
from . import recipe
from .config import format_config, resolve
from .loop import (
    NonFiniteLossError,
    PoolingNoteFilter,
    RunLog,
    SignalGuard,
    TrainingInterrupted,
    atomic_write,
    atomic_write_text,
    iteration_seed,
    non_finite_error,
    save_guarded,
    seed_all,
    write_run_config,
)

__all__ = ["SHAPES_DETECTOR", "DenseTrainer", "run", "check_detection_label",
           "check_segmentation_mask", "TrainingInterrupted", "NonFiniteLossError"]

#: Detector reductions on the generated set (96-128 px images, 2 CPU cores), unless model.kwargs
#: overrides them: fewer RPN proposals and RoIs, 128-channel FPN and 2-conv box head.
SHAPES_DETECTOR = dict(rpn_train_pre_nms=512, rpn_train_post_nms=128, rpn_test_pre_nms=256,
                       rpn_test_post_nms=64, num_sample=64, num_fpn_filters=128,
                       num_box_head_conv=2, num_box_head_conv_filters=128,
                       num_box_head_dense_filters=256)

Callback = Callable[[str, "DenseTrainer", Dict[str, Any]], None]


# -- data -----------------------------------------------------------------------------------
def check_detection_label(label: np.ndarray, index: int) -> None:
    """ValueError unless ``label`` is an (N >= 1, >= 5) box array (x1, y1, x2, y2, class)."""
    label = np.asarray(label)
    if label.ndim != 2 or label.shape[1] < 5:
        raise ValueError(f"sample {index}: label must be (N, 5+) [x1, y1, x2, y2, class, ...], "
                         f"got shape {label.shape}")
    if label.shape[0] == 0 or not (label[:, 4] >= 0).any():
        raise ValueError(f"sample {index} has an empty annotation set (no boxes); the RPN and "
                         f"R-CNN targets need at least one box per training image - drop "
                         f"unannotated images")


def check_segmentation_mask(mask: Any, index: int) -> None:
    """ValueError if a segmentation target has no labelled pixel (all ignore, -1)."""
    arr = mask.asnumpy() if isinstance(mask, mx.nd.NDArray) else np.asarray(mask)
    if arr.size == 0 or not (arr >= 0).any():
        raise ValueError(f"sample {index} has an empty annotation set: no labelled pixel "
                         f"(every value is the ignore label -1)")


class _Checked(gluon.data.Dataset):
    """Checks each raw detection sample's boxes before GluonCV's transform sees it."""

    def __init__(self, dataset, transform) -> None:
        if len(dataset) == 0:
            raise ValueError("the training set is empty: no images to train on")
        self._dataset, self._transform = dataset, transform

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int):
        item = self._dataset[idx]
        check_detection_label(item[1], idx)
        return self._transform(*item)


def _require_root(data: dict) -> str:
    root = data.get("root")
    if not root or not os.path.isdir(root):
        raise FileNotFoundError(f"data.dataset={data['dataset']!r} needs data.root, a folder "
                                f"holding it in GluonCV's layout (got {root!r}); nothing is "
                                f"downloaded. Use data.dataset=shapes for the generated set")
    return root


def _stack(samples: Sequence[Tuple[Any, ...]]) -> Tuple[mx.nd.NDArray, ...]:
    return tuple(mx.nd.stack(*[s[k] for s in samples]) for k in range(len(samples[0])))


class _Batches:
    """Batch ``i`` (0-based) of an endless, deterministic pass over a data set: epoch
    ``i // per_epoch`` visits the samples in the order ``permutation(seed, epoch)`` and drops
    the last incomplete batch."""

    def __init__(self, dataset: Any, batch_size: int, batchify: Callable, seed: int) -> None:
        if len(dataset) == 0:
            raise ValueError("the training set is empty: no images to train on")
        if batch_size > len(dataset):
            raise ValueError(f"train.batch_size {batch_size} is larger than the training set "
                             f"({len(dataset)} images); lower train.batch_size")
        self.dataset, self.batch_size, self.batchify, self.seed = dataset, batch_size, batchify, seed
        self.per_epoch = len(dataset) // batch_size
        self._order: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def indices(self, i: int) -> np.ndarray:
        epoch, pos = divmod(i, self.per_epoch)
        if self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5EED])
            self._order = (epoch, rng.permutation(len(self.dataset)))
        return self._order[1][pos * self.batch_size:(pos + 1) * self.batch_size]

    def __getitem__(self, i: int):
        return self.batchify([self.dataset[int(j)] for j in self.indices(i)])


# -- detection ------------------------------------------------------------------------------
def _detection_sets(data: dict, masks: bool):
    if data["dataset"] == "shapes":
        conf = ShapesConfig(image_size=data["image_size"], seed=data["seed"])
        return (ShapesDetection(data["num_train"], "train", masks, conf),
                ShapesDetection(data["num_val"], "val", False, conf))
    root = _require_root(data)
    if data["dataset"] == "voc":
        return (gdata.VOCDetection(root, splits=[(2007, "trainval"), (2012, "trainval")]),
                gdata.VOCDetection(root, splits=[(2007, "test")]))
    cls = gdata.COCOInstance if masks else gdata.COCODetection
    return (cls(root, splits="instances_train2017"),
            gdata.COCODetection(root, splits="instances_val2017", skip_empty=False))


def export_meta(cfg: Dict[str, Any], size: int, classes: Sequence[str],
                **details: Any) -> ModelMeta:
    """The metadata record of a dense run's exported graph: its task and class names, the
    run's input size, the backbone variant's mean/std. GluonCV's dense transforms resize
    bilinearly and do not crop beyond the square (crop_pct 1)."""
    model = cfg["model"]
    meta = ModelMeta.for_variant(
        model["backbone"], len(classes), classes, task=cfg["task"], format="symbol",
        details={"arch": model["arch"], "norm": model["norm"],
                 "dataset": cfg["data"]["dataset"], **details})
    return meta.updated(input_size=int(size), crop_pct=1.0, interpolation="bilinear")


def _shard(batch) -> list:
    """GluonCV's batchify gives per-shard tuples (one shard: arrays); -> one shard's arrays."""
    return [(b if isinstance(b, mx.nd.NDArray) else b[0]).as_in_context(mx.cpu())
            for b in batch]


#: The detector builder of each ``model.arch``.
_DETECTORS = {"faster_rcnn_fpn": faster_rcnn_fpn, "mask_rcnn_fpn": mask_rcnn_fpn,
              "cascade_rcnn_fpn": cascade_rcnn_fpn, "cascade_mask_rcnn_fpn": cascade_mask_rcnn_fpn}


class _Detection:
    """Faster/Mask R-CNN and the cascades: the network, its data and one forward/backward pass
    (GluonCV's training step; the cascades' losses: :func:`.cascade.cascade_losses`)."""

    skip_non_finite = True     # GluonCV's mask loss divides by the batch's mask targets (0 at times)

    def __init__(self, cfg: dict) -> None:
        model, data, train = cfg["model"], cfg["data"], cfg["train"]
        self.masks = masks = model["arch"] in ("mask_rcnn_fpn", "cascade_mask_rcnn_fpn")
        self.cascade = model["arch"].startswith("cascade")
        if masks:
            try:
                import pycocotools  # noqa: F401  (GluonCV's mask transform would pip-install it)
            except ImportError:
                raise ImportError("Mask R-CNN training rasterises polygons with pycocotools: "
                                  "pip install pycocotools") from None
        train_set, self.val_set = _detection_sets(data, masks)
        named = data["dataset"] in ("voc", "coco")
        kwargs = dict(model["kwargs"])
        if data["dataset"] == "shapes":
            kwargs = {"short": data["image_size"], "max_size": data["image_size"],
                      **SHAPES_DETECTOR, **({"rcnn_max_dets": 16} if masks else {}), **kwargs}
        build = _DETECTORS[model["arch"]]
        net = build(model["backbone"], data["dataset"] if named else "custom",
                    None if named else train_set.classes, norm=model["norm"],
                    pretrained_base=model["pretrained_base"],
                    per_device_batch_size=train["batch_size"], num_devices=1, **kwargs)
        net.apply(partial(set_drop_prob, 0.0))
        initialize_detector(net, last_gamma=model["last_gamma"])
        net.collect_params().setattr("grad_req", "null")
        net.collect_train_params().setattr("grad_req", "write")
        self.net, self.params = net, net.collect_train_params()
        self.mask_metric = masks and data["dataset"] == "shapes"
        preset = presets.MaskRCNNDefaultTrainTransform if masks else \
            presets.FasterRCNNDefaultTrainTransform
        transform = preset(net.short, net.max_size, net, ashape=net.ashape, multi_stage=True)
        batchify = (MaskRCNNTrainBatchify if masks else FasterRCNNTrainBatchify)(net, 1)
        self.train_set = _Checked(train_set, transform)
        self.batchify = lambda samples: _shard(batchify(samples))
        # GluonCV's test transform: short side to net.short, long side at most net.max_size
        self.meta = export_meta(cfg, net.short, net.classes, max_size=net.max_size) \
            if isinstance(net.short, int) else None         # a multi-scale short: no one size
        self.names = ["rpn_conf", "rpn_box", "rcnn_cls", "rcnn_box"] + \
            (["rcnn_mask"] if masks else [])
        self._train, self._step = train, None

    def before_load(self) -> None:
        # GluonCV builds the R-CNN target generator (and its constant parameters) at the first
        # training step; a checkpoint of a trained net holds them (the cascade encodes its
        # targets with parameter-free coders instead)
        if not self.cascade:
            self.net.target_generator  # noqa: B018

    def start_training(self, trainer: gluon.Trainer) -> None:
        train = self._train
        self.net.hybridize(static_alloc=True)          # (re-)trace with the training inputs
        losses = [gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False),
                  gluon.loss.HuberLoss(rho=train["rpn_smoothl1_rho"]),
                  gluon.loss.SoftmaxCrossEntropyLoss(),
                  gluon.loss.HuberLoss(rho=train["rcnn_smoothl1_rho"])]
        mask_loss = gluon.loss.SigmoidBinaryCrossEntropyLoss() if self.masks else None
        if self.cascade:
            self._step = partial(self._cascade_step, losses, mask_loss)
        else:
            self._step = rcnn_training_step(self.net, trainer, losses, mask_loss)

    def _cascade_step(self, losses: list, mask_loss: Any, batch: list) -> Dict[str, Any]:
        """The cascade's forward/backward: the batch as GluonCV's R-CNN batchify gives it."""
        if self.masks:
            data, label, gt_mask, *rpn_targets = batch
        else:
            (data, label, *rpn_targets), gt_mask = batch, None
        with autograd.record():
            outs = self.net(data, label[:, :, :4], label[:, :, 4:5])
            parts = cascade_losses(self.net, outs, rpn_targets, losses, gt_mask, mask_loss)
            total = mx.nd.add_n(*parts.values())
        total.backward()
        return parts

    def forward_backward(self, batch: list, indices: np.ndarray) -> Dict[str, float]:
        out = self._step(batch)
        if self.cascade:
            parts = {n: float(v.asscalar()) for n, v in out.items()}
            parts["total"] = sum(parts.values())
            return parts
        parts = {n: float(v.asscalar()) for n, v in zip(self.names, out)}
        parts["total"] = sum(parts.values())
        return parts

    def evaluate(self, check: Callable[[], None]) -> dict:
        return _evaluate_detection(self.net, self.val_set, self.mask_metric, check)


def _evaluate_detection(net, val_set, mask_metric: bool,
                        check: Callable[[], None] = lambda: None) -> dict:
    """VOC07 mAP at IoU 0.5 (``mAP``, per class ``AP``) and 0.75 (``mAP75``) over ``val_set``;
    with ``mask_metric`` also the mask mIoU."""
    net.hybridize(static_alloc=True)      # (re-)trace: inference takes the image only
    metric = VOC07MApMetric(iou_thresh=0.5, class_names=net.classes)
    strict = VOC07MApMetric(iou_thresh=0.75, class_names=net.classes)
    val_tf = presets.FasterRCNNDefaultValTransform(net.short, net.max_size)
    seg_metric = _MaskSemanticMetric(net.num_class) if mask_metric else None
    for i in range(len(val_set)):
        check()
        img, label = val_set[i][0], val_set[i][1]
        x, bbox, _ = val_tf(img, label)
        outs = net(x.expand_dims(0))
        for m in (metric, strict):
            m.update(outs[2], outs[0], outs[1], bbox[None, :, :4], bbox[None, :, 4:5])
        if seg_metric is not None:
            seg_metric.update(val_set.sample(i), outs, x.shape[1:])
    names_ap, values = metric.get()
    metrics = {"mAP": float(values[-1]), "mAP75": float(strict.get()[1][-1]),
               "AP": {n: float(v) for n, v in zip(names_ap[:-1], values[:-1])}}
    if seg_metric is not None:
        metrics.update(seg_metric.get())
    return metrics


class _MaskSemanticMetric:
    """Mask R-CNN's instance masks pasted into a semantic map, scored by GluonCV's
    SegmentationMetric against the generated segmentation map (mask mIoU, pixel accuracy).

    Detections scoring above ``score_thresh`` are pasted (GluonCV's ``mask.fill``) as binary
    masks (probability > 0.5), higher scores on top; other pixels are background.
    """

    def __init__(self, num_class: int, score_thresh: float = 0.2) -> None:
        self.metric = SegmentationMetric(num_class + 1)
        self.num_class, self.thresh = num_class, score_thresh

    def update(self, sample: dict, outs, size) -> None:
        from gluoncv.data.transforms.mask import fill  # needs pycocotools (Mask R-CNN only)
        ids, scores, boxes, masks = [o[0].asnumpy() for o in outs]
        h, w = size
        pred = np.zeros((h, w), np.int64)
        keep = np.nonzero((scores[:, 0] > self.thresh) & (ids[:, 0] >= 0))[0]
        keep = keep[np.argsort(scores[keep, 0])]             # ascending: best pasted last
        if len(keep):
            for m, c in zip(fill(masks[keep], boxes[keep], (w, h)), ids[keep, 0].astype(int)):
                pred[m > 0.5] = c + 1
        onehot = np.eye(self.num_class + 1, dtype=np.float32)[pred].transpose(2, 0, 1)
        self.metric.update(mx.nd.array(sample["segmap"][None]), mx.nd.array(onehot[None]))

    def get(self) -> dict:
        pix, miou = self.metric.get()
        return {"mask_pixAcc": float(pix), "mask_mIoU": float(miou)}


# -- segmentation ---------------------------------------------------------------------------
def _segmentation_sets(data: dict, transform):
    kw = dict(transform=transform, base_size=data["base_size"], crop_size=data["crop_size"])
    if data["dataset"] == "shapes":
        conf = ShapesConfig(image_size=data["image_size"], seed=data["seed"])
        return (ShapesSegmentation(data["num_train"], "train", "train", config=conf, **kw),
                ShapesSegmentation(data["num_val"], "val", "val", config=conf, **kw))
    root = _require_root(data)
    cls = gdata.datasets[data["dataset"]]   # GluonCV's ADE20K/Cityscapes/VOC readers
    return (cls(root, split="train", mode="train", **kw),
            cls(root, split="val", mode="val", **kw))


class _Segmentation:
    """DeepLabV3: the network, its data and one forward/backward pass."""

    skip_non_finite = False

    def __init__(self, cfg: dict) -> None:
        model, data = cfg["model"], cfg["data"]
        variant = VARIANTS[resolve_name(model["backbone"])].default_cfg
        tf = transforms.Compose([transforms.ToTensor(),
                                 transforms.Normalize(variant["mean"], variant["std"])])
        self.train_set, self.val_set = _segmentation_sets(data, tf)
        net = deeplab(model["backbone"], dataset=None, nclass=self.train_set.NUM_CLASS,
                      pretrained_base=model["pretrained_base"], aux=model["aux"],
                      crop_size=data["crop_size"], base_size=data["base_size"],
                      **backbone_kwargs(model["norm"], num_devices=1), **model["kwargs"])
        net.apply(partial(set_drop_prob, 0.0))
        initialize_missing(net, [getattr(net, n) for n in STEM_BLOCKS + STAGE_BLOCKS],
                           last_gamma=model["last_gamma"])
        self.net, self.params = net, net.collect_params()
        self.batchify = _stack
        # GluonCV's validation transform: short side to crop_size, centre crop
        self.meta = export_meta(cfg, data["crop_size"], self.train_set.classes)
        self.criterion = MixSoftmaxCrossEntropyLoss(aux=model["aux"],
                                                    aux_weight=model["aux_weight"])

    def before_load(self) -> None:
        pass

    def start_training(self, trainer: gluon.Trainer) -> None:
        self.net.hybridize(static_alloc=True)

    def forward_backward(self, batch: tuple, indices: np.ndarray) -> Dict[str, float]:
        x, y = batch
        for i, j in enumerate(indices):
            check_segmentation_mask(y[i], int(j))
        with autograd.record():
            outs = self.net(x)
            loss = self.criterion(*outs, y)
        loss.backward()
        return {"total": float(loss.mean().asscalar())}

    def evaluate(self, check: Callable[[], None]) -> dict:
        return _evaluate_segmentation(self.net, self.val_set, check)


def _evaluate_segmentation(net, val_set, check: Callable[[], None] = lambda: None) -> dict:
    """Pixel accuracy and mIoU over ``val_set`` (GluonCV's SegmentationMetric)."""
    metric = SegmentationMetric(val_set.NUM_CLASS)
    for i in range(len(val_set)):
        check()
        x, y = val_set[i]
        metric.update(y[None], net(x[None])[0])
    pix, miou = metric.get()
    return {"pixAcc": float(pix), "mIoU": float(miou)}


# -- the loop -------------------------------------------------------------------------------
class _Quiet(warnings.catch_warnings):
    """Silences MXNet's notes on GluonCV's graphs (untyped input, constant anchors, 1-device
    SyncBN): they come with every detector build and trace and say nothing about the run."""

    def __enter__(self):
        out = super().__enter__()
        warnings.filterwarnings("ignore", message="Cannot decide type|Constant parameter|"
                                                  "Caution using SyncBatchNorm|Parameter .* is "
                                                  "not used by any computation")
        return out


def default_out_dir(cfg: Dict[str, Any]) -> str:
    name = cfg["run"].get("name") or cfg["task"]
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


class DenseTrainer:
    """One detection or segmentation run of a resolved config (see the module doc)."""

    def __init__(self, cfg: Dict[str, Any], out_dir: Optional[str] = None,
                 resume: Optional[str] = None, log: Callable[[str], None] = print) -> None:
        self.cfg, self.log = cfg, log
        t = cfg["train"]
        self.out = out_dir or cfg["run"]["out"] or default_out_dir(cfg)
        write_run_config(self.out, cfg)       # first: an interrupted setup still leaves it
        self.log = RunLog(os.path.join(self.out, "train.log"), log)   # what it prints, kept
        self.pooling_note = PoolingNoteFilter()
        self.last = os.path.join(self.out, "last.ckpt")
        resume_meta = ckpt_mod.read_meta(resume) if resume else None
        if resume_meta is not None and resume_meta.get("task") != cfg["task"]:
            raise ValueError(f"checkpoint {resume!r} is not a {cfg['task']} run (task "
                             f"{resume_meta.get('task', 'classification')!r})")
        seed_all(t["seed"])
        self.task = (_Detection if cfg["task"] == "detection" else _Segmentation)(cfg)
        self.batches = _Batches(self.task.train_set, t["batch_size"], self.task.batchify,
                                t["seed"])
        self.per_epoch = self.batches.per_epoch
        self.total = t["iterations"] or t["epochs"] * self.per_epoch
        self.checkpoint_every = t["checkpoint_interval"] or self.per_epoch
        self.warmup = min(t["warmup_iters"], self.total - 1)
        self.steps = [int(e * self.per_epoch) - self.warmup for e in t["lr_decay_epochs"]]
        self.trainer = gluon.Trainer(self.task.params, "sgd",
                                     {"learning_rate": self.lr_at(1), "wd": t["wd"],
                                      "momentum": t["momentum"]})
        self.iteration, self.skipped = 0, 0
        self.saved_at: Optional[int] = None       # the iteration last.ckpt holds
        self.history: List[Dict[str, float]] = []
        self.before: Optional[dict] = None
        self.guard = SignalGuard(self.log)
        if resume:
            self.task.before_load()
            meta = ckpt_mod.load_checkpoint(resume, self.task.net, self.trainer)
            self.iteration, self.skipped = meta["iteration"], meta.get("skipped", 0)
            self.history, self.before = meta["history"], meta.get("metrics_before")
            self.saved_at = self.iteration
            self.log(f"resumed from {resume}: iteration {self.iteration} of {self.total}")

    @property
    def net(self):
        return self.task.net

    def lr_at(self, it: int) -> float:
        t = self.cfg["train"]
        return recipe.dense_lr_at(it, self.total, t["lr"], t["lr_mode"], self.steps,
                                  t["lr_decay"], self.warmup, t["warmup_factor"])

    def _meta(self) -> Dict[str, Any]:
        return {"task": self.cfg["task"], "iteration": self.iteration, "total": self.total,
                "config": self.cfg, "history": self.history, "skipped": self.skipped,
                "metrics_before": self.before, "saved": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save(self) -> str:
        """Write ``last.ckpt`` (unless a parameter became NaN/Inf)."""
        path = save_guarded(self.last, self.net, self.trainer, self._meta(),
                            f"iteration {self.iteration}", self._advice())
        self.saved_at = self.iteration
        return path

    def _stop(self, what: str, where: str) -> NonFiniteLossError:
        held = f"iteration {self.saved_at}" if self.saved_at is not None else None
        return non_finite_error(what, where, self.last if held else None, self._advice(), held)

    def _advice(self) -> str:
        return f"Lower train.lr (now {self.cfg['train']['lr']}) or set train.clip_gradient"

    def _check_signal(self, where: str) -> None:
        if self.guard.received is not None:
            # before the first update there is nothing to keep (nor a complete network: GluonCV
            # initialises parts of it at the first forward pass)
            saved = self.save() if self.iteration else None
            raise TrainingInterrupted(self.guard.received, saved, where)

    def _non_finite(self, parts: Dict[str, float], it: int, consecutive: int) -> None:
        where = f"iteration {it}"
        value = f"the training loss became {parts['total']}"
        if not self.task.skip_non_finite:
            raise self._stop(value, where)
        # an isolated non-finite loss (e.g. GluonCV's mask loss with no mask target in the
        # batch) is skipped without an update; a run of them means the weights diverged
        if consecutive >= 3 or self.skipped > max(3, self.total // 10):
            raise self._stop(f"{value} ({self.skipped} non-finite so far, {consecutive} in a "
                             f"row)", where)

    def fit(self, callbacks: Sequence[Callback] = ()) -> Dict[str, Any]:
        """Train from the current iteration to the end, evaluate, export; returns a summary."""
        t = self.cfg["train"]
        start, first = time.time(), self.iteration
        with self.log, self.guard, _Quiet():
            self.log.note("resolved config: " + format_config(self.cfg, compact=True))
            if self.iteration == 0 and self.before is None and t["eval_before"]:
                self.before = self.task.evaluate(
                    lambda: self._check_signal("the evaluation before training"))
            self.task.start_training(self.trainer)
            consecutive = 0
            while self.iteration < self.total:
                it = self.iteration + 1
                seed_all(iteration_seed(t["seed"], it))
                indices = self.batches.indices(self.iteration)
                lr = self.lr_at(it)
                self.trainer.set_learning_rate(lr)
                batch = self.batches[self.iteration]
                with self.pooling_note(tuple(getattr(b, "shape", None) for b in batch)):
                    parts = self.task.forward_backward(batch, indices)
                if np.isfinite(parts["total"]) and t["clip_gradient"]:
                    norm = gluon.utils.clip_global_norm(
                        [p.grad() for p in self.task.params.values() if p.grad_req != "null"],
                        t["clip_gradient"], check_isfinite=True)
                    parts["total"] += 0.0 * norm              # a non-finite norm counts too
                if np.isfinite(parts["total"]):
                    self.trainer.step(t["batch_size"])
                    self.history.append(parts)
                    consecutive = 0
                else:
                    self.skipped += 1
                    consecutive += 1
                    self._non_finite(parts, it, consecutive)
                self.iteration = it
                self._log(it, parts, lr, (time.time() - start) / (it - first))
                for cb in callbacks:
                    cb("iteration_end", self, {"iteration": it, **parts})
                self._check_signal(f"iteration {it}/{self.total}")
                # not amid non-finite losses: the weights may be diverging
                if it == self.total or (it % self.checkpoint_every == 0 and not consecutive):
                    self.save()
            if not self.history:
                raise self._stop("no iteration had a finite loss", f"iteration {self.iteration}")
            metrics = self.task.evaluate(
                lambda: self._check_signal("the final evaluation (training is complete)"))
            result = self._finish(metrics, time.time() - start)
        result["skipped"] = self.skipped
        return result

    def _log(self, it: int, parts: Dict[str, float], lr: float, per_iter: float) -> None:
        every = self.cfg["train"]["log_interval"]
        if every and (it % every == 0 or it in (1, self.total)):
            text = " ".join(f"{k}={v:.3f}" for k, v in parts.items())
            self.log(f"[{self.cfg['task']}] iter {it}/{self.total} {text} lr={lr:.4g} "
                     f"({per_iter:.2f}s/iter)")

    def _export(self) -> str:
        """The inference graph as an artifact (:mod:`gluon_resnest.deploy.artifact`): symbol
        files plus ``model-meta.json`` (task, class names, input size, mean/std), written to a
        temporary folder and moved into place."""
        prefix = os.path.join(self.out, "model")
        work = tempfile.mkdtemp(prefix=".export-", dir=self.out)
        try:
            for path in save_artifact(self.net, os.path.join(work, "model"), self.task.meta):
                os.replace(path, prefix + path[len(os.path.join(work, "model")):])
        finally:
            for f in os.listdir(work):
                os.remove(os.path.join(work, f))
            os.rmdir(work)
        return prefix

    def _finish(self, metrics: dict, seconds: float) -> Dict[str, Any]:
        params = atomic_write(os.path.join(self.out, "model.params"), self.net.save_parameters)
        exported = None
        if self.cfg["train"]["export"] and self.task.meta is not None:
            exported = self._export()
        totals = [h["total"] for h in self.history]
        k = max(1, min(5, len(totals) // 4))
        result = {"task": self.cfg["task"],
                  "model": getattr(self.net, "model_name", self.cfg["model"]["arch"]),
                  "iterations": len(self.history), "seconds": round(seconds, 1),
                  "loss_first": float(np.mean(totals[:k])),
                  "loss_last": float(np.mean(totals[-k:])), "loss_history": self.history,
                  "metrics": metrics, "metrics_before": self.before, "params": params,
                  "export": exported, "checkpoint": self.last, "out": self.out,
                  "config": self.cfg}
        atomic_write_text(os.path.join(self.out, "metrics.json"),
                          json.dumps(result, indent=1, default=str))

        def summary(m: dict) -> str:
            return ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
        untrained = f" (untrained: {summary(self.before)})" if self.before else ""
        self.log(f"[{self.cfg['task']}] done: loss {result['loss_first']:.3f} -> "
                 f"{result['loss_last']:.3f}; validation {summary(metrics)}{untrained}; "
                 f"saved {params}")
        return result


def run(cfg: Dict[str, Any], out_dir: Optional[str] = None, resume: Optional[str] = None,
        callbacks: Sequence[Callback] = (), log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train and evaluate as ``cfg`` says (over the task's defaults; ``task`` defaults to
    detection); write to ``out_dir`` (default ``run.out``, else ``runs/<name>-<time>``).
    ``resume``: a checkpoint (or run folder) of this config to continue exactly.

    Returns ``{task, model, iterations, seconds, loss_first, loss_last, loss_history,
    metrics, metrics_before, params, export, checkpoint, out, config, skipped}``
    (``metrics_before``: the untrained network's, with ``train.eval_before``; ``skipped``: the
    iterations whose loss was not finite and that made no update); ``metrics`` holds ``mAP``
    (VOC07, IoU 0.5), ``mAP75`` (IoU 0.75) and per-class ``AP`` for detection (plus
    ``mask_mIoU``/``mask_pixAcc`` for Mask R-CNN), ``mIoU`` and ``pixAcc`` for segmentation. ``out_dir`` gets
    ``config.yaml``, ``last.ckpt``, ``model.params``, ``metrics.json`` and the exported
    inference graph as an artifact: ``model-symbol.json``/``model-0000.params`` and its record
    ``model-meta.json`` (:func:`export_meta`).
    """
    cfg = dict(cfg)
    cfg.setdefault("task", "detection")
    if cfg["task"] == "classification":
        raise ValueError("this trainer takes task detection or segmentation; classification "
                         "configs train with gluon_resnest.train.run")
    full = resolve(cfg)
    if resume:
        resume = ckpt_mod.resolve_checkpoint(resume)
    with _Quiet():
        return DenseTrainer(full, out_dir, resume, log).fit(callbacks)
