"""The paper's training recipe as small pure functions.

Cosine learning rate with linear warm-up, learning rate scaled by batch size, label smoothing,
mixup, the DropBlock ramp, no weight decay on biases and BatchNorm, and AutoAugment with the
ImageNet policy of Cubuk et al. (2019), implemented here from the published policy table.
Also the detection/segmentation schedules (:func:`dense_lr_at`) and the fitting of a
recipe to a small data set (:func:`size_to_data`).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Collection, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance

from .._compat.mxnet_blocks import children
from ..model.blocks import DropBlock

__all__ = ["scaled_lr", "lr_at", "dense_lr_at", "size_to_data", "smooth_targets", "mixup",
           "dropblock_prob_at", "set_dropblock", "exclude_from_wd", "IMAGENET_POLICY", "OPS",
           "op_value", "auto_augment"]


# -- learning rate --------------------------------------------------------------------------
def scaled_lr(lr: float, batch_size: int, lr_batch_size: int = 256) -> float:
    """The linear scaling rule: ``lr * batch_size / lr_batch_size`` (0.1 per 256 images)."""
    return lr * batch_size / lr_batch_size


def lr_at(step: int, steps_per_epoch: int, epochs: int, base_lr: float,
          warmup_epochs: float = 0, warmup_lr: float = 0.0, final_lr: float = 0.0,
          schedule: str = "cosine") -> float:
    """Learning rate of iteration ``step`` (0-based; epoch ``e`` starts at ``e * steps_per_epoch``).

    The first ``W = warmup_epochs * steps_per_epoch`` iterations rise linearly from
    ``warmup_lr`` (first) to ``base_lr`` (last warm-up iteration). The remaining ``C``
    iterations follow ``final + (base - final) * (1 + cos(pi * t / (C - 1))) / 2`` for
    ``cosine`` (``base_lr`` first, ``final_lr`` at the last iteration) or stay at
    ``base_lr`` for ``constant``. Later steps keep the last value.
    """
    warm = int(round(warmup_epochs * steps_per_epoch))
    total = epochs * steps_per_epoch
    if step < warm:
        return warmup_lr + (base_lr - warmup_lr) * step / max(warm - 1, 1)
    if schedule == "constant":
        return base_lr
    span = max(total - warm - 1, 1)
    t = min(step - warm, span)
    return final_lr + (base_lr - final_lr) * (1 + math.cos(math.pi * t / span)) / 2


def dense_lr_at(it: int, total: int, base_lr: float, mode: str = "step",
                steps: Sequence[int] = (), decay: float = 0.1, warmup: int = 0,
                warmup_factor: float = 1 / 3, power: float = 0.9) -> float:
    """Learning rate of detection/segmentation update ``it`` (1-based: MXNet's optimizer
    counts updates from 1) of ``total``: GluonCV's ``LRScheduler`` schedules.

    The first ``W = min(warmup, total - 1)`` updates rise linearly from
    ``base_lr * warmup_factor``. After them, with ``t`` = updates since the warm-up (at most
    ``N = total - W - 1``): ``step`` multiplies ``base_lr`` by ``decay`` once for each of
    ``steps`` (iterations after the warm-up) that ``t`` has reached; ``poly`` is
    ``base_lr * (1 - t/N) ** power``; ``cosine`` ``base_lr * (1 + cos(pi t/N)) / 2``;
    ``linear`` ``base_lr * (1 - t/N)``; ``constant`` ``base_lr``.
    """
    warm = max(0, min(warmup, total - 1))
    u = min(it, total - 1)
    if u < warm:
        start = base_lr * warmup_factor
        return start + (base_lr - start) * u / max(warm - 1, 1)
    n = max(total - warm - 1, 1)
    t = min(max(u - warm, 0), n)
    if mode == "step":
        return base_lr * decay ** sum(1 for s in steps if s <= t)
    if mode == "constant":
        return base_lr
    factor = {"linear": lambda: 1 - t / n, "poly": lambda: (1 - t / n) ** power,
              "cosine": lambda: (1 + math.cos(math.pi * t / n)) / 2}
    if mode not in factor:
        raise ValueError(f"lr mode must be step, poly, cosine, linear or constant, got {mode!r}")
    return base_lr * factor[mode]()


def size_to_data(cfg: Dict[str, Any], train_images: int, classes: int,
                 fixed: Collection[str] = ()) -> Tuple[Dict[str, Any], List[str]]:
    """Fit a classification recipe to a data set of ``train_images`` images in ``classes``
    classes: the classifier gets the data's classes, the batch is at most the data (so an
    epoch has at least one iteration; a multiple of the devices), and the warm-up ends before
    the last epoch. Keys in ``fixed`` (dotted, e.g. ``optim.batch_size``: the user's) are
    kept. Returns the new config and a line per decision."""
    cfg = copy.deepcopy(cfg)
    m, o = cfg["model"], cfg["optim"]
    notes = []
    if "model.classes" not in fixed:
        m["classes"] = classes
        notes.append(f"{classes} classes (from the data)")
    if "optim.batch_size" not in fixed:
        devices = max(1, len(cfg["run"]["devices"]))
        batch = min(o["batch_size"], train_images)
        o["batch_size"] = max(devices, batch - batch % devices)
    lr = scaled_lr(o["lr"], o["batch_size"], o["lr_batch_size"])
    notes.append(f"batch {o['batch_size']} of {train_images} training images "
                 f"({train_images // o['batch_size']} iteration(s) per epoch), lr {lr:.4g} "
                 f"({o['lr']} per {o['lr_batch_size']} images)")
    if "optim.warmup_epochs" not in fixed:
        o["warmup_epochs"] = min(o["warmup_epochs"], max(0, o["epochs"] - 1))
    notes.append(f"{o['warmup_epochs']} warm-up epoch(s) of {o['epochs']}")
    return cfg, notes


# -- targets --------------------------------------------------------------------------------
def smooth_targets(labels: np.ndarray, classes: int, eps: float) -> np.ndarray:
    """(N,) int labels -> (N, classes) targets: ``1 - eps + eps/classes`` on the label, else
    ``eps/classes``."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full((labels.shape[0], classes), eps / classes, dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] += 1.0 - eps
    return out


def mixup(x: np.ndarray, targets: np.ndarray, lam: float) -> Tuple[np.ndarray, np.ndarray]:
    """Mix each sample with the batch reversed: ``lam * a + (1 - lam) * a[::-1]`` for images and
    targets alike (x: (N, ...), targets: (N, classes))."""
    return (lam * x + (1 - lam) * x[::-1]).astype(x.dtype), \
        (lam * targets + (1 - lam) * targets[::-1]).astype(np.float32)


# -- DropBlock ramp -------------------------------------------------------------------------
def dropblock_prob_at(epoch: int, epochs: int, final_prob: float, start_prob: float = 0.0) -> float:
    """DropBlock probability during ``epoch`` (0-based): linear from ``start_prob`` to
    ``final_prob``, reaching it in the last epoch (``start + (final - start) * (e + 1) / E``)."""
    return start_prob + (final_prob - start_prob) * (epoch + 1) / epochs


def set_dropblock(net, prob: float) -> int:
    """Set ``drop_prob`` of every DropBlock inside ``net``; returns how many there are."""
    count = 0

    def visit(block):
        nonlocal count
        if isinstance(block, DropBlock):
            block.drop_prob = prob
            count += 1
        for child in children(block):
            visit(child)
    visit(net)
    return count


# -- weight decay ---------------------------------------------------------------------------
def exclude_from_wd(net) -> List[str]:
    """Set ``wd_mult = 0`` on every bias and BatchNorm gamma/beta; returns their names."""
    names = []
    for name, param in net.collect_params().items():
        if name.endswith(("_bias", "_gamma", "_beta")):
            param.wd_mult = 0.0
            names.append(name)
    return names


# -- AutoAugment ----------------------------------------------------------------------------
#: The ImageNet policy of AutoAugment (Cubuk et al., CVPR 2019, appendix table): 25
#: sub-policies of two (operation, probability, magnitude 0..9) steps.
IMAGENET_POLICY: Tuple[Tuple[Tuple[str, float, int], Tuple[str, float, int]], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)

#: The paper's magnitude ranges; magnitude m in 0..9 maps linearly onto them (m = 9 is the
#: strongest). Signed ranges get a random sign.
_RANGES: Dict[str, Tuple[float, float]] = {
    "ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3),
    "TranslateX": (0.0, 150 / 331), "TranslateY": (0.0, 150 / 331),  # fraction of the size
    "Rotate": (0.0, 30.0),
    "Color": (0.1, 1.9), "Contrast": (0.1, 1.9), "Brightness": (0.1, 1.9),
    "Sharpness": (0.1, 1.9),
    "Posterize": (8.0, 4.0),     # bits kept
    "Solarize": (256.0, 0.0),    # threshold
}
_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
_FILL = (128, 128, 128)


def op_value(op: str, magnitude: int) -> float:
    """The unsigned argument of ``op`` at ``magnitude`` (0..9)."""
    if not 0 <= magnitude <= 9:
        raise ValueError(f"AutoAugment magnitude must be in 0..9, got {magnitude}")
    lo, hi = _RANGES[op]
    value = lo + (hi - lo) * magnitude / 9
    return float(round(value)) if op == "Posterize" else value


def _gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an (H, W, 3) uint8 image, in 16-bit fixed point, rounded."""
    rgb = img.astype(np.int64)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16)


def _blend(degenerate: np.ndarray, img: np.ndarray, factor: float) -> np.ndarray:
    """``degenerate + factor * (img - degenerate)`` in float32, clipped, truncated to uint8."""
    deg = np.asarray(degenerate, dtype=np.float32)
    out = deg + np.float32(factor) * (img.astype(np.float32) - deg)
    return np.clip(out, 0, 255).astype(np.uint8)


def posterize(img: np.ndarray, bits: int) -> np.ndarray:
    """Keep the ``bits`` most significant bits of every channel value."""
    return img & np.uint8((0xFF << (8 - int(bits))) & 0xFF)


def solarize(img: np.ndarray, threshold: float) -> np.ndarray:
    """Invert every value >= ``threshold``."""
    return np.where(img >= threshold, 255 - img, img).astype(np.uint8)


def invert(img: np.ndarray) -> np.ndarray:
    return (255 - img).astype(np.uint8)


def autocontrast(img: np.ndarray) -> np.ndarray:
    """Stretch each channel so its darkest value becomes 0 and its brightest 255."""
    out = img.copy()
    for c in range(img.shape[2]):
        ch = img[..., c]
        lo, hi = int(ch.min()), int(ch.max())
        if hi > lo:
            scale = 255.0 / (hi - lo)
            lut = np.clip(np.arange(256) * scale - lo * scale, 0, 255).astype(np.uint8)
            out[..., c] = lut[ch]
    return out


def equalize(img: np.ndarray) -> np.ndarray:
    """Histogram equalisation per channel (the step-rounded cumulative-histogram mapping)."""
    out = img.copy()
    for c in range(img.shape[2]):
        hist = np.bincount(img[..., c].ravel(), minlength=256)
        nonzero = hist[hist > 0]
        if len(nonzero) <= 1:
            continue
        step = (int(nonzero.sum()) - int(nonzero[-1])) // 255
        if step == 0:
            continue
        before = np.concatenate([[0], np.cumsum(hist)[:-1]])      # pixels below each level
        lut = np.minimum((step // 2 + before) // step, 255).astype(np.uint8)
        out[..., c] = lut[img[..., c]]
    return out


def color(img: np.ndarray, factor: float) -> np.ndarray:
    """Saturation: blend with the grey image (0: grey, 1: unchanged)."""
    return _blend(_gray(img)[..., None], img, factor)


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with a flat image at the mean luma (0: flat, 1: unchanged)."""
    mean = int(_gray(img).mean() + 0.5)
    return _blend(np.float32(mean), img, factor)


def brightness(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with black (0: black, 1: unchanged)."""
    return _blend(np.float32(0), img, factor)


def _pil(fn: Callable[[Image.Image], Image.Image]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda img: np.asarray(fn(Image.fromarray(img)))


def sharpness(img: np.ndarray, factor: float) -> np.ndarray:
    return _pil(lambda im: ImageEnhance.Sharpness(im).enhance(factor))(img)


def shear(img: np.ndarray, amount: float, axis: str) -> np.ndarray:
    """Shear by ``amount`` (x' = x + amount * y for axis 'x')."""
    coeffs = (1, amount, 0, 0, 1, 0) if axis == "x" else (1, 0, 0, amount, 1, 0)
    return _pil(lambda im: im.transform(im.size, Image.AFFINE, coeffs, Image.NEAREST,
                                        fillcolor=_FILL))(img)


def translate(img: np.ndarray, pixels: float, axis: str) -> np.ndarray:
    """Move the content by ``pixels`` along x or y (uncovered area filled grey)."""
    coeffs = (1, 0, -pixels, 0, 1, 0) if axis == "x" else (1, 0, 0, 0, 1, -pixels)
    return _pil(lambda im: im.transform(im.size, Image.AFFINE, coeffs, Image.NEAREST,
                                        fillcolor=_FILL))(img)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    return _pil(lambda im: im.rotate(degrees, Image.NEAREST, fillcolor=_FILL))(img)


def _apply(op: str, img: np.ndarray, magnitude: int, sign: float) -> np.ndarray:
    v = op_value(op, magnitude) if op in _RANGES else 0.0
    if op in _SIGNED:
        v *= sign
    return OPS[op](img, v)


#: Every operation of the policy: (H, W, 3) uint8 -> (H, W, 3) uint8, given its argument.
OPS: Dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "Posterize": lambda im, v: posterize(im, int(v)),
    "Solarize": solarize,
    "Invert": lambda im, v: invert(im),
    "AutoContrast": lambda im, v: autocontrast(im),
    "Equalize": lambda im, v: equalize(im),
    "Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness,
    "Rotate": rotate,
    "ShearX": lambda im, v: shear(im, v, "x"), "ShearY": lambda im, v: shear(im, v, "y"),
    "TranslateX": lambda im, v: translate(im, v * im.shape[1], "x"),
    "TranslateY": lambda im, v: translate(im, v * im.shape[0], "y"),
}


def auto_augment(img: np.ndarray, rng: np.random.Generator,
                 policy: Sequence = IMAGENET_POLICY) -> np.ndarray:
    """Apply one uniformly chosen sub-policy to an (H, W, 3) uint8 RGB image.

    Each of its two operations runs with its probability, at its magnitude; geometric
    operations take a random direction.
    """
    sub = policy[int(rng.integers(len(policy)))]
    for op, prob, magnitude in sub:
        if rng.random() < prob:
            img = _apply(op, img, magnitude, 1.0 if rng.random() < 0.5 else -1.0)
    return img
