"""Perturbation attributions with Captum: Occlusion and LIME. They need no gradients, only forward passes on
altered copies of the probes (many of them: see ``passes_per_probe``), batched up to ``batch_size`` samples per
pass on the model's device. LIME's random draws come from a stream seeded with ``seed``
(:func:`~lightning_xai.explain.wrapping.seeded_rng`): the same map every evaluation, the training RNG untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum import attr as captum_attr
from captum._utils.models.model import Model
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn
from lightning_xai.explain.wrapping import expand_baseline, primitive, quiet_captum, seeded_rng, to_display
from lightning_xai.functional._common import compute_dtype

#: samples per forward pass of the perturbation methods when nothing else is said
DEFAULT_BATCH = 256
#: the automatic occlusion window is this many times smaller than the image's shorter side
OCCLUSION_CELLS = 8

Segmenter = Callable[[Tensor], Tensor]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
    return value


def _check_optional_int(name: str, value: Any, low: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low} or None, got {value!r}.")
    return value


def occlusion_window(height: int, width: int) -> int:
    """The automatic occlusion window: the image's shorter side / :data:`OCCLUSION_CELLS`, at least 1 pixel.

    Example::

        >>> occlusion_window(32, 32), occlusion_window(64, 48), occlusion_window(5, 5)
        (4, 6, 1)
    """
    return max(1, min(height, width) // OCCLUSION_CELLS)


class Occlusion(Explainer):
    """Occlusion: how much the target logit drops when a square window of the probe is set to the baseline,
    ``y_t(x) - y_t(x with the window occluded)``, averaged over the windows covering each pixel (Zeiler & Fergus,
    2014, https://arxiv.org/abs/1311.2901), with Captum's ``Occlusion``. The window spans all channels, so the map
    is the mean over channels (signed: negative where hiding a window raises the target).

    Args:
        window: side of the square window in pixels; None (default): the probes' shorter side / 8
            (:func:`occlusion_window`: 4 at 32×32, 8 at 64×64, 28 at 224×224).
        stride: step between windows; None: the window (non-overlapping windows: one value per window).
        baseline: what an occluded window is set to: None (zeros), a float, or a tensor broadcastable to one
            probe. By name in ``methods=`` it is the monitor's ``ig_baseline`` (black with ``denormalize=``).
        batch_size: at most this many occluded copies per forward pass.

    Cost: one forward pass per window position, ``((H - window) // stride + 1) × ((W - window) // stride + 1)``
    per probe (64 at the defaults), plus one; no backward pass.

    Example::

        >>> reads_one_pixel = lambda x: torch.stack([x[:, 0, 2, 1], -x[:, 0, 2, 1]], dim=1)
        >>> occ, x = Occlusion(window=2), torch.ones(1, 1, 4, 4)
        >>> occ.setup(nn.Identity(), reads_one_pixel, x)
        >>> occ.explain(reads_one_pixel, x, torch.tensor([0])).raw[0]  # the window holding pixel (2, 1)
        tensor([[0., 0., 0., 0.],
                [0., 0., 0., 0.],
                [1., 1., 0., 0.],
                [1., 1., 0., 0.]])
    """

    name = "occlusion"
    passes_per_probe = float(OCCLUSION_CELLS**2 + 1)

    def __init__(
        self,
        window: int | None = None,
        stride: int | None = None,
        baseline: float | Tensor | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.window = _check_optional_int("window", window, 1)
        self.stride = _check_optional_int("stride", stride, 1)
        self.baseline = baseline
        self.batch_size = _check_int("batch_size", batch_size, 1)

    def config(self) -> dict[str, Any]:
        return {"window": self.window, "stride": self.stride, "baseline": primitive(self.baseline)}

    def _geometry(self, height: int, width: int) -> tuple[int, int]:
        window = self.window if self.window is not None else occlusion_window(height, width)
        if window > min(height, width):
            raise ValueError(f"`window={window}` is larger than the probes ({height}x{width}); pass a smaller window.")
        return window, self.stride if self.stride is not None else window

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        height, width = int(example.shape[-2]), int(example.shape[-1])
        window, stride = self._geometry(height, width)
        self.passes_per_probe = float(((height - window) // stride + 1) * ((width - window) // stride + 1) + 1)
        expand_baseline(self.baseline, example)

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        channels, height, width = (int(s) for s in inputs.shape[1:])
        window, stride = self._geometry(height, width)
        with torch.no_grad(), quiet_captum():
            attribution = captum_attr.Occlusion(forward).attribute(
                inputs.detach(),
                sliding_window_shapes=(channels, window, window),
                strides=(channels, stride, stride),
                baselines=expand_baseline(self.baseline, inputs),
                target=targets,
                perturbations_per_eval=max(1, self.batch_size // len(inputs)),
            )
        raw = attribution.detach().float().mean(dim=1)
        return Explanation(raw=raw, display=to_display(raw, (height, width)))


def grid_segments(images: Tensor, cells: int) -> Tensor:
    """``(P, H, W)`` superpixel labels: a ``cells × cells`` grid of near-equal rectangles, numbered row by row.

    Example::

        >>> grid_segments(torch.zeros(1, 3, 4, 6), cells=2)[0]
        tensor([[0, 0, 0, 1, 1, 1],
                [0, 0, 0, 1, 1, 1],
                [2, 2, 2, 3, 3, 3],
                [2, 2, 2, 3, 3, 3]])
    """
    height, width = int(images.shape[-2]), int(images.shape[-1])
    rows = torch.arange(height, device=images.device) * min(cells, height) // height
    cols = torch.arange(width, device=images.device) * min(cells, width) // width
    labels = rows[:, None] * min(cells, width) + cols[None, :]
    return labels.expand(len(images), height, width).clone()


class WeightedLeastSquares(Model):
    """LIME's interpretable model: a weighted linear least-squares fit with an intercept and a tiny ridge
    (closed form, deterministic, no scikit-learn), in place of Captum's default ``SkLearnLasso`` whose L1 penalty
    shrinks every coefficient. Follows Captum's ``Model`` interface."""

    def __init__(self, ridge: float = 1e-6) -> None:
        self.ridge = ridge
        self.coef = torch.zeros(0)
        self.intercept = torch.zeros(())

    def fit(self, train_data: DataLoader, **kwargs: object) -> dict[str, float]:
        xs, ys, ws = zip(*((b[0], b[1], b[2]) for b in train_data), strict=True)
        x, y, w = torch.cat(xs), torch.cat(ys).flatten(), torch.cat(ws).flatten()
        dtype = compute_dtype(x.device)
        design = torch.cat([x.to(dtype), torch.ones(len(x), 1, dtype=dtype, device=x.device)], dim=1)
        weighted = design * w.to(dtype)[:, None]
        gram = design.T @ weighted
        penalty = self.ridge * max(float(gram.diagonal().mean()), 1e-12)
        gram = gram + penalty * torch.diag(torch.cat([torch.ones(x.shape[1]), torch.zeros(1)]).to(gram))
        beta = torch.linalg.solve(gram, weighted.T @ y.to(dtype))
        self.coef, self.intercept = beta[:-1].float(), beta[-1].float()
        return {}

    def representation(self) -> Tensor:
        return self.coef[None]

    def __call__(self, x: Any) -> Tensor:
        return x.float() @ self.coef + self.intercept


class Lime(Explainer):
    """LIME: the weights of a linear model fitted, around each probe, to the target logit of copies whose
    superpixels are randomly kept or set to the baseline, weighted by their similarity to the probe (Ribeiro et
    al., 2016, https://arxiv.org/abs/1602.04938), with Captum's ``Lime``. Each pixel gets its superpixel's weight.

    Costly and model-agnostic: ``samples`` forward passes per probe (no backward); opt-in, never a default. With a
    fixed ``seed`` the same superpixels are switched off every evaluation, so maps differ only when the model does.

    Args:
        cells: superpixels as a ``cells × cells`` grid (:func:`grid_segments`); ignored with ``segments``.
        segments: ``segments(images) -> (P, H, W)`` integer superpixel labels (e.g. SLIC from scikit-image); it is
            called on the probes every evaluation, so it must be deterministic.
        samples: perturbed copies per probe (the linear fit has ``cells² + 1`` unknowns: keep it above that).
        baseline: what a switched-off superpixel is set to: None (zeros), a float, or a tensor broadcastable to
            one probe. By name in ``methods=`` it is the monitor's ``ig_baseline``.
        seed: seed of the draws.
        batch_size: at most this many copies per forward pass.

    Example::

        >>> reads_one_pixel = lambda x: torch.stack([3 * x[:, 0, 0, 3], 0 * x[:, 0, 0, 0]], dim=1)
        >>> out = Lime(cells=2, samples=32).explain(reads_one_pixel, torch.ones(1, 1, 4, 4), torch.tensor([0]))
        >>> out.raw[0].round(decimals=3) + 0.0  # weight 3 on the superpixel holding pixel (0, 3)
        tensor([[0., 0., 3., 3.],
                [0., 0., 3., 3.],
                [0., 0., 0., 0.],
                [0., 0., 0., 0.]])
    """

    name = "lime"
    display_normalization = "max"

    def __init__(
        self,
        cells: int = 8,
        segments: Segmenter | None = None,
        samples: int = 128,
        baseline: float | Tensor | None = None,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.cells = _check_int("cells", cells, 1)
        if segments is not None and not callable(segments):
            raise ValueError(f"`segments` must be a callable images -> (P, H, W) labels, got {segments!r}.")
        self.segments = segments
        self.samples = _check_int("samples", samples, 1)
        self.baseline = baseline
        self.seed = _check_int("seed", seed, 0)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.passes_per_probe = float(samples)

    def config(self) -> dict[str, Any]:
        segments = None if self.segments is None else primitive(self.segments)
        return {
            "cells": self.cells,
            "segments": segments,
            "samples": self.samples,
            "baseline": primitive(self.baseline),
        }

    def _labels(self, inputs: Tensor) -> Tensor:
        if self.segments is None:
            return grid_segments(inputs, self.cells)
        labels = self.segments(inputs.detach())
        if not isinstance(labels, Tensor) or tuple(labels.shape) != (len(inputs), *inputs.shape[-2:]):
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(
                f"`segments` must return (P, H, W) = {(len(inputs), *inputs.shape[-2:])} labels, got {got}."
            )
        # consecutive labels 0..K-1 per probe, as Captum expects
        return torch.stack([torch.unique(row, return_inverse=True)[1] for row in labels.long()]).to(inputs.device)

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        expand_baseline(self.baseline, example)
        self._labels(example)

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        labels = self._labels(inputs)[:, None].expand(-1, inputs.shape[1], -1, -1)
        baselines = expand_baseline(self.baseline, inputs)
        lime = captum_attr.Lime(forward, interpretable_model=WeightedLeastSquares())
        parts = []
        with torch.no_grad(), seeded_rng(self.seed, inputs.device), quiet_captum():
            for i in range(len(inputs)):
                parts.append(
                    lime.attribute(
                        inputs[i : i + 1].detach(),
                        baselines=baselines[i : i + 1],
                        target=targets[i : i + 1],
                        feature_mask=labels[i : i + 1],
                        n_samples=self.samples,
                        perturbations_per_eval=min(self.samples, self.batch_size),
                    )
                )
        raw = torch.cat(parts).detach().float().mean(dim=1)
        return Explanation(raw=raw, display=to_display(raw, tuple(inputs.shape[-2:])))
