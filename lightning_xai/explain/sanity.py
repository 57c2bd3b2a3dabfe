"""The model-randomisation sanity check (Adebayo et al., 2018, https://arxiv.org/abs/1810.03292): a map that explains
what the model learned must change when the model's top layers are re-initialised."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, check_float, check_int
from lightning_xai.explain.forward import ModelForwardFn, model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.layers import trace_modules
from lightning_xai.explain.registry import build_explainers
from lightning_xai.explain.run import explain_probes
from lightning_xai.explain.wrapping import seeded_rng
from lightning_xai.functional.drift import average_ranks, spearman_distance
from lightning_xai.probes import TargetSpec

if TYPE_CHECKING:
    from lightning_xai.monitor import AttributionMonitor

#: a method fails when the median rank correlation of its maps before and after randomisation reaches this
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class SanityResult:
    """One method's check: the median over probes (``per_probe``) of the rank correlation of its maps with the trained
    and the randomised model (``layers`` re-initialised; NaN with an ``error`` if it could not run)."""

    method: str
    correlation: float
    passed: bool
    threshold: float
    layers: tuple[str, ...]
    per_probe: tuple[float, ...] = ()
    error: str = ""

    @property
    def message(self) -> str:
        if self.error:
            return f"the sanity check could not run {self.method}: {self.error}"
        advice = (
            ": they barely depend on what the model learned, so do not read its drift as the model's; prefer a method "
            "that passes (Adebayo et al. 2018)."
        )
        return (
            f"{self.method} {'passes' if self.passed else 'FAILS'} the randomisation sanity check: with the top "
            f"layer(s) {list(self.layers)} re-initialised its maps keep a median rank correlation of "
            f"{self.correlation:.2f} with the trained model's (threshold {self.threshold:g})"
            + ("" if self.passed else advice)
        )


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample Spearman correlation of the signed maps ``a``, ``b`` ``(N, ...)``: 0 if one is constant, 1 if both."""
    ranks = [average_ranks(m.detach().reshape(len(m), -1)) for m in (a, b)]  # positive: |ranks| are the ranks
    return 1 - spearman_distance(*ranks)


def top_layers(
    model: nn.Module, example: Tensor, count: int, forward: Callable[[Tensor], Any] | None = None
) -> list[str]:
    """The ``count`` modules that own parameters and run last in a forward pass on ``example`` (the output side)."""
    owners = {n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))}
    ran = [t.name for t in trace_modules(model, forward or model, example) if t.name in owners]
    return ran[-count:] if count > 0 else []


def randomized_copy(model: nn.Module, layers: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` (not its trainer), the named modules re-initialised from streams seeded with ``seed``
    (``reset_parameters()``, else Gaussian weights of the same standard deviation and zero biases)."""
    trainer = getattr(model, "_trainer", None)
    memo: dict[int, Any] = {id(trainer): None} if trainer is not None else {}
    clone = copy.deepcopy(model, memo)
    named = dict(clone.named_modules())
    device = next(clone.parameters(), torch.empty(0)).device
    with seeded_rng(seed, device), torch.no_grad():
        for module in (named[name] for name in layers):
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for pname, p in module.named_parameters(recurse=False):
                p.copy_(
                    torch.zeros_like(p) if "bias" in pname else torch.randn_like(p) * p.float().std().clamp_min(1e-3)
                )
    return clone


def sanity_check(
    model: nn.Module,
    probes: Tensor,
    methods: Sequence[str | Explainer] | str = ("gradcam", "integrated_gradients"),
    *,
    labels: Tensor | None = None,
    target: TargetSpec = "label",
    layers: int = 1,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    forward_fn: ModelForwardFn | None = None,
    warn: bool = True,
) -> list[SanityResult]:
    """The randomisation check of each method (layer views skipped; instances copied) on ``probes`` ``(N, C, H, W)``:
    their maps from ``model`` and from a copy whose top ``layers`` parameterised modules are re-initialised (streams
    seeded with ``seed``), for the same classes. One :class:`SanityResult` per method; ``warn`` warns about failures.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
        >>> [r.method for r in sanity_check(net, torch.rand(4, 1, 6, 6), ["saliency"], target=0, warn=False)]
        ['saliency']
    """
    layers = check_int("layers", layers, 1)
    threshold = check_float("threshold", threshold)
    explainers = [e for e in build_explainers(methods) if getattr(e, "is_attribution", True)]
    images = probes.detach().cpu().float()
    labels = None if labels is None else labels.detach().cpu().long()
    errors: list[str] = []

    def explain(net: nn.Module, targets: Any) -> dict[str, Any]:
        """Set up copies of the explainers against ``net`` (one that cannot is left out) and explain the probes."""
        device, ready = next(net.parameters(), torch.empty(0)).device, []
        with training_state_guard(net, device), model_forward(net, forward_fn) as forward:
            for explainer in copy.deepcopy(explainers):
                try:
                    explainer.setup(net, forward, images[:1].to(device).clone())
                    ready.append(explainer)
                except Exception as err:  # noqa: BLE001 - reported in the method's result
                    errors.append(f"{explainer.name} setup failed: {type(err).__name__}: {err}")
        done = explain_probes(net, images, labels, ready, targets, forward_fn=forward_fn)
        errors.extend(done.errors)
        return {"targets": done.targets.cpu(), **done.results}

    device = next(model.parameters(), torch.empty(0)).device
    with training_state_guard(model, device), model_forward(model, forward_fn) as forward:
        names = tuple(top_layers(model, images[:1].to(device), layers, forward))
    trained = explain(model, target)
    shuffled = explain(randomized_copy(model, names, seed), trained["targets"])
    results = []
    for e in explainers:
        if e.name not in trained or e.name not in shuffled:
            error = "; ".join(m for m in errors if m.startswith(e.name)) or "no map"
            results.append(SanityResult(e.name, float("nan"), False, threshold, names, error=error))
            continue
        per_probe = rank_correlation(trained[e.name].raw, shuffled[e.name].raw)
        median = float(per_probe.median())
        results.append(SanityResult(e.name, median, median < threshold, threshold, names, tuple(per_probe.tolist())))
    for result in [r for r in results if warn and not r.passed]:
        rank_zero_warn(f"AttributionMonitor: {result.message}")
    return results


class SanityCheck(Callback):
    """:func:`sanity_check` of a monitor's probes and methods at fit start and/or end on rank 0: logs ``.../passed``
    and ``xai/sanity/<method>/rank_correlation``, warns about failures, keeps ``results[stage]``. List it after the
    monitor: ``callbacks=[monitor, SanityCheck(monitor)]``.

    Args:
        monitor: the :class:`~lightning_xai.AttributionMonitor` whose probes, methods and target are checked.
        at: ``"fit_start"`` (the untrained network), ``"fit_end"`` (the trained one), or both.
        layers, threshold, seed: as for :func:`sanity_check`.
    """

    def __init__(
        self,
        monitor: AttributionMonitor,
        at: Sequence[str] = ("fit_start", "fit_end"),
        layers: int = 1,
        threshold: float = DEFAULT_THRESHOLD,
        seed: int = 0,
    ) -> None:
        stages = (at,) if isinstance(at, str) else tuple(at)
        if not stages or any(s not in ("fit_start", "fit_end") for s in stages):
            raise ValueError(f"`at` must name 'fit_start' and/or 'fit_end', got {at!r}.")
        self.monitor, self.at, self.layers, self.threshold, self.seed = monitor, stages, layers, threshold, seed
        self.results: dict[str, list[SanityResult]] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # the probes exist now
        if "fit_start" in self.at:
            self._run("fit_start", trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "fit_end" in self.at:
            self._run("fit_end", trainer, pl_module)

    def _run(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        monitor = self.monitor
        # every rank (the monitor's setup agrees across ranks), then rank 0 alone runs the check
        if monitor.probes is None and not monitor.prepare(trainer, pl_module):
            rank_zero_warn(f"AttributionMonitor: no probes at {stage.replace('_', ' ')}, so no sanity check ran.")
            return
        if not trainer.is_global_zero:
            return
        assert monitor.probes is not None
        self.results[stage] = sanity_check(
            pl_module,
            monitor.probes.images,
            monitor.explainers,
            labels=monitor.probes.labels,
            target=monitor.target,
            layers=self.layers,
            threshold=self.threshold,
            seed=self.seed,
            forward_fn=monitor.forward_fn,
            warn=False,
        )
        metrics = {}
        for r in self.results[stage]:
            if not r.passed:
                rank_zero_warn(f"AttributionMonitor ({stage.replace('_', ' ')}): {r.message}")
            if not r.error:
                metrics[f"xai/sanity/{r.method}/rank_correlation"] = r.correlation
                metrics[f"xai/sanity/{r.method}/passed"] = float(r.passed)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
