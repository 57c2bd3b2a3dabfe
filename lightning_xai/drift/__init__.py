"""Stage 3 of the pipeline: how far each new explanation moved, and when that movement becomes an alert."""

from lightning_xai.drift.alerts import AlertTracker, DriftAlert, DriftRule
from lightning_xai.drift.evidence import AlertEvidence, AlertRegion
from lightning_xai.drift.tracker import DriftResult, DriftTracker

__all__ = ["AlertEvidence", "AlertRegion", "AlertTracker", "DriftAlert", "DriftResult", "DriftRule", "DriftTracker"]
