"""Parameter and multiply-add counts, per network and per stage.

Multiply-adds (MACs) count one per multiply-accumulate of convolutions and fully connected
layers with learned weights, as the ResNeSt paper's "GFLOPs" column does; BN, ReLU, pooling
(also the average pooling that runs as a constant-weight convolution) and the attention's
elementwise ops are not counted. Counts are per image.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional

import mxnet as mx
import numpy as np

from .._compat.mxnet_blocks import structural_params
from .resnest import STAGE_BLOCKS, STEM_BLOCKS, StageFeatures

__all__ = ["check_size", "count_params", "count_macs", "stage_summary", "format_summary"]

_STAGES = ("stem",) + STAGE_BLOCKS + ("head",)


def _stage_of_key(key: str) -> str:
    head = key.split(".", 1)[0]
    return head if head.startswith("layer") else ("head" if head in ("fc",) else "stem")


def count_params(net: mx.gluon.Block, by_stage: bool = False):
    """Learnable parameters (BN running statistics excluded). Needs known shapes."""
    totals: Dict[str, int] = dict.fromkeys(_STAGES, 0)
    for key, p in structural_params(net).items():
        if key.endswith(("running_mean", "running_var")):
            continue
        if p.shape is None or 0 in p.shape:
            raise ValueError(f"parameter {key} has unknown shape {p.shape}; run one forward "
                             f"or pass in_channels")
        totals[_stage_of_key(key)] = totals.get(_stage_of_key(key), 0) + int(np.prod(p.shape))
    return totals if by_stage else sum(totals.values())


def _symbol(net: mx.gluon.HybridBlock) -> mx.sym.Symbol:
    with mx.autograd.predict_mode():
        out = net(mx.sym.var("data"))
    return out[0] if isinstance(out, (list, tuple)) else out


def _macs(sym: mx.sym.Symbol, h: int, w: int) -> int:
    """Multiply-adds of the convolutions and fully connected layers in the graph ``sym``."""
    internals = sym.get_internals()
    arg_shapes, out_shapes, _ = internals.infer_shape(data=(1, 3, h, w))
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    shapes.update(zip(internals.list_arguments(), arg_shapes))
    nodes = json.loads(sym.tojson())["nodes"]
    total = 0
    for node in nodes:
        if node["op"] not in ("Convolution", "FullyConnected"):
            continue
        weight = nodes[node["inputs"][1][0]]
        if weight["op"] != "null":  # constant-weight box filters (avd pooling, DropBlock)
            continue
        wshape = shapes[weight["name"]]
        if node["op"] == "Convolution":
            total += int(np.prod(shapes[node["name"] + "_output"][1:])) * int(np.prod(wshape[1:]))
        else:
            total += int(np.prod(wshape))
    return total


def check_size(net: mx.gluon.Block, input_size) -> None:
    """Raise ValueError unless ``input_size`` (an int or (H, W)) is a positive int at least
    the network's total stride (smaller inputs fail inside MXNet's pooling)."""
    sizes = (input_size,) if isinstance(input_size, int) else tuple(input_size)
    for s in sizes:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1:
            raise ValueError(f"input size must be a positive int, got {input_size!r}")
    minimum = getattr(net, "min_input_size", 1)
    if min(sizes) < minimum:
        raise ValueError(f"input size {input_size} is smaller than the network's total stride "
                         f"{minimum}: use a size >= {minimum}")


def count_macs(net: mx.gluon.HybridBlock, input_size=224, by_stage: bool = False):
    """Multiply-adds of one (3, H, W) image through ``net`` (conv + fully connected).

    ``by_stage`` (a ResNeSt): per stage, from the graphs that end after the stem and after
    each stage (the blocks named in ``STEM_BLOCKS``/``STAGE_BLOCKS``), the head being the rest.
    """
    check_size(net, input_size)
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    total = _macs(_symbol(net), h, w)
    if not by_stage:
        return total
    cumulative = []
    x = mx.sym.var("data")
    with mx.autograd.predict_mode():
        for name in STEM_BLOCKS:
            x = getattr(net, name)(x)
        cumulative.append(_macs(x, h, w))
        for name in STAGE_BLOCKS:
            x = getattr(net, name)(x)
            cumulative.append(_macs(x, h, w))
    cumulative.append(total)
    return {stage: cumulative[i] - (cumulative[i - 1] if i else 0)
            for i, stage in enumerate(_STAGES)}


def stage_summary(net, input_size: int = 224) -> List[dict]:
    """Rows (stage, output shape, params, MACs) for a ResNeSt at ``input_size``."""
    check_size(net, input_size)
    params = count_params(net, by_stage=True)
    macs = count_macs(net, input_size, by_stage=True)
    feats = StageFeatures(net)
    sym = mx.sym.Group(list(feats(mx.sym.var("data"))))
    _, out_shapes, _ = sym.infer_shape(data=(1, 3, input_size, input_size))
    stem_hw = ((input_size + 1) // 2 + 1) // 2  # stride-2 conv, then stride-2 max pool
    shapes: Dict[str, Optional[tuple]] = {"stem": (net.bn1.gamma.shape[0], stem_hw, stem_hw),
                                          "head": (net.num_classes,)}
    for i, s in enumerate(out_shapes):
        shapes[f"layer{i + 1}"] = tuple(s[1:])
    return [{"stage": k, "output": shapes[k], "params": params[k], "macs": macs[k]}
            for k in _STAGES]


def format_summary(rows: List[dict]) -> str:
    lines = [f"{'stage':<8} {'output (C, H, W)':<20} {'params':>12} {'GMACs':>8}"]
    for r in rows:
        lines.append(f"{r['stage']:<8} {str(r['output']):<20} {r['params'] / 1e6:>11.3f}M "
                     f"{r['macs'] / 1e9:>8.3f}")
    tot_p = sum(r["params"] for r in rows)
    tot_m = sum(r["macs"] for r in rows)
    lines.append(f"{'total':<8} {'':<20} {tot_p / 1e6:>11.3f}M {tot_m / 1e9:>8.3f}")
    return "\n".join(lines)
