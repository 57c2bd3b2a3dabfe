"""The report's pictures in a compact format: WebP (JPEG where Pillow has no WebP) at a sensible quality."""

from __future__ import annotations

import io
from collections.abc import Sequence

from lightning_xai.visualize.sheet import SheetLayout

__all__ = ["FILM_TILE", "THUMB_QUALITY", "compact", "thumbnail_format", "thumbnails"]

FILM_TILE = 96  # pixels per filmstrip tile on the page (and in its thumbnail)
THUMB_QUALITY = 80  # WebP/JPEG quality: the demo's 10 evaluations x 10 probes x 2 methods in about 0.4 MB


def thumbnail_format() -> tuple[str, str]:
    """``(Pillow format, MIME type)`` of the thumbnails: WebP where Pillow has it, else JPEG."""
    from PIL import features

    return ("WEBP", "image/webp") if features.check("webp") else ("JPEG", "image/jpeg")


def thumbnails(png: bytes, layout: SheetLayout, columns: Sequence[int], tile: int = FILM_TILE) -> bytes:
    """The tiles of one sheet, each scaled to ``tile`` pixels, packed into one compact image: a row per probe, a
    column per entry of ``columns`` (indices into ``layout.columns``: 0 is the input, 1.. the methods).

    Example::

        >>> from PIL import Image
        >>> from lightning_xai.visualize.sheet import sheet_layout
        >>> layout = sheet_layout(2, 1, 32)
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (layout.width, layout.height), "white").save(buffer, format="PNG")
        >>> Image.open(io.BytesIO(thumbnails(buffer.getvalue(), layout, [0, 1], tile=16))).size
        (32, 32)
    """
    from PIL import Image

    fmt, _ = thumbnail_format()
    sheet = Image.open(io.BytesIO(png)).convert("RGB")
    strip = Image.new("RGB", (tile * max(1, len(columns)), tile * len(layout.rows)), "white")
    for p, y in enumerate(layout.rows):
        for i, c in enumerate(columns):
            x = layout.columns[c]
            crop = sheet.crop((x, y, x + layout.tile, y + layout.tile))
            strip.paste(crop.resize((tile, tile), Image.Resampling.LANCZOS), (i * tile, p * tile))
    out = io.BytesIO()
    strip.save(out, format=fmt, quality=THUMB_QUALITY)
    return out.getvalue()


def compact(png: bytes, max_width: int = 900) -> tuple[bytes, str]:
    """An image re-encoded in the thumbnails' format, at most ``max_width`` pixels wide; its bytes and MIME type."""
    from PIL import Image

    fmt, mime = thumbnail_format()
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    if picture.width > max_width:
        height = round(picture.height * max_width / picture.width)
        picture = picture.resize((max_width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format=fmt, quality=THUMB_QUALITY)
    return out.getvalue(), mime
