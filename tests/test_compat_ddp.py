"""DDP with 2 CPU processes (gloo): ``ddp_spawn`` in-process, ``ddp`` through ``tests/ddp_run.py`` in a subprocess.

Every rank explains its share of the probes; rank 0 gathers the maps, measures and decides; the outcome is
broadcast. Checked: no hang (subprocess timeout, a watchdog for the
in-process run, a 90 s collective timeout), one TensorBoard writer, no duplicate alert texts, identical drift
values / alerts / decisions on every rank, ``on_drift="stop"`` and an EarlyStopping on a drift key stop every rank
at the same epoch, and a failure on rank 0 stops every rank with its message instead of a hang.
"""

from __future__ import annotations

import faulthandler
import glob
import json
import os
import signal
import subprocess
import sys
from typing import Any

import ddp_run
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "ddp_run.py")
TIMEOUT = 240  # seconds for a whole 2-process run; a healthy one takes ~10-25 s here

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available"),
]


def read_ranks(out: str) -> dict[int, dict[str, Any]]:
    ranks = {}
    for path in sorted(glob.glob(os.path.join(out, "rank*.json"))):
        with open(path) as f:
            record = json.load(f)
        ranks[record["rank"]] = record
    return ranks


def run_subprocess(out: str, scenario: str) -> tuple[int, str, dict[int, dict[str, Any]]]:
    """``strategy="ddp"``: Lightning re-executes ``sys.argv`` for rank 1, so the script runs in its own session."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    command = [sys.executable, SCRIPT, "--out", out, "--strategy", "ddp", "--scenario", scenario]
    proc = subprocess.Popen(
        command,
        cwd=os.path.dirname(HERE),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # rank 0 and the rank it launched
        output, _ = proc.communicate()
        pytest.fail(f"DDP run hung for {TIMEOUT}s:\n{output[-4000:]}")
    return proc.returncode, output, read_ranks(out)


LAST_SPAWNED: dict[str, Any] = {}


def run_spawn(out: str, scenario: str) -> dict[int, dict[str, Any]]:
    """``strategy="ddp_spawn"`` in this process (the monitor, model and callbacks are pickled to the workers)."""
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)  # a hang kills the test run with a traceback
    try:
        LAST_SPAWNED["monitor"] = ddp_run.run(
            ddp_run.parse(["--out", out, "--strategy", "ddp_spawn", "--scenario", scenario])
        )
    finally:
        faulthandler.cancel_dump_traceback_later()
    return read_ranks(out)


def assert_ranks_agree(ranks: dict[int, dict[str, Any]]) -> None:
    assert sorted(ranks) == [0, 1]
    zero, one = ranks[0], ranks[1]
    assert zero["world_size"] == one["world_size"] == 2
    assert zero["exception"] is None and one["exception"] is None
    for key in (
        "history",
        "alerts",
        "validations",
        "callback_metric_keys",
        "current_epoch",
        "global_step",
        "should_stop",
        "evaluations",
        "early_stopping",
    ):
        assert zero[key] == one[key], key  # exact: floats went through the broadcast, not recomputed
    # only rank 0 computed maps; rank 1 received the outcome
    assert zero["computed_here"] == ["gradcam", "integrated_gradients"] and one["computed_here"] == []
    assert all(not h["errors"] for h in zero["history"])
    # what pl_module.log gave Lightning is the broadcast value on every rank
    last = zero["history"][-1]["scalars"]
    for key, value in zero["validations"][-1]["metrics"].items():
        assert value == pytest.approx(last[key], rel=1e-6, abs=1e-7), key


def assert_one_writer(out: str, evaluations: int, alert_evaluations: int) -> None:
    files = glob.glob(os.path.join(out, "logs", "**", "events.out.tfevents.*"), recursive=True)
    with_images = []
    for path in files:
        acc = EventAccumulator(path, size_guidance={"images": 0, "tensors": 0})
        acc.Reload()
        if acc.Tags()["images"]:
            with_images.append(acc)
    assert len(with_images) == 1, files
    acc = with_images[0]
    assert len(acc.Images("xai/gradcam/overlay")) == evaluations
    assert len(acc.Images("xai/probes")) == 1
    alerts = acc.Tensors("xai/alerts/text_summary") if "xai/alerts/text_summary" in acc.Tags()["tensors"] else []
    assert len(alerts) == alert_evaluations
    if alerts:
        text = alerts[0].tensor_proto.string_val[0].decode()
        assert text.count("**ALERT**") == 2  # one per method, once


def test_ddp_spawn_stop_action_stops_every_rank_together(tmp_path: Any) -> None:
    out = str(tmp_path)
    ranks = run_spawn(out, "stop")
    # the main process sees rank 0's results (issue 20: they were empty after ddp_spawn)
    main = LAST_SPAWNED["monitor"]
    assert [e.epoch for e in main.history] == [0, 1, 2] and main.evaluations == 3
    assert [a.message for a in main.alerts] == ranks[0]["alerts"]
    assert_ranks_agree(ranks)
    zero = ranks[0]
    # reference at epoch 0, armed from epoch 1, patience 2 -> fires at epoch 2 -> every rank stops after it
    assert [h["epoch"] for h in zero["history"]] == [0, 1, 2]
    assert zero["should_stop"] is True and zero["current_epoch"] == 3
    assert len(zero["alerts"]) == 2 and all("epoch 2" in a for a in zero["alerts"])
    # a (passive) EarlyStopping on a drift key has a finite, identical score on every rank
    assert zero["early_stopping"]["best_score"] == 0.0  # the reference epoch logs 0 drift
    assert_one_writer(out, evaluations=3, alert_evaluations=1)


def test_ddp_early_stopping_on_a_drift_key_stops_every_rank(tmp_path: Any) -> None:
    out = str(tmp_path)
    returncode, output, ranks = run_subprocess(out, "earlystop")
    assert returncode == 0, output[-4000:]
    assert_ranks_agree(ranks)
    zero = ranks[0]
    assert zero["early_stopping"]["stopped_epoch"] == 2 and zero["current_epoch"] == 3
    assert [h["epoch"] for h in zero["history"]] == [0, 1, 2]
    assert len(zero["alerts"]) == 2 and all("epoch 1" in a for a in zero["alerts"])  # warned, not stopped
    assert ddp_run.DRIFT_KEY in zero["callback_metric_keys"]
    assert_one_writer(out, evaluations=3, alert_evaluations=1)


def test_ddp_failure_on_rank_zero_stops_every_rank_without_hanging(tmp_path: Any) -> None:
    out = str(tmp_path)
    returncode, output, ranks = run_subprocess(out, "fail")
    assert returncode != 0
    assert sorted(ranks) == [0, 1], output[-4000:]
    assert ranks[0]["exception"] == "RuntimeError: injected failure on rank 0"
    assert "failed on rank 0" in ranks[1]["exception"] and "injected failure" in ranks[1]["exception"]
    assert ranks[0]["current_epoch"] == ranks[1]["current_epoch"] == 1


def test_ddp_a_method_failing_on_another_rank_is_said_once_on_rank_zero(tmp_path: Any) -> None:
    """Warnings are silent on ranks other than 0: a method that failed only on rank 1 was recorded in the history's
    errors but never said, so the console of a DDP run showed nothing. Rank 0 now says it, once, naming the rank."""
    out = str(tmp_path)
    returncode, output, ranks = run_subprocess(out, "rankfail")
    assert returncode == 0, output[-4000:]
    zero, one = ranks[0], ranks[1]
    said = [w for w in zero["warnings"] if "injected failure on rank 1" in w]
    assert len(said) == 1 and said[0].startswith("AttributionMonitor (on rank 1): integrated_gradients skipped")
    assert one["warnings"] == []  # rank 1 shows nothing itself (Lightning's rank-zero convention)
    errors = zero["history"][-1]["errors"]
    assert any("injected failure on rank 1" in e for e in errors) and len(zero["history"]) == 6
    assert any("failed on another rank" in e for e in errors)


def test_ddp_ranks_explain_their_share_and_the_maps_equal_one_process(tmp_path: Any) -> None:
    """Sharded explanation: 2 gloo processes each explain their share of 5 probes (3 and 2); rank 0 gathers the
    maps through the strategy's broadcast. They equal the maps one process computes for the same model."""
    sharded, single = tmp_path / "ddp", tmp_path / "one"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    command = [sys.executable, SCRIPT, "--out", str(sharded), "--strategy", "ddp", "--scenario", "validate"]
    proc = subprocess.run(
        [*command, "--probes", "5"], cwd=os.path.dirname(HERE), env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ddp_run.run(ddp_run.parse(["--out", str(single), "--devices", "1", "--scenario", "validate", "--probes", "5"]))
    batches = [json.loads((sharded / f"rank{r}_ig_batch.json").read_text()) for r in (0, 1)]
    assert batches == [3 * 4, 2 * 4]  # each rank ran IG (4 steps) on its own share: 3 and 2 probes
    assert json.loads((single / "rank0_ig_batch.json").read_text()) == 5 * 4
    # rank 0's values on every rank, returned by validate, without a reduction across ranks (no all_reduce: one at
    # the end of a ddp_spawn test could abort the worker as it exited) and without Lightning's advice to reduce
    seen = [json.loads((sharded / f"rank{r}_validate.json").read_text()) for r in (0, 1)]
    assert seen[0]["returned"] == seen[1]["returned"] and ddp_run.DRIFT_KEY in seen[0]["returned"]
    assert [s["all_reduce"] for s in seen] == [0, 0] and seen[0]["sync_advice"] == []
    got = torch.load(sharded / "maps.pt", weights_only=True)["maps"]
    want = torch.load(single / "maps.pt", weights_only=True)["maps"]
    assert sorted(got) == sorted(want) == ["gradcam", "integrated_gradients"]
    for name in want:
        assert got[name].shape[0] == 5
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_ddp_spawn_with_a_lambda_is_refused_naming_the_argument_before_training(tmp_path: Any) -> None:
    """multiprocessing's own error would say "Can't pickle local object"; the monitor names its argument and the fix,
    in the main process, before any worker starts. ``copy.deepcopy`` of the same monitor still works."""
    import copy
    import pickle

    import lightning.pytorch as L
    from conftest import TinyCNN, loaders, trainer_kwargs

    from lightning_xai import AttributionMonitor

    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), forward_fn=lambda module, x: module(x))
    assert copy.deepcopy(monitor).forward_fn is monitor.forward_fn  # not pickled: left alone
    model = TinyCNN()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor], strategy="ddp_spawn", devices=2))
    train, val = loaders()
    with pytest.raises(
        pickle.PicklingError, match=r"`forward_fn=<function .*<lambda>.*` cannot be sent .*`ddp_spawn`.*module-level"
    ):
        trainer.fit(model, train, val)
    assert model.global_step == 0
    # deeper: an object of a class defined here as `on_drift`, a lambda inside a method's own Grad-CAM
    from lightning_xai import DriftPolicy
    from lightning_xai.explain.views import Activations

    class Notify:
        def __call__(self, alert: Any) -> None:
            pass

    for argument, kwargs in (
        ("drift", {"drift": DriftPolicy(on_drift=Notify())}),
        ("methods", {"methods": (Activations(reshape=lambda t: t),)}),
    ):
        monitor = AttributionMonitor(num_probes=4, **kwargs)
        trainer = L.Trainer(
            **trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor], strategy="ddp_spawn", devices=2)
        )
        with pytest.raises(pickle.PicklingError, match=rf"`{argument}=.*` cannot be sent .*`ddp_spawn`"):
            trainer.fit(TinyCNN(), train, val)


class _Alerts:
    """A module-level class whose bound method is the ``on_drift`` callable (picklable by reference)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def take(self, alert: Any) -> None:
        self.seen.append(alert)


def test_ddp_spawn_with_tensor_settings_and_a_bound_method_runs(tmp_path: Any) -> None:
    """The spawn check pickles functions only (by name): a tensor in ``Display(probe_masks=)`` and a bound method as
    ``on_drift`` reach the workers as Lightning sends them (a check that pickled them while multiprocessing was
    spawning broke the start: "bad value(s) in fds_to_keep"). A ``test`` after the fit reaches the caller's history
    too (only a fit's results came back)."""
    import lightning.pytorch as L
    from conftest import TinyCNN, loaders, trainer_kwargs

    from lightning_xai import AttributionMonitor, Display, DriftPolicy

    masks = torch.zeros(4, 12, 12, dtype=torch.bool)
    masks[:, :4, :4] = True
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam",),
        drift=DriftPolicy(detector=None, on_drift=_Alerts().take),
        display=Display(probe_masks=masks),
    )
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor], strategy="ddp_spawn", devices=2))
    model = TinyCNN()
    trainer.fit(model, *loaders())
    assert len(monitor.history) == 1 and "xai/localization/gradcam/relevance_mass" in monitor.history[0].scalars
    trainer.test(model, loaders()[1])
    assert len(monitor.history) == 2 and "xai/gradcam/seconds" in monitor.history[1].scalars
