"""Deployment: MXNet symbol files, ONNX, INT8 (oneDNN) and BF16 models of a ResNeSt.

* :func:`export_symbol` writes ``PREFIX-symbol.json`` / ``PREFIX-0000.params`` (inference graph).
* :func:`export_onnx` converts that graph with MXNet's own exporter (``mx.onnx.export_model``)
  into ONNX **opset 13** with a dynamic batch dimension. MXNet 1.9.1's translation tables stop
  at opset 13 (its ``Split`` has no ``num_outputs``, which opset 18 requires), so the model is
  declared opset 13 whatever the installed onnx's newest opset is, then checked with
  ``onnx.checker`` (full check). Split-Attention becomes Conv (grouped), Split, Sum,
  GlobalAveragePool, Reshape, Transpose, Softmax, Sigmoid and Mul; the average-pool shortcut
  becomes Pad + AveragePool (+ Shape/ScatterND/GatherND/Div for ``count_include_pad=False``).
  Tested with onnx 1.18.0 and onnxruntime 1.30.0 (onnx >= 1.19 lost ``onnx.mapping``, which
  the exporter needs).
* :func:`quantize_int8` runs MXNet's oneDNN INT8 flow (``quantize_net_v2``) with calibration
  on images from a folder or on a generated set. Two MXNet 1.9.1 defects are worked around:
  oneDNN's conv+sum fusion gets its calibrated range wrong in ResNeSt's bottleneck (output
  clipped to about half), so quantization runs with that fusion disabled
  (``MXNET_DISABLE_MKLDNN_FUSE_CONV_SUM=1``, in a subprocess when needed); and INT8 grouped
  convolutions are wrong when the groups' weight ranges differ (group g's output comes out
  scaled by about its range over group 0's: 15-60% errors). When a small probe
  (:func:`grouped_int8_ok`) finds that defect, :func:`split_grouped_convs` first rewrites each
  Split-Attention grouped convolution, exactly, into G dense ones, so every convolution runs
  in INT8. The attention MLP (fc1/fc2 on 1x1 maps) stays FP32: it costs almost nothing.
* :func:`convert_bf16` uses MXNet AMP with bfloat16 where oneDNN has bf16 kernels
  (:func:`bf16_support`); elsewhere it raises :class:`UnsupportedOnThisCPU`.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet.base import MXNetError
from mxnet.gluon import HybridBlock, SymbolBlock

from ..model.resnest import _param_ctx
from ..weights.pytorch import MissingExtraError

__all__ = ["ONNX_OPSET", "UnsupportedOnThisCPU", "fold_constants", "export_symbol", "load_symbol",
           "export_onnx", "run_onnx", "generated_images", "folder_images", "calibration_images",
           "quantize_int8", "graph_transitions", "grouped_int8_ok", "split_grouped_convs",
           "bf16_support",
           "convert_bf16"]

#: The ONNX opset written by :func:`export_onnx` (MXNet 1.9.1's newest translation tables).
ONNX_OPSET = 13
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class UnsupportedOnThisCPU(RuntimeError):
    """The requested precision has no oneDNN kernels on this CPU."""


def _input_size(net, size: Optional[int]) -> int:
    if size is None:
        cfg = getattr(net, "default_cfg", None) or {}
        size = cfg.get("input_size", (3, 224, 224))[-1]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    minimum = getattr(net, "min_input_size", 1)
    if size < minimum:
        raise ValueError(f"size {size} is smaller than the network's total stride {minimum}")
    return size


def _check_block(net) -> None:
    if not isinstance(net, HybridBlock):
        raise TypeError(f"expected a Gluon HybridBlock (a ResNeSt or SymbolBlock), got "
                        f"{type(net).__name__}")
    for name, p in net.collect_params().items():
        try:
            p.list_ctx()
        except RuntimeError:
            raise ValueError(f"parameter {name} is not initialised: load weights (or call "
                             f"net.initialize()) before exporting") from None


# -- MXNet symbol ----------------------------------------------------------------------------
_CONSTANT_OPS = ("_full", "_zeros", "_ones")
_IDENTITY_OPS = ("BlockGrad", "stop_gradient", "identity", "_copy")


def _load_model(prefix: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(graph JSON dict, parameters) of an exported model, for a rewrite."""
    with open(f"{prefix}-symbol.json") as f:
        return json.load(f), mx.nd.load(f"{prefix}-0000.params")


def _save_model(prefix: str, graph: Dict[str, Any], params: Dict[str, Any]) -> None:
    """Write a rewritten graph (JSON dict) and the parameters it still uses to ``prefix``.
    Re-serialising through MXNet drops unreachable nodes."""
    sym = mx.sym.load_json(json.dumps(graph))
    sym.save(f"{prefix}-symbol.json")
    keep = {f"arg:{n}" for n in sym.list_arguments()} | {
        f"aux:{n}" for n in sym.list_auxiliary_states()}
    mx.nd.save(f"{prefix}-0000.params", {k: v for k, v in params.items() if k in keep})


def fold_constants(prefix: str) -> int:
    """Rewrite an exported model so in-graph constants become parameters.

    Input-free constant ops (``_full``, ``_zeros``, ``_ones``: e.g. the fixed weights of an
    average pool written as a convolution) become parameters of the same name, and
    ``BlockGrad``/``stop_gradient`` (identities at inference) are bypassed. ONNX export and
    INT8 quantization need weights to be parameters. Returns the number of nodes changed.
    """
    import ast
    graph, params = _load_model(prefix)
    nodes = graph["nodes"]
    changed = 0
    for i, node in enumerate(nodes):
        if node["op"] in _CONSTANT_OPS and not node["inputs"]:
            attrs = node.get("attrs", {})
            shape = ast.literal_eval(attrs["shape"])
            value = {"_zeros": 0.0, "_ones": 1.0}.get(node["op"], float(attrs.get("value", 0)))
            dtype = attrs.get("dtype", "float32")
            params[f"arg:{node['name']}"] = mx.nd.full(shape, value, dtype=dtype)
            nodes[i] = {"op": "null", "name": node["name"], "inputs": []}
            graph["arg_nodes"] = sorted(set(graph["arg_nodes"]) | {i})
            changed += 1
    source = {i: n["inputs"][0] for i, n in enumerate(nodes)
              if n["op"] in _IDENTITY_OPS and len(n["inputs"]) == 1}

    def follow(entry):
        while entry[0] in source:
            entry = source[entry[0]]
        return entry
    for node in nodes:
        node["inputs"] = [follow(e) for e in node["inputs"]]
    graph["heads"] = [follow(e) for e in graph["heads"]]
    changed += len(source)
    if changed:
        _save_model(prefix, graph, params)
    return changed


def export_symbol(net: HybridBlock, prefix: str, size: Optional[int] = None,
                  fold: bool = True) -> Tuple[str, str]:
    """Write the inference graph: ``prefix-symbol.json`` and ``prefix-0000.params``.

    The graph is traced on a (1, 3, size, size) batch in predict mode; the exported files
    accept any batch size and any resolution >= the network's total stride. With ``fold``,
    in-graph constants become parameters (:func:`fold_constants`). Returns the two paths.
    """
    _check_block(net)
    size = _input_size(net, size)
    folder = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder {folder!r} does not exist")
    if not net._active:
        net.hybridize(static_alloc=True, static_shape=True)
    with mx.autograd.predict_mode():
        net(mx.nd.zeros((1, 3, size, size), ctx=_param_ctx(net)))
    net.export(prefix, 0)
    if fold:
        fold_constants(prefix)
    return f"{prefix}-symbol.json", f"{prefix}-0000.params"


def load_symbol(prefix: str, ctx=None) -> SymbolBlock:
    """Load ``prefix-symbol.json`` / ``prefix-0000.params`` as a SymbolBlock (input ``data``)."""
    sym_file, params_file = f"{prefix}-symbol.json", f"{prefix}-0000.params"
    for f in (sym_file, params_file):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"exported model file {f!r} does not exist")
    return SymbolBlock.imports(sym_file, ["data"], params_file, ctx=ctx or mx.cpu())


# -- ONNX --------------------------------------------------------------------------------------
def _import_onnx():
    try:
        import onnx
    except ImportError as err:
        raise MissingExtraError("ONNX export needs the onnx package, the optional 'onnx' extra: "
                                "pip install 'gluon_resnest[onnx]'") from err
    if not hasattr(onnx, "mapping"):
        raise MissingExtraError(f"onnx {onnx.__version__} has no onnx.mapping, which MXNet "
                                f"1.9.1's exporter needs: pip install 'onnx==1.18.0'")
    return onnx


def export_onnx(net: HybridBlock, path: str, size: Optional[int] = None, batch: int = 1,
                dynamic_spatial: bool = False) -> str:
    """Export ``net`` to an ONNX file (opset :data:`ONNX_OPSET`) with a dynamic batch size.

    ``size`` is the input resolution (default: the variant's); with ``dynamic_spatial`` the
    height and width are dynamic too. ``batch`` is the batch used for tracing only.
    Returns ``path``.
    """
    onnx = _import_onnx()
    _check_block(net)
    size = _input_size(net, size)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder {folder!r} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        export_symbol(net, os.path.join(tmp, "m"), size)
        sym, args, aux = mx.model.load_checkpoint(os.path.join(tmp, "m"), 0)
    dyn = (None, 3, None, None) if dynamic_spatial else (None, 3, size, size)
    mx.onnx.export_model(sym, {**args, **aux}, in_shapes=[(batch, 3, size, size)],
                         in_types=[np.float32], onnx_file_path=path, dynamic=True,
                         dynamic_input_shapes=[dyn])
    model = onnx.load(path)
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", ONNX_OPSET))
    # MXNet lists the weights as graph inputs too; runtimes then treat them as overridable
    # inputs and skip constant folding. Keep only the image input.
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def run_onnx(path: str, x: np.ndarray) -> np.ndarray:
    """Run an exported ONNX model on ``x`` (N, 3, H, W) with onnxruntime's CPU provider."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise MissingExtraError("running ONNX models needs onnxruntime, part of the 'test' "
                                "extra: pip install 'onnxruntime==1.30.0'") from err
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, np.float32)})[0]


# -- calibration images ----------------------------------------------------------------------
def _normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return ((images - m) / s).astype(np.float32)


def generated_images(n: int, size: int, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     seed: int = 0) -> np.ndarray:
    """``n`` synthetic, normalised (n, 3, size, size) images for calibration.

    Each image is a smooth random colour field (bilinear upsampling of a coarse 2x2..8x8 grid)
    plus a few random rectangles and mild pixel noise, in [0, 1] before normalisation: edges,
    flat regions and gradients, so activations cover the ranges natural images produce.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = np.random.RandomState(seed)
    out = np.empty((n, 3, size, size), np.float32)
    grid = np.linspace(0.0, 1.0, size)
    for i in range(n):
        g = int(rng.randint(2, 9))
        coarse = rng.uniform(0, 1, (3, g, g))
        pos = grid * (g - 1)
        lo = np.minimum(pos.astype(int), g - 2)
        t = pos - lo
        rows = coarse[:, lo] * (1 - t)[None, :, None] + coarse[:, lo + 1] * t[None, :, None]
        img = rows[:, :, lo] * (1 - t) + rows[:, :, lo + 1] * t
        for _ in range(int(rng.randint(0, 5))):
            y0, x0 = rng.randint(0, size, 2)
            h, w = rng.randint(size // 8 + 1, size // 2 + 2, 2)
            img[:, y0:y0 + h, x0:x0 + w] = rng.uniform(0, 1, (3, 1, 1))
        img += rng.normal(0, 0.03, img.shape)
        out[i] = np.clip(img, 0, 1)
    return _normalise(out, mean, std)


def folder_images(folder: str, n: int, size: int, crop_pct: float = 0.875,
                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> np.ndarray:
    """Up to ``n`` images from ``folder`` (recursive, sorted), with the test transform.

    Each image is resized so its shorter side is ``size / crop_pct`` (bilinear), centre-cropped
    to ``size`` and normalised. Unreadable files are skipped; an error if none can be read.
    """
    from PIL import Image
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"calibration folder {folder!r} does not exist")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"calibration folder {folder!r} holds no images "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    short = int(round(size / crop_pct))
    images, bad = [], []
    for f in files:
        if len(images) == n:
            break
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = short / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                               Image.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
                images.append(np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0)
        except (OSError, ValueError):
            bad.append(f)
    if not images:
        raise ValueError(f"none of the {len(bad)} image files in {folder!r} could be read "
                         f"(first: {bad[0]!r})")
    return _normalise(np.stack(images), mean, std)


def calibration_images(net, calib: Union[str, np.ndarray], n: int = 64,
                       size: Optional[int] = None) -> np.ndarray:
    """Calibration batch for ``net``: ``'generated'``, an image folder, or an array."""
    size = _input_size(net, size)
    cfg = getattr(net, "default_cfg", None) or {}
    mean = cfg.get("mean", (0.485, 0.456, 0.406))
    std = cfg.get("std", (0.229, 0.224, 0.225))
    if isinstance(calib, np.ndarray):
        if calib.ndim != 4 or calib.shape[1] != 3:
            raise ValueError(f"calibration array must be (N, 3, H, W), got {calib.shape}")
        return calib.astype(np.float32)
    if not isinstance(calib, str):
        raise TypeError(f"calib must be 'generated', a folder or an array, got {calib!r}")
    if calib == "generated":
        return generated_images(n, size, mean, std)
    return folder_images(calib, n, size, cfg.get("crop_pct", 0.875), mean, std)


# -- INT8 --------------------------------------------------------------------------------------
def _quantize(net, calib: np.ndarray, exclude: List[str], calib_mode: str,
              batch_size: int) -> SymbolBlock:
    from mxnet.contrib.quantization import quantize_net_v2
    data = mx.io.NDArrayIter(data={"data": mx.nd.array(calib)},
                             batch_size=min(batch_size, len(calib)))
    return quantize_net_v2(net, quantized_dtype="auto", exclude_layers=exclude,
                           calib_data=data, calib_mode=calib_mode,
                           num_calib_examples=len(calib), ctx=mx.cpu())


def _rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(b ** 2)), 1e-12))


_GROUPED_OK: Dict[str, bool] = {}


def grouped_int8_ok() -> bool:
    """Whether MXNet's INT8 grouped convolution is accurate here (cached probe).

    Quantizes a 3x3 convolution with 2 groups (32 -> 64 channels) whose second group's
    weights are 3x larger than the first's, as BN folding makes them, and compares with
    FP32: accurate means < 5% relative RMS error (an ungrouped conv gets 1-2%). MXNet 1.9.1
    fails this (about 60% error in the second group: its output comes out scaled by the
    ratio of the groups' weight ranges), so Split-Attention's grouped convolutions are then
    split into dense ones (:func:`split_grouped_convs`) before quantization.
    """
    if "ok" not in _GROUPED_OK:
        rng = np.random.RandomState(0)
        net = mx.gluon.nn.HybridSequential()
        net.add(mx.gluon.nn.Conv2D(64, 3, padding=1, groups=2, in_channels=32, use_bias=False))
        net.initialize(ctx=mx.cpu())
        w = rng.uniform(-0.1, 0.1, (64, 16, 3, 3)).astype(np.float32)
        w[32:] *= 3.0
        net[0].weight.set_data(mx.nd.array(w))
        net.hybridize()
        x = np.maximum(rng.normal(size=(8, 32, 8, 8)), 0).astype(np.float32)
        ref = net(mx.nd.array(x)).asnumpy()
        q = _quantize(net, x, [], "naive", 8)
        _GROUPED_OK["ok"] = _rel_rms(q(mx.nd.array(x)).asnumpy(), ref) < 0.05
    return _GROUPED_OK["ok"]


def _sorted_graph(nodes: List[dict], heads: List[list], attrs: dict) -> Dict[str, Any]:
    """Graph JSON with the nodes reachable from ``heads`` in topological order."""
    index: Dict[int, int] = {}
    order: List[int] = []
    for head in heads:
        stack = [(head[0], False)]
        while stack:
            k, ready = stack.pop()
            if k in index:
                continue
            if ready:
                index[k] = len(order)
                order.append(k)
                continue
            stack.append((k, True))
            stack.extend((e[0], False) for e in reversed(nodes[k]["inputs"]) if e[0] not in index)
    out = [{**nodes[k], "inputs": [[index[e[0]], e[1], e[2]] for e in nodes[k]["inputs"]]}
           for k in order]
    return {"nodes": out, "arg_nodes": [i for i, n in enumerate(out) if n["op"] == "null"],
            "heads": [[index[h[0]], h[1], h[2]] for h in heads],
            "attrs": attrs}


def split_grouped_convs(prefix: str) -> int:
    """Rewrite an exported model so Split-Attention's grouped convolution becomes G dense ones.

    Pattern: ``conv(1 group) -> BN -> ReLU [-> Pooling] -> conv(G groups) -> BN -> ReLU`` with
    no other consumers. Group g of the grouped conv reads input channels ``[g*Ci, (g+1)*Ci)``
    only, so the producing 1x1 conv, its BN (and the pooling) split into G slices as well:
    each of the G branches is ``conv -> BN -> ReLU [-> pool] -> conv -> BN -> ReLU`` on
    sliced weights, and a ``Concat`` joins the G outputs (the same tensor U, exactly, in
    FP32). Same multiply-adds; no grouped convolution is left for INT8 (MXNet 1.9.1's INT8
    grouped convolution is wrong, see :func:`grouped_int8_ok`). Returns the number rewritten.
    """
    graph, params = _load_model(prefix)
    nodes: List[dict] = graph["nodes"]
    users: Dict[int, List[int]] = {}
    for i, node in enumerate(nodes):
        for e in node["inputs"]:
            users.setdefault(e[0], []).append(i)

    def sole_user(i: int, op: str) -> Optional[int]:
        u = users.get(i, [])
        return u[0] if len(u) == 1 and nodes[u[0]]["op"] == op else None

    def add(node: dict) -> list:
        nodes.append(node)
        return [len(nodes) - 1, 0, 0]

    def sliced(entry: list, lo: int, hi: int, g: int) -> list:
        """A new parameter node: rows lo:hi of the parameter (or aux state) ``entry``."""
        name = nodes[entry[0]]["name"]
        kind = "arg" if f"arg:{name}" in params else "aux"
        params[f"{kind}:{name}_g{g}"] = params[f"{kind}:{name}"][lo:hi].copy()
        return add({"op": "null", "name": f"{name}_g{g}", "inputs": []})

    def copy(i: int, data: list, g: int, lo: int, hi: int, **attrs: str) -> list:
        node = nodes[i]
        inputs = [data] + [sliced(e, lo, hi, g) for e in node["inputs"][1:]]
        return add({"op": node["op"], "name": f"{node['name']}_g{g}",
                    "attrs": {**node.get("attrs", {}), **attrs}, "inputs": inputs})

    def producer(i: int, op: str) -> Optional[int]:
        """The node feeding ``i``, if it is an ``op`` whose only user is ``i``."""
        j = nodes[i]["inputs"][0][0] if nodes[i]["inputs"] else None
        return j if j is not None and nodes[j]["op"] == op and len(users[j]) == 1 else None

    redirect: Dict[int, list] = {}
    for i in range(len(nodes)):
        conv = nodes[i]
        groups = int(conv.get("attrs", {}).get("num_group", 1))
        if conv["op"] != "Convolution" or groups == 1:
            continue
        pools, relu1 = [], producer(i, "Activation")
        j = i
        while relu1 is None and producer(j, "Pooling") is not None:
            j = producer(j, "Pooling")
            pools.append(j)
            relu1 = producer(j, "Activation")
        bn1 = producer(relu1, "BatchNorm") if relu1 is not None else None
        conv1 = producer(bn1, "Convolution") if bn1 is not None else None
        bn2 = sole_user(i, "BatchNorm")
        relu2 = sole_user(bn2, "Activation") if bn2 is not None else None
        if conv1 is None or relu2 is None or int(nodes[conv1]["attrs"].get("num_group", 1)) != 1:
            continue
        c_in = int(nodes[conv1]["attrs"]["num_filter"]) // groups
        c_out = int(conv["attrs"]["num_filter"]) // groups
        parts = []
        for g in range(groups):
            lo, hi = g * c_in, (g + 1) * c_in
            x = copy(conv1, nodes[conv1]["inputs"][0], g, lo, hi, num_filter=str(c_in))
            x = copy(bn1, x, g, lo, hi)
            x = copy(relu1, x, g, lo, hi)
            for p in reversed(pools):
                x = copy(p, x, g, lo, hi)
            lo, hi = g * c_out, (g + 1) * c_out
            x = copy(i, x, g, lo, hi, num_filter=str(c_out), num_group="1")
            x = copy(bn2, x, g, lo, hi)
            parts.append(copy(relu2, x, g, lo, hi))
        redirect[relu2] = add({"op": "Concat", "name": f"{nodes[relu2]['name']}_concat",
                               "attrs": {"dim": "1", "num_args": str(groups)}, "inputs": parts})
    if not redirect:
        return 0
    for node in nodes:
        node["inputs"] = [redirect.get(e[0], e) for e in node["inputs"]]
    heads = [redirect.get(h[0], h) for h in graph["heads"]]
    _save_model(prefix, _sorted_graph(nodes, heads, graph.get("attrs", {})), params)
    return len(redirect)


#: Split-Attention's GAP and attention MLP (fc1, fc2), kept FP32.
_ATTENTION = re.compile(r"splitattention\d+_(pooling0|conv[12])(_|$)")


def _fp32_layers(sym: mx.sym.Symbol, keep_grouped: bool) -> List[str]:
    """Names (after oneDNN fusion) of the layers kept in FP32: Split-Attention's GAP and MLP,
    and every grouped convolution when ``keep_grouped``."""
    fused = sym.get_backend_symbol("MKLDNN_QUANTIZE")
    names = []
    for node in json.loads(fused.tojson())["nodes"]:
        if node["op"] == "null":
            continue
        inner = node["subgraphs"][0]["nodes"] if node.get("subgraphs") else [node]
        grouped = any(m["op"] == "Convolution" and int(m.get("attrs", {}).get("num_group", 1)) > 1
                      for m in inner)
        if any(_ATTENTION.search(m["name"]) for m in inner) or (keep_grouped and grouped):
            names.append(node["name"])
    return names


def graph_transitions(block_or_sym) -> Dict[str, int]:
    """Counts of int8<->fp32 conversion nodes (quantize, dequantize, requantize) and of
    INT8 compute nodes in a quantized graph (a SymbolBlock or Symbol)."""
    sym = block_or_sym
    if isinstance(block_or_sym, SymbolBlock):
        sym = block_or_sym._cached_graph[1]
    nodes = [n for n in json.loads(sym.tojson())["nodes"] if n["op"] != "null"]
    ops = [n["op"] for n in nodes]
    int8 = sum(1 for n in nodes if n["op"].startswith("_contrib_quantized_")
               or (n["op"].startswith("_sg_mkldnn_") and n["name"].startswith("quantized_")))
    return {"quantize": ops.count("_contrib_quantize_v2") + ops.count("_contrib_quantize"),
            "dequantize": ops.count("_contrib_dequantize"),
            "requantize": ops.count("_contrib_requantize"),
            "int8_ops": int8, "ops": len(nodes)}


SUM_FUSION_VAR = "MXNET_DISABLE_MKLDNN_FUSE_CONV_SUM"


def _quantize_prefix(prefix: str, images: np.ndarray, out: str, calib_mode: str,
                     exclude: Sequence[str], batch_size: int) -> Dict[str, Any]:
    """Quantize the exported FP32 model ``prefix`` into ``out`` (this process)."""
    keep_grouped = not grouped_int8_ok()
    split = split_grouped_convs(prefix) if keep_grouped else 0
    sym, _, _ = mx.model.load_checkpoint(prefix, 0)
    layers = _fp32_layers(sym, keep_grouped) + list(exclude)
    fp32 = load_symbol(prefix)
    fp32.hybridize(static_alloc=True, static_shape=True)
    q = _quantize(fp32, images, layers, calib_mode, batch_size)
    q.hybridize(static_alloc=True, static_shape=True)
    q(mx.nd.array(images[:1]))
    q.export(out, 0)
    left = sum(1 for n in json.loads(sym.tojson())["nodes"]
               if n["op"] == "Convolution" and int(n["attrs"].get("num_group", 1)) > 1
               and not _ATTENTION.search(n["name"]))
    return {"fp32_layers": layers, "grouped_conv_split": split,
            "grouped_conv_fp32": left if keep_grouped else 0}


def _child(job_file: str) -> None:
    """Entry of the quantization subprocess (``python -m gluon_resnest.deploy.export JOB``)."""
    job = json.load(open(job_file))
    info = _quantize_prefix(job["prefix"], np.load(job["images"]), job["out"],
                            job["calib_mode"], job["exclude"], job["batch_size"])
    json.dump(info, open(job["info"], "w"))


def quantize_int8(net: HybridBlock, calib: Union[str, np.ndarray] = "generated",
                  num_calib: int = 64, size: Optional[int] = None, calib_mode: str = "naive",
                  exclude: Sequence[str] = (), batch_size: int = 16) -> SymbolBlock:
    """INT8 model of ``net`` with MXNet's oneDNN quantization flow (``quantize_net_v2``).

    ``calib``: ``'generated'`` (default, :func:`generated_images`), an image folder
    (:func:`folder_images`, the variant's test transform) or an (N, 3, H, W) array;
    ``num_calib`` images at ``size`` (default: the variant's input size) are used.
    ``calib_mode``: ``'naive'`` (min/max) or ``'entropy'`` (KL). ``exclude``: more layer names
    (after oneDNN fusion) to keep in FP32. Returns a SymbolBlock with input ``data``;
    ``block.int8_info`` records what stayed FP32 and how many grouped convolutions were split.

    MXNet reads ``MXNET_DISABLE_MKLDNN_FUSE_CONV_SUM`` once, when it is imported. Unless it
    was ``1`` then, the quantization runs in a subprocess that has it (a few seconds more);
    the resulting graph runs correctly in any process.
    """
    import subprocess
    import sys
    _check_block(net)
    if calib_mode not in ("naive", "entropy"):
        raise ValueError(f"calib_mode must be 'naive' or 'entropy', got {calib_mode!r}")
    if _param_ctx(net).device_type != "cpu":
        raise ValueError("INT8 quantization runs on the CPU: keep the model on mx.cpu()")
    images = calibration_images(net, calib, num_calib, size)
    with tempfile.TemporaryDirectory() as tmp:
        prefix, out = os.path.join(tmp, "fp32"), os.path.join(tmp, "int8")
        export_symbol(net, prefix, images.shape[-1])
        if os.environ.get(SUM_FUSION_VAR) == "1":
            info = _quantize_prefix(prefix, images, out, calib_mode, exclude, batch_size)
        else:
            job = {"prefix": prefix, "images": os.path.join(tmp, "calib.npy"), "out": out,
                   "calib_mode": calib_mode, "exclude": list(exclude),
                   "batch_size": batch_size, "info": os.path.join(tmp, "info.json")}
            np.save(job["images"], images)
            json.dump(job, open(os.path.join(tmp, "job.json"), "w"))
            run = subprocess.run([sys.executable, "-m", "gluon_resnest.deploy.export",
                                  os.path.join(tmp, "job.json")],
                                 env={**os.environ, SUM_FUSION_VAR: "1"},
                                 capture_output=True, text=True)
            if run.returncode != 0:
                tail = "\n".join(run.stderr.strip().splitlines()[-5:])
                raise RuntimeError(f"INT8 quantization subprocess failed:\n{tail}")
            info = json.load(open(job["info"]))
        qnet = load_symbol(out)
    qnet.int8_info = {**info, "calibration": calib if isinstance(calib, str) else "array",
                      "num_calib": int(len(images)), "calib_mode": calib_mode}
    return qnet


# -- BF16 --------------------------------------------------------------------------------------
_BF16: Dict[str, Tuple[bool, str]] = {}


def _cpu_flags() -> List[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def bf16_support() -> Tuple[bool, str]:
    """(supported, reason): whether MXNet's oneDNN runs bfloat16 convolutions on this CPU.

    MXNet 1.9.1 is built with oneDNN (``mx.runtime.Features()['MKLDNN']``), whose bf16 kernels
    need AVX-512 (native with avx512_bf16 / AMX, emulated on avx512_core). Decided by a probe:
    a tiny bfloat16 convolution.
    """
    if "r" not in _BF16:
        flags = [f for f in _cpu_flags() if f.startswith(("avx512", "amx"))]
        features = mx.runtime.Features()
        if not features.is_enabled("MKLDNN"):
            _BF16["r"] = (False, "this MXNet build has no oneDNN (MKLDNN feature off)")
        else:
            from mxnet.contrib import amp
            try:
                x = mx.nd.ones((1, 4, 6, 6)).astype(amp.amp.bfloat16)
                w = mx.nd.ones((4, 4, 3, 3)).astype(amp.amp.bfloat16)
                y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True)
                ok = float(y.astype("float32").asnumpy()[0, 0, 2, 2]) == 36.0
                _BF16["r"] = (ok, "oneDNN bfloat16 convolution works" if ok else
                              "oneDNN bfloat16 convolution gave a wrong result")
            except MXNetError as err:
                _BF16["r"] = (False, "oneDNN has no bfloat16 convolution on this CPU ("
                              + str(err).splitlines()[0][:120] + "); AVX-512 flags: "
                              + (", ".join(flags) or "none"))
    return _BF16["r"]


def convert_bf16(net: HybridBlock, size: Optional[int] = None) -> SymbolBlock:
    """BF16 mixed-precision model of ``net`` (MXNet AMP, ``target_dtype='bfloat16'``).

    Convolutions and dense layers run in bfloat16, numerically sensitive ops (softmax, BN
    statistics) stay FP32 per AMP's lists; input and output are float32.
    Raises :class:`UnsupportedOnThisCPU` where oneDNN has no bf16 kernels.
    """
    ok, reason = bf16_support()
    if not ok:
        raise UnsupportedOnThisCPU(f"BF16 is not available here: {reason}")
    from mxnet.contrib import amp
    _check_block(net)
    size = _input_size(net, size)
    with tempfile.TemporaryDirectory() as tmp:
        export_symbol(net, os.path.join(tmp, "m"), size)
        fp32 = SymbolBlock.imports(os.path.join(tmp, "m-symbol.json"), ["data"],
                                   os.path.join(tmp, "m-0000.params"), ctx=mx.cpu())
    fp32.hybridize()
    fp32(mx.nd.zeros((1, 3, size, size)))
    return amp.convert_hybrid_block(fp32, target_dtype="bfloat16", ctx=mx.cpu(),
                                    cast_optional_params=True)


def describe(info: Dict[str, Any]) -> str:
    """One line for ``int8_info``."""
    return (f"calibration: {info['calibration']} ({info['num_calib']} images, "
            f"{info['calib_mode']}); FP32 layers: {len(info['fp32_layers'])}"
            + (f"; {info['grouped_conv_split']} grouped convolutions split into dense ones "
               "(MXNet's INT8 grouped conv is inaccurate)" if info["grouped_conv_split"] else "")
            + (f"; {info['grouped_conv_fp32']} grouped convolutions kept FP32"
               if info["grouped_conv_fp32"] else ""))


if __name__ == "__main__":  # the quantization subprocess, see quantize_int8
    import sys
    _child(sys.argv[1])
