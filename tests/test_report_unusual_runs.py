"""The report of runs off the demo path, as a person reads it: a method that fails, early evaluations."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_xai import AttributionMonitor, DriftPolicy, FunctionExplainer
from lightning_xai.report import read_logdir, render_report

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, trainer_kwargs  # noqa: E402

BROKEN = {"from_epoch": 1, "epoch": 0}


def broken(forward: Any, inputs: Tensor, targets: Tensor) -> Tensor:
    """A method that works at setup and at epoch 0, then fails at every evaluation."""
    if BROKEN["epoch"] >= BROKEN["from_epoch"]:
        raise RuntimeError("broken on purpose")
    return inputs.abs().sum(1)


class Epoch(L.Callback):
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        BROKEN["epoch"] = trainer.current_epoch


def film_rows(page: str, probe: int) -> dict[str, list[str]]:
    """A probe's filmstrip: per row name, the cells' HTML."""
    strip = page.split(f"<h3>probe #{probe}", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr><th style="text-align:right">([^<]*)</th>(.*?)</tr>', strip)
    return {name: re.findall(r"<td>(.*?)</td>", cells) for name, cells in rows}


def test_a_method_that_stops_working_is_not_named_on_another_methods_tiles(tmp_path: Path) -> None:
    """A method listed first that failed from epoch 1 on: its column left the sheets, and the filmstrips named
    Grad-CAM's overlays after it ("broken", drift –) while Grad-CAM's row stayed empty."""
    monitor = AttributionMonitor(
        num_probes=4,
        methods=(FunctionExplainer(broken), "gradcam"),
        drift=DriftPolicy(warmup_epochs=0, detector=None),
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="run")
    kwargs = trainer_kwargs(tmp_path, max_epochs=3, logger=logger, callbacks=[Epoch(), monitor])
    L.Trainer(**kwargs).fit(TinyCNN(), train, val)
    (run,) = read_logdir(str(tmp_path / "logs"))
    assert len(run.errors) == 2  # epochs 1 and 2
    rows = film_rows(render_report([run], "t"), 0)
    assert list(rows) == ["input", "broken", "gradcam"]
    assert all('class="tile' in cell for cell in rows["gradcam"])  # Grad-CAM's tiles at every evaluation
    assert all(re.search(r"drift \d\.\d\d", cell) for cell in rows["gradcam"][1:])  # its drift against epoch 0
    assert 'class="tile' in rows["broken"][0]  # epoch 0: the method's own tile
    assert all('class="tile' not in cell and "skipped" in cell for cell in rows["broken"][1:])
    drifts = [run.predictions[s.key][0]["gradcam rank drift vs ref"] for s in run.sheets]
    assert [f"drift {d:.2f}" in cell for d, cell in zip(drifts[1:], rows["gradcam"][1:], strict=True)] == [True] * 2


def test_the_drift_curves_start_where_there_is_something_to_compare_with(tmp_path: Path) -> None:
    """The monitor logs the drift medians as 0.0 before there is a previous map or a reference (a placeholder for
    EarlyStopping, docs/index.md); the report drew them as measured: "vs previous" 0 at epoch 0, "vs reference" 0
    before the reference epoch. A median is measured where its share is logged."""
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=1))
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="run")
    L.Trainer(**trainer_kwargs(tmp_path, max_epochs=3, logger=logger, callbacks=[monitor])).fit(TinyCNN(), train, val)
    (run,) = read_logdir(str(tmp_path / "logs"))
    assert [e for e, _ in run.scalars["xai/gradcam/drift/rank_vs_previous/median"]] == [0, 1, 2]  # as logged
    page = render_report([run], "t")
    points = re.findall(r"<title>(vs (?:previous|reference)): epoch (\d+), ", page)
    assert sorted(points) == [("vs previous", "1"), ("vs previous", "2"), ("vs reference", "1"), ("vs reference", "2")]
