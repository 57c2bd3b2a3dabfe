"""AttributionMonitor across Lightning features: precision, torch.compile, inference mode, loop options,
dict/tuple outputs, extra forward arguments, pickling, checkpoints, state keys and sharded strategies."""

from __future__ import annotations

import functools
import glob
import os
import pickle
import warnings
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, make_images, trainer_kwargs
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, Budget, Display, DriftPolicy, DriftRule, GradCam, IntegratedGradients
from lightning_xai._distributed import check_strategy
from lightning_xai.explain.forward import model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.probes.collect import collect_probes

ALWAYS = DriftRule(threshold=0.0, patience=1)


def fit(
    tmp_path: Any, callbacks: list[Callback], model: L.LightningModule | None = None, seed: int = 0, **kw: Any
) -> tuple[L.LightningModule, L.Trainer]:
    L.seed_everything(seed, verbose=False)
    model = model if model is not None else TinyCNN()
    train, val = loaders()
    kw.setdefault("max_epochs", 2)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, **kw))
    trainer.fit(model, train, val)
    return model, trainer


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert p.dtype == q.dtype and torch.equal(p, q), name


def explain_final_weights(model: nn.Module, monitor: AttributionMonitor) -> dict[str, Tensor]:
    """Explain the probes with a fresh float32 TinyCNN holding ``model``'s final weights (no Trainer involved)."""
    fresh = TinyCNN()
    fresh.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    assert monitor.probes is not None and monitor.probes.labels is not None
    x = monitor.probes.images
    out = {}
    steps = next(e for e in monitor.explainers if isinstance(e, IntegratedGradients)).n_steps
    for explainer in (GradCam(), IntegratedGradients(n_steps=steps)):
        with training_state_guard(fresh), model_forward(fresh) as forward:
            explainer.setup(fresh, forward, x[:1].clone())
            out[explainer.name] = explainer.explain(forward, x.clone(), monitor.probes.labels).raw
    return out


# ----------------------------------------------------------------------------------------------- precision


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true", "16-true"])
def test_precision_bit_identical_float32_and_equal_to_float32_model(tmp_path: Any, precision: str) -> None:
    """Training is bit-identical with the monitor; its maps are float32 and equal a float32 copy's maps.

    On CPU Lightning runs "16-mixed" as bfloat16 autocast; "16-true"/"bf16-true" store half/bfloat16 weights,
    which the monitor reads through float32 copies (``model_forward``)."""
    plain, _ = fit(tmp_path / "a", [], precision=precision)
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    watched, _ = fit(tmp_path / "b", [monitor], precision=precision)
    assert_same_weights(plain, watched)
    if precision.endswith("-true"):
        assert next(watched.parameters()).dtype == (torch.bfloat16 if precision == "bf16-true" else torch.float16)
    assert monitor.evaluations == 2 and not any(h.errors for h in monitor.history)
    assert all(torch.isfinite(torch.tensor(list(h.scalars.values()))).all() for h in monitor.history)
    expected = explain_final_weights(watched, monitor)
    for name, raw in monitor.drift_tracker.previous.items():  # the last evaluation ran on the final weights
        assert raw.dtype == torch.float32 and torch.isfinite(raw).all()
        torch.testing.assert_close(raw, expected[name], rtol=1e-5, atol=1e-6)


def test_model_forward_half_model_with_forward_fn_is_float32() -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    half = TinyCNN().eval()
    half.load_state_dict(net.state_dict())
    half.half()
    x = torch.rand(3, 1, 12, 12)
    scaled = functools.partial(_scaled_forward, factor=2.0)
    with model_forward(half, forward_fn=scaled) as forward:
        out = forward(x)
    with model_forward(net, forward_fn=scaled) as forward:
        reference = forward(x)
    assert out.dtype == torch.float32
    # float32 copies of the half weights: equal to the float model up to the half rounding of the weights
    torch.testing.assert_close(out, reference, rtol=2e-2, atol=2e-2)
    assert next(half.parameters()).dtype == torch.float16  # the model itself is untouched


def _scaled_forward(model: nn.Module, x: Tensor, factor: float) -> Tensor:
    return model(x) * factor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed with a GradScaler needs CUDA")
def test_16_mixed_on_cuda(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    model, trainer = fit(tmp_path, [monitor], precision="16-mixed", accelerator="cuda", deterministic=False)
    assert monitor.evaluations == 2 and not any(h.errors for h in monitor.history)
    for raw in monitor.drift_tracker.previous.values():
        assert raw.dtype == torch.float32 and torch.isfinite(raw).all()


# ------------------------------------------------------------------------------------------- torch.compile


class CountingBackend:
    """A dynamo backend that runs the graph eagerly and counts compilations."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Any:
        self.graphs += 1
        return gm.forward


class CompiledForwardCheck(Callback):
    """After the monitor ran: the compiled forward is back in place."""

    def __init__(self) -> None:
        self.checked = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ctx = pl_module._compiler_ctx
        assert ctx is not None and pl_module.__dict__["forward"] is not ctx["original_forward"]
        self.checked += 1


class QuietCNN(TinyCNN):
    """No ``self.log`` in the steps: Lightning's own ``log`` recompiles when it sees new logger state (e.g. the
    monitor's keys in the validation results), which is Lightning's behaviour, not the model's."""

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self(batch[0])


@pytest.mark.slow
def test_torch_compile_uses_uncompiled_forward_without_recompiling(tmp_path: Any) -> None:
    counts = []
    models = []
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    check = CompiledForwardCheck()
    for callbacks in ([], [monitor, check]):
        torch._dynamo.reset()
        backend = CountingBackend()
        L.seed_everything(0, verbose=False)
        model = QuietCNN()
        compiled = torch.compile(model, backend=backend)
        fit(tmp_path / str(len(counts)), callbacks, model=compiled)  # type: ignore[arg-type]
        counts.append(backend.graphs)
        models.append(model)
    assert counts[0] > 0 and counts[1] == counts[0]  # the monitor caused no (re)compilation
    assert check.checked == 2
    assert_same_weights(models[0], models[1])
    assert not any(h.errors for h in monitor.history)
    expected = explain_final_weights(models[1], monitor)  # an uncompiled model with the same weights
    for name, raw in monitor.drift_tracker.previous.items():
        torch.testing.assert_close(raw, expected[name], rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_compiled_submodules_run_uncompiled_inside_model_forward() -> None:
    """``nn.Module.compile()`` in place and ``torch.compile``d children are bypassed, then restored."""
    torch._dynamo.reset()
    backend = CountingBackend()
    torch.manual_seed(0)
    model = TinyCNN().eval()
    reference = TinyCNN().eval()
    reference.load_state_dict(model.state_dict())
    model.head.compile(backend=backend)
    model.features = torch.compile(model.features, backend=backend)  # type: ignore[assignment]
    x = torch.rand(2, 1, 12, 12)
    model(x)
    compiled_graphs = backend.graphs
    assert compiled_graphs > 0
    compiled_forward = model.features.__dict__["forward"]
    impl = model.head._compiled_call_impl
    cam = GradCam()
    with training_state_guard(model), model_forward(model) as forward:
        cam.setup(model, forward, x[:1].clone())
        got = cam.explain(forward, x.clone(), torch.tensor([0, 1])).raw
    assert backend.graphs == compiled_graphs  # nothing was compiled for the explanation
    assert model.features.__dict__["forward"] is compiled_forward and model.head._compiled_call_impl is impl
    assert cam.layer_name == "features"  # the compiled wrapper finishes last; its hooks fire when uncompiled
    ref_cam = GradCam()
    with training_state_guard(reference), model_forward(reference) as forward:
        ref_cam.setup(reference, forward, x[:1].clone())
        expected = ref_cam.explain(forward, x.clone(), torch.tensor([0, 1])).raw
    torch.testing.assert_close(got, expected)
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------ inference mode


def test_validate_and_test_explain_under_inference_mode(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))
    L.seed_everything(0, verbose=False)
    model = TinyCNN()
    _, val = loaders()
    test_images, test_labels = make_images(16, seed=7)
    test = DataLoader(TensorDataset(test_images, test_labels), batch_size=8)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], inference_mode=True))
    results = trainer.test(model, test)  # a fresh monitor under trainer.test: probes come from the test data
    assert monitor.evaluations == 1 and not monitor.history[0].errors
    assert monitor.probes is not None and monitor.probes.source == "test dataloader"
    assert any(torch.equal(monitor.probes.images[0], img) for img in test_images)
    key = "xai/gradcam/drift/rank_vs_previous/median"  # nothing to compare with yet: a stand-in for the callbacks,
    assert key not in results[0] and key in trainer.callback_metrics  # not a result `test` returns
    assert "xai/integrated_gradients/completeness_gap" in monitor.history[0].scalars  # (to the loggers directly)
    results = trainer.validate(model, val)  # same probes, now compared with the test-time maps
    assert key in results[0]  # a measured monitored key: in what `validate` returns
    assert monitor.evaluations == 2 and not monitor.history[1].errors
    assert monitor.history[1].scalars["xai/gradcam/drift/rank_vs_previous/median"] == 0.0  # same weights
    assert not monitor.probes.images.is_inference()


# ------------------------------------------------------------------ bit-identical under training features


class ManualOptimization(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        optimizer.zero_grad()  # type: ignore[union-attr]
        loss = super().training_step(batch, batch_idx)
        self.manual_backward(loss)
        self.clip_gradients(optimizer, gradient_clip_val=1.0)  # type: ignore[arg-type]
        optimizer.step()  # type: ignore[union-attr]
        return loss


class HeavyDropout(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.features.insert(3, nn.Dropout2d(0.3))


class Checkpointed(TinyCNN):
    reentrant = False

    def forward(self, x: Tensor) -> Tensor:
        h = torch.utils.checkpoint.checkpoint(self.features, x, use_reentrant=self.reentrant)
        return self.head(self.dropout(self.pool(h).flatten(1)))


class CheckpointedReentrant(Checkpointed):
    reentrant = True  # the monitor cannot explain it (said once at setup) but must not change its training


class ChannelsLast(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


FEATURES: dict[str, tuple[type, dict[str, Any]]] = {
    "dropout": (HeavyDropout, {}),
    "gradient-clipping": (TinyCNN, {"gradient_clip_val": 0.1}),
    "manual-optimization": (ManualOptimization, {}),
    "swa": (TinyCNN, {"callbacks": ["swa"]}),
    "ema": (TinyCNN, {"callbacks": ["ema"]}),
    "gradient-checkpointing": (Checkpointed, {}),
    "reentrant-checkpointing": (CheckpointedReentrant, {}),
    "channels-last": (ChannelsLast, {}),
}


def _feature_callbacks(names: list[str]) -> list[Callback]:
    from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging

    made = {"swa": lambda: StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1), "ema": EMAWeightAveraging}
    return [made[n]() for n in names]


@pytest.mark.parametrize("feature", list(FEATURES))
def test_training_is_bit_identical_under_training_features(tmp_path: Any, feature: str) -> None:
    """The configurations the issue-14 review found bit-identical stay so (weights and the RNG stream after fit)."""
    model_cls, kw = FEATURES[feature]
    extra = dict(kw)
    names = extra.pop("callbacks", [])

    def run(path: Any, monitor: AttributionMonitor | None) -> tuple[L.LightningModule, Tensor]:
        L.seed_everything(0, verbose=False)  # the model is initialised from the same seed in both runs
        callbacks = _feature_callbacks(names) + ([monitor] if monitor is not None else [])
        model, _ = fit(path, callbacks, model=model_cls(), max_epochs=3, **extra)
        return model, torch.random.get_rng_state()

    plain, plain_rng = run(tmp_path / "a", None)
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reentrant model is said at setup not to be explainable
        watched, watched_rng = run(tmp_path / "b", monitor)
    assert monitor.evaluations >= 3  # SWA adds a validation after its BatchNorm update epoch
    assert_same_weights(plain, watched)
    assert torch.equal(plain_rng, watched_rng)


# -------------------------------------------------------------------------------------- Lightning features


class GradRecorder(Callback):
    """Records every parameter's ``.grad`` at ``on_validation_epoch_end`` (placed before/after the monitor)."""

    def __init__(self) -> None:
        self.grads: list[list[Tensor | None]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.grads.append([None if p.grad is None else p.grad.clone() for p in pl_module.parameters()])


@pytest.mark.slow
def test_accumulated_gradients_survive_validation_mid_accumulation(tmp_path: Any) -> None:
    # 4 batches per epoch, accumulate 4, validate every 2 batches: the first validation of each epoch sees
    # two accumulated, not yet applied, gradients
    kw: dict[str, Any] = {"accumulate_grad_batches": 4, "val_check_interval": 2}
    plain, _ = fit(tmp_path / "a", [], **kw)
    before, after = GradRecorder(), GradRecorder()
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    watched, _ = fit(tmp_path / "b", [before, monitor, after], **kw)
    assert monitor.evaluations == 4
    mid = before.grads[0]
    assert all(g is not None and g.abs().sum() > 0 for g in mid)  # validation really fell mid-accumulation
    for seen_before, seen_after in zip(before.grads, after.grads, strict=True):
        for g0, g1 in zip(seen_before, seen_after, strict=True):
            assert (g0 is None and g1 is None) or (g0 is not None and g1 is not None and torch.equal(g0, g1))
    assert_same_weights(plain, watched)


class TwoValLoaders(TinyCNN):
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().validation_step(batch, batch_idx)


def test_several_validation_dataloaders_probes_from_the_first(tmp_path: Any) -> None:
    train, val = loaders()
    big_images, big_labels = make_images(16, size=20, seed=5)  # another size: drawing from it would show
    other = DataLoader(TensorDataset(big_images, big_labels), batch_size=8)
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=2))
    trainer.fit(TwoValLoaders(), train, [val, other])
    expected = collect_probes(val, num_probes=4, seed=0)
    assert monitor.probes is not None and torch.equal(monitor.probes.images, expected.images)
    assert monitor.evaluations == 2  # once per validation run, not once per dataloader
    assert "xai/gradcam/drift/rank_vs_previous/median" in trainer.callback_metrics  # no "/dataloader_idx_0"


def test_limit_val_batches_zero_warns_once_and_does_nothing(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = fit(tmp_path, [monitor], limit_val_batches=0, max_epochs=2)
    ours = [w for w in caught if "limit_val_batches=0" in str(w.message) and "AttributionMonitor" in str(w.message)]
    assert len(ours) == 1
    assert monitor.evaluations == 0 and monitor.probes is None and not monitor.history
    plain, _ = fit(tmp_path / "plain", [], limit_val_batches=0, max_epochs=2)
    assert_same_weights(plain, model)


def test_fast_dev_run_with_dummy_logger(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))
    logdir = str(tmp_path / "logs")
    _, trainer = fit(tmp_path, [monitor], fast_dev_run=True, logger=TensorBoardLogger(logdir))
    assert monitor.evaluations == 1 and not monitor.history[0].errors
    assert not glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)  # DummyLogger


def test_check_val_every_n_epoch(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    fit(tmp_path, [monitor], check_val_every_n_epoch=2, max_epochs=4)
    assert [h.epoch for h in monitor.history] == [1, 3]
    assert "xai/gradcam/drift/rank_vs_previous/median" in monitor.history[1].scalars


@pytest.mark.slow
def test_val_check_interval_inside_an_epoch(tmp_path: Any) -> None:
    logdir = str(tmp_path / "logs")
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0),
        display=Display(log_grids=True),
    )
    fit(tmp_path, [monitor], val_check_interval=0.5, max_epochs=2, logger=TensorBoardLogger(logdir, name="run"))
    assert [(h.epoch, h.global_step) for h in monitor.history] == [(0, 2), (0, 4), (1, 6), (1, 8)]
    # the second validation of an epoch is compared with the first one ("previous")
    assert "xai/gradcam/drift/rank_vs_previous/median" in monitor.history[1].scalars
    files = glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("xai/gradcam/overlay")] == [2, 4, 6, 8]


def test_num_sanity_val_steps_does_not_explain(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    model, _ = fit(tmp_path, [monitor], num_sanity_val_steps=2, max_epochs=2)
    assert [h.epoch for h in monitor.history] == [0, 1]
    plain, _ = fit(tmp_path / "plain", [], num_sanity_val_steps=2, max_epochs=2)
    assert_same_weights(plain, model)


class DictOutput(TinyCNN):
    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        return {"logits": super().forward(x), "embedding": x.flatten(1)}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x)["logits"], y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x)["logits"], y))


class TupleOutput(DictOutput):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        out = super().forward(x)
        return out["logits"], out["embedding"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x)[0], y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass


@pytest.mark.parametrize(
    ("model_cls", "transform", "fix"),
    [(DictOutput, itemgetter("logits"), r"\['logits'\]"), (TupleOutput, itemgetter(0), r"\[0\]")],
)
def test_dict_and_tuple_outputs_with_forward_fn(tmp_path: Any, model_cls: type, transform: Any, fix: str) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        forward_fn=lambda module, x: transform(module(x)),
        drift=DriftPolicy(warmup_epochs=0),
    )
    fit(tmp_path, [monitor], model=model_cls())
    assert monitor.evaluations == 2 and not any(h.errors for h in monitor.history)
    with pytest.raises(ValueError, match=rf"returns a (dict|tuple) .*forward_fn=lambda module, x: module\(x\){fix}"):
        fit(
            tmp_path / "bad",
            [AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))],
            model=model_cls(),
        )


class NeedsTemperature(TinyCNN):
    def forward(self, x: Tensor, temperature: float) -> Tensor:  # type: ignore[override]
        return super().forward(x) / temperature

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x, 2.0), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x, 2.0), y))


def call_with_temperature(model: nn.Module, x: Tensor) -> Tensor:
    return model(x, temperature=2.0)


def test_forward_with_extra_arguments_via_forward_fn(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="forward raised TypeError"):
        fit(
            tmp_path / "bad",
            [AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))],
            model=NeedsTemperature(),
        )
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        forward_fn=call_with_temperature,
        drift=DriftPolicy(warmup_epochs=0),
    )
    model, _ = fit(tmp_path, [monitor], model=NeedsTemperature())
    assert monitor.evaluations == 2 and not any(h.errors for h in monitor.history)
    assert monitor.probes is not None and monitor.probes.labels is not None
    cam = GradCam()
    x = monitor.probes.images
    with training_state_guard(model):
        cam.setup(model, functools.partial(call_with_temperature, model), x[:1].clone())
        expected = cam.explain(functools.partial(call_with_temperature, model), x.clone(), monitor.probes.labels)
    torch.testing.assert_close(monitor.drift_tracker.previous["gradcam"], expected.raw)
    with pytest.raises(ValueError, match="forward_fn"):
        AttributionMonitor(forward_fn="forward")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- pickling, checkpoints, state keys


def test_pickles_without_the_model_before_and_after_fit(tmp_path: Any) -> None:
    reshape = functools.partial(torch.permute, dims=(0, 1, 2, 3))
    monitor = AttributionMonitor(
        num_probes=4,
        methods=(GradCam(reshape=reshape), IntegratedGradients(n_steps=4)),
        forward_fn=call_with_temperature,
        drift=DriftPolicy(warmup_epochs=0),
    )
    pickle.loads(pickle.dumps(monitor))  # what ddp_spawn does before training starts
    fit(tmp_path, [monitor], model=NeedsTemperature())
    data = pickle.dumps(monitor)
    assert len(data) < 50_000  # probes, maps and settings; no model inside
    clone = pickle.loads(data)
    assert clone.explainers[0]._module is None and clone._prepared_for is None
    assert clone.state_key == monitor.state_key
    assert torch.equal(clone.probes.images, monitor.probes.images)


def test_checkpoint_state_loads_with_weights_only(tmp_path: Any) -> None:
    masks = torch.zeros(4, 12, 12, dtype=torch.bool)
    masks[:, 2:8, 2:8] = True
    x, y = loaders()[1].dataset.tensors  # type: ignore[attr-defined]
    monitor = AttributionMonitor(
        probes=(x[:4], y[:4]),
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,)),
        display=Display(probe_masks=masks),
    )
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    fit(tmp_path, [monitor, ckpt], enable_checkpointing=True)
    assert monitor.alerts
    checkpoint = torch.load(str(tmp_path / "ckpt" / "last.ckpt"), weights_only=True)
    state = checkpoint["callbacks"][monitor.state_key]
    assert torch.equal(state["masks"], masks) and len(state["history"]) == 2
    assert len(state["alerts"]["alerts"]) == len(monitor.alerts)
    restored = AttributionMonitor(
        probes=(x[:4], y[:4]),
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,)),
        display=Display(probe_masks=masks),
    )
    assert restored.state_key == monitor.state_key  # same settings, same key: resume finds the state
    restored.load_state_dict(state)
    assert [a.message for a in restored.alerts] == [a.message for a in monitor.alerts]


def test_state_keys_distinct_for_different_settings() -> None:
    ig4 = IntegratedGradients(n_steps=4)
    base: dict[str, Any] = dict(num_probes=4, methods=("gradcam", ig4))
    variants: list[dict[str, Any]] = [
        {},
        {"methods": ("gradcam", IntegratedGradients(n_steps=8))},
        {"methods": (GradCam(layer="features.3"), ig4)},
        {"methods": ("gradcam",)},
        {"target": "predicted"},
        {"target": 2},
        {"seed": 1},
        {"num_probes": 8},
        {"probes": torch.zeros(2, 1, 12, 12)},
        {"probes": torch.ones(2, 1, 12, 12)},
        {"methods": ("gradcam", IntegratedGradients(n_steps=4, baseline=0.5))},
    ]
    keys = [AttributionMonitor(**{**base, **v}).state_key for v in variants]
    assert len(set(keys)) == len(keys)
    # the key describes what the stored maps depend on, not the presentation, the action or the alert settings:
    # resuming may change those without losing the reference
    display, stop = Display(colormap="viridis"), DriftPolicy(on_drift="stop")
    assert AttributionMonitor(**base, display=display, drift=stop).state_key == keys[0]
    for other in (
        {"drift": DriftPolicy(warmup_epochs=0)},
        {"every_n_epochs": 2},
        {"drift": DriftPolicy(rules=(ALWAYS,))},
        {"drift": DriftPolicy(detector=None)},
        {"drift": DriftPolicy(cooldown=0)},
        {"budget": Budget(max_overhead=0.1)},
    ):
        assert AttributionMonitor(**base, **other).state_key == keys[0]
    assert len(keys[0]) < 200  # Lightning's key format (a dict of name, methods, probes, target)
    assert AttributionMonitor(**base).state_key == keys[0]


def test_two_monitors_in_one_trainer_keep_separate_state(tmp_path: Any) -> None:
    first = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    second = AttributionMonitor(
        num_probes=4, methods=(IntegratedGradients(n_steps=8),), drift=DriftPolicy(warmup_epochs=0), name="ig"
    )  # two monitors in one Trainer need distinct names (keys xai/ig/...)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    fit(tmp_path, [first, second, ckpt], enable_checkpointing=True)
    states = torch.load(str(tmp_path / "ckpt" / "last.ckpt"), weights_only=True)["callbacks"]
    assert set(states[first.state_key]["drift"]["previous"]) == {"gradcam"}
    assert set(states[second.state_key]["drift"]["previous"]) == {"integrated_gradients"}


# ------------------------------------------------------------------------------------- sharded strategies


@pytest.mark.parametrize("strategy", [FSDPStrategy, ModelParallelStrategy])
def test_sharded_strategies_are_refused_at_setup(strategy: type) -> None:
    instance = strategy()
    with pytest.raises(ValueError, match=f"strategy={strategy.__name__}.*shards the parameters"):
        check_strategy(instance)
    monitor = AttributionMonitor(num_probes=4)
    trainer = SimpleNamespace(strategy=instance, loggers=[])
    with pytest.raises(ValueError, match="does not support"):
        monitor.setup(trainer, TinyCNN(), "fit")  # type: ignore[arg-type]


def test_deepspeed_is_refused_by_class_name() -> None:
    fake = type("DeepSpeedStrategy", (), {})  # deepspeed is not installed here; the check is by class name
    subclass = type("MyZeroStrategy", (fake,), {})
    with pytest.raises(ValueError, match="DeepSpeedStrategy shards the parameters"):
        check_strategy(subclass())
