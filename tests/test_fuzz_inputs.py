"""Fuzzed monitor arguments and probe inputs (issue 14): no third outcome.

Every generated example either completes a 1-epoch fit with the monitor (and its evaluation has no run-time
errors: nothing accepted at construction is then skipped every epoch), or fails **before the first training step**
with a ``ValueError``/``TypeError`` raised inside ``lightning_xai`` whose message names the argument.

200 examples by default, derandomised (the same examples in every run); ``LIGHTNING_XAI_FUZZ_EXAMPLES=2000`` runs
more, with a fresh random draw. ``pytest tests/test_fuzz_inputs.py --hypothesis-show-statistics`` shows how many
examples completed and which argument each refusal named.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import warnings
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from conftest import TinyCNN, make_images, trainer_kwargs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, Budget, Display, DriftPolicy, DriftRule, GradCam, IntegratedGradients

EXAMPLES = int(os.environ.get("LIGHTNING_XAI_FUZZ_EXAMPLES", "200"))
#: what an error may name: the monitor's arguments, and the objects whose fields and options are given through them
OWNERS = {"DriftPolicy": DriftPolicy, "Display": Display, "Budget": Budget}
METHOD_OPTIONS = {"GradCam": GradCam, "IntegratedGradients": IntegratedGradients}
ARGUMENTS = sorted(set(inspect.signature(AttributionMonitor.__init__).parameters) - {"self"})
#: an error names the argument: the monitor's own, an owner (``DriftPolicy.topk``) or the field the user wrote in
#: its constructor (``Display(colormap=...)``: ```colormap='bogus'```), never a name that no longer exists
FIELDS = {f.name for kind in OWNERS.values() for f in dataclasses.fields(kind)}
OPTIONS = {p for kind in METHOD_OPTIONS.values() for p in inspect.signature(kind).parameters}
NAMED = [*ARGUMENTS, *OWNERS, *METHOD_OPTIONS, "DriftRule", *sorted(FIELDS | OPTIONS)]
SIZE, CLASSES = 8, 4


class Counting(TinyCNN):
    def __init__(self, channels: int) -> None:
        super().__init__(num_classes=CLASSES, channels=channels)
        self.train_steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        return super().training_step(batch, batch_idx)


_DATA: dict[int, tuple[DataLoader, DataLoader]] = {}


def data(channels: int) -> tuple[DataLoader, DataLoader]:
    if channels not in _DATA:
        x, y = make_images(24, num_classes=CLASSES, size=SIZE)
        x = x.expand(-1, channels, -1, -1).contiguous()
        _DATA[channels] = (
            DataLoader(TensorDataset(x[:16], y[:16]), batch_size=16),
            DataLoader(TensorDataset(x[16:], y[16:]), batch_size=8),
        )
    return _DATA[channels]


# ----------------------------------------------------------------------------------------------- strategies


def images(n: int, channels: int, size: int = SIZE) -> Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(n))


@st.composite
def probes(draw: Any, channels: int) -> tuple[Any, int]:
    """A ``probes=`` value and the number of probes it holds (0 when drawn from the data)."""
    n = draw(st.sampled_from([1, 3, 4]))
    kind = draw(
        weighted(
            ["none", "tensor", "pair", "numpy", "list", "dataset", "float64", "pair_none"],
            ["empty", "meta", "nan", "uint8", "3d", "other_channels", "other_size", "string", "pair_bad_labels"],
        )
    )
    x = images(n, channels)
    if kind == "none":
        return None, 0
    if kind in ("tensor", "float64"):
        return (x.double() if kind == "float64" else x), n
    if kind == "numpy":
        return x.numpy(), n
    if kind == "list":
        return list(x), n
    if kind == "dataset":
        return TensorDataset(x, torch.arange(n) % CLASSES), 0
    if kind == "empty":
        return x[:0], 0
    if kind == "meta":
        return x.to("meta"), n
    if kind == "nan":
        return x.index_fill(0, torch.tensor([0]), float("nan")), n
    if kind == "uint8":
        return (x * 255).to(torch.uint8), n
    if kind == "3d":
        return x[0], 1
    if kind == "other_channels":
        return images(n, channels + 1), n
    if kind == "other_size":
        return images(n, channels, SIZE + 4), n
    if kind == "string":
        return "probes.pt", 0
    if kind == "pair_none":
        return (x, None), n
    classes = torch.arange(n) % CLASSES
    good = [classes, torch.nn.functional.one_hot(classes, CLASSES), classes.float(), classes.numpy(), classes.tolist()]
    bad = [
        classes.float() + 0.5,
        torch.ones(n, CLASSES),  # multi-hot
        classes + CLASSES,  # out of range for the model
        classes[:-1] if n > 1 else torch.arange(2),  # wrong count
        ["cat"] * n,
    ]
    return (x, draw(st.sampled_from(bad if kind == "pair_bad_labels" else good))), n


def squeeze_channel(x: Tensor) -> Tensor:
    return x[:, 0]


def raises(x: Tensor) -> Tensor:
    raise RuntimeError("no display for you")


def identity(x: Tensor) -> Tensor:
    return x


def rules() -> Any:
    """Keyword arguments of DriftRule (built inside the example, so its own errors count as refusals)."""
    return st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "threshold": weighted([0.0, 0.4], [float("nan"), "0.4"]),
                "methods": weighted(
                    [None, ("ig",), ("grad_cam",), ("gradcam", "integrated_gradients")], [("gradcm",), "gradcam"]
                ),
                "metric": weighted(["rank", "topk"], ["bogus"]),
                "patience": weighted([1, 2], [0]),
            },
        ),
        max_size=2,
    )


def masks_for(n: int) -> Any:
    def broken(images: Tensor, labels: Tensor | None) -> Tensor:
        raise KeyError("masks")

    def full(images: Tensor, labels: Tensor | None) -> Tensor:
        return torch.ones(len(images), SIZE, SIZE, dtype=torch.bool)

    count = n or 4
    return weighted([None, full, torch.ones(count, SIZE, SIZE)], [broken, torch.ones(count + 1, SIZE, SIZE)])


def weighted(good: list[Any], bad: list[Any]) -> Any:
    """A good value three times in four, else a bad one."""
    return st.integers(0, 3).flatmap(lambda i: st.sampled_from(bad if i == 0 else good))


@st.composite
def examples(draw: Any) -> dict[str, Any]:
    channels = draw(st.sampled_from([1, 1, 3, 3, 2, 4]))
    probe_value, n = draw(probes(channels))
    mean, std = [0.5] * channels, [0.25] * channels
    arguments: dict[str, Any] = {
        "num_probes": weighted([4, 8, 1, np.int64(4)], [0, "4", 4.0]),
        "methods": weighted(
            [("gradcam",), ("integrated_gradients",), ("ig",), ("grad_cam", "ig"), "gradcam"],
            [("shap",), (), None, ("gradcam", "gradcam")],
        ),
        "target": weighted(["label", "predicted", 0, 3, np.int64(1), [0, 1, 2, 3]], [7, -1, "banana", 2.5]),
        "IntegratedGradients.n_steps": weighted(["auto", 1, 2, np.int64(2)], [0, "2", 2.5, True]),
        "IntegratedGradients.baseline": weighted(
            [
                None,
                0.0,
                -1,
                [0.0],
                [0.0] * channels,
                -np.ones(channels) / 2,
                np.float32(0.5),
                torch.zeros(channels, SIZE, SIZE),
            ],
            [
                float("nan"),
                float("inf"),
                "0",
                [0.0] * (channels + 2),
                torch.zeros(SIZE + 1),
                torch.zeros(2, 2, 2, 2, 2),
                True,
            ],
        ),
        "denormalize": weighted(
            [None, (mean, std), [mean, std], (0.5, 0.25), (np.array(mean), np.array(std)), identity],
            [([0.5] * 3, [0.2] * 3), ([0.5], [0.0]), ("a", "b"), (mean,), squeeze_channel, raises, "imagenet"],
        ),
        "every_n_epochs": weighted([1, 2], [0, "1"]),
        "DriftPolicy.warmup_epochs": weighted([0, 2], [-1, "2", None]),
        "DriftPolicy.reference_epoch": weighted([None, 0, 3], [-1]),
        "DriftPolicy.cooldown": weighted([0, 3, np.int64(1)], [-1, "3", 0.5]),
        "seed": weighted([0, 3, np.uint8(2)], [None, -1, "0"]),
        "DriftPolicy.topk": weighted([0.1, 1.0], [0.0, 1.5, float("nan"), "0.1"]),
        "DriftPolicy.probe_threshold": weighted([0.4, 0.0, 1.0], [5.0, float("nan"), -0.1]),
        "DriftPolicy.on_drift": weighted(["warn", "stop", "raise", print], ["explode", None]),
        "Display.colormap": weighted(["jet", "VIRIDIS"], ["bogus", ["jet"], None]),
        "Display.log_heatmaps": weighted([False, True, np.bool_(True)], ["yes"]),
        "Display.tile_size": weighted([16, 64.0], [8, "64"]),
        "Budget.max_seconds_per_epoch": weighted([None, 30.0], [0, -1, float("nan"), "5"]),
        "GradCam.layer": weighted([None, "features", "features.3"], ["nope", 3]),
        "DriftPolicy.detector": weighted(["default", None], ["x"]),
        "Display.probe_masks": masks_for(n),
        "drift": weighted([None, "policy"], [{"warmup_epochs": 0}, 3]),  # "policy": DriftPolicy() (made inside)
        "display": weighted([None], ["jet", {"tile_size": 64}]),
        "budget": weighted([None], [0.05]),
        "name": weighted([None, "run-1"], ["a/b", 3]),
    }
    keep = draw(st.lists(st.sampled_from(sorted(arguments)), min_size=0, max_size=5, unique=True))
    kwargs = {"probes": probe_value, **{k: draw(arguments[k]) for k in keep}}
    return {
        "channels": channels,
        "kwargs": kwargs,
        "rules": draw(rules()) if draw(st.integers(0, 3)) == 0 else None,
        "logger": draw(st.booleans()),
    }


# ------------------------------------------------------------------------------------------------ the property


def raised_in_lightning_xai(err: BaseException) -> bool:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and f"{os.sep}lightning_xai{os.sep}" in last.tb_frame.f_code.co_filename


def named_argument(message: str) -> str | None:
    """The first argument the message names in backticks (``probes``, ``DriftPolicy.topk``, ``DriftRule.threshold``,
    ...), or None."""
    found = [(m.start(), a) for a in NAMED for m in re.finditer(rf"`{a}\b", message)]
    return min(found)[1] if found else None


#: the classes of the names ``methods=`` may hold whose options are drawn (``GradCam.layer``, ...)
OPTIONED = {"gradcam": GradCam, "grad_cam": GradCam, "integrated_gradients": IntegratedGradients,
            "ig": IntegratedGradients}  # fmt: skip


def monitor_arguments(drawn: dict[str, Any], rules: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The monitor's arguments for the drawn values (called inside the example: what the settings objects, the
    explainers and DriftRule refuse counts as a refusal): ``Owner.field`` values go into that object, a method's
    options into the instance that replaces its name in ``methods=`` (Integrated Gradients always runs 32 samples
    per pass)."""
    kwargs = {k: v for k, v in drawn.items() if "." not in k}
    if kwargs.get("drift") == "policy":
        kwargs["drift"] = DriftPolicy()
    for owner, kind in OWNERS.items():
        fields = {k.split(".")[1]: v for k, v in drawn.items() if k.startswith(f"{owner}.")}
        if rules is not None and owner == "DriftPolicy":
            fields["rules"] = tuple(DriftRule(**r) for r in rules)
        if fields:
            kwargs[owner.lower().replace("driftpolicy", "drift")] = kind(**fields)
    options = {
        kind: {k.split(".")[1]: v for k, v in drawn.items() if k.startswith(f"{owner}.")}
        for owner, kind in METHOD_OPTIONS.items()
    }
    options[IntegratedGradients]["internal_batch_size"] = 32
    methods = kwargs.get("methods", ("gradcam", "integrated_gradients"))
    items = (methods,) if isinstance(methods, str) else methods
    if isinstance(items, tuple):  # other values are the monitor's to refuse
        kinds = [OPTIONED.get(m) if isinstance(m, str) else None for m in items]
        kwargs["methods"] = tuple(
            m if k is None or not options[k] else k(**options[k]) for m, k in zip(items, kinds, strict=True)
        )
    return kwargs


def run_example(example: dict[str, Any], tmp_path: str) -> str:
    """``"completed"`` or ``"refused:<argument>"``; fails the test on any other outcome."""
    model = Counting(example["channels"])
    monitor: AttributionMonitor | None = None
    try:
        monitor = AttributionMonitor(**monitor_arguments(example["kwargs"], example["rules"]))
        logger: Any = TensorBoardLogger(tmp_path, name="fuzz") if example["logger"] else False
        trainer = L.Trainer(
            **trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=1, limit_train_batches=1, logger=logger)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, *data(example["channels"]))
    except (ValueError, TypeError) as err:
        assert model.train_steps == 0, f"refused after training started: {err!r}"
        assert raised_in_lightning_xai(err), f"not raised by lightning_xai: {err!r}"
        argument = named_argument(str(err))
        assert argument is not None, f"the message names no argument: {err!r}"
        return f"refused:{argument}"
    assert model.train_steps == 1 and monitor is not None
    assert monitor.evaluations == (1 if monitor.every_n_epochs == 1 else 0)  # the monitor really ran
    errors = [e for record in monitor.history for e in record.errors if "every probe's map is zero" not in e]
    assert not errors, f"accepted at construction, then failing at run time: {errors}"
    return "completed"


OUTCOMES: dict[str, int] = {}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 200,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(example=examples())
def test_every_example_completes_or_is_refused_before_training(example: dict[str, Any], tmp_path: Any) -> None:
    outcome = run_example(example, str(tmp_path))
    event(outcome)
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1


def test_the_fuzz_both_completes_and_refuses() -> None:
    """The examples above reach both outcomes (runs after them in this module)."""
    if not OUTCOMES:  # run alone
        return
    completed = OUTCOMES.get("completed", 0)
    assert completed >= 20 and sum(OUTCOMES.values()) - completed >= 20, OUTCOMES
