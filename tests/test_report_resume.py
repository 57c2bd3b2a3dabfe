"""``lightning-xai report`` after a fit resumed from a checkpoint into the same version directory (after a Ctrl-C, or
from an earlier checkpoint): the evaluations the abandoned run logged at the steps the resumed fit does again are left
out (they were kept: 9 evaluations for 6, a second point at a redone epoch, duplicate filmstrip columns), the one at the
checkpoint's own step stays, and what is logged after the resumed fit (``validate``, ``test``) stays, as does a
continuation into a new version directory. Real short fits with real checkpoints; the surviving run is the resumed
monitor's own ``history`` (the checkpoint's evaluations restored, then its own)."""

from __future__ import annotations

import re
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor, DriftPolicy
from lightning_xai.report import read_logdir, render_report
from lightning_xai.report.cli import main
from lightning_xai.report.read import RunLog, parse_markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, trainer_kwargs  # noqa: E402

PROBES = 4
DRIFT = "xai/gradcam/drift/rank_vs_previous/median"


class Interrupt(Callback):
    """A Ctrl-C right after the evaluation of ``epoch`` was logged (before that epoch's checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def sigint() -> Iterator[None]:
    """Lightning ignores SIGINT from a KeyboardInterrupt on: restored for the tests after."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def fit(
    root: Path, run: int, version: int, epochs: int, ckpt: Path | None = None, stop: int | None = None, **kw: Any
) -> tuple[AttributionMonitor, L.Trainer]:
    """Fit number ``run`` (its own seed and checkpoint folder ``ckpt<run>``) into ``logs/run/version_<version>``;
    ``stop``: interrupted (Ctrl-C) after the evaluation of that epoch."""
    monitor = AttributionMonitor(num_probes=PROBES, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    L.seed_everything(run, verbose=False)  # a resumed fit shuffles otherwise: its evaluations differ
    train, val = loaders()
    name = "{epoch}-{step}" if kw.get("val_check_interval") else "{epoch}"
    checkpoints = ModelCheckpoint(dirpath=root / f"ckpt{run}", filename=name, save_top_k=-1)
    callbacks = [monitor, checkpoints] + ([] if stop is None else [Interrupt(stop)])
    logger = TensorBoardLogger(str(root / "logs"), name="run", version=version)
    kwargs = trainer_kwargs(root, max_epochs=epochs, logger=logger, callbacks=callbacks, enable_checkpointing=True)
    trainer = L.Trainer(**{**kwargs, **kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a mid-epoch checkpoint's warning
        if stop is None:
            trainer.fit(TinyCNN(lr=0.5), train, val, ckpt_path=ckpt)
        else:
            with pytest.raises(SystemExit):  # Lightning's graceful shutdown after a KeyboardInterrupt
                trainer.fit(TinyCNN(lr=0.5), train, val, ckpt_path=ckpt)
    return monitor, trainer


def raw(log: RunLog, tag: str) -> list[Any]:
    """Every event of ``tag`` in the run's event files, abandoned ones included, in the order written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log.path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    kind = next(k for k in ("images", "scalars", "tensors") if tag in acc.Tags()[k])
    read = {"images": acc.Images, "scalars": acc.Scalars, "tensors": acc.Tensors}[kind]
    return sorted(read(tag), key=lambda e: e.wall_time)


def assert_surviving(log: RunLog, monitor: AttributionMonitor) -> None:
    """The report holds exactly the evaluations of ``monitor``'s run (restored from its checkpoint, then its own),
    each the last one written at its step; the abandoned ones are in the event files still."""
    history = monitor.history
    assert [(s.epoch, s.step, s.repeat) for s in log.sheets] == [(h.epoch, h.global_step, 0) for h in history]
    assert log.evaluations == [h.epoch for h in history] == list(range(len(history)))
    last_sheet = {e.step: e.encoded_image_string for e in raw(log, "xai/sheet")}
    assert [s.encoded for s in log.sheets] == [last_sheet[s.step] for s in log.sheets]
    last_table = {e.step: e.tensor_proto.string_val[0].decode() for e in raw(log, "xai/predictions/text_summary")}
    assert log.predictions == {s.key: parse_markdown_table(last_table[s.step]) for s in log.sheets}
    assert len(raw(log, "xai/sheet")) > len(history)  # the abandoned run's evaluations were logged
    measured = [(float(h.epoch), h.scalars.get(DRIFT, 0.0)) for h in history]  # 0.0: before the first measurement
    assert log.scalars[DRIFT] == [(e, pytest.approx(v, rel=1e-6)) for e, v in measured]
    seconds = [(float(h.epoch), h.scalars["xai/seconds"]) for h in history]
    assert log.scalars["xai/summary/seconds"] == [(e, pytest.approx(v, rel=1e-6)) for e, v in seconds]
    watched = [
        (float(h.epoch), h.scalars["xai/gradcam/alert/score"])
        for h in history
        if "xai/gradcam/alert/score" in h.scalars
    ]
    assert log.scalars["xai/summary/gradcam/watched"] == [(e, pytest.approx(v, rel=1e-6)) for e, v in watched]
    for key, points in log.scalars.items():  # every series (the summary runs' too): one point per evaluated epoch
        assert [x for x, _ in points] == sorted({x for x, _ in points}) and all(x == int(x) for x, _ in points), key


def test_a_fit_resumed_into_its_version_replaces_the_evaluations_it_redoes(tmp_path: Path) -> None:
    """4 epochs, then resumed from epoch 1's checkpoint into the same version up to 5 epochs: epochs 0-1 of the first
    fit (epoch 1's evaluation at the checkpoint's own step 8 stays), 2-4 of the resumed one; a continuation from the
    last checkpoint into a new version directory shows its own evaluations, and the user's scalars are untouched."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    fit(tmp_path, 0, version=0, epochs=4)
    resumed, _ = fit(tmp_path, 1, version=0, epochs=5, ckpt=tmp_path / "ckpt0" / "epoch=1.ckpt")
    fit(tmp_path, 2, version=1, epochs=7, ckpt=tmp_path / "ckpt1" / "epoch=4.ckpt")
    first, second = read_logdir(str(tmp_path / "logs"))
    assert_surviving(first, resumed)
    assert [(s.epoch, s.step) for s in first.sheets] == [(e, 4 * (e + 1)) for e in range(5)]
    assert first.restarts == [(2, 8)]
    assert [(s.epoch, s.step, s.repeat) for s in second.sheets] == [(5, 24, 0), (6, 28, 0)] and not second.restarts
    assert [e for e, _ in second.scalars["xai/summary/seconds"]] == [5.0, 6.0]
    page = render_report([first, second])
    assert "5 evaluation(s), epochs 0–4" in page and "2 evaluation(s), epochs 5–6" in page
    assert page.count("resumed from a checkpoint at step 8 (epoch 2):") == 1 and page.count("resumed from") == 1
    assert all(page.count(f"<th>epoch {e}</th>") == PROBES for e in range(7))  # one column per evaluation
    assert "<th>epoch 2, step" not in page
    # the user's own data and TensorBoard's view of it: every event stays, no purge marker is written
    assert [e.step for e in raw(first, "val_loss")] == [3, 7, 11, 15, 11, 15, 19]
    events = [e for f in first.path.glob("events.out.tfevents.*") for e in EventFileLoader(str(f)).Load()]
    assert not any(e.HasField("session_log") for e in events)
    marks = [v for e in events for v in e.summary.value if v.tag == "xai/fit_start"]
    assert [m.metadata.plugin_data.plugin_name for m in marks] == ["lightning_xai"]  # no TensorBoard dashboard's


def test_an_interrupted_fit_resumed_from_an_earlier_checkpoint_keeps_only_the_surviving_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C after epoch 3's evaluation, resumed from epoch 1's checkpoint; interrupted again after its epoch 3,
    resumed from its epoch 2 checkpoint up to 5 epochs: epochs 0-1 of the first fit, 2 of the second, 3-4 of the
    third, each once (was: 9 evaluations)."""
    fit(tmp_path, 0, version=0, epochs=6, stop=3)
    fit(tmp_path, 1, version=0, epochs=6, ckpt=tmp_path / "ckpt0" / "epoch=1.ckpt", stop=3)
    last, _ = fit(tmp_path, 2, version=0, epochs=5, ckpt=tmp_path / "ckpt1" / "epoch=2.ckpt")
    (log,) = read_logdir(str(tmp_path / "logs"))
    assert_surviving(log, last)
    assert len(raw(log, "xai/sheet")) == 4 + 2 + 2 and log.restarts == [(2, 8), (3, 12)]
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "logs"), "--out", str(out)]) == 0
    assert "1 run(s), 5 evaluation(s)" in capsys.readouterr().out
    page = out.read_text()
    assert all(page.count(f"<th>epoch {e}</th>") == PROBES for e in range(5)) and "<th>epoch 2, step" not in page
    assert "resumed from a checkpoint at step 8 (epoch 2) and at step 12 (epoch 3)" in page


def test_validate_and_test_after_a_resumed_fit_are_kept(tmp_path: Path) -> None:
    """Evaluations logged at the same step after the resumed fit (two ``validate``, a ``test``) are the run's: each
    kept as its own evaluation (step, repeat), the fit's last one first."""
    fit(tmp_path, 0, version=0, epochs=3)
    resumed, trainer = fit(tmp_path, 1, version=0, epochs=3, ckpt=tmp_path / "ckpt0" / "epoch=0.ckpt")
    _, val = loaders()
    trainer.validate(trainer.lightning_module, val, verbose=False)
    trainer.validate(trainer.lightning_module, val, verbose=False)
    trainer.test(trainer.lightning_module, val, verbose=False)
    (log,) = read_logdir(str(tmp_path / "logs"))
    history = resumed.history
    assert len(history) == 6 and [h.global_step for h in history] == [4, 8, 12, 12, 12, 12]
    assert [(s.step, s.repeat) for s in log.sheets] == [(4, 0), (8, 0), (12, 0), (12, 1), (12, 2), (12, 3)]
    assert sorted(log.predictions) == [s.key for s in log.sheets]
    assert log.evaluations == [0, 1, 2, 3, 3, 3]  # after the fit: trainer.current_epoch is max_epochs
    seconds = [v for _, v in log.scalars["xai/summary/seconds"]]
    assert seconds == [pytest.approx(h.scalars["xai/seconds"], rel=1e-6) for h in history]
    assert len(log.scalars[DRIFT]) == 6
    page = render_report([log])
    assert len(re.findall(r"<th>epoch \d+, step 12 \(#\d\)</th>", page)) == 3 * PROBES


def test_a_fit_resumed_mid_epoch_keeps_the_checkpoints_own_evaluation(tmp_path: Path) -> None:
    """``val_check_interval=0.5``: evaluations at steps 2, 4, 6, 8; resumed from the checkpoint at step 2 (mid epoch
    0): step 2's evaluation stays, the epoch's second is the resumed fit's, and on the curves epoch 0 holds two
    points (0 and 0.5), not three (the summary series, logged against the epoch, included)."""
    fit(tmp_path, 0, version=0, epochs=2, val_check_interval=0.5)
    ckpt = tmp_path / "ckpt0" / "epoch=0-step=2.ckpt"
    resumed, _ = fit(tmp_path, 1, version=0, epochs=2, ckpt=ckpt, val_check_interval=0.5)
    (log,) = read_logdir(str(tmp_path / "logs"))
    history = resumed.history
    assert [(s.epoch, s.step, s.repeat) for s in log.sheets] == [(0, 2, 0), (0, 4, 0), (1, 6, 0), (1, 8, 0)]
    assert [(h.epoch, h.global_step) for h in history] == [(s.epoch, s.step) for s in log.sheets]
    assert log.restarts == [(0, 2)]
    positions = [0.0, 0.5, 1.0, 1.5]
    seconds = [(x, h.scalars["xai/seconds"]) for x, h in zip(positions, history, strict=True)]
    assert log.scalars["xai/summary/seconds"] == [(x, pytest.approx(v, rel=1e-6)) for x, v in seconds]
    drift = [(x, h.scalars.get(DRIFT, 0.0)) for x, h in zip(positions, history, strict=True)]
    assert log.scalars[DRIFT] == [(x, pytest.approx(v, rel=1e-6)) for x, v in drift]
    last_table = {e.step: e.tensor_proto.string_val[0].decode() for e in raw(log, "xai/predictions/text_summary")}
    assert log.predictions == {s.key: parse_markdown_table(last_table[s.step]) for s in log.sheets}
    heads = re.findall(r"<th>(epoch [^<]*)</th>", render_report([log]))[:4]
    assert heads == ["epoch 0, step 2", "epoch 0, step 4", "epoch 1, step 6", "epoch 1, step 8"]
