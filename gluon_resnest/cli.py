"""``gluon-resnest`` command line: parse, call the library, print.

Sub-commands come from the modules in :data:`COMMAND_MODULES`; each has
``add_commands(subparsers)`` that registers its parsers with ``set_defaults(func=...)``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from typing import List, Optional

COMMAND_MODULES = (
    "gluon_resnest.cli",               # list, summary, run
    "gluon_resnest.train.commands",    # train, eval, predict
    "gluon_resnest.deploy_commands",   # export, convert
)


def _cmd_list(args: argparse.Namespace) -> int:
    from . import profile
    from .resnest import ALIASES, VARIANTS, build
    print(f"{'model':<26} {'params':>9} {'GMACs':>7} {'input':>6}  notes")
    for name, spec in VARIANTS.items():
        net = build(name)
        size = args.size or spec.input_size
        macs = profile.count_macs(net, size) / 1e9
        notes = [f"paper: {spec.paper}"] if spec.paper else []
        notes += [f"alias: {a}" for a, t in ALIASES.items() if t == name]
        print(f"{name:<26} {profile.count_params(net) / 1e6:>8.2f}M {macs:>7.2f} {size:>6}  "
              + ", ".join(notes))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from . import profile
    from .resnest import VARIANTS, build, resolve_name
    name = resolve_name(args.model)
    size = args.size or VARIANTS[name].input_size
    print(f"{name} at {size}x{size} (multiply-adds per image)")
    print(profile.format_summary(profile.stage_summary(build(name), size)))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Run an unmodified script with gluon_resnest registered in GluonCV's zoo."""
    import gluon_resnest  # noqa: F401  (registers)
    script = args.script
    if not os.path.isfile(script):
        raise FileNotFoundError(f"script {script!r} does not exist")
    sys.argv = [script] + list(args.script_args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("list", help="every registered model with params, GMACs, input size")
    p.add_argument("--size", type=int, default=None, help="count at this resolution instead")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("summary", help="per-stage table: output shape, params, multiply-adds")
    p.add_argument("model", help="variant name, e.g. resnest50")
    p.add_argument("--size", type=int, default=None, help="input resolution (default: model's)")
    p.set_defaults(func=_cmd_summary)
    p = sub.add_parser("run", help="run a Python script (e.g. a GluonCV training script) "
                                   "with the gluon_resnest models registered")
    p.add_argument("script", help="path of the script")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gluon-resnest",
        description="ResNeSt (Split-Attention Networks) for MXNet/GluonCV: train, evaluate, "
                    "predict, export, convert and inspect models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as err:
            if err.name and mod_name.startswith(err.name):  # not written yet: skip
                continue
            raise
        mod.add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        print(f"gluon-resnest {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
