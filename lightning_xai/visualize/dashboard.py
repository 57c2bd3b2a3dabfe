"""The TensorBoard dashboard: a few epoch-level summary series and a Custom Scalars layout that puts each method's
watched drift series, its threshold and its alerts in one chart.

Summary scalars (logged against the **epoch**, so a 10-epoch run is 10 evenly spaced points):

* ``xai/summary/<method>/watched``: what the drift detector watches (``xai/<method>/alert/score``);
* ``xai/summary/<method>/threshold``: its calibrated threshold (``xai/<method>/alert/threshold``, from the first
  evaluation after calibration);
* ``xai/summary/<method>/alert``: at an epoch where the method raised an alert, the value that fired (a marker on
  the series that crossed its threshold);
* ``xai/summary/<method>/rule_<key>`` and ``..._threshold``: the series a :class:`~lightning_xai.DriftRule`
  watches and its fixed threshold;
* ``xai/summary/seconds``: what the evaluation cost (``xai/seconds``).

The detail scalars (``xai/<method>/drift/...``, ``xai/localization/...``, quality diagnostics) stay where
``pl_module.log`` puts them, against the global step, grouped in the layout's second category.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SUMMARY_PREFIX", "custom_scalars_layout", "summary_scalars"]

SUMMARY_PREFIX = "xai/summary"
SUMMARY_CATEGORY = "xai summary (x = epoch)"
DETAIL_CATEGORY = "xai detail (x = global step)"


def summary_scalars(
    scalars: Mapping[str, float],
    alerts: Sequence[Any],
    methods: Sequence[str],
    rules: Sequence[Any] = (),
) -> dict[str, float]:
    """The summary series of one evaluation, from its logged scalars, its alerts and the monitor's rules.

    Example::

        >>> summary_scalars({"xai/gradcam/alert/score": 0.2, "xai/gradcam/alert/threshold": 0.3, "xai/seconds": 1.5},
        ...     [], ["gradcam"])
        {'xai/summary/gradcam/watched': 0.2, 'xai/summary/gradcam/threshold': 0.3, 'xai/summary/seconds': 1.5}
    """
    out: dict[str, float] = {}
    for method in methods:
        base = f"{SUMMARY_PREFIX}/{method}"
        score = scalars.get(f"xai/{method}/alert/score")
        if score is not None:
            out[f"{base}/watched"] = float(score)
        threshold = scalars.get(f"xai/{method}/alert/threshold")
        if threshold is not None:
            out[f"{base}/threshold"] = float(threshold)
        for rule in rules:
            if getattr(rule, "methods", None) is not None and method not in rule.methods:
                continue
            value = scalars.get(f"xai/{method}/drift/{rule.key}")
            if value is not None:
                name = "rule_" + rule.key.replace("/", "_")
                out[f"{base}/{name}"] = float(value)
                out[f"{base}/{name}_threshold"] = float(rule.threshold)
        fired = [a for a in alerts if getattr(a, "method", None) == method]
        if fired:  # on the series that fired: the alert's own value
            out[f"{base}/alert"] = float(fired[0].value)
    if "xai/seconds" in scalars:
        out[f"{SUMMARY_PREFIX}/seconds"] = float(scalars["xai/seconds"])
    return out


def custom_scalars_layout(methods: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """The layout for ``SummaryWriter.add_custom_scalars``: a summary category (one chart per method with its
    watched series, threshold and alert markers; one for the cost) and a detail category. Tags are regular
    expressions matched from the start of the tag.

    Example::

        >>> layout = custom_scalars_layout(["gradcam"])
        >>> layout["xai summary (x = epoch)"]["gradcam: watched drift, threshold, alerts"]
        ['Multiline', ['xai/summary/gradcam/.*']]
    """
    summary: dict[str, list[Any]] = {}
    detail: dict[str, list[Any]] = {}
    for method in methods:
        m = re.escape(method)
        summary[f"{method}: watched drift, threshold, alerts"] = ["Multiline", [f"{SUMMARY_PREFIX}/{m}/.*"]]
        detail[f"{method}: rank drift"] = ["Multiline", [f"xai/{m}/drift/rank_.*"]]
        detail[f"{method}: top-k drift"] = ["Multiline", [f"xai/{m}/drift/topk_.*"]]
        detail[f"{method}: detector score and threshold"] = ["Multiline", [f"xai/{m}/alert/.*"]]
        detail[f"{method}: quality and cost"] = ["Multiline", [f"xai/{m}/(?!drift/|alert/).*"]]
    summary["seconds per evaluation"] = ["Multiline", [f"{SUMMARY_PREFIX}/seconds"]]
    detail["localisation (with probe_masks)"] = ["Multiline", ["xai/localization/.*"]]
    return {SUMMARY_CATEGORY: summary, DETAIL_CATEGORY: detail}
