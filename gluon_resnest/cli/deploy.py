"""``gluon-resnest export`` and ``gluon-resnest convert`` (registered by cli.py)."""
from __future__ import annotations

import argparse
import os
import sys

from .._compat.extras import MissingExtraError
from .._compat.onednn import note_bf16_speed
from .options import add_model_arguments, load_model

EXAMPLES = """examples:
  gluon-resnest convert --arch resnest50d resnest50d.pth resnest50.params
  gluon-resnest export resnest50 --params resnest50.params --format onnx --out resnest50
  gluon-resnest export resnest50 --params resnest50.params --int8 --calib val_images/
  gluon-resnest export run/export/model --format onnx     # -> run/export/model.onnx
  gluon-resnest export run/export/model --int8 --calib digits/train   # -> run/export/model-int8

Every output carries the model's metadata (PREFIX-meta.json, or the .onnx file's
metadata_props): input size, crop, interpolation, mean/std, class names, precision.
Re-exporting keeps the source's; --size overrides it.
"""


def _cmd_export(args: argparse.Namespace) -> int:
    from ..data.paths import check_output_folder
    from ..deploy.export import UnsupportedOnThisCPU, check_options, default_output, export
    if args.int8 and args.bf16:
        raise ValueError("choose one of --int8 and --bf16")
    if args.calib is not None and not args.int8:
        raise ValueError("--calib applies to --int8")
    precision = "int8" if args.int8 else "bf16" if args.bf16 else None
    if args.out is not None:     # before loading and, for INT8, before calibration
        check_output_folder(os.path.dirname(os.path.abspath(args.out)))
    check_options(args.format, precision, args.out)
    try:
        model = load_model(args)
        if args.out is None:     # beside the input: that folder must take new files too
            out = default_output(model, args.format, precision or model.meta.precision)
            check_output_folder(os.path.dirname(os.path.abspath(out)))
        for note in model.notes:
            print(f"gluon-resnest export: note: {note}", file=sys.stderr)
        print(f"model: {model.source}")
        result = export(model, args.out, args.format, precision, args.size,
                        args.calib or "generated", args.num_calib, args.calib_mode,
                        args.dynamic_spatial)
    except (MissingExtraError, UnsupportedOnThisCPU) as err:
        print(f"gluon-resnest export: error: {err}", file=sys.stderr)
        return 2
    for line in result.lines:
        print(line)
    note_bf16_speed("export", precision)     # BF16 slower than FP32 where AMX is not in use
    return 0


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
                    "--pretrained or --random), the PREFIX of an exported model "
                    "(PREFIX-symbol.json, e.g. from `gluon-resnest train`), a .ckpt checkpoint "
                    "or a run folder.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, "exported PREFIX, .ckpt or run folder")
    p.add_argument("--format", choices=("symbol", "onnx"), default="symbol")
    p.add_argument("--out", help="output prefix, or .onnx file (default: beside the input, "
                                 "e.g. PREFIX.onnx or PREFIX-int8; ./VARIANT for a variant)")
    p.add_argument("--size", type=int,
                   help="input resolution (default: the model's, from its metadata)")
    p.add_argument("--dynamic-spatial", action="store_true",
                   help="ONNX: dynamic height and width too (the batch is always dynamic)")
    p.add_argument("--int8", action="store_true", help="INT8 with MXNet's oneDNN quantization")
    p.add_argument("--calib", metavar="DIR|generated", default=None,
                   help="INT8 calibration images: a folder (read with the model's own "
                        "transform: size, crop, interpolation, mean/std) or 'generated' "
                        "(default)")
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
