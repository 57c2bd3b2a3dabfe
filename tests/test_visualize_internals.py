"""The internal helpers of visualize/ and report/ (formerly docstring examples): exact values."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from lightning_xai.explain import Explanation, IntegratedGradients
from lightning_xai.report.cli import main
from lightning_xai.report.html import Series, svg_chart, thumbnails
from lightning_xai.report.read import monitor_names, parse_markdown_table
from lightning_xai.visualize.dashboard import custom_scalars_layout, named, summary_scalars
from lightning_xai.visualize.display import black_input, check_denormalize
from lightning_xai.visualize.log import describe_baseline, resolved_method_settings
from lightning_xai.visualize.loggers import logger_key, settings_markdown
from lightning_xai.visualize.media import Picture, evaluation_media, prediction_rows
from lightning_xai.visualize.render import (
    apply_colormap,
    check_colormap,
    device_lut,
    make_grid,
    normalize_maps,
    overlay,
    to_uint8,
)
from lightning_xai.visualize.sheet import evidence_tag, fit_text, sheet_layout, tile_origin, wrap_text
from lightning_xai.visualize.writer import BackgroundWriter


def test_render_helpers() -> None:
    assert (check_colormap("JET"), check_colormap("RdBu")) == ("jet", "RdBu")
    lut = device_lut("viridis", "cpu")
    assert lut.shape == (256, 3) and lut.dtype == torch.float32 and (lut[0] * 255).round().tolist() == [68, 1, 84]
    img, heat = torch.full((1, 3, 2, 2), 0.5), torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    blended = overlay(img, torch.ones(1, 3, 2, 2), heat, alpha=1.0)
    assert torch.equal(blended[0, :, 0, 0], img[0, :, 0, 0]) and blended[0, :, 0, 1].tolist() == [1.0, 1.0, 1.0]
    assert make_grid(torch.zeros(5, 3, 4, 4), nrow=3, padding=2).shape == (3, 14, 20)
    assert to_uint8(torch.tensor([0.0, 0.5, 1.0, 2.0, float("nan")])).tolist() == [0, 128, 255, 255, 0]


def test_examples_moved_out_of_the_docstrings() -> None:
    rgb = apply_colormap(torch.tensor([[[0.0, 1.0]]]), "jet")
    assert rgb.shape == (1, 3, 1, 2) and (rgb[0, :, 0, 0] * 255).round().tolist() == [0.0, 0.0, 128.0]
    assert normalize_maps(torch.tensor([[[-2.0, 1.0], [0.0, 4.0]]])).tolist() == [[[0.5, 0.25], [0.0, 1.0]]]
    layout = sheet_layout(8, 2)
    assert (layout.width, layout.height, layout.columns) == (420, 1562, (10, 146, 282))
    points = summary_scalars({"xai/gradcam/alert/score": 0.2, "xai/seconds": 1.5}, [], ["gradcam"])
    assert points["xai-score"] == {"xai/summary/gradcam/detector": 0.2}
    charts = custom_scalars_layout(["gradcam"], name="a")["xai a: summary (x = epoch)"]
    assert charts["seconds per evaluation"] == ["Multiline", ["xai/a/summary/seconds$"]]


def test_display_helpers() -> None:
    checked = check_denormalize(([0.5, 0.5], 0.25))
    assert isinstance(checked, tuple) and [torch.as_tensor(t).tolist() for t in checked] == [[0.5, 0.5], [0.25]]
    black = black_input(([0.5, 0.25], [0.25, 0.5]))
    assert black is not None and black.shape == (2, 1, 1) and black.flatten().tolist() == [-2.0, -0.5]
    assert black_input(None) is None and black_input(lambda x: x) is None


def test_text_fits_and_wraps() -> None:
    assert fit_text("integrated_gradients", 100) == "integrated_gr.."
    assert wrap_text("one two three four", 80) == ["one two", "three four"]


def test_names_tags_and_keys() -> None:
    assert (named("xai/sheet", "val"), named("xai/sheet", None), named("settings", "val")) == (
        "xai/val/sheet",
        "xai/sheet",
        "val/settings",
    )
    assert evidence_tag("integrated_gradients") == "xai/integrated_gradients/alert/evidence"
    assert tile_origin(0, 3, (64, 64)) == (350, 70) and tile_origin(1, 0, (64, 32), header=13) == (140, 121)
    assert logger_key(CSVLogger("logs", name="csv", version=3)) == "CSVLogger:logs/csv/version_3"


def test_settings_markdown_is_a_table_then_the_json_record() -> None:
    text = settings_markdown({"warmup_epochs": 2, "name": "a|b", "rules": [1]})
    assert text == (
        "| setting | value |\n|---|---|\n| warmup_epochs | 2 |\n| name | a/b |\n| rules | [1] |\n\n"
        '```json\n{"warmup_epochs": 2, "name": "a|b", "rules": [1]}\n```'
    )


def test_method_settings_say_what_was_resolved() -> None:
    assert resolved_method_settings(IntegratedGradients(n_steps=8))["baseline"] == "zeros"
    ig = IntegratedGradients(n_steps=8, baseline=black_input(([0.5], [0.25])))
    assert resolved_method_settings(ig, ([0.5], [0.25]))["baseline"] == "black (-mean/std) [-2.0]"
    assert (describe_baseline(None), describe_baseline(0.5)) == ("zeros", 0.5)
    assert describe_baseline(torch.zeros(3, 1, 1)) == "tensor (3, 1, 1) [0.0, 0.0, 0.0]"
    assert describe_baseline(torch.ones(9)) == "tensor (9,) [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]..."


def test_picture_is_composed_and_encoded_once_as_jpeg() -> None:
    picture = Picture.from_tensor(torch.zeros(3, 2, 4, dtype=torch.uint8))
    assert picture.array().shape == (2, 4, 3) and picture.encoded() is picture.encoded()
    assert tuple(picture.tensor().shape) == (3, 2, 4) and Image.open(io.BytesIO(picture.encoded())).size == (4, 2)
    assert picture.encoded()[:2] == b"\xff\xd8" and picture.extension == "jpg"
    composed = Picture(lambda: Image.new("RGB", (5, 3), (10, 200, 30)), 3, 5)  # a composer may hand a Pillow image
    assert composed.array().flags.writeable and composed.array()[2, 4].tolist() == [10, 200, 30]


def _two_probes(results: dict[str, Explanation], **options: Any) -> Any:
    """The media of one evaluation of two 8x8 probes (predicted 0 and 1, unlabeled) at epoch 3, step 30."""
    kw: dict[str, Any] = dict(predicted=torch.tensor([0, 1]), confidence=torch.tensor([0.5, 0.9]), labels=None)
    names = {name: "max" for name in results}
    return evaluation_media(
        torch.rand(2, 1, 8, 8), results, names, epoch=3, step=30, targets=torch.tensor([0, 1]), **kw, **options
    )


def test_prediction_rows_and_media_tags() -> None:
    t = prediction_rows(None, torch.tensor([1, 2]), torch.tensor([1, 0]), torch.tensor([0.5, 0.25]), {"m": None})
    assert t.columns == ["probe", "label", "target", "predicted", "confidence", "m rank drift vs ref"]
    assert t.rows == [[0, None, 1, 1, 0.5, None], [1, None, 2, 0, 0.25, None]]
    assert t.markdown().splitlines()[2] == "| 0 | – | 1 | 1 | 0.500 | – |"
    assert t.csv().splitlines()[1] == "0,,1,1,0.500,"
    media = _two_probes({"m": Explanation(torch.rand(2, 2, 2), torch.rand(2, 8, 8))}, alert_messages=["drift!"])
    tags = [[tag for tag, _ in items] for items in (media.images, media.tables, media.texts)]
    assert tags == [["xai/sheet"], ["xai/predictions"], ["xai/alerts"]] and media.texts[0][1] == "**ALERT** — drift!"


def test_the_tables_drift_column_says_which_drift() -> None:
    # "gradcam drift" said neither the measure nor against what (rank drift or top-k, previous or reference); the
    # sheet writes the same number as "vs ref" under the tile
    t = prediction_rows(
        None, torch.tensor([1]), torch.tensor([1]), torch.tensor([0.5]), {"gradcam": torch.tensor([0.25])}
    )
    assert t.columns[-1] == "gradcam rank drift vs ref" and t.rows == [[0, None, 1, 1, 0.5, 0.25]]


def test_a_map_with_no_relevance_has_no_drift_in_the_table_as_on_the_sheet() -> None:
    # probe 1's Grad-CAM is zero everywhere: the sheet says "no relevance"; a drift of 1.00 (or 0.00 against a blank
    # reference) in the table, the CSV files and the report's filmstrip would read as a measurement
    raw = torch.rand(2, 4, 4)
    raw[1] = 0.0
    media = _two_probes(
        {"gradcam": Explanation(raw, torch.rand(2, 8, 8))},
        drift={"gradcam": torch.tensor([0.25, 1.0])},
        drift_note="vs ref: rank drift",
    )
    table = media.tables[0][1]
    assert [row[-1] for row in table.rows] == [0.25, None]
    assert table.markdown().splitlines()[3].endswith("| – |")


def test_the_filmstrips_red_drift_is_the_alerts_moved_probes_as_on_the_sheet() -> None:
    # the sheet reds the probes an alert says moved; the report's filmstrip redded every drift over probe_threshold
    # (0.4), so the two disagreed on one evaluation and a healthy run's filmstrips were full of red
    from lightning_xai.report.film import filmstrip_section
    from lightning_xai.report.read import RunLog, Sheet

    media = evaluation_media(
        torch.rand(2, 1, 8, 8),
        {"gradcam": Explanation(torch.rand(2, 4, 4), torch.rand(2, 8, 8))},
        {"gradcam": "max"},
        epoch=3,
        step=30,
        predicted=torch.tensor([0, 1]),
        confidence=torch.tensor([0.5, 0.9]),
        targets=torch.tensor([0, 1]),
        labels=torch.tensor([0, 1]),
    )
    picture = media.images[0][1]
    message = "Attribution drift at epoch 3 (gradcam): 1/2 probes moved (score 0.2 >= threshold 0.1; probes [1])"
    for column in ("gradcam rank drift vs ref", "gradcam drift"):  # the table's column, and its name in older runs
        rows = [{"label": p, "predicted": p, "confidence": 0.5, column: d} for p, d in ((0, 0.9), (1, 0.1))]
        run = RunLog(
            Path("."),
            sheets=[Sheet(3, 30, picture.encoded(), picture.width, picture.height)],
            predictions={(30, 0): rows},
            alerts=[(3, 30, 0, message)],
            settings={"methods": ["gradcam"], "probe_threshold": 0.4, "tile_size": 128},
        )
        page = filmstrip_section(run, "r0")[0]
        assert '<div class="cap">drift 0.90</div>' in page and '<div class="cap bad">drift 0.10</div>' in page


def test_the_report_shows_the_skipped_maps_it_counts() -> None:
    # the summary said "1 skipped or uncompared map(s)" and the no-drift note "see the errors above", but the page
    # showed none of the messages (xai/errors): which method, why, what to do
    from lightning_xai.report.html import render_report
    from lightning_xai.report.read import RunLog, Sheet

    why = "gradcam at epoch 1 was skipped: the time budget (`Budget(max_seconds_per_epoch=)`) was spent"
    sheets = [Sheet(e, 10 * e, b"", 1, 1) for e in range(3)]
    page = render_report([RunLog(Path("."), sheets=sheets, errors=[(1, 10, why)])])
    assert "1 skipped or uncompared map(s)" in page and "was skipped: the time budget" in page


def test_the_reports_messages_show_code_not_backticks() -> None:
    # TensorBoard renders the alert and error texts as markdown; the report printed their backticks as they are
    from lightning_xai.report.html import render_report
    from lightning_xai.report.read import RunLog, Sheet

    alert = "Attribution drift at epoch 2 (gradcam): 3/8 probes moved (then silent, `DriftPolicy(cooldown=)`)"
    why = "gradcam was skipped: `Budget(max_seconds_per_epoch=)` was spent"
    sheets = [Sheet(e, 10 * e, b"", 1, 1) for e in range(3)]
    page = render_report([RunLog(Path("."), sheets=sheets, alerts=[(2, 20, 0, alert)], errors=[(1, 10, why)])])
    assert "<code>DriftPolicy(cooldown=)</code>" in page and "<code>Budget(max_seconds_per_epoch=)</code>" in page
    assert "`" not in page.split("<h2>Alerts</h2>")[1].split("<h2>Drift")[0]


def test_background_writer_runs_jobs_in_order_and_keeps_errors() -> None:
    out: list[int] = []

    def fail() -> None:
        raise ZeroDivisionError("division by zero")

    writer = BackgroundWriter(max_pending=2)
    for i in range(5):
        writer.submit(partial(out.append, i))
    writer.submit(fail)
    writer.flush()
    assert out == [0, 1, 2, 3, 4] and writer.pop_errors() == ["ZeroDivisionError: division by zero"]
    writer.close()
    assert writer.pop_errors() == []


def test_report_readers() -> None:
    tags = {"images": ["xai/sheet", "xai/a/sheet", "xai/a/gradcam/overlay"], "scalars": ["epoch"]}
    assert monitor_names(tags) == [None, "a"] and monitor_names({"scalars": ["xai/x"]}) == [None]
    assert monitor_names({"scalars": ["epoch"]}) == []
    rows = parse_markdown_table("| probe | drift | label |\n|---:|---:|---:|\n| 0 | 0.250 | cat |\n| 1 | – | - |")
    assert rows == [{"probe": 0, "drift": 0.25, "label": "cat"}, {"probe": 1, "drift": None, "label": None}]


def test_thumbnails_and_chart(capsys: pytest.CaptureFixture[str]) -> None:
    layout = sheet_layout(2, 1, 32)
    buffer = io.BytesIO()
    Image.new("RGB", (layout.width, layout.height), "white").save(buffer, format="PNG")
    strip = thumbnails(buffer.getvalue(), layout, [0, 1], tile=16)
    assert strip.size == (32, 32) and np.asarray(strip).min() == 255
    svg = svg_chart("drift", [Series("watched", [(0, 0.1), (1, 0.3)])])
    assert svg.startswith("<svg") and "watched" in svg and "polyline" in svg
    assert svg_chart("empty", [Series("nan", [(0, float("nan"))])]) == ""
    assert main(["report", "/nonexistent", "--out", "/dev/null"]) == 1
    said = "no TensorBoard event files under /nonexistent (no such directory); nothing written\n"
    assert capsys.readouterr().out == said


def test_the_writer_holds_its_jobs_until_the_block_ends_and_never_deadlocks_on_a_full_queue() -> None:
    import threading

    writer, ran = BackgroundWriter(max_pending=2), []
    with writer.held():
        writer.submit(lambda: ran.append(1))
        threading.Event().wait(0.2)
        assert ran == []  # the monitor's own work runs first
    writer.flush()
    assert ran == [1]
    with writer.held():  # more jobs than the queue holds: the hold gives way instead of blocking the caller
        for i in range(6):
            writer.submit(lambda i=i: ran.append(i))
    writer.flush()
    assert ran == [1, 0, 1, 2, 3, 4, 5]
    with writer.held():  # a flush inside the block (e.g. from an ``on_drift`` callable) ends the hold
        writer.submit(lambda: ran.append(6))
        writer.flush()
        assert ran[-1] == 6
        writer.submit(lambda: ran.append(7))
        writer.close()  # so does a close
    assert ran[-1] == 7
