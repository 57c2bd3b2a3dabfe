"""The TensorBoard dashboard: per method one chart where the watched score, its threshold and the alerts are told
apart at first sight, and a Custom Scalars layout that shows these charts first.

TensorBoard draws every series of one *run* (event-file directory) in one colour, so the summary series are written,
against the **epoch**, under the same tag into three small runs inside the logger's directory (as
``SummaryWriter.add_scalars`` does), each a colour of its own and named after what it holds:

* ``<log_dir>/xai-score``: what is watched: ``xai/summary/<method>/detector`` (the drift detector's score,
  ``xai/<method>/alert/score``) and ``xai/summary/<method>/rule_<key>`` (the drift series a
  :class:`~lightning_xai.DriftRule` watches);
* ``<log_dir>/xai-threshold``: the same tags, the threshold that turns them into an alert (the detector's calibrated
  threshold, or the rule's fixed one);
* ``<log_dir>/xai-alert``: the same tags, a marker at each epoch that raised an alert, placed at the threshold the
  score crossed (so it does not hide the score's own point, and it is never the chart's extreme value, which
  TensorBoard's default "Ignore outliers" would clip).

The cost ``xai/summary/seconds`` stays in the logger's own run. A named monitor's tags are ``xai/<name>/summary/...``
(:func:`named`). The detail scalars (``xai/<method>/drift/...``, ``xai/localization/...``, quality diagnostics) stay
where ``pl_module.log`` puts them, against the global step, in the layout's second category (closed at first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ALERT_RUN",
    "SCORE_RUN",
    "SUMMARY_PREFIX",
    "SUMMARY_RUNS",
    "THRESHOLD_RUN",
    "custom_scalars_layout",
    "layout_summary",
    "named",
    "summary_scalars",
]

SUMMARY_PREFIX = "xai/summary"
SUMMARY_CATEGORY = "xai summary (x = epoch)"
DETAIL_CATEGORY = "xai detail (x = global step)"
#: the runs (sub-directories of the logger's directory) that hold the summary series, one colour each
SCORE_RUN, THRESHOLD_RUN, ALERT_RUN = "xai-score", "xai-threshold", "xai-alert"
#: the order the summary runs are opened in (TensorBoard colours runs in the order they started)
SUMMARY_RUNS = (SCORE_RUN, ALERT_RUN, THRESHOLD_RUN)
#: the logger's own run
MAIN_RUN = ""


def named(tag: str, name: str | None) -> str:
    """A named monitor's tag or file path: ``xai/<name>/...``; the tag itself without a name.

    Example::

        >>> named("xai/sheet", "val"), named("xai/sheet", None), named("settings", "val")
        ('xai/val/sheet', 'xai/sheet', 'val/settings')
    """
    if name is None:
        return tag
    return f"xai/{name}/{tag[4:]}" if tag.startswith("xai/") else f"{name}/{tag}"


def rule_chart(key: str) -> str:
    """The summary tag's last part for a rule's key: ``rule_rank_vs_reference_median``."""
    return "rule_" + key.replace("/", "_")


def summary_scalars(
    scalars: Mapping[str, float],
    alerts: Sequence[Any],
    methods: Sequence[str],
    rules: Sequence[Any] = (),
    name: str | None = None,
) -> dict[str, dict[str, float]]:
    """The summary series of one evaluation, per run (``""``: the logger's own run), from its logged scalars, its
    alerts and the monitor's rules.

    Example::

        >>> points = summary_scalars({"xai/gradcam/alert/score": 0.2, "xai/gradcam/alert/threshold": 0.3,
        ...     "xai/seconds": 1.5}, [], ["gradcam"])
        >>> points == {"": {"xai/summary/seconds": 1.5}, "xai-score": {"xai/summary/gradcam/detector": 0.2},
        ...     "xai-threshold": {"xai/summary/gradcam/detector": 0.3}, "xai-alert": {}}
        True
    """
    out: dict[str, dict[str, float]] = {MAIN_RUN: {}, SCORE_RUN: {}, THRESHOLD_RUN: {}, ALERT_RUN: {}}
    for method in methods:
        base = named(f"{SUMMARY_PREFIX}/{method}", name)
        score = scalars.get(f"xai/{method}/alert/score")
        if score is not None:
            out[SCORE_RUN][f"{base}/detector"] = float(score)
        threshold = scalars.get(f"xai/{method}/alert/threshold")
        if threshold is not None:
            out[THRESHOLD_RUN][f"{base}/detector"] = float(threshold)
        keys = []
        for rule in rules:
            if getattr(rule, "methods", None) is not None and method not in rule.methods:
                continue
            keys.append(rule.key)
            value = scalars.get(f"xai/{method}/drift/{rule.key}")
            if value is not None:
                out[SCORE_RUN][f"{base}/{rule_chart(rule.key)}"] = float(value)
                out[THRESHOLD_RUN][f"{base}/{rule_chart(rule.key)}"] = float(rule.threshold)
        for alert in alerts:
            if getattr(alert, "method", None) != method:
                continue
            key = f"{alert.metric}/{alert.statistic}"
            chart = rule_chart(key) if key in keys else "detector"
            out[ALERT_RUN].setdefault(f"{base}/{chart}", float(alert.threshold))
    if "xai/seconds" in scalars:
        out[MAIN_RUN][named(f"{SUMMARY_PREFIX}/seconds", name)] = float(scalars["xai/seconds"])
    return out


def custom_scalars_layout(
    methods: Sequence[str], name: str | None = None, rules: Sequence[Any] = ()
) -> dict[str, dict[str, list[Any]]]:
    """The layout for ``SummaryWriter.add_custom_scalars``: a summary category (per method one chart of the detector's
    score, threshold and alerts, one of the rules' when there are rules; one for the cost) and a detail category.
    Tags are regular expressions matched from the start of the tag; a named monitor's categories carry its name.

    Example::

        >>> layout = custom_scalars_layout(["gradcam"])
        >>> layout["xai summary (x = epoch)"]["gradcam: detector score, threshold, alerts"]
        ['Multiline', ['xai/summary/gradcam/detector$']]
        >>> list(custom_scalars_layout(["gradcam"], name="a"))
        ['xai a: summary (x = epoch)', 'xai a: detail (x = global step)']
    """
    summary: dict[str, list[Any]] = {}
    detail: dict[str, list[Any]] = {}
    for method in methods:
        base = re.escape(named(f"{SUMMARY_PREFIX}/{method}", name))
        m = re.escape(named(f"xai/{method}", name))
        summary[f"{method}: detector score, threshold, alerts"] = ["Multiline", [f"{base}/detector$"]]
        if any(getattr(r, "methods", None) is None or method in r.methods for r in rules):
            summary[f"{method}: rule series, thresholds, alerts"] = ["Multiline", [f"{base}/rule_.*"]]
        detail[f"{method}: rank drift"] = ["Multiline", [f"{m}/drift/rank_.*"]]
        detail[f"{method}: top-k drift"] = ["Multiline", [f"{m}/drift/topk_.*"]]
        detail[f"{method}: detector score and threshold"] = ["Multiline", [f"{m}/alert/(score|threshold)$"]]
        detail[f"{method}: quality and cost"] = ["Multiline", [f"{m}/(?!drift/|alert/).*"]]
    summary["seconds per evaluation"] = ["Multiline", [re.escape(named(f"{SUMMARY_PREFIX}/seconds", name)) + "$"]]
    detail["localisation (with probe_masks)"] = ["Multiline", [re.escape(named("xai/localization", name)) + "/.*"]]
    return {category_title(SUMMARY_CATEGORY, name): summary, category_title(DETAIL_CATEGORY, name): detail}


def category_title(title: str, name: str | None) -> str:
    """``"xai summary (x = epoch)"``, or ``"xai <name>: summary (x = epoch)"`` for a named monitor."""
    return title if name is None else title.replace("xai ", f"xai {name}: ", 1)


def layout_summary(layouts: Sequence[Mapping[str, Mapping[str, list[Any]]]]) -> Any:
    """The ``custom_scalars__config__`` summary for several monitors' layouts in one event file (TensorBoard reads
    the last layout of a run only): their categories in order, the detail categories closed so that the summaries
    fill the first screen."""
    from torch.utils.tensorboard.summary import custom_scalars

    merged: dict[str, Mapping[str, list[Any]]] = {}
    for layout in layouts:
        merged.update(layout)
    summary = custom_scalars(merged)
    from tensorboard.plugins.custom_scalar import layout_pb2

    value = summary.value[0]
    proto = layout_pb2.Layout.FromString(value.tensor.string_val[0])
    for category in proto.category:
        category.closed = category.title.endswith(DETAIL_CATEGORY.removeprefix("xai "))
    value.tensor.string_val[0] = proto.SerializeToString()
    return summary
