"""Read what the monitor logged to TensorBoard event files back, one :class:`RunLog` per monitor: scalars by epoch,
sheets, predictions, alerts and settings; a named monitor's tags without the name (``xai/a/sheet`` as ``xai/sheet``),
the summary runs (``xai-score``, ...) as ``xai/summary/<method>/watched|threshold|alert|rule_<key>[_threshold]``.

Everything is kept per evaluation, never merged per epoch: an epoch can hold several (``val_check_interval < 1``,
``validate`` before ``fit``), told apart by the step TensorBoard records (and, for evaluations logged at the same step,
such as two ``validate`` calls before training, by their order: :attr:`Sheet.key`). A fit resumed from a checkpoint into
the same directory replaces the evaluations an abandoned run logged at the steps it does again
(:mod:`lightning_xai.report.restarts`)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_xai.report.restarts import without_redone

#: the summary runs inside a run directory (sub-directory name -> what their series are)
SUMMARY_RUNS = {"xai-score": "score", "xai-threshold": "threshold", "xai-alert": "alert"}
#: the tags that say a monitor logged here, with its name (None: an unnamed monitor)
_MONITOR_TAG = re.compile(
    r"xai/(?:(?P<name>[^/]+)/)?(?:sheet|settings/text_summary|fit_start|summary/.+|[^/]+/(?:drift|alert)/.+)"
)


@dataclass
class Sheet:
    """One logged image (``xai/sheet`` or an alert's evidence): when, its encoded bytes and size."""

    epoch: int
    step: int
    encoded: bytes  # as logged: JPEG (older runs: PNG); Pillow reads either
    width: int
    height: int
    repeat: int = 0  # how many earlier evaluations logged at the same step (two `validate` calls before training)

    @property
    def key(self) -> tuple[int, int]:
        """The evaluation it belongs to, ``(step, repeat)``: unique in a run, even where an epoch has several."""
        return self.step, self.repeat


@dataclass
class RunLog:
    """Everything the report needs from one monitor's run (the directory ``path`` holding its event files)."""

    path: Path
    # xai/* tag -> [(epoch, value)]; an epoch's n > 1 evaluations at epoch + k / n (k = 0 .. n - 1), in order
    scalars: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    sheets: list[Sheet] = field(default_factory=list)  # the explanation sheets, in order
    predictions: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)  # Sheet.key -> rows
    alerts: list[tuple[int, int, int, str]] = field(default_factory=list)  # (epoch, *Sheet.key, message)
    errors: list[tuple[int, int, str]] = field(default_factory=list)  # (epoch, step, message)
    settings: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # the monitor's name=, None for an unnamed monitor
    label: str = ""  # how the report names the run (its path under the log directory); empty: the directory's name
    evidence: list[tuple[str, Sheet]] = field(default_factory=list)  # (method, image) of each alert
    # (epoch, step) where a fit resumed from a checkpoint did again what an abandoned run had evaluated (its own kept)
    restarts: list[tuple[int, int]] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """The methods, from the settings or else from the scalar tags."""
        found = sorted({t.split("/")[1] for t in self.scalars if re.match(r"xai/[^/]+/(drift|alert)/", t)})
        return list(self.settings.get("methods") or found)

    @property
    def epochs(self) -> list[int]:
        return sorted({s.epoch for s in self.sheets} | {int(e) for v in self.scalars.values() for e, _ in v})

    @property
    def evaluations(self) -> list[int]:
        """The evaluated epochs, in order (from the sheets, else from the cost series every evaluation logs)."""
        return [s.epoch for s in self.sheets] or [int(e) for e, _ in self.scalars.get("xai/summary/seconds", [])]

    def when(self, epoch: int, step: int, repeat: int = 0) -> str:
        """How the page names an evaluation: ``epoch 3``; with the step where the epoch has several evaluations
        (``epoch 0, step 4``), and which one where several share the step too (``epoch 0, step 0 (#2)``).

        Example::

            >>> sheets = [Sheet(0, 4, b"", 0, 0), Sheet(0, 8, b"", 0, 0), Sheet(1, 12, b"", 0, 0)]
            >>> run = RunLog(Path("."), sheets=sheets)
            >>> run.when(0, 8), run.when(1, 12)
            ('epoch 0, step 8', 'epoch 1')
        """
        if self.evaluations.count(epoch) < 2:
            return f"epoch {epoch}"
        return f"epoch {epoch}, step {step}" + (f" (#{repeat + 1})" if repeat else "")


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

    acc, subs, found = without_redone(acc, subs, local)  # a resumed fit's evaluations replace the abandoned run's
    run.restarts = [(r.epoch, r.global_step) for r in found if r.replaces]
    scalar_tags = set(tags.get("scalars", []))
    marks = sorted((e.step, int(e.value)) for e in acc.Scalars("epoch")) if "epoch" in scalar_tags else []

    def epoch_of(step: int) -> int:
        """The epoch Lightning logged at the last step <= ``step`` (the monitor logs at the epoch's end)."""
        found = [ep for s, ep in marks if s <= step]
        return found[-1] if found else (marks[0][1] if marks else step)

    events: dict[str, list[tuple[bool, Any]]] = {}  # key -> [(logged against the epoch, event)]
    for tag in sorted(scalar_tags):
        if (key := local(tag)) is not None:  # the summary tags are logged against the epoch, the rest at the step
            events[key] = [(key.startswith("xai/summary/"), e) for e in _in_time(acc.Scalars(tag))]
    for kind, sub in subs.items():
        for tag in sorted(sub.Tags().get("scalars", [])):
            if (key := local(tag)) is not None and key.startswith("xai/summary/"):
                k = _summary_key(kind, key)
                merged = events.get(k, []) + [(True, e) for e in sub.Scalars(tag)]
                events[k] = sorted(merged, key=lambda item: (item[1].step, item[1].wall_time))
    # the i-th sheet belongs to the i-th evaluation: xai/summary/seconds holds their epochs in order
    seconds = [e for _, e in events.get("xai/summary/seconds", [])]
    images = {local(t): t for t in tags.get("images", [])}
    sheets = _in_time(acc.Images(images["xai/sheet"])) if "xai/sheet" in images else []
    for i, img in enumerate(sheets):
        epoch = seconds[i].step if len(seconds) == len(sheets) else epoch_of(img.step)
        repeat = sum(s.step == img.step for s in run.sheets)
        run.sheets.append(Sheet(epoch, img.step, img.encoded_image_string, img.width, img.height, repeat))
    place = _placer(
        [s.epoch for s in run.sheets] or [e.step for e in seconds],
        seconds,
        [e.step for _, e in events.get("xai/seconds", [])],
        epoch_of,
    )
    for key, logged in events.items():
        run.scalars[key] = [(place(on_epoch, e, logged[:i]), e.value) for i, (on_epoch, e) in enumerate(logged)]
    sheet_epochs = {s.step: s.epoch for s in run.sheets}

    def at(step: int) -> int:
        return sheet_epochs.get(step, epoch_of(step))

    for key in sorted(k for k in images if k is not None and re.fullmatch(r"xai/[^/]+/alert/evidence", k)):
        for i, img in enumerate(shown := _in_time(acc.Images(images[key]))):
            repeat = sum(earlier.step == img.step for earlier in shown[:i])
            picture = Sheet(at(img.step), img.step, img.encoded_image_string, img.width, img.height, repeat)
            run.evidence.append((key.split("/")[1], picture))
    run.evidence.sort(key=lambda item: (item[1].key, item[0]))
    texts = {local(t): _in_time(acc.Tensors(t)) for t in tags.get("tensors", [])}

    def text(event: Any) -> str:
        return event.tensor_proto.string_val[0].decode("utf-8", errors="replace")

    tables = texts.get("xai/predictions/text_summary", [])

    def repeat_of(event: Any) -> int:  # the evaluation at its step it belongs to: its table is written just before it
        return max(sum(t.step == event.step and t.wall_time <= event.wall_time for t in tables) - 1, 0)

    def messages(event: Any) -> list[str]:
        return [m.replace("**ALERT** — ", "").strip() for m in text(event).split("\n\n")]

    for event in texts.get("xai/alerts/text_summary", []):
        run.alerts += [(at(event.step), event.step, repeat_of(event), m) for m in messages(event)]
    for event in texts.get("xai/errors/text_summary", []):
        run.errors += [(at(event.step), event.step, m) for m in messages(event)]
    for i, event in enumerate(tables):  # keyed like the sheet of the same evaluation (Sheet.key)
        repeat = sum(earlier.step == event.step for earlier in tables[:i])
        run.predictions[event.step, repeat] = parse_markdown_table(text(event))
    if texts.get("xai/settings/text_summary"):
        block = re.search(r"```json\n(.*?)\n```", text(texts["xai/settings/text_summary"][0]), re.S)
        run.settings = json.loads(block.group(1)) if block else {}
    return run


def _in_time(events: list[Any]) -> list[Any]:
    """``events`` in the order they were written: TensorBoard reads a run's event files in name order, and files a
    run's Trainer calls start within one second differ only in a counter (``.11`` sorts before ``.7``)."""
    return sorted(events, key=lambda event: event.wall_time)


def _placer(
    evaluations: list[int], seconds: list[Any], steps: list[int], epoch_of: Callable[[int], int]
) -> Callable[[bool, Any, list[tuple[bool, Any]]], float]:
    """Where a scalar event goes on the epoch axis: the epoch of its evaluation, where the epoch has ``n > 1``
    evaluations ``epoch + k / n`` for its ``k``-th. The evaluation of an event logged against the epoch (the summary
    series) is the last of that epoch whose ``xai/summary/seconds`` was logged before it (the same job logs them in
    that order); of one logged at Lightning's step, the evaluation that logged ``xai/seconds`` at that step."""
    position = [e + sum(x == e for x in evaluations[:i]) / evaluations.count(e) for i, e in enumerate(evaluations)]
    walls = [e.wall_time for e in seconds] if len(seconds) == len(evaluations) else []
    steps = steps if len(steps) == len(evaluations) else []

    def place(on_epoch: bool, event: Any, earlier: list[tuple[bool, Any]]) -> float:
        epoch = event.step if on_epoch else epoch_of(event.step)
        found = [] if on_epoch or not steps else [i for i, s in enumerate(steps) if s == event.step]
        found = found or [i for i, e in enumerate(evaluations) if e == epoch]
        if not found:
            return float(epoch)
        before = [i for i in found if walls and walls[i] <= event.wall_time]
        if len(found) > 1 and before:
            return position[before[-1]]
        same = sum(e.step == event.step for _, e in earlier)  # no wall times: the k-th event at the step
        return position[found[min(same, len(found) - 1)]]

    return place
