"""The probes' masks (``Display.probe_masks``): one boolean ``(H, W)`` region per probe, for the localisation scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_xai.probes.collect import ProbeSet


def resolve_masks(spec: Tensor | Callable[[Tensor, Tensor | None], Tensor], probes: ProbeSet) -> Tensor:
    """One boolean ``(H, W)`` mask per probe, from a tensor (or array) or a callable ``(images, labels) -> masks``."""
    masks: Any = spec
    if callable(spec):
        try:
            masks = spec(probes.images.clone(), None if probes.labels is None else probes.labels.clone())
        except Exception as err:
            raise ValueError(
                f"`Display.probe_masks` raised {type(err).__name__}: {err} when called with the probes (images "
                f"{tuple(probes.images.shape)}, labels {'None' if probes.labels is None else 'a (N,) tensor'})."
            ) from err
    try:
        masks = torch.as_tensor(masks).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"`Display.probe_masks` must be a tensor of booleans (N, H, W), got {type(masks).__name__}."
        ) from err
    masks = masks[:, 0] if masks.ndim == 4 and masks.shape[1] == 1 else masks
    expected = (len(probes), *probes.images.shape[-2:])
    if tuple(masks.shape) != expected:
        raise ValueError(
            f"`Display.probe_masks` has shape {tuple(masks.shape)} but the {len(probes)} probes need one (H, W) "
            f"mask each: {expected}. With probes drawn from the validation data, pass a callable "
            "`(images, labels) -> masks`."
        )
    if masks.dtype != torch.bool and bool(((masks != 0) & (masks != 1)).any()):  # a soft mask is not a region
        odd = masks[(masks != 0) & (masks != 1)].flatten()[0].item()
        raise ValueError(
            f"`Display.probe_masks` must be boolean (or 0/1) masks, got a {masks.dtype} value {odd!r}: a mask marks "
            "each pixel in or out; threshold yours, e.g. `probe_masks=masks > 0.5` (a soft mask) or "
            "`probe_masks=masks > 0` (a 0/255 image)."
        )
    return masks.bool()
