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
from typing import Any

import torch


def mark(state: dict[str, Any]) -> None:
    """In ``__getstate__``: name the return file (once per monitor) and the process that waits for it."""
    if state.get("_spawn_return") is None:
        handle, path = tempfile.mkstemp(prefix="lightning_xai_", suffix=".pt")
        os.close(handle)
        os.remove(path)
        state["_spawn_return"] = (path, os.getpid())


def send(monitor: Any, is_global_zero: bool) -> None:
    """At the end of a fit in a spawned worker (rank 0): write the monitor's state for the main process."""
    target = getattr(monitor, "_spawn_return", None)
    if target is None or not is_global_zero or os.getpid() == target[1]:
        return
    torch.save(monitor.state_dict(), target[0])


def receive(monitor: Any) -> None:
    """In the main process: load what rank 0 wrote, once."""
    target = monitor.__dict__.get("_spawn_return")
    if target is None or os.getpid() != target[1] or not os.path.exists(target[0]):
        return
    state = torch.load(target[0], weights_only=True)
    os.remove(target[0])
    monitor.load_state_dict(state)
