"""What the relevance is made of: Integrated Gradients' ``colour_share`` on hand-built models, and the alert when
the probes' relevance moves from brightness into colour."""

from __future__ import annotations

import torch

from lightning_xai.drift.alerts import AlertTracker
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.drift.measure import measure
from lightning_xai.drift.tracker import DriftTracker
from lightning_xai.explain import Explanation
from lightning_xai.explain.integrated_gradients import IntegratedGradients
from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.functional.shift import colour_share


def _linear(weights: tuple[float, float, float]) -> torch.nn.Module:
    """Class 0's logit = sum over pixels of the channels weighted by ``weights``; class 1's = 0."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = torch.tensor(weights).repeat_interleave(16)
    return model


def test_colour_share_is_the_energy_between_channels() -> None:
    a = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    expected = [
        sum(float((a[n, :, i, j] - a[n, :, i, j].mean()).square().sum()) for i in range(4) for j in range(4))
        / float(a[n].square().sum())
        for n in range(5)
    ]
    assert torch.allclose(colour_share(a), torch.tensor(expected, dtype=torch.float64))
    assert colour_share(torch.zeros(1, 3, 2, 2)).item() == 0.0


def test_integrated_gradients_tells_a_brightness_reader_from_a_colour_reader() -> None:
    x, target = torch.rand(4, 3, 4, 4) + 0.1, torch.zeros(4, dtype=torch.long)
    x[:, 1:] = x[:, :1]  # grey probes: every channel alike
    ig = IntegratedGradients(n_steps=8)
    brightness = ig.explain(_linear((1.0, 1.0, 1.0)), x, target).diagnostics["colour_share"]
    colour = ig.explain(_linear((1.0, -1.0, 0.0)), x, target).diagnostics["colour_share"]
    assert torch.allclose(brightness, torch.zeros(4), atol=1e-6)
    assert torch.allclose(colour, torch.full((4,), 1.0), atol=1e-6)  # red minus green: all of it between channels
    grey = ig.explain(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)), x[:, :1], target)
    assert "colour_share" not in grey.diagnostics  # one channel: nothing to tell


def _evaluation(share: torch.Tensor, maps: torch.Tensor) -> ProbeExplanations:
    probes = share.numel()
    explanation = Explanation(maps, maps.abs(), {"colour_share": share})
    targets = torch.arange(probes) % 10
    return ProbeExplanations(
        torch.zeros(probes, 3, 16, 16), targets, torch.ones(probes), targets, {"integrated_gradients": explanation}
    )


def test_relevance_moving_into_colour_alerts_and_says_so() -> None:
    g = torch.Generator().manual_seed(0)
    detector, tracker, drift = ShiftDetector(), AlertTracker([]), DriftTracker(warmup_epochs=2)
    alerts = []
    for epoch in range(10):
        maps = torch.rand(10, 8, 8, generator=g) * 0.3 + 1.0  # where: the same jitter every epoch
        share = 0.1 + 0.02 * torch.rand(10, generator=g)  # what: brightness, until ...
        if epoch >= 6:
            share[:6] += 0.3  # ... six classes start reading colour
        record = measure(_evaluation(share, maps), epoch, epoch, drift, detector, tracker)
        alerts += record.alerts
        assert "xai/integrated_gradients/alert/colour/score" in record.scalars or epoch == 0
    assert [(a.epoch, a.metric) for a in alerts] == [(7, "colour_share")]
    assert set(alerts[0].probe_indices) == set(range(6))
    assert "6/10 probes (classes 0-5) moved relevance into colour" in alerts[0].message
    assert "rose from 11% to 41%" in alerts[0].message
    assert len(alerts[0].message) <= 200


def test_only_probes_with_colour_are_watched_for_it() -> None:
    from lightning_xai.visualize.display import has_colour

    grey = torch.rand(4, 1, 8, 8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalised = (grey.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    coloured = grey.expand(-1, 3, -1, -1).clone()
    coloured[2, 0, 3, 3] = 0.0 if coloured[2, 1, 3, 3] > 0.5 else 1.0
    assert not has_colour(grey) and not has_colour(grey.expand(-1, 3, -1, -1))
    assert not has_colour(normalised, (mean, std)) and not has_colour(normalised)  # per-channel copies of grey
    assert has_colour(coloured)
    share = torch.full((10,), 0.1)
    record = measure(_evaluation(share, torch.ones(10, 8, 8)), 0, 0, DriftTracker(), ShiftDetector(), AlertTracker([]))
    assert "xai/integrated_gradients/colour_share" in record.scalars
    detector = ShiftDetector()
    record = measure(
        _evaluation(share, torch.ones(10, 8, 8)), 0, 0, DriftTracker(), detector, AlertTracker([]), colour=False
    )
    assert "xai/integrated_gradients/colour_share" not in record.scalars
    assert "integrated_gradients/colour" not in detector._states


def test_channels_that_do_not_display_count_as_colour_when_they_differ() -> None:
    from lightning_xai.visualize.display import has_colour

    four = torch.rand(2, 1, 4, 4).expand(-1, 4, -1, -1).clone()
    assert not has_colour(four)
    four[0, 3] += 0.5
    assert has_colour(four)


def test_relevance_moving_out_of_colour_does_not_alert_as_moving_into_it() -> None:
    g = torch.Generator().manual_seed(1)
    detector, tracker, drift = ShiftDetector(), AlertTracker([]), DriftTracker(warmup_epochs=2)
    alerts = []
    for epoch in range(10):
        maps = torch.rand(10, 8, 8, generator=g) * 0.3 + 1.0
        share = 0.9 + 0.02 * torch.rand(10, generator=g)  # mostly colour, until ...
        if epoch >= 6:
            share[:6] -= 0.6  # ... six probes move to brightness (then the quiet part)
        alerts += measure(_evaluation(share, maps), epoch, epoch, drift, detector, tracker).alerts
    assert detector._states["integrated_gradients/colour"].cooldown_left > 0  # the two-part test did fire ...
    assert alerts == []  # ... but into brightness, so no colour alert


def test_an_alert_silences_the_other_test_of_the_method() -> None:
    detector = ShiftDetector()
    detector.update("m/colour", torch.rand(10, 1, 2), (1, 2), armed=True)
    detector.silence("m/colour", 3)
    assert detector._states["m/colour"].cooldown_left == 3
    detector.silence("unknown", 3)  # nothing to silence yet


def test_a_colour_alert_never_says_a_share_rose_to_itself() -> None:
    from lightning_xai.drift.detection import Detection
    from lightning_xai.drift.evidence import AlertEvidence

    def parts(share: float) -> torch.Tensor:  # (1, 2, 2, 2): brightness 1, colour per degree of freedom (3 channels)
        return torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), share / (2 * (1 - share)))], dim=-1)

    evidence = AlertEvidence((0,), parts(0.5912), parts(0.5949), 1)
    d = Detection(0.5, 0.1, 0.01, fired=True, probe_indices=(0,), num_probes=1, evidence=evidence)
    (alert,) = AlertTracker(()).check_colour("integrated_gradients", 3, 30, d)
    assert "rose from 59.1% to 59.5%" in alert.message
    d = Detection(
        0.5,
        0.1,
        0.01,
        fired=True,
        probe_indices=(0,),
        num_probes=1,
        evidence=AlertEvidence((0,), parts(0.11), parts(0.41), 1),
    )
    assert "rose from 11% to 41%" in AlertTracker(()).check_colour("integrated_gradients", 3, 30, d)[0].message
    same = AlertEvidence((0,), parts(0.59), parts(0.5900004), 1)  # equal at every precision shown: no figures
    d = Detection(0.5, 0.1, 0.01, fired=True, probe_indices=(0,), num_probes=1, evidence=same)
    message = AlertTracker(()).check_colour("integrated_gradients", 3, 30, d)[0].message
    assert "rose from" not in message and message.endswith("differences between channels.")
