"""``gluon-resnest`` command line: parse, call the library, print.

Sub-commands come from the modules in :data:`COMMAND_MODULES`; each has
``add_commands(subparsers)`` that registers its parsers with ``set_defaults(func=...)``.
A command's ValueError/TypeError/FileNotFoundError/KeyError is printed as one line (status 2),
except for commands that set ``passthrough=True`` (``run``), whose errors propagate.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import bench, deploy, info, models, train

COMMAND_MODULES = (
    models,   # list, summary, run
    train,    # train, eval, predict
    deploy,   # export, convert
    info,     # info
    bench,    # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gluon-resnest",
        description="ResNeSt (Split-Attention Networks) for MXNet/GluonCV: train, evaluate, "
                    "predict, export, convert, inspect and benchmark models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        mod.add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "passthrough", False):
        # `run`: the command reports its own errors; the script's exceptions propagate as
        # they would from `python SCRIPT` (traceback, exit status, SystemExit's code)
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        print(f"gluon-resnest {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
