"""Results of a ``strategy="ddp_spawn"`` fit back in the process that called ``fit``.

Lightning pickles the callbacks into the spawned workers and returns only the model's weights and
``trainer.callback_metrics``: without this, ``monitor.history`` and ``monitor.alerts`` would stay empty in the main
process. When the monitor is pickled (in the main process, as the workers are spawned) it names a file; rank 0
writes the monitor's checkpoint state there at the end of ``fit`` (primitives and CPU tensors, as in a checkpoint);
the main process loads it the next time the monitor's results are read, and deletes it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch


def mark(state: dict[str, Any]) -> None:
    """In ``__getstate__``: name the return file (once per monitor) and the process that waits for it."""
    if state.get("_spawn_return") is None:
        handle, path = tempfile.mkstemp(prefix="lightning_xai_", suffix=".pt")
        os.close(handle)
        os.remove(path)
        state["_spawn_return"] = (path, os.getpid())


def send(target: tuple[str, int] | None, state: Callable[[], dict[str, Any]], is_global_zero: bool) -> None:
    """At the end of a fit in a spawned worker (rank 0): write ``state()`` to ``target`` for the main process."""
    if target is None or not is_global_zero or os.getpid() == target[1]:
        return
    torch.save(state(), target[0])


def receive(target: tuple[str, int] | None) -> dict[str, Any] | None:
    """In the main process: the state rank 0 wrote to ``target`` (once; the file is deleted), else None."""
    if target is None or os.getpid() != target[1] or not os.path.exists(target[0]):
        return None
    state = torch.load(target[0], weights_only=True)
    os.remove(target[0])
    return state
