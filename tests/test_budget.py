"""``max_overhead`` (fewer IG steps, then skipped evaluations) and the detector's pause when the training setup
changes (a backbone unfrozen, an optimizer's parameter groups changed)."""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs

from lightning_xai import AttributionMonitor, Budget, DriftPolicy, GradCam
from lightning_xai._cost import CostReporter
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.drift.measure import Evaluation
from lightning_xai.explain import IntegratedGradients
from lightning_xai.explain.setup import DryRunReport
from lightning_xai.visualize.writer import BackgroundWriter

with warnings.catch_warnings():  # a budget that never cuts (said as 1e11 %: a share above 1 is warned)
    warnings.simplefilter("ignore")
    _GENEROUS = Budget(max_overhead=1e9)


def test_cut_steps_walks_down_the_ladder_to_the_floor_and_keeps_the_state_key() -> None:
    ig = IntegratedGradients(n_steps=48)
    budget = CostReporter(max_overhead=0.1, explainers=[ig])
    before = ig.config()
    assert budget.cut_steps(0.75) == {"integrated_gradients": 32}  # the largest rung <= 0.75 x 48
    assert budget.cut_steps(0.99) == {"integrated_gradients": 24}  # always at least one rung lower
    assert budget.cut_steps(0.01) == {"integrated_gradients": 8}  # never below the floor
    assert budget.cut_steps(0.75) == {} and budget.step_caps == {"integrated_gradients": 8}
    assert ig.config() == before  # the configured steps (and so the monitor's state_key) do not change
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    out = ig.explain(lin, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]), **budget.limits()["integrated_gradients"])
    assert out.diagnostics["n_steps"].tolist() == [8.0, 8.0, 8.0]
    assert ig.explain(lin, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])).diagnostics["n_steps"][0] == 48  # no cap
    auto = IntegratedGradients(n_steps="auto", max_steps=64, tolerance=1e-12)  # never met: climbs to the top
    rough = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = 3 * torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0])
    assert auto.explain(rough, x, y).diagnostics["n_steps"][0] == 64 and auto.current_steps == 64
    auto_budget = CostReporter(max_overhead=0.1, explainers=[auto])
    assert auto_budget.cut_steps(0.5) == {"integrated_gradients": 32}
    out = auto.explain(rough, x, y, **auto_budget.limits()["integrated_gradients"])
    assert out.diagnostics["n_steps"][0] == 32 and auto.current_steps == 32  # auto mode: the search stays below
    assert max(steps for steps, _ in auto.last_info["tries"]) == 32


def test_the_controller_hands_each_method_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai import _cost

    clock = _Clock()
    monkeypatch.setattr(_cost.time, "perf_counter", clock)
    auto, own = IntegratedGradients(), IntegratedGradients(8, internal_batch_size=32)
    own.name = "ig_own_batch"
    budget = CostReporter(explainers=[auto, own])
    assert budget.limits() == {"integrated_gradients": {}, "ig_own_batch": {}}  # validate/test without a fit
    budget.start(max_batch=16)  # the training batch size
    clock.now = 7.5
    assert budget.allows(lambda key, message: None)
    budget.step_caps["ig_own_batch"] = 6
    assert budget.limits() == {  # an explicit internal_batch_size is left alone
        "integrated_gradients": {"max_batch": 16, "search_seconds": 7.5},
        "ig_own_batch": {"max_steps": 6, "search_seconds": 7.5},
    }
    budget.start(max_batch=None)  # a fit whose training batch size is unknown
    assert "max_batch" not in budget.limits()["integrated_gradients"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_info_line_splits_the_cost_and_says_what_changes_it() -> None:
    assert CostReporter.share(2.0, interval=40.0) == 0.05 and CostReporter.share(2.0, interval=0.0) == 0.0
    gradcam = GradCam()
    assert CostReporter().summary(2.0, 1.5, 0.2, 10.0, [gradcam], {"xai/gradcam/seconds": 1.2}) == (
        "AttributionMonitor: an evaluation takes 2.00 s, 20% of the time since training started (10.0 s): 1.50 s of "
        "explanation passes (gradcam (1.20 s), the shared prediction pass (0.30 s)) and 0.50 s for everything else "
        "(drift, alerts, pictures). Fewer probes, IG steps or evaluations (`every_n_epochs=`) make it cheaper, "
        "`Budget(max_overhead=)` caps it; each evaluation's is `xai/seconds` (logged, and in "
        "`monitor.history[i].scalars` with or without a logger)."
    )  # the parts add up to the passes (logger=False: nothing is logged, the history still has it)


def test_budget_account_is_cumulative(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai import _cost

    clock = _Clock()
    monkeypatch.setattr(_cost.time, "perf_counter", clock)
    warned: list[str] = []
    budget = CostReporter(max_overhead=0.1)
    budget.start()

    class _Monitor:
        explainers: list[Any] = []
        max_seconds_per_epoch = None

        def _warn_once(self, key: str, message: str) -> None:
            warned.append(key)

    monitor = _Monitor()
    clock.now = 12.0  # 10 s of training, then a 2 s evaluation: 20 % > 10 %
    assert budget.allows(monitor._warn_once)  # nothing spent yet: the first evaluation always runs
    budget.after_evaluation(Evaluation(0, 0, explain_seconds=2.0), monitor._warn_once)
    assert (budget.explained, budget.other) == (2.0, 10.0)
    clock.now = 22.0  # 20 s of training so far: 2 + 2 > 0.1 x 20
    assert not budget.allows(monitor._warn_once) and budget.skipped == 1 and warned == ["budget_skip"]
    clock.now = 52.0  # 50 s: 2 + 2 <= 0.1 x 50 -> the next evaluation runs
    assert budget.allows(monitor._warn_once) and budget.skipped == 1
    assert CostReporter().allows(monitor._warn_once)  # no budget: always


def test_a_run_without_trouble_gets_one_info_line_that_splits_the_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai import _cost

    clock, said, warned = _Clock(), [], []
    monkeypatch.setattr(_cost.time, "perf_counter", clock)
    monkeypatch.setattr(_cost, "rank_zero_info", said.append)

    class _Monitor:
        explainers: list[Any] = []
        max_seconds_per_epoch = None

        def _warn_once(self, key: str, message: str) -> None:
            warned.append(message)

    reporter = CostReporter()
    reporter.start()
    for epoch, (start, end) in enumerate([(10.0, 12.0), (22.0, 24.5), (34.0, 36.0)]):  # 2 s of every ~12 s: 17-21 %
        clock.now = start
        assert reporter.allows(_Monitor()._warn_once)
        clock.now = end
        record = reporter.stamped(Evaluation(epoch, 0, explain_seconds=1.5), BackgroundWriter())
        reporter.after_evaluation(record, _Monitor()._warn_once)
    assert warned == [] and len(said) == 1  # nothing wrong: one line, at the first evaluation
    assert "an evaluation takes 2.00 s, 17% of the time since training started (12.0 s)" in said[0]
    assert "1.50 s of explanation passes" in said[0] and "0.50 s for everything else" in said[0]
    assert "`every_n_epochs=`" in said[0] and "`Budget(max_overhead=)`" in said[0]  # what changes it
    clock.now = 40.0
    reporter.allows(_Monitor()._warn_once)
    clock.now = 45.0  # 5 s of 9 s: the monitor takes over a quarter of the run, without a budget
    reporter.after_evaluation(reporter.stamped(Evaluation(3, 0, explain_seconds=4.0)), _Monitor()._warn_once)
    assert len(said) == 1 and len(warned) == 1 and "Set a budget" in warned[0] and "56%" in warned[0]
    clock.now = 46.0
    reporter.allows(_Monitor()._warn_once)
    clock.now = 46.5  # 0.5 s of 1.5 s: a large share of a small run, nothing worth the user's action
    reporter.after_evaluation(reporter.stamped(Evaluation(4, 0, explain_seconds=0.4)), _Monitor()._warn_once)
    assert len(warned) == 1


def test_budget_counts_the_whole_evaluation_the_background_rendering_and_the_dry_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_xai import _cost

    clock = _Clock()
    monkeypatch.setattr(_cost.time, "perf_counter", clock)
    budget, dry_run = CostReporter(max_overhead=0.1), DryRunReport(seconds=1.0)
    budget.start(dry_run)
    assert budget.explained == 1.0  # the setup dry run is the monitor's cost too
    writer = BackgroundWriter()
    writer.busy_seconds = 0.25  # CPU seconds the background thread spent rendering

    class _Monitor:
        explainers: list[Any] = []
        max_seconds_per_epoch = None

        def _warn_once(self, key: str, message: str) -> None:
            pass

    clock.now = 5.0  # the dry run alone is over 10 % of 5 s: the first evaluation runs all the same
    assert budget.allows(_Monitor()._warn_once)
    clock.now = 8.0  # 3 s on the training thread, of which 2 s of explanations
    record = budget.stamped(Evaluation(0, 0, explain_seconds=2.0), writer)
    assert record.cost_seconds == 3.25
    budget.after_evaluation(record, _Monitor()._warn_once)
    assert (budget.explained, budget.other, budget.last_seconds) == (4.25, 8.0 - 3.25, 3.25)
    writer.busy_seconds = 0.5
    clock.now = 20.0
    assert budget.stamped(Evaluation(1, 0, explain_seconds=2.0), writer).cost_seconds == 2.25  # not since allows
    writer.busy_seconds = 0.125  # a new writer (ddp_spawn pickles the monitor): counted from 0
    assert budget.stamped(Evaluation(2, 0, explain_seconds=1.0), writer).cost_seconds == 1.125
    assert budget.allows(_Monitor()._warn_once, broadcast=lambda ok: True)  # an evaluation that then did not run
    clock.now = 30.0  # validate/test after a fit: not timed from the fit's last allows
    assert budget.stamped(Evaluation(3, 0, explain_seconds=1.0), fitting=False).cost_seconds == 1.0
    budget.start(dry_run)
    assert budget.explained == 0.0  # the same dry run is charged once


def test_every_rank_follows_rank_zeros_budget_decision_and_counts_the_same_skips() -> None:
    budget = CostReporter(max_overhead=0.1)
    budget.start()
    budget.explained, budget.last_seconds = 1.0, 1.0  # over any budget on this rank's clock
    warned: list[str] = []
    assert budget.allows(lambda key, message: warned.append(key), broadcast=lambda ok: True)  # rank 0 said run
    assert budget.skipped == 0 and not warned
    budget.explained = 0.0
    budget.other = 1e9  # within the budget on this rank's clock
    assert not budget.allows(lambda key, message: warned.append(key), broadcast=lambda ok: False)  # rank 0: skip
    assert budget.skipped == 1 and warned == ["budget_skip"]


def test_a_history_saved_by_a_newer_version_loads() -> None:
    saved = {**Evaluation(3, 30, explain_seconds=1.0, cost_seconds=1.5).to_dict(), "a_newer_field": [1, 2]}
    loaded = Evaluation.from_dict(saved)
    assert (loaded.epoch, loaded.explain_seconds, loaded.cost_seconds) == (3, 1.0, 1.5)
    old = {k: v for k, v in saved.items() if k not in ("cost_seconds", "a_newer_field")}  # before cost_seconds
    assert Evaluation.from_dict(old).cost_seconds == 0.0


def test_the_monitor_stamps_each_evaluation_with_its_whole_cost(tmp_path: Any) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0),
        budget=_GENEROUS,
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(tmp_path), name="run")
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=3, logger=logger)).fit(TinyCNN(), train, val)
    assert monitor.setup_check.seconds > 0 and monitor.media.writer.busy_seconds > 0
    assert all(h.cost_seconds > h.explain_seconds > 0 for h in monitor.history)
    spent = monitor.setup_check.seconds + sum(h.cost_seconds for h in monitor.history)
    assert monitor.cost.explained == pytest.approx(spent)  # what the budget counted


def test_the_first_evaluation_counts_its_own_pictures(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer holds the pictures until the hook ends; the first evaluation (its info line) still counts them."""
    import time as clock

    from lightning.pytorch.loggers import TensorBoardLogger

    import lightning_xai.visualize.media as media

    encode = media.encode_jpeg

    def slow(*args: Any, **kwargs: Any) -> bytes:
        until = clock.thread_time() + 0.05  # 50 ms of the writer thread's CPU time per picture
        while clock.thread_time() < until:
            pass
        return encode(*args, **kwargs)

    monkeypatch.setattr(media, "encode_jpeg", slow)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",))
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = TensorBoardLogger(str(tmp_path), name="run")
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=1, logger=logger)).fit(TinyCNN(), train, val)
    first = monitor.history[0]
    assert first.cost_seconds - first.explain_seconds >= 0.05 and monitor.cost.last_background >= 0.05


class _Recording(ShiftDetector):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []

    def update(self, method: str, maps: torch.Tensor, input_size: tuple[int, int], armed: bool, **kw: Any) -> Any:
        self.calls.append((method, armed))
        return super().update(method, maps, input_size, armed, **kw)


def test_a_tiny_budget_cuts_ig_steps_then_skips_evaluations(tmp_path: Any) -> None:
    detector = _Recording()
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=32)),
        drift=DriftPolicy(warmup_epochs=0, detector=detector),
        budget=Budget(max_overhead=1e-9),
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    with pytest.warns(UserWarning, match=r"max_overhead=1e-09.*fewer steps") as caught:
        L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=4)).fit(TinyCNN(), train, val)
    assert any("skips evaluations" in str(w.message) for w in caught)
    # epoch 0 over the budget: IG cut to 8 steps; epoch 1 runs with them (to measure the cheaper cost), then skips
    assert [h.epoch for h in monitor.history] == [0, 1]
    assert monitor.history[1].scalars["xai/integrated_gradients/n_steps"] == 8
    assert monitor.cost.skipped == 2
    assert [armed for m, armed in monitor.detector.calls if m == "integrated_gradients"] == [
        True,
        False,
    ]  # cut: no alert
    assert monitor.cost.step_caps == {"integrated_gradients": 8}
    assert not any("of the time between two evaluations" in str(w.message) for w in caught)  # budget set: no nag


def test_a_generous_budget_changes_nothing(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=8)),
        drift=DriftPolicy(warmup_epochs=0),
        budget=_GENEROUS,
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=3)).fit(TinyCNN(), train, val)
    assert [h.epoch for h in monitor.history] == [0, 1, 2]
    assert [h.scalars["xai/skipped"] for h in monitor.history[1:]] == [0.0, 0.0]
    assert all(h.scalars["xai/integrated_gradients/n_steps"] == 8 for h in monitor.history)


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), "5%"])
def test_max_overhead_is_checked(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"`Budget\(max_overhead=\.\.\.\)` must be a number > 0 or None"):
        AttributionMonitor(budget=Budget(max_overhead=bad))


def test_a_max_overhead_above_one_is_said_as_a_share() -> None:
    with pytest.warns(UserWarning, match=r"max_overhead=5\)` lets the monitor cost up to 5 times .*\(500%\).*0\.05"):
        Budget(max_overhead=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Budget(max_overhead=1).max_overhead == 1.0  # as much as the rest of the run: a share, not said


class _Unfreeze(L.Callback):
    """Freezes the feature layers for the first epochs, then trains them (as BackboneFinetuning does)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.features.requires_grad_(False)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            pl_module.features.requires_grad_(True)


def test_the_detector_pauses_for_the_evaluation_after_the_training_setup_changed(tmp_path: Any) -> None:
    detector = _Recording()
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=1, detector=detector)
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[_Unfreeze(3), monitor], max_epochs=5)).fit(TinyCNN(), train, val)
    assert [armed for _, armed in monitor.detector.calls] == [False, True, True, False, True]  # warm-up; epoch 3 paused
    plain = _Recording()
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=1, detector=plain))
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=5)).fit(TinyCNN(), train, val)
    assert [armed for _, armed in monitor.detector.calls] == [False, True, True, True, True]


def test_the_info_line_counts_one_step_in_the_singular() -> None:
    """A tiny budget cuts IG to one step: the line said "with 1 steps" (new-user trial)."""
    ig = IntegratedGradients()
    line = CostReporter().summary(1.0, 0.5, 0.1, 10.0, [ig], {"xai/integrated_gradients/n_steps": 1.0})
    assert "integrated_gradients with 1 step," in line and "1 steps" not in line
    line = CostReporter().summary(1.0, 0.5, 0.1, 10.0, [ig], {"xai/integrated_gradients/n_steps": 16.0})
    assert "integrated_gradients with 16 steps" in line
