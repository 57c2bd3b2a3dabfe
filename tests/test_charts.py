"""The summary charts a person reads at a glance (issue 23 item 1): score, threshold and alerts in runs of their own
(TensorBoard colours by run), the alert marker at the threshold it crossed (not on the score's point), the summary
category open and the detail closed, and a named monitor's charts under its name."""

from __future__ import annotations

from types import SimpleNamespace

from tensorboard.plugins.custom_scalar import layout_pb2

from lightning_xai import DriftRule
from lightning_xai.visualize.dashboard import (
    ALERT_RUN,
    MAIN_RUN,
    SCORE_RUN,
    THRESHOLD_RUN,
    custom_scalars_layout,
    layout_summary,
    summary_scalars,
)


def _alert(method: str, metric: str, statistic: str, value: float, threshold: float) -> SimpleNamespace:
    return SimpleNamespace(method=method, metric=metric, statistic=statistic, value=value, threshold=threshold)


def test_score_threshold_and_alert_go_to_their_own_runs_and_the_alert_sits_at_the_threshold() -> None:
    scalars = {
        "xai/ig/alert/score": 0.052,
        "xai/ig/alert/threshold": 0.040,
        "xai/ig/drift/rank_vs_reference/median": 0.5,
        "xai/seconds": 0.2,
    }
    rule = DriftRule(threshold=0.4)
    alerts = [
        _alert("ig", "novel_relevance", "median", 0.052, 0.040),
        _alert("ig", "rank_vs_reference", "median", 0.5, 0.4),
    ]
    points = summary_scalars(scalars, alerts, ["ig"], [rule], name="a")
    assert points == {
        MAIN_RUN: {"xai/a/summary/seconds": 0.2},
        SCORE_RUN: {"xai/a/summary/ig/detector": 0.052, "xai/a/summary/ig/rule_rank_vs_reference_median": 0.5},
        THRESHOLD_RUN: {"xai/a/summary/ig/detector": 0.040, "xai/a/summary/ig/rule_rank_vs_reference_median": 0.4},
        ALERT_RUN: {"xai/a/summary/ig/detector": 0.040, "xai/a/summary/ig/rule_rank_vs_reference_median": 0.4},
    }


def test_no_alert_no_marker_and_no_rule_chart_without_rules() -> None:
    points = summary_scalars({"xai/gradcam/alert/score": 0.01, "xai/gradcam/alert/threshold": 0.1}, [], ["gradcam"])
    assert points[ALERT_RUN] == {}
    layout = custom_scalars_layout(["gradcam"])
    assert list(layout["xai summary (x = epoch)"]) == [
        "gradcam: detector score, threshold, alerts",
        "seconds per evaluation",
    ]


def test_the_localisation_chart_only_with_probe_masks() -> None:
    assert "localisation" not in custom_scalars_layout(["gradcam"])["xai detail (x = global step)"]
    detail = custom_scalars_layout(["gradcam"], name="b", localised=True)["xai b: detail (x = global step)"]
    assert detail["localisation"] == ["Multiline", ["xai/b/localization/.*"]]


def test_the_layout_of_two_monitors_in_one_event_file_keeps_both_with_the_details_closed() -> None:
    summary = layout_summary([custom_scalars_layout(["gradcam"]), custom_scalars_layout(["gradcam"], name="b")])
    layout = layout_pb2.Layout.FromString(summary.value[0].tensor.string_val[0])
    assert [(c.title, c.closed) for c in layout.category] == [
        ("xai summary (x = epoch)", False),
        ("xai detail (x = global step)", True),
        ("xai b: summary (x = epoch)", False),
        ("xai b: detail (x = global step)", True),
    ]
    named = {ch.title: list(ch.multiline.tag) for ch in layout.category[2].chart}
    assert named["gradcam: detector score, threshold, alerts"] == ["xai/b/summary/gradcam/detector$"]
