"""The explanation sheet (``xai/sheet``): tiles, captions drawn with Pillow, and its pictures JPEG-encoded once."""

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
from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor, Display, DriftPolicy, IntegratedGradients
from lightning_xai.explain import Explanation
from lightning_xai.visualize import sheet as sheet_module
from lightning_xai.visualize.media import Picture, evaluation_media
from lightning_xai.visualize.render import device_lut, to_display_images
from lightning_xai.visualize.sheet import (
    ALERT,
    INK,
    fit_text,
    prepare_sheet,
    render_sheet,
    sheet_layout,
    text_width,
    wrap_text,
)

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, record_sheet_texts, trainer_kwargs  # noqa: E402


# ------------------------------------------------------------------------------------------------------- text
def test_text_is_cut_and_wrapped_to_the_width_in_pixels() -> None:
    assert fit_text("abc", 100) == "abc"
    text = "integrated_gradients integrated_gradients"
    cut = fit_text(text, 100)
    assert cut.endswith("..") and text_width(cut) <= 100 < text_width(text[: len(cut) - 1] + "..")  # the longest
    assert fit_text("abc", 1) == ""
    lines = wrap_text("heat: |attribution| / max of each map. vs ref: rank drift against epoch 2.", 120)
    assert len(lines) > 2 and all(text_width(line) <= 120 for line in lines)
    assert " ".join(lines) == "heat: |attribution| / max of each map. vs ref: rank drift against epoch 2."


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


def test_small_inputs_are_blended_at_their_resolution_then_scaled_up_by_whole_pixels() -> None:
    images, maps = torch.full((2, 1, 32, 32), 0.4), torch.zeros(2, 32, 32)
    maps[1, 5, 9] = 3.0  # one hot pixel in probe 1's map (normalised by its max: 1)
    kw: dict[str, Any] = dict(predicted=torch.zeros(2), confidence=torch.ones(2), labels=None, targets=torch.zeros(2))
    sheet = render_sheet(images, {"m": Explanation(maps, maps)}, {"m": "max"}, **kw).permute(1, 2, 0).numpy()
    layout = sheet_layout(2, 1)
    for y in layout.rows:
        for x in layout.columns:
            blocks = sheet[y : y + 128, x : x + 128].reshape(32, 4, 32, 4, 3)  # 4 x 4 blocks of one colour each
            assert (blocks == blocks[:, :1, :, :1]).all()
    grey = np.array([102, 102, 102])  # 0.4 * 255 + 0.5, truncated
    expected = ((0.4 + (device_lut("jet", "cpu")[255].numpy() - 0.4) * 0.5) * 255 + 0.5).astype(np.uint8)
    overlay = sheet[layout.rows[1] : layout.rows[1] + 128, layout.columns[1] : layout.columns[1] + 128]
    hot = np.zeros((128, 128), dtype=bool)
    hot[20:24, 36:40] = True  # input pixel (5, 9) at 4 x 4 tile pixels
    assert (overlay[hot] == expected).all() and (overlay[~hot] == grey).all() and not np.array_equal(expected, grey)
    cold = sheet[layout.rows[0] : layout.rows[0] + 128, layout.columns[0] : layout.columns[1] + 128]
    assert (cold[:, :128] == grey).all() and (cold[:, -128:] == grey).all()  # probe 0: no heat, the input as is


def test_the_cached_page_gives_the_pixels_of_a_fresh_compose() -> None:
    n = 3
    images, maps = torch.rand(n, 3, 20, 20), torch.rand(n, 20, 20)
    results = {"gradcam": Explanation(maps, maps), "m": Explanation(maps, maps * 2)}
    norms = {"gradcam": "max", "m": "percentile"}
    kw: dict[str, Any] = dict(labels=torch.tensor([0, 1, 2]), targets=torch.zeros(n), drift_note="vs ref: test")

    def compose(title: str, predicted: list[int], drift: float) -> np.ndarray:
        _, make = prepare_sheet(
            images, results, norms, title=title, predicted=torch.tensor(predicted),
            confidence=torch.tensor([0.5, 0.25, 0.125]), drift={"gradcam": torch.full((n,), drift)}, **kw,
        )  # fmt: skip
        return np.asarray(make())

    first = compose("epoch 0", [0, 0, 0], 0.25)
    second = compose("epoch 1 step 40", [1, 1, 2], 0.75)
    assert not np.array_equal(first, second)
    for cache in (sheet_module._static_page, sheet_module._stamp, text_width):
        cache.cache_clear()
    assert np.array_equal(second, compose("epoch 1 step 40", [1, 1, 2], 0.75))
    assert np.array_equal(first, compose("epoch 0", [0, 0, 0], 0.25))  # the first page untouched by the second
    cached = sheet_module._static_page.cache_info()
    assert cached.hits >= 1 and cached.currsize == 1
    # the cached texts are exactly what ImageDraw.text draws at the same fractional place
    drawn, stamped = (Image.new("RGB", (200, 30), (255, 255, 255)) for _ in range(2))
    ImageDraw.Draw(drawn).text((10.7, 5 + 1), "pred 2   conf 0.50", fill=(20, 20, 20), font=sheet_module._font())
    sheet_module._put(stamped, 10.7, 5, "pred 2   conf 0.50", INK)
    assert np.array_equal(np.asarray(drawn), np.asarray(stamped)) and np.asarray(drawn).min() < 100


def test_sheet_tile_size_is_configurable_and_large_inputs_are_downscaled() -> None:
    sheet, _ = _sheet(n=2, size=300, tile=96)
    layout = sheet_layout(2, 2, 96)
    assert tuple(sheet.shape[1:]) == layout.size and layout.tile == 96
    with pytest.raises(ValueError, match="tile_size"):
        _sheet(n=1, tile=8)
    with pytest.raises(ValueError, match="tile_size"):
        AttributionMonitor(display=Display(tile_size=8))


def test_sheet_captions_mark_wrong_predictions_and_the_probes_an_alert_says_moved_in_red() -> None:
    """Red drift figures are the probes the method's alert names (they were those over a fixed 0.4, which disagreed
    with the alert's list and alarmed in runs without alert): probe 1 here, though probe 2 drifts more."""
    drift = {"gradcam": torch.tensor([0.1, 0.3, 0.9]), "integrated_gradients": None}
    sheet, _ = _sheet(n=3, drift=drift, drift_name="vs ref", moved={"gradcam": (1,)}, drift_note="vs ref: test")
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
    title, legend = sheet[:, : layout.rows[0] - layout.line], sheet[:, layout.rows[-1] + layout.row_height :]
    assert title.min() < 100 and legend.min() < 100  # there is ink: column titles, the notes under the colour bar


def test_an_alert_in_the_title_is_red_and_fits_a_two_method_sheet() -> None:
    """The title of an alerting evaluation was cut at 420 px ("ALERT: gradcam, integrated_gradients (s.."); now the
    methods' short titles fit, in the alert's red after the black title (a long alert is cut, the epoch and step
    stay); where not even "ALERT" fits after the title (small tiles), "ALERT" comes first."""
    from lightning_xai.visualize.text import text_width

    title, alert = "epoch 400   step 11000", "   ALERT: Grad-CAM, Int. Gradients"
    layout = sheet_layout(3, 2)
    assert text_width(title + alert) <= layout.width - 2 * 10
    red = torch.tensor([round(v * 255) for v in ALERT]).view(3, 1, 1)
    for given, expected, tile in (("", False, 128), (alert, True, 128), (alert, True, 32)):
        sheet, _ = _sheet(n=3, title=title, alert=given, tile=tile)
        band = sheet[:, : sheet_layout(3, 2, tile).rows[0] - 2 * layout.line]  # the title line
        assert bool(((band.int() - red).abs().sum(dim=0) < 60).any()) == expected  # 32 px: the alert first
    sheet, _ = _sheet(n=3, title=title, alert="   ALERT: " + "a_long_custom_method_name " * 4)  # cut, title first
    band = sheet[:, : layout.rows[0] - 2 * layout.line]
    reds = ((band.int() - red).abs().sum(dim=0) < 60).nonzero()[:, 1]
    assert len(reds) and int(reds.min()) > text_width(title) and band[:, :, :40].min() < 60  # the epoch in black


def test_the_page_is_composed_off_the_device_and_encoded_once_for_everyone(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 3
    images, maps = torch.rand(n, 3, 20, 20), torch.rand(n, 20, 20)
    kw: dict[str, Any] = dict(predicted=torch.zeros(n), confidence=torch.ones(n), labels=None, targets=torch.zeros(n))
    layout, compose = prepare_sheet(images, {"m": Explanation(maps, maps)}, {"m": "max"}, **kw)
    monkeypatch.setattr(torch.Tensor, "__mul__", None)  # composing uses no torch arithmetic (numpy + Pillow only)
    image = compose()
    monkeypatch.undo()
    page = np.asarray(image.convert("RGB"))  # (composed as RGBX: Pillow's own layout, encoded without a conversion)
    assert page.shape == (layout.height, layout.width, 3) and page.dtype == np.uint8
    assert np.array_equal(
        page, render_sheet(images, {"m": Explanation(maps, maps)}, {"m": "max"}, **kw).permute(1, 2, 0).numpy()
    )
    calls: list[int] = []
    media = evaluation_media(images, {"m": Explanation(maps, maps)}, {"m": "max"}, epoch=0, step=0, grids=False, **kw)
    ((tag, picture),) = media.images
    original = picture._compose
    picture._compose = lambda: calls.append(1) or original()  # type: ignore[misc, func-returns-value]
    data = picture.encoded()
    assert tag == "xai/sheet" and picture.encoded() is data and calls == [1] and picture.encode_seconds > 0
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert data[:2] == b"\xff\xd8" and (picture.height, picture.width) == page.shape[:2] == decoded.shape[:2]
    assert np.abs(decoded.astype(int) - page).mean() < 4.0  # JPEG at quality 90: close to the page (noise here)
    assert np.array_equal(picture.array(), page) and picture.array().flags.writeable


@pytest.mark.parametrize(
    "height, width, tile, half",
    [(8, 8, 128, True), (32, 32, 128, True), (12, 13, 130, False), (64, 64, 128, False), (128, 128, 128, False)]
    + [(20, 20, 128, False), (32, 32, 96, False)],  # whole factors 16, 4, 10 at an odd offset, 2, 1; 6.4; 3 (odd)
)
def test_the_sheet_halves_jpeg_chroma_only_where_every_tile_cell_is_an_even_block(
    height: int, width: int, tile: int, half: bool
) -> None:
    from PIL import JpegImagePlugin

    n = 2
    images, maps = torch.rand(n, 3, height, width), torch.rand(n, height, width)  # a colour per cell: speckles
    kw: dict[str, Any] = dict(predicted=torch.zeros(n), confidence=torch.ones(n), labels=None, targets=torch.zeros(n))
    results = {"m": Explanation(maps, maps)}
    ((_, picture),) = evaluation_media(images, results, {"m": "max"}, epoch=0, step=0, tile_size=tile, **kw).images
    decoded = Image.open(io.BytesIO(picture.encoded()))
    assert JpegImagePlugin.get_sampling(decoded) == (2 if half else 0)  # 4:2:0 or 4:4:4
    page = picture.array().astype(int)
    layout = sheet_layout(n, 1, tile)
    x, y = layout.columns[1], layout.rows[0]
    step = max(1, tile // max(height, width))
    centres = (slice(y + step // 2, y + tile, step), slice(x + step // 2, x + tile, step))  # the overlay's cells
    error = np.abs(np.asarray(decoded.convert("RGB")).astype(int)[centres] - page[centres]).mean()
    assert error < 8.0  # each cell keeps its colour (under 4:2:0, two-pixel cells take their neighbours': about 23)


def test_the_compact_grids_are_opt_in_and_share_the_sheets_heat() -> None:
    n = 4
    images, maps = torch.rand(n, 3, 8, 8), torch.rand(n, 8, 8)
    kw: dict[str, Any] = dict(predicted=torch.zeros(n), confidence=torch.ones(n), labels=None, targets=torch.zeros(n))
    results = {"m": Explanation(maps, maps)}

    def tags(**options: bool) -> list[str]:
        return [t for t, _ in evaluation_media(images, results, {"m": "max"}, epoch=0, step=0, **kw, **options).images]

    assert tags(grids=False) == ["xai/sheet"]
    assert tags(grids=False, log_heatmaps=True) == ["xai/sheet", "xai/m/heatmap"]
    assert tags(grids=True, include_probes=True) == ["xai/sheet", "xai/probes", "xai/m/overlay"]
    from lightning_xai.visualize.render import render_overlay_grid

    grid = dict(evaluation_media(images, results, {"m": "max"}, epoch=0, step=0, grids=True, **kw).images)
    assert torch.equal(grid["xai/m/overlay"].tensor(), render_overlay_grid(images, maps, nrow=4))
    assert isinstance(grid["xai/m/overlay"], Picture)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sheet_tiles_render_on_cuda_like_on_cpu() -> None:
    images, maps = torch.rand(3, 3, 20, 20), torch.rand(3, 20, 20)
    kw: dict[str, Any] = dict(predicted=torch.zeros(3), confidence=torch.ones(3), labels=None, targets=torch.zeros(3))
    cpu = render_sheet(images, {"m": Explanation(maps, maps)}, {"m": "percentile"}, **kw)
    cuda = render_sheet(images.cuda(), {"m": Explanation(maps.cuda(), maps.cuda())}, {"m": "percentile"}, **kw)
    assert cuda.device.type == "cpu" and (cuda.int() - cpu.int()).abs().max() <= 1


# --------------------------------------------------------------------------------------------- in TensorBoard
def test_the_largest_image_of_a_default_run_is_the_sheet_as_jpeg_with_128_px_tiles(tmp_path: Any) -> None:
    logdir = str(tmp_path / "logs")
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    monitor = AttributionMonitor(
        num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=1)
    )
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
    assert all(e.encoded_image_string[:2] == b"\xff\xd8" for e in images["xai/sheet"])  # JPEG
    picture = np.asarray(Image.open(io.BytesIO(largest.encoded_image_string)).convert("RGB"))
    assert picture.shape == (layout.height, layout.width, 3)
    for y in layout.rows:  # every probe row: the input and two overlays, each a 128 x 128 tile with content
        for x in layout.columns:
            tile = picture[y : y + 128, x : x + 128]
            assert tile.shape[:2] == (128, 128) and tile.std() > 1.0


def test_each_picture_is_encoded_once_for_every_logger(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from lightning_xai.visualize import media

    encoded: list[tuple[int, int]] = []
    real = media.encode_jpeg

    def counting(image: Any, **options: Any) -> bytes:
        encoded.append(np.asarray(image).shape[:2])
        return real(image, **options)

    monkeypatch.setattr(media, "encode_jpeg", counting)
    train, val = loaders()
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",))
    loggers = [TensorBoardLogger(str(tmp_path / "tb")), CSVLogger(str(tmp_path / "csv"))]
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, callbacks=[monitor], logger=loggers))
    trainer.fit(TinyCNN(), train, val)
    layout = sheet_layout(4, 1)
    evaluations = [e for e in encoded if e[0] == layout.height]  # (the setup dry run renders a small sheet once)
    assert evaluations == [(layout.height, layout.width)] * 2  # the sheet, once per evaluation
    files = sorted((Path(loggers[1].log_dir) / "xai" / "sheet").glob("*.jpg"))
    acc = EventAccumulator(loggers[0].log_dir, size_guidance={"images": 0})
    acc.Reload()
    sheets = acc.Images("xai/sheet")
    assert len(files) == len(sheets) == 2  # both loggers got both sheets, byte for byte the same JPEG
    assert [f.read_bytes() for f in files] == [e.encoded_image_string for e in sheets]


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


def test_a_sheet_of_more_probes_than_a_jpeg_holds_shows_those_that_fit_and_says_so() -> None:
    """At 128-pixel tiles a row is 176 px: 400 probes made a sheet 70,548 px tall, and JPEG holds at most 65,535, so
    every sheet failed to write (failure-injection trial). The sheet now shows the first probes that fit and says so
    in its notes; the JPEG encodes."""
    from lightning_xai.visualize.media import encode_jpeg
    from lightning_xai.visualize.sheet import MAX_HEIGHT, prepare_sheet, sheet_layout

    n, g = 400, torch.Generator().manual_seed(0)
    images, raw, shown_maps = torch.rand(n, 1, 8, 8, generator=g), torch.rand(n, 2, 2), torch.rand(n, 8, 8)
    probes, confidence = torch.arange(n) % 4, torch.rand(n, generator=g)

    def sheet(k: int) -> tuple[Any, Any]:
        maps = {"gradcam": Explanation(raw[:k], shown_maps[:k])}
        return prepare_sheet(
            images[:k], maps, {"gradcam": "max"}, predicted=probes[:k], confidence=confidence[:k], labels=None,
            targets=probes[:k],
        )  # fmt: skip

    layout, compose = sheet(n)
    shown = (layout.height - sheet_layout(0, 1).height) // layout.row_height
    assert layout.height <= MAX_HEIGHT < sheet_layout(n, 1).height and 300 < shown < n
    page = compose()
    assert encode_jpeg(page)[:2] == b"\xff\xd8"  # a JPEG (it raised "broken data stream" before)
    alone = np.asarray(sheet(shown)[1]())  # the same probes, all of them shown: the same page but for the notes
    cut = np.asarray(page)
    notes = layout.height - 3 * layout.line - 10
    assert (cut[:notes] == alone[:notes]).all() and (cut[notes:] != alone[notes:]).any()


def test_titles_that_name_their_epoch_do_not_fill_the_text_caches() -> None:
    """Each sheet's title ("epoch N   step M") never comes again, yet it was cached (about 14 kB each, up to 4096): a
    long run's memory grew with the epoch count (the long-run trial). Captions repeat and stay cached."""
    from lightning_xai.visualize import text

    images, maps = torch.full((2, 1, 32, 32), 0.4), torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    kw: dict[str, Any] = dict(predicted=torch.zeros(2), confidence=torch.ones(2), labels=None, targets=torch.zeros(2))
    render_sheet(images, {"m": Explanation(maps, maps)}, {"m": "max"}, title="epoch 0   step 0", **kw)
    before = text._ink_pixels.cache_info().currsize
    for epoch in range(1, 6):
        sheet = render_sheet(
            images, {"m": Explanation(maps, maps)}, {"m": "max"}, title=f"epoch {epoch}   step 9", **kw
        )
    assert text._ink_pixels.cache_info().currsize == before
    assert (sheet[:, 4:16, 8:60] < 128).any()  # the title is still drawn


def test_a_tile_whose_map_holds_no_relevance_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third of a ViT's Grad-CAM maps were all zero in the alert suite: blank tiles captioned "vs ref 1.00" (one
    constant map against one with relevance) and nothing said why; the tile now says "no relevance"."""
    written = record_sheet_texts(monkeypatch)
    images, maps = torch.full((2, 1, 32, 32), 0.4), torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    maps[1] = 0.0
    kw: dict[str, Any] = dict(predicted=torch.zeros(2), confidence=torch.ones(2), labels=None, targets=torch.zeros(2))
    drift = {"m": torch.tensor([0.25, 1.0])}
    render_sheet(images, {"m": Explanation(maps, maps)}, {"m": "max"}, drift=drift, drift_name="vs ref", **kw)
    assert "vs ref 0.25" in written and "no relevance" in written and "vs ref 1.00" not in written


def test_a_method_without_maps_at_an_evaluation_is_named_in_the_sheets_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A method that failed (or was skipped) at an evaluation has no column on that evaluation's sheet, and nothing on
    the sheet said so: the column was simply gone (report trial). The notes now name it first."""
    import lightning_xai.visualize.sheet as sheet
    from lightning_xai.visualize.media import evaluation_media

    drawn: list[str] = []
    put = sheet._put

    def recording(image: Any, x: float, y: int, text: str, colour: Any) -> float:
        drawn.append(text)
        return put(image, x, y, text, colour)

    monkeypatch.setattr(sheet, "_put", recording)
    sheet._static_page.cache_clear()  # the notes are drawn once per layout and text
    images, maps = torch.rand(2, 1, 16, 16), torch.rand(2, 16, 16)
    kw: dict[str, Any] = dict(predicted=torch.zeros(2), confidence=torch.ones(2), labels=None, targets=torch.zeros(2))
    normalizations = {"gradcam": "max", "integrated_gradients": "percentile"}
    media = evaluation_media(images, {"gradcam": Explanation(maps, maps)}, normalizations, epoch=3, step=9, **kw)
    media.images[0][1].image()  # composed
    notes = " ".join(drawn)
    assert "Not shown: Int. Gradients (no maps at this evaluation; xai/errors says why)." in notes, drawn
    drawn.clear()
    both = {"gradcam": Explanation(maps, maps), "integrated_gradients": Explanation(maps, maps)}
    evaluation_media(images, both, normalizations, epoch=4, step=12, **kw).images[0][1].image()
    assert drawn and "Not shown" not in " ".join(drawn)
