"""Inference benchmarks (``gluon-resnest bench``, ``bench/``) on the timing of :mod:`.timing`.

:func:`.timing.interleave` times :class:`~.timing.Case` objects round-robin (medians and
min-max per case, :class:`~.timing.Timing`). :func:`agreement` compares a case's logits with a
reference's (largest absolute difference over the largest absolute reference logit, and top-1
agreement on the batch). :func:`run_benchmark` does both for several batch sizes; :func:`table` prints the
result as a markdown table with ratios to a named baseline.

:func:`runtime_cases` builds the cases of one model in every runtime x precision the
predictor (:mod:`.runtimes`) supports here, and says why the others cannot run.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .._compat import onednn
from . import runtimes as rt
from .artifact import LoadedModel, ModelMeta, save
from .bf16 import UnsupportedOnThisCPU, bf16_support
from .int8 import generated_images, quantize_int8
from .timing import Case, Clock, Timing, error_text, interleave

__all__ = ["Case", "Timing", "Agreement", "BenchResult", "relative_error", "agreement",
           "interleave", "run_benchmark", "fastest", "table", "verdict", "machine_info",
           "describe_machine", "bench_inputs", "case_name", "missing_extra", "runtime_cases"]

@dataclass(frozen=True)
class Agreement:
    """A case's logits against the reference's on the same batch."""

    max_rel: float    # max |y - ref| / max |ref|
    top1: float       # fraction of images whose argmax is the reference's
    n: int
    reference: str = ""

    def describe(self) -> str:
        return f"max rel. error {self.max_rel:.1e}, top-1 agreement {self.top1:.1%} of {self.n}"

    def to_dict(self) -> Dict[str, Any]:
        return {"max_rel_error": self.max_rel, "top1_agreement": self.top1, "n": self.n,
                "reference": self.reference}


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    """Largest absolute difference over the largest absolute reference value."""
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    if y.shape != ref.shape:
        raise ValueError(f"outputs of shape {y.shape} cannot be compared with the reference's "
                         f"{ref.shape}")
    scale = float(np.abs(ref).max())
    diff = float(np.abs(y - ref).max())
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def agreement(y: np.ndarray, ref: np.ndarray, reference: str = "") -> Agreement:
    """:class:`Agreement` of (N, C) logits ``y`` with ``ref``."""
    y, ref = np.asarray(y), np.asarray(ref)
    if y.ndim != 2:
        raise ValueError(f"expected (N, classes) logits, got shape {y.shape}")
    rel = relative_error(y, ref)
    top1 = float(np.mean(y.argmax(1) == ref.argmax(1)))
    return Agreement(rel, top1, int(len(ref)), reference)


@dataclass
class BenchResult:
    """Timings per batch size, agreement with the reference, and what could not run."""

    cases: List[Case]
    timings: Dict[int, Dict[str, Timing]]
    agreement: Dict[str, Agreement] = field(default_factory=dict)
    failed: Dict[str, str] = field(default_factory=dict)     # case -> error
    skipped: Dict[str, str] = field(default_factory=dict)    # case -> why it cannot run here
    rounds: int = 0
    reference: Optional[str] = None

    def median(self, name: str, batch: int) -> float:
        t = self.timings.get(batch, {}).get(name)
        return t.median if t is not None else math.nan

    def to_dict(self) -> Dict[str, Any]:
        rows = []
        for c in self.cases:
            row: Dict[str, Any] = {"name": c.name, "runtime": c.runtime,
                                   "precision": c.precision, "notes": c.notes,
                                   "timing": {str(bs): t[c.name].to_dict()
                                              for bs, t in self.timings.items() if c.name in t}}
            if c.name in self.agreement:
                row["agreement"] = self.agreement[c.name].to_dict()
            if c.name in self.failed:
                row["error"] = self.failed[c.name]
            rows.append(row)
        return {"rounds": self.rounds, "batch_sizes": sorted(self.timings),
                "reference": self.reference, "cases": rows, "skipped": dict(self.skipped)}


def run_benchmark(cases: Sequence[Case], inputs: Mapping[int, np.ndarray], rounds: int = 5,
                  warmup: int = 1, calls: Optional[int] = None, target_seconds: float = 1.0,
                  agree_x: Optional[np.ndarray] = None,
                  reference: Optional[Union[str, Tuple[str, np.ndarray]]] = None,
                  clock: Clock = time.perf_counter,
                  progress: Optional[Callable[[str], None]] = None) -> BenchResult:
    """Agreement on ``agree_x`` (one call per case, which also warms it up), then
    :func:`interleave` at each batch size of ``inputs`` (batch size -> batch).

    ``reference``: the name of a case, or (label, logits on ``agree_x``); None: no agreement.
    A case that fails its agreement call is reported in ``failed`` and not timed.
    """
    if not inputs:
        raise ValueError("no batch sizes to measure")
    result = BenchResult(list(cases), {}, rounds=rounds)
    live = list(cases)
    if agree_x is not None:
        outputs: Dict[str, np.ndarray] = {}
        for case in cases:
            try:
                outputs[case.name] = np.asarray(case.run(agree_x), dtype=np.float32)
            except Exception as err:  # reported, as above
                result.failed[case.name] = error_text(err)
        live = [c for c in cases if c.name not in result.failed]
        ref: Optional[np.ndarray] = None
        if isinstance(reference, str):
            ref = outputs.get(reference)
            result.reference = reference
        elif reference is not None:
            result.reference, ref = reference[0], np.asarray(reference[1], np.float32)
        if ref is not None:
            for name, y in outputs.items():
                try:
                    result.agreement[name] = agreement(y, ref, result.reference or "")
                except ValueError as err:
                    result.failed[name] = str(err)
    for bs in sorted(inputs):
        result.timings[bs] = interleave(live, inputs[bs], rounds, warmup, calls, target_seconds,
                                        clock=clock, progress=progress)
        for name, t in result.timings[bs].items():
            if t.error and name not in result.failed:
                result.failed[name] = f"bs{bs}: {t.error}"
    return result


def fastest(result: BenchResult, batch: int,
            among: Optional[Sequence[str]] = None) -> Optional[str]:
    """The case with the highest median images/s at ``batch`` (among ``among``), or None."""
    timings = result.timings.get(batch, {})
    names = [n for n in (among if among is not None else timings)
             if n in timings and timings[n].samples]
    return max(names, key=lambda n: timings[n].median) if names else None


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def table(result: BenchResult, baseline: Optional[str] = None,
          labels: Optional[Mapping[str, str]] = None, short: Optional[str] = None) -> str:
    """Markdown table: per batch size the median images/s (min-max) and the ratio to
    ``baseline`` (a case name), then the agreement with the reference. ``labels`` name the
    rows (default: the case names); ``short`` names the baseline and reference in the head."""
    labels = labels or {}
    bss = sorted(result.timings)
    base = baseline if baseline in {c.name for c in result.cases} else None
    head = ["case"]
    for bs in bss:
        head += [f"bs{bs} img/s (min-max)"] + ([f"bs{bs} vs {short or base}"] if base else [])
    if result.reference:
        ref = short if short and result.reference == base else result.reference
        head += [f"max rel. error vs {ref}", "top-1 agreement"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in result.cases:
        row = [labels.get(c.name, c.name)]
        for bs in bss:
            t = result.timings[bs].get(c.name)
            if t is None or not t.samples:
                row.append("failed" if c.name in result.failed else "-")
            else:
                row.append(f"{_fmt(t.median)} ({_fmt(t.low)}-{_fmt(t.high)})")
            if base:
                b = result.median(base, bs)
                mine = t.median if t is not None and t.samples else math.nan
                row.append("-" if math.isnan(mine) or math.isnan(b) else f"{mine / b:.2f}x")
        if result.reference:
            a = result.agreement.get(c.name)
            row += [f"{a.max_rel:.1e}", f"{a.top1:.1%}"] if a else ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _spread_overlaps(a: Timing, b: Timing) -> bool:
    return a.low <= b.high and b.low <= a.high


def verdict(result: BenchResult, baseline: Optional[str] = None, onnx_only: bool = False,
            mxnet_only: bool = False) -> List[str]:
    """Lines saying which runtime case (``Case.runtime`` set) is fastest at each batch size
    and, for each precision measured in more than one runtime, whether ``runtime="auto"``
    picks the fastest: it measures its candidates (:func:`.runtimes.auto_candidates`, with
    ``onnx_only`` / ``mxnet_only``) at batch 1, so a runtime faster at larger batches is named
    (with ``GLUON_RESNEST_AUTO=rule``: :func:`.runtimes.auto_runtime`). Differences within
    the min-max of the rounds are said to be so."""
    lines = []
    runtimes = [c.name for c in result.cases if c.runtime in rt.RUNTIMES]
    for bs in sorted(result.timings):
        best = fastest(result, bs, runtimes)
        if best is None:
            continue
        t = result.timings[bs][best]
        ratio = ""
        if baseline and baseline != best and not math.isnan(result.median(baseline, bs)):
            ratio = f", {t.median / result.median(baseline, bs):.2f}x {baseline}"
        lines.append(f"fastest at bs{bs}: {best} ({_fmt(t.median)} img/s{ratio})")
    for precision in rt.PRECISIONS:
        among = [c.name for c in result.cases
                 if c.precision == precision and c.runtime in rt.RUNTIMES]
        if len(among) < 2:
            continue
        try:
            if os.environ.get("GLUON_RESNEST_AUTO") == "rule":
                pick = case_name(rt.auto_runtime(precision, onnx_only=onnx_only,
                                                 mxnet_only=mxnet_only), precision)
            else:       # what auto measures: the candidates at batch 1
                probe = 1 if 1 in result.timings else min(result.timings)
                pick = fastest(result, probe, [
                    case_name(r, precision) for r in rt.auto_candidates(
                        precision, onnx_only=onnx_only, mxnet_only=mxnet_only)]) or ""
        except (ImportError, ValueError) as err:
            lines.append(f'runtime="auto" has no {precision} runtime here: {err}')
            continue
        lead = f'runtime="auto" picks {pick} for {precision}'
        if pick not in among:
            lines.append(f"{lead} (not measured here)")
            continue
        beaten = []
        for bs in sorted(result.timings):
            best = fastest(result, bs, among)
            timings = result.timings[bs]
            if best is None or best == pick or not timings[pick].samples:
                continue
            a, b = timings[best], timings[pick]
            noise = " (within the rounds' spread)" if _spread_overlaps(a, b) else ""
            beaten.append(f"at bs{bs} {best} is faster: {_fmt(a.median)} vs "
                          f"{_fmt(b.median)} img/s, {a.median / b.median:.2f}x{noise}")
        lines.append(f"{lead}: " + ("; ".join(beaten) if beaten else
                                    f"the fastest {precision} runtime measured here"))
    return lines


def machine_info(probe: bool = True) -> Dict[str, Any]:
    """The CPU (model, flags that matter to oneDNN), the ISA MXNet's oneDNN dispatches to
    (``probe``: a small subprocess, :func:`~.._compat.onednn.isa_report`), the AMX status,
    the threads the runtimes use and the 1-minute load average (other work on the cores)."""
    flags = onednn.cpu_flags()
    info: Dict[str, Any] = {"cpu": onednn.cpu_model(),
                            "flags": [f for f in onednn.FLAGS_OF_INTEREST if f in flags],
                            "amx": onednn.amx_status().describe(),
                            "threads": rt.cpu_threads()}
    if hasattr(os, "getloadavg"):
        info["load_average"] = round(os.getloadavg()[0], 2)
    if probe:
        try:
            p = onednn.isa_report()
            info["onednn"] = p.version
            info["onednn_isa"] = p.isa
        except RuntimeError as err:
            info["onednn_isa"] = f"unknown ({err})"
    return info


def describe_machine(info: Mapping[str, Any]) -> List[str]:
    """:func:`machine_info` as lines to print."""
    lines = [f"cpu: {info['cpu']}; flags: {', '.join(info['flags']) or 'none of interest'}; "
             f"{info['threads']} threads"]
    if "onednn_isa" in info:
        lines.append(f"{info.get('onednn') or 'oneDNN'} isa: {info['onednn_isa']}")
    lines.append(f"AMX: {info['amx']}")
    load = info.get("load_average")
    if load is not None and load > 0.5 * info["threads"]:
        lines.append(f"load average {load:g} on {info['threads']} cores at the start: other "
                     f"processes compete for the CPU, expect noisy timings and skewed ratios")
    return lines


# -- the cases of one model in every runtime ------------------------------------------------------
def bench_inputs(meta: ModelMeta, batch_sizes: Sequence[int], agree_n: int = 16,
                 seed: int = 0) -> Tuple[Dict[int, np.ndarray], np.ndarray]:
    """Generated, preprocessed images at the model's size, mean and std (structured like
    photos: smooth colour fields and rectangles): one batch per batch size, and ``agree_n``
    images for the agreement (the first images of the same pool)."""
    bad = [b for b in batch_sizes if not isinstance(b, int) or isinstance(b, bool) or b < 1]
    if bad or not batch_sizes:
        raise ValueError(f"batch sizes must be positive ints, got {list(batch_sizes)}")
    pool = generated_images(max(max(batch_sizes), agree_n), meta.input_size, meta.mean,
                            meta.std, seed=seed)
    return {b: np.ascontiguousarray(pool[:b]) for b in batch_sizes}, pool[:agree_n]


def case_name(runtime: str, precision: str) -> str:
    return f"{runtime} {precision}"


def missing_extra(runtime: str) -> Optional[str]:
    """None where ``runtime`` is installed, else the predictor's error naming the extra."""
    if rt.installed(runtime):
        return None
    try:     # the predictor names the extra before it touches any file
        rt.load_predictor(os.devnull + ".onnx", runtime, "fp32")
    except ImportError as err:
        return str(err)
    except Exception:  # any other failure: the generic message below
        pass
    return f"{runtime} is not installed"


def _why_not(runtime: str, precision: str, own: str, onnx_file: bool) -> Optional[str]:
    """Why ``runtime`` ``precision`` cannot run this model here (None: it can)."""
    if own != "fp32" and (runtime, precision) != ("mxnet", own):
        return (f"the model is {'an' if own == 'int8' else 'a'} {own.upper()} export: it "
                f"runs as mxnet {own} only")
    if onnx_file and runtime == "mxnet":
        return "an .onnx model runs in onnxruntime or openvino, not MXNet"
    missing = missing_extra(runtime)
    if missing:
        return missing
    if runtime == "openvino" and precision == "bf16":
        ok, reason = rt.openvino_bf16()
        return None if ok else reason
    if runtime == "mxnet" and precision == "bf16" and own == "fp32":
        ok, reason = bf16_support()
        return None if ok else f"MXNet has no BF16 here: {reason}"
    return None


def runtime_cases(model: Union[LoadedModel, str], combos: Sequence[Tuple[str, str]],
                  calib: Optional[str] = None,
                  progress: Optional[Callable[[str], None]] = None
                  ) -> Tuple[List[Case], Dict[str, str], Dict[str, str]]:
    """Predictors of ``model`` for each (runtime, precision) of ``combos``, as cases.

    ``model``: a :class:`LoadedModel` or the path of an ``.onnx`` file. MXNet INT8 is the
    predictor's (calibrated on generated images) or, with ``calib`` (an image folder),
    calibrated on those images; the ONNX runtimes share one ONNX export of the model.
    Returns (cases, skipped, failed): ``skipped`` says why a combination cannot run here
    (not installed, no native BF16, ...), ``failed`` holds the errors of combinations that
    should have run.
    """
    onnx_file = isinstance(model, str)
    own = "fp32" if onnx_file else model.meta.precision
    cases: List[Case] = []
    skipped: Dict[str, str] = {}
    failed: Dict[str, str] = {}
    todo = []
    for runtime, precision in combos:
        rt.check_request(runtime, precision)
        why = _why_not(runtime, precision, own, onnx_file)
        if why:
            skipped[case_name(runtime, precision)] = why
        else:
            todo.append((runtime, precision))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = model if onnx_file else None
        for runtime, precision in todo:
            name = case_name(runtime, precision)
            if progress:
                progress(f"building {name}")
            try:
                if runtime == "mxnet":
                    pred = _mxnet_predictor(model, precision, calib)
                else:
                    if onnx_path is None:       # one export for onnxruntime and OpenVINO
                        onnx_path = os.path.join(tmp, "model.onnx")
                        save(model.block, onnx_path, model.meta.updated(format="onnx"))
                    pred = rt.load_predictor(onnx_path, runtime, precision)
            except (ImportError, UnsupportedOnThisCPU) as err:
                skipped[name] = str(err)
                continue
            except Exception as err:  # reported; the other runtimes still run
                failed[name] = error_text(err)
                continue
            notes = [n for n in pred.notes if not n.startswith("exported to ONNX")]
            cases.append(Case(name, pred, runtime, precision, notes))
    return cases, skipped, failed


def _mxnet_predictor(model: LoadedModel, precision: str,
                     calib: Optional[str]) -> rt.Predictor:
    if precision != "int8" or model.meta.precision == "int8" or calib is None:
        return rt.load_predictor(model, "mxnet", precision)   # the predictor's own conversion
    net = quantize_int8(model.block, calib, size=model.meta.input_size,
                        transform=model.meta.transform)
    net.hybridize(static_alloc=True, static_shape=True)
    quantized = LoadedModel(model.meta.updated(precision="int8"), model.source, block=net,
                            path=model.path, ctx=model.ctx,
                            notes=model.notes + [f"quantized to INT8 with oneDNN (calibrated "
                                                 f"on {net.int8_info['num_calib']} images "
                                                 f"from {calib})"])
    return rt.load_predictor(quantized, "mxnet", "int8")
