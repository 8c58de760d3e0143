"""INT8: MXNet's oneDNN quantization flow, calibrated on the model's own preprocessing.

:func:`quantize_int8` runs ``quantize_net_v2`` with calibration on images from a folder
(read with the model's :class:`~gluon_resnest.data.transforms.EvalTransform`: its size, crop,
interpolation, mean and std), on a generated set, or on an array. Two MXNet 1.9.1 defects are
worked around: oneDNN's conv+sum fusion gets its calibrated range wrong in ResNeSt's bottleneck
(output clipped to about half), so quantization runs with that fusion disabled
(``MXNET_DISABLE_MKLDNN_FUSE_CONV_SUM=1``, in a subprocess when needed); and INT8 grouped
convolutions are wrong when the groups' weight ranges differ (group g's output comes out scaled
by about its range over group 0's: 15-60% errors). When a small probe (:func:`grouped_int8_ok`)
finds that defect, :func:`split_grouped_convs` first rewrites each Split-Attention grouped
convolution, exactly, into G dense ones, so every convolution runs in INT8. The attention MLP
(fc1/fc2 on 1x1 maps) stays FP32: it costs almost nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Set, Union

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, SymbolBlock

from ..data.transforms import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    EvalTransform,
    list_images,
    read_image,
)
from ..model.resnest import _param_ctx
from .symbol import check_block, export_symbol, input_size, load_symbol, read_graph, write_graph

__all__ = ["generated_images", "folder_images", "calibration_images", "quantize_int8",
           "graph_transitions", "grouped_int8_ok", "split_grouped_convs", "describe"]


# -- calibration images ----------------------------------------------------------------------
def generated_images(n: int, size: int, mean: Sequence[float], std: Sequence[float],
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
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return ((out - m) / s).astype(np.float32)



def folder_images(folder: str, n: int, transform: EvalTransform) -> np.ndarray:
    """Up to ``n`` images from ``folder`` (recursive; evenly spaced through the sorted list),
    preprocessed with ``transform`` (the model's evaluation transform). Unreadable files are
    skipped; an error if none can be read."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"calibration folder {folder!r} does not exist")
    files = list_images(folder)
    if not files:
        raise ValueError(f"calibration folder {folder!r} holds no images "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    # evenly spaced through the sorted list, so a folder of class sub-folders contributes
    # every class (the first n files would all be the first class); the rest replace
    # unreadable ones
    first = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
    order = list(first) + sorted(set(range(len(files))) - set(first.tolist()))
    images, bad = [], []
    for f in (files[i] for i in order):
        if len(images) == n:
            break
        try:
            images.append(transform(read_image(f)))
        except CorruptImageError:
            bad.append(f)
    if not images:
        raise ValueError(f"none of the {len(bad)} image files in {folder!r} could be read "
                         f"(first: {bad[0]!r})")
    return np.stack(images)


def calibration_images(calib: Union[str, np.ndarray], n: int,
                       transform: EvalTransform) -> np.ndarray:
    """Calibration batch: ``'generated'`` (at ``transform``'s size, mean and std), an image
    folder (read with ``transform``), or an (N, 3, H, W) array (used as it is)."""
    if isinstance(calib, np.ndarray):
        if calib.ndim != 4 or calib.shape[1] != 3:
            raise ValueError(f"calibration array must be (N, 3, H, W), got {calib.shape}")
        return calib.astype(np.float32)
    if not isinstance(calib, str):
        raise TypeError(f"calib must be 'generated', a folder or an array, got {calib!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of calibration images must be a positive int, got {n!r}")
    if calib == "generated":
        return generated_images(n, transform.size, transform.mean, transform.std)
    return folder_images(calib, n, transform)


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
    graph, params = read_graph(prefix)
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
    write_graph(prefix, _sorted_graph(nodes, heads, graph.get("attrs", {})), params)
    return len(redirect)


#: Where Split-Attention's attention MLP ends: the r-softmax (R > 1) or the sigmoid (R = 1).
_ATTENTION_END = ("softmax", "sigmoid", "SoftmaxActivation")


def _attention_nodes(sym: mx.sym.Symbol) -> Set[str]:
    """Names of Split-Attention's GAP and attention MLP (fc1, fc2) in an FP32 graph, found by
    structure, not by MXNet's generated names: a global pooling whose output reaches
    convolutions before the attention's softmax/sigmoid (the head's pooling feeds none)."""
    nodes = json.loads(sym.tojson())["nodes"]
    consumers: Dict[int, List[int]] = {}
    for i, node in enumerate(nodes):
        for src in node.get("inputs", []):
            consumers.setdefault(src[0], []).append(i)
    found: Set[str] = set()
    for i, node in enumerate(nodes):
        if node["op"] != "Pooling" or node.get("attrs", {}).get("global_pool") != "True":
            continue
        convs, frontier, seen, ended = [], list(consumers.get(i, [])), set(), False
        while frontier:
            j = frontier.pop()
            if j in seen:
                continue
            seen.add(j)
            if nodes[j]["op"] in _ATTENTION_END:
                ended = True
                continue
            if nodes[j]["op"] == "Convolution":
                convs.append(nodes[j]["name"])
            frontier += consumers.get(j, [])
        if convs and ended:
            found.update([node["name"], *convs])
    return found


def _fp32_layers(sym: mx.sym.Symbol, keep_grouped: bool) -> List[str]:
    """Names (after oneDNN fusion) of the layers kept in FP32: Split-Attention's GAP and MLP,
    and every grouped convolution when ``keep_grouped``."""
    attention = _attention_nodes(sym)
    fused = sym.get_backend_symbol("MKLDNN_QUANTIZE")
    names = []
    for node in json.loads(fused.tojson())["nodes"]:
        if node["op"] == "null":
            continue
        inner = node["subgraphs"][0]["nodes"] if node.get("subgraphs") else [node]
        grouped = any(m["op"] == "Convolution" and int(m.get("attrs", {}).get("num_group", 1)) > 1
                      for m in inner)
        if any(m["name"] in attention for m in inner) or (keep_grouped and grouped):
            names.append(node["name"])
    return names


def graph_transitions(block_or_sym) -> Dict[str, int]:
    """Counts of int8<->fp32 conversion nodes (quantize, dequantize, requantize) and of
    INT8 compute nodes in a quantized graph (a SymbolBlock or Symbol)."""
    sym = block_or_sym
    if isinstance(block_or_sym, SymbolBlock):
        sym = block_or_sym(mx.sym.var("data"))    # the block's graph, as a Symbol
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
    attention = _attention_nodes(sym)
    left = sum(1 for n in json.loads(sym.tojson())["nodes"]
               if n["op"] == "Convolution" and int(n["attrs"].get("num_group", 1)) > 1
               and n["name"] not in attention)
    return {"fp32_layers": layers, "grouped_conv_split": split,
            "grouped_conv_fp32": left if keep_grouped else 0}


def _child(job_file: str) -> None:
    """Entry of the quantization subprocess (``python -m gluon_resnest.deploy.int8 JOB``)."""
    job = json.load(open(job_file))
    info = _quantize_prefix(job["prefix"], np.load(job["images"]), job["out"],
                            job["calib_mode"], job["exclude"], job["batch_size"])
    json.dump(info, open(job["info"], "w"))


def _calibration_transform(net, transform: Optional[EvalTransform],
                           size: Optional[int]) -> Optional[EvalTransform]:
    if transform is None and getattr(net, "default_cfg", None):
        transform = EvalTransform.from_default_cfg(net.default_cfg)
    if transform is not None:
        transform = replace(transform, size=input_size(net, size or transform.size))
    return transform


def quantize_int8(net: HybridBlock, calib: Union[str, np.ndarray] = "generated",
                  num_calib: int = 64, size: Optional[int] = None, calib_mode: str = "naive",
                  exclude: Sequence[str] = (), batch_size: int = 16,
                  transform: Optional[EvalTransform] = None) -> SymbolBlock:
    """INT8 model of ``net`` with MXNet's oneDNN quantization flow (``quantize_net_v2``).

    ``calib``: ``'generated'`` (default, :func:`generated_images`), an image folder
    (:func:`folder_images`) or an (N, 3, H, W) array; ``num_calib`` images are used.
    ``transform``: the model's evaluation transform (default: the variant's, from
    ``net.default_cfg``); ``size`` overrides its size.
    ``calib_mode``: ``'naive'`` (min/max) or ``'entropy'`` (KL). ``exclude``: more layer names
    (after oneDNN fusion) to keep in FP32. Returns a SymbolBlock with input ``data``;
    ``block.int8_info`` records what stayed FP32 and how many grouped convolutions were split.

    MXNet reads ``MXNET_DISABLE_MKLDNN_FUSE_CONV_SUM`` once, when it is imported. Unless it
    was ``1`` then, the quantization runs in a subprocess that has it (a few seconds more);
    the resulting graph runs correctly in any process.
    """
    check_block(net)
    if calib_mode not in ("naive", "entropy"):
        raise ValueError(f"calib_mode must be 'naive' or 'entropy', got {calib_mode!r}")
    if _param_ctx(net).device_type != "cpu":
        raise ValueError("INT8 quantization runs on the CPU: keep the model on mx.cpu()")
    transform = _calibration_transform(net, transform, size)
    if transform is None and not isinstance(calib, np.ndarray):
        raise ValueError("calibration images need the model's preprocessing: pass transform= "
                         "(an EvalTransform; this network has no default_cfg)")
    images = calibration_images(calib, num_calib, transform)
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
            run = subprocess.run([sys.executable, "-m", "gluon_resnest.deploy.int8",
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


def describe(info: Dict[str, Any]) -> str:
    """One line for ``int8_info``."""
    return (f"calibration: {info['calibration']} ({info['num_calib']} images, "
            f"{info['calib_mode']}); FP32 layers: {len(info['fp32_layers'])}"
            + (f"; {info['grouped_conv_split']} grouped convolutions split into dense ones "
               "(MXNet's INT8 grouped conv is inaccurate)" if info["grouped_conv_split"] else "")
            + (f"; {info['grouped_conv_fp32']} grouped convolutions kept FP32"
               if info["grouped_conv_fp32"] else ""))


if __name__ == "__main__":  # the quantization subprocess, see quantize_int8
    _child(sys.argv[1])
