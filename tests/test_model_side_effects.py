"""Models whose forward has side effects train exactly as without the monitor (issue 20): a lazily initialised
layer, a forward that calls ``self.log``, a hook registered in the first forward, data-dependent initialisation, a
buffer reassigned in ``forward``; a model that cannot run before its first training step is refused in words that
name the model."""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from torch import Tensor, nn

from lightning_xai import AttributionMonitor, DriftPolicy, IntegratedGradients
from tests.conftest import TinyCNN, loaders, trainer_kwargs


class LazyHead(TinyCNN):
    """The head is an ``nn.LazyLinear``: its weights are created (from the global RNG) in the first forward."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.LazyLinear(4)


class LogsInForward(TinyCNN):
    """``forward`` logs a statistic whenever a trainer is attached (fine in Lightning's steps; the monitor's passes
    must not reach the loggers), and counts its ``log`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.log_calls = 0

    def log(self, name: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.log_calls += name == "mean_logit"
        super().log(name, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if self._trainer is not None:
            self.log("mean_logit", out.mean(), on_step=False, on_epoch=True)
        return out


class HooksInFirstForward(TinyCNN):
    """Registers a forward hook on its first call (a common lazy-instrumentation pattern) and needs it later."""

    def __init__(self) -> None:
        super().__init__()
        self.hooked = False
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if not self.hooked:
            self.features.register_forward_hook(lambda m, i, o: self.seen.append(o.detach().mean()))
            self.hooked = True
        return super().forward(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.seen.clear()
        loss = super().training_step(batch, batch_idx)
        assert len(self.seen) == 1, "the hook registered in the first forward is gone"
        return loss + 0 * self.seen[0]


class ActNorm(nn.Module):
    """Data-dependent initialisation: the first batch sets the scale and shift (a buffer flag and Python state)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if not bool(self.initialized):
            with torch.no_grad():
                self.shift.copy_(-x.mean(dim=(0, 2, 3), keepdim=True))
                self.scale.copy_(1 / (x.std(dim=(0, 2, 3), keepdim=True) + 1e-6))
                self.initialized = torch.tensor(True)  # reassigned, not filled in place
        return (x + self.shift) * self.scale


class DataInit(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.norm = ActNorm(1)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.norm(x))


class CountsCalls(TinyCNN):
    """A buffer reassigned in every forward (``self.count = self.count + 1``), read by the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        self.count = self.count + 1
        return super().forward(x) * (1 + 0 * self.count)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return super().training_step(batch, batch_idx) + 1e-3 * self.count


class CountsInPython(TinyCNN):
    """A plain Python counter advanced in every forward and read by the loss (an annealing step, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return super().forward(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return super().training_step(batch, batch_idx) * (1 + 1e-3 * self.calls)


def _fit(model: L.LightningModule, tmp_path: Any, callbacks: list[Any]) -> tuple[dict[str, Tensor], Tensor]:
    torch.manual_seed(0)
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, callbacks=callbacks))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train, val)
    return {k: v.clone() for k, v in model.state_dict().items()}, torch.random.get_rng_state()


@pytest.mark.parametrize(
    "model_cls", [LazyHead, LogsInForward, HooksInFirstForward, DataInit, CountsCalls, CountsInPython]
)
def test_training_is_bit_identical_for_models_with_side_effects(tmp_path: Any, model_cls: type) -> None:
    torch.manual_seed(1)
    plain_state, plain_rng = _fit(model_cls(), tmp_path / "a", [])
    torch.manual_seed(1)
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, detector=None),
    )
    watched_model = model_cls()
    watched_state, watched_rng = _fit(watched_model, tmp_path / "b", [monitor])
    assert monitor.evaluations == 2 and not monitor.history[-1].errors, monitor.history[-1].errors
    assert set(monitor.history[-1].scalars) >= {"xai/gradcam/confidence_mean"} or monitor.history[-1].scalars
    assert plain_state.keys() == watched_state.keys()
    for key, value in plain_state.items():
        assert torch.equal(value, watched_state[key]), key
    assert torch.equal(plain_rng, watched_rng)


def test_logging_model_keeps_its_logged_values(tmp_path: Any) -> None:
    """The monitor's forward passes are not logged by the model: the same ``self.log`` calls and logged value."""
    seen = []
    for sub, callbacks in (
        ("a", []),
        (
            "b",
            [
                AttributionMonitor(
                    num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(detector=None)
                )
            ],
        ),
    ):
        torch.manual_seed(1)
        model = LogsInForward()
        torch.manual_seed(0)
        train, val = loaders()
        trainer = L.Trainer(**trainer_kwargs(tmp_path / sub, max_epochs=1, callbacks=callbacks))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, train, val)
        seen.append((model.log_calls, float(trainer.callback_metrics["mean_logit"])))
    assert seen[0] == seen[1]


class NeedsTraining(TinyCNN):
    """Cannot run in eval mode before its first training step (its statistics come from training batches)."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and not self.ready:
            raise RuntimeError("call me in training mode first: my statistics are not initialised")
        self.ready = True
        return super().forward(x)


def test_model_that_cannot_run_before_training_is_named(tmp_path: Any) -> None:
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[AttributionMonitor(num_probes=4)]))
    with pytest.raises(ValueError) as info:
        trainer.fit(NeedsTraining(), train, val)
    message = str(info.value)
    assert "NeedsTraining" in message and "before its first training step" in message
    assert "my statistics are not initialised" in message


def test_the_guard_keeps_hooks_registered_before_it_when_a_forward_adds_a_module() -> None:
    """Hooks are matched by module: a submodule a forward creates must not shift which hooks count as new."""
    from lightning_xai.explain.guard import training_state_guard

    class Grows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.last = nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2)

        def forward(self, x: Tensor) -> Tensor:
            if len(self.first) == 1:
                self.first.append(nn.Identity())  # a module created in a forward, before `last` in modules()
            return self.last(self.first(x))

    net = Grows()
    net.last.register_forward_hook(lambda m, i, o: None)
    with training_state_guard(net):
        net(torch.ones(1, 2))
    assert len(net.last._forward_hooks) == 1
