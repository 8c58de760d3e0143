"""Training with the paper's recipe: configs, data, recipe, checkpoints, trainer, distributed.

``gluon-resnest train`` (see :mod:`.commands`) is the command-line entry point;
:func:`run` trains a resolved config from Python::

    from gluon_resnest.train import load_config, run
    summary = run(load_config("demo", [("optim.epochs", 5)]), out_dir="runs/demo")
"""
from .config import DEFAULTS, load_config
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted, run

__all__ = ["DEFAULTS", "load_config", "run", "Trainer", "TrainingInterrupted",
           "NonFiniteLossError"]
