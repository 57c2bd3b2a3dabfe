"""Read what the monitor logged to TensorBoard event files back, one :class:`RunLog` per monitor: scalars by epoch,
sheets, predictions, alerts and settings; a named monitor's tags without the name (``xai/a/sheet`` as ``xai/sheet``),
the summary runs (``xai-score``, ...) as ``xai/summary/<method>/watched|threshold|alert|rule_<key>[_threshold]``."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the summary runs inside a run directory (sub-directory name -> what their series are)
SUMMARY_RUNS = {"xai-score": "score", "xai-threshold": "threshold", "xai-alert": "alert"}
#: the tags that say a monitor logged here, with its name (None: an unnamed monitor)
_MONITOR_TAG = re.compile(
    r"xai/(?:(?P<name>[^/]+)/)?(?:sheet|settings/text_summary|summary/.+|[^/]+/(?:drift|alert)/.+)"
)


@dataclass
class Sheet:
    """One logged image (``xai/sheet`` or an alert's evidence): when, its encoded bytes and size."""

    epoch: int
    step: int
    encoded: bytes  # as logged: JPEG (older runs: PNG); Pillow reads either
    width: int
    height: int


@dataclass
class RunLog:
    """Everything the report needs from one monitor's run (the directory ``path`` holding its event files)."""

    path: Path
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # xai/* tag -> [(epoch, value)]
    sheets: list[Sheet] = field(default_factory=list)  # the explanation sheets, in order
    predictions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # epoch -> the table's rows
    alerts: list[tuple[int, str]] = field(default_factory=list)  # (epoch, message)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (epoch, message)
    settings: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # the monitor's name=, None for an unnamed monitor
    label: str = ""  # how the report names the run (its path under the log directory); empty: the directory's name
    evidence: list[tuple[str, Sheet]] = field(default_factory=list)  # (method, image) of each alert

    @property
    def methods(self) -> list[str]:
        """The methods, from the settings or else from the scalar tags."""
        found = sorted({t.split("/")[1] for t in self.scalars if re.match(r"xai/[^/]+/(drift|alert)/", t)})
        return list(self.settings.get("methods") or found)

    @property
    def epochs(self) -> list[int]:
        return sorted({s.epoch for s in self.sheets} | {e for v in self.scalars.values() for e, _ in v})

    @property
    def evaluations(self) -> list[int]:
        """The evaluated epochs, in order (from the sheets, else from the cost series every evaluation logs)."""
        return [s.epoch for s in self.sheets] or [e for e, _ in self.scalars.get("xai/summary/seconds", [])]


def find_runs(logdir: str | Path) -> list[Path]:
    """Every directory under ``logdir`` (itself included) that holds TensorBoard event files, sorted.

    Example::

        >>> find_runs("/nonexistent")
        []
    """
    root = Path(logdir)
    found = {p.parent for p in root.rglob("events.out.tfevents.*")} if root.exists() else set()
    return sorted(p for p in found if not (p.name in SUMMARY_RUNS and p.parent in found))  # summaries: their run


def read_logdir(logdir: str) -> list[RunLog]:
    """Every monitor's run under ``logdir``, labelled by its path under ``logdir`` (the directory's own name when
    the events lie in ``logdir``).

    Example::

        >>> read_logdir("/nonexistent")
        []
    """
    root = Path(logdir)
    runs = []
    for path in find_runs(root):
        relative = path.relative_to(root).as_posix()
        for run in read_runs(path):
            run.label = root.resolve().name if relative == "." else relative
            runs.append(run)
    return runs


def monitor_names(tags: dict[str, list[str]]) -> list[str | None]:
    """The monitors that logged the tags of one run (``None``: unnamed), unnamed first then by name."""
    all_tags = [t for kind in ("images", "tensors", "scalars") for t in tags.get(kind, [])]
    found = {m.group("name") for m in map(_MONITOR_TAG.fullmatch, all_tags) if m}
    if not found and any(t.startswith("xai/") for t in all_tags):
        found.add(None)  # a run that predates the summary and settings tags
    return sorted(found, key=lambda n: (n is not None, n or ""))


def parse_markdown_table(text: str) -> list[dict[str, Any]]:
    """Rows of a markdown table as dicts; numbers become int/float, ``–``/``-``/empty become None."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [dict(zip(rows[0], map(_value, row), strict=False)) for row in rows[2:]]


def _value(text: str) -> Any:
    if text in ("", "–", "-"):
        return None
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def _load(path: str | Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 0: keep every event (TensorBoard's own server keeps 10 images per tag unless told otherwise)
    acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _summaries(path: str | Path) -> dict[str, Any]:
    """The summary runs inside ``path`` that hold event files, loaded: kind (``score``...) -> accumulator."""
    subs = {kind: Path(path) / sub for sub, kind in SUMMARY_RUNS.items()}
    return {kind: _load(sub) for kind, sub in subs.items() if any(sub.glob("events.out.tfevents.*"))}


def read_runs(path: str | Path) -> list[RunLog]:
    """One :class:`RunLog` per monitor that logged into the run directory ``path`` (all its event files)."""
    acc, subs = _load(path), _summaries(path)
    return [_read(acc, subs, Path(path), name) for name in monitor_names(acc.Tags())]


def read_run(path: str | Path, name: str | None = None) -> RunLog:
    """Read one monitor's run (``name``: its ``name=``) from a run directory (all its event files)."""
    return _read(_load(path), _summaries(path), Path(path), name)


def _summary_key(kind: str, key: str) -> str:
    """The key a summary run's series is read under (see the module's docstring)."""
    base, _, last = key.rpartition("/")
    if last == "detector":
        return f"{base}/watched" if kind == "score" else f"{base}/{kind}"
    return f"{base}/alert" if kind == "alert" else key + ("_threshold" if kind == "threshold" else "")


def _read(acc: Any, subs: dict[str, Any], path: Path, name: str | None) -> RunLog:
    run = RunLog(path, name=name)
    tags = acc.Tags()
    own = f"xai/{name}/" if name else "xai/"
    others = tuple(f"xai/{n}/" for n in monitor_names(tags) if n is not None and n != name)

    def local(tag: str) -> str | None:
        """The tag as an unnamed monitor writes it, or None when it is not this monitor's."""
        return None if not tag.startswith(own) or tag.startswith(others) else "xai/" + tag[len(own) :]

    scalar_tags = set(tags.get("scalars", []))
    marks = sorted((e.step, int(e.value)) for e in acc.Scalars("epoch")) if "epoch" in scalar_tags else []

    def epoch_of(step: int) -> int:
        """The epoch Lightning logged at the last step <= ``step`` (the monitor logs at the epoch's end)."""
        found = [ep for s, ep in marks if s <= step]
        return found[-1] if found else (marks[0][1] if marks else step)

    for tag in sorted(scalar_tags):
        if (key := local(tag)) is not None:
            summary = key.startswith("xai/summary/")  # logged against the epoch already
            run.scalars[key] = [(e.step if summary else epoch_of(e.step), e.value) for e in acc.Scalars(tag)]
    for kind, sub in subs.items():
        for tag in sorted(sub.Tags().get("scalars", [])):
            if (key := local(tag)) is not None and key.startswith("xai/summary/"):
                k = _summary_key(kind, key)
                run.scalars[k] = sorted(run.scalars.get(k, []) + [(e.step, e.value) for e in sub.Scalars(tag)])
    # the i-th sheet belongs to the i-th evaluation: xai/summary/seconds holds their epochs in order
    evaluations = [e for e, _ in run.scalars.get("xai/summary/seconds", [])]
    images = {local(t): t for t in tags.get("images", [])}
    sheets = acc.Images(images["xai/sheet"]) if "xai/sheet" in images else []
    for i, img in enumerate(sheets):
        epoch = evaluations[i] if len(evaluations) == len(sheets) else epoch_of(img.step)
        run.sheets.append(Sheet(epoch, img.step, img.encoded_image_string, img.width, img.height))
    sheet_epochs = {s.step: s.epoch for s in run.sheets}

    def at(step: int) -> int:
        return sheet_epochs.get(step, epoch_of(step))

    for key in sorted(k for k in images if k is not None and re.fullmatch(r"xai/[^/]+/alert/evidence", k)):
        for img in acc.Images(images[key]):
            picture = Sheet(at(img.step), img.step, img.encoded_image_string, img.width, img.height)
            run.evidence.append((key.split("/")[1], picture))
    run.evidence.sort(key=lambda item: (item[1].step, item[0]))
    texts = {local(t): acc.Tensors(t) for t in tags.get("tensors", [])}

    def text(event: Any) -> str:
        return event.tensor_proto.string_val[0].decode("utf-8", errors="replace")

    for key, target in (("xai/alerts/text_summary", run.alerts), ("xai/errors/text_summary", run.errors)):
        for event in texts.get(key, []):
            target += [(at(event.step), m.replace("**ALERT** — ", "").strip()) for m in text(event).split("\n\n")]
    for event in texts.get("xai/predictions/text_summary", []):
        run.predictions[at(event.step)] = parse_markdown_table(text(event))
    if texts.get("xai/settings/text_summary"):
        block = re.search(r"```json\n(.*?)\n```", text(texts["xai/settings/text_summary"][0]), re.S)
        run.settings = json.loads(block.group(1)) if block else {}
    return run
