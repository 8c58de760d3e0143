"""Training: configs, data, recipe, checkpoints, the classification and dense trainers, the
distributed launcher.

``gluon-resnest train`` (:mod:`gluon_resnest.cli.train`) is the command-line entry point;
:func:`run` trains a resolved config from Python::

    from gluon_resnest.train import load_config, run
    summary = run(load_config("demo", [("optim.epochs", 5)]), out_dir="runs/demo")

Every module here runs with MXNet loaded (``import gluon_resnest`` imports it to register the
models with GluonCV), the distributed launcher included.
"""
from .config import DEFAULTS, load_config

__all__ = ["DEFAULTS", "load_config", "run", "Trainer", "TrainingInterrupted",
           "NonFiniteLossError"]

_TRAINER_NAMES = ("run", "Trainer", "TrainingInterrupted", "NonFiniteLossError")


def __getattr__(name: str):
    # Not imported up front: the trainer imports the distributed launcher, and
    # `python -m gluon_resnest.train.distributed` warns when runpy finds it already imported.
    if name in _TRAINER_NAMES:
        from . import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
