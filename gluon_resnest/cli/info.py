"""``gluon-resnest info``: versions, the CPU's features and what MXNet's oneDNN runs on them."""
from __future__ import annotations

import argparse
import importlib.metadata

from .. import __version__
from .._compat import onednn


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cmd_info(args: argparse.Namespace) -> int:
    flags = onednn.cpu_flags()
    status = onednn.amx_status()
    print(f"gluon_resnest: {__version__}")
    print(f"mxnet: {_dist_version('mxnet')}")
    print(f"gluoncv: {_dist_version('gluoncv')}")
    print(f"cpu: {onednn.cpu_model()}")
    print("cpu flags: " + ", ".join(f"{f}={'yes' if f in flags else 'no'}"
                                    for f in onednn.FLAGS_OF_INTEREST))
    try:
        probe = onednn.isa_report()
        print(f"oneDNN: {probe.version or 'version unknown'}")
        print(f"oneDNN isa: {probe.isa}")
        print(f"oneDNN fp32 convolution kernel: {probe.kernel or 'unknown'}")
    except RuntimeError as err:     # still print the rest: this is a diagnostic command
        print(f"oneDNN isa: unknown ({err})")
    print(f"AMX: {status.describe()}")
    note = onednn.bf16_speed_note(flags, status, see_info=False)
    if note is None:
        note = ("MXNet's BF16 runs on AMX here" if status.enabled else
                "MXNet's BF16 runs on native AVX512-BF16 here") + \
            ": expect it faster than FP32 (`gluon-resnest bench MODEL` measures it)"
    print("BF16 speed: " + note)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("info", help="versions, CPU features and the ISA MXNet's oneDNN uses "
                                    "(AMX, BF16)")
    p.set_defaults(func=_cmd_info)
