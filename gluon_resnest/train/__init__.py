"""Training with the paper's recipe: configs, data, recipe, checkpoints, trainer, distributed.

``gluon-resnest train`` (see :mod:`.commands`) is the command-line entry point;
:func:`run` trains a resolved config from Python::

    from gluon_resnest.train import load_config, run
    summary = run(load_config("demo", [("optim.epochs", 5)]), out_dir="runs/demo")
"""
from .config import DEFAULTS, load_config

__all__ = ["DEFAULTS", "load_config", "run", "Trainer", "TrainingInterrupted",
           "NonFiniteLossError"]


def __getattr__(name: str):
    # the trainer (and MXNet) load on first use, so `python -m gluon_resnest.train.distributed`
    # and config tools start without them
    if name in ("run", "Trainer", "TrainingInterrupted", "NonFiniteLossError"):
        from . import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
