"""Results of a ``strategy="ddp_spawn"`` fit back in the process that called ``fit``: Lightning returns only the
weights and ``callback_metrics`` from its workers, so rank 0 writes the monitor's checkpoint state to a file named
when the monitor was pickled, and the main process loads (and deletes) it the next time the results are read."""

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
    if target is not None and is_global_zero and os.getpid() != target[1]:
        torch.save(state(), target[0])


def receive(target: tuple[str, int] | None) -> dict[str, Any] | None:
    """In the main process: the state rank 0 wrote to ``target`` (once; the file is deleted), else None."""
    if target is None or os.getpid() != target[1] or not os.path.exists(target[0]):
        return None
    state = torch.load(target[0], weights_only=True)
    os.remove(target[0])
    return state
