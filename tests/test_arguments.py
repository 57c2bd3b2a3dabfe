"""One argument-checking helper (issues 19 and 20): every integer and real argument of the monitor is accepted and
refused alike, and names that become tags and directories are validated.

Integer-like values: Python ints, numpy integers, 0-d integer arrays and tensors, and whole floats (``2.0``) become
plain ints; bools, fractional or non-finite floats, strings, ``None`` (unless allowed) and sequences are refused with
a ``ValueError`` naming the argument, the value and the fix.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from lightning_xai import AttributionMonitor
from lightning_xai._checks import normalize_arguments
from lightning_xai.explain import Explainer, Explanation, IntegratedGradients, MethodEntry, register
from lightning_xai.explain.base import NAME_RULE, check_baseline_shape, check_float, check_int, check_name

#: every integer argument of the monitor and its smallest value
INT_ARGUMENTS = {
    "num_probes": 1,
    "every_n_epochs": 1,
    "warmup_epochs": 0,
    "seed": 0,
    "reference_epoch": 0,
    "ig_internal_batch_size": 1,
    "ig_steps": 1,
    "tile_size": 16,
}
#: every real argument and its bounds (low, high, low_open)
FLOAT_ARGUMENTS = {
    "topk": (0.0, 1.0, True),
    "probe_threshold": (0.0, 1.0, False),
    "max_seconds_per_epoch": (0.0, math.inf, True),
    "max_overhead": (0.0, math.inf, True),
}


def defaults(**changes: Any) -> dict[str, Any]:
    """The monitor's constructor arguments at their defaults (what ``locals()`` holds there), with ``changes``."""
    params = inspect.signature(AttributionMonitor.__init__).parameters
    arguments = {k: p.default for k, p in params.items() if k != "self"}
    return {**arguments, **changes}


def integer_likes(value: int) -> list[Any]:
    return [value, np.int64(value), np.uint8(value), torch.tensor(value), np.array(value), float(value),
            np.float32(value), torch.tensor(float(value))]  # fmt: skip


@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
def test_every_integer_argument_accepts_integer_likes(argument: str) -> None:
    value = INT_ARGUMENTS[argument] + 3
    for given in integer_likes(value):
        normalized = normalize_arguments(defaults(**{argument: given}))[argument]
        assert type(normalized) is int and normalized == value, (argument, given)


@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
@pytest.mark.parametrize(
    ("given", "fix"),
    [
        (True, r"pass a number, not a bool"),
        (np.bool_(True), r"pass a number, not a bool"),
        (2.5, r"pass a whole number: (\w+)=\d+( or \1=\d+)?\.$"),
        (float("nan"), r"pass a finite whole number"),
        (float("inf"), r"pass a finite whole number"),
        ("24", r"pass \w+=24"),
        ("many", r"pass a number, not a string"),
        (torch.tensor([24]), r"pass a single number"),
        ([24], r"pass a single number"),
        (torch.tensor(True), r"pass a number, not a bool"),
        (-1, r"pass \w+=\d+ or more"),
    ],
    ids=["bool", "numpy-bool", "fraction", "nan", "inf", "string", "word", "tensor-1d", "list", "bool-tensor", "low"],
)
def test_every_integer_argument_refuses_alike(argument: str, given: Any, fix: str) -> None:
    if argument == "ig_steps" and isinstance(given, str):
        pytest.skip("ig_steps takes the string 'auto'; other strings are refused by test_ig_steps_string")
    with pytest.raises(ValueError, match=rf"^`{argument}` must be an int (>=|in) ") as info:
        AttributionMonitor(**{argument: given})
    message = str(info.value)
    assert re.search(fix, message), message
    shown = repr(given) if type(given) in (int, float) else None
    assert shown is None or f"got {shown}" in message, message  # the value is named


@pytest.mark.parametrize("argument", list(FLOAT_ARGUMENTS))
def test_every_real_argument_accepts_real_likes(argument: str) -> None:
    for given in (0.5, np.float32(0.5), np.float64(0.5), torch.tensor(0.5), np.array(0.5)):
        normalized = normalize_arguments(defaults(**{argument: given}))[argument]
        assert type(normalized) is float and normalized == 0.5, (argument, given)
    assert type(normalize_arguments(defaults(**{argument: 1}))[argument]) is float


@pytest.mark.parametrize("argument", list(FLOAT_ARGUMENTS))
@pytest.mark.parametrize(
    ("given", "fix"),
    [
        (True, r"pass a number, not a bool"),
        (float("nan"), r"pass a finite number"),
        ("0.5", r"pass \w+=0\.5"),
        (torch.tensor([0.5]), r"pass a single number"),
        (-1.0, r"pass"),
    ],
    ids=["bool", "nan", "string", "tensor-1d", "negative"],
)
def test_every_real_argument_refuses_alike(argument: str, given: Any, fix: str) -> None:
    with pytest.raises(ValueError, match=rf"^`{argument}` must be a number ") as info:
        AttributionMonitor(**{argument: given})
    assert re.search(fix, str(info.value)), str(info.value)


def test_ig_steps_string() -> None:
    assert normalize_arguments(defaults(ig_steps="auto"))["ig_steps"] == "auto"
    with pytest.raises(ValueError, match=r"`ig_steps` must be an int >= 1 or 'auto', got 'many'; pass"):
        AttributionMonitor(ig_steps="many")


def test_whole_floats_reach_the_objects_as_ints() -> None:
    monitor = AttributionMonitor(num_probes=4.0, every_n_epochs=np.float32(2), seed=torch.tensor(3.0), ig_steps=8.0)
    assert (monitor.num_probes, monitor.every_n_epochs, monitor.seed) == (4, 2, 3)
    assert all(type(v) is int for v in (monitor.num_probes, monitor.every_n_epochs, monitor.seed))
    ig = next(e for e in monitor.explainers if isinstance(e, IntegratedGradients))
    assert ig.n_steps == 8 and type(ig.n_steps) is int


@pytest.mark.parametrize("given", [np.int64(64), torch.tensor(64), 64.0], ids=["numpy", "tensor-0d", "float"])
def test_tile_size_accepts_integer_likes_like_every_other_integer(given: Any) -> None:
    monitor = AttributionMonitor(tile_size=given)
    assert monitor.media.tile_size == 64 and type(monitor.media.tile_size) is int


def test_tile_size_below_a_readable_tile_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"`tile_size` must be an int >= 16, got 8; pass tile_size=16 or more"):
        AttributionMonitor(tile_size=8)


# ------------------------------------------------------------------------------------------------ the helpers


def test_check_int_bounds_owner_and_none() -> None:
    assert check_int("cells", 8, 2, 64, where="ShiftDetector") == 8
    with pytest.raises(ValueError, match=r"^`ShiftDetector\(cells=\.\.\.\)` must be an int in \[2, 64\], got 100; "):
        check_int("cells", 100, 2, 64, where="ShiftDetector")
    assert check_int("reference_epoch", None, 0, allow_none=True) is None
    with pytest.raises(ValueError, match=r"must be an int >= 0 or None, got 'x' \(str\)"):
        check_int("reference_epoch", "x", 0, allow_none=True)
    with pytest.raises(ValueError, match=r"got None \(NoneType\); pass a number, e\.g\. seed=0\.$"):
        check_int("seed", None, 0)
    with pytest.raises(ValueError, match=r"a tensor of shape \(\) and dtype torch.int64"):  # no value to read
        check_int("seed", torch.zeros((), dtype=torch.long, device="meta"), 0)


def test_check_float_bounds() -> None:
    assert check_float("alpha", 0.25, 0, 0.5, low_open=True, high_open=True) == 0.25
    with pytest.raises(ValueError, match=r"must be a number in \(0, 0\.5\), got 0\.5; pass a number in \(0, 0\.5\)"):
        check_float("alpha", 0.5, 0, 0.5, low_open=True, high_open=True)
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\], got 5\.0; pass e\.g\. probe_threshold=1\.$"):
        check_float("probe_threshold", 5.0, 0, 1)
    with pytest.raises(ValueError, match=r"^`x` must be a finite number, got inf; pass a finite number, e\.g\. x=0"):
        check_float("x", math.inf)
    assert check_float("x", None, allow_none=True) is None


@pytest.mark.parametrize(
    "shape", [(), (1,), (3, 1, 1), (1, 8, 1), (3, 8, 8), (1, 3, 8, 8), (1, 1, 1, 1)], ids=lambda s: str(s)
)
def test_baselines_that_broadcast_to_one_probe_fit(shape: tuple[int, ...]) -> None:
    check_baseline_shape("ig_baseline", torch.zeros(shape), (3, 8, 8))
    check_baseline_shape("ig_baseline", torch.zeros(shape), (3, 8, 8), num_probes=5)
    check_baseline_shape("ig_baseline", 0.5, (3, 8, 8))


@pytest.mark.parametrize(
    ("shape", "num_probes", "fits"),
    [
        ((5, 3, 8, 8), 5, True),  # one image per probe, where the method takes that
        ((5, 3, 1, 1), 5, True),  # one per-channel reference per probe
        ((5, 3, 8, 8), None, False),  # ... but not where one reference is shared
        ((4, 3, 8, 8), 5, False),  # wrong number of rows
        ((2, 3, 8, 8), 2, True),
        ((3,), None, False),  # 1-D lines up with W, not C (check_baseline makes it (C, 1, 1) first)
        ((2, 1, 1), None, False),  # per-channel values for another channel count
        ((3, 7, 8), None, False),
        ((1, 1, 3, 8, 8), 5, False),
    ],
)
def test_baselines_that_do_not_fit_are_refused_by_name(shape: tuple[int, ...], num_probes: Any, fits: bool) -> None:
    if fits:
        check_baseline_shape("ig_baseline", torch.zeros(shape), (3, 8, 8), num_probes=num_probes)
        return
    with pytest.raises(ValueError, match=rf"^`ig_baseline` has shape {re.escape(str(shape))}, which does not fit"):
        check_baseline_shape("ig_baseline", torch.zeros(shape), (3, 8, 8), num_probes=num_probes)


# ------------------------------------------------------------------------------------------------------ names


class Named(Explainer):
    def __init__(self, name: Any) -> None:
        self.name = name

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        maps = torch.rand(inputs.shape[0], *inputs.shape[-2:])
        return Explanation(maps, maps.clone())


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("my method/v2", "my_method_v2"),
        ("", "method"),
        ("..", "method"),
        ("a.b", "a_b"),
        ("-flag", "flag"),
        ("x" * 65, "x" * 64),
        (None, "None"),
        ("grad\ncam", "grad_cam"),
    ],
    ids=["space-slash", "empty", "dots", "dot", "dash-first", "too-long", "none", "newline"],
)
def test_explainer_names_that_cannot_be_tags_or_directories_are_refused(name: Any, suggestion: str) -> None:
    with pytest.raises(ValueError) as info:
        AttributionMonitor(methods=["gradcam", Named(name)])
    message = str(info.value)
    assert message.startswith(f"`methods` contains Named named {name!r}; an explainer's `name` must be {NAME_RULE}")
    assert f"name = {suggestion!r}" in message and "log directories" in message


@pytest.mark.parametrize("name", ["my_method", "IG-32", "_x", "a" * 64, "7"])
def test_explainer_names_that_fit_are_kept(name: str) -> None:
    monitor = AttributionMonitor(methods=["gradcam", Named(name)])
    assert [e.name for e in monitor.explainers] == ["gradcam", name]


def test_registered_method_names_follow_the_same_rule() -> None:
    with pytest.raises(ValueError, match=r"`MethodEntry.name` must be 1 to 64 ASCII letters"):
        register(MethodEntry("bad name", lambda o: Named("bad_name")))


@pytest.mark.parametrize("name", ["a/b", "..", ".", "a.b", "a b", "", 3])
def test_monitor_name_follows_the_same_rule(name: Any) -> None:
    with pytest.raises(ValueError, match=rf"^`name` must be None or {re.escape(NAME_RULE)}: it becomes part of tags"):
        AttributionMonitor(name=name)
    assert AttributionMonitor(name="run-a_1").name == "run-a_1"
    assert check_name("name", None, allow_none=True) is None


@pytest.mark.parametrize("name", ["gradcam", "integrated_gradients", "summary", "sheet", "alerts"])
def test_a_monitor_name_that_would_mix_with_unnamed_tags_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"`name='{name}'` would mix this monitor's tags"):
        AttributionMonitor(name=name)
