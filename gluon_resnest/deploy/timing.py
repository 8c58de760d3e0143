"""Timing inference side by side: :func:`interleave` and what it returns.

A :class:`Case` is a named callable on a fixed preprocessed float32 batch. :func:`interleave`
warms every case up, then times them round-robin (round 1: every case once, round 2: every
case once, ...), so drift on a shared machine (frequency, other processes) hits all cases
alike; each case's images/s is summarised by the median and the min-max of its rounds
(:class:`Timing`). Used by ``runtime="auto"`` (:mod:`.runtimes`) and by :mod:`.benchmark`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["Case", "Timing", "interleave", "error_text"]

Runner = Callable[[np.ndarray], Any]
Clock = Callable[[], float]


@dataclass
class Case:
    """A named callable: ``run(x)`` maps the benchmark's batch to logits (numpy-convertible)."""

    name: str
    run: Runner
    runtime: Optional[str] = None
    precision: Optional[str] = None
    notes: List[str] = field(default_factory=list)


@dataclass
class Timing:
    """One case at one batch size: images/s of each round (``calls`` calls per sample)."""

    batch: int
    calls: int
    samples: List[float] = field(default_factory=list)
    error: Optional[str] = None     # the exception that stopped the case, if one did

    @property
    def median(self) -> float:
        return float(np.median(self.samples)) if self.samples else math.nan

    @property
    def low(self) -> float:
        return float(min(self.samples)) if self.samples else math.nan

    @property
    def high(self) -> float:
        return float(max(self.samples)) if self.samples else math.nan

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"batch": self.batch, "calls_per_sample": self.calls,
                             "median": round(self.median, 3), "min": round(self.low, 3),
                             "max": round(self.high, 3),
                             "samples": [round(s, 3) for s in self.samples]}
        if self.error:
            d["error"] = self.error
        return d


def error_text(err: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def interleave(cases: Sequence[Case], x: np.ndarray, rounds: int = 5, warmup: int = 1,
               calls: Optional[int] = None, target_seconds: float = 1.0, max_calls: int = 64,
               clock: Clock = time.perf_counter,
               progress: Optional[Callable[[str], None]] = None) -> Dict[str, Timing]:
    """Time every case on the batch ``x``: ``warmup`` calls each, then ``rounds`` rounds in
    which each case, in order, takes one sample of ``calls`` calls.

    ``calls=None``: per case, as many calls as fill about ``target_seconds`` (from its last
    warm-up call; at least 1, at most ``max_calls``), so a fast case's sample is not a few
    milliseconds of timer noise. A case that raises keeps the samples it has and its error;
    the others go on.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got {rounds} and {warmup}")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique, got {names}")
    batch = int(x.shape[0])
    out: Dict[str, Timing] = {}
    for case in cases:
        timing = out[case.name] = Timing(batch, calls or 1)
        try:
            last = 0.0
            for _ in range(warmup):
                t0 = clock()
                case.run(x)
                last = clock() - t0
            if calls is None:
                timing.calls = max(1, min(max_calls, round(target_seconds / last))) \
                    if last > 0 else 1
        except Exception as err:  # reported in the table; the rest still run
            timing.error = error_text(err)
    for r in range(rounds):
        if progress:
            progress(f"bs{batch}: round {r + 1}/{rounds}")
        for case in cases:        # round-robin: drift hits every case alike
            timing = out[case.name]
            if timing.error:
                continue
            try:
                t0 = clock()
                for _ in range(timing.calls):
                    case.run(x)
                timing.samples.append(batch * timing.calls / (clock() - t0))
            except Exception as err:  # reported, as above
                timing.error = error_text(err)
    return out
