"""The sheet, grids and tables reach every logger where it keeps them: TensorBoard (with the Custom Scalars dashboard
and the epoch-level summary), CSV (files beside ``metrics.csv``), W&B (offline mode) and MLflow (file store).

One short fit with all four loggers at once (about 8 s on 2 cores, most of it W&B's start) feeds every test."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor, Display, DriftPolicy, DriftRule, IntegratedGradients
from lightning_xai.visualize.dashboard import (
    ALERT_RUN,
    DETAIL_CATEGORY,
    SCORE_RUN,
    SUMMARY_CATEGORY,
    THRESHOLD_RUN,
    custom_scalars_layout,
)
from lightning_xai.visualize.media import Picture
from lightning_xai.visualize.sheet import sheet_layout

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, have, loaders, trainer_kwargs  # noqa: E402

EPOCHS, PROBES = 4, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("loggers")
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT", "MLFLOW_ALLOW_FILE_STORE", "WANDB_DIR")}
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_ALLOW_FILE_STORE": "true"})
    os.environ["WANDB_DIR"] = str(root)
    loggers: list[Logger] = [TensorBoardLogger(str(root), name="tb"), CSVLogger(str(root), name="csv")]
    if have("wandb"):
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(save_dir=str(root), offline=True, project="xai-test"))
    if have("mlflow"):
        from lightning.pytorch.loggers import MLFlowLogger

        loggers.append(MLFlowLogger(experiment_name="xai-test", tracking_uri=f"file:{root / 'mlruns'}"))
    alerts: list[Any] = []
    monitor = AttributionMonitor(
        num_probes=PROBES,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=1, rules=(DriftRule(threshold=0.0),), on_drift=alerts.append),
        display=Display(log_grids=True),
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(root, max_epochs=EPOCHS, logger=loggers, callbacks=[monitor]))
    try:
        trainer.fit(TinyCNN(), train, val)
        yield {"root": root, "loggers": loggers, "monitor": monitor, "alerts": alerts, "trainer": trainer}
    finally:
        if have("wandb"):
            import wandb

            wandb.finish()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def test_a_pictures_jpeg_round_trips_through_pillow_at_full_chroma() -> None:
    from PIL import Image, JpegImagePlugin

    ramp = torch.linspace(0, 255, 40).round().to(torch.uint8)
    image = torch.stack(
        [ramp.view(1, -1).expand(24, 40), ramp.view(1, -1).flip(1).expand(24, 40), ramp[:24, None].expand(24, 40)]
    )
    decoded = Image.open(io.BytesIO(Picture.from_tensor(image).encoded()))
    assert decoded.format == "JPEG" and JpegImagePlugin.get_sampling(decoded) == 0  # 4:4:4: crisp coloured text
    error = np.abs(np.asarray(decoded.convert("RGB")).astype(int) - image.permute(1, 2, 0).numpy()).max()
    assert 0 < error <= 8  # lossy, but close at quality 90


def _scalars(directory: Path) -> EventAccumulator:
    acc = EventAccumulator(str(directory), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_holds_the_sheet_the_dashboard_layout_and_the_summary_by_epoch(run: dict[str, Any]) -> None:
    from tensorboard.plugins.custom_scalar import layout_pb2

    logger = run["loggers"][0]
    acc = _scalars(Path(logger.log_dir))
    sheets = acc.Images("xai/sheet")
    assert [e.step for e in sheets] == [4, 8, 12, 16]  # at the global step, one per evaluated epoch
    assert (sheets[0].width, sheets[0].height) == (sheet_layout(PROBES, 2).width, sheet_layout(PROBES, 2).height)
    # the layout: one chart per method with its watched series, threshold and alerts; read back from the event file
    layouts = acc.Tensors("custom_scalars__config__")
    assert len(layouts) == 1
    layout = layout_pb2.Layout.FromString(layouts[0].tensor_proto.string_val[0])
    categories = {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}
    rules = run["monitor"].alert_tracker.rules
    assert categories == {
        k: {t: v[1] for t, v in c.items()}
        for k, c in custom_scalars_layout(["gradcam", "integrated_gradients"], rules=rules).items()
    }
    assert [c.closed for c in layout.category] == [False, True]  # the summary fills the first screen
    summary = categories[SUMMARY_CATEGORY]
    assert summary["gradcam: detector score, threshold, alerts"] == ["xai/summary/gradcam/detector$"]
    assert summary["gradcam: rule series, thresholds, alerts"] == ["xai/summary/gradcam/rule_.*"]
    assert "gradcam: rank drift" in categories[DETAIL_CATEGORY]
    # score, threshold and alerts: the same tag in three runs of their own (one colour each in TensorBoard)
    runs = {r: _scalars(Path(logger.log_dir) / r) for r in (SCORE_RUN, THRESHOLD_RUN, ALERT_RUN)}
    tag = "xai/summary/gradcam/detector"
    assert [e.step for e in acc.Scalars("xai/summary/seconds")] == list(range(EPOCHS))  # against the epoch
    assert [e.step for e in runs[SCORE_RUN].Scalars(tag)] == [1, 2, 3]  # from the 2nd evaluation
    detail = {e.step: e.value for e in acc.Scalars("xai/gradcam/alert/score")}
    assert sorted(e.value for e in runs[SCORE_RUN].Scalars(tag)) == pytest.approx(sorted(detail.values()))
    thresholds = runs[THRESHOLD_RUN].Scalars(tag)
    detail = {e.step: e.value for e in acc.Scalars("xai/gradcam/alert/threshold")}
    assert thresholds and sorted(detail.values()) == pytest.approx(sorted(e.value for e in thresholds))
    rule = "xai/summary/gradcam/rule_rank_vs_reference_median"
    assert {e.value for e in runs[THRESHOLD_RUN].Scalars(rule)} == {0.0}  # the rule's fixed threshold
    assert [e.step for e in runs[SCORE_RUN].Scalars(rule)] == [1, 2, 3]
    # the rule fires at every armed epoch: a marker at its threshold (not on the watched point), at those epochs
    rule_alerts = sorted({a.epoch for a in run["alerts"] if a.method == "gradcam" and a.metric.startswith("rank")})
    assert rule_alerts and [e.step for e in runs[ALERT_RUN].Scalars(rule)] == rule_alerts
    assert {e.value for e in runs[ALERT_RUN].Scalars(rule)} == {0.0}
    assert "xai/summary/gradcam/detector" not in acc.Tags()["scalars"]  # not in the logger's own run
    settings = acc.Tensors("xai/settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| warmup_epochs | 1 |" in settings and '"tile_size": 128' in settings
    # resolved values instead of null: the layer Grad-CAM explains, what IG's baseline is
    assert '"layer": "features"' in settings  # the automatic choice, by its name
    assert '"layer": null' not in settings and '"baseline": "zeros"' in settings


def test_csv_logger_gets_jpeg_files_beside_metrics_csv(run: dict[str, Any]) -> None:
    logger = run["loggers"][1]
    root = Path(logger.log_dir)
    assert (root / "metrics.csv").exists()
    sheets = sorted((root / "xai" / "sheet").glob("*.jpg"))
    assert [p.name for p in sheets] == [f"epoch={e:04d}-step={4 * (e + 1):07d}.jpg" for e in range(EPOCHS)]
    layout = sheet_layout(PROBES, 2)
    assert _image_size(sheets[-1].read_bytes()) == (layout.width, layout.height)
    assert len(list((root / "xai" / "gradcam" / "overlay").glob("*.jpg"))) == EPOCHS
    assert len(list((root / "xai" / "probes").glob("*.jpg"))) == 1
    with open(sorted((root / "xai" / "predictions").glob("*.csv"))[-1]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "probe",
        "label",
        "target",
        "predicted",
        "confidence",
        "gradcam rank drift vs ref",
        "integrated_gradients rank drift vs ref",
    ]
    assert len(rows) == 1 + PROBES and all(r[5] != "" for r in rows[1:])  # the reference exists from epoch 1
    assert len(list((root / "xai" / "alerts").glob("*.md"))) >= 1
    assert json.loads((root / "xai" / "settings.json").read_text())["num_probes"] == PROBES


def test_two_validations_at_one_step_keep_both_evaluations_files(tmp_path: Path) -> None:
    """``validate`` twice after ``fit`` (the same epoch and step): the second's files get ``_v1``, none is overwritten,
    and a resumed process (a new sink) does not overwrite them either."""
    logger = CSVLogger(str(tmp_path), name="csv")
    monitor = AttributionMonitor(num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(detector=None))
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=[monitor]))
    model = TinyCNN()
    trainer.fit(model, train, val)
    for restarted in (False, False, True):
        with torch.no_grad():
            model.features[0].weight.add_(0.5)  # another model each time: other pictures
        if restarted:
            monitor.media.writer.flush()
            monitor.media._sinks.clear()  # as after a restart: only the files on disk tell what is taken
        trainer.validate(model, val, verbose=False)
    monitor.media.writer.flush()
    root = Path(logger.log_dir) / "xai"
    stem = "epoch=0001-step=0000004"  # validate after the fit's one epoch (the fit's own: epoch=0000-step=0000004)
    names = [p.name for p in sorted((root / "sheet").glob("*.jpg"))]
    assert names == ["epoch=0000-step=0000004.jpg", f"{stem}.jpg", f"{stem}_v1.jpg", f"{stem}_v2.jpg"]
    tables = [p.read_text() for p in sorted((root / "predictions").glob("*.csv"))]
    assert len(tables) == 4  # each evaluation its own table
    assert len({p.read_bytes() for p in (root / "sheet").glob("*.jpg")}) == 4


@pytest.mark.skipif(not have("wandb"), reason="wandb is not installed (pip install wandb)")
def test_wandb_offline_run_holds_the_images_and_tables(run: dict[str, Any]) -> None:
    runs = glob.glob(str(run["root"] / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    media = Path(runs[0]) / "files" / "media"
    sheets = sorted((media / "images" / "xai").glob("sheet_*.png"))
    assert len(sheets) == EPOCHS
    layout = sheet_layout(PROBES, 2)
    assert _image_size(sheets[0].read_bytes()) == (layout.width, layout.height)
    assert len(list((media / "images" / "xai" / "gradcam").glob("overlay_*.png"))) == EPOCHS
    tables = sorted((media / "table" / "xai").glob("predictions_*.table.json"))
    assert len(tables) == EPOCHS
    table = json.loads(tables[0].read_text())
    assert table["columns"][:5] == ["probe", "label", "target", "predicted", "confidence"]
    assert len(table["data"]) == PROBES
    (alerts, *_) = sorted((media / "table" / "xai").glob("alerts_*.table.json"))
    rows = json.loads(alerts.read_text())["data"]  # a row per alert, plain text (markdown showed as "**ALERT**")
    assert rows and all(row[0].startswith("ALERT — ") and "**" not in row[0] and "`" not in row[0] for row in rows)


@pytest.mark.skipif(not have("mlflow"), reason="mlflow is not installed (pip install mlflow-skinny)")
def test_mlflow_file_store_holds_the_images_and_tables(run: dict[str, Any]) -> None:
    logger = run["loggers"][-1]
    artifacts = Path(glob.glob(str(run["root"] / "mlruns" / "*" / logger.run_id))[0]) / "artifacts"
    sheets = [p for p in (artifacts / "images").glob("xai~sheet+step+*.png")]
    assert sorted(int(p.name.split("+")[2]) for p in sheets) == [4, 8, 12, 16]  # one image series, by step
    layout = sheet_layout(PROBES, 2)
    assert _image_size(sheets[0].read_bytes()) == (layout.width, layout.height)
    predictions = sorted((artifacts / "xai" / "predictions").glob("*.csv"))
    assert [p.name for p in predictions][0] == "epoch=0000-step=0000004.csv" and len(predictions) == EPOCHS
    assert json.loads((artifacts / "xai" / "settings.json").read_text())["warmup_epochs"] == 1


def test_the_sheet_of_an_alert_epoch_says_which_method_alerted(tmp_path: Path, monkeypatch: Any) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_xai.visualize import log as log_module

    titles: list[str] = []
    real = log_module.evaluation_media

    def recording(*args: Any, **kwargs: Any) -> Any:
        titles.append(kwargs["title"] + kwargs["alert"])
        return real(*args, **kwargs)

    monkeypatch.setattr(log_module, "evaluation_media", recording)
    rule = DriftRule(threshold=0.0, methods=("gradcam",))  # fires at every armed evaluation
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        drift=DriftPolicy(warmup_epochs=0, detector=None, rules=(rule,)),
    )
    kwargs = trainer_kwargs(tmp_path, max_epochs=2, logger=TensorBoardLogger(str(tmp_path)), callbacks=[monitor])
    L.Trainer(**kwargs).fit(TinyCNN(), *loaders())
    assert [bool(monitor.history[i].alerts) for i in range(2)] == [False, True]
    assert "ALERT" not in titles[0] and titles[1].endswith("ALERT: Grad-CAM"), titles


def test_the_dashboard_has_a_localisation_chart_with_probe_masks(tmp_path: Path) -> None:
    from tensorboard.plugins.custom_scalar import layout_pb2

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    masks = torch.zeros(PROBES, 12, 12, dtype=torch.bool)
    masks[:, :4, :4] = True
    monitor = AttributionMonitor(
        num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(detector=None), display=Display(probe_masks=masks)
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=[monitor]))
    trainer.fit(TinyCNN(), train, val)
    acc = _scalars(Path(logger.log_dir))
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    detail = {chart.title: list(chart.multiline.tag) for chart in layout.category[1].chart}
    assert detail["localisation"] == ["xai/localization/.*"]
    assert any(tag.startswith("xai/localization/") for tag in acc.Tags()["scalars"])


@pytest.mark.skipif(not have("mlflow"), reason="mlflow is not installed (pip install mlflow-skinny)")
def test_mlflow_text_artifacts_of_a_repeated_step_are_kept_across_logger_objects(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Two trainers (as two processes would) validate into one MLflow run at epoch 0, step 0: the run's own
    artifacts count as taken, so the second table is ``_v1``, not written over the first."""
    from lightning.pytorch.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_id = None
    for _ in range(2):
        logger = MLFlowLogger(experiment_name="x", tracking_uri=f"file:{tmp_path / 'mlruns'}", run_id=run_id)
        monitor = AttributionMonitor(num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(detector=None))
        trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor]))
        trainer.validate(TinyCNN(), loaders()[1], verbose=False)
        monitor.media.writer.flush()
        run_id = logger.run_id
    names = sorted(Path(p).name for p in glob.glob(str(tmp_path / "mlruns/**/xai/predictions/*"), recursive=True))
    assert names == ["epoch=0000-step=0000000.csv", "epoch=0000-step=0000000_v1.csv"]


@pytest.mark.skipif(not have("mlflow"), reason="mlflow is not installed (pip install mlflow-skinny)")
def test_a_failing_mlflow_image_upload_does_not_lose_the_tables(tmp_path: Path, monkeypatch: Any) -> None:
    from lightning.pytorch.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLFlowLogger(experiment_name="x", tracking_uri=f"file:{tmp_path / 'mlruns'}")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("HTTP 503 from the tracking server")

    monkeypatch.setattr(logger.experiment, "log_image", refuse)
    monitor = AttributionMonitor(num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(detector=None))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor]))
    with pytest.warns(UserWarning, match="HTTP 503"):
        trainer.validate(TinyCNN(), loaders()[1], verbose=False)
        monitor.media.writer.flush()
        trainer.validate(TinyCNN(), loaders()[1], verbose=False)  # the failure is reported after the next evaluation
    names = sorted(Path(p).name for p in glob.glob(str(tmp_path / "mlruns/**/xai/predictions/*"), recursive=True))
    assert names == ["epoch=0000-step=0000000.csv", "epoch=0000-step=0000000_v1.csv"]
