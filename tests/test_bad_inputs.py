"""Bad inputs fail early and clearly; an explanation that fails at run time never stops training.

Every error must be raised before the first training step (counted by the model) and must name the argument
and the offending value.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, make_images, trainer_kwargs
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor
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
        ({"on_drift": "explode"}, r"`on_drift='explode'` is not supported.*'warn'.*'stop'.*'raise'"),
        ({"probes": torch.rand(2, 12, 12)}, r"`probes` must be a 4-D tensor .*got shape \(2, 12, 12\)"),
        ({"ig_steps": 0}, r"`ig_steps` must be an int >= 1, got 0"),
    ],
    ids=["target-banana", "num_probes-0", "every_n_epochs-0", "on_drift-explode", "probes-3d", "ig_steps-0"],
)
def test_constructor_rejects(kwargs: dict[str, Any], match: str) -> None:
    # raised while building the callback, i.e. long before any training epoch
    with pytest.raises(ValueError, match=match):
        AttributionMonitor(**kwargs)


# ------------------------------------------------------------------ errors that need the model (in fit)


def test_gradcam_layer_not_found_lists_candidates(tmp_path: Any) -> None:
    message = fails_before_training(
        tmp_path, {"methods": ("gradcam",), "gradcam_layer": "feature"}, r"`gradcam_layer='feature'`"
    )
    assert "not a module of CountingCNN" in message
    assert "'features'" in message and "'features.3'" in message


@pytest.mark.parametrize("layer", ["featurs", "conv5"])
def test_gradcam_layer_typo_lists_candidates(tmp_path: Any, layer: str) -> None:
    message = fails_before_training(
        tmp_path, {"methods": ("gradcam",), "gradcam_layer": layer}, rf"`gradcam_layer='{layer}'`"
    )
    assert "'features'" in message, message


def test_gradcam_layer_module_not_in_model(tmp_path: Any) -> None:
    stranger = nn.Conv2d(1, 8, 3)
    fails_before_training(
        tmp_path,
        {"methods": ("gradcam",), "gradcam_layer": stranger},
        r"`gradcam_layer` received a module \(Conv2d\) that is not a submodule of CountingCNN",
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
    monitor = AttributionMonitor(methods=("integrated_gradients",), ig_steps=4, num_probes=4)
    model, trainer = fit(tmp_path, monitor, CountingMLP())
    assert model.train_steps == 2 and len(monitor.history) == 1 and not monitor.history[0].errors


def test_reused_layer_given_explicitly(tmp_path: Any) -> None:
    message = fails_before_training(
        tmp_path,
        {"methods": ("gradcam",), "gradcam_layer": "act"},
        r"`gradcam_layer='act'` runs 2 times per forward pass",
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
    [({"colormap": "bogus"}, r"colormap='bogus'"), ({"denormalize": (0.5,)}, r"denormalize")],
    ids=["colormap", "denormalize"],
)
def test_bad_rendering_option_fails_before_training(tmp_path: Any, kwargs: dict[str, Any], match: str) -> None:
    model = CountingCNN()
    with pytest.raises(ValueError, match=match):
        monitor = AttributionMonitor(methods=("gradcam",), **kwargs)
        fit(tmp_path, monitor, model, logger=TensorBoardLogger(str(tmp_path)))
    assert model.train_steps == 0


def test_bad_ig_baseline_fails_before_training(tmp_path: Any) -> None:
    fails_before_training(
        tmp_path,
        {"methods": ("integrated_gradients",), "ig_baseline": torch.zeros(3, 5, 5), "ig_steps": 4},
        r"`ig_baseline`",
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
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), warmup_epochs=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, trainer = fit(tmp_path, monitor, max_epochs=2, logger=CSVLogger(str(tmp_path)))
    tb_warnings = [w for w in caught if "TensorBoardLogger" in str(w.message)]
    assert len(tb_warnings) == 1, [str(w.message) for w in tb_warnings]
    metrics = trainer.callback_metrics
    for key in ("rank_vs_reference/median", "rank_vs_previous/median", "topk_vs_previous/share"):
        assert f"xai/gradcam/drift/{key}" in metrics, sorted(metrics)
    assert len(monitor.history) == 2


def test_tensorboard_logger_present_no_warning(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, monitor, logger=TensorBoardLogger(str(tmp_path)))
    assert not [w for w in caught if "no TensorBoardLogger" in str(w.message)]


# -------------------------------------------------------------------------------------- dict model output


def test_dict_output_needs_output_transform(tmp_path: Any) -> None:
    fails_before_training(tmp_path, {"num_probes": 4}, r"output_transform", model=CountingDictCNN())


def test_dict_output_works_with_output_transform(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, ig_steps=4, output_transform=lambda out: out["logits"])
    model, trainer = fit(tmp_path, monitor, CountingDictCNN())
    assert model.train_steps == 2
    assert len(monitor.history) == 1 and not monitor.history[0].errors
    assert "xai/integrated_gradients/completeness_gap" in trainer.callback_metrics


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
    monitor = AttributionMonitor(num_probes=4, methods=["gradcam", exploding, NaNExplainer()], warmup_epochs=0)
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
    assert not [k for k in list(scalars) + list(trainer.callback_metrics) if "exploding" in k or "nan_maps" in k]
