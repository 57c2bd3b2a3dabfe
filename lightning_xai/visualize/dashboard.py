"""The TensorBoard dashboard: per method a Custom Scalars chart of the watched score, its threshold and its alerts, each
a run (directory) of its own in the logger's so that each gets a colour; an alert's marker sits at its threshold."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

SUMMARY_PREFIX = "xai/summary"
SUMMARY_CATEGORY = "xai summary (x = epoch)"
DETAIL_CATEGORY = "xai detail (x = global step)"
#: the runs (sub-directories of the logger's directory) that hold the summary series, one colour each
SCORE_RUN, THRESHOLD_RUN, ALERT_RUN = "xai-score", "xai-threshold", "xai-alert"
SUMMARY_RUNS = (SCORE_RUN, ALERT_RUN, THRESHOLD_RUN)  # the order they are opened in: TensorBoard's colour order
MAIN_RUN = ""  # the logger's own run


def named(tag: str, name: str | None) -> str:
    """A named monitor's tag or file path: ``xai/<name>/...`` (``<name>/...`` for a path); the tag without a name."""
    if name is None:
        return tag
    return f"xai/{name}/{tag[4:]}" if tag.startswith("xai/") else f"{name}/{tag}"


def summary_scalars(
    scalars: Mapping[str, float],
    alerts: Sequence[Any],
    methods: Sequence[str],
    rules: Sequence[Any] = (),
    name: str | None = None,
) -> dict[str, dict[str, float]]:
    """The summary series of one evaluation per run (``""``: the logger's own) from its scalars, alerts and rules."""
    out: dict[str, dict[str, float]] = {MAIN_RUN: {}, SCORE_RUN: {}, THRESHOLD_RUN: {}, ALERT_RUN: {}}
    for method in methods:
        base = named(f"{SUMMARY_PREFIX}/{method}", name)
        for run, key in ((SCORE_RUN, "score"), (THRESHOLD_RUN, "threshold")):
            if (value := scalars.get(f"xai/{method}/alert/{key}")) is not None:
                out[run][f"{base}/detector"] = float(value)
        watched = [r for r in rules if getattr(r, "methods", None) is None or method in r.methods]
        for rule in watched:
            if (value := scalars.get(f"xai/{method}/drift/{rule.key}")) is not None:
                chart = f"{base}/rule_{rule.key.replace('/', '_')}"
                out[SCORE_RUN][chart], out[THRESHOLD_RUN][chart] = float(value), float(rule.threshold)
        for alert in (a for a in alerts if getattr(a, "method", None) == method):
            key = f"{alert.metric}/{alert.statistic}"
            chart = "rule_" + key.replace("/", "_") if key in {r.key for r in watched} else "detector"
            out[ALERT_RUN].setdefault(f"{base}/{chart}", float(alert.threshold))
    if "xai/seconds" in scalars:
        out[MAIN_RUN][named(f"{SUMMARY_PREFIX}/seconds", name)] = float(scalars["xai/seconds"])
    return out


def custom_scalars_layout(
    methods: Sequence[str], name: str | None = None, rules: Sequence[Any] = (), localised: bool = False
) -> dict[str, dict[str, list[Any]]]:
    """The layout for ``SummaryWriter.add_custom_scalars``: a summary category (per method the detector's chart, the
    rules' chart when there are rules; the cost) and a detail category (the localisation chart when ``localised``:
    with ``Display.probe_masks``); tags are regular expressions."""
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
    if localised:
        detail["localisation"] = ["Multiline", [re.escape(named("xai/localization", name)) + "/.*"]]
    prefix = "xai " if name is None else f"xai {name}: "
    return {SUMMARY_CATEGORY.replace("xai ", prefix, 1): summary, DETAIL_CATEGORY.replace("xai ", prefix, 1): detail}


def layout_summary(layouts: Sequence[Mapping[str, Mapping[str, list[Any]]]]) -> Any:
    """The custom scalars summary of several monitors' layouts (a run's last one counts), the details closed."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from torch.utils.tensorboard.summary import custom_scalars

    summary = custom_scalars({k: v for layout in layouts for k, v in layout.items()})
    value = summary.value[0]
    proto = layout_pb2.Layout.FromString(value.tensor.string_val[0])
    for category in proto.category:
        category.closed = category.title.endswith(DETAIL_CATEGORY.removeprefix("xai "))
    value.tensor.string_val[0] = proto.SerializeToString()
    return summary
