"""The input side of the pictures: how a probe, as the model sees it, becomes a displayable image (``denormalize``),
the checks of that argument, and the model input that displays as black (Integrated Gradients' default baseline
when ``denormalize=(mean, std)`` is given)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import torch
from torch import Tensor

Denormalize: TypeAlias = tuple[Sequence[float] | float, Sequence[float] | float] | Callable[[Tensor], Tensor] | None


def _to_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() and x.dtype in (torch.float32, torch.float64) else x.float()


def check_denormalize(denormalize: Denormalize) -> Denormalize:
    """``denormalize`` normalised: None, a callable, or ``(mean, std)`` as two 1-D float32 tensors (from numbers,
    lists, tuples, numpy arrays or tensors; given as a tuple or a list). Raises a ValueError naming ``denormalize``
    for anything else, for NaN/Inf, for a zero std, or for mean and std of different lengths (neither of them 1).

    Example::

        >>> [t.tolist() for t in check_denormalize([[0.5, 0.5], 0.25])]
        [[0.5, 0.5], [0.25]]
    """
    if denormalize is None or callable(denormalize):
        return denormalize
    fix = (
        "pass (mean, std) sequences (one value per channel or one for all), a callable mapping model inputs to "
        "[0, 1] images, or None."
    )
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
    if bool((std == 0).any()):
        raise ValueError(f"`denormalize` std must be non-zero (the inputs are divided by it), got {std.tolist()}.")
    if mean.numel() != std.numel() and 1 not in (mean.numel(), std.numel()):
        raise ValueError(
            f"`denormalize` has {mean.numel()} means but {std.numel()} stds; give one of each per channel (or one "
            "for all)."
        )
    return (mean, std)  # type: ignore[return-value]  # tensors are sequences of floats here


def check_display_channels(denormalize: Denormalize, channels: int, render: bool = True) -> None:
    """Raise a ValueError naming ``denormalize`` when ``(mean, std)`` does not fit images with ``channels``
    channels, or (``render``) when such images cannot be displayed: 1 (grey) or 3 (RGB) channels after
    ``denormalize``. A callable is checked by calling it (see the setup dry run)."""
    if isinstance(denormalize, (tuple, list)):
        for label, part in zip(("means", "stds"), denormalize, strict=True):
            count = torch.as_tensor(part).numel()
            if count not in (1, channels):
                raise ValueError(
                    f"`denormalize` has {count} {label} but the probes have {channels} channel"
                    f"{'s' if channels != 1 else ''}; give one per channel (or one for all), e.g. the mean and std "
                    "of the `Normalize` in your validation transform."
                )
    if render and denormalize is None and channels not in (1, 3):
        raise ValueError(
            f"The probes have {channels} channels and images are shown with 1 (grey) or 3 (RGB): pass "
            "`denormalize=` a callable that maps the probes to 1 or 3 channels in [0, 1], e.g. "
            "`denormalize=lambda x: x[:, :3]`."
        )


def black_input(denormalize: Denormalize) -> Tensor | None:
    """The model input that displays as black, ``-mean / std`` shaped ``(C, 1, 1)``, for ``denormalize=(mean,
    std)``; None for a callable or None (the inverse is unknown; zeros are black for unnormalised inputs).

    It is Integrated Gradients' default baseline when ``denormalize`` is given: the zero input of a
    normalised model is the *mean* image, which leaves the background with attribution of its own.

    Example::

        >>> black_input(([0.5, 0.25], [0.25, 0.5])).flatten().tolist()
        [-2.0, -0.5]
    """
    if not isinstance(denormalize, (tuple, list)) or len(denormalize) != 2:
        return None
    mean = torch.as_tensor(denormalize[0], dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(denormalize[1], dtype=torch.float32).reshape(-1, 1, 1)
    return -mean / std


def to_display_images(images: Tensor, denormalize: Denormalize = None) -> Tensor:
    """Convert probe images, as the model sees them, into displayable RGB in ``[0, 1]``.

    1. ``denormalize=(mean, std)``: per channel ``x * std + mean`` (sequences of length ``C`` or 1);
       a callable is applied as is; ``None`` leaves the values alone.
    2. Single-channel images are repeated to 3 channels.
    3. With ``denormalize=None`` and any value outside ``[0, 1]`` in the batch, each image is min-max
       scaled independently (a constant image becomes 0.5 grey); otherwise values are clamped to
       ``[0, 1]``. Non-finite values count as 0.

    Args:
        images: ``(N, C, H, W)`` tensor with ``C`` in ``(1, 3)`` (after ``denormalize``).
        denormalize: ``(mean, std)``, a callable ``Tensor -> Tensor`` or ``None``.

    Returns:
        ``(N, 3, H, W)`` float tensor in ``[0, 1]`` on the device of ``images``.

    Raises:
        ValueError: If the images are not 4-D, have a channel count other than 1 or 3, or
            ``mean``/``std`` do not match the channel count.

    Example::

        >>> x = torch.zeros(2, 3, 4, 4)  # normalised with mean 0.5, std 0.25
        >>> out = to_display_images(x, denormalize=([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
        >>> out.shape, out.unique().tolist()
        (torch.Size([2, 3, 4, 4]), [0.5])
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    x = _to_float(images)
    if isinstance(denormalize, (tuple, list)):
        if len(denormalize) != 2:
            raise ValueError("denormalize must be a (mean, std) pair or a callable.")
        c = x.shape[1]
        stats = []
        for label, seq in zip(("mean", "std"), denormalize, strict=True):
            t = torch.as_tensor(seq, dtype=x.dtype, device=x.device).reshape(-1)
            if t.numel() not in (1, c):
                raise ValueError(f"denormalize {label} has {t.numel()} values but the images have {c} channels.")
            stats.append(t.reshape(1, -1, 1, 1))
        x = x * stats[1] + stats[0]
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
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if denormalize is not None or x.numel() == 0:
        return x.clamp(0.0, 1.0)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    lo = flat.amin(dim=1).reshape(n, 1, 1, 1)
    hi = flat.amax(dim=1).reshape(n, 1, 1, 1)
    out_of_range = (flat.amin() < 0.0) | (flat.amax() > 1.0)  # stays a device tensor: no host sync
    span = hi - lo
    const = span <= 1e-12
    scaled = (x - lo) / torch.where(const, torch.ones_like(span), span)
    scaled = torch.where(const, torch.full_like(x, 0.5), scaled)
    return torch.where(out_of_range, scaled, x.clamp(0.0, 1.0))
