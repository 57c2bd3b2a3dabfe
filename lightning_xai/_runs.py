"""Which run a fit belongs to when it restores a checkpoint: the monitor's own state restored, or a run of its own
when the checkpoint holds none of it."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from lightning_xai import _warn

NOT_RESTORED = (
    "AttributionMonitor: this fit resumes from a checkpoint that holds no state of this monitor (written without it, "
    "or its entry removed from `checkpoint['callbacks']`), so the monitor starts a run of its own: probes drawn again, "
    "a new drift reference; `monitor.history` and `monitor.alerts` now hold this run only, not its earlier fit's."
)


def restore_or_start(monitor: Any, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """``on_load_checkpoint``: ``validate``/``test``/``predict(ckpt_path=...)`` keep the monitor's run (its history,
    alerts and reference stay); a fit resumed from a checkpoint without this monitor's state (other settings, written
    without it, its entry removed) restores none of it, so it starts a run of its own, instead of going on with the
    monitor's earlier fit (another training's reference and history); said once (other settings: by the warning)."""
    fitting = trainer.state.fn == TrainerFn.FITTING
    monitor._keep_run = not fitting and bool(monitor.history)
    other = warn_other_state(checkpoint, type(monitor).__name__, monitor.state_key)
    if fitting and monitor.state_key not in checkpoint.get("callbacks", {}):
        earlier = bool(monitor.history)
        monitor._start_run()
        if earlier and not other:
            rank_zero_info(NOT_RESTORED)


def warn_other_state(checkpoint: dict[str, Any], prefix: str, state_key: str) -> bool:
    """Warn when a checkpoint holds monitor state under other settings (Lightning would skip it silently); warned?"""
    keys = [str(k) for k in checkpoint.get("callbacks", {}) if str(k).startswith(prefix)]
    other = bool(keys) and state_key not in keys
    if other:
        older = all(not k.startswith(f"{prefix}{{'") for k in keys)  # the key before the settings objects
        fix = (
            "It was written before the settings objects (DriftPolicy, Display, Budget): that is expected once"
            if older
            else "Resume with the same methods and their options, probes and target to keep them"
        )
        _warn.warn(
            f"AttributionMonitor: the checkpoint holds monitor state for {keys} but this monitor is {state_key}, so "
            f"its probes, reference, history and alerts start afresh (a new reference). {fix}."
        )
    return other
