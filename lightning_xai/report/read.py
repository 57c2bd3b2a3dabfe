"""Read what the monitor logged to TensorBoard event files back into plain Python: the scalars by epoch, the
explanation sheets, the predictions tables (with each probe's drift), the alerts and the run's settings."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "Sheet", "find_runs", "parse_markdown_table", "read_run"]


@dataclass
class Sheet:
    """One ``xai/sheet`` image: when, its PNG bytes and size."""

    epoch: int
    step: int
    png: bytes
    width: int
    height: int


@dataclass
class RunLog:
    """Everything the report needs from one run directory.

    Attributes:
        path: the directory holding the event files.
        scalars: ``xai/*`` tag -> ``[(epoch, value), ...]`` (summary tags are logged against the epoch already;
            the others are mapped from the global step to the epoch through Lightning's ``epoch`` scalar).
        sheets: the explanation sheets, in order.
        predictions: epoch -> the predictions table (list of row dicts; ``None`` where unknown).
        alerts: ``(epoch, message)``.
        errors: ``(epoch, message)``.
        settings: the monitor's settings (empty when the run predates them).
    """

    path: Path
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    sheets: list[Sheet] = field(default_factory=list)
    predictions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    alerts: list[tuple[int, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """The methods, from the settings or else from the scalar tags."""
        if self.settings.get("methods"):
            return list(self.settings["methods"])
        found = {t.split("/")[1] for t in self.scalars if re.match(r"xai/[^/]+/(drift|alert)/", t)}
        return sorted(found)

    @property
    def epochs(self) -> list[int]:
        return sorted({s.epoch for s in self.sheets} | {e for v in self.scalars.values() for e, _ in v})


def find_runs(logdir: str | Path) -> list[Path]:
    """Every directory under ``logdir`` (itself included) that holds TensorBoard event files, sorted.

    Example::

        >>> find_runs("/nonexistent")
        []
    """
    root = Path(logdir)
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")}) if root.exists() else []


def parse_markdown_table(text: str) -> list[dict[str, Any]]:
    """Rows of a markdown table as dicts; numbers become int/float, ``–``/``-``/empty become None.

    Example::

        >>> parse_markdown_table("| probe | drift |\\n|---:|---:|\\n| 0 | 0.250 |\\n| 1 | – |")
        [{'probe': 0, 'drift': 0.25}, {'probe': 1, 'drift': None}]
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return []

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    header = cells(lines[0])
    rows = []
    for line in lines[2:]:
        rows.append({k: _value(v) for k, v in zip(header, cells(line), strict=False)})
    return rows


def _value(text: str) -> Any:
    if text in ("", "–", "-"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _text(event: Any) -> str:
    return event.tensor_proto.string_val[0].decode("utf-8", errors="replace")


def read_run(path: str | Path) -> RunLog:
    """Read one run directory (all its event files, e.g. after a resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunLog(Path(path))
    acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    scalar_tags = set(tags.get("scalars", []))
    epoch_marks = sorted((e.step, int(e.value)) for e in acc.Scalars("epoch")) if "epoch" in scalar_tags else []

    def epoch_of(step: int) -> int:
        """The epoch Lightning logged at the last step <= ``step`` (the monitor logs at the epoch's end)."""
        found = [ep for s, ep in epoch_marks if s <= step]
        return found[-1] if found else (epoch_marks[0][1] if epoch_marks else step)

    for tag in sorted(scalar_tags):
        if not tag.startswith("xai/"):
            continue
        events = acc.Scalars(tag)
        if tag.startswith("xai/summary/"):
            run.scalars[tag] = [(int(e.step), float(e.value)) for e in events]
        else:
            run.scalars[tag] = [(epoch_of(int(e.step)), float(e.value)) for e in events]
    # the i-th sheet belongs to the i-th evaluation: xai/summary/seconds holds their epochs in order
    evaluation_epochs = [e for e, _ in run.scalars.get("xai/summary/seconds", [])]
    if "xai/sheet" in tags.get("images", []):
        images = acc.Images("xai/sheet")
        for i, img in enumerate(images):
            same = len(evaluation_epochs) == len(images)
            epoch = evaluation_epochs[i] if same else epoch_of(int(img.step))
            run.sheets.append(Sheet(epoch, int(img.step), img.encoded_image_string, int(img.width), int(img.height)))
    sheet_epochs = {s.step: s.epoch for s in run.sheets}
    texts = set(tags.get("tensors", []))
    for tag, target in (("xai/alerts/text_summary", run.alerts), ("xai/errors/text_summary", run.errors)):
        if tag in texts:
            for event in acc.Tensors(tag):
                epoch = sheet_epochs.get(int(event.step), epoch_of(int(event.step)))
                for message in _text(event).split("\n\n"):
                    target.append((epoch, message.replace("**ALERT** — ", "").strip()))
    if "xai/predictions/text_summary" in texts:
        for event in acc.Tensors("xai/predictions/text_summary"):
            epoch = sheet_epochs.get(int(event.step), epoch_of(int(event.step)))
            run.predictions[epoch] = parse_markdown_table(_text(event))
    if "xai/settings/text_summary" in texts:
        text = _text(acc.Tensors("xai/settings/text_summary")[0])
        block = re.search(r"```json\n(.*?)\n```", text, re.S)
        if block:
            run.settings = json.loads(block.group(1))
    return run
