"""``lightning-xai report``: a self-contained HTML page from a real short run's event files, checked for its
content (every evaluation, compact thumbnails, runs labelled by their path, named monitors, one evaluation, one-line
errors), and opened in headless Chromium (skipped, with the reason, where Chromium is not installed)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_xai import AttributionMonitor, Display, DriftPolicy, DriftRule, IntegratedGradients
from lightning_xai.report import find_runs, read_logdir, read_run, read_runs, render_report
from lightning_xai.report.cli import main
from lightning_xai.report.html import FILM_TILE

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, trainer_kwargs  # noqa: E402

EPOCHS, PROBES = 12, 4  # more sheets than TensorBoard's server keeps by default (10)
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def epochs_of(points: list[tuple[int, float]], epochs: int) -> bool:
    """The points lie at the last evaluations, one per epoch: every epoch from the first or the second on (the
    drift keys exist from the first evaluation, or from the one that has something to compare with)."""
    found = [e for e, _ in points]
    return found in (list(range(epochs)), list(range(1, epochs)))


def blob_masks(images: Tensor, labels: Tensor | None) -> Tensor:
    return images[:, 0] > 0.5  # the class blob of conftest.make_images


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("report")
    logdir = root / "logs"
    monitor = AttributionMonitor(
        num_probes=PROBES,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=1, rules=(DriftRule(threshold=0.0),), cooldown=1, on_drift=lambda alert: None),
        display=Display(probe_masks=blob_masks),
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(logdir), name="run")
    trainer = L.Trainer(**trainer_kwargs(root, max_epochs=EPOCHS, logger=logger, callbacks=[monitor]))
    trainer.fit(TinyCNN(), train, val)
    out = root / "report.html"
    assert main(["report", str(logdir), "--out", str(out), "--title", "test run"]) == 0
    yield {"root": root, "logdir": logdir, "out": out, "html": out.read_text(), "monitor": monitor, "logger": logger}


def test_the_console_script_is_declared() -> None:
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("lightning-xai") == "lightning_xai.report.cli:main"


def test_python_dash_m_runs_the_console_script(run: dict[str, Any]) -> None:
    """``python -m lightning_xai report``: the same command where the environment's scripts are not on PATH (it said
    "No module named lightning_xai.__main__")."""
    out = run["root"] / "by_module.html"
    command = [sys.executable, "-m", "lightning_xai", "report", str(run["logdir"]), "--out", str(out)]
    done = subprocess.run([*command, "--title", "test run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}") and out.read_text() == run["html"]


def test_the_run_is_read_back_by_epoch(run: dict[str, Any]) -> None:
    (path,) = find_runs(run["logdir"])
    log = read_run(path)
    assert [s.epoch for s in log.sheets] == list(range(EPOCHS))
    assert log.methods == ["gradcam", "integrated_gradients"]
    assert epochs_of(log.scalars["xai/gradcam/drift/rank_vs_reference/median"], EPOCHS)
    keys = [s.key for s in log.sheets]  # (step, repeat): one table per evaluation, keyed like its sheet
    assert sorted(log.predictions) == keys and len(log.predictions[keys[3]]) == PROBES
    assert (
        log.predictions[keys[3]][0]["gradcam rank drift vs ref"] is not None
        and log.predictions[keys[0]][0]["gradcam rank drift vs ref"] is None
    )
    monitor = run["monitor"]
    alerts = [(a.epoch, a.global_step) for a in monitor.alerts]
    assert [(e, s) for e, s, _, _ in log.alerts] == alerts and monitor.alerts
    assert log.settings["warmup_epochs"] == 1 and log.settings["num_probes"] == PROBES
    # the dashboard's summary (in the run's own event file or its summary runs) is read as part of the run
    for method in log.methods:
        watched = log.scalars[f"xai/summary/{method}/watched"]
        assert watched == [(e, pytest.approx(v)) for e, v in log.scalars[f"xai/{method}/alert/score"]]
        threshold = log.scalars[f"xai/summary/{method}/threshold"]  # once the detector has calibrated
        assert threshold == [(e, pytest.approx(v)) for e, v in log.scalars[f"xai/{method}/alert/threshold"]]


def test_the_page_holds_drift_curves_filmstrips_localisation_and_settings(run: dict[str, Any]) -> None:
    page, monitor = run["html"], run["monitor"]
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>test run: run/version_0</h1>" in page  # its path under the log directory
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
    assert page.count("url(data:image/webp;base64,") + page.count("url(data:image/jpeg;base64,") == EPOCHS
    assert "data:image/png" not in page
    assert all(page.count(f"<th>epoch {e}</th>") == PROBES for e in range(EPOCHS))  # every evaluation, every probe
    assert page.count('class="tile r0s') == PROBES * 3 * EPOCHS  # input + 2 methods per probe and epoch
    # localisation (probe_masks) and quality curves, the cost, the settings
    assert "localisation: relevance_mass" in page and "localisation: pointing_game" in page
    assert "integrated_gradients/completeness_gap" in page and "seconds per evaluation" in page
    assert "<th>warmup_epochs</th>" in page and "<th>rules</th>" in page and "<th>cooldown</th>" in page
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "url(http" not in page and "<link" not in page


def test_a_summary_sub_directory_is_said_not_reported_as_an_empty_run(
    run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lightning-xai report version_0/xai-score`` wrote a page of 0 evaluations and exited 0 (review)."""
    summary = Path(run["logger"].log_dir) / "xai-score"
    assert any(summary.glob("events.out.tfevents.*"))
    assert main(["report", str(summary), "--out", str(tmp_path / "r.html")]) == 1
    assert "summary sub-directory of a monitor's run: give its parent" in capsys.readouterr().out
    assert not (tmp_path / "r.html").exists()


def test_an_empty_log_dir_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 1
    said = capsys.readouterr().out
    assert "no TensorBoard event files" in said and "TensorBoardLogger" in said and "nothing written" in said
    assert not (tmp_path / "r.html").exists()  # a page saying "no run" was written, though the command failed
    logger = TensorBoardLogger(str(tmp_path / "plain"))  # a run without the monitor: files, no `xai/` tags
    logger.log_metrics({"val_loss": 1.0}, step=0)
    logger.experiment.flush()
    (events,) = Path(logger.log_dir).glob("events.out.tfevents.*")
    for path, said in ((tmp_path / "plain", "hold no AttributionMonitor run"), (events, "is a file: give the dir")):
        assert main(["report", str(path), "--out", str(tmp_path / "r.html")]) == 1
        assert said in capsys.readouterr().out and not (tmp_path / "r.html").exists()
    assert "No run" in render_report([])


def test_the_report_is_light_every_evaluation_one_compact_thumbnail_image(run: dict[str, Any]) -> None:
    from PIL import Image

    (log,) = read_logdir(run["logdir"])
    assert len(log.sheets) == EPOCHS and [s.epoch for s in log.sheets] == log.evaluations == list(range(EPOCHS))
    page = run["html"]
    images = re.findall(r"url\(data:image/(webp|jpeg);base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == EPOCHS
    sizes = [Image.open(io.BytesIO(base64.b64decode(data))).size for _, data in images]
    # the first holds the input column too (the probes are fixed), the others one column per method
    assert sizes == [(3 * FILM_TILE, PROBES * FILM_TILE)] + [(2 * FILM_TILE, PROBES * FILM_TILE)] * (EPOCHS - 1)
    logged = sum(len(s.encoded) for s in log.sheets)
    assert all(s.encoded[:2] == b"\xff\xd8" for s in log.sheets)  # JPEG
    assert len(page.encode()) < 0.5 * logged  # the logged sheets are more than twice the page


def test_runs_are_labelled_by_their_path_and_one_evaluation_says_why_there_is_no_drift(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    for _ in range(2):  # two versions of one run name, one evaluation each
        monitor = AttributionMonitor(
            num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(on_drift=lambda alert: None)
        )
        L.seed_everything(0, verbose=False)
        train, val = loaders()
        logger = TensorBoardLogger(str(logdir), name="exp")
        L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=[monitor])).fit(
            TinyCNN(), train, val
        )
    runs = read_logdir(str(logdir))
    assert [r.label for r in runs] == ["exp/version_0", "exp/version_1"]
    page = render_report(runs, "t")
    assert "<h1>t: exp/version_0</h1>" in page and "<h1>t: exp/version_1</h1>" in page
    assert not re.search(r"<h1>[^<]*\d\. version_", page)  # not "1. version_0"
    assert page.count("Only 1 evaluation so far (epoch 0): drift compares an evaluation with the previous one") == 2
    assert "gradcam: watched drift" not in page  # no empty chart
    # the same run read from its own directory is labelled by that directory's name
    (one,) = read_logdir(str(logdir / "exp" / "version_1"))
    assert one.label == "version_1"


def test_several_evaluations_an_epoch_are_kept_apart_each_sheet_captioned_by_its_own_table(tmp_path: Path) -> None:
    """``validate`` before ``fit`` and ``val_check_interval=0.5``: five evaluations in two epochs (steps 0, 2, 4, 6,
    8), each sheet captioned by its own step's prediction table (was: the epoch's last table for every sheet), the
    curves one point per evaluation, the page naming each evaluation by its step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_xai.report.read import parse_markdown_table

    monitor = AttributionMonitor(num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="vci")
    kwargs = trainer_kwargs(tmp_path, max_epochs=2, logger=logger, callbacks=[monitor], val_check_interval=0.5)
    trainer, model = L.Trainer(**kwargs), TinyCNN(lr=0.5)  # a large step: the predictions move between evaluations
    trainer.validate(model, val, verbose=False)
    trainer.fit(model, train, val)
    (log,) = read_logdir(str(tmp_path / "logs"))
    assert [(s.epoch, s.step) for s in log.sheets] == [(0, 0), (0, 2), (0, 4), (1, 6), (1, 8)]
    acc = EventAccumulator(str(log.path), size_guidance={"tensors": 0})
    acc.Reload()
    logged = {
        e.step: parse_markdown_table(e.tensor_proto.string_val[0].decode())
        for e in acc.Tensors("xai/predictions/text_summary")
    }
    assert len({json.dumps(rows) for rows in logged.values()}) == 5  # five different tables
    page = render_report([log])
    film = page[page.index("<h2>Filmstrips</h2>") :]
    captions = re.findall(r'<div class="cap[^"]*">([^<]*)</div>', film.split("</table>")[0])  # probe #0's strip
    assert captions[:5] == [
        f"pred {rows[0]['predicted']} ({rows[0]['confidence']:.2f})" for rows in (logged[s] for s in (0, 2, 4, 6, 8))
    ]
    drift = [rows[0]["gradcam rank drift vs ref"] for rows in logged.values()]
    assert captions[5:10] == ["drift –" if d is None else f"drift {d:.2f}" for d in drift]
    heads = re.findall(r"<th>(epoch [^<]*)</th>", film)[:5]
    assert heads == ["epoch 0, step 0", "epoch 0, step 2", "epoch 0, step 4", "epoch 1, step 6", "epoch 1, step 8"]
    assert {step: rows for (step, _), rows in log.predictions.items()} == logged
    # one point per evaluation: an epoch's n evaluations at epoch + k / n, in order
    positions = pytest.approx([0, 1 / 3, 2 / 3, 1, 1.5])
    assert [x for x, _ in log.scalars["xai/summary/seconds"]] == positions
    assert [x for x, _ in log.scalars["xai/gradcam/drift/rank_vs_previous/median"]] == positions


def test_evaluations_are_read_in_the_order_they_were_written_not_by_file_name(tmp_path: Path) -> None:
    """Each Trainer call writes its own event file; started within one second they differ only in a counter, and
    TensorBoard reads them in name order (``.11`` before ``.7``). The report orders by wall time: here the files'
    names are swapped so that name order is the reverse of time order, and the sheets, tables and curves stay put."""
    monitor = AttributionMonitor(num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="calls")
    trainer, model = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=[monitor])), TinyCNN()
    trainer.validate(model, val, verbose=False)
    trainer.fit(model, train, val)
    (before,) = read_logdir(str(tmp_path / "logs"))
    files = sorted(p for p in Path(before.path).iterdir() if "tfevents" in p.name)
    assert len(files) == 2
    temporary = [f.rename(f.with_name(f"tmp{i}")) for i, f in enumerate(files)]
    for source, name in zip(temporary, reversed([f.name for f in files]), strict=True):
        source.rename(source.with_name(name))  # the first file written now sorts last
    (after,) = read_logdir(str(tmp_path / "logs"))
    assert [(s.epoch, s.step) for s in after.sheets] == [(s.epoch, s.step) for s in before.sheets] == [(0, 0), (0, 4)]
    assert after.predictions == before.predictions
    assert after.scalars["xai/summary/seconds"] == before.scalars["xai/summary/seconds"]


def test_an_alert_at_the_second_evaluation_of_a_step_is_named_as_that_one(tmp_path: Path) -> None:
    """Two ``validate`` calls at one step, the weights moved in between: the alert comes at the second, and the
    alerts table and summary named it ``epoch 0, step 0`` without its ``(#2)``, as if the first had alerted."""
    import torch

    rule = DriftRule(metric="rank", reference="previous", threshold=0.01)
    monitor = AttributionMonitor(
        num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0, detector=None, rules=(rule,))
    )
    L.seed_everything(0, verbose=False)
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="calls")
    trainer, model = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor])), TinyCNN()
    trainer.validate(model, loaders()[1], verbose=False)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    trainer.validate(model, loaders()[1], verbose=False)
    assert [a.global_step for a in monitor.alerts] == [0] and len(monitor.history) == 2
    (log,) = read_logdir(str(tmp_path / "logs"))
    assert [(e, s, r) for e, s, r, _ in log.alerts] == [(0, 0, 1)]
    page = render_report([log])
    assert "<tr><td>epoch 0, step 0 (#2)</td>" in page and "the first at epoch 0, step 0 (#2)" in page


def test_named_monitors_are_reported_apart(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    monitors = [
        AttributionMonitor(
            num_probes=PROBES,
            methods=("gradcam", IntegratedGradients(n_steps=4)),
            drift=DriftPolicy(warmup_epochs=1, on_drift=lambda alert: None),
            name="a",
        ),
        AttributionMonitor(num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=1), name="b"),
    ]
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(logdir), name="run")
    L.Trainer(**trainer_kwargs(tmp_path, max_epochs=3, logger=logger, callbacks=monitors)).fit(TinyCNN(), train, val)
    runs = {r.name: r for r in read_logdir(str(logdir))}
    assert {"a", "b"} <= set(runs)
    a, b = runs["a"], runs["b"]
    assert epochs_of(a.scalars["xai/integrated_gradients/drift/rank_vs_previous/median"], 3)
    assert epochs_of(b.scalars["xai/gradcam/drift/rank_vs_previous/median"], 3)
    assert not any("integrated_gradients" in t for t in b.scalars)  # b's keys only
    assert not any(t.startswith(("xai/a/", "xai/b/")) for t in a.scalars)  # read without the prefix
    page = render_report(list(runs.values()), "t")
    assert "run/version_0 (monitor a)" in page and "run/version_0 (monitor b)" in page
    assert "integrated_gradients: rank drift (median over probes)" in page


def test_named_sheet_settings_and_summary_tags_are_read(tmp_path: Path) -> None:
    """``xai/<name>/sheet`` etc. (what a named monitor logs), written directly: read as that monitor's run."""
    from torch.utils.tensorboard import SummaryWriter

    from lightning_xai.visualize.sheet import sheet_layout

    layout = sheet_layout(2, 1, 32)
    writer = SummaryWriter(str(tmp_path / "logs"))
    settings = '```json\n{"methods": ["gradcam"], "num_probes": 2, "tile_size": 32, "warmup_epochs": 1}\n```'
    writer.add_text("xai/a/settings", settings, global_step=0)
    for epoch in range(3):
        step = 10 * (epoch + 1)
        writer.add_scalar("epoch", epoch, global_step=step)
        writer.add_scalar("xai/a/summary/seconds", 0.1, global_step=epoch)
        writer.add_scalar("xai/a/gradcam/drift/rank_vs_previous/median", 0.1 * epoch, global_step=step)
        writer.add_image("xai/a/sheet", np.full((3, layout.height, layout.width), 200, np.uint8), global_step=step)
    writer.add_image("xai/a/gradcam/alert/evidence", np.zeros((3, 40, 1200), np.uint8), global_step=30)
    writer.close()
    (log,) = read_runs(tmp_path / "logs")
    assert log.name == "a" and log.methods == ["gradcam"] and log.settings["tile_size"] == 32
    assert [s.epoch for s in log.sheets] == [0, 1, 2] and log.sheets[0].width == layout.width
    page = render_report([log])
    assert page.count("url(data:image/") == 3  # one thumbnail image per evaluation
    assert page.count('class="tile r0s') == 2 * 2 * 3  # 2 probes x (input + gradcam) x 3 evaluations
    # the alert's evidence image, at its epoch, re-encoded at most 900 px wide
    assert [(m, p.epoch, p.width) for m, p in log.evidence] == [("gradcam", 2, 1200)]
    assert "<h3>gradcam at epoch 2</h3>" in page and page.count('class="evidence"') == 1


def test_out_into_a_missing_directory_is_created_and_a_bad_out_is_one_line(
    run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "deeper" / "report.html"
    assert main(["report", str(run["logdir"]), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert f"wrote {out} (" in capsys.readouterr().out
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["report", str(run["logdir"]), "--out", str(blocker / "report.html")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("lightning-xai report: cannot write ")
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.slow
def test_tensorboard_started_with_the_printed_flag_serves_every_sheet(run: dict[str, Any]) -> None:
    """The demo's printed command keeps every sheet: TensorBoard's server alone keeps 10 per tag."""
    import json
    import socket
    import time
    import urllib.request

    from examples.shortcut_detection import TENSORBOARD_SAMPLES

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(run["logdir"]), "--port", str(port)]
    server = subprocess.Popen(
        [*command, *TENSORBOARD_SAMPLES.split()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://localhost:{port}/data/plugin/images/images?run=run/version_0&tag=xai/sheet&sample=0"
    try:
        steps: list[int] = []
        deadline = time.monotonic() + 90
        while len(steps) < EPOCHS and time.monotonic() < deadline:
            time.sleep(1)
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    steps = [item["step"] for item in json.loads(answer.read())]
            except OSError:
                continue
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(steps) == EPOCHS == len(set(steps))


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


def test_a_long_runs_filmstrips_show_forty_evaluations_alerts_kept() -> None:
    """1,500 evaluations made a 30 MB page (every evaluation in every filmstrip, the long-run trial); a strip now
    shows at most MAX_FILM of them: the first, the last, every alert's, evenly spaced between."""
    from lightning_xai.report.film import MAX_FILM, _shown
    from lightning_xai.report.read import RunLog, Sheet

    sheets = [Sheet(e, 10 * e, b"", 1, 1) for e in range(300)]
    run = RunLog(Path("."), sheets=sheets, alerts=[(123, 1230, 0, "drift"), (124, 1240, 0, "drift")])
    usable = [(i, s, None) for i, s in enumerate(sheets)]
    shown = [s.epoch for _, s, _ in _shown(usable, run)]
    assert len(shown) == MAX_FILM and shown[0] == 0 and shown[-1] == 299 and {123, 124} <= set(shown)
    gaps = [b - a for a, b in zip(shown, shown[1:], strict=False) if {a, b}.isdisjoint({123, 124})]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced
    assert _shown(usable[:MAX_FILM], run) == usable[:MAX_FILM]  # a short run: every evaluation
