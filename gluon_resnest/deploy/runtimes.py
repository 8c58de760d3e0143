"""Run a model in the fastest installed runtime: MXNet, onnxruntime or OpenVINO.

:func:`load_predictor` takes a :class:`~.artifact.LoadedModel` (or what the deploy layer can
read itself: a variant name with its weights, an exported prefix, an ``.onnx`` file) and returns
a :class:`Predictor`: ``predictor(x)`` maps a preprocessed float32 (N, 3, H, W) numpy batch to
float32 logits; ``predictor.runtime`` / ``predictor.precision`` say what runs and
``predictor.meta`` is the artifact's record (so every runtime gets the same preprocessing,
``predictor.transform``). Checkpoints and run folders are read by the training layer:
``gluon_resnest.load(model, runtime=..., precision=...)`` accepts every form and ends here.

Supported (:data:`SUPPORTED`): MXNet fp32 / bf16 / int8 (bf16 and int8 converted with
:mod:`.bf16` / :mod:`.int8`, or an export already of that precision); onnxruntime fp32;
OpenVINO fp32 and bf16 (bf16 only where the CPU has native bfloat16: avx512_bf16 or AMX).
onnxruntime and OpenVINO run an ONNX file: a model in MXNet is exported to a temporary one.

``runtime="auto"`` is measured, not assumed (:func:`auto_candidates`, :func:`load_predictor`):
the installed runtimes that can run the model at that precision are built side by side and
timed at batch 1 in interleaved rounds (a few seconds), and the fastest is returned. The choice
is cached per CPU, thread count, runtime versions, model and precision in
``$GLUON_RESNEST_CACHE/auto_runtime.json`` (default ``~/.cache/gluon_resnest``; JSON, never
code), so the next load takes it at once. ``GLUON_RESNEST_AUTO=rule`` skips the measurement
and takes the first candidate of the fixed order OpenVINO, onnxruntime, MXNet
(:func:`auto_runtime`). Which runtime wins depends on the CPU: on a 2-core AMX Xeon OpenVINO
and onnxruntime ran our ONNX 2.3-2.6x faster than MXNet fp32, on a 2-core AMD Zen 5 MXNet's
fp32 was as fast or faster (``gluon-resnest bench MODEL`` shows the table).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import mxnet as mx
import numpy as np

from .._compat.extras import EXTRAS, MissingExtraError, import_extra
from .._compat.onednn import FLAGS_OF_INTEREST, bf16_speed_note, cpu_flags, cpu_model
from .._compat.openvino import CompiledModel
from .._files import atomic_write
from ..data.transforms import EvalTransform
from ..model.variants import ALIASES, VARIANTS
from .artifact import ONNX_META_KEY, LoadedModel, ModelMeta, load_artifact, load_variant
from .bf16 import UnsupportedOnThisCPU, convert_bf16
from .int8 import quantize_int8
from .onnx import OnnxRunner, export_onnx
from .timing import Case, error_text, interleave

__all__ = ["RUNTIMES", "PRECISIONS", "SUPPORTED", "Predictor", "load_predictor",
           "auto_runtime", "auto_candidates", "cache_dir", "installed", "openvino_bf16",
           "check_request", "cpu_threads"]

RUNTIMES = ("mxnet", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
#: What each runtime can run (OpenVINO bf16 also needs native bfloat16 in the CPU).
SUPPORTED: Dict[str, Tuple[str, ...]] = {"mxnet": ("fp32", "bf16", "int8"),
                                         "onnxruntime": ("fp32",),
                                         "openvino": ("fp32", "bf16")}
_EXTRA_OF = {"onnxruntime": "onnx", "openvino": "openvino"}
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def _combos() -> str:
    return "; ".join(f"{r}: {', '.join(p)}" for r, p in SUPPORTED.items()) + \
        " (openvino bf16 where the CPU has avx512_bf16 or AMX)"


def cpu_threads() -> int:
    """The cores this process may use (all of them: inference uses every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:       # not Linux
        return os.cpu_count() or 1


def _import_runtime(runtime: str) -> Any:
    """The runtime's Python module, or :class:`MissingExtraError` naming the extra."""
    return import_extra(runtime, _EXTRA_OF[runtime], f"runtime {runtime!r}")


def installed(runtime: str) -> bool:
    """Whether ``runtime`` can be imported (MXNet always can)."""
    if runtime == "mxnet":
        return True
    try:
        _import_runtime(runtime)
    except MissingExtraError:
        return False
    return True


def _can_export_onnx() -> bool:
    try:
        import onnx
    except ImportError:
        return False
    return hasattr(onnx, "mapping")        # MXNet's exporter needs onnx < 1.19


def openvino_bf16() -> Tuple[bool, str]:
    """(supported, reason): whether OpenVINO's CPU plugin runs bfloat16 natively here.

    Needs BF16 in ``OPTIMIZATION_CAPABILITIES`` and a CPU with avx512_bf16 or AMX (elsewhere
    bfloat16 would be emulated and slower than f32)."""
    if not installed("openvino"):
        return False, f"openvino is not installed ({EXTRAS['openvino']})"
    import openvino as ov
    caps = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    flags = cpu_flags()
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    if "BF16" not in caps:
        return False, f"OpenVINO's CPU plugin lists no BF16 (capabilities: {', '.join(caps)})"
    if not native:
        return False, "the CPU has neither avx512_bf16 nor amx_bf16"
    return True, f"OpenVINO BF16 on {' and '.join(native)}"




def check_request(runtime: str, precision: Optional[str]) -> None:
    """A clear error for an unknown runtime or precision, or a combination none supports."""
    if runtime != "auto" and runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of auto, {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime != "auto" and precision is not None and precision not in SUPPORTED[runtime]:
        raise ValueError(f"runtime {runtime!r} has no {precision}; supported: {_combos()}")


def auto_candidates(precision: str, onnx_only: bool = False,
                    mxnet_only: bool = False) -> List[str]:
    """The runtimes ``"auto"`` chooses among for ``precision``, in the rule's order.

    ``onnx_only``: the model is an ONNX file (MXNet cannot run it); ``mxnet_only``: it is an
    MXNet graph that cannot be exported to ONNX (INT8/BF16 exports) or the onnx exporter is
    missing."""
    out = []
    for runtime in ("openvino", "onnxruntime", "mxnet"):
        if precision not in SUPPORTED[runtime]:
            continue
        if runtime == "mxnet":
            if not onnx_only:
                out.append(runtime)
        elif not mxnet_only and installed(runtime) and \
                (precision != "bf16" or openvino_bf16()[0]):
            out.append(runtime)
    return out


def auto_runtime(precision: str, onnx_only: bool = False, mxnet_only: bool = False) -> str:
    """The fixed rule (``GLUON_RESNEST_AUTO=rule``): the first of :func:`auto_candidates`."""
    found = auto_candidates(precision, onnx_only, mxnet_only)
    if found:
        return found[0]
    if precision == "bf16":
        raise ValueError(f"no bf16 runtime for an ONNX model here: {openvino_bf16()[1]}")
    raise MissingExtraError(f"an .onnx model needs onnxruntime or OpenVINO: "
                            f"{EXTRAS['onnx']} or {EXTRAS['openvino']}")


class Predictor:
    """A model in one runtime: ``predictor(x)`` maps a preprocessed float32 (N, 3, H, W) batch
    to float32 (N, num_classes) logits. ``meta`` is the artifact's record (its ``transform``
    is the preprocessing every runtime expects)."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], meta: ModelMeta, runtime: str,
                 precision: str, source: str, path: Optional[str] = None,
                 notes: Optional[List[str]] = None) -> None:
        self._run = run
        self.meta = meta
        self.runtime = runtime
        self.precision = precision
        self.source = source
        self.path = path
        self.notes = list(notes or [])

    def __call__(self, x: Union[np.ndarray, Any]) -> np.ndarray:
        x = np.ascontiguousarray(x.asnumpy() if isinstance(x, mx.nd.NDArray) else x,
                                 dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a preprocessed (N, 3, H, W) batch, got shape {x.shape}")
        return np.asarray(self._run(x), dtype=np.float32)

    def __repr__(self) -> str:
        return f"Predictor({self.source}, runtime={self.runtime!r}, precision={self.precision!r})"

    @property
    def transform(self) -> EvalTransform:
        """The preprocessing this model expects (from its metadata)."""
        return self.meta.transform

    @property
    def classes(self) -> List[str]:
        return self.meta.class_names

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, S, S) float32 with the model's transform."""
        return self.meta.transform(img)


# -- backends ----------------------------------------------------------------------------------
def _mxnet_run(model: LoadedModel, precision: str) -> Tuple[Callable, List[str]]:
    if model.block is None:
        raise ValueError(f"runtime 'mxnet' cannot run {model.source}: an .onnx model runs in "
                         f"onnxruntime or openvino (give the symbol files or the checkpoint to "
                         f"run it in MXNet)")
    if precision == model.meta.precision:
        return model, []
    size = model.meta.input_size
    if precision == "bf16":
        net = convert_bf16(model.block, size)
        note = "converted to BF16 with MXNet AMP"
        slower = bf16_speed_note(see_info=False)
        if slower:
            note += f" ({slower})"
    else:
        net = quantize_int8(model.block, "generated", size=size, transform=model.meta.transform)
        note = "quantized to INT8 with oneDNN (calibrated on generated images)"
    net.hybridize(static_alloc=True, static_shape=True)
    converted = LoadedModel(model.meta.updated(precision=precision), model.source, block=net,
                            ctx=model.ctx)
    return converted, [note]


def _ort_run(path: str) -> Callable:
    _import_runtime("onnxruntime")
    return OnnxRunner(path, threads=cpu_threads())


def _openvino_run(path: str, precision: str) -> Callable:
    ov = _import_runtime("openvino")
    if precision == "bf16":
        ok, reason = openvino_bf16()
        if not ok:
            raise UnsupportedOnThisCPU(f"OpenVINO BF16 is not available here: {reason}")
    # f32 asked for explicitly: on AMX CPUs OpenVINO's default is bf16
    return CompiledModel(ov, path, {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
                                    "INFERENCE_NUM_THREADS": cpu_threads()})


def _onnx_meta_openvino(path: str) -> ModelMeta:
    """The record of an ``.onnx`` artifact read with OpenVINO (no onnxruntime needed)."""
    ov = _import_runtime("openvino")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX model {path!r} does not exist")
    model = ov.Core().read_model(path)
    key = ["framework", ONNX_META_KEY]
    if not model.has_rt_info(key):
        raise ValueError(f"{path!r} carries no gluon_resnest metadata (metadata_props key "
                         f"{ONNX_META_KEY!r}): it was not written by gluon-resnest export")
    text = model.get_rt_info(key).astype(str)
    try:
        return ModelMeta.from_dict(json.loads(text), f"{path} metadata")
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r}: its metadata is not valid JSON ({err})") from None


# -- the entry point ---------------------------------------------------------------------------
def load_predictor(model: Union[LoadedModel, str], runtime: str = "auto",
                   precision: Optional[str] = None, **variant_kw: Any) -> Predictor:
    """``model`` in ``runtime`` at ``precision``, as a :class:`Predictor`.

    ``model``: a :class:`LoadedModel`, a variant name (weights from ``variant_kw``: ``params``,
    ``pretrained`` or ``random_init``, see :func:`~.artifact.load_variant`), an exported prefix
    or an ``.onnx`` file. ``runtime``: ``"mxnet"``, ``"onnxruntime"``, ``"openvino"`` or
    ``"auto"`` (the fastest candidate, measured here or cached: see the module doc).
    ``precision``: ``"fp32"``,
    ``"bf16"``, ``"int8"`` or None (the model's own: fp32 unless it is a BF16/INT8 export).
    Uses every core. A combination no runtime supports is a ``ValueError`` listing them; a
    runtime that is not installed is a :class:`MissingExtraError` naming the extra.
    """
    check_request(runtime, precision)
    if isinstance(model, str):
        path = os.path.expanduser(model)
        if path.lower().endswith(".onnx"):
            return _load_onnx_file(path, runtime, precision or "fp32")
        is_variant = model.lower() in VARIANTS or model.lower() in ALIASES
        model = load_variant(model, **variant_kw) if is_variant else load_artifact(path)
    if not isinstance(model, LoadedModel):
        raise TypeError(f"model must be a LoadedModel or a str, got {type(model).__name__}")
    own = model.meta.precision
    precision = precision or own
    if own != "fp32" and precision != own:
        raise ValueError(f"{model.source} is a {own.upper()} export: it runs as {own} only, "
                         f"got precision {precision!r} (export the FP32 model again for that)")
    if model.block is None:         # an ONNX artifact already loaded in onnxruntime
        return _load_onnx_file(model.path, runtime, precision, model.meta, model.notes)
    exportable = own == "fp32" and _can_export_onnx()
    if runtime == "auto":
        return _measured_auto(
            {r: partial(_build, model, r, precision)
             for r in auto_candidates(precision, mxnet_only=not exportable)},
            model.meta.updated(precision=precision), model.source, model.block)
    check_request(runtime, precision)
    return _build(model, runtime, precision)


def _build(model: LoadedModel, runtime: str, precision: str,
           onnx_path: Optional[str] = None) -> Predictor:
    """``model`` in ``runtime``; ``onnx_path``: an ONNX export of it already written."""
    own = model.meta.precision
    if runtime == "mxnet":
        run, notes = _mxnet_run(model, precision)
        return Predictor(run, run.meta, "mxnet", precision, model.source, model.path,
                         model.notes + notes)
    if own != "fp32":
        raise ValueError(f"{model.source} is a {own.upper()} MXNet graph: only runtime 'mxnet' "
                         f"runs it (ONNX export is FP32 only)")
    _import_runtime(runtime)           # a missing extra is said before the export
    if precision == "bf16":
        ok, reason = openvino_bf16()
        if not ok:
            raise UnsupportedOnThisCPU(f"OpenVINO BF16 is not available here: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(model.block, os.path.join(tmp, "model.onnx"),
                                    model.meta.input_size)
        run = _ort_run(onnx_path) if runtime == "onnxruntime" else \
            _openvino_run(onnx_path, precision)
    return Predictor(run, model.meta.updated(precision=precision), runtime, precision,
                     model.source, model.path,
                     model.notes + [f"exported to ONNX for {runtime} "
                                    f"({model.meta.input_size} px)"])


# -- runtime="auto": measured, cached ------------------------------------------------------------
def cache_dir() -> str:
    """Where ``"auto"`` keeps its measured choices: ``$GLUON_RESNEST_CACHE``, else
    ``$XDG_CACHE_HOME/gluon_resnest``, else ``~/.cache/gluon_resnest``."""
    env = os.environ.get("GLUON_RESNEST_CACHE")
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gluon_resnest")


def _auto_key(meta: ModelMeta, candidates: List[str]) -> str:
    """What the measured choice depends on: CPU, threads, runtime versions, model, precision."""
    versions = {"mxnet": mx.__version__}
    for runtime in candidates:
        if runtime != "mxnet":
            versions[runtime] = getattr(_import_runtime(runtime), "__version__", "?")
    return json.dumps({"cpu": cpu_model(), "isa": sorted(cpu_flags() & set(FLAGS_OF_INTEREST)),
                       "threads": cpu_threads(), "versions": versions,
                       "model": [meta.variant, meta.task, meta.num_classes, meta.input_size],
                       "precision": meta.precision, "candidates": sorted(candidates)},
                      sort_keys=True)


def _read_choices(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):      # missing or damaged: measure again, then rewrite
        return {}


def _write_choice(path: str, key: str, choice: Dict[str, Any]) -> Optional[str]:
    """Add ``choice`` under ``key`` atomically; the error text if the cache is not writable."""
    data = _read_choices(path)
    data[key] = choice

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    try:
        atomic_write(path, write)
        return None
    except OSError as err:
        return str(err)


def _measured_auto(builders: Dict[str, Callable[..., Predictor]], meta: ModelMeta,
                   source: str, block: Any = None) -> Predictor:
    """The fastest of ``builders`` (runtime -> builder), measured here at batch 1 or taken from
    the cache. With ``block`` (a model in MXNet), onnxruntime and OpenVINO share one ONNX export
    of it (their builders take ``onnx_path=``)."""
    candidates = list(builders)
    if len(candidates) == 1 or os.environ.get("GLUON_RESNEST_AUTO") == "rule":
        predictor = builders[candidates[0]]()
        predictor.notes.append(f"runtime='auto': {candidates[0]}"
                               + (" (the only candidate)" if len(candidates) == 1
                                  else " (GLUON_RESNEST_AUTO=rule: the fixed order)"))
        return predictor
    path = os.path.join(cache_dir(), "auto_runtime.json")
    key = _auto_key(meta, candidates)
    known = _read_choices(path).get(key, {})
    if known.get("runtime") in builders:
        predictor = builders[known["runtime"]]()
        predictor.notes.append(f"runtime='auto': {known['runtime']}, measured on this machine "
                               f"{known.get('measured', '')} ({path})")
        return predictor
    predictors: Dict[str, Predictor] = {}
    failed: Dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = None
        for runtime, build in builders.items():
            try:
                if block is not None and runtime != "mxnet" and onnx_path is None:
                    onnx_path = export_onnx(block, os.path.join(tmp, "model.onnx"),
                                            meta.input_size)
                shared = block is not None and runtime != "mxnet"
                predictors[runtime] = build(onnx_path=onnx_path) if shared else build()
            except Exception as err:   # noqa: BLE001  (the others may still run: say why not)
                failed[runtime] = error_text(err)
    if not predictors:
        raise RuntimeError(f"runtime='auto': no candidate runtime could load {source}: "
                           + "; ".join(f"{r}: {e}" for r, e in failed.items()))
    size = meta.input_size
    x = np.random.RandomState(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    timings = interleave([Case(r, p) for r, p in predictors.items()], x, rounds=3, warmup=1,
                         target_seconds=0.25, max_calls=8)
    speed = {r: t.median for r, t in timings.items() if not t.error}
    if not speed:
        raise RuntimeError("runtime='auto': every candidate failed on a test batch: "
                           + "; ".join(f"{r}: {t.error}" for r, t in timings.items()))
    best = max(speed, key=speed.get)
    measured = time.strftime("%Y-%m-%d %H:%M")
    unsaved = _write_choice(path, key, {"runtime": best, "images_per_s_bs1":
                                        {r: round(v, 2) for r, v in speed.items()},
                                        "measured": measured})
    predictor = predictors[best]
    predictor.notes.append(
        "runtime='auto' measured at batch 1: "
        + ", ".join(f"{r} {v:.1f}" for r, v in sorted(speed.items(), key=lambda kv: -kv[1]))
        + f" images/s; picked {best}"
        + (f" (not cached: {unsaved})" if unsaved else f" (cached in {path})")
        + "".join(f"; {r} failed: {e}" for r, e in failed.items()))
    return predictor


def _load_onnx_file(path: str, runtime: str, precision: str, meta: Optional[ModelMeta] = None,
                    notes: Optional[List[str]] = None) -> Predictor:
    if runtime == "mxnet":
        raise ValueError(f"runtime 'mxnet' cannot run the ONNX model {path!r}: use "
                         f"onnxruntime or openvino (or give the symbol files / checkpoint)")
    if runtime == "auto":
        candidates = auto_candidates(precision, onnx_only=True)
        if not candidates:
            auto_runtime(precision, onnx_only=True)         # raises the rule's clear error
        if meta is None:
            if installed("onnxruntime"):
                loaded = load_artifact(path)
                meta, notes = loaded.meta, loaded.notes
            else:
                meta = _onnx_meta_openvino(path)
        return _measured_auto({r: partial(_onnx_predictor, path, r, precision, meta, notes)
                               for r in candidates},
                              meta.updated(precision=precision), f"ONNX model {path}")
    check_request(runtime, precision)
    return _onnx_predictor(path, runtime, precision, meta, notes)


def _onnx_predictor(path: str, runtime: str, precision: str, meta: Optional[ModelMeta],
                    notes: Optional[List[str]]) -> Predictor:
    if runtime == "onnxruntime":
        run: Callable = _ort_run(path)
        if meta is None:
            loaded = load_artifact(path)
            meta, notes = loaded.meta, loaded.notes
    else:
        meta = meta or _onnx_meta_openvino(path)
        run = _openvino_run(path, precision)
    return Predictor(run, meta.updated(precision=precision), runtime, precision,
                     f"ONNX model {path}", path, notes)
