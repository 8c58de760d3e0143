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

``runtime="auto"`` follows a fixed rule (:func:`auto_runtime`), not a probe:
fp32: OpenVINO if installed, else onnxruntime if installed, else MXNet;
bf16: OpenVINO where it has native BF16, else MXNet; int8: MXNet.
(Measured on 2-core Xeon and EPYC machines, OpenVINO and onnxruntime ran our ONNX 2.3-2.6x
faster than MXNet fp32 at bs16.)
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import mxnet as mx
import numpy as np

from .._compat.onednn import bf16_speed_note, cpu_flags
from ..data.transforms import EvalTransform
from ..model.variants import ALIASES, VARIANTS
from ..weights.pytorch import MissingExtraError
from .artifact import ONNX_META_KEY, LoadedModel, ModelMeta, load_artifact, load_variant
from .bf16 import UnsupportedOnThisCPU, convert_bf16
from .int8 import quantize_int8
from .onnx import OnnxRunner, export_onnx

__all__ = ["RUNTIMES", "PRECISIONS", "SUPPORTED", "Predictor", "load_predictor",
           "auto_runtime", "installed", "openvino_bf16", "check_request", "cpu_threads"]

RUNTIMES = ("mxnet", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
#: What each runtime can run (OpenVINO bf16 also needs native bfloat16 in the CPU).
SUPPORTED: Dict[str, Tuple[str, ...]] = {"mxnet": ("fp32", "bf16", "int8"),
                                         "onnxruntime": ("fp32",),
                                         "openvino": ("fp32", "bf16")}
_EXTRAS = {"onnxruntime": 'pip install "gluon_resnest[onnx]"',
           "openvino": 'pip install "gluon_resnest[openvino]"'}
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
    try:
        if runtime == "onnxruntime":
            import onnxruntime as module
        else:
            import openvino as module
    except ImportError as err:
        raise MissingExtraError(f"runtime {runtime!r} needs the {runtime} package, the optional "
                                f"extra: {_EXTRAS[runtime]}") from err
    return module


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
        return False, f"openvino is not installed ({_EXTRAS['openvino']})"
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


def auto_runtime(precision: str, onnx_only: bool = False, mxnet_only: bool = False) -> str:
    """The runtime ``"auto"`` picks for ``precision``, by the module's rule.

    ``onnx_only``: the model is an ONNX file (MXNet cannot run it); ``mxnet_only``: it is an
    MXNet graph that cannot be exported to ONNX (INT8/BF16 exports) or the onnx exporter is
    missing."""
    if precision == "int8" or mxnet_only:
        return "mxnet"
    if precision == "bf16":
        if openvino_bf16()[0]:
            return "openvino"
        if onnx_only:
            raise ValueError(f"no bf16 runtime for an ONNX model here: {openvino_bf16()[1]}")
        return "mxnet"
    for runtime in ("openvino", "onnxruntime"):
        if installed(runtime):
            return runtime
    if onnx_only:
        raise MissingExtraError(f"an .onnx model needs onnxruntime or OpenVINO: "
                                f"{_EXTRAS['onnxruntime']} or {_EXTRAS['openvino']}")
    return "mxnet"


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
    compiled = ov.Core().compile_model(path, "CPU", {
        "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        "INFERENCE_NUM_THREADS": cpu_threads()})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        # the request's output buffer is reused by the next call: copy it out
        return np.array(request.infer({0: x})[0], dtype=np.float32, copy=True)
    return run


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
    ``"auto"`` (the module's rule, :func:`auto_runtime`). ``precision``: ``"fp32"``,
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
        runtime = auto_runtime(precision, mxnet_only=not exportable)
    check_request(runtime, precision)
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
        onnx_path = export_onnx(model.block, os.path.join(tmp, "model.onnx"),
                                model.meta.input_size)
        run = _ort_run(onnx_path) if runtime == "onnxruntime" else \
            _openvino_run(onnx_path, precision)
    return Predictor(run, model.meta.updated(precision=precision), runtime, precision,
                     model.source, model.path,
                     model.notes + [f"exported to ONNX for {runtime} "
                                    f"({model.meta.input_size} px)"])


def _load_onnx_file(path: str, runtime: str, precision: str, meta: Optional[ModelMeta] = None,
                    notes: Optional[List[str]] = None) -> Predictor:
    if runtime == "mxnet":
        raise ValueError(f"runtime 'mxnet' cannot run the ONNX model {path!r}: use "
                         f"onnxruntime or openvino (or give the symbol files / checkpoint)")
    if runtime == "auto":
        runtime = auto_runtime(precision, onnx_only=True)
    check_request(runtime, precision)
    if runtime == "onnxruntime":
        runner = _ort_run(path)
        if meta is None:
            loaded = load_artifact(path)
            meta, notes = loaded.meta, loaded.notes
        run: Callable = runner
    else:
        meta = meta or _onnx_meta_openvino(path)
        run = _openvino_run(path, precision)
    return Predictor(run, meta.updated(precision=precision), runtime, precision,
                     f"ONNX model {path}", path, notes)
