"""Text for the explanation sheet, drawn with torch alone: a bitmap font of printable ASCII (DejaVu Sans Mono
Bold rasterised at 15 px, 9 x 16 pixels per character, 16 grey levels) in :mod:`lightning_xai.visualize.font_data`.

No Pillow, no matplotlib at run time. A character outside printable ASCII is drawn as ``?``.

Example::

    >>> mask = text_mask("drift 0.12")
    >>> tuple(mask.shape), mask.max().item()
    ((16, 90), 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.visualize.font_data import FIRST_CODE, GLYPH_HEIGHT, GLYPH_WIDTH, GLYPHS

__all__ = ["GLYPH_HEIGHT", "GLYPH_WIDTH", "draw_text", "fit_text", "text_mask", "text_width", "wrap_text"]

_ATLAS: Tensor | None = None


def _atlas() -> Tensor:
    """``(glyphs, GLYPH_HEIGHT, GLYPH_WIDTH)`` float32 coverage in ``[0, 1]`` (CPU, built once)."""
    global _ATLAS
    if _ATLAS is None:
        levels = [[int(c, 16) for c in glyph] for glyph in GLYPHS]
        _ATLAS = torch.tensor(levels, dtype=torch.float32).view(len(GLYPHS), GLYPH_HEIGHT, GLYPH_WIDTH) / 15.0
    return _ATLAS


def text_width(text: str) -> int:
    """Width in pixels of ``text`` drawn by :func:`text_mask` (monospace: ``GLYPH_WIDTH`` px per character)."""
    return GLYPH_WIDTH * len(text)


def fit_text(text: str, width: int) -> str:
    """``text`` cut to fit ``width`` pixels, ending in ``..`` when cut.

    Example::

        >>> fit_text("integrated_gradients", 128)
        'integrated_g..'
    """
    chars = max(0, width // GLYPH_WIDTH)
    if len(text) <= chars:
        return text
    return text[: max(0, chars - 2)] + ".." if chars >= 3 else text[:chars]


def wrap_text(text: str, width: int) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels (a longer word is cut).

    Example::

        >>> wrap_text("one two three four", 81)
        ['one two', 'three', 'four']
    """
    chars = max(1, width // GLYPH_WIDTH)
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= chars:
            lines[-1] += " " + word
        else:
            lines.append(word[:chars])
    return lines


def text_mask(text: str) -> Tensor:
    """``(GLYPH_HEIGHT, GLYPH_WIDTH * len(text))`` float32 CPU coverage of ``text`` in ``[0, 1]``."""
    atlas = _atlas()
    codes = [ord(c) - FIRST_CODE for c in text]
    codes = [c if 0 <= c < atlas.shape[0] else ord("?") - FIRST_CODE for c in codes]
    if not codes:
        return torch.zeros(GLYPH_HEIGHT, 0)
    glyphs = atlas[torch.tensor(codes)]  # (n, h, w)
    return glyphs.permute(1, 0, 2).reshape(GLYPH_HEIGHT, -1)


def draw_text(canvas: Tensor, text: str, x: int, y: int, color: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    """Blend ``text`` into a ``(3, H, W)`` canvas in place (float in ``[0, 1]``, or uint8), top-left corner at
    ``(x, y)``, in ``color`` (RGB in ``[0, 1]``); clipped at the canvas edges.

    Example::

        >>> canvas = torch.ones(3, 20, 40)
        >>> draw_text(canvas, "ab", 2, 3)
        >>> bool(canvas.min() < 0.1), bool((canvas[:, :3] == 1).all())
        (True, True)
        >>> pixels = torch.full((3, 20, 40), 255, dtype=torch.uint8)
        >>> draw_text(pixels, "ab", 2, 3, (1.0, 0.0, 0.0))
        >>> pixels[0].min().item(), pixels[1].min().item()
        (255, 0)
    """
    _, height, width = canvas.shape
    mask = text_mask(text)
    top, left = max(0, y), max(0, x)
    bottom, right = min(height, y + mask.shape[0]), min(width, x + mask.shape[1])
    if bottom <= top or right <= left:
        return
    alpha = mask[top - y : bottom - y, left - x : right - x].to(canvas.device)
    scale = 255.0 if canvas.dtype == torch.uint8 else 1.0
    ink = torch.tensor(color, device=canvas.device).view(3, 1, 1) * scale
    region = canvas[:, top:bottom, left:right]
    blended = region.float() * (1.0 - alpha) + ink * alpha
    region.copy_(blended.round() if scale != 1.0 else blended)
