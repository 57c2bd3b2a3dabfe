"""The evidence image of an alert (issue 21 item 1): for the probes that moved, the input, the map before, the map at
the alert and the difference, with one box per class; logged to TensorBoard (``xai/<method>/alert/evidence``, with a
named monitor's prefix) and as a JPEG file beside a CSV logger's metrics. A hand-made alert with known maps."""

from __future__ import annotations

import io
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai.drift.alerts import AlertEvidence, AlertRegion, DriftAlert
from lightning_xai.drift.measure import Evaluation
from lightning_xai.explain import Explanation
from lightning_xai.explain.behaviour import FollowTest
from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.visualize.log import MediaContext, MediaLogger
from lightning_xai.visualize.sheet import BOX_COLOURS, _region_text, render_evidence, tile_origin

SIZE, TILE = 16, 64  # 16x16 probes shown 4x


def _alert(evidence: bool = True) -> DriftAlert:
    """Class 0 gains relevance in its top-left 4x4 corner (probes 0 and 2), class 1 in its bottom-right (probe 1)."""
    before = torch.full((3, SIZE, SIZE), 1.0 / SIZE**2)
    after = before * 0.5
    after[0, :4, :4] += 0.5 / 16
    after[2, :4, :4] += 0.5 / 16
    after[1, 12:, 12:] += 0.5 / 16
    regions = (
        AlertRegion("class 0", (0,), (0, 2), (0, 0, 4, 4)),
        AlertRegion("class 1", (1,), (1,), (12, 12, 16, 16)),
    )
    return DriftAlert(
        epoch=5,
        global_step=60,
        method="gradcam",
        metric="novel_relevance",
        statistic="median",
        value=0.3,
        threshold=0.1,
        probe_indices=(0, 1, 2),
        message="drift",
        regions=regions,
        evidence=AlertEvidence((0, 1, 2), before, after, 3) if evidence else None,
    )


def _done(inputs: torch.Tensor) -> ProbeExplanations:
    n = len(inputs)
    maps = {"gradcam": Explanation(torch.rand(n, 4, 4), torch.rand(n, SIZE, SIZE))}
    return ProbeExplanations(
        inputs, torch.zeros(n, dtype=torch.long), torch.ones(n), torch.zeros(n, dtype=torch.long), maps
    )


def test_render_evidence_shows_the_gain_in_red_inside_each_class_box() -> None:
    inputs = torch.zeros(4, 1, SIZE, SIZE)
    image = render_evidence(inputs, _alert(), tile_size=TILE).permute(1, 2, 0).numpy()
    for row, (y0, x0) in enumerate([(0, 0), (12, 12), (0, 0)]):
        left, top = tile_origin(row, 3, (TILE, TILE))  # the difference tile of the probe's row
        y, x = top + y0 * 4 + 8, left + x0 * 4 + 8  # the middle of the 4x4 region that gained
        r, g, b = (int(v) for v in image[y, x])
        assert r > 2 * b and r > 2 * g, (row, (r, g, b))  # gained: the red end of the diverging map
        r, g, b = (int(v) for v in image[top + (12 - y0) * 4 + 8, left + (12 - x0) * 4 + 8])
        assert b > r, (row, (r, g, b))  # lost elsewhere: bluish
        # the box: the class's own colour (class 0 white, class 1 green) on the line just outside the region
        colour = BOX_COLOURS[1 if row == 1 else 0]
        edge_x = left + 16 + 1 if x0 == 0 else left + x0 * 4 - 2
        assert tuple(int(v) for v in image[y, edge_x]) == colour, (row, tuple(image[y, edge_x]))
        # before and at the alert share one scale: the corner is brighter at the alert than before
        before_x, _ = tile_origin(row, 1, (TILE, TILE))
        after_x, _ = tile_origin(row, 2, (TILE, TILE))
        assert not np.array_equal(image[y, before_x + x0 * 4 + 8], image[y, after_x + x0 * 4 + 8])


def test_the_evidence_title_names_the_method_as_the_sheet_does() -> None:
    """The title said the method's key ("gradcam: alert at epoch 5"); it says what the sheet's column says,
    "Grad-CAM": the page drawn for the key is the page drawn for "Grad-CAM" (a name without a title of its own)."""
    from dataclasses import replace

    inputs = torch.zeros(4, 1, SIZE, SIZE)
    keyed = render_evidence(inputs, _alert(), tile_size=TILE)
    titled = render_evidence(inputs, replace(_alert(), method="Grad-CAM"), tile_size=TILE)
    other = render_evidence(inputs, replace(_alert(), method="Grad-CAN"), tile_size=TILE)
    assert keyed is not None and titled is not None and other is not None
    assert torch.equal(keyed, titled) and not torch.equal(keyed, other)


def test_no_evidence_no_image() -> None:
    assert render_evidence(torch.zeros(3, 1, SIZE, SIZE), _alert(evidence=False)) is None


def test_the_evidence_image_reaches_tensorboard_and_csv_under_the_monitor_name(tmp_path: Path) -> None:
    tb, csv = TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")
    trainer = L.Trainer(logger=[tb, csv], accelerator="cpu", devices=1, enable_progress_bar=False)
    media = MediaLogger("jet", None, False, background=False, tile_size=TILE)
    inputs = torch.rand(4, 1, SIZE, SIZE)
    record = Evaluation(5, 60, alerts=[_alert(), _alert(evidence=False)])
    media.log(trainer, _done(inputs), torch.tensor([0, 1, 0, 1]), record, {"gradcam": "max"}, MediaContext(name="a"))
    media.flush()
    tb.experiment.flush()
    expected = render_evidence(inputs, _alert(), tile_size=TILE, labels=torch.tensor([0, 1, 0, 1]))
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    acc.Reload()
    assert "xai/a/gradcam/alert/evidence" in acc.Tags()["images"]
    (event,) = acc.Images("xai/a/gradcam/alert/evidence")  # one per method and evaluation
    assert event.step == 60
    decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    shown = expected.permute(1, 2, 0).numpy()
    assert event.encoded_image_string[:2] == b"\xff\xd8" and decoded.shape == shown.shape  # JPEG
    assert np.abs(decoded.astype(int) - shown).mean() < 3.0  # quality 90: the rendered image, a little lossy
    files = list((Path(csv.log_dir) / "xai" / "a" / "gradcam" / "alert" / "evidence").glob("*.jpg"))
    assert [f.name for f in files] == ["epoch=0005-step=0000060.jpg"]
    assert files[0].read_bytes() == event.encoded_image_string  # encoded once for both loggers


def test_an_alert_without_evidence_logs_no_evidence_image(tmp_path: Path) -> None:
    tb = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = L.Trainer(logger=tb, accelerator="cpu", devices=1, enable_progress_bar=False)
    media = MediaLogger("jet", None, False, background=False, tile_size=TILE)
    record = Evaluation(5, 60, alerts=[_alert(evidence=False)])
    media.log(trainer, _done(torch.rand(4, 1, SIZE, SIZE)), None, record, {"gradcam": "max"}, MediaContext())
    tb.experiment.flush()
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    acc.Reload()
    assert "xai/sheet" in acc.Tags()["images"]
    assert not [t for t in acc.Tags()["images"] if t.endswith("/evidence")]


def test_the_probes_of_the_named_regions_come_first() -> None:
    """Only class 1 (probe 1) is named: its row comes first, then the other probes that moved, in their order."""
    alert = _alert()
    alert = DriftAlert(**{**alert.__dict__, "regions": alert.regions[1:]})
    inputs = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, SIZE, SIZE) / 4  # a grey per probe
    image = render_evidence(inputs, alert, tile_size=TILE, max_probes=2).permute(1, 2, 0).numpy()
    greys = []
    for row in range(2):
        left, top = tile_origin(row, 0, (TILE, TILE))  # the input tile
        greys.append(int(image[top + TILE // 2, left + TILE // 2, 0]))
    assert greys == [round(255 * 1 / 4), 0]  # probe 1, then probe 0 (probe 2 left out by max_probes)


def test_evidence_shorter_than_its_probes_shows_what_it_has_and_a_region_says_its_answer() -> None:
    alert = _alert()
    evidence = alert.evidence
    assert evidence is not None
    short = AlertEvidence(evidence.probe_indices, evidence.before[:1], evidence.after[:1], 3)
    image = render_evidence(torch.zeros(4, 1, SIZE, SIZE), DriftAlert(**{**alert.__dict__, "evidence": short}))
    assert image is not None and image.shape[0] == 3  # one row: the probe whose maps it holds
    empty = AlertEvidence(evidence.probe_indices, evidence.before[:0], evidence.after[:0], 3)
    assert render_evidence(torch.zeros(4, 1, SIZE, SIZE), DriftAlert(**{**alert.__dict__, "evidence": empty})) is None
    follow = FollowTest("region", 9, 3, 0, 3, 0, 0.125, False, 2)
    region = AlertRegion("class 9", (9,), (1,), (0, 28, 4, 32), "top-right", follow=follow)
    assert _region_text(region) == "class 9 top-right (followed 3/9, 0 before)"
    assert _region_text(alert.regions[0]) == "class 0"
