"""``gluon-resnest list``, ``summary`` and ``run``: the variants, and GluonCV scripts with them."""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import warnings

from .. import integrations
from ..dense.registry import DENSE_MODELS, parse_dense_name
from ..model import profile
from ..model.resnest import build
from ..model.variants import ALIASES, VARIANTS, resolve_name


def _check_size_arg(size) -> None:
    """--size, checked before any network is built (the stride check follows per network)."""
    if size is not None and size < 1:
        raise ValueError(f"--size must be a positive int (pixels), got {size}")


def _cmd_list(args: argparse.Namespace) -> int:
    _check_size_arg(args.size)
    print(f"{'model':<26} {'params':>9} {'GMACs':>7} {'input':>6}  notes")
    for name, spec in VARIANTS.items():
        net = build(name)
        size = spec.input_size if args.size is None else args.size
        macs = profile.count_macs(net, size) / 1e9
        notes = [f"paper: {spec.paper}"] if spec.paper else []
        notes += [f"alias: {a}" for a, t in ALIASES.items() if t == name]
        print(f"{name:<26} {profile.count_params(net) / 1e6:>8.2f}M {macs:>7.2f} {size:>6}  "
              + ", ".join(notes))
    print("\ndetection and segmentation (GluonCV's get_model names; `summary NAME` for one):")
    print(f"{'model':<42} {'arch':<22} {'norm':<7} {'backbone':<11} dataset")
    for name in DENSE_MODELS:
        spec = parse_dense_name(name)
        print(f"{name:<42} {spec['arch']:<22} {spec.get('norm', '-'):<7} {spec['backbone']:<11} "
              f"{spec['dataset']}")
    return 0


def _dense_summary(name: str) -> int:
    """Parts and parameter counts of a detector (built with random weights, sizes settled by
    one forward pass at 128 px), and a cascade's stage settings."""
    import mxnet as mx

    from ..dense.registry import get_dense_model
    spec = parse_dense_name(name)
    if spec["arch"] == "deeplab":
        raise ValueError(f"summary shows detectors and variants; {name!r} is a segmentation model")
    with warnings.catch_warnings():          # MXNet's notes on GluonCV's graphs
        warnings.simplefilter("ignore")
        net = get_dense_model(name, pretrained_base=False)
        net.initialize()
        net(mx.nd.zeros((1, 3, 128, 128)))
    used = {id(p): int(p.data().size) for n, p in net.collect_params().items()
            if not n.endswith("anchor_")}          # the RPN's anchors: constants, not weights

    def count(blocks) -> int:
        return sum(used.get(i, 0) for i in {id(p) for b in blocks
                                            for p in b.collect_params().values()})
    backbone = net.backbone
    total = sum(used.values())
    heads = [("box head", [net.box_features, net.class_predictor, net.box_predictor])]
    stages = getattr(net, "stage_iou", None)
    if stages:
        heads = [(f"stage {t + 1} head: IoU {iou}, stds {std}, weight {w}",
                  [net._stage(t)[0], net._stage(t)[1], net._stage(t)[2]])
                 for t, (iou, std, w) in enumerate(zip(stages, net.stage_stds, net.stage_weights))]
    rows = [("backbone " + net.base_network_name, count([backbone])),
            ("FPN", count([net.features]) - count([backbone])), ("RPN", count([net.rpn]))]
    rows += [(label, count(blocks)) for label, blocks in heads]
    if hasattr(net, "mask"):
        rows.append(("mask head", count([net.mask])))
    print(f"{name}: {spec['arch']}, norm {spec['norm']}, {len(net.classes)} classes "
          f"({spec['dataset']}), short side {net.short}, long side <= {net.max_size}")
    for label, n in rows:
        print(f"  {label:<68} {n / 1e6:>7.2f}M")
    print(f"  {'total':<68} {total / 1e6:>7.2f}M")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    _check_size_arg(args.size)
    if isinstance(args.model, str) and args.model.lower() in DENSE_MODELS:
        return _dense_summary(args.model.lower())
    name = resolve_name(args.model)
    size = VARIANTS[name].input_size if args.size is None else args.size
    rows = profile.stage_summary(build(name), size)     # checks size against the stride
    print(f"{name} at {size}x{size} (multiply-adds per image)")
    print(profile.format_summary(rows))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Run an unmodified script with gluon_resnest registered in GluonCV's zoo.

    Only the launcher's own errors are reported here (one line, status 2); the script's
    exceptions and ``SystemExit`` pass through unchanged (traceback, exit status), as with
    ``python SCRIPT``.
    """
    script = args.script
    if not os.path.isfile(script):
        print(f"gluon-resnest run: error: script {script!r} does not exist (or is not a file)",
              file=sys.stderr)
        return 2
    integrations.register()
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script] + list(args.script_args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("list", help="every registered model with params, GMACs, input size")
    p.add_argument("--size", type=int, default=None, help="count at this resolution instead")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("summary", help="per-stage table: output shape, params, multiply-adds")
    p.add_argument("model", help="variant name, e.g. resnest50, or a detector name, e.g. "
                                 "cascade_rcnn_fpn_syncbn_resnest50_coco")
    p.add_argument("--size", type=int, default=None, help="input resolution (default: model's)")
    p.set_defaults(func=_cmd_summary)
    p = sub.add_parser("run", help="run a Python script (e.g. a GluonCV training script) "
                                   "with the gluon_resnest models registered")
    p.add_argument("script", help="path of the script")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=_cmd_run, passthrough=True)
