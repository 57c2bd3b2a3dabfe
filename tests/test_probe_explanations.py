"""explain_probes: one shared prediction pass, keywords only to the methods that list them, failures skipped."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TinyCNN
from torch import Tensor, nn

from lightning_xai.explain import EXPLAIN_KEYWORDS, Explainer, Explanation, GradCam, IntegratedGradients
from lightning_xai.explain.forward import model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.run import explain_probes


class Recorder(Explainer):
    """Records the keywords it receives; lists ``keywords`` as the ones it accepts."""

    name = "recorder"

    def __init__(self, keywords: frozenset[str]) -> None:
        self.explain_keywords = keywords
        self.received: dict[str, Any] = {}

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor, **kwargs: Any) -> Explanation:
        self.received = kwargs
        maps = inputs.abs().sum(dim=1)
        return Explanation(raw=maps, display=maps)


class Plain(Explainer):
    """An explainer written against the three-argument interface only."""

    name = "plain"

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        maps = inputs.sum(dim=1)
        return Explanation(raw=maps, display=maps.abs())


def _counting(model: nn.Module) -> list[int]:
    """The batch size of every forward of ``model``."""
    calls: list[int] = []
    model.register_forward_pre_hook(lambda module, args: calls.append(int(args[0].shape[0])))
    return calls


def test_keywords_go_only_to_methods_that_list_them() -> None:
    images, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    every, plain = Recorder(EXPLAIN_KEYWORDS), Plain()
    done = explain_probes(TinyCNN(), images, labels, [every, plain], max_seconds=60.0)
    assert set(every.received) == {"outputs", "max_seconds"} and done.errors == []
    assert every.received["outputs"].shape == (4, 4) and 0 < every.received["max_seconds"] <= 60.0
    assert sorted(done.results) == ["plain", "recorder"]
    only_outputs = Recorder(frozenset({"outputs"}))
    explain_probes(TinyCNN(), images, labels, [only_outputs], max_seconds=60.0)
    assert set(only_outputs.received) == {"outputs"}
    no_budget = Recorder(EXPLAIN_KEYWORDS)
    explain_probes(TinyCNN(), images, labels, [no_budget])
    assert set(no_budget.received) == {"outputs"}


def test_ig_reuses_the_shared_prediction_pass() -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    images, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    calls = _counting(model)
    ig = IntegratedGradients(4, internal_batch_size=16)
    done = explain_probes(model, images, labels, [ig])
    probe_batches = [n for n in calls if n == 4]
    assert len(probe_batches) == 1, f"one forward on the probe batch (the shared pass), got {calls}"
    alone = IntegratedGradients(4, internal_batch_size=16)
    with training_state_guard(model), model_forward(model) as forward:
        direct = alone.explain(forward, images.clone(), labels)  # computes F(x) itself
    torch.testing.assert_close(done.results["integrated_gradients"].raw, direct.raw)
    torch.testing.assert_close(
        done.results["integrated_gradients"].diagnostics["completeness_gap"], direct.diagnostics["completeness_gap"]
    )


def test_failures_and_non_finite_maps_are_skipped_with_a_message() -> None:
    class Broken(Plain):
        name = "broken"

        def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
            raise RuntimeError("boom")

    class NaNs(Plain):
        name = "nans"

        def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
            maps = torch.full(inputs.shape[:1] + inputs.shape[2:], float("nan"))
            return Explanation(raw=maps, display=maps)

    images, model, gradcam = torch.rand(4, 1, 16, 16), TinyCNN(), GradCam()
    with training_state_guard(model), model_forward(model) as forward:
        gradcam.setup(model, forward, images[:1].clone())
    with pytest.warns(UserWarning, match="boom"):
        done = explain_probes(model, images, None, [Broken(), NaNs(), gradcam], target="predicted", epoch=7)
    assert sorted(done.results) == ["gradcam"]
    assert any("broken skipped at epoch 7: RuntimeError: boom" in e for e in done.errors)
    assert any("nans skipped at epoch 7" in e and "NaN" in e for e in done.errors)
    assert torch.equal(done.targets, done.predicted)
