"""Bad inputs fail early and clearly; an explanation that fails at run time never stops training.

Every error must be raised before the first training step (counted by the model) and must name the argument
and the offending value; what can be converted (numpy arrays, lists, integer-like values, one-hot labels) is.
The cases of issue 14 are at the end; run-time failures are in test_failure_isolation.py.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from conftest import TinyCNN, loaders, make_images, trainer_kwargs
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, Budget, Display, DriftPolicy, DriftRule, GradCam, IntegratedGradients
from lightning_xai.explain import Explainer, Explanation

FAST = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1)


class CountingCNN(TinyCNN):
    """TinyCNN that counts its training steps."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        return super().training_step(batch, batch_idx)


class CountingMLP(CountingCNN):
    """No 4-D feature map at all: an MLP on flattened images."""

    def __init__(self) -> None:
        super().__init__()
        del self.features, self.pool, self.dropout, self.head
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class CountingSharedRelu(CountingCNN):
    """One ReLU module applied after both convolutions."""

    def __init__(self) -> None:
        super().__init__()
        del self.features
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.conv2(self.act(self.conv1(x))))
        return self.head(self.dropout(self.pool(h).flatten(1)))


class CountingDictCNN(CountingCNN):
    """forward returns a dict; the loss reads ``out["logits"]``."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        features = self.pool(self.features(x)).flatten(1)
        return {"logits": self.head(self.dropout(features)), "features": features}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        x, y = batch
        return nn.functional.cross_entropy(self(x)["logits"], y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x)["logits"], y))


def fit(tmp_path: Any, monitor: AttributionMonitor, model: CountingCNN | None = None, **kw: Any) -> tuple[Any, Any]:
    L.seed_everything(0, verbose=False)
    model = model if model is not None else CountingCNN()
    train, val = kw.pop("data", None) or loaders(n_train=32, n_val=16)
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, **{**FAST, **kw}))
    trainer.fit(model, train, val)
    return model, trainer


def fails_before_training(tmp_path: Any, monitor_kwargs: dict[str, Any], match: str, model: Any = None) -> str:
    """Build the monitor, fit, and check a ValueError matching ``match`` came before any training step."""
    model = model if model is not None else CountingCNN()
    with pytest.raises(ValueError, match=match) as info:
        monitor = AttributionMonitor(**monitor_kwargs)
        fit(tmp_path, monitor, model)
    assert model.train_steps == 0, "a training step ran before the error"
    return str(info.value)


def probes_and_labels(n: int = 4) -> tuple[Tensor, Tensor]:
    x, y = make_images(n)
    return x, y


# -------------------------------------------------------------------------------- constructor arguments


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"`methods` contains unknown method 'shap'") as info:
        AttributionMonitor(methods=("gradcam", "shap"))
    assert "'gradcam'" in str(info.value) and "'integrated_gradients'" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "banana"}, r"`target='banana'` is not supported.*'label'.*'predicted'"),
        ({"num_probes": 0}, r"`num_probes` must be an int >= 1, got 0"),
        ({"every_n_epochs": 0}, r"`every_n_epochs` must be an int >= 1, got 0"),
        (
            {"drift": {"on_drift": "explode"}},
            r"`DriftPolicy.on_drift='explode'` is not supported.*'warn'.*'stop'.*'raise'",
        ),
        ({"probes": torch.rand(2, 12, 12)}, r"`probes` must be a 4-D tensor .*got shape \(2, 12, 12\)"),
        ({"methods": {"n_steps": 0}}, r"`IntegratedGradients\(n_steps=\.\.\.\)` must be an int >= 1, got 0"),
        ({"drift": {"cooldown": -1}}, r"`DriftPolicy\(cooldown=\.\.\.\)` must be an int >= 0, got -1"),
        ({"display": {"tile_size": 8}}, r"`Display\(tile_size=\.\.\.\)` must be an int >= 16, got 8"),
        ({"budget": {"max_overhead": 0}}, r"`Budget\(max_overhead=\.\.\.\)` must be a number > 0 or None, got 0"),
    ],
    ids=["target-banana", "num_probes-0", "every_n_epochs-0", "on_drift-explode", "probes-3d", "ig_steps-0",
         "cooldown-negative", "tile_size-8", "max_overhead-0"],
)  # fmt: skip
def test_constructor_rejects(kwargs: dict[str, Any], match: str) -> None:
    # raised while building the callback (or its settings), i.e. long before any training epoch
    with pytest.raises(ValueError, match=match):
        AttributionMonitor(**built(kwargs))


#: what makes the settings objects and method options given as dicts in the tables of this file
SETTINGS: dict[str, Any] = {"drift": DriftPolicy, "display": Display, "budget": Budget}


def built(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for the monitor with the dicts under ``drift``/``display``/``budget`` made into their settings
    objects and a dict under ``methods`` into ``(IntegratedGradients(**it),)`` (inside the caller's
    ``pytest.raises``: that is where the value is refused)."""
    out = dict(kwargs)
    for key, kind in SETTINGS.items():
        if isinstance(out.get(key), dict):
            out[key] = kind(**out[key])
    if isinstance(out.get("methods"), dict):
        out["methods"] = (IntegratedGradients(**out["methods"]),)
    return out


# ------------------------------------------------------------------ errors that need the model (in fit)


def test_gradcam_layer_not_found_lists_candidates(tmp_path: Any) -> None:
    message = fails_before_training(
        tmp_path, {"methods": (GradCam(layer="feature"),)}, r"`(GradCam\.)?layer='feature'`"
    )
    assert "not a module of CountingCNN" in message
    assert "'features'" in message and "'features.3'" in message


@pytest.mark.parametrize("layer", ["featurs", "conv5"])
def test_gradcam_layer_typo_lists_candidates(tmp_path: Any, layer: str) -> None:
    message = fails_before_training(tmp_path, {"methods": (GradCam(layer=layer),)}, rf"`(GradCam\.)?layer='{layer}'`")
    assert "'features'" in message, message


def test_gradcam_layer_module_not_in_model(tmp_path: Any) -> None:
    stranger = nn.Conv2d(1, 8, 3)
    fails_before_training(
        tmp_path,
        {"methods": (GradCam(layer=stranger),)},
        r"`(GradCam\.)?layer` received a module \(Conv2d\) that is not a submodule of CountingCNN",
    )


def test_gradcam_without_feature_map(tmp_path: Any) -> None:
    message = fails_before_training(
        tmp_path,
        {"methods": ("gradcam", "integrated_gradients")},
        r"`methods` includes 'gradcam' but CountingMLP has no module that returns a 4-D",
        model=CountingMLP(),
    )
    assert "(1, 12, 12)" in message and "integrated_gradients" in message


def test_mlp_with_integrated_gradients_only_works(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=(IntegratedGradients(n_steps=4),))
    model, trainer = fit(tmp_path, monitor, CountingMLP())
    assert model.train_steps == 2 and len(monitor.history) == 1 and not monitor.history[0].errors


def test_reused_layer_given_explicitly(tmp_path: Any) -> None:
    message = fails_before_training(
        tmp_path,
        {"methods": (GradCam(layer="act"),)},
        r"`(GradCam\.)?layer='act'` runs 2 times per forward pass",
        model=CountingSharedRelu(),
    )
    assert "'conv2'" in message  # a module that runs once is suggested


def test_probes_shape_does_not_fit_model(tmp_path: Any) -> None:
    fails_before_training(
        tmp_path,
        {"probes": torch.rand(4, 3, 12, 12), "methods": ("gradcam",)},
        r"`probes` of shape \(3, 12, 12\) \(C, H, W\) do not fit CountingCNN",
    )


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (7, r"`target=7` is out of range for a model with 4 classes; use a class in \[0, 3\]"),
        ([0, 1, 9, 2], r"`target=\[9\]` is out of range for a model with 4 classes"),
        (torch.tensor([0, -1, 2, 3]), r"`target=\[-1\]` is out of range for a model with 4 classes"),
        ([0, 1], r"`target` has 2 entries but there are 4 probes"),
    ],
    ids=["int", "sequence", "tensor-negative", "wrong-length"],
)
def test_target_does_not_fit(tmp_path: Any, target: Any, match: str) -> None:
    fails_before_training(tmp_path, {"probes": probes_and_labels(4), "target": target, "methods": ("gradcam",)}, match)


def test_per_probe_target_of_right_length_works(tmp_path: Any) -> None:
    monitor = AttributionMonitor(probes=probes_and_labels(4), target=[3, 2, 1, 0], methods=("gradcam",))
    model, _ = fit(tmp_path, monitor)
    assert model.train_steps == 2 and len(monitor.history) == 1 and not monitor.history[0].errors


def test_scalar_tensor_target_is_a_single_class(tmp_path: Any) -> None:
    monitor = AttributionMonitor(probes=probes_and_labels(4), target=torch.tensor(2), methods=("gradcam",))
    model, _ = fit(tmp_path, monitor)
    assert model.train_steps == 2


def test_probe_labels_outside_classes(tmp_path: Any) -> None:
    images, _ = probes_and_labels(4)
    fails_before_training(
        tmp_path,
        {"probes": (images, torch.tensor([0, 1, 7, 2])), "methods": ("gradcam",)},
        r"`probes` labels \[7\] are outside the model's 4 classes",
    )


def test_probe_labels_outside_classes_advice_works(tmp_path: Any) -> None:
    images, _ = probes_and_labels(4)
    monitor = AttributionMonitor(probes=(images, torch.tensor([0, 1, 7, 2])), target="predicted", methods=("gradcam",))
    model, _ = fit(tmp_path, monitor)
    assert model.train_steps == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"display": {"colormap": "bogus"}}, r"colormap='bogus'"), ({"denormalize": (0.5,)}, r"denormalize")],
    ids=["colormap", "denormalize"],
)
def test_bad_rendering_option_fails_before_training(tmp_path: Any, kwargs: dict[str, Any], match: str) -> None:
    model = CountingCNN()
    with pytest.raises(ValueError, match=match):
        monitor = AttributionMonitor(methods=("gradcam",), **built(kwargs))
        fit(tmp_path, monitor, model, logger=TensorBoardLogger(str(tmp_path)))
    assert model.train_steps == 0


def test_bad_ig_baseline_fails_before_training(tmp_path: Any) -> None:
    fails_before_training(
        tmp_path,
        {"methods": (IntegratedGradients(n_steps=4, baseline=torch.zeros(3, 5, 5)),)},
        r"`IntegratedGradients\(baseline=\.\.\.\)` has shape \(3, 5, 5\)",
    )


# ---------------------------------------------------------------------------------- warnings, not errors


def test_fewer_validation_images_than_num_probes(tmp_path: Any) -> None:
    x, y = make_images(38)
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16)  # 6 images
    monitor = AttributionMonitor(num_probes=8, methods=("gradcam",))
    with pytest.warns(UserWarning, match=r"`num_probes=8` but the validation dataloader holds only 6"):
        model, trainer = fit(tmp_path, monitor, data=(train, val))
    assert monitor.probes is not None and len(monitor.probes) == 6
    assert model.train_steps == 2 and len(monitor.history) == 1 and not monitor.history[0].errors


def test_no_tensorboard_logger_warns_once_and_still_logs_scalars(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, trainer = fit(tmp_path, monitor, max_epochs=2, logger=CSVLogger(str(tmp_path)))
    tb_warnings = [w for w in caught if "TensorBoardLogger" in str(w.message)]
    assert len(tb_warnings) == 1, [str(w.message) for w in tb_warnings]
    metrics = trainer.callback_metrics
    for key in ("rank_vs_reference/median", "rank_vs_previous/median", "topk_vs_previous/median"):
        assert f"xai/gradcam/drift/{key}" in metrics, sorted(metrics)
    assert "xai/gradcam/drift/topk_vs_previous/share" in monitor.history[-1].scalars  # (to the loggers directly)
    assert len(monitor.history) == 2


def test_tensorboard_logger_present_no_warning(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, monitor, logger=TensorBoardLogger(str(tmp_path)))
    assert not [w for w in caught if "no TensorBoardLogger" in str(w.message)]


# -------------------------------------------------------------------------------------- dict model output


def test_dict_output_needs_forward_fn(tmp_path: Any) -> None:
    fails_before_training(
        tmp_path,
        {"num_probes": 4},
        r"pass `forward_fn=` to pick the \(N, num_classes\) logits",
        model=CountingDictCNN(),
    )


class CountingTupleCNN(CountingDictCNN):
    """forward returns ``(logits, features)``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        out = super().forward(x)
        return out["logits"], out["features"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        x, y = batch
        return nn.functional.cross_entropy(self(x)[0], y)


@pytest.mark.parametrize(
    ("model_cls", "output", "fix"),
    [
        (CountingTupleCNN, r"a tuple of 2: \(Tensor \(4, 4\), Tensor \(4, 8\)\)", r"module\(x\)\[0\]"),
        (CountingDictCNN, r"a dict with keys \{'logits': Tensor \(4, 4\), 'features'", r"module\(x\)\['logits'\]"),
    ],
)
def test_tuple_or_dict_output_error_says_what_it_was_and_gives_forward_fn_first(
    tmp_path: Any, model_cls: type, output: str, fix: str
) -> None:
    """The monitor's own output check failed: not "cannot run before its first training step" (the trial's
    message), but what the output was and `forward_fn=` first."""
    message = fails_before_training(
        tmp_path, {"num_probes": 4}, rf"^{model_cls.__name__}'s forward returns {output}", model_cls()
    )
    opening = message.split(" (a module-level")[0]  # what the output was, then the fix, nothing in between
    assert re.fullmatch(rf".*, not a logits tensor[^.]*: pass `forward_fn=` to pick the .*e\.g\. .*{fix}\)`", opening)
    assert "first training step" not in message and "setup()" not in message
    assert not re.search(r"(?<!\.)\.\.(?!\.)", message)  # no doubled full stop ("..." in the example is fine)


def test_dict_output_works_with_forward_fn(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        forward_fn=lambda module, x: module(x)["logits"],
    )
    model, trainer = fit(tmp_path, monitor, CountingDictCNN())
    assert model.train_steps == 2
    assert len(monitor.history) == 1 and not monitor.history[0].errors
    assert "xai/integrated_gradients/completeness_gap" in monitor.history[0].scalars


# ---------------------------------------------------------------------------------- run-time failures


class ExplodingExplainer(Explainer):
    """Works in the setup dry run (its first call), then raises at every evaluation."""

    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        self.calls += 1
        if self.calls == 1:
            maps = torch.rand(inputs.shape[0], *inputs.shape[-2:])
            return Explanation(raw=maps, display=maps.clone())
        raise RuntimeError("kaboom from the custom explainer")


class NaNExplainer(Explainer):
    name = "nan_maps"

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        maps = torch.full((inputs.shape[0], *inputs.shape[-2:]), float("nan"))
        return Explanation(raw=maps, display=maps.clone())


def test_failing_explanations_are_skipped_and_training_goes_on(tmp_path: Any) -> None:
    exploding = ExplodingExplainer()
    monitor = AttributionMonitor(
        num_probes=4, methods=["gradcam", exploding, NaNExplainer()], drift=DriftPolicy(warmup_epochs=0)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, trainer = fit(tmp_path, monitor, max_epochs=2, logger=TensorBoardLogger(str(tmp_path)))
    assert trainer.current_epoch == 2 and model.train_steps == 4  # both epochs trained
    assert exploding.calls == 3 and len(monitor.history) == 2  # the setup dry run, then one call per epoch
    messages = [str(w.message) for w in caught]
    # one warning per distinct failure, not one per epoch
    assert len([m for m in messages if "kaboom" in m]) == 1, messages
    assert any(re.search(r"exploding skipped at epoch 0: RuntimeError: kaboom", m) for m in messages), messages
    assert any(re.search(r"nan_maps skipped at epoch 0: FloatingPointError", m) for m in messages), messages
    errors = monitor.history[-1].errors
    assert len(errors) == 2
    assert any("exploding" in e and "kaboom" in e for e in errors)
    assert any("nan_maps" in e and "NaN" in e for e in errors)
    # Grad-CAM carried on
    scalars = monitor.history[-1].scalars
    assert "xai/gradcam/drift/rank_vs_previous/median" in scalars
    assert "xai/gradcam/drift/rank_vs_previous/median" in trainer.callback_metrics
    assert not [k for k in scalars if "exploding" in k or "nan_maps" in k]  # nothing logged for the failed methods
    # callback_metrics holds a placeholder for each of their keys (a strict EarlyStopping on one finds it), no point
    held = {k: float(v) for k, v in trainer.callback_metrics.items() if "exploding" in k or "nan_maps" in k}
    assert held and set(held.values()) == {0.0} and "xai/exploding/drift/rank_vs_previous/median" in held


# ------------------------------------------------------------------------ issue 14: refused or converted early


def channel_data(channels: int) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(48, channels, 12, 12, generator=g), torch.arange(48) % 4
    return (
        DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16),
        DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16),
    )


@pytest.mark.parametrize("channels", [2, 4])
def test_probes_that_cannot_be_displayed_fail_before_training(tmp_path: Any, channels: int) -> None:
    model = CountingCNN(channels=channels)
    with pytest.raises(ValueError, match=rf"{channels} channels.*`denormalize=`"):
        fit(tmp_path, AttributionMonitor(num_probes=4), model, data=channel_data(channels), logger=tb(tmp_path))
    assert model.train_steps == 0


def test_probes_with_four_channels_work_with_a_denormalize_callable_or_without_images(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), denormalize=first_three_channels
    )
    model, _ = fit(tmp_path, monitor, CountingCNN(channels=4), data=channel_data(4), logger=tb(tmp_path))
    assert model.train_steps == 2 and not monitor.history[0].errors
    plain = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2))
    )  # no logger takes images: nothing to display
    model, _ = fit(tmp_path / "plain", plain, CountingCNN(channels=4), data=channel_data(4))
    assert model.train_steps == 2 and not plain.history[0].errors


def first_three_channels(x: Tensor) -> Tensor:
    return x[:, :3]


def tb(tmp_path: Any) -> TensorBoardLogger:
    return TensorBoardLogger(str(tmp_path / "logs"), name="run")


def test_denormalize_with_three_means_on_grey_probes_fails_before_training(tmp_path: Any) -> None:
    rgb = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    message = fails_before_training(tmp_path, {"denormalize": rgb}, r"`denormalize` has 3 means but the probes have 1")
    assert "baseline" not in message  # the default baseline comes from it, but the culprit is named


def test_denormalize_callable_returning_3d_fails_before_training(tmp_path: Any) -> None:
    model = CountingCNN()
    with pytest.raises(ValueError, match=r"`denormalize` maps a batch of probes \(1, 1, 12, 12\) to \(1, 12, 12\)"):
        fit(tmp_path, AttributionMonitor(num_probes=4, denormalize=drop_channel), model, logger=tb(tmp_path))
    assert model.train_steps == 0


def drop_channel(x: Tensor) -> Tensor:
    return x[:, 0]


@pytest.mark.parametrize(
    "denormalize",
    [[[0.1], [0.5]], [0.1, 0.5], (np.array([0.1]), np.array([0.5])), (torch.tensor([0.1]), 0.5)],
    ids=["list-of-lists", "list", "numpy", "tensor-and-float"],
)
def test_denormalize_as_lists_or_arrays_is_converted(tmp_path: Any, denormalize: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), denormalize=denormalize
    )
    model, _ = fit(tmp_path, monitor, logger=tb(tmp_path))
    assert model.train_steps == 2 and not monitor.history[0].errors
    baseline = next(e for e in monitor.explainers if e.name == "integrated_gradients").baseline
    assert torch.allclose(baseline.flatten(), torch.tensor([-0.2]))  # black: -mean / std


@pytest.mark.parametrize(
    "baseline",
    [-np.array([0.5]) / np.array([0.2]), [0.0], np.float32(0.1), -torch.tensor((0.5,)) / torch.tensor((0.2,))],
    ids=["numpy-minus-mean-over-std", "list", "numpy-scalar", "tensor-from-tuples"],
)
def test_ig_baseline_as_numpy_or_list_is_converted(tmp_path: Any, baseline: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=(IntegratedGradients(n_steps=2, baseline=baseline),))
    model, _ = fit(tmp_path, monitor)
    assert model.train_steps == 2 and not monitor.history[0].errors
    assert "xai/integrated_gradients/completeness_gap" in monitor.history[0].scalars


@pytest.mark.parametrize(
    ("baseline", "match"),
    [
        ("0", r"`IntegratedGradients\(baseline=\.\.\.\)` must be numbers, got '0' \(str\)"),
        (float("nan"), r"`IntegratedGradients\(baseline=\.\.\.\)` must be finite"),
    ],
    ids=["string", "nan"],
)
def test_ig_baseline_string_or_nan_is_refused(baseline: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttributionMonitor(methods=("gradcam", IntegratedGradients(baseline=baseline)))


def test_ig_baseline_per_channel_for_other_channels_fails_before_training(tmp_path: Any) -> None:
    rgb_black = -np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225])
    fails_before_training(
        tmp_path,
        {"methods": (IntegratedGradients(baseline=rgb_black),)},
        r"`IntegratedGradients\(baseline=\.\.\.\)` has shape \(3, 1, 1\).*\(1, 12, 12\)",
    )


def test_per_probe_ig_baseline_is_used_or_refused_by_name_before_training(tmp_path: Any) -> None:
    # issue 20: a (N, C, H, W) baseline passed the baseline check, then the dry run refused it with a raw size
    # mismatch ("The expanded size of the tensor (2) must match ...") blamed on `methods`
    images, labels = probes_and_labels(4)
    model = CountingCNN()
    monitor = AttributionMonitor(
        probes=(images, labels), methods=(IntegratedGradients(n_steps=4, baseline=torch.zeros(4, 1, 12, 12)),)
    )
    try:
        fit(tmp_path, monitor, model)
    except ValueError as err:
        assert model.train_steps == 0
        assert str(err).startswith(
            "`IntegratedGradients(baseline=...)` has shape (4, 1, 12, 12)"
        ) and "expanded size" not in str(err), err
    else:
        assert model.train_steps == 2 and not monitor.history[0].errors


@pytest.mark.parametrize(
    "labels",
    [
        nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 4),
        torch.tensor([0.0, 1.0, 2.0, 3.0]),
        np.array([0, 1, 2, 3]),
        [0, 1, 2, 3],
    ],
    ids=["one-hot-int", "integral-float", "numpy", "list"],
)
def test_labels_are_converted_to_classes(tmp_path: Any, labels: Any) -> None:
    images, _ = probes_and_labels(4)
    monitor = AttributionMonitor(probes=(images, labels), methods=("gradcam", IntegratedGradients(n_steps=2)))
    model, _ = fit(tmp_path, monitor)
    assert model.train_steps == 2 and monitor.probes is not None
    assert monitor.probes.labels is not None and monitor.probes.labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.tensor([[1, 1, 0, 0]] * 4), r"multi-hot or soft labels"),
        (torch.tensor([0.5, 1.0, 2.0, 3.0]), r"fractional, not class indices"),
        (["a", "b", "c", "d"], r"must be numbers"),
    ],
    ids=["multi-hot", "soft-float", "strings"],
)
def test_labels_that_are_not_classes_are_refused_by_name(labels: Any, match: str) -> None:
    images, _ = probes_and_labels(4)
    with pytest.raises(ValueError, match=rf"`probes` labels.*{match}"):
        AttributionMonitor(probes=(images, labels))


class OneHotDataset(torch.utils.data.Dataset):
    """Yields (image, label) with a one-hot label (or a soft one with ``soft=True``)."""

    def __init__(self, soft: bool = False) -> None:
        self.images, self.labels = make_images(16)
        self.soft = soft

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        label = nn.functional.one_hot(self.labels[i], 4).float()
        return self.images[i], (0.9 * label + 0.025) if self.soft else label


def test_one_hot_labels_from_the_data_are_classes(tmp_path: Any) -> None:
    train, _ = loaders(n_train=32, n_val=16)
    val = DataLoader(OneHotDataset(), batch_size=8)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)))
    messages = recorded(lambda: fit(tmp_path, monitor, data=(train, val)))
    assert monitor.probes is not None and monitor.probes.labels is not None
    assert not [m for m in messages if "no labels" in m or "unlabeled" in m]


def test_soft_labels_from_the_data_are_named_in_the_warning(tmp_path: Any) -> None:
    train, _ = loaders(n_train=32, n_val=16)
    val = DataLoader(OneHotDataset(soft=True), batch_size=8)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)))
    messages = recorded(lambda: fit(tmp_path, monitor, data=(train, val)))
    assert monitor.probes is not None and monitor.probes.labels is None
    assert any("multi-hot or soft labels" in m and "unlabeled" in m for m in messages), messages
    assert not any("probes have no labels" in m for m in messages)  # said once, not again by the generic fallback


def recorded(fn: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


@pytest.mark.parametrize(
    ("probes", "match"),
    [
        (torch.zeros(0, 1, 12, 12), r"`probes` holds no images"),
        (torch.rand(4, 1, 12, 12, device="meta"), r"`probes` are on the meta device"),
        (torch.full((4, 1, 12, 12), float("nan")), r"`probes` contain NaN or Inf values \(probes \[0, 1, 2, 3\]\)"),
        ((torch.rand(4, 1, 12, 12) * 255).to(torch.uint8), r"`probes` are integer images \(torch.uint8\).*/ 255"),
        ("images.png", r"`probes` must be None, a Tensor"),
    ],
    ids=["empty", "meta", "nan", "uint8", "string"],
)
def test_bad_probes_are_refused_at_construction(probes: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttributionMonitor(probes=probes)


def test_probes_pair_with_none_labels_are_unlabeled(tmp_path: Any) -> None:
    images, _ = probes_and_labels(4)
    monitor = AttributionMonitor(
        probes=(images, None), methods=("gradcam", IntegratedGradients(n_steps=2)), target="predicted"
    )
    model, _ = fit(tmp_path, monitor)
    assert model.train_steps == 2 and monitor.probes is not None and monitor.probes.labels is None


def test_probes_as_numpy_or_list_are_converted(tmp_path: Any) -> None:
    images, labels = probes_and_labels(4)
    monitor = AttributionMonitor(
        probes=(images.numpy(), labels.numpy()), methods=("gradcam", IntegratedGradients(n_steps=2))
    )
    model, _ = fit(tmp_path, monitor)
    assert model.train_steps == 2 and monitor.probes is not None and monitor.probes.images.dtype == torch.float32
    listed = AttributionMonitor(
        probes=list(images), methods=("gradcam", IntegratedGradients(n_steps=2)), target="predicted"
    )
    assert isinstance(listed.probe_source, Tensor) and tuple(listed.probe_source.shape) == (4, 1, 12, 12)


def test_uint8_validation_data_is_explained_as_the_model_receives_it(tmp_path: Any) -> None:
    class ScalesItself(CountingCNN):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x.float() / 255)

    x, y = make_images(48)
    x8 = (x.clamp(0, 1) * 255).to(torch.uint8)
    data = (
        DataLoader(TensorDataset(x8[:32], y[:32]), batch_size=16),
        DataLoader(TensorDataset(x8[32:], y[32:]), batch_size=16),
    )
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)))
    model, _ = fit(tmp_path, monitor, ScalesItself(), data=data)
    assert model.train_steps == 2 and not monitor.history[0].errors
    assert monitor.probes is not None and float(monitor.probes.images.max()) > 1  # the values the model receives


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drift": {"warmup_epochs": "2"}},
         r"`DriftPolicy\(warmup_epochs=\.\.\.\)` must be an int >= 0, got '2' \(str\); pass warmup_epochs=2"),
        ({"drift": {"topk": "0.1"}},
         r"`DriftPolicy\(topk=\.\.\.\)` must be a number in \(0, 1\], got '0.1' \(str\); pass topk=0.1"),
        ({"seed": None}, r"`seed` must be an int >= 0, got None"),
        ({"drift": {"probe_threshold": 5.0}},
         r"`DriftPolicy\(probe_threshold=\.\.\.\)` must be a number in \[0, 1\], got 5.0"),
        ({"drift": {"probe_threshold": float("nan")}},
         r"`DriftPolicy\(probe_threshold=\.\.\.\)` must be a number in \[0, 1\], got nan"),
        ({"num_probes": 2.5}, r"`num_probes` must be an int >= 1, got 2.5; pass a whole number: num_probes=2 or"),
        ({"display": {"colormap": ["jet"]}}, r"Unknown `Display.colormap=\['jet'\]`"),
        ({"display": {"log_heatmaps": "yes"}}, r"`Display\(log_heatmaps=\.\.\.\)` must be True or False"),
        ({"display": {"background_logging": 1}},
         r"`Display\(background_logging=\.\.\.\)` must be True or False, got 1"),
        ({"drift": {"detector": "none"}},
         r"`DriftPolicy\(detector=\.\.\.\)` must be 'default', a ShiftDetector or None"),
        ({"drift": {"rules": DriftRule()}}, r"`DriftPolicy.rules` must be a sequence of DriftRule"),
        ({"drift": {"rules": ("rank",)}}, r"`DriftPolicy.rules` must hold DriftRule instances, got 'rank'"),
        ({"methods": None}, r"`methods` must be a sequence of names"),
        ({"name": "a/b"}, r"`name` must be None or 1 to 64 ASCII letters, digits, '_' or '-'.*got 'a/b'.*'a_b'"),
    ],
    ids=["warmup-str", "topk-str", "seed-none", "threshold-5", "threshold-nan", "int-fraction", "cmap-list", "bool-str",
         "bool-int", "detector-str", "rules-one", "rules-str", "methods-none", "name-slash"],
)  # fmt: skip
def test_wrong_types_are_refused_by_name(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttributionMonitor(**built(kwargs))


def test_integer_like_values_are_converted() -> None:
    monitor = AttributionMonitor(
        num_probes=np.int64(4),
        methods=("gradcam", IntegratedGradients(n_steps=np.int32(2))),
        every_n_epochs=2.0,
        drift=DriftPolicy(warmup_epochs=torch.tensor(1), topk=np.float32(0.25)),
        seed=np.uint8(3),
    )
    kept = (monitor.num_probes, monitor.drift_tracker.warmup_epochs, monitor.seed, monitor.every_n_epochs)
    assert kept == (4, 1, 3, 2) and all(type(v) is int for v in kept)
    assert type(monitor.drift_tracker.topk) is float and monitor.drift_tracker.topk == 0.25
    ig = monitor.explainers[1]
    assert isinstance(ig, IntegratedGradients) and ig.n_steps == 2 and type(ig.n_steps) is int


def test_drift_rule_threshold_nan_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`DriftRule\(threshold=\.\.\.\)` must be a finite number, got nan"):
        DriftRule(threshold=float("nan"))


@pytest.mark.parametrize(("alias", "method"), [("ig", "integrated_gradients"), ("grad_cam", "gradcam")])
def test_drift_rule_aliases_fire(tmp_path: Any, alias: str, method: str) -> None:
    rule = DriftRule(threshold=0.0, methods=(alias,))
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        drift=DriftPolicy(warmup_epochs=0, detector=None, rules=(rule,)),
    )
    fit(tmp_path, monitor, max_epochs=2)
    assert [a.method for a in monitor.alerts] == [method]


def test_drift_rule_with_a_typo_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`DriftPolicy.rules` has DriftRule\(methods=\('gradcm',\)\).*not among"):
        AttributionMonitor(drift=DriftPolicy(rules=(DriftRule(methods=("gradcm",)),)))


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"metric": "topk", "threshold": 1.5}, r"`DriftRule\(threshold=1.5\)` is out of range: the median of 'topk' "
         r"drift lies in \[0, 1\], so the rule would never fire; choose a threshold in \[0, 1\]"),
        ({"threshold": 2.5}, r"the median of 'rank' drift lies in \[0, 2\], so the rule would never fire"),
        ({"statistic": "share", "threshold": 1.2}, r"the share of 'rank' drift lies in \[0, 1\]"),
        ({"threshold": -0.5}, r"would fire at every evaluation, as threshold=0 does; choose a threshold in \[0, 2\]"),
        ({"methods": ()}, r"`DriftRule\(methods=\.\.\.\)` must be a non-empty tuple of method names.*got \(\)"),
    ],
    ids=["topk-1.5", "rank-2.5", "share-1.2", "negative", "no-methods"],
)  # fmt: skip
def test_a_drift_rule_that_could_never_or_always_fire_is_refused(rule: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DriftRule(**rule)


def test_a_top_k_share_rule_with_nothing_to_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`DriftPolicy\(probe_threshold=1.0\)` leaves DriftRule\(metric='topk', "):
        DriftPolicy(probe_threshold=1.0, rules=(DriftRule(metric="topk", statistic="share", threshold=0.5),))
    DriftPolicy(probe_threshold=1.0, rules=(DriftRule(statistic="share", threshold=0.5),))  # rank drift reaches 2


def test_drift_rule_thresholds_at_the_ends_of_the_range_are_kept() -> None:
    kept = [DriftRule(threshold=2.0), DriftRule(metric="topk", threshold=1.0), DriftRule(threshold=0)]
    assert [r.threshold for r in kept] == [2.0, 1.0, 0.0]


@pytest.mark.parametrize("key", ["follow", "subset", "gradual"])
def test_shift_detector_switches_are_true_or_false(key: str) -> None:
    from lightning_xai import ShiftDetector

    with pytest.raises(ValueError, match=rf"`ShiftDetector\({key}=\.\.\.\)` must be True or False, got 'no'"):
        ShiftDetector(**{key: "no"})
    assert getattr(ShiftDetector(**{key: np.bool_(False)}), key) is False


def test_a_negative_denormalize_std_is_refused_before_training(tmp_path: Any) -> None:
    fails_before_training(
        tmp_path, {"methods": ("gradcam",), "denormalize": (0.3, -0.3)}, r"`denormalize` std must be positive.*-0.3"
    )


def test_soft_probe_masks_are_refused_and_zero_one_masks_are_kept(tmp_path: Any) -> None:
    x, y = probes_and_labels(4)
    region = torch.zeros(4, 12, 12)
    region[:, :6] = 1.0
    soft = torch.where(region.bool(), 1.0, 0.1)
    message = fails_before_training(
        tmp_path, {"probes": (x, y), "methods": ("gradcam",), "display": Display(probe_masks=soft)},
        r"`Display.probe_masks` must be boolean \(or 0/1\) masks, got a torch.float32 value 0.1",
    )  # fmt: skip
    assert "probe_masks=masks > 0.5" in message and "probe_masks=masks > 0` (a 0/255 image)" in message
    scores = []
    for masks in (region, region.bool()):
        monitor = AttributionMonitor(probes=(x, y), methods=("gradcam",), display=Display(probe_masks=masks))
        fit(tmp_path, monitor)
        scores.append(monitor.history[0].scalars["xai/localization/gradcam/relevance_mass"])
    assert scores[0] == scores[1] < 1.0


class CountingReusedConv(CountingCNN):
    """Its only convolution runs twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        del self.features
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(1, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv(torch.relu(self.conv(x))))
        return self.head(self.pool(h).flatten(1))


def test_only_conv_layer_used_twice_is_named(tmp_path: Any) -> None:
    message = fails_before_training(
        tmp_path, {"methods": ("gradcam",)}, r"run more than once per forward pass", model=CountingReusedConv()
    )
    assert "`conv` (Conv2d) runs 2 times" in message and "has no module" not in message


class CountingNoGradBackbone(CountingCNN):
    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            h = self.features(x)
        return self.head(self.dropout(self.pool(h).flatten(1)))


class CountingReentrant(CountingCNN):
    def forward(self, x: Tensor) -> Tensor:
        h = checkpoint(self.features, x, use_reentrant=True)
        return self.head(self.dropout(self.pool(h).flatten(1)))


@pytest.mark.parametrize(
    ("model_cls", "why", "fix"),
    [
        (CountingNoGradBackbone, r"does not carry gradients", r"requires_grad_\(False\)` instead of `torch.no_grad"),
        (CountingReentrant, r"reentrant gradient checkpointing", r"use_reentrant=False"),
    ],
    ids=["no_grad-backbone", "reentrant-checkpointing"],
)
def test_model_without_input_gradients_is_said_once_at_setup(
    tmp_path: Any, model_cls: type, why: str, fix: str
) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)))
    model = model_cls()
    messages = recorded(lambda: fit(tmp_path, monitor, model, max_epochs=3))
    said = [m for m in messages if re.search(why, m)]
    assert len(said) == 1 and re.search(fix, said[0]), messages  # once, at setup, with what to do
    assert model.train_steps == 6 and len(monitor.history) == 3
    assert not [m for m in messages if "does not require grad" in m]  # no per-epoch failures
    for record in monitor.history:
        assert len(record.errors) == 2 and all("cannot run on this model" in e for e in record.errors)


def test_probe_masks_callable_that_raises_fails_before_training(tmp_path: Any) -> None:
    def broken(images: Tensor, labels: Tensor | None) -> Tensor:
        raise KeyError("mask file")

    fails_before_training(
        tmp_path, {"display": Display(probe_masks=broken)}, r"`(Display\.)?probe_masks` raised KeyError"
    )


class Malformed(Explainer):
    name = "malformed"

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        maps = torch.rand(inputs.shape[0], *inputs.shape[-2:])
        if self.bad == "float_diagnostic":
            return Explanation(maps, maps.clone(), {"score": 0.5})  # type: ignore[dict-item]
        if self.bad == "1d_map":
            return Explanation(maps.flatten(1)[:, 0], maps.clone())
        if self.bad == "fewer_maps":
            return Explanation(maps[:-1], maps[:-1].clone())
        raise RuntimeError("broken custom method")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("float_diagnostic", r"diagnostics\['score'\] is float"),
        ("1d_map", r"raw has shape \(2,\)"),  # the dry run explains two probes
        ("fewer_maps", r"raw has shape \(1, 12, 12\)"),
        ("raises", r"failed on the probes at setup: RuntimeError: broken custom method"),
    ],
)
def test_custom_explainer_broken_from_the_start_fails_before_training(tmp_path: Any, bad: str, match: str) -> None:
    fails_before_training(tmp_path, {"num_probes": 4, "methods": ["gradcam", Malformed(bad)]}, rf"`methods`.*{match}")


class CountingScaled(CountingCNN):
    """A forward that needs an argument besides the images."""

    def forward(self, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        return super().forward(x) * scale

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        return torch.nn.functional.cross_entropy(self(batch[0], 1.0), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self(batch[0], 1.0)


def test_a_forward_that_needs_more_than_the_images_is_told_to_use_forward_fn(tmp_path: Any) -> None:
    """``forward(x, scale)`` was refused with advice about state set by a first training step; the cause is the
    missing argument, and the fix is ``forward_fn=``."""
    kwargs = {"num_probes": 4, "methods": ("gradcam",)}
    message = fails_before_training(tmp_path, kwargs, r"forward takes more than the images", CountingScaled())
    assert "(x: 'Tensor', scale: 'float')" in message and "forward_fn=lambda model, x: model(x, ...)" in message
    monitor = AttributionMonitor(**kwargs, forward_fn=_scaled_forward)
    model, _ = fit(tmp_path / "fixed", monitor, CountingScaled())
    assert model.train_steps == 2 and not monitor.history[0].errors


def _scaled_forward(model: Any, x: Tensor) -> Tensor:
    return model(x, 1.0)


def test_channels_last_probes_are_said_as_such_before_training(tmp_path: Any) -> None:
    """(N, H, W, C) probes were refused as "16 channels: pass denormalize= a callable, e.g. x[:, :3]", a fix for
    another problem."""
    kwargs = {"probes": (torch.rand(4, 16, 16, 1), torch.arange(4)), "methods": ("gradcam",)}
    message = fails_before_training(tmp_path, kwargs, r"look channels-last \(H, W, C\)")  # no logger: no picture
    assert "x.permute(0, 3, 1, 2)" in message
    with pytest.raises(ValueError, match=r"look channels-last \(N, H, W, C\)") as info:
        fit(tmp_path / "shown", AttributionMonitor(**kwargs), logger=tb(tmp_path))
    assert "x.permute(0, 3, 1, 2)" in str(info.value) and "denormalize" not in str(info.value)


class BlankAfterSetup(Explainer):
    """Maps with relevance in the setup dry run, then zero on every probe (Grad-CAM whose layer's weighted evidence
    is negative everywhere: its ReLU leaves nothing), from the second evaluation on."""

    name = "blank"

    def __init__(self) -> None:
        self.calls = 0

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        maps = torch.rand(inputs.shape[0], *inputs.shape[-2:], generator=g) * (self.calls < 3)
        return Explanation(raw=maps, display=maps.clone())


def test_maps_zero_on_every_probe_are_said_and_not_read_as_no_drift(tmp_path: Any) -> None:
    """A method whose maps were zero on every probe was measured as "nothing moved" (drift 0.00 on every tile and
    curve), silently. Now those maps are not compared (said once, in ``xai/errors``); the last maps with relevance
    stay the previous ones; the keys stay in ``callback_metrics``."""
    blank = BlankAfterSetup()
    monitor = AttributionMonitor(num_probes=4, methods=[blank], drift=DriftPolicy(warmup_epochs=0))
    key = "xai/blank/drift/rank_vs_reference/median"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, trainer = fit(tmp_path, monitor, max_epochs=3)
    assert model.train_steps == 6 and blank.calls == 4  # the dry run, then three evaluations
    said = [str(w.message) for w in caught if "every probe's map is zero" in str(w.message)]
    assert len(said) == 1 and "blank at epoch 1" in said[0], said
    assert [key in h.scalars for h in monitor.history] == [True, False, False]
    assert [bool(h.errors) for h in monitor.history] == [False, True, True]
    assert key in trainer.callback_metrics and float(trainer.callback_metrics[key]) == 0.0
    assert monitor.drift_tracker.previous["blank"].abs().amax() > 0  # epoch 0's maps: the last with relevance


class AlwaysBlank(Explainer):
    """No relevance on any probe at any evaluation."""

    name = "void"

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        maps = torch.zeros(inputs.shape[0], *inputs.shape[-2:])
        return Explanation(raw=maps, display=maps.clone())


def test_a_method_never_compared_gets_no_drift_point_in_the_loggers(tmp_path: Any) -> None:
    """Its drift medians were logged as 0.0 at every evaluation (the placeholder of a key not measured yet): the flat
    'nothing moved' curve the skip is there to avoid (review). Now no logger gets a point; ``callback_metrics`` holds
    the stand-in a watching callback needs; ``validate`` returns none."""
    import csv

    monitor = AttributionMonitor(num_probes=4, methods=["gradcam", AlwaysBlank()], drift=DriftPolicy(warmup_epochs=0))
    key = "xai/void/drift/rank_vs_reference/median"
    model, trainer = fit(tmp_path, monitor, max_epochs=2, logger=CSVLogger(str(tmp_path)))
    assert [h.uncompared for h in monitor.history] == [["void"], ["void"]]
    with open(f"{trainer.log_dir}/metrics.csv") as sheet:
        rows = list(csv.DictReader(sheet))
    assert not [r for r in rows if r.get(key)] and [r for r in rows if r.get("xai/gradcam/seconds")]
    assert key in trainer.callback_metrics
    (returned,) = trainer.validate(model, loaders(n_train=32, n_val=16)[1], verbose=False)
    assert key not in returned and "xai/gradcam/drift/rank_vs_reference/median" in returned
