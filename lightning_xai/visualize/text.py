"""The pictures' text: Pillow's default font rasterised once per text and fractional place, a new text composed from
its glyphs' cached masks (about 3x faster than FreeType, pixel for pixel the same), pasted in a colour."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_SIZE = 14
_PAD = 4  # pixels around a cached text's mask

Colour = tuple[float, float, float]


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


@functools.lru_cache(maxsize=4096)
def text_width(text: str) -> float:
    """Width in pixels of ``text`` in the sheet's font: the sum of its characters' advances where no two neighbours
    kern (Pillow's basic layout), else FreeType's measure of the whole text."""
    if len(text) > 1 and all(_unkerned(a, b) for a, b in zip(text, text[1:], strict=False)):
        return sum(_advance(char) for char in text)
    return float(_font().getlength(text))


@functools.lru_cache(maxsize=512)
def _advance(char: str) -> float:
    return float(_font().getlength(char))


@functools.lru_cache(maxsize=8192)
def _unkerned(left: str, right: str) -> bool:
    """Whether ``left + right`` is as wide as both alone, in whole pixels (no kerning, no fractional advance)."""
    pair = float(_font().getlength(left + right))
    return pair == _advance(left) + _advance(right) and pair == int(pair)


def _render(text: str, fraction: float) -> Image.Image:
    """``text`` as an ``L`` mask drawn by ``ImageDraw.text`` with its origin at ``(_PAD + fraction, _PAD)``."""
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((_PAD + fraction, _PAD), text, font=_font())
    mask = Image.new("L", (math.ceil(box[2]) + _PAD, math.ceil(box[3]) + _PAD))
    ImageDraw.Draw(mask).text((_PAD + fraction, _PAD), text, fill=255, font=_font())
    return mask


@functools.lru_cache(maxsize=1024)
def _glyph(char: str, fraction: float) -> tuple[np.ndarray, int, int]:
    """One character's mask as :func:`_render` draws it (read-only), and the first and last+1 columns holding ink."""
    mask = np.asarray(_render(char, fraction))
    columns = np.flatnonzero(mask.any(axis=0))
    return mask, (int(columns[0]) if len(columns) else 0), (int(columns[-1]) + 1 if len(columns) else 0)


@functools.lru_cache(maxsize=4096)
def _overlap(left: str, right: str, fraction: float) -> bool:
    """Whether ``right``'s ink meets ``left``'s where ``right`` follows ``left`` in a text."""
    (a, _, _), (b, _, _) = _glyph(left, fraction), _glyph(right, fraction)
    shift = int(text_width(left))
    width, height = min(a.shape[1] - shift, b.shape[1]), min(a.shape[0], b.shape[0])
    return width > 0 and bool(((a[:height, shift : shift + width] > 0) & (b[:height, :width] > 0)).any())


@functools.lru_cache(maxsize=2048)
def _stamp(text: str, fraction: float) -> Image.Image:
    """``text`` as an ``L`` mask, origin ``(_PAD + fraction, _PAD)``: made once, pasted as ``ImageDraw.text`` draws.

    Pillow's basic layout places each glyph at the sum of the whole-pixel advances before it and lays overlapping
    glyphs one over the other (``later + earlier * (255 - later) / 255``), so a text is its glyphs' masks put side by
    side; a font whose advances are not whole pixels or that kerns the text is rendered by FreeType instead."""
    widths = [text_width(char) for char in text]
    if not text or any(w != int(w) for w in widths) or sum(widths) != text_width(text):
        return _render(text, fraction)
    glyphs = [_glyph(char, fraction) for char in text]
    pens = np.cumsum([0, *widths[:-1]]).astype(int).tolist()
    placed = list(zip(text, pens, glyphs, strict=True))
    canvas = np.zeros(
        (max(g.shape[0] for _, _, (g, _, _) in placed), max(p + g.shape[1] for _, p, (g, _, _) in placed))
    )
    canvas = canvas.astype(np.uint8)
    inked = [-1, -1]  # the rightmost column holding ink so far: up to the glyph before last, and the last one
    before = ""
    for char, pen, (mask, first, last) in placed:
        if last == 0:
            inked, before = [max(inked), -1], char
            continue
        height, width = mask.shape
        region = canvas[:height, pen : pen + width]
        if pen + first >= inked[0] and (pen + first >= inked[1] or not _overlap(before, char, fraction)):
            np.maximum(region, mask, out=region)  # no ink below: the larger value is the blend
        else:  # Pillow's blend: later + DIV255(earlier * (255 - later))
            t = region.astype(np.uint32) * (255 - mask.astype(np.uint32)) + 128
            region[...] = mask + (((t >> 8) + t) >> 8)
        inked, before = [max(inked), pen + last], char
    return Image.fromarray(canvas, "L")


@functools.lru_cache(maxsize=4096)
def _ink_pixels(text: str, fraction: float, colour: Colour, width: int) -> tuple[Any, ...]:
    """Where ``text`` puts ink on a page ``width`` pixels wide, relative to its origin: rows, columns, flat offsets,
    ``255 - m`` ``(k, 1)`` and ``ink * m + 128`` ``(k, 4)`` (RGBX, X 255; uint16: at most 255 * 255 + 128), and the
    ink's box ``(x0, y0, x1, y1)`` (inclusive; None without ink)."""
    return _ink_of(np.asarray(_stamp(text, fraction)), colour, width)


def _ink_of(mask: np.ndarray, colour: Colour, width: int) -> tuple[Any, ...]:
    ys, xs = np.nonzero(mask)
    m = mask[ys, xs].astype(np.uint16)[:, None]
    ys, xs = ys - _PAD, xs - _PAD
    found = (ys, xs, ys * width + xs, 255 - m, np.asarray((*_ink(colour), 255), dtype=np.uint16) * m + 128)
    for array in found:
        array.flags.writeable = False
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(ys) else None
    return (*found, box)


def put_all(page: np.ndarray, texts: Sequence[tuple[float, int, str, Colour]], once: int = 0) -> None:
    """Each ``(x, y, text, colour)`` as :func:`put` draws it on an image, on an RGBX page (a C-contiguous
    ``(H, W, 4)`` uint8 array), in one blend: pixel for pixel what Pillow's paste of a colour through the text's mask
    gives, ``DIV255(page * (255 - m) + ink * m)`` (X stays 255). The texts' ink must not overlap (each blends with
    the page as it was, not over another text); ink off the page is dropped, as Pillow clips. The first ``once``
    texts are drawn without the caches (a title that names its epoch never comes again: cached, a long run's
    titles would fill them)."""
    if page.ndim != 3 or page.shape[2] != 4 or page.dtype != np.uint8 or not page.flags.c_contiguous:
        raise ValueError(f"`page` must be a C-contiguous (H, W, 4) uint8 array, got {page.shape} {page.dtype}.")
    height, width = page.shape[:2]
    offsets, inverse, inked = [], [], []
    for i, (x, y, text, colour) in enumerate(texts):
        whole = math.floor(x)
        if i < once:
            ys, xs, flat, inv, ink, box = _ink_of(np.asarray(_stamp.__wrapped__(text, x - whole)), colour, width)
        else:
            ys, xs, flat, inv, ink, box = _ink_pixels(text, x - whole, colour, width)
        if box is None:
            continue
        if whole + box[0] < 0 or y + 1 + box[1] < 0 or whole + box[2] >= width or y + 1 + box[3] >= height:
            on = (xs + whole >= 0) & (xs + whole < width) & (ys + y + 1 >= 0) & (ys + y + 1 < height)
            flat, inv, ink = flat[on], inv[on], ink[on]
        offsets.append(flat + ((y + 1) * width + whole))
        inverse.append(inv)
        inked.append(ink)
    if offsets:
        at, pixels = np.concatenate(offsets), page.reshape(-1).view(np.uint32)  # a pixel a number: fast to move
        t = pixels.take(at).view(np.uint8).reshape(-1, 4) * np.concatenate(inverse)
        t += np.concatenate(inked)
        t += t >> 8
        t >>= 8
        pixels[at] = t.astype(np.uint8).view(np.uint32).reshape(-1)


def put_array(page: np.ndarray, x: float, y: int, text: str, colour: Colour) -> float:
    """:func:`put_all` of one text; returns the x where it ends."""
    put_all(page, [(x, y, text, colour)])
    return x + text_width(text)


def put(image: Image.Image, x: float, y: int, text: str, colour: Colour) -> float:
    """``text`` drawn on ``image`` in ``colour`` with its origin at ``(x, y + 1)``; returns the x where it ends."""
    whole = math.floor(x)
    image.paste(_ink(colour), (whole - _PAD, y + 1 - _PAD), _stamp(text, x - whole))
    return x + text_width(text)


@functools.lru_cache(maxsize=64)
def _ink(colour: Colour) -> tuple[int, int, int]:
    return (round(colour[0] * 255), round(colour[1] * 255), round(colour[2] * 255))


def fit_text(text: str, width: float) -> str:
    """``text`` cut to fit ``width`` pixels, ending in ``..`` when cut."""
    if text_width(text) <= width:
        return text
    cut = text
    while cut and text_width(cut + "..") > width:
        cut = cut[:-1]
    return cut + ".." if cut else ""


def wrap_text(text: str, width: float) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels (a longer word is cut)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(fit_text(word, width))
    return lines
