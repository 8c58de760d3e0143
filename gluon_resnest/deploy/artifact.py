"""The model artifact: graph + weights + the metadata record that says how to feed them.

An artifact is either MXNet symbol files ``PREFIX-symbol.json`` + ``PREFIX-0000.params`` with
``PREFIX-meta.json`` beside them, or one ``.onnx`` file whose ``metadata_props`` hold the same
record under the key :data:`ONNX_META_KEY`. :class:`ModelMeta` is that record: variant, task,
the evaluation transform (input size, crop_pct, interpolation, mean, std), class names,
precision (fp32, int8, bf16), format (symbol, onnx) and the package version that wrote it.

:func:`save` is the one writer (every export path ends here); :func:`load_artifact` reads an
artifact back and :func:`load_variant` builds a variant with its weights, both as a
:class:`LoadedModel`: a callable on a preprocessed float32 (N, 3, H, W) batch plus its
``meta``. ``gluon_resnest.train.inference.load`` adds checkpoints and run folders.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock

from .._files import atomic_write
from ..data.transforms import EvalTransform
from ..model.resnest import build
from ..model.variants import VARIANTS, resolve_name
from ..weights.pretrained import get_model
from .onnx import OnnxRunner, export_onnx
from .symbol import export_symbol, load_symbol, symbol_files, write_block

__all__ = ["SCHEMA", "ONNX_META_KEY", "PRECISIONS", "FORMATS", "ModelMeta", "LoadedModel",
           "meta_path", "read_meta", "write_meta", "save", "load_artifact", "load_variant",
           "split_prefix", "package_version"]

#: Tag of the JSON record; a reader refuses records of another schema.
SCHEMA = "gluon_resnest-model/1"
#: The ``metadata_props`` key of an ONNX artifact's record.
ONNX_META_KEY = "gluon_resnest"
PRECISIONS = ("fp32", "int8", "bf16")
FORMATS = ("symbol", "onnx")
TASKS = ("classification", "detection", "segmentation")
#: Whose data config an exported file without a record is assumed to have (GluonCV's
#: convention for ImageNet classifiers: 224 px, crop 0.875, bilinear, ImageNet mean/std).
ASSUMED_VARIANT = "resnest50"


def package_version() -> str:
    """The installed gluon_resnest version (the distribution's metadata)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("gluon_resnest")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ModelMeta:
    """How to feed a model and what it outputs. ``format`` is None for a network held in
    memory (a variant or a checkpoint), ``'symbol'`` or ``'onnx'`` for a written artifact."""

    variant: Optional[str]
    input_size: int
    crop_pct: float
    interpolation: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    num_classes: int
    classes: Optional[Tuple[str, ...]] = None
    task: str = "classification"
    precision: str = "fp32"
    format: Optional[str] = None
    version: str = field(default_factory=package_version)
    details: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.transform      # validates size, crop_pct, interpolation, mean, std
        object.__setattr__(self, "crop_pct", t.crop_pct)
        object.__setattr__(self, "mean", t.mean)
        object.__setattr__(self, "std", t.std)
        if self.variant is not None:
            object.__setattr__(self, "variant", resolve_name(self.variant))
        if (not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool)
                or self.num_classes < 1):
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if self.classes is not None:
            names = tuple(str(c) for c in self.classes)
            if len(names) != self.num_classes:
                raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
            object.__setattr__(self, "classes", names)
        for name, value, allowed in (("task", self.task, TASKS),
                                     ("precision", self.precision, PRECISIONS),
                                     ("format", self.format, FORMATS + (None,))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got "
                                 f"{value!r}")

    @property
    def transform(self) -> EvalTransform:
        """The evaluation transform this model expects."""
        return EvalTransform(self.input_size, self.crop_pct, self.interpolation, self.mean,
                             self.std)

    @property
    def class_names(self) -> List[str]:
        """The class names, or ``'0' .. 'n-1'`` when the model carries none."""
        return list(self.classes) if self.classes else [str(i) for i in range(self.num_classes)]

    @classmethod
    def for_variant(cls, variant: str, num_classes: int = 1000,
                    classes: Optional[Sequence[str]] = None, **kw: Any) -> ModelMeta:
        """The variant's own data config (``VARIANTS[variant].default_cfg``)."""
        t = EvalTransform.from_default_cfg(VARIANTS[resolve_name(variant)].default_cfg)
        return cls(variant, t.size, t.crop_pct, t.interpolation, t.mean, t.std, num_classes,
                   tuple(classes) if classes is not None else None, **kw)

    @classmethod
    def for_block(cls, net: HybridBlock, **kw: Any) -> ModelMeta:
        """From a ResNeSt's ``variant``, ``default_cfg`` and classes."""
        variant = getattr(net, "variant", None)
        if variant is None:
            raise ValueError(f"{type(net).__name__} carries no variant: describe it with "
                             f"ModelMeta(...) (input size, crop_pct, interpolation, mean, std)")
        names = getattr(net, "classes", None)
        count = getattr(net, "num_classes", None)
        if isinstance(names, int):        # a ResNeSt without class names: classes is the count
            names, count = None, names
        count = count if count is not None else (len(names) if names else 1000)
        t = EvalTransform.from_default_cfg(net.default_cfg)
        return cls(variant, t.size, t.crop_pct, t.interpolation, t.mean, t.std, count,
                   tuple(names) if names else None, **kw)

    def updated(self, **changes: Any) -> ModelMeta:
        """A copy with ``changes`` applied; ``None`` values leave a field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("mean", "std", "classes"):
            d[k] = list(d[k]) if d[k] is not None else None
        return {"schema": SCHEMA, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "metadata") -> ModelMeta:
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if "schema" not in d and isinstance(d.get("data"), dict):
            d = _from_first_format(d)
        if d.get("schema") != SCHEMA:
            raise ValueError(f"{where}: unsupported metadata schema {d.get('schema')!r}, "
                             f"expected {SCHEMA!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"schema"})
        if unknown:
            raise ValueError(f"{where}: unknown metadata keys {unknown} (written by a newer "
                             f"gluon_resnest, {d.get('version')!r}?)")
        missing = sorted(f.name for f in fields(cls) if f.name not in d
                         and f.name not in ("classes", "task", "precision", "format",
                                            "version", "details"))
        if missing:
            raise ValueError(f"{where}: metadata lacks {', '.join(missing)}")
        args = {k: v for k, v in d.items() if k != "schema"}
        if args.get("classes") is not None:
            args["classes"] = tuple(args["classes"])
        try:
            return cls(**args)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None


def _from_first_format(d: Dict[str, Any]) -> Dict[str, Any]:
    """The record train wrote before the schema (``variant``, ``classes``, ``data``)."""
    data, classes = d["data"], d.get("classes")
    return {"schema": SCHEMA, "variant": d.get("variant"), "input_size": data["test_size"],
            "crop_pct": data["crop_pct"], "interpolation": data["interpolation"],
            "mean": data["mean"], "std": data["std"], "classes": classes,
            "num_classes": len(classes) if classes else None, "format": "symbol",
            "version": "unknown"}


# -- files -------------------------------------------------------------------------------------
def split_prefix(path: str) -> str:
    """``PREFIX`` for ``PREFIX``, ``PREFIX-symbol.json`` or ``PREFIX-meta.json``."""
    for end in ("-symbol.json", "-meta.json", "-0000.params"):
        if path.endswith(end):
            return path[:-len(end)]
    return path


def meta_path(prefix: str) -> str:
    return f"{prefix}-meta.json"


def read_meta(prefix: str) -> Optional[ModelMeta]:
    """The record beside symbol files, or None when there is no ``PREFIX-meta.json``."""
    path = meta_path(prefix)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r} is not valid JSON ({err})") from None
    return ModelMeta.from_dict(d, path)


def write_meta(prefix: str, meta: ModelMeta) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(meta.to_json() + "\n")
    return atomic_write(meta_path(prefix), write)


def save(block: HybridBlock, out: str, meta: ModelMeta,
         dynamic_spatial: bool = False) -> List[str]:
    """Write ``block`` as an artifact in ``meta.format`` at ``meta.input_size``, with ``meta``.

    ``symbol``: ``out`` is the prefix; an FP32 network is traced and written as its plain
    inference graph, an INT8 or BF16 graph as it is (casts included). ``onnx``: ``out`` is the
    file (FP32 only; ``dynamic_spatial`` makes H and W dynamic). Returns the written files.
    """
    if meta.format == "onnx":
        if meta.precision != "fp32":
            raise ValueError(f"ONNX export is FP32 only (MXNet's exporter has no "
                             f"{meta.precision} operators): write {meta.precision} as symbol "
                             f"files")
        path = export_onnx(block, out, meta.input_size, dynamic_spatial=dynamic_spatial,
                           metadata={ONNX_META_KEY: meta.to_json()})
        return [path]
    if meta.format != "symbol":
        raise ValueError(f"save needs meta.format 'symbol' or 'onnx', got {meta.format!r}")
    prefix = split_prefix(out)
    if meta.precision == "fp32":
        files = export_symbol(block, prefix, meta.input_size)
    else:
        files = write_block(block, prefix, meta.input_size)
    return [*files, write_meta(prefix, meta)]


# -- loading -----------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model ready to run: ``model(x)`` maps a preprocessed float32 (N, 3, H, W) batch to
    float32 (N, num_classes) logits; ``meta.transform`` is the preprocessing it expects.

    ``block`` is the Gluon network (None for ONNX, which runs in onnxruntime); ``source``
    says what was loaded; ``path`` is the file or prefix it came from (None for a variant);
    ``notes`` are things the user should know (e.g. assumed preprocessing).
    """

    meta: ModelMeta
    source: str
    block: Optional[HybridBlock] = None
    runner: Optional[Callable[[np.ndarray], np.ndarray]] = None
    path: Optional[str] = None
    ctx: Any = None
    notes: List[str] = field(default_factory=list)

    def __call__(self, x: Union[np.ndarray, Any]) -> np.ndarray:
        x = np.asarray(x.asnumpy() if isinstance(x, mx.nd.NDArray) else x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a preprocessed (N, 3, H, W) batch, got shape {x.shape}")
        if self.runner is not None:
            out = self.runner(x)
        else:
            with mx.autograd.predict_mode():
                y = self.block(mx.nd.array(x, ctx=self.ctx or mx.cpu()))
            out = y.astype("float32").asnumpy()   # a BF16 graph may hand back bfloat16
        return np.asarray(out, dtype=np.float32)

    @property
    def classes(self) -> List[str]:
        return self.meta.class_names

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, S, S) float32 with the model's transform."""
        return self.meta.transform(img)


def _graph_outputs(prefix: str, size: int) -> int:
    sym = mx.sym.load(symbol_files(prefix)[0])
    _, out_shapes, _ = sym.infer_shape(data=(1, 3, size, size))
    return int(out_shapes[0][-1])


def load_artifact(path: str, ctx=None) -> LoadedModel:
    """Load an exported model: a symbol ``PREFIX`` (or ``PREFIX-symbol.json``) or a ``.onnx``
    file, with its metadata. Symbol files without ``PREFIX-meta.json`` (e.g. a plain
    ``net.export``) get the ImageNet defaults of :data:`ASSUMED_VARIANT`, said in ``notes``."""
    if path.lower().endswith(".onnx"):
        runner = OnnxRunner(path)
        text = runner.metadata.get(ONNX_META_KEY)
        if text is None:
            raise ValueError(f"{path!r} carries no gluon_resnest metadata (metadata_props key "
                             f"{ONNX_META_KEY!r}): it was not written by gluon-resnest export")
        try:
            meta = ModelMeta.from_dict(json.loads(text), f"{path} metadata")
        except json.JSONDecodeError as err:
            raise ValueError(f"{path!r}: its metadata is not valid JSON ({err})") from None
        return LoadedModel(meta, f"ONNX model {path}", runner=runner, path=path)
    prefix = split_prefix(path)
    sym_file, params_file = symbol_files(prefix)
    if not os.path.isfile(sym_file):
        raise FileNotFoundError(f"no exported model at {path!r}: {sym_file!r} does not exist")
    meta = read_meta(prefix)
    notes = []
    if meta is None:
        t = EvalTransform.from_default_cfg(VARIANTS[ASSUMED_VARIANT].default_cfg)
        meta = ModelMeta(None, t.size, t.crop_pct, t.interpolation, t.mean, t.std,
                         _graph_outputs(prefix, t.size), format="symbol", version="unknown")
        notes.append(f"{meta_path(prefix)} does not exist: assuming the ImageNet defaults "
                     f"({meta.transform.describe()}); give the model's input size, crop_pct, "
                     f"interpolation, mean and std if it was trained otherwise")
    elif meta.format != "symbol":
        raise ValueError(f"{meta_path(prefix)} describes a {meta.format} model, not symbol files")
    block = load_symbol(prefix, ctx=ctx)
    block.hybridize(static_alloc=True, static_shape=True)
    kind = {"fp32": "", "int8": " (INT8)", "bf16": " (BF16)"}[meta.precision]
    return LoadedModel(meta, f"exported model{kind} {prefix}", block=block, path=prefix,
                       ctx=ctx, notes=notes)


def load_variant(name: str, params: Optional[str] = None, pretrained: Union[bool, str] = False,
                 random_init: bool = False, classes: Optional[int] = None,
                 ctx=None) -> LoadedModel:
    """Variant ``name`` with its weights: our ``.params`` file (``params``), GluonCV's
    (``pretrained``: True or a path, see :func:`~gluon_resnest.weights.get_model`) or random
    (``random_init``, for smoke tests). Exactly one source; ``classes`` is the head size."""
    name = resolve_name(name)
    if sum(bool(s) for s in (params, pretrained, random_init)) != 1:
        raise ValueError(f"give the weights of {name}, one of: our .params file (--params "
                         f"FILE, e.g. from `gluon-resnest convert`), GluonCV's file in "
                         f"~/.mxnet/models (--pretrained), or random weights (--random)")
    ctx = ctx or mx.cpu()
    kw = {} if classes is None else {"classes": classes}
    if pretrained:
        net = get_model(name, pretrained=pretrained, ctx=ctx, **kw)
        source = f"{name} with GluonCV's weights"
    else:
        net = build(name, **kw)
        if params:
            net.load_parameters(params, ctx=ctx)
            source = f"{name} with {params}"
        else:
            net.initialize(mx.init.Xavier(), ctx=ctx)
            source = f"{name} with random weights"
    net.hybridize(static_alloc=True, static_shape=True)
    return LoadedModel(ModelMeta.for_block(net), source, block=net, ctx=ctx)
