"""How well an alert's class boxes name the cue: per localised-cue cell of the suite, the first alert after the
onset, each class box against the cue pixels of that class's probes (IoU, box area / cue area). From the live
alerts (``report.py``), or with today's detector replayed on the recorded maps::

    python benchmarks/alert_truth/localisation.py [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.alert_truth.analysis import DEFAULT_OUT, load_records
from benchmarks.alert_truth.replay import maps_by_epoch
from benchmarks.alert_truth.report import _cell_order, _median


def alert_localisation(record: dict[str, Any]) -> list[tuple[str, float, float]]:
    """For the first live alert at/after a shortcut run's onset that has regions: per region (one per class),
    ``(label, IoU of its box with the cue pixels of its classes' probes, box area / cue area)``; empty for runs
    without a localised cue (no masks) or without such an alert."""
    probes, onset = record["probes"], record["config"].get("onset_epoch")
    masks, labels = probes.get("masks"), probes["labels"]
    if masks is None or onset is None:
        return []
    first = next((a for a in record["alerts"] if int(a["epoch"]) >= int(onset) and a.get("regions")), None)
    out = []
    for region in [] if first is None else first["regions"]:
        chosen = [i for i, label in enumerate(labels.tolist()) if int(label) in set(region["classes"])]
        if not chosen:
            continue
        cue = masks[chosen].any(dim=0)
        top, left, bottom, right = (int(v) for v in region["box"])
        box = torch.zeros_like(cue)
        box[top:bottom, left:right] = True
        union = int((box | cue).sum())
        out.append(
            (
                str(region["label"]),
                int((box & cue).sum()) / union if union else 0.0,
                int(box.sum()) / max(int(cue.sum()), 1),
            )
        )
    return out


def localisation_lines(records: Sequence[dict[str, Any]], markdown: bool = False) -> list[str]:
    """Per localised-cue cell: how well the first alert after the onset names the cue, per class region."""
    cells: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    for rec in records:
        cfg = rec["config"]
        if cfg["kind"] == "shortcut" and rec["probes"].get("masks") is not None:
            cells.setdefault((cfg["scenario"], cfg["model"]), []).extend(alert_localisation(rec))
    lines = []
    for (scenario, model), regions in sorted(cells.items(), key=lambda item: _cell_order(*item[0])):
        ious = [iou for _, iou, _ in regions]
        text = (
            f"{len(regions)} class regions, IoU with the cue median {_median(ious):.2f}, "
            f"{sum(iou >= 0.3 for iou in ious)}/{len(ious)} at >= 0.3, box/cue area max "
            f"{max(ratio for _, _, ratio in regions):.2f}"
            if regions
            else "no alert with regions after the onset"
        )
        lines.append(f"{'* ' if markdown else '  '}localisation {scenario} / {model}: {text}")
    return lines


def replayed_regions(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The first alert at/after the onset that has regions, from today's ``ShiftDetector`` fed the recorded maps as
    the monitor feeds them (every method's maps remembered first; candidates put to the recorded weights), as live
    alerts are stored: ``[{"epoch",
    "method", "regions"}]`` (empty without one)."""
    from benchmarks.alert_truth.replay import ShiftDetectorReplay
    from lightning_xai.drift.detector import ShiftDetector

    detector, onset = ShiftDetector(), int(record["config"]["onset_epoch"])
    replay = ShiftDetectorReplay().for_record(record)  # the transplant test on the recorded weights, where kept
    size = tuple(int(v) for v in record["probes"]["images"].shape[-2:])
    classes = record["probes"]["labels"]
    maps, epochs = maps_by_epoch(record)
    for epoch, by_method in zip(epochs, maps, strict=True):
        spatial = {k: m for k, m in by_method.items() if not k.endswith("/colour")}
        for method, current in spatial.items():
            detector.remember(method, epoch, current)
        for method, current in spatial.items():
            verify = replay.verifier(epoch) if epoch > replay.warmup_epochs else None  # the reference is kept
            d = detector.update(method, current, size, epoch >= 2, classes=classes, epoch=epoch, verify=verify)
            if d is not None and d.fired and epoch >= onset and d.regions:
                return [{"epoch": epoch, "method": method, "regions": [r.to_dict() for r in d.regions]}]
    return []


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the recordings' directory")
    args = parser.parse_args(argv)
    records = [
        {**rec, "alerts": replayed_regions(rec)}
        for rec in load_records(args.out)
        if rec["config"]["kind"] == "shortcut" and rec["probes"].get("masks") is not None
    ]
    print("\n".join(localisation_lines(records)))


if __name__ == "__main__":
    main()
