"""One argument-checking helper (issues 19 and 20): every integer and real setting of the monitor (its own
arguments, the fields of DriftPolicy, Display and Budget, and the options of Integrated Gradients) is accepted and
refused alike, and names that become tags and directories are validated.

Integer-like values: Python ints, numpy integers, 0-d integer arrays and tensors, and whole floats (``2.0``) become
plain ints; bools, fractional or non-finite floats, strings, ``None`` (unless allowed) and sequences are refused with
a ``ValueError`` naming the argument or field, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from lightning_xai import AttributionMonitor, Budget, Display, DriftPolicy
from lightning_xai.explain import Explainer, Explanation, IntegratedGradients, MethodEntry, register
from lightning_xai.explain.base import NAME_RULE, check_baseline_shape, check_float, check_int, check_name
from lightning_xai.settings import normalize_arguments

#: what holds each setting: the monitor itself or the object that owns the field
OWNERS: dict[str, Any] = {
    "DriftPolicy": DriftPolicy,
    "Display": Display,
    "Budget": Budget,
    "IntegratedGradients": IntegratedGradients,
}
#: every integer setting ("argument" of the monitor or "Owner.field") and its smallest value
INT_ARGUMENTS = {
    "num_probes": 1,
    "every_n_epochs": 1,
    "seed": 0,
    "DriftPolicy.warmup_epochs": 0,
    "DriftPolicy.reference_epoch": 0,
    "DriftPolicy.cooldown": 0,
    "Display.tile_size": 16,
    "IntegratedGradients.n_steps": 1,
    "IntegratedGradients.internal_batch_size": 1,
}
#: every real setting and its bounds (low, high, low_open)
FLOAT_ARGUMENTS = {
    "DriftPolicy.topk": (0.0, 1.0, True),
    "DriftPolicy.probe_threshold": (0.0, 1.0, False),
    "Budget.max_seconds_per_epoch": (0.0, math.inf, True),
    "Budget.max_overhead": (0.0, math.inf, True),
}


def defaults(**changes: Any) -> dict[str, Any]:
    """The monitor's constructor arguments at their defaults (what ``locals()`` holds there), with ``changes``."""
    params = inspect.signature(AttributionMonitor.__init__).parameters
    arguments = {k: p.default for k, p in params.items() if k != "self"}
    return {**arguments, **changes}


def normalized(argument: str, given: Any) -> Any:
    """``given`` for ``argument`` as the monitor keeps it: through the input layer, or the owner's constructor."""
    if "." not in argument:
        return normalize_arguments(defaults(**{argument: given}))[argument]
    owner, field = argument.split(".")
    return getattr(OWNERS[owner](**{field: given}), field)


def construct(argument: str, given: Any) -> AttributionMonitor:
    """A monitor with ``given`` for ``argument``, the way a user passes it."""
    if "." not in argument:
        return AttributionMonitor(**{argument: given})
    owner, field = argument.split(".")
    made = OWNERS[owner](**{field: given})
    if owner == "IntegratedGradients":
        return AttributionMonitor(methods=("gradcam", made))
    return AttributionMonitor(**{owner.lower().replace("driftpolicy", "drift"): made})


def integer_likes(value: int) -> list[Any]:
    return [value, np.int64(value), np.uint8(value), torch.tensor(value), np.array(value), float(value),
            np.float32(value), torch.tensor(float(value))]  # fmt: skip


def annotated(kind: type, types: tuple[str, ...]) -> set[str]:
    return {f"{kind.__name__}.{f.name}" for f in dataclasses.fields(kind) if f.type in types}


def test_the_tables_hold_every_integer_and_real_setting() -> None:
    """A new integer or real field of a settings object, or a new integer argument, must be added above."""
    params = inspect.signature(AttributionMonitor.__init__).parameters
    top = {k for k, p in params.items() if p.annotation == "int"}
    ints = set().union(*(annotated(k, ("int", "int | None")) for k in (DriftPolicy, Display, Budget)))
    floats = set().union(*(annotated(k, ("float", "float | None")) for k in (DriftPolicy, Display, Budget)))
    assert top == {"num_probes", "every_n_epochs", "seed"}
    assert ints == {"DriftPolicy.warmup_epochs", "DriftPolicy.reference_epoch", "DriftPolicy.cooldown",
                    "Display.tile_size"}  # fmt: skip
    assert top | ints <= set(INT_ARGUMENTS) and floats == set(FLOAT_ARGUMENTS)


def test_the_constructor_has_at_most_twelve_parameters() -> None:
    params = [k for k in inspect.signature(AttributionMonitor.__init__).parameters if k != "self"]
    assert len(params) <= 12, params
    assert params[-5:] == ["drift", "display", "budget", "seed", "name"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in inspect.signature(AttributionMonitor).parameters.values())


def shown_as(argument: str) -> str:
    """How a message names a setting: ``num_probes``, ``DriftPolicy(warmup_epochs=...)`` (valid Python)."""
    owner, _, field = argument.rpartition(".")
    return f"{owner}({field}=...)" if owner else field


@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
def test_every_integer_argument_accepts_integer_likes(argument: str) -> None:
    value = INT_ARGUMENTS[argument] + 3
    for given in integer_likes(value):
        kept = normalized(argument, given)
        assert type(kept) is int and kept == value, (argument, given)


@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
@pytest.mark.parametrize(
    ("given", "fix"),
    [
        (True, r"pass a number, not a bool"),
        (np.bool_(True), r"pass a number, not a bool"),
        (2.5, r"pass a whole number: ([\w.]+)=\d+( or \1=\d+)?\.$"),
        (float("nan"), r"pass a finite whole number"),
        (float("inf"), r"pass a finite whole number"),
        ("24", r"pass [\w.]+=24"),
        ("many", r"pass a number, not a string"),
        (torch.tensor([24]), r"pass a single number"),
        ([24], r"pass a single number"),
        (torch.tensor(True), r"pass a number, not a bool"),
        (-1, r"pass \w+=\d+ or more"),
    ],
    ids=["bool", "numpy-bool", "fraction", "nan", "inf", "string", "word", "tensor-1d", "list", "bool-tensor", "low"],
)
def test_every_integer_argument_refuses_alike(argument: str, given: Any, fix: str) -> None:
    if argument == "IntegratedGradients.n_steps" and isinstance(given, str):
        pytest.skip("n_steps takes the string 'auto'; other strings are refused by test_ig_steps_string")
    with pytest.raises(ValueError, match=rf"^`{re.escape(shown_as(argument))}` must be an int (>=|in) ") as info:
        construct(argument, given)
    message = str(info.value)
    assert re.search(fix, message), message
    shown = repr(given) if type(given) in (int, float) else None
    assert shown is None or f"got {shown}" in message, message  # the value is named


@pytest.mark.parametrize("argument", list(FLOAT_ARGUMENTS))
def test_every_real_argument_accepts_real_likes(argument: str) -> None:
    for given in (0.5, np.float32(0.5), np.float64(0.5), torch.tensor(0.5), np.array(0.5)):
        kept = normalized(argument, given)
        assert type(kept) is float and kept == 0.5, (argument, given)
    assert type(normalized(argument, 1)) is float


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
    with pytest.raises(ValueError, match=rf"^`{re.escape(shown_as(argument))}` must be a number ") as info:
        construct(argument, given)
    assert re.search(fix, str(info.value)), str(info.value)


def test_ig_steps_string() -> None:
    assert IntegratedGradients(n_steps="auto").n_steps == "auto"
    assert AttributionMonitor(methods=(IntegratedGradients(n_steps="auto"),)).explainers[0].n_steps == "auto"
    with pytest.raises(
        ValueError, match=r"`IntegratedGradients\(n_steps=\.\.\.\)` must be an int >= 1 or 'auto', got 'many'; pass"
    ):
        AttributionMonitor(methods=("gradcam", IntegratedGradients(n_steps="many")))


def test_whole_floats_reach_the_objects_as_ints() -> None:
    monitor = AttributionMonitor(
        num_probes=4.0,
        methods=("gradcam", IntegratedGradients(n_steps=8.0, internal_batch_size=np.int64(16))),
        every_n_epochs=np.float32(2),
        drift=DriftPolicy(warmup_epochs=torch.tensor(1), reference_epoch=np.float64(3), cooldown=np.uint8(2)),
        seed=torch.tensor(3.0),
    )
    assert (monitor.num_probes, monitor.every_n_epochs, monitor.seed) == (4, 2, 3)
    assert all(type(v) is int for v in (monitor.num_probes, monitor.every_n_epochs, monitor.seed))
    ig = next(e for e in monitor.explainers if isinstance(e, IntegratedGradients))
    assert ig.n_steps == 8 and type(ig.n_steps) is int
    assert ig.internal_batch_size == 16 and type(ig.internal_batch_size) is int
    tracker = monitor.drift_tracker  # the policy's values reach the objects that use them, as plain ints
    assert (tracker.warmup_epochs, tracker.reference_epoch) == (1, 3)
    assert type(tracker.warmup_epochs) is int and type(tracker.reference_epoch) is int
    assert monitor.drift_policy.cooldown == 2 and type(monitor.drift_policy.cooldown) is int


@pytest.mark.parametrize("given", [np.int64(64), torch.tensor(64), 64.0], ids=["numpy", "tensor-0d", "float"])
def test_tile_size_accepts_integer_likes_like_every_other_integer(given: Any) -> None:
    monitor = AttributionMonitor(display=Display(tile_size=given))
    assert monitor.media.tile_size == 64 and type(monitor.media.tile_size) is int


def test_tile_size_below_a_readable_tile_is_refused_at_construction() -> None:
    with pytest.raises(
        ValueError, match=r"`Display\(tile_size=\.\.\.\)` must be an int >= 16, got 8; pass tile_size=16 or more"
    ):
        AttributionMonitor(display=Display(tile_size=8))


@pytest.mark.parametrize(
    ("argument", "given", "kind"),
    [
        ("drift", 3, "DriftPolicy"),
        ("drift", {"warmup_epochs": 0}, "DriftPolicy"),
        ("drift", Display(), "DriftPolicy"),
        ("display", "jet", "Display"),
        ("display", {"tile_size": 64}, "Display"),
        ("budget", 0.05, "Budget"),
        ("budget", DriftPolicy(), "Budget"),
    ],
    ids=["drift-int", "drift-dict", "drift-display", "display-str", "display-dict", "budget-float", "budget-policy"],
)
def test_a_wrong_type_for_a_settings_argument_says_how_to_make_one(argument: str, given: Any, kind: str) -> None:
    with pytest.raises(ValueError) as info:
        AttributionMonitor(**{argument: given})
    message = str(info.value)
    assert message.startswith(f"`{argument}` must be a {kind}, e.g. {kind}("), message  # how to make one
    # with its field names (a dict, as a config file writes it, with its own values)
    assert re.search(
        rf"{kind}\(\w+=\.\.\., \w+=\.\.\.\)" if not isinstance(given, dict) else rf"{kind}\(\w+=\d+\)", message
    )
    assert f"({type(given).__name__})" in message, message  # and what was given


def test_settings_left_out_are_their_defaults() -> None:
    monitor = AttributionMonitor(drift=None, display=None, budget=None)
    for kept, kind in ((monitor.drift_policy, DriftPolicy), (monitor.display, Display), (monitor.budget, Budget)):
        assert type(kept) is kind
        for field in dataclasses.fields(kind):
            assert repr(getattr(kept, field.name)) == repr(getattr(kind(), field.name)), field.name
    policy = DriftPolicy(warmup_epochs=0)
    assert AttributionMonitor(drift=policy).drift_policy is policy  # a settings object is used as given


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
    check_baseline_shape("IntegratedGradients.baseline", torch.zeros(shape), (3, 8, 8))
    check_baseline_shape("IntegratedGradients.baseline", torch.zeros(shape), (3, 8, 8), num_probes=5)
    check_baseline_shape("IntegratedGradients.baseline", 0.5, (3, 8, 8))


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
        check_baseline_shape("IntegratedGradients.baseline", torch.zeros(shape), (3, 8, 8), num_probes=num_probes)
        return
    with pytest.raises(
        ValueError, match=rf"^`IntegratedGradients\.baseline` has shape {re.escape(str(shape))}, which does not fit"
    ):
        check_baseline_shape("IntegratedGradients.baseline", torch.zeros(shape), (3, 8, 8), num_probes=num_probes)


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
        register(MethodEntry("bad name", lambda: Named("bad_name")))


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


def test_a_settings_value_given_the_old_way_is_answered_with_the_object_to_write() -> None:
    with pytest.raises(ValueError, match=re.escape("e.g. DriftPolicy(on_drift='stop'); got 'stop' (str)")):
        AttributionMonitor(drift="stop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("e.g. DriftPolicy(warmup_epochs=1, cooldown=0); got {")):
        AttributionMonitor(drift={"warmup_epochs": 1, "cooldown": 0})  # type: ignore[arg-type]
