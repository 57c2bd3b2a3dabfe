"""Read what the monitor logged to TensorBoard event files back into plain Python: the scalars by epoch, the
explanation sheets, the predictions tables (with each probe's drift), the alerts and the run's settings.

A run directory may hold several monitors (``AttributionMonitor(name="a")`` logs under ``xai/a/...``): each one is
read as its own :class:`RunLog`, its tags with the name taken out (``xai/a/sheet`` is read as ``xai/sheet``).

The dashboard's summary series lie in small runs inside the run directory (``xai-score``, ``xai-threshold``,
``xai-alert``: one colour each in TensorBoard); they are read as part of their run, under the keys
``xai/summary/<method>/watched``, ``.../threshold`` and ``.../alert`` (the detector), ``.../rule_<key>`` and
``.../rule_<key>_threshold`` (a rule; its alerts join ``.../alert``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "Sheet", "find_runs", "monitor_names", "parse_markdown_table", "read_run", "read_runs"]

#: the summary runs inside a run directory (sub-directory name -> what their series are)
SUMMARY_RUNS = {"xai-score": "score", "xai-threshold": "threshold", "xai-alert": "alert"}
#: the tags that say a monitor logged here, with its name (None: an unnamed monitor)
_MONITOR_TAG = re.compile(
    r"xai/(?:(?P<name>[^/]+)/)?(?:sheet|settings/text_summary|summary/.+|[^/]+/(?:drift|alert)/.+)"
)


@dataclass
class Sheet:
    """One ``xai/sheet`` image: when, its encoded bytes (PNG as logged) and size."""

    epoch: int
    step: int
    png: bytes
    width: int
    height: int


@dataclass
class RunLog:
    """Everything the report needs from one monitor's run.

    Attributes:
        path: the directory holding the event files.
        scalars: ``xai/*`` tag -> ``[(epoch, value), ...]`` (summary tags are logged against the epoch already;
            the others are mapped from the global step to the epoch through Lightning's ``epoch`` scalar).
        sheets: the explanation sheets, in order: every one in the event files.
        predictions: epoch -> the predictions table (list of row dicts; ``None`` where unknown).
        alerts: ``(epoch, message)``.
        errors: ``(epoch, message)``.
        settings: the monitor's settings (empty when the run predates them).
        name: the monitor's ``name=`` (its tags are ``xai/<name>/...``), None for an unnamed monitor.
        evidence: ``(method, image)``: the evidence image of each alert (``xai/<method>/alert/evidence``).
        label: how the report names the run (its path under the log directory), empty: the directory's name.
    """

    path: Path
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    sheets: list[Sheet] = field(default_factory=list)
    predictions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    alerts: list[tuple[int, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    label: str = ""
    evidence: list[tuple[str, Sheet]] = field(default_factory=list)

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

    @property
    def evaluations(self) -> list[int]:
        """The evaluated epochs, in order (from the sheets, else from the cost series every evaluation logs)."""
        if self.sheets:
            return [s.epoch for s in self.sheets]
        return [e for e, _ in self.scalars.get("xai/summary/seconds", [])]


def find_runs(logdir: str | Path) -> list[Path]:
    """Every directory under ``logdir`` (itself included) that holds TensorBoard event files, sorted.

    Example::

        >>> find_runs("/nonexistent")
        []
    """
    root = Path(logdir)
    found = {p.parent for p in root.rglob("events.out.tfevents.*")} if root.exists() else set()
    return sorted(p for p in found if not (p.name in SUMMARY_RUNS and p.parent in found))  # summaries: their run


def monitor_names(tags: dict[str, list[str]]) -> list[str | None]:
    """The monitors that logged the tags of one run (``None``: unnamed), unnamed first then by name.

    Example::

        >>> monitor_names({"images": ["xai/sheet", "xai/a/sheet", "xai/a/gradcam/overlay"], "scalars": ["epoch"]})
        [None, 'a']
        >>> monitor_names({"scalars": ["xai/gradcam/drift/rank_vs_previous/median", "xai/b/gradcam/alert/score"]})
        [None, 'b']
    """
    found: set[str | None] = set()
    xai = False
    for kind in ("images", "tensors", "scalars"):
        for tag in tags.get(kind, []):
            xai = xai or tag.startswith("xai/")
            match = _MONITOR_TAG.fullmatch(tag)
            if match:
                found.add(match.group("name"))
    if not found and xai:
        found.add(None)  # a run that predates the summary and settings tags
    return sorted(found, key=lambda n: (n is not None, n or ""))


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


def _load(path: str | Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 0: keep every event (TensorBoard's own server keeps 10 images per tag unless told otherwise)
    acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _summaries(path: str | Path) -> dict[str, Any]:
    """The summary runs inside ``path`` that hold event files, loaded: kind (``score``...) -> accumulator."""
    return {
        kind: _load(Path(path) / sub)
        for sub, kind in SUMMARY_RUNS.items()
        if any((Path(path) / sub).glob("events.out.tfevents.*"))
    }


def read_runs(path: str | Path) -> list[RunLog]:
    """One :class:`RunLog` per monitor that logged into the run directory ``path`` (all its event files)."""
    acc, subs = _load(path), _summaries(path)
    return [_read(acc, subs, Path(path), name) for name in monitor_names(acc.Tags())]


def read_run(path: str | Path, name: str | None = None) -> RunLog:
    """Read one monitor's run (``name``: its ``name=``) from a run directory (all its event files, e.g. after a
    resume)."""
    return _read(_load(path), _summaries(path), Path(path), name)


def _summary_key(kind: str, key: str) -> str:
    """The key a summary run's series is read under (see the module's docstring)."""
    base, _, last = key.rpartition("/")
    if last == "detector":
        return f"{base}/watched" if kind == "score" else f"{base}/{kind}"
    if kind == "alert":
        return f"{base}/alert"
    return key + ("_threshold" if kind == "threshold" else "")


def _read(acc: Any, subs: dict[str, Any], path: Path, name: str | None) -> RunLog:
    run = RunLog(path, name=name)
    tags = acc.Tags()
    own = f"xai/{name}/" if name else "xai/"
    others = [f"xai/{n}/" for n in monitor_names(tags) if n is not None and n != name]

    def local(tag: str) -> str | None:
        """The tag as an unnamed monitor writes it, or None when it belongs to no part of this monitor."""
        if not tag.startswith(own) or any(tag.startswith(o) for o in others):
            return None
        return "xai/" + tag[len(own) :]

    scalar_tags = set(tags.get("scalars", []))
    epoch_marks = sorted((e.step, int(e.value)) for e in acc.Scalars("epoch")) if "epoch" in scalar_tags else []

    def epoch_of(step: int) -> int:
        """The epoch Lightning logged at the last step <= ``step`` (the monitor logs at the epoch's end)."""
        found = [ep for s, ep in epoch_marks if s <= step]
        return found[-1] if found else (epoch_marks[0][1] if epoch_marks else step)

    for tag in sorted(scalar_tags):
        key = local(tag)
        if key is None:
            continue
        events = acc.Scalars(tag)
        if key.startswith("xai/summary/"):
            run.scalars[key] = [(int(e.step), float(e.value)) for e in events]
        else:
            run.scalars[key] = [(epoch_of(int(e.step)), float(e.value)) for e in events]
    for kind, sub in subs.items():  # logged against the epoch
        for tag in sorted(sub.Tags().get("scalars", [])):
            key = local(tag)
            if key is not None and key.startswith("xai/summary/"):
                points = run.scalars.setdefault(_summary_key(kind, key), [])
                points += [(int(e.step), float(e.value)) for e in sub.Scalars(tag)]
                points.sort()
    # the i-th sheet belongs to the i-th evaluation: xai/summary/seconds holds their epochs in order
    evaluation_epochs = [e for e, _ in run.scalars.get("xai/summary/seconds", [])]
    images = {local(t): t for t in tags.get("images", [])}
    if "xai/sheet" in images:
        events = acc.Images(images["xai/sheet"])
        for i, img in enumerate(events):
            same = len(evaluation_epochs) == len(events)
            epoch = evaluation_epochs[i] if same else epoch_of(int(img.step))
            run.sheets.append(Sheet(epoch, int(img.step), img.encoded_image_string, int(img.width), int(img.height)))
    sheet_epochs = {s.step: s.epoch for s in run.sheets}
    for key in sorted(k for k in images if k is not None and re.fullmatch(r"xai/[^/]+/alert/evidence", k)):
        for img in acc.Images(images[key]):
            epoch = sheet_epochs.get(int(img.step), epoch_of(int(img.step)))
            picture = Sheet(epoch, int(img.step), img.encoded_image_string, int(img.width), int(img.height))
            run.evidence.append((key.split("/")[1], picture))
    run.evidence.sort(key=lambda item: (item[1].step, item[0]))
    texts = {local(t): t for t in tags.get("tensors", [])}
    for key, target in (("xai/alerts/text_summary", run.alerts), ("xai/errors/text_summary", run.errors)):
        if key in texts:
            for event in acc.Tensors(texts[key]):
                epoch = sheet_epochs.get(int(event.step), epoch_of(int(event.step)))
                for message in _text(event).split("\n\n"):
                    target.append((epoch, message.replace("**ALERT** — ", "").strip()))
    if "xai/predictions/text_summary" in texts:
        for event in acc.Tensors(texts["xai/predictions/text_summary"]):
            epoch = sheet_epochs.get(int(event.step), epoch_of(int(event.step)))
            run.predictions[epoch] = parse_markdown_table(_text(event))
    if "xai/settings/text_summary" in texts:
        text = _text(acc.Tensors(texts["xai/settings/text_summary"])[0])
        block = re.search(r"```json\n(.*?)\n```", text, re.S)
        if block:
            run.settings = json.loads(block.group(1))
    return run
