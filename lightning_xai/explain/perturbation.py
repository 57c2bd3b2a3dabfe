"""Perturbation attributions with Captum: Occlusion and LIME (forward passes only, on altered copies of the probes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from captum import attr as captum_attr
from captum._utils.models.model import Model
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_xai.explain.base import ForwardFn
from lightning_xai.explain.wrapping import CaptumMethod, expand_baseline
from lightning_xai.functional._common import compute_dtype

#: samples per forward pass of the perturbation methods when nothing else is said
DEFAULT_BATCH = 256
#: the automatic occlusion window is this many times smaller than the image's shorter side
OCCLUSION_CELLS = 8

Segmenter = Callable[[Tensor], Tensor]


@dataclass(eq=False)
class Occlusion(CaptumMethod):
    """Occlusion: how much the target logit drops when a square window is set to the baseline (Zeiler & Fergus,
    2014, https://arxiv.org/abs/1311.2901); one forward pass per window position.

    Args:
        window: side of the square window in pixels; None: the probes' shorter side / :data:`OCCLUSION_CELLS`.
        stride: step between windows; None: the window.
        baseline: what a window is set to: a float, a tensor broadcastable to one probe, or None: the input that
            displays as black, resolved by the monitor's registry from ``denormalize=``, else zeros.
        batch_size: at most this many occluded copies per forward pass.

    Example::

        >>> reads_one_pixel = lambda x: torch.stack([x[:, 0, 2, 1], -x[:, 0, 2, 1]], dim=1)
        >>> occ, x = Occlusion(window=2), torch.ones(1, 1, 4, 4)
        >>> occ.setup(nn.Identity(), reads_one_pixel, x)
        >>> occ.explain(reads_one_pixel, x, torch.tensor([0])).raw[0].nonzero().tolist()  # the window with (2, 1)
        [[2, 0], [2, 1], [3, 0], [3, 1]]
    """

    window: int | None = None
    stride: int | None = None
    baseline: float | Tensor | None = None
    batch_size: int = DEFAULT_BATCH
    name = "occlusion"
    passes_per_probe = float(OCCLUSION_CELLS**2 + 1)
    captum_cls = captum_attr.Occlusion
    reduce = "mean"  # the window spans all channels
    forward_only = True
    display_normalization = "max"
    minimums = {"window": 1, "stride": 1, "batch_size": 1}

    def _geometry(self, height: int, width: int) -> tuple[int, int]:
        window = self.window or max(1, min(height, width) // OCCLUSION_CELLS)
        if window > min(height, width):
            raise ValueError(f"`window={window}` is larger than the probes ({height}x{width}); pass a smaller window.")
        return window, self.stride or window

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        height, width = int(example.shape[-2]), int(example.shape[-1])
        window, stride = self._geometry(height, width)
        self.passes_per_probe = float(((height - window) // stride + 1) * ((width - window) // stride + 1) + 1)
        super().setup(model, forward, example)

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        c, (window, stride) = int(inputs.shape[1]), self._geometry(int(inputs.shape[-2]), int(inputs.shape[-1]))
        per_eval = max(1, self.batch_size // len(inputs))
        baselines = expand_baseline(self.baseline, inputs)
        return method.attribute(
            inputs, (c, window, window), (c, stride, stride), baselines, targets, perturbations_per_eval=per_eval
        )


def grid_segments(images: Tensor, cells: int) -> Tensor:
    """``(P, H, W)`` superpixel labels: a ``cells × cells`` grid of near-equal rectangles, numbered row by row."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    rows = torch.arange(height, device=images.device) * min(cells, height) // height
    cols = torch.arange(width, device=images.device) * min(cells, width) // width
    return (rows[:, None] * min(cells, width) + cols[None, :]).expand(len(images), height, width).clone()


class WeightedLeastSquares(Model):
    """LIME's interpretable model: weighted least squares with an intercept and a tiny ridge (closed form), in place
    of Captum's ``SkLearnLasso`` whose L1 penalty shrinks every coefficient."""

    def __init__(self, ridge: float = 1e-6) -> None:
        self.ridge, self.coef, self.intercept = ridge, torch.zeros(0), torch.zeros(())

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


@dataclass(eq=False)
class Lime(CaptumMethod):
    """LIME: the weights of a linear model fitted around each probe to copies whose superpixels are randomly kept or
    set to the baseline (Ribeiro et al., 2016, https://arxiv.org/abs/1602.04938).

    Args:
        cells: superpixels as a ``cells × cells`` grid (:func:`grid_segments`); ignored with ``segments``.
        segments: deterministic ``segments(images) -> (P, H, W)`` integer superpixel labels (e.g. SLIC).
        samples: perturbed copies per probe (forward passes; keep it above the ``cells² + 1`` unknowns).
        baseline: what a superpixel is set to: a float, a tensor broadcastable to one probe, or None: the input that
            displays as black, resolved by the monitor's registry from ``denormalize=``, else zeros.
        seed: seed of the draws.
        batch_size: at most this many copies per forward pass.

    Example::

        >>> reads_one_pixel = lambda x: torch.stack([3 * x[:, 0, 0, 3], 0 * x[:, 0, 0, 0]], dim=1)
        >>> out = Lime(cells=2, samples=32).explain(reads_one_pixel, torch.ones(1, 1, 4, 4), torch.tensor([0]))
        >>> m = out.raw[0].round(decimals=3)  # weight 3 on the superpixel holding pixel (0, 3), 0 elsewhere
        >>> m.nonzero().tolist(), m[:2, 2:].unique().tolist()
        ([[0, 2], [0, 3], [1, 2], [1, 3]], [3.0])
    """

    cells: int = 8
    segments: Segmenter | None = None
    samples: int = 128
    baseline: float | Tensor | None = None
    seed: int = 0
    batch_size: int = DEFAULT_BATCH
    name = "lime"
    reduce = "mean"
    forward_only = True
    display_normalization = "max"
    minimums = {"cells": 1, "samples": 1, "seed": 0, "batch_size": 1}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segments is not None and not callable(self.segments):
            raise ValueError(f"`segments` must be a callable images -> (P, H, W) labels, got {self.segments!r}.")

    def _labels(self, inputs: Tensor) -> Tensor:
        if self.segments is None:
            return grid_segments(inputs, self.cells)
        labels, expected = self.segments(inputs.detach()), (len(inputs), *inputs.shape[-2:])
        if not isinstance(labels, Tensor) or tuple(labels.shape) != expected:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"`segments` must return (P, H, W) = {expected} labels, got {got}.")
        # consecutive labels 0..K-1 per probe, as Captum expects
        return torch.stack([torch.unique(row, return_inverse=True)[1] for row in labels.long()]).to(inputs.device)

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        super().setup(model, forward, example)
        self._labels(example)

    def build(self, forward: ForwardFn) -> Any:
        return captum_attr.Lime(forward, interpretable_model=WeightedLeastSquares())

    def probes_per_call(self, num_probes: int) -> int:
        return 1

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        mask = self._labels(inputs)[:, None].expand(-1, inputs.shape[1], -1, -1)
        kwargs = {"n_samples": self.samples, "perturbations_per_eval": min(self.samples, self.batch_size)}
        return method.attribute(inputs, expand_baseline(self.baseline, inputs), targets, feature_mask=mask, **kwargs)
