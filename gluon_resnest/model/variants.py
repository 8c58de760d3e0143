"""The variant table: one row per ResNeSt variant (architecture + data config).

This is the one place that says what a variant is: blocks per stage, R, K, widths, avd placement,
regularisation defaults, and the data config its published weights expect (input size, test crop,
interpolation, mean/std) in the spirit of timm's ``pretrained_cfg``. Every reader (builder,
transforms, exports, calibration) takes these values from here.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ["VariantSpec", "VARIANTS", "ALIASES", "IMAGENET_MEAN", "IMAGENET_STD",
           "resolve_name", "variant_names"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VariantSpec:
    """One ResNeSt variant: architecture plus its default data config (timm's default_cfg)."""

    layers: Tuple[int, int, int, int]
    radix: int = 2
    cardinality: int = 1
    bottleneck_width: int = 64
    stem_width: int = 32
    avd_first: bool = False           # True: the paper's "-fast" placement (avd before the 3x3)
    dropblock_prob: float = 0.1       # stages 3 and 4, as GluonCV's defaults
    final_drop: float = 0.0
    input_size: int = 224             # train and test resolution of the published models
    crop_pct: float = 0.875           # test: resize to input_size / crop_pct, centre crop
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    paper: Optional[str] = None       # the row of the paper's Table 3, if any
    notes: str = field(default="", compare=False)

    @property
    def default_cfg(self) -> Dict[str, Any]:
        return {"input_size": (3, self.input_size, self.input_size), "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "mean": self.mean, "std": self.std}


def _fast(radix: int, cardinality: int, width: int, layers=(3, 4, 6, 3), **kw) -> VariantSpec:
    return VariantSpec(layers, radix, cardinality, width, avd_first=True,
                       interpolation="bicubic", **kw)


#: Every ResNeSt variant. Sizes 320/416 use crop size/(size+32) and bicubic, as the
#: official evaluation does.
VARIANTS: Dict[str, VariantSpec] = {
    "resnest14": VariantSpec((1, 1, 1, 1), dropblock_prob=0.0),
    "resnest26": VariantSpec((2, 2, 2, 2)),
    "resnest50": VariantSpec((3, 4, 6, 3), paper="ResNeSt-50"),
    "resnest101": VariantSpec((3, 4, 23, 3), stem_width=64, input_size=256,
                              paper="ResNeSt-101"),
    "resnest200": VariantSpec((3, 24, 36, 3), stem_width=64, final_drop=0.2, input_size=320,
                              crop_pct=320 / 352, interpolation="bicubic"),
    "resnest269": VariantSpec((3, 30, 48, 8), stem_width=64, final_drop=0.2, input_size=416,
                              crop_pct=416 / 448, interpolation="bicubic"),
    "resnest50_fast_1s1x64d": _fast(1, 1, 64),
    "resnest50_fast_2s1x64d": _fast(2, 1, 64, paper="ResNeSt-50-fast"),
    "resnest50_fast_4s1x64d": _fast(4, 1, 64),
    "resnest50_fast_1s2x40d": _fast(1, 2, 40),
    "resnest50_fast_2s2x40d": _fast(2, 2, 40),
    "resnest50_fast_4s2x40d": _fast(4, 2, 40),
    "resnest50_fast_1s4x24d": _fast(1, 4, 24),
    "resnest101_fast_2s1x64d": _fast(2, 1, 64, layers=(3, 4, 23, 3), paper="ResNeSt-101-fast"),
}

#: The paper's two "-fast" rows of Table 3.
ALIASES: Dict[str, str] = {"resnest50_fast": "resnest50_fast_2s1x64d",
                           "resnest101_fast": "resnest101_fast_2s1x64d"}


def variant_names(aliases: bool = True) -> list:
    """All registered names, in table order (aliases last)."""
    return list(VARIANTS) + (list(ALIASES) if aliases else [])


def resolve_name(name: str) -> str:
    """Canonical variant name for ``name`` (case-insensitive, aliases resolved).

    Raises ValueError naming the closest known names when there is no such variant.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in VARIANTS:
        close = difflib.get_close_matches(key, variant_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown ResNeSt variant {name!r}.{hint} "
                         f"Known: {', '.join(variant_names())}")
    return key
