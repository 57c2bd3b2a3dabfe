"""The explanation sheet (``xai/sheet``) and its bitmap font.

Also holds the generator of ``lightning_xai/visualize/font_data.py``; regenerate it with::

    .venv/bin/python tests/test_sheet.py --regenerate-font
"""

from __future__ import annotations

import glob
import io
import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor
from lightning_xai.explain import Explanation
from lightning_xai.visualize import font_data
from lightning_xai.visualize.font import GLYPH_HEIGHT, GLYPH_WIDTH, draw_text, fit_text, text_mask, wrap_text
from lightning_xai.visualize.render import to_display_images
from lightning_xai.visualize.sheet import ALERT, render_sheet, sheet_layout

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, trainer_kwargs  # noqa: E402

FONT_FILE = Path(__file__).resolve().parents[1] / "lightning_xai" / "visualize" / "font_data.py"
FONT_SIZE, FONT_TOP = 15, 2  # DejaVu Sans Mono Bold at 15 px; its glyphs use rows 2..17


def glyph_levels() -> list[str]:
    """Each printable ASCII glyph as GLYPH_WIDTH x GLYPH_HEIGHT hex digits (16 grey levels), via Pillow."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(
        os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSansMono-Bold.ttf"), FONT_SIZE
    )
    out = []
    for code in range(32, 127):
        img = Image.new("L", (GLYPH_WIDTH, GLYPH_HEIGHT), 0)
        ImageDraw.Draw(img).text((0, -FONT_TOP), chr(code), fill=255, font=font, anchor="la")
        out.append("".join(f"{round(v * 15 / 255):x}" for v in img.tobytes()))
    return out


def generate_font_source() -> str:
    lines = [
        "# Generated file - do not edit by hand.",
        f"# Printable ASCII (32-126) rasterised from DejaVu Sans Mono Bold at {FONT_SIZE} px (Bitstream Vera / DejaVu",
        f"# font licence: free to use and redistribute) into cells of {GLYPH_WIDTH}x{GLYPH_HEIGHT} pixels, 16 grey "
        "levels, one hex digit per pixel,",
        "# row-major. Regenerate with:  .venv/bin/python tests/test_sheet.py --regenerate-font",
        '"""Bitmap glyphs of the sheet captions (see :mod:`lightning_xai.visualize.font`)."""',
        "",
        "from __future__ import annotations",
        "",
        "FIRST_CODE = 32",
        f"GLYPH_WIDTH = {GLYPH_WIDTH}",
        f"GLYPH_HEIGHT = {GLYPH_HEIGHT}",
        "",
        "GLYPHS: tuple[str, ...] = (",
        *[f'    "{hexes}",' for hexes in glyph_levels()],
        ")",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- font
def test_font_covers_printable_ascii_and_matches_its_generator() -> None:
    assert len(font_data.GLYPHS) == 95 and all(len(g) == GLYPH_WIDTH * GLYPH_HEIGHT for g in font_data.GLYPHS)
    stored = np.array([[int(c, 16) for c in g] for g in font_data.GLYPHS])
    fresh = np.array([[int(c, 16) for c in g] for g in glyph_levels()])
    # FreeType versions may differ by a grey level on a few edge pixels; the shapes must be the same
    assert (np.abs(stored - fresh) > 1).mean() < 0.01


def test_every_visible_glyph_has_ink_and_unknown_characters_draw_a_question_mark() -> None:
    for code in range(33, 127):
        assert text_mask(chr(code)).max() > 0.5, chr(code)
    assert text_mask(" ").max() == 0
    assert torch.equal(text_mask("é"), text_mask("?"))
    assert tuple(text_mask("abc").shape) == (GLYPH_HEIGHT, 3 * GLYPH_WIDTH)


def test_draw_text_clips_at_the_canvas_edges() -> None:
    canvas = torch.ones(3, 10, 20)
    draw_text(canvas, "WWWW", 12, 5, (1.0, 0.0, 0.0))  # runs off the right and bottom edges
    draw_text(canvas, "W", -100, -100)  # entirely outside
    assert canvas[1:, 5:, 12:].min() < 0.5 and torch.equal(canvas[:, :5], torch.ones(3, 5, 20))
    assert fit_text("abcdef", 6 * GLYPH_WIDTH) == "abcdef" and fit_text("abcdefgh", 5 * GLYPH_WIDTH) == "abc.."
    assert wrap_text("a bb ccc", 4 * GLYPH_WIDTH) == ["a bb", "ccc"]


# ------------------------------------------------------------------------------------------------------ sheet
def _sheet(n: int = 3, size: int = 12, tile: int = 128, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=g)
    maps = torch.zeros(n, size, size)
    maps[:, : size // 2, : size // 2] = 1.0  # heat in the top-left quarter
    results = {"gradcam": Explanation(maps[:, ::4, ::4], maps), "integrated_gradients": Explanation(maps, maps)}
    sheet = render_sheet(
        images,
        results,
        {"gradcam": "max", "integrated_gradients": "percentile"},
        predicted=torch.arange(n) % 2,
        confidence=torch.full((n,), 0.8),
        labels=torch.zeros(n, dtype=torch.long),
        targets=torch.zeros(n, dtype=torch.long),
        tile_size=tile,
        **kw,
    )
    return sheet, images


def test_sheet_rows_hold_the_upscaled_input_and_an_overlay_per_method_at_128_px() -> None:
    sheet, images = _sheet(n=3, size=12)
    layout = sheet_layout(3, 2)
    assert sheet.dtype == torch.uint8 and tuple(sheet.shape) == (3, layout.height, layout.width)
    assert layout.tile == 128 and len(layout.columns) == 3 and len(layout.rows) == 3
    display = to_display_images(images)
    for i, y in enumerate(layout.rows):
        x = layout.columns[0]
        tile = sheet[:, y : y + 128, x : x + 128].float() / 255
        # 12 px upscaled to 128 (nearest): input pixel (r, c) covers tile rows ~ r * 10.67 ...
        for r, c in ((0, 0), (5, 7), (11, 11)):
            ty, tx = int((r + 0.5) * 128 / 12), int((c + 0.5) * 128 / 12)
            assert torch.allclose(tile[:, ty, tx], display[i, :, r, c], atol=1 / 255 + 1e-6)
        overlay = sheet[:, y : y + 128, layout.columns[1] : layout.columns[1] + 128].float() / 255
        hot, cold = overlay[:, 20, 20], overlay[:, 110, 110]  # heat only in the top-left quarter
        assert torch.allclose(cold, tile[:, 110, 110], atol=1 / 255 + 1e-6)
        assert not torch.allclose(hot, tile[:, 20, 20], atol=0.05)


def test_sheet_tile_size_is_configurable_and_large_inputs_are_downscaled() -> None:
    sheet, _ = _sheet(n=2, size=300, tile=96)
    layout = sheet_layout(2, 2, 96)
    assert tuple(sheet.shape[1:]) == layout.size and layout.tile == 96
    with pytest.raises(ValueError, match="tile_size"):
        _sheet(n=1, tile=8)
    with pytest.raises(ValueError, match="tile_size"):
        AttributionMonitor(tile_size=8)


def test_sheet_captions_mark_wrong_predictions_and_drift_over_the_threshold_in_red() -> None:
    drift = {"gradcam": torch.tensor([0.1, 0.9, 0.2]), "integrated_gradients": None}
    sheet, _ = _sheet(n=3, drift=drift, drift_name="vs ref", drift_threshold=0.4, drift_note="vs ref: test")
    layout = sheet_layout(3, 2)
    red = torch.tensor([round(v * 255) for v in ALERT]).view(3, 1, 1)

    def has_red(region: torch.Tensor) -> bool:
        return bool(((region.int() - red).abs().sum(dim=0) < 60).any())

    captions = [sheet[:, y - layout.line : y, :] for y in layout.rows]  # the line above each row's tiles
    assert [has_red(c) for c in captions] == [False, True, False]  # predicted = 0, 1, 0 for label 0
    t = layout.tile
    drift_lines = [
        sheet[:, y + t : y + t + layout.line, layout.columns[1] : layout.columns[1] + t] for y in layout.rows
    ]
    assert [has_red(d) for d in drift_lines] == [False, True, False]
    ig_lines = [sheet[:, y + t : y + t + layout.line, layout.columns[2] :] for y in layout.rows]
    assert not any(has_red(d) for d in ig_lines) and all(d.min() < 200 for d in ig_lines)  # "vs ref -"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sheet_tiles_render_on_cuda_like_on_cpu() -> None:
    images, maps = torch.rand(3, 3, 20, 20), torch.rand(3, 20, 20)
    kw: dict[str, Any] = dict(predicted=torch.zeros(3), confidence=torch.ones(3), labels=None, targets=torch.zeros(3))
    cpu = render_sheet(images, {"m": Explanation(maps, maps)}, {"m": "percentile"}, **kw)
    cuda = render_sheet(images.cuda(), {"m": Explanation(maps.cuda(), maps.cuda())}, {"m": "percentile"}, **kw)
    assert cuda.device.type == "cpu" and (cuda.int() - cpu.int()).abs().max() <= 1


# --------------------------------------------------------------------------------------------- in TensorBoard
def test_the_largest_image_of_a_default_run_is_the_sheet_with_128_px_tiles(tmp_path: Any) -> None:
    from PIL import Image

    logdir = str(tmp_path / "logs")
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    monitor = AttributionMonitor(num_probes=8, warmup_epochs=1, ig_steps=4)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], logger=TensorBoardLogger(logdir, name="run")))
    trainer.fit(TinyCNN(), train, val)
    files = glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"images": 0})
    acc.Reload()
    images = {tag: acc.Images(tag) for tag in acc.Tags()["images"]}
    assert len(images["xai/sheet"]) == 3  # one per evaluated epoch
    tag, largest = max(((t, e[-1]) for t, e in images.items()), key=lambda te: te[1].width * te[1].height)
    assert tag == "xai/sheet"
    layout = sheet_layout(8, 2)
    assert (largest.width, largest.height) == (layout.width, layout.height)
    picture = np.asarray(Image.open(io.BytesIO(largest.encoded_image_string)).convert("RGB"))
    for y in layout.rows:  # every probe row: the input and two overlays, each a 128 x 128 tile with content
        for x in layout.columns:
            tile = picture[y : y + 128, x : x + 128]
            assert tile.shape[:2] == (128, 128) and tile.std() > 1.0


def test_a_rendering_failure_warns_and_training_goes_on(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai.visualize import log

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no pictures today")

    monkeypatch.setattr(log, "evaluation_media", broken)
    train, val = loaders()
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",))
    trainer = L.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2, callbacks=[monitor], logger=TensorBoardLogger(tmp_path))
    )
    with pytest.warns(UserWarning, match="rendering the pictures failed.*no pictures today"):
        trainer.fit(TinyCNN(), train, val)
    assert len(monitor.history) == 2 and trainer.current_epoch == 2


if __name__ == "__main__":
    if "--regenerate-font" in sys.argv:
        FONT_FILE.write_text(generate_font_source())
        print(f"wrote {FONT_FILE}")
    else:
        print(__doc__)
