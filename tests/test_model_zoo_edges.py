"""The monitor at its defaults on models it was not tuned on: randomness in eval mode, a ViT with two prefix tokens."""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN, loaders, trainer_kwargs
from torch import Tensor

from lightning_xai import AttributionMonitor


class NoisyEvalCNN(TinyCNN):
    """Randomness in the eval-mode forward too (MC dropout, noise injection): a model that draws from the RNG."""

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x + 0.05 * torch.randn_like(x))
        return self.head(F.dropout(self.pool(features).flatten(1), 0.3, training=True))


def test_a_model_drawing_random_numbers_in_eval_gets_the_same_maps_from_the_same_weights(tmp_path: Any) -> None:
    """docs/methods.md: "the same model gives the same map every evaluation". A forward that draws from the global
    RNG got a different stream at every evaluation (the guard forks the streams but left them where training had
    moved them), so the same weights gave different maps and a drift that is noise alone. (IG's first evaluation
    searches its steps on a quarter of the probes, so its maps are compared from the second on.)"""
    _, val = loaders()
    model, monitor = NoisyEvalCNN(), AttributionMonitor(num_probes=4)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor]))
    maps = []
    for _ in range(3):
        trainer.validate(model, val, verbose=False)
        torch.rand(7)  # the run's streams move between evaluations, as training moves them
        maps.append({name: m.clone() for name, m in monitor.drift_tracker.previous.items()})
    assert set(maps[0]) == {"gradcam", "integrated_gradients"}
    assert torch.equal(maps[0]["gradcam"], maps[1]["gradcam"])
    for name in maps[0]:
        assert torch.equal(maps[1][name], maps[2][name]), name
        assert monitor.history[-1].scalars[f"xai/{name}/drift/rank_vs_previous/median"] == 0.0


def test_a_method_drawing_between_forward_calls_still_gets_fresh_numbers() -> None:
    """The seeded forward runs on forked streams: a sampling method's own draws between two passes go on."""
    from lightning_xai import FunctionExplainer
    from lightning_xai.explain.run import explain_probes

    draws: list[Tensor] = []

    def sampling(forward: Any, inputs: Tensor, targets: Tensor) -> Tensor:
        for _ in range(2):
            draws.append(torch.rand(3))
            forward(inputs)
        return inputs.sum(dim=1)

    model = TinyCNN()
    done = explain_probes(model, torch.rand(2, 1, 12, 12), torch.tensor([0, 1]), [FunctionExplainer(sampling)])
    assert not done.errors and not torch.equal(draws[0], draws[1])


class TwoTokenViT(torch.nn.Module):
    """timm-style layout (``cls_token``, ``blocks[-1].norm1``) with a class and a distillation token (DeiT) and no
    ``num_prefix_tokens`` attribute: T - 2 tokens form the grid."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = torch.nn.Conv2d(1, 8, 3, 3)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 8))
        self.dist_token = torch.nn.Parameter(torch.zeros(1, 1, 8))
        block = torch.nn.Module()
        block.norm1 = torch.nn.LayerNorm(8)
        self.blocks = torch.nn.ModuleList([block])
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        prefix = torch.cat([self.cls_token, self.dist_token], 1).expand(len(t), -1, -1)
        t = self.blocks[0].norm1(torch.cat([prefix, t], 1))
        return self.head(t[:, 0] + t[:, 2:].mean(1))


def test_an_automatic_layer_that_cannot_be_reshaped_is_not_reported_as_the_users_choice(tmp_path: Any) -> None:
    """At the defaults the error said "`GradCam.layer='blocks.0.norm1'` returns tokens ...", as if the user had named
    that layer; it is the automatic choice, and the error says so and how to pick another."""
    import pytest

    class Module(TinyCNN):
        def __init__(self) -> None:
            super().__init__()
            self.net = TwoTokenViT()

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x)

    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[AttributionMonitor(num_probes=4)], max_epochs=1))
    with pytest.raises(ValueError, match="tokens") as err:
        trainer.fit(Module(), train, val)
    message = str(err.value)
    assert "GradCam.layer='net.blocks.0.norm1'" not in message
    assert "automatic" in message and "GradCam(layer=" in message


class _BatchStatistics(TinyCNN):
    """BatchNorm without running statistics: in eval mode too it normalises over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.features[1] = torch.nn.BatchNorm2d(6, track_running_stats=False)


@pytest.mark.parametrize("model", [TinyCNN, _BatchStatistics])
def test_a_model_whose_output_depends_on_the_batch_is_said_before_training(tmp_path: Any, model: Any) -> None:
    """BatchNorm with ``track_running_stats=False`` makes a probe's output depend on the other probes of its batch in
    eval mode: each map mixes in the others and IG's passes mix points of different probes (zoo trial: IG's
    completeness gap 2.8), and nothing said so. The setup check now says it once; a model with running statistics
    (the usual BatchNorm) is not said to."""
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model(), *loaders())
    said = [str(w.message) for w in caught if "depends on the other images of its batch" in str(w.message)]
    assert len(said) == (1 if model is _BatchStatistics else 0), said
