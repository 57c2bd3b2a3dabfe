"""The passes' torch thread count on the CPU (lightning_xai/explain/threads.py): quiet cores keep the user's count,
contended ones try one thread and keep the faster, the user's count is always restored, and a fit with two threads
stays bit-identical to one without the monitor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs

import lightning_xai.explain.threads as threads_module
from lightning_xai import AttributionMonitor, GradCam
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.run import explain_probes
from lightning_xai.explain.threads import ThreadChoice, torch_threads


@pytest.fixture
def two_threads() -> Iterator[None]:
    with torch_threads(2):
        yield


class CountingGradCam(GradCam):
    """Grad-CAM that records torch's thread count while it explains."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def explain(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(torch.get_num_threads())
        return super().explain(*args, **kwargs)


def run(choice: ThreadChoice, speed: dict[int, float], utilisation: float, evaluations: int) -> list[int]:
    """``evaluations`` rounds of choosing and recording (one second each); the thread counts used."""
    used = []
    for _ in range(evaluations):
        count = choice.best("cpu")
        used.append(count or 2)
        choice.record(count, samples=speed[count or 2], seconds=1.0, cpu_seconds=utilisation * (count or 2))
    return used


def test_quiet_cores_keep_the_user_count_and_never_try_one_thread(two_threads: None) -> None:
    choice = ThreadChoice()
    assert run(choice, {2: 100.0, 1: 60.0}, utilisation=0.98, evaluations=12) == [2] * 12
    assert choice.rates == {2: 100.0} and choice.best("cuda") is None


def test_busy_cores_try_one_thread_keep_the_faster_and_retry_the_other(two_threads: None) -> None:
    choice, speed = ThreadChoice(), {2: 100.0, 1: 180.0}  # samples/s: on these busy cores one thread is faster
    used = run(choice, speed, utilisation=0.5, evaluations=14)
    # the user's count first, one try of one thread, then one thread, the user's count retried every RETRY_EVERY
    assert used == [2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1] and threads_module.RETRY_EVERY == 5
    speed[2] = 300.0  # the neighbours are gone: at the next retry the user's count wins and stays
    assert run(choice, speed, utilisation=0.98, evaluations=8)[-3:] == [2, 2, 2]
    choice = ThreadChoice()  # busy, but one thread is slower there: one try, then a retry only every RETRY_EVERY
    assert run(choice, {2: 100.0, 1: 60.0}, utilisation=0.6, evaluations=8) == [2, 1, 2, 2, 2, 2, 2, 1]
    with torch_threads(1):  # the user runs one thread: nothing to choose
        assert choice.best("cpu") is None


def test_explain_probes_runs_the_methods_with_the_chosen_count_and_records_it(two_threads: None) -> None:
    model, cam = TinyCNN(), CountingGradCam()
    images, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    with training_state_guard(model):
        cam.setup(model, model, images[:1])
    choice = ThreadChoice()
    choice.rates, choice.age = {2: 10.0, 1: 1e9}, {2: 0, 1: 0}  # one thread was far faster ...
    choice.methods = ("gradcam",)  # ... for the same method (rates of another set are forgotten)
    explain_probes(model, images, labels, [cam], threads=choice)
    assert cam.seen == [1] and torch.get_num_threads() == 2 and choice.age == {2: 1, 1: 0} and not choice.busy
    assert choice.rates[1] < 1e9  # the measured rate replaced the old one
    choice.rates = {2: 1e12, 1: 1.0}  # the user's count was far faster
    explain_probes(model, images, labels, [cam], threads=choice)
    assert cam.seen == [1, 2] and torch.get_num_threads() == 2 and choice.age == {2: 0, 1: 1}
    assert 0 < choice.rates[2] < 1e12  # measured with the user's count: its CPU share decides ``busy``


def test_a_fit_with_two_threads_is_bit_identical_with_and_without_the_monitor(tmp_path: Any, two_threads: None) -> None:
    def fit(callbacks: list[Any], path: str) -> TinyCNN:
        L.seed_everything(0, verbose=False)
        model = TinyCNN()
        train, val = loaders()
        L.Trainer(**trainer_kwargs(tmp_path / path, callbacks=callbacks, max_epochs=3)).fit(model, train, val)
        return model

    plain = fit([], "a")
    cam = CountingGradCam()
    monitor = AttributionMonitor(num_probes=4, methods=(cam,))
    choice = monitor.threads  # as if one thread had been far faster on busy cores: the passes switch mid-training
    choice.rates, choice.age, choice.methods = {2: 1e-3, 1: 1e9}, {2: 0, 1: 0}, ("gradcam",)
    watched = fit([monitor], "b")
    assert monitor.evaluations == 3 and torch.get_num_threads() == 2 and cam.seen[-3:] == [1, 1, 1]
    assert set(monitor.threads.rates) <= {1, 2} and monitor.threads.rates  # the methods' rate was recorded
    for (name, p), (_, q) in zip(plain.state_dict().items(), watched.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
