"""``gluon-resnest list``, ``summary`` and ``run``: the variants, and GluonCV scripts with them."""
from __future__ import annotations

import argparse
import os
import runpy
import sys

from .. import integrations
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
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    _check_size_arg(args.size)
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
    p.add_argument("model", help="variant name, e.g. resnest50")
    p.add_argument("--size", type=int, default=None, help="input resolution (default: model's)")
    p.set_defaults(func=_cmd_summary)
    p = sub.add_parser("run", help="run a Python script (e.g. a GluonCV training script) "
                                   "with the gluon_resnest models registered")
    p.add_argument("script", help="path of the script")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=_cmd_run, passthrough=True)
