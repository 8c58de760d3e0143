"""Arguments several sub-commands share: which model, and where its weights come from."""
from __future__ import annotations

import argparse


def add_model_arguments(p: argparse.ArgumentParser, forms: str) -> None:
    """MODEL (a variant name or one of ``forms``) and a variant's weights and head size."""
    p.add_argument("model", help=f"variant name (e.g. resnest50), {forms} (a variant name "
                                 f"wins; write ./resnest50 for a prefix)")
    p.add_argument("--params", help="a variant's weights: our .params file (structural keys)")
    p.add_argument("--pretrained", action="store_true",
                   help="a variant's weights: GluonCV's published file")
    p.add_argument("--random", action="store_true",
                   help="a variant with random weights (speed and smoke tests only)")
    p.add_argument("--classes", type=int, default=None,
                   help="a variant's classifier size (default 1000)")


def load_model(args: argparse.Namespace):
    """The model :func:`add_model_arguments` describes (:func:`gluon_resnest.load`)."""
    from ..train.inference import load  # on use, as every command's dependencies
    return load(args.model, params=args.params, pretrained=args.pretrained,
                random_init=args.random, classes=args.classes)
