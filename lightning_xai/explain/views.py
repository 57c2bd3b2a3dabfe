"""Layer views, logged like attribution maps but explaining no class: :class:`Activations`, :class:`Filters`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn, check_int
from lightning_xai.explain.gradcam import AtGradCamLayer, GradcamReshape, capture_output


class Activations(AtGradCamLayer, Explainer):
    """Activation maximisation's simplest view: per probe, the mean of the ``channels`` channels of a layer's output
    with the highest spatial mean (Zeiler & Fergus, 2014, https://arxiv.org/abs/1311.2901), upsampled bilinearly.

    Args:
        layer, reshape: the layer, chosen as Grad-CAM chooses it (see :class:`~lightning_xai.explain.GradCam`).
        channels: how many of the strongest channels are averaged.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
        >>> view, x = Activations(channels=1), torch.rand(2, 1, 4, 4)
        >>> view.setup(net, net, x[:1])
        >>> out, fmap = view.explain(net, x, torch.tensor([0, 1])), net[1](net[0](x))
        >>> torch.allclose(out.raw, fmap[torch.arange(2), fmap.mean(dim=(2, 3)).argmax(dim=1)])  # the strongest
        True
    """

    name = "activations"
    passes_per_probe = 1.0
    is_attribution = False

    def __init__(self, layer: str | nn.Module | None = None, reshape: GradcamReshape | None = None, channels: int = 4):
        super().__init__(layer, reshape)
        self.channels = check_int("channels", channels, 1, where="Activations")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "channels": self.channels}

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        module = self.gradcam._module
        if module is None:
            raise RuntimeError("Activations.setup() must run before explain().")
        with torch.no_grad():
            output = capture_output(module, forward, inputs.detach())[1].detach()
        to_grid = self.gradcam._to_grid
        fmap = (output if to_grid is None else to_grid(output)).float()  # (P, K, h, w)
        k = min(self.channels, fmap.shape[1])
        top = fmap.mean(dim=(2, 3)).topk(k, dim=1).indices  # (P, k)
        raw = fmap.gather(1, top[:, :, None, None].expand(-1, -1, *fmap.shape[2:])).mean(dim=1)
        display = F.interpolate(raw[:, None], size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)
        return Explanation(raw=raw, display=display[:, 0].clamp_min(0))


def filter_mosaic(weight: Tensor, gap: int = 1) -> Tensor:
    """``(K, C, kh, kw)`` convolution weights -> one image of the K filters (summed over input channels, each scaled
    to its largest magnitude) on a grid of ``ceil(sqrt(K))`` columns with zero gaps."""
    filters = weight.detach().float().sum(dim=1)  # (K, kh, kw)
    filters = filters / filters.flatten(1).abs().amax(dim=1).clamp_min(1e-12)[:, None, None]
    count, kh, kw = filters.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    mosaic = filters.new_zeros(rows * (kh + gap) - gap, cols * (kw + gap) - gap)
    for i in range(count):
        r, c = divmod(i, cols)
        mosaic[r * (kh + gap) : r * (kh + gap) + kh, c * (kw + gap) : c * (kw + gap) + kw] = filters[i]
    return mosaic


class Filters(Explainer):
    """A convolution's kernels as one mosaic, the same for every probe (Zeiler & Fergus, 2014): its drift says how
    much the filters changed.

    Args:
        layer: the ``Conv2d``'s dotted name; None: the first one.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
        >>> view, x = Filters(), torch.rand(2, 1, 8, 8)
        >>> view.setup(net, net, x[:1])
        >>> view.layer_name, tuple(view.explain(net, x, torch.tensor([0, 1])).raw.shape)
        ('0', (2, 7, 7))
    """

    name = "filters"
    passes_per_probe = 0.0
    is_attribution = False

    def __init__(self, layer: str | None = None) -> None:
        self.layer = layer
        self.layer_name: str | None = None
        self._module: nn.Conv2d | None = None

    def config(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and self.layer in (None, n)]
        if not convs:
            which = f"no Conv2d named {self.layer!r}" if self.layer is not None else "no Conv2d layer"
            raise ValueError(f"`methods` includes 'filters' but {type(model).__name__} has {which}.")
        self.layer_name, self._module = convs[0]

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        if self._module is None:
            raise RuntimeError("Filters.setup() must run before explain().")
        mosaic = filter_mosaic(self._module.weight).to(inputs.device)
        raw = mosaic.expand(len(inputs), *mosaic.shape).clone()
        display = F.interpolate(raw[:, None].abs(), size=tuple(inputs.shape[-2:]), mode="nearest")[:, 0]
        return Explanation(raw=raw, display=display)
