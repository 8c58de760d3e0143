"""``gluon-resnest export`` and ``gluon-resnest convert`` (registered by cli.py)."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ..weights.pytorch import MissingExtraError

EXAMPLES = """examples:
  gluon-resnest convert --arch resnest50d resnest50d.pth resnest50.params
  gluon-resnest export resnest50 --params resnest50.params --format onnx --out resnest50
  gluon-resnest export resnest50 --params resnest50.params --int8 --calib val_images/
  gluon-resnest export run/export/model --format onnx       (a prefix written by train)
"""


def _load_model(args):
    """(block, name, size) for the MODEL argument: a variant with weights, or a prefix."""
    import mxnet as mx

    from ..deploy.export import load_symbol
    from ..model.resnest import build
    from ..model.variants import ALIASES, VARIANTS, resolve_name
    is_variant = args.model.lower() in VARIANTS or args.model.lower() in ALIASES
    if not is_variant and os.path.isfile(f"{args.model}-symbol.json"):
        if args.params or args.pretrained or args.random:
            raise ValueError("--params/--pretrained/--random apply to a variant name, not to an "
                             "exported prefix")
        block = load_symbol(args.model)
        return block, os.path.basename(args.model), args.size or 224
    name = resolve_name(args.model)
    sources = sum(bool(s) for s in (args.params, args.pretrained, args.random))
    if sources != 1:
        raise ValueError("give the weights: --params FILE (e.g. from `gluon-resnest convert`), "
                         "--pretrained (GluonCV's file in ~/.mxnet/models), or --random")
    if args.params:
        net = build(name, classes=args.classes)
        net.load_parameters(args.params, ctx=mx.cpu())
    elif args.pretrained:
        from ..weights.pretrained import get_model
        net = get_model(name, pretrained=True, classes=args.classes)
    else:
        net = build(name, classes=args.classes)
        net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    return net, name, args.size or VARIANTS[name].input_size


def _check_batch(size: int, n: int = 2) -> np.ndarray:
    return np.random.RandomState(0).normal(size=(n, 3, size, size)).astype(np.float32)


def _cmd_export(args: argparse.Namespace) -> int:
    import mxnet as mx

    from ..deploy import export as ex
    if args.int8 and args.bf16:
        raise ValueError("choose one of --int8 and --bf16")
    if (args.int8 or args.bf16) and args.format == "onnx":
        raise ValueError("--int8/--bf16 make MXNet (oneDNN) graphs: use --format symbol; "
                         "MXNet's ONNX exporter has no quantized/bfloat16 operators")
    if args.calib is not None and not args.int8:
        raise ValueError("--calib applies to --int8")
    try:
        net, name, size = _load_model(args)
        out = args.out or f"{name}{'-int8' if args.int8 else '-bf16' if args.bf16 else ''}"
        x = _check_batch(size)
        ref = net(mx.nd.array(x)).asnumpy()
        if args.format == "onnx":
            path = ex.export_onnx(net, out if out.endswith(".onnx") else f"{out}.onnx", size,
                                  dynamic_spatial=args.dynamic_spatial)
            print(f"wrote {path} (ONNX opset {ex.ONNX_OPSET}, input 'data' "
                  f"(batch, 3, {'H, W' if args.dynamic_spatial else f'{size}, {size}'}))")
            try:
                diff = np.abs(ex.run_onnx(path, x) - ref).max()
                print(f"check: onnxruntime vs MXNet on a batch of {len(x)}: max |diff| {diff:.2e}")
            except MissingExtraError:
                print("check skipped: onnxruntime is not installed")
            return 0
        if args.int8:
            block = ex.quantize_int8(net, args.calib or "generated", args.num_calib, size,
                                     args.calib_mode)
            print(f"INT8 (oneDNN): {ex.describe(block.int8_info)}")
            t = ex.graph_transitions(block)
            print(f"graph: {t['int8_ops']} INT8 ops, {t['quantize']} quantize and "
                  f"{t['dequantize']} dequantize nodes (int8<->fp32 conversions)")
            held_out = ex.generated_images(32, size, seed=1)
            agree = (block(mx.nd.array(held_out)).asnumpy().argmax(1)
                     == net(mx.nd.array(held_out)).asnumpy().argmax(1)).mean()
            print(f"check: top-1 agreement with FP32 on 32 generated images: {agree:.1%}")
        elif args.bf16:
            block = ex.convert_bf16(net, size)
            diff = np.abs(block(mx.nd.array(x)).astype("float32").asnumpy() - ref).max()
            print(f"BF16 (AMP): max |diff| vs FP32 on a batch of 2: {diff:.3g}")
        else:
            block = net
        if block is net:
            files = ex.export_symbol(net, out, size)
        else:
            block.hybridize(static_alloc=True, static_shape=True)
            block(mx.nd.array(x))
            block.export(out, 0)
            files = (f"{out}-symbol.json", f"{out}-0000.params")
        print(f"wrote {files[0]}, {files[1]}")
        if block is net:
            again = ex.load_symbol(out)(mx.nd.array(x)).asnumpy()
            print(f"check: reloaded vs original on a batch of 2: max |diff| "
                  f"{np.abs(again - ref).max():.2e}")
        return 0
    except (MissingExtraError, ex.UnsupportedOnThisCPU) as err:
        print(f"gluon-resnest export: error: {err}", file=sys.stderr)
        return 2


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..weights.pytorch import TIMM_NAMES, convert_checkpoint, describe_arch, resolve_arch
    try:
        name = resolve_arch(args.arch)
        origin = f"timm {args.arch.lower()} -> " if args.arch.lower() in TIMM_NAMES else ""
        print(f"architecture: {origin}{name} ({describe_arch(name)})")
        convert_checkpoint(args.src, args.dst, args.arch, classes=args.classes)
    except MissingExtraError as err:
        print(f"gluon-resnest convert: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}; load it with gluon_resnest.get_model({name!r}, "
          f"pretrained={args.dst!r})")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "export", help="export a model: MXNet symbol, ONNX, INT8 or BF16",
        description="Export a ResNeSt for deployment. MODEL is a variant name (with --params, "
                    "--pretrained or --random) or the PREFIX of an exported model "
                    "(PREFIX-symbol.json, e.g. from `gluon-resnest train`).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="variant name (e.g. resnest50) or exported PREFIX "
                                 "(a variant name wins; write ./resnest50 for a prefix)")
    p.add_argument("--params", help="our .params file (structural keys)")
    p.add_argument("--pretrained", action="store_true", help="GluonCV's published weights")
    p.add_argument("--random", action="store_true", help="random weights (smoke tests)")
    p.add_argument("--classes", type=int, default=1000, help="classifier size (default 1000)")
    p.add_argument("--format", choices=("symbol", "onnx"), default="symbol")
    p.add_argument("--out", help="output prefix (default: the model name)")
    p.add_argument("--size", type=int, help="input resolution (default: the variant's)")
    p.add_argument("--dynamic-spatial", action="store_true",
                   help="ONNX: dynamic height and width too (the batch is always dynamic)")
    p.add_argument("--int8", action="store_true", help="INT8 with MXNet's oneDNN quantization")
    p.add_argument("--calib", metavar="DIR|generated", default=None,
                   help="INT8 calibration images: a folder (the variant's test transform) or "
                        "'generated' (default)")
    p.add_argument("--num-calib", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--calib-mode", choices=("naive", "entropy"), default="naive")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 mixed precision (MXNet AMP; needs AVX-512 oneDNN kernels)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "convert", help="convert official/timm PyTorch ResNeSt weights to MXNet .params",
        description="Convert a PyTorch ResNeSt state_dict (official repo or timm; .pth/.pt/"
                    ".bin read with torch.load(weights_only=True), or .safetensors) into our "
                    ".params. ARCH is our/official name (resnest50, resnest50_fast_2s1x64d, ...) "
                    "or timm's (resnest50d, resnest101e, resnest50d_4s2x40d, ...).")
    p.add_argument("--arch", required=True, help="architecture of the checkpoint")
    p.add_argument("--classes", type=int, default=None, help="default: the checkpoint's fc size")
    p.add_argument("src", help="PyTorch checkpoint (.pth, .pt, .bin, .safetensors)")
    p.add_argument("dst", help="output .params file")
    p.set_defaults(func=_cmd_convert)
