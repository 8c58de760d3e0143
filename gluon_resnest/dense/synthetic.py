"""A generated data set for detection and segmentation: coloured shapes on textured backgrounds.

Every sample is made by code from ``(seed, split, index)``; nothing is read or downloaded.
An image holds 1..``max_objects`` non-overlapping shapes (circle, square, triangle, by default),
each a polygon filled with its class's saturated colour (red, green, blue, jittered) on a
low-saturation textured background, so a detector can learn the classes within a few dozen
iterations from scratch. Per sample:

- ``image``: (H, W, 3) uint8 RGB
- ``boxes``: (N, 4) float32 ``x1, y1, x2, y2`` in pixels (the polygon's extent)
- ``labels``: (N,) int32 class ids in ``0..C-1``
- ``polygons``: N lists of one (K, 2) float32 ``(x, y)`` polygon (COCO's segmentation format)
- ``masks``: (N, H, W) uint8 instance masks, the polygons rasterised
- ``segmap``: (H, W) int32 semantic map, 0 = background, ``label + 1`` inside a shape

The two views GluonCV's pipelines read are :class:`ShapesDetection` (``(img, label[, segm])``
like GluonCV's VOC/COCO detection sets) and :class:`ShapesSegmentation` (a GluonCV
``SegmentationDataset``, so training uses GluonCV's own random scale/crop/flip/blur).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import mxnet as mx
import numpy as np
from gluoncv.data.segbase import SegmentationDataset
from PIL import Image

from .._compat.gluoncv_dense import segmentation_pair_transform

__all__ = ["SHAPES", "CLASS_COLOURS", "ShapesConfig", "make_sample", "ShapesDetection", "ShapesSegmentation"]

#: Shape classes the generator can draw, in label order.
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ShapesConfig:
    """How samples are generated. Sizes are in pixels."""

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 3
    min_size: float = 0.22          # object extent as a fraction of the image side
    max_size: float = 0.42
    classes: Tuple[str, ...] = SHAPES
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise ValueError(f"image_size must be an int >= 32, got {self.image_size!r}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, "
                             f"{self.max_objects}; an image without objects has no annotations")
        if not 0.05 <= self.min_size <= self.max_size <= 0.9:
            raise ValueError(f"need 0.05 <= min_size <= max_size <= 0.9, got {self.min_size}, "
                             f"{self.max_size}")
        unknown = [c for c in self.classes if c not in SHAPES]
        if not self.classes or unknown or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names from {SHAPES}, got "
                             f"{self.classes!r}")


#: Fill colour (RGB) of each shape class; each object's is jittered by up to 30 per channel.
CLASS_COLOURS = {"circle": (225, 45, 45), "square": (40, 200, 60), "triangle": (50, 80, 235)}


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 background: a greyish base, smooth noise and faint stripes."""
    base = rng.uniform(70, 180) + rng.uniform(-18, 18, size=3)
    grid = rng.normal(0, 1, size=(6, 6, 3)).astype(np.float32)
    smooth = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(8, 22)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    stripes = stripes[..., None] * rng.uniform(4, 14) * rng.choice([-1.0, 1.0], size=3)
    grain = rng.normal(0, 4, size=(size, size, 3))
    return (base + smooth + stripes + grain).astype(np.float32)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(K, 2) float32 (x, y) vertices of a shape of circumradius ``r`` centred at (cx, cy)."""
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    elif kind == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
    else:  # triangle
        t = angle - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).astype(np.float32)


def make_sample(cfg: ShapesConfig, split: str, index: int) -> Dict[str, object]:
    """The sample ``index`` of ``split`` (see the module docstring for the keys)."""
    if split not in _SPLIT_SEED:
        raise ValueError(f"split must be one of {sorted(_SPLIT_SEED)}, got {split!r}")
    rng = np.random.default_rng([cfg.seed, _SPLIT_SEED[split], index])
    size = cfg.image_size
    image = _texture(rng, size)
    n_target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    placed: List[Tuple[float, float, float]] = []
    polygons, labels = [], []
    for _ in range(200):                                   # rejection-sample free positions
        if len(placed) == n_target:
            break
        r = rng.uniform(cfg.min_size, cfg.max_size) * size / 2
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        if any(np.hypot(cx - px, cy - py) < r + pr + 3 for px, py, pr in placed):
            continue
        label = int(rng.integers(len(cfg.classes)))
        poly = _polygon(cfg.classes[label], cx, cy, r, rng.uniform(0, np.pi))
        placed.append((cx, cy, r))
        polygons.append(poly)
        labels.append(label)
    masks = np.zeros((len(polygons), size, size), np.uint8)
    segmap = np.zeros((size, size), np.int32)
    for i, (poly, label) in enumerate(zip(polygons, labels)):
        # sub-pixel fill; pixel (x, y) covers [x, x+1): shift by half a pixel to its centre
        cv2.fillPoly(masks[i], [np.round((poly - 0.5) * 256).astype(np.int32)], 1, shift=8)
        inside = masks[i].astype(bool)
        colour = np.array(CLASS_COLOURS[cfg.classes[label]]) + rng.uniform(-30, 30, size=3)
        image[inside] = colour + rng.normal(0, 5, size=(int(inside.sum()), 3))
        segmap[inside] = label + 1
    boxes = np.array([[m.nonzero()[1].min(), m.nonzero()[0].min(),
                       m.nonzero()[1].max() + 1, m.nonzero()[0].max() + 1] for m in masks],
                     np.float32).reshape(-1, 4)
    return {"image": np.clip(image, 0, 255).astype(np.uint8), "boxes": boxes,
            "labels": np.array(labels, np.int32), "polygons": [[p] for p in polygons],
            "masks": masks, "segmap": segmap}


class ShapesDetection(mx.gluon.data.Dataset):
    """Detection view, GluonCV style: ``ds[i] -> (img, label)`` or ``(img, label, segm)``.

    img : (H, W, 3) uint8 NDArray; label : (N, 5) float32 ``x1, y1, x2, y2, class``;
    segm (``with_masks=True``): N lists of (K, 2) polygons, as GluonCV's COCO instance set gives.
    """

    def __init__(self, num_images: int = 64, split: str = "train", with_masks: bool = False,
                 config: Optional[ShapesConfig] = None, **config_kw) -> None:
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        self.config = config or ShapesConfig(**config_kw)
        self.num_images, self.split, self.with_masks = num_images, split, with_masks
        make_sample(self.config, split, 0)                  # validate the split name early

    @property
    def classes(self) -> List[str]:
        return list(self.config.classes)

    @property
    def num_class(self) -> int:
        return len(self.config.classes)

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int) -> Dict[str, object]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return make_sample(self.config, self.split, index)

    def __getitem__(self, index: int):
        s = self.sample(index)
        label = np.concatenate([s["boxes"], s["labels"][:, None].astype(np.float32)], axis=1)
        img = mx.nd.array(s["image"], dtype="uint8")
        if self.with_masks:
            return img, label, s["polygons"]
        return img, label


class ShapesSegmentation(SegmentationDataset):
    """Segmentation view: a GluonCV ``SegmentationDataset`` over generated samples.

    ``mode='train'`` applies GluonCV's training transform (random flip, scale in
    [0.5, 2] x base_size, pad, crop ``crop_size``, blur), ``'val'`` its validation transform
    (resize short side, centre crop), ``'testval'`` nothing
    (:func:`~gluon_resnest._compat.gluoncv_dense.segmentation_pair_transform`). Returns
    ``(img, mask)``: img after ``transform`` (e.g. ToTensor + Normalize), mask (crop, crop)
    int32 with 0 = background.
    """

    def __init__(self, num_images: int = 64, split: str = "train", mode: Optional[str] = None,
                 transform=None, base_size: int = 128, crop_size: int = 128,
                 config: Optional[ShapesConfig] = None, **config_kw) -> None:
        super().__init__(os.curdir, split, mode, transform, base_size, crop_size)
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        self.config = config or ShapesConfig(**config_kw)
        self.num_images = num_images
        make_sample(self.config, split, 0)
        self.CLASSES = ["background"] + list(self.config.classes)
        self.NUM_CLASS = len(self.CLASSES)

    @property
    def classes(self) -> Sequence[str]:
        return self.CLASSES

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        s = make_sample(self.config, self.split, index)
        img, mask = Image.fromarray(s["image"]), Image.fromarray(s["segmap"].astype(np.uint8))
        img, mask = segmentation_pair_transform(self, img, mask)
        if self.transform is not None:
            img = self.transform(img)
        return img, mask
