"""Train and evaluate a ResNeSt detector or segmenter: ``run(cfg, out_dir) -> dict``.

The loop is GluonCV's: its R-CNN train/val transforms, batchify functions and
``ForwardBackwardTask`` (losses of its training scripts), its segmentation data transforms,
``MixSoftmaxCrossEntropyLoss``, ``LRScheduler``, ``VOC07MApMetric`` and ``SegmentationMetric``.
By default it trains on the generated shapes set (:mod:`.synthetic`) and reports mAP / mIoU on
its validation split. Real data sets (``voc``, ``coco``, ``ade20k``, ``citys``) load through
GluonCV's dataset classes from ``data.root``; nothing is downloaded.

Config (YAML in ``configs/detection`` and ``configs/segmentation``; see :data:`DEFAULTS`)::

    task: detection | segmentation
    model: {arch, backbone, norm, pretrained_base, last_gamma, kwargs}  (last_gamma: a fresh
           backbone's residual blocks start as the identity; loaded weights are untouched)
    data:  {dataset, root, num_train, num_val, image_size, seed, base_size, crop_size}
    train: {iterations | epochs, batch_size, lr, lr_mode, lr_decay_epochs, warmup_iters,
            warmup_factor, momentum, wd, clip_gradient, eval_before, export, ...}
           detection also: rpn_smoothl1_rho, rcnn_smoothl1_rho (GluonCV's HuberLoss rho)

Also a command: ``python -m gluon_resnest.dense.train --task detection --config FILE --out DIR``.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import random
import time
import warnings
from functools import partial
from typing import Any, Dict, List, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

__all__ = ["DEFAULTS", "TASKS", "SHAPES_DETECTOR", "run", "resolve_config", "check_detection_label",
           "check_segmentation_mask", "main"]

TASKS = ("detection", "segmentation")

#: Defaults per task: the small end-to-end runs on the generated set (about 2 min on 2 cores).
DEFAULTS: Dict[str, Dict[str, Any]] = {
    "detection": {
        "task": "detection",
        "model": {"arch": "faster_rcnn_fpn", "backbone": "resnest50", "norm": "gn",
                  "pretrained_base": False, "last_gamma": True, "kwargs": {}},
        "data": {"dataset": "shapes", "root": None, "num_train": 16, "num_val": 8,
                 "image_size": 96, "seed": 0},
        "train": {"iterations": 120, "epochs": None, "batch_size": 1, "lr": 0.01,
                  "lr_mode": "step", "lr_decay_epochs": [], "lr_decay": 0.1, "warmup_iters": 0,
                  "warmup_factor": 1 / 3, "momentum": 0.9, "wd": 1e-4, "log_interval": 10,
                  "seed": 0, "export": True, "eval_before": True, "clip_gradient": None,
                  "rpn_smoothl1_rho": 1 / 9, "rcnn_smoothl1_rho": 1.0},
    },
    "segmentation": {
        "task": "segmentation",
        "model": {"arch": "deeplab", "backbone": "resnest50", "norm": "gn",
                  "pretrained_base": False, "last_gamma": True, "aux": True, "aux_weight": 0.5,
                  "kwargs": {}},
        "data": {"dataset": "shapes", "root": None, "num_train": 16, "num_val": 8,
                 "image_size": 96, "seed": 0, "base_size": 96, "crop_size": 96},
        "train": {"iterations": 40, "epochs": None, "batch_size": 2, "lr": 0.01,
                  "lr_mode": "poly", "lr_decay_epochs": [], "lr_decay": 0.1, "warmup_iters": 0,
                  "warmup_factor": 1 / 3, "momentum": 0.9, "wd": 1e-4, "log_interval": 10, "seed": 0,
                  "export": True, "eval_before": True, "clip_gradient": None},
    },
}
#: Detector reductions on the generated set (96-128 px images, 2 CPU cores), unless model.kwargs
#: overrides them: fewer RPN proposals and RoIs, 128-channel FPN and 2-conv box head.
SHAPES_DETECTOR = dict(rpn_train_pre_nms=512, rpn_train_post_nms=128, rpn_test_pre_nms=256,
                       rpn_test_post_nms=64, num_sample=64, num_fpn_filters=128,
                       num_box_head_conv=2, num_box_head_conv_filters=128,
                       num_box_head_dense_filters=256)
_ARCHS = {"detection": ("faster_rcnn_fpn", "mask_rcnn_fpn"), "segmentation": ("deeplab",)}
_DATASETS = {"detection": ("shapes", "voc", "coco"),
             "segmentation": ("shapes", "ade20k", "citys", "pascal_voc")}


# -- config ---------------------------------------------------------------------------------
def _merge(base: dict, override: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config key {where!r}{hint}; known under "
                             f"{path.rstrip('.') or 'top level'}: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and key != "kwargs":
            if not isinstance(value, dict):
                raise TypeError(f"config key {where!r} must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(cfg: dict) -> dict:
    """The full config: ``cfg`` over :data:`DEFAULTS` of its task, validated."""
    if not isinstance(cfg, dict):
        raise TypeError(f"config must be a mapping, got {type(cfg).__name__}")
    task = cfg.get("task", "detection")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    full = _merge(DEFAULTS[task], cfg)
    model, data, train = full["model"], full["data"], full["train"]
    if model["arch"] not in _ARCHS[task]:
        raise ValueError(f"model.arch for {task} must be one of {_ARCHS[task]}, got "
                         f"{model['arch']!r}")
    if data["dataset"] not in _DATASETS[task]:
        raise ValueError(f"data.dataset for {task} must be one of {_DATASETS[task]}, got "
                         f"{data['dataset']!r}")
    for key in ("batch_size", "num_train", "num_val"):
        val = train[key] if key == "batch_size" else data[key]
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{key} must be a positive int, got {val!r}")
    if (train["iterations"] is None) == (train["epochs"] is None):
        raise ValueError("set exactly one of train.iterations and train.epochs")
    return full


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
    if not root or not os.path.isdir(os.path.expanduser(root)):
        raise FileNotFoundError(f"data.dataset={data['dataset']!r} needs data.root, a folder "
                                f"holding it in GluonCV's layout (got {root!r}); nothing is "
                                f"downloaded. Use data.dataset=shapes for the generated set")
    return os.path.expanduser(root)


def _detection_sets(data: dict, masks: bool):
    from .synthetic import ShapesConfig, ShapesDetection
    if data["dataset"] == "shapes":
        conf = ShapesConfig(image_size=data["image_size"], seed=data["seed"])
        return (ShapesDetection(data["num_train"], "train", masks, conf),
                ShapesDetection(data["num_val"], "val", False, conf))
    root = _require_root(data)
    from gluoncv import data as gdata
    if data["dataset"] == "voc":
        return (gdata.VOCDetection(root, splits=[(2007, "trainval"), (2012, "trainval")]),
                gdata.VOCDetection(root, splits=[(2007, "test")]))
    cls = gdata.COCOInstance if masks else gdata.COCODetection
    return (cls(root, splits="instances_train2017"),
            gdata.COCODetection(root, splits="instances_val2017", skip_empty=False))


def _shard(batch) -> list:
    """GluonCV's batchify gives per-shard tuples (one shard: arrays); -> one shard's arrays."""
    return [(b if isinstance(b, mx.nd.NDArray) else b[0]).as_in_context(mx.cpu())
            for b in batch]


def _lr_scheduler(train: dict, iters_per_epoch: int, total_iters: int):
    from gluoncv.utils import LRScheduler, LRSequential
    epochs = max(1, int(np.ceil(total_iters / iters_per_epoch)))
    warm = min(train["warmup_iters"], total_iters - 1)
    steps = [int(e * iters_per_epoch) - warm for e in train["lr_decay_epochs"]]
    main = LRScheduler(train["lr_mode"], base_lr=train["lr"], niters=total_iters - warm,
                       nepochs=epochs, step_iter=steps or [total_iters * 10],
                       step_factor=train["lr_decay"], power=0.9)
    if warm <= 0:
        return main
    return LRSequential([LRScheduler("linear", base_lr=train["lr"] * train["warmup_factor"],
                                     target_lr=train["lr"], niters=warm), main])


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def _sgd_trainer(params, train: dict, num_images: int):
    """(SGD trainer with the config's schedule, total iterations) for ``num_images`` per epoch."""
    iters_per_epoch = max(1, num_images // train["batch_size"])
    total = train["iterations"] or train["epochs"] * iters_per_epoch
    trainer = gluon.Trainer(params, "sgd",           # the schedule starts at its own lr
                            {"wd": train["wd"], "momentum": train["momentum"],
                             "lr_scheduler": _lr_scheduler(train, iters_per_epoch, total)})
    return trainer, total


def _iterate(loader, total: int):
    done = 0
    while done < total:
        for batch in loader:
            yield batch
            done += 1
            if done == total:
                return


# -- detection ------------------------------------------------------------------------------
def _train_detection(cfg: dict, out_dir: str) -> dict:
    from gluoncv.data.batchify import FasterRCNNTrainBatchify, MaskRCNNTrainBatchify
    from gluoncv.data.transforms.presets import rcnn as presets
    from gluoncv.model_zoo.rcnn.faster_rcnn.data_parallel import ForwardBackwardTask as FasterTask
    from gluoncv.model_zoo.rcnn.mask_rcnn.data_parallel import ForwardBackwardTask as MaskTask
    from gluoncv.nn.dropblock import set_drop_prob

    from .detection import faster_rcnn_fpn, initialize_detector, mask_rcnn_fpn
    model, data, train = cfg["model"], cfg["data"], cfg["train"]
    masks = model["arch"] == "mask_rcnn_fpn"
    if masks:
        try:
            import pycocotools  # noqa: F401  (GluonCV's mask transform would pip-install it)
        except ImportError:
            raise ImportError("Mask R-CNN training rasterises polygons with pycocotools: "
                              "pip install pycocotools") from None
    train_set, val_set = _detection_sets(data, masks)
    build = mask_rcnn_fpn if masks else faster_rcnn_fpn
    named = data["dataset"] in ("voc", "coco")
    kwargs = dict(model["kwargs"])
    if data["dataset"] == "shapes":
        kwargs = {"short": data["image_size"], "max_size": data["image_size"],
                  **SHAPES_DETECTOR, **({"rcnn_max_dets": 16} if masks else {}), **kwargs}
    net = build(model["backbone"], data["dataset"] if named else "custom",
                None if named else train_set.classes, norm=model["norm"],
                pretrained_base=model["pretrained_base"],
                per_device_batch_size=train["batch_size"], num_devices=1, **kwargs)
    net.apply(partial(set_drop_prob, 0.0))
    initialize_detector(net, last_gamma=model["last_gamma"])
    net.collect_params().setattr("grad_req", "null")
    net.collect_train_params().setattr("grad_req", "write")
    before = (_evaluate_detection(net, val_set, masks and data["dataset"] == "shapes")
              if train["eval_before"] else None)
    net.hybridize(static_alloc=True)

    if masks:
        transform = presets.MaskRCNNDefaultTrainTransform(net.short, net.max_size, net,
                                                          ashape=net.ashape, multi_stage=True)
        batchify = MaskRCNNTrainBatchify(net, 1)
    else:
        transform = presets.FasterRCNNDefaultTrainTransform(net.short, net.max_size, net,
                                                            ashape=net.ashape, multi_stage=True)
        batchify = FasterRCNNTrainBatchify(net, 1)
    loader = gluon.data.DataLoader(_Checked(train_set, transform), train["batch_size"],
                                   shuffle=True, batchify_fn=batchify, last_batch="rollover")
    losses = [gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False),
              gluon.loss.HuberLoss(rho=train["rpn_smoothl1_rho"]),
              gluon.loss.SoftmaxCrossEntropyLoss(), gluon.loss.HuberLoss(rho=train["rcnn_smoothl1_rho"])]
    trainer, total = _sgd_trainer(net.collect_train_params(), train, len(train_set))
    if masks:
        task = MaskTask(net, trainer, *losses, gluon.loss.SigmoidBinaryCrossEntropyLoss(),
                        False)
        names = ["rpn_conf", "rpn_box", "rcnn_cls", "rcnn_box", "rcnn_mask"]
    else:
        task = FasterTask(net, trainer, *losses, 1.0, False)
        names = ["rpn_conf", "rpn_box", "rcnn_cls", "rcnn_box"]
    history: List[Dict[str, float]] = []
    skipped = 0
    start = time.time()
    for it, batch in enumerate(_iterate(loader, total), 1):
        out = task.forward_backward(_shard(batch))
        parts = {n: float(v.asscalar()) for n, v in zip(names, out)}
        parts["total"] = sum(parts.values())
        if np.isfinite(parts["total"]) and train["clip_gradient"]:
            norm = gluon.utils.clip_global_norm(
                [p.grad() for p in net.collect_train_params().values()
                 if p.grad_req != "null"], train["clip_gradient"], check_isfinite=True)
            parts["total"] += 0.0 * norm                      # a non-finite norm skips too
        if not np.isfinite(parts["total"]):
            # e.g. GluonCV's mask loss divides by the number of mask targets, 0 in some batches
            skipped += 1
            if skipped > max(3, total // 10):
                raise FloatingPointError(f"training loss is {parts['total']} at iteration {it}"
                                         f" ({skipped} non-finite so far); lower train.lr")
            continue
        trainer.step(train["batch_size"])
        history.append(parts)
        _log(cfg, it, total, parts, trainer.learning_rate, start)

    metrics = _evaluate_detection(net, val_set, masks and data["dataset"] == "shapes")
    result = _finish(cfg, out_dir, net, history, metrics, start,
                     (1, 3, net.short, net.short) if isinstance(net.short, int) else None, before)
    result["skipped"] = skipped
    return result


def _evaluate_detection(net, val_set, mask_metric: bool) -> dict:
    """VOC07 mAP (IoU 0.5) over ``val_set``; with ``mask_metric`` also the mask mIoU."""
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultValTransform
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric
    net.hybridize(static_alloc=True)      # (re-)trace: inference takes the image only
    metric = VOC07MApMetric(iou_thresh=0.5, class_names=net.classes)
    val_tf = FasterRCNNDefaultValTransform(net.short, net.max_size)
    seg_metric = _MaskSemanticMetric(net.num_class) if mask_metric else None
    for i in range(len(val_set)):
        img, label = val_set[i][0], val_set[i][1]
        x, bbox, _ = val_tf(img, label)
        outs = net(x.expand_dims(0))
        metric.update(outs[2], outs[0], outs[1], bbox[None, :, :4], bbox[None, :, 4:5])
        if seg_metric is not None:
            seg_metric.update(val_set.sample(i), outs, x.shape[1:])
    names_ap, values = metric.get()
    metrics = {"mAP": float(values[-1]),
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
        from gluoncv.utils.metrics.segmentation import SegmentationMetric
        self.metric = SegmentationMetric(num_class + 1)
        self.num_class, self.thresh = num_class, score_thresh

    def update(self, sample: dict, outs, size) -> None:
        from gluoncv.data.transforms.mask import fill
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
    from .synthetic import ShapesConfig, ShapesSegmentation
    kw = dict(transform=transform, base_size=data["base_size"], crop_size=data["crop_size"])
    if data["dataset"] == "shapes":
        conf = ShapesConfig(image_size=data["image_size"], seed=data["seed"])
        return (ShapesSegmentation(data["num_train"], "train", "train", config=conf, **kw),
                ShapesSegmentation(data["num_val"], "val", "val", config=conf, **kw))
    root = _require_root(data)
    from gluoncv.data import datasets
    cls = datasets[data["dataset"]]
    return (cls(root, split="train", mode="train", **kw),
            cls(root, split="val", mode="val", **kw))


def _train_segmentation(cfg: dict, out_dir: str) -> dict:
    from gluoncv.loss import MixSoftmaxCrossEntropyLoss
    from gluoncv.nn.dropblock import set_drop_prob
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    from mxnet.gluon.data.vision import transforms

    from .initialize import initialize_missing
    from .norms import GroupNorm
    from .segmentation import deeplab
    model, data, train = cfg["model"], cfg["data"], cfg["train"]
    tf = transforms.Compose([transforms.ToTensor(),
                             transforms.Normalize([.485, .456, .406], [.229, .224, .225])])
    train_set, val_set = _segmentation_sets(data, tf)
    if len(train_set) == 0:
        raise ValueError("the training set is empty: no images to train on")
    norm = {"bn": {}, "gn": {"norm_layer": GroupNorm},
            "syncbn": {"norm_layer": SyncBatchNorm, "norm_kwargs": {"num_devices": 1}}
            }.get(model["norm"])
    if norm is None:
        raise ValueError(f"model.norm for segmentation must be bn, syncbn or gn, got "
                         f"{model['norm']!r}")
    net = deeplab(model["backbone"], dataset=None, nclass=train_set.NUM_CLASS,
                  pretrained_base=model["pretrained_base"], aux=model["aux"],
                  crop_size=data["crop_size"], base_size=data["base_size"], **norm,
                  **model["kwargs"])
    net.apply(partial(set_drop_prob, 0.0))
    initialize_missing(net, [getattr(net, n) for n in ("conv1", "bn1", "layer1", "layer2",
                                                      "layer3", "layer4")],
                       last_gamma=model["last_gamma"])
    before = _evaluate_segmentation(net, val_set) if train["eval_before"] else None
    net.hybridize(static_alloc=True)
    loader = gluon.data.DataLoader(train_set, train["batch_size"], shuffle=True,
                                   last_batch="rollover")
    trainer, total = _sgd_trainer(net.collect_params(), train, len(train_set))
    criterion = MixSoftmaxCrossEntropyLoss(aux=model["aux"], aux_weight=model["aux_weight"])
    history: List[Dict[str, float]] = []
    start = time.time()
    for it, (x, y) in enumerate(_iterate(loader, total), 1):
        for i in range(y.shape[0]):
            check_segmentation_mask(y[i], (it - 1) * train["batch_size"] + i)
        with autograd.record():
            outs = net(x)
            loss = criterion(*outs, y)
        loss.backward()
        trainer.step(x.shape[0])
        parts = {"total": float(loss.mean().asscalar())}
        if not np.isfinite(parts["total"]):
            raise FloatingPointError(f"training loss is {parts['total']} at iteration {it}; "
                                     f"lower train.lr")
        history.append(parts)
        _log(cfg, it, total, parts, trainer.learning_rate, start)
    return _finish(cfg, out_dir, net, history, _evaluate_segmentation(net, val_set), start,
                   (1, 3, data["crop_size"], data["crop_size"]), before)


def _evaluate_segmentation(net, val_set) -> dict:
    """Pixel accuracy and mIoU over ``val_set`` (GluonCV's SegmentationMetric)."""
    from gluoncv.utils.metrics.segmentation import SegmentationMetric
    metric = SegmentationMetric(val_set.NUM_CLASS)
    for i in range(len(val_set)):
        x, y = val_set[i]
        metric.update(y[None], net(x[None])[0])
    pix, miou = metric.get()
    return {"pixAcc": float(pix), "mIoU": float(miou)}


# -- shared ---------------------------------------------------------------------------------
def _log(cfg: dict, it: int, total: int, parts: dict, lr: float, start: float) -> None:
    every = cfg["train"]["log_interval"]
    if every and (it % every == 0 or it in (1, total)):
        text = " ".join(f"{k}={v:.3f}" for k, v in parts.items())
        print(f"[{cfg['task']}] iter {it}/{total} {text} lr={lr:.4g} "
              f"({(time.time() - start) / it:.2f}s/iter)", flush=True)


def _finish(cfg: dict, out_dir: str, net, history: list, metrics: dict, start: float,
            export_shape, before: Optional[dict] = None) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    params = os.path.join(out_dir, "model.params")
    net.save_parameters(params)
    exported = None
    if cfg["train"]["export"] and export_shape is not None:
        exported = os.path.join(out_dir, "model")
        with autograd.predict_mode():
            net(mx.nd.zeros(export_shape))
        net.export(exported)
    totals = [h["total"] for h in history]
    k = max(1, min(5, len(totals) // 4))
    result = {"task": cfg["task"], "model": getattr(net, "model_name", cfg["model"]["arch"]),
              "iterations": len(history), "seconds": round(time.time() - start, 1),
              "loss_first": float(np.mean(totals[:k])), "loss_last": float(np.mean(totals[-k:])),
              "loss_history": history, "metrics": metrics, "metrics_before": before,
              "params": params,
              "export": exported, "config": cfg}
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    def summary(m: dict) -> str:
        return ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
    untrained = f" (untrained: {summary(before)})" if before else ""
    print(f"[{cfg['task']}] done: loss {result['loss_first']:.3f} -> {result['loss_last']:.3f}"
          f"; validation {summary(metrics)}{untrained}; saved {params}", flush=True)
    return result


def run(cfg: dict, out_dir: str) -> dict:
    """Train and evaluate as ``cfg`` says (over :data:`DEFAULTS`); write to ``out_dir``.

    Returns ``{task, model, iterations, seconds, loss_first, loss_last, loss_history,
    metrics, metrics_before, params, export, config}`` (``metrics_before``: the untrained
    network's, with ``train.eval_before``; detection adds ``skipped``, the iterations whose
    loss was not finite and that made no update); ``metrics`` holds ``mAP`` (VOC07, IoU 0.5) and per-class
    ``AP`` for detection (plus ``mask_mIoU``/``mask_pixAcc`` for Mask R-CNN), ``mIoU`` and
    ``pixAcc`` for segmentation. ``out_dir`` gets ``model.params``, ``metrics.json`` and the
    exported inference graph ``model-symbol.json``/``model-0000.params``.
    """
    full = resolve_config(cfg)
    _seed(full["train"]["seed"])
    with warnings.catch_warnings():
        # MXNet's notes on GluonCV's graphs (untyped input, constant anchors, 1-device SyncBN)
        warnings.filterwarnings("ignore", message="Cannot decide type|Constant parameter|"
                                                  "Caution using SyncBatchNorm|Parameter .* is "
                                                  "not used by any computation")
        if full["task"] == "detection":
            return _train_detection(full, out_dir)
        return _train_segmentation(full, out_dir)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gluon_resnest.dense.train",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=TASKS, default=None)
    parser.add_argument("--config", default=None, help="YAML file (configs/detection/...)")
    parser.add_argument("--out", default="runs/dense", help="output folder")
    args = parser.parse_args(argv)
    cfg: Dict[str, Any] = {}
    if args.config:
        import yaml
        with open(args.config) as f:
            cfg = yaml.safe_load(f) or {}
    if args.task:
        if cfg.get("task", args.task) != args.task:
            raise SystemExit(f"--task {args.task} contradicts task: {cfg['task']} in "
                             f"{args.config}")
        cfg["task"] = args.task
    run(cfg, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
