"""The input side of the pictures: probes as the model sees them become displayable images (``denormalize``), the
checks of that argument, and the model input that displays as black."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import torch
from torch import Tensor

Denormalize: TypeAlias = tuple[Sequence[float] | float, Sequence[float] | float] | Callable[[Tensor], Tensor] | None


def _to_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() and x.dtype in (torch.float32, torch.float64) else x.float()


def check_denormalize(denormalize: Denormalize) -> Denormalize:
    """``denormalize`` as None, a callable or two 1-D float32 tensors ``(mean, std)``; else a ValueError naming it. The
    ``Normalize`` transform itself (torchvision's, albumentations') stands for its ``(mean, std)``: called, it would
    normalise the probes a second time."""
    if _is_normalize(denormalize):
        denormalize = (denormalize.mean, denormalize.std)  # type: ignore[union-attr]
    if denormalize is None or callable(denormalize):
        return denormalize
    fix = "pass (mean, std) (one value per channel or one for all), a callable mapping inputs to [0, 1] images or None."
    if not isinstance(denormalize, (tuple, list)) or len(denormalize) != 2:
        raise ValueError(f"`denormalize={denormalize!r}` is not supported; {fix}")
    parts = []
    for label, part in zip(("mean", "std"), denormalize, strict=True):
        try:
            if isinstance(part, (str, bytes)):
                raise TypeError("a string")
            t = part.detach() if isinstance(part, Tensor) else torch.as_tensor(part)
            if t.is_complex() or t.dtype == torch.bool or t.device.type == "meta":
                raise TypeError(str(t.dtype))
            t = t.to("cpu", torch.float32).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"`denormalize` {label} {part!r} is not numbers ({err}); {fix}") from None
        if t.numel() == 0 or not bool(torch.isfinite(t).all()):
            raise ValueError(f"`denormalize` {label} must be finite numbers, got {part!r}; {fix}")
        parts.append(t)
    mean, std = parts
    if bool((std <= 0).any()):
        raise ValueError(
            f"`denormalize` std must be positive (a standard deviation; the inputs are divided by it), got "
            f"{std.tolist()}; pass the std your transform divides by, e.g. (0.229, 0.224, 0.225)."
        )
    if mean.numel() != std.numel() and 1 not in (mean.numel(), std.numel()):
        raise ValueError(
            f"`denormalize` has {mean.numel()} means but {std.numel()} stds; give one of each per channel (or one "
            "for all)."
        )
    return (mean, std)  # type: ignore[return-value]  # tensors are sequences of floats here


def _is_normalize(denormalize: object) -> bool:
    """A normalising transform (a class named ``Normalize`` holding its ``mean`` and ``std``), not its inverse."""
    named = any(cls.__name__ == "Normalize" for cls in type(denormalize).__mro__)
    return named and hasattr(denormalize, "mean") and hasattr(denormalize, "std")


def looks_channels_last(shape: Sequence[int]) -> str:
    """Whether ``(N, C, H, W)`` probes of ``shape`` may be channels-last ``(N, H, W, C)``: 'image' when their ``C, H``
    read as an image's height and width too (both over 4, within 2x: (N, 28, 28, 1)), 'maybe' when not (a signal
    (N, 6, 128, 1), a small (N, 4, 4, 4): other data look so too), else ''."""
    if len(shape) != 4 or int(shape[1]) in (1, 3) or int(shape[-1]) not in (1, 3, 4):
        return ""
    short, long = sorted((int(shape[1]), int(shape[2])))
    return "image" if short > 4 and long <= 2 * short else "maybe"


def check_display_channels(
    denormalize: Denormalize, shape: Sequence[int], render: bool = True, drawn: bool = False
) -> None:
    """A ValueError naming ``denormalize`` when ``(mean, std)`` does not fit the channels of probes of ``shape``
    ``(N, C, H, W)`` or, with ``render``, no image of them can be shown; channels-last probes, with ``render`` or
    ``drawn`` (from the user's data, whose layout every method reads as (N, C, H, W) too) when they read as an image
    channels-last (:func:`looks_channels_last`), said as such."""
    channels = int(shape[1])
    seen = looks_channels_last(shape)  # drawn, not rendered, (N, 6, 128, 1) is a signal as often: said at setup
    if seen and (render or (drawn and seen == "image")) and not callable(denormalize):
        raise ValueError(
            f"The probes {tuple(shape)} look channels-last (N, H, W, C), but the monitor reads images as (N, C, H, W) "
            f"(these would have {channels} channels). Make the batches (N, C, H, W) where they are made "
            "(`x.permute(0, 3, 1, 2)` in the collate_fn or `on_after_batch_transfer`); if your model takes "
            "channels-last input, give it that from (N, C, H, W) probes with "
            "`forward_fn=lambda model, x: model(x.permute(0, 2, 3, 1))` (a module-level function for ddp_spawn)."
        )
    if isinstance(denormalize, (tuple, list)):
        for label, part in zip(("means", "stds"), denormalize, strict=True):
            count = torch.as_tensor(part).numel()
            if count not in (1, channels):
                raise ValueError(
                    f"`denormalize` has {count} {label} but the probes have {channels} channel"
                    f"{'s' if channels != 1 else ''}; give one per channel (or one for all), e.g. the mean and std "
                    "of the `Normalize` in your validation transform."
                )
    if render and not callable(denormalize) and channels not in (1, 3):  # (mean, std) keeps the channels
        example = "lambda x: x[:, :3]" if denormalize is None else "lambda x: (x * std + mean)[:, :3]"
        raise ValueError(
            f"The probes have {channels} channels and images are shown with 1 (grey) or 3 (RGB): pass "
            f"`denormalize=` a callable that maps the probes to 1 or 3 channels in [0, 1], e.g. `denormalize={example}`"
            + ("" if denormalize is None else " (with your (C, 1, 1) mean and std tensors) instead of (mean, std)")
            + "."
        )


def black_input(denormalize: Denormalize) -> Tensor | None:
    """The model input that displays as black, ``-mean / std`` shaped ``(C, 1, 1)``, for ``denormalize=(mean, std)``."""
    if not isinstance(denormalize, (tuple, list)) or len(denormalize) != 2:
        return None
    mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1) for v in denormalize)
    return -mean / std


def to_display_images(images: Tensor, denormalize: Denormalize = None) -> Tensor:
    """``(N, C, H, W)`` probes, as the model sees them, as ``(N, 3, H, W)`` RGB in ``[0, 1]`` on their device.

    ``denormalize=(mean, std)`` computes ``x * std + mean`` per channel, a callable is applied, None leaves the values;
    grey becomes RGB. With None and any value outside ``[0, 1]`` in the batch, each image is min-max scaled (a
    constant one is 0.5 grey), else values are clamped; non-finite values are 0."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    x, c = _to_float(images), images.shape[1]
    if isinstance(denormalize, (tuple, list)):
        mean, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1) for v in denormalize)
        for label, t in (("mean", mean), ("std", std)):
            if t.numel() not in (1, c):
                raise ValueError(f"denormalize {label} has {t.numel()} values but the images have {c} channels.")
        x = x * std + mean
    elif callable(denormalize):
        out = denormalize(x)
        if not isinstance(out, Tensor) or out.dim() != 4:
            raise ValueError("denormalize callable must return an (N, C, H, W) tensor.")
        x = _to_float(out)
    elif denormalize is not None:
        raise TypeError(f"denormalize must be (mean, std), a callable or None, got {type(denormalize).__name__}.")
    c = x.shape[1]
    if c not in (1, 3):
        raise ValueError(
            f"Cannot display images with {c} channels: expected 1 (grayscale) or 3 (RGB). "
            "Pass a denormalize callable that maps them to 1 or 3 channels."
        )
    x = torch.nan_to_num(x.expand(-1, 3, -1, -1), nan=0.0, posinf=0.0, neginf=0.0)  # grey as RGB
    if denormalize is not None or x.numel() == 0:
        return x.clamp(0.0, 1.0)
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.amin(dim=1)[:, None, None, None], flat.amax(dim=1)[:, None, None, None]
    out_of_range = (flat.amin() < 0.0) | (flat.amax() > 1.0)  # stays a device tensor: no host sync
    const = hi - lo <= 1e-12
    scaled = torch.where(const, 0.5, (x - lo) / torch.where(const, 1.0, hi - lo))
    return torch.where(out_of_range, scaled, x.clamp(0.0, 1.0))


def has_colour(images: Tensor, denormalize: Denormalize = None) -> bool:
    """Whether ``(N, C, H, W)`` probes show any colour once displayed: False when every channel is an affine copy of
    the first (within 1/255 of its range), as grey digits copied into three channels, or normalised per channel
    (with or without ``denormalize``), are; their ``colour_share`` says nothing about colour."""
    if images.dim() != 4 or images.shape[1] == 1:
        return False
    try:
        x = to_display_images(images, denormalize)
    except Exception:  # noqa: BLE001 - channels that do not display (e.g. 4 without a callable): their raw values
        x = _to_float(images)
    flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    base = flat[0]
    scale = float(base.square().sum())
    for channel in flat[1:]:
        fitted = channel - (float(base @ channel) / scale) * base if scale > 0 else channel
        spread = float(channel.max() - channel.min())
        if float(fitted.abs().max()) > max(spread, 1e-12) / 255:
            return True
    return False
