"""``lightning-xai report``: a self-contained HTML page from a real short run's event files, checked for its
content, and opened in headless Chromium (skipped, with the reason, where Chromium is not installed)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_xai import AttributionMonitor, DriftRule
from lightning_xai.report import find_runs, read_run, render_report
from lightning_xai.report.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, trainer_kwargs  # noqa: E402

EPOCHS, PROBES = 4, 4
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def blob_masks(images: Tensor, labels: Tensor | None) -> Tensor:
    return images[:, 0] > 0.5  # the class blob of conftest.make_images


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("report")
    logdir = root / "logs"
    monitor = AttributionMonitor(
        num_probes=PROBES,
        warmup_epochs=1,
        ig_steps=4,
        probe_masks=blob_masks,
        drift_rules=(DriftRule(threshold=0.0, cooldown=1),),  # fires as soon as it is armed: alerts to mark
        on_drift=lambda alert: None,
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(logdir), name="run")
    trainer = L.Trainer(**trainer_kwargs(root, max_epochs=EPOCHS, logger=logger, callbacks=[monitor]))
    trainer.fit(TinyCNN(), train, val)
    out = root / "report.html"
    assert main(["report", str(logdir), "--out", str(out), "--title", "test run"]) == 0
    yield {"root": root, "logdir": logdir, "out": out, "html": out.read_text(), "monitor": monitor}


def test_the_console_script_is_declared() -> None:
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("lightning-xai") == "lightning_xai.report.cli:main"


def test_the_run_is_read_back_by_epoch(run: dict[str, Any]) -> None:
    (path,) = find_runs(run["logdir"])
    log = read_run(path)
    assert [s.epoch for s in log.sheets] == list(range(EPOCHS))
    assert log.methods == ["gradcam", "integrated_gradients"]
    assert [e for e, _ in log.scalars["xai/gradcam/drift/rank_vs_reference/median"]] == [1, 2, 3]
    assert sorted(log.predictions) == list(range(EPOCHS)) and len(log.predictions[3]) == PROBES
    assert log.predictions[3][0]["gradcam drift"] is not None and log.predictions[0][0]["gradcam drift"] is None
    monitor = run["monitor"]
    assert [e for e, _ in log.alerts] == [a.epoch for a in monitor.alerts] and monitor.alerts
    assert log.settings["warmup_epochs"] == 1 and log.settings["num_probes"] == PROBES


def test_the_page_holds_drift_curves_filmstrips_localisation_and_settings(run: dict[str, Any]) -> None:
    page, monitor = run["html"], run["monitor"]
    assert page.startswith("<!DOCTYPE html>") and "<h1>test run: run" not in page  # the run dir is version_0
    assert "test run: version_0" in page
    # drift: per method, the watched series, its threshold and the alerts in one chart
    for method in ("gradcam", "integrated_gradients"):
        assert f"{method}: watched drift, threshold, alerts" in page
        assert f"{method}: rank drift (median over probes)" in page
    assert "watched (detector score)" in page and ">threshold<" in page
    alert_marks = re.findall(r"<title>alert: epoch (\d+),", page)
    assert sorted(int(e) for e in alert_marks) == sorted(a.epoch for a in monitor.alerts)
    # the alerts table
    assert page.count("<tr><td>") >= len(monitor.alerts) and monitor.alerts[0].message.split(":")[0] in page
    # a filmstrip per probe across the epochs, cut out of the embedded sheets (each embedded once)
    for p in range(PROBES):
        assert f"probe #{p} — label" in page
    assert page.count("data:image/png;base64,") == EPOCHS
    assert all(f"<th>epoch {e}</th>" in page for e in range(EPOCHS))
    assert page.count('class="tile r0s') == PROBES * 3 * EPOCHS  # input + 2 methods per probe and epoch
    # localisation (probe_masks) and quality curves, the cost, the settings
    assert "localisation: relevance_mass" in page and "localisation: pointing_game" in page
    assert "integrated_gradients/completeness_gap" in page and "seconds per evaluation" in page
    assert "<th>warmup_epochs</th>" in page and "<th>drift_rules</th>" in page
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "url(http" not in page and "<link" not in page


def test_an_empty_log_dir_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 1
    assert "no TensorBoard event files" in capsys.readouterr().out
    assert "No run" in render_report([])


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_the_report_renders_in_headless_chromium(run: dict[str, Any]) -> None:
    from PIL import Image

    assert CHROMIUM is not None
    url = run["out"].resolve().as_uri()
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    # the inline script decoded every embedded sheet (a broken data URI would count as failed)
    assert f'data-sheets-total="{EPOCHS}"' in dom and f'data-sheets-loaded="{EPOCHS}"' in dom
    assert "data-sheets-failed" not in dom
    shot = run["root"] / "report.png"
    subprocess.run([*flags, "--window-size=1280,1600", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    picture = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert picture.size == (1280, 1600)
    colours = picture.resize((128, 160)).getcolors(maxcolors=128 * 160)
    assert colours is not None and len(colours) > 50  # text, charts and tiles, not a blank page
