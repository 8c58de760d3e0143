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

__all__ = ["count_params", "count_macs", "stage_summary", "format_summary"]

_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")


def _stage_of_key(key: str) -> str:
    head = key.split(".", 1)[0]
    return head if head.startswith("layer") else ("head" if head in ("fc",) else "stem")


def count_params(net: mx.gluon.Block, by_stage: bool = False):
    """Learnable parameters (BN running statistics excluded). Needs known shapes."""
    totals: Dict[str, int] = dict.fromkeys(_STAGES, 0)
    for key, p in net._collect_params_with_prefix().items():
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


def _stage_of_node(name: str) -> str:
    for i in range(1, 5):
        if f"_layers{i}_" in name:
            return f"layer{i}"
    return "head" if "dense" in name else "stem"


def count_macs(net: mx.gluon.HybridBlock, input_size=224, by_stage: bool = False):
    """Multiply-adds of one (3, H, W) image through ``net`` (conv + fully connected)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    sym = _symbol(net)
    internals = sym.get_internals()
    arg_shapes, out_shapes, _ = internals.infer_shape(data=(1, 3, h, w))
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    shapes.update(zip(internals.list_arguments(), arg_shapes))
    nodes = json.loads(sym.tojson())["nodes"]
    totals: Dict[str, int] = dict.fromkeys(_STAGES, 0)
    for node in nodes:
        if node["op"] not in ("Convolution", "FullyConnected"):
            continue
        weight = nodes[node["inputs"][1][0]]
        if weight["op"] != "null":  # constant-weight box filters (avd pooling, DropBlock)
            continue
        wshape = shapes[weight["name"]]
        out = shapes[node["name"] + "_output"]
        if node["op"] == "Convolution":
            macs = int(np.prod(out[1:])) * int(np.prod(wshape[1:]))
        else:
            macs = int(np.prod(wshape))
        totals[_stage_of_node(node["name"])] += macs
    return totals if by_stage else sum(totals.values())


def stage_summary(net, input_size: int = 224) -> List[dict]:
    """Rows (stage, output shape, params, MACs) for a ResNeSt at ``input_size``."""
    from .resnest import StageFeatures
    params = count_params(net, by_stage=True)
    macs = count_macs(net, input_size, by_stage=True)
    feats = StageFeatures(net)
    sym = mx.sym.Group(list(feats(mx.sym.var("data"))))
    _, out_shapes, _ = sym.infer_shape(data=(1, 3, input_size, input_size))
    stem_hw = ((input_size + 1) // 2 + 1) // 2  # stride-2 conv, then stride-2 max pool
    shapes: Dict[str, Optional[tuple]] = {"stem": (net.conv1[6]._channels, stem_hw, stem_hw),
                                          "head": (net.classes,)}
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
