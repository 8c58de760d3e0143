"""MXNet's private members this package relies on, each named once.

Checkpoints store a ``gluon.Trainer``'s optimizer state as named arrays instead of MXNet's
pickle (``Trainer.save_states``), which needs what MXNet keeps private:

- ``Trainer._params`` (the optimizer's index of a parameter is its position there),
  ``Trainer._kv_initialized``/``_params_to_init``/``_init_kvstore()``/``_init_params()``
  (what ``save_states``/``load_states`` do first), ``Trainer._update_on_kvstore``,
  ``Trainer._kvstore._updater`` and ``Trainer._updaters`` (where the states live).
- ``Updater.states``/``Updater.states_synced``: index -> state (an NDArray, None or a tuple).
- ``Optimizer._all_index_update_counts``/``_index_update_count``: per device, index -> number
  of updates (Adam's bias correction reads it), beside the public ``num_update``.

Parameters are named by structural key (:func:`.mxnet_blocks.structural_params`), which is
stable across processes, unlike ``Parameter.name`` (``resnest3_conv0_weight``). A missing
member raises :class:`MXNetInternalsError` naming the MXNet version.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx

__all__ = ["MXNetInternalsError", "prepare_trainer", "trainer_parameters", "trainer_updaters",
           "updater_states", "replace_updater_states", "update_counts", "set_update_counts"]

_SUPPORTED = "MXNet 1.9.x (tested with 1.9.1)"


class MXNetInternalsError(RuntimeError):
    """A private MXNet member this package needs is missing or has changed."""


def _member(obj: Any, name: str, owner: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise MXNetInternalsError(
            f"gluon_resnest needs MXNet's private {owner}.{name}, which MXNet {mx.__version__} "
            f"does not have. Supported: {_SUPPORTED}") from None


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise MXNetInternalsError(f"MXNet {mx.__version__}: {what}. Supported: {_SUPPORTED}")


def prepare_trainer(trainer) -> None:
    """Create the kvstore and push pending parameters, as ``Trainer.save_states``/``load_states``
    do before touching the optimizer state (after it, the states' location is known)."""
    if not _member(trainer, "_kv_initialized", "Trainer"):
        _member(trainer, "_init_kvstore", "Trainer")()
    if _member(trainer, "_params_to_init", "Trainer"):
        _member(trainer, "_init_params", "Trainer")()


def trainer_parameters(trainer) -> List[Any]:
    """The trainer's parameters; a parameter's optimizer index is its position here."""
    params = _member(trainer, "_params", "Trainer")
    _expect(isinstance(params, list), "Trainer._params is no longer a list")
    return params


def trainer_updaters(trainer) -> Optional[List[Any]]:
    """The updaters holding the optimizer state (one per device; the first is the reference),
    or None when the states live on parameter servers, out of this process's reach."""
    if _member(trainer, "_update_on_kvstore", "Trainer"):
        updater = _member(_member(trainer, "_kvstore", "Trainer"), "_updater", "KVStore")
        return None if updater is None else [updater]
    updaters = _member(trainer, "_updaters", "Trainer")
    _expect(isinstance(updaters, list) and len(updaters) > 0, "Trainer._updaters is empty")
    return updaters


def updater_states(updater) -> Dict[int, Any]:
    """Optimizer index -> state (NDArray, None, or a tuple of them)."""
    states = _member(updater, "states", "Updater")
    _expect(isinstance(states, dict), "Updater.states is no longer a dict")
    return states


def replace_updater_states(updater, states: Dict[int, Any]) -> None:
    """Replace every state of ``updater``; MXNet moves each to its weight's device on first use."""
    _member(updater, "states_synced", "Updater")
    updater.states = dict(states)
    updater.states_synced = dict.fromkeys(states, False)


def update_counts(optimizer) -> Tuple[int, int, Dict[int, Dict[int, int]], int]:
    """``(num_update, begin_num_update, {device id: {index: updates}}, current device id)``."""
    counts = _member(optimizer, "_all_index_update_counts", "Optimizer")
    current = _member(optimizer, "_index_update_count", "Optimizer")
    _expect(isinstance(counts, dict), "Optimizer._all_index_update_counts is no longer a dict")
    device = next((d for d, c in counts.items() if c is current), None)
    _expect(device is not None, "Optimizer._index_update_count is not one of "
                                "Optimizer._all_index_update_counts")
    return (int(optimizer.num_update), int(optimizer.begin_num_update),
            {int(d): {int(i): int(n) for i, n in c.items()} for d, c in counts.items()},
            int(device))


def set_update_counts(optimizer, num_update: int, begin_num_update: int,
                      counts: Dict[int, Dict[int, int]], device: int) -> None:
    """Inverse of :func:`update_counts`."""
    _member(optimizer, "_all_index_update_counts", "Optimizer")
    _member(optimizer, "_index_update_count", "Optimizer")
    table = {int(d): dict(c) for d, c in counts.items()}
    table.setdefault(int(device), {})
    optimizer.num_update, optimizer.begin_num_update = int(num_update), int(begin_num_update)
    optimizer._all_index_update_counts = table
    optimizer._index_update_count = table[int(device)]
