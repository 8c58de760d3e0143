"""The one evaluation transform, and the image reading every path shares.

:class:`EvalTransform` is the test-time preprocessing of a classifier: resize the shorter
side to ``ceil(size / crop_pct)`` with the model's interpolation, centre crop ``size x size``,
scale to [0, 1] and normalise with the model's mean and std. ``eval``, ``predict``, INT8
calibration from a folder and training's validation all use it; the values come from the
model (its artifact metadata, its config, or its variant's ``default_cfg``), never from here.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "INTERPOLATION", "CorruptImageError", "EvalTransform",
           "decode", "read_image", "list_images", "normalize"]

#: File extensions read as images (image folders, calibration folders).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp",
                    ".gif")
#: Interpolation names (configs, metadata, ``--interpolation``) and OpenCV's flags for them.
INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                 "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}


class CorruptImageError(ValueError):
    """An image file or record that cannot be decoded."""


def _decode_pil(buf: bytes) -> Optional[np.ndarray]:
    """What OpenCV cannot read (GIF: its first frame) through Pillow; None if Pillow fails."""
    try:
        with Image.open(io.BytesIO(buf)) as im:
            im.seek(0)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def decode(buf: bytes, name: str) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB; CorruptImageError if undecodable.

    OpenCV first; formats it lacks (GIF, read as its first frame) through Pillow."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR) if arr.size else None
    if img is not None and img.ndim == 3 and min(img.shape[:2]) >= 1:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    rgb = _decode_pil(buf) if arr.size else None
    if rgb is None or rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise CorruptImageError(f"cannot decode image {name} ({len(buf)} bytes): unreadable or "
                                f"not an image (expected one of "
                                f"{', '.join(IMAGE_EXTENSIONS)})")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def read_image(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    with open(path, "rb") as f:
        return decode(f.read(), path)


def list_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursive), sorted."""
    return sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                  if f.lower().endswith(IMAGE_EXTENSIONS))


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (3, H, W) float32, ``(x - mean) / std`` per channel."""
    x = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _triple(name: str, value: Any) -> Tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise ValueError(f"{name} must be three numbers (R, G, B), got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``ceil(size / crop_pct)``, centre crop ``size``, normalise."""

    size: int
    crop_pct: float
    interpolation: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"input size must be a positive int, got {self.size!r}")
        if not isinstance(self.crop_pct, (int, float)) or not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATION:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATION)}, got "
                             f"{self.interpolation!r}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        std = _triple("std", self.std)
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {list(self.std)}")
        object.__setattr__(self, "std", std)

    @classmethod
    def from_default_cfg(cls, cfg: Mapping[str, Any]) -> EvalTransform:
        """From a timm-style ``default_cfg`` (``input_size`` = (3, H, W))."""
        return cls(int(cfg["input_size"][-1]), cfg["crop_pct"], cfg["interpolation"],
                   cfg["mean"], cfg["std"])

    @property
    def resize(self) -> int:
        """The shorter side before the centre crop."""
        # round first: 320 / (320 / 352) is 352.00000000000006 in floating point
        return int(math.ceil(round(self.size / self.crop_pct, 6)))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, size, size) float32."""
        size, short = self.size, self.resize
        h, w = img.shape[:2]
        if min(h, w) != short:
            scale = short / min(h, w)
            nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
            img = cv2.resize(img, (nw, nh), interpolation=INTERPOLATION[self.interpolation])
            h, w = nh, nw
        y0, x0 = (h - size) // 2, (w - size) // 2
        img = img[y0:y0 + size, x0:x0 + size]
        return normalize(img.astype(np.float32) / 255.0, self.mean, self.std)

    def describe(self) -> str:
        return (f"resize to {self.resize} (crop_pct {self.crop_pct:.3f}), centre crop "
                f"{self.size}, {self.interpolation}, mean {_fmt(self.mean)} std {_fmt(self.std)}")


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"
