"""``gluon-resnest`` command line: parse, call the library, print.

Sub-commands come from the modules in :data:`COMMAND_MODULES`; each has
``add_commands(subparsers)`` that registers its parsers with ``set_defaults(func=...)``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

COMMAND_MODULES = (
    "gluon_resnest.cli.models",   # list, summary, run
    "gluon_resnest.cli.train",    # train, eval, predict
    "gluon_resnest.cli.deploy",   # export, convert
)


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
