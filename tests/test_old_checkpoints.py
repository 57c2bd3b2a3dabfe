"""Checkpoints written before a state field existed resume as today's do (docs/migration.md)."""

from __future__ import annotations

import io
from typing import Any

import torch

from lightning_xai.drift.detector import ShiftDetector


def _maps() -> torch.Tensor:
    """8 evaluations of 8 probes: relevance on the object with jitter; at evaluation 5 three maps have no relevance
    (Grad-CAM's ReLU cut every cell), at evaluation 6 they have it again."""
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(8, 8, 16, 16, generator=g) * 0.3
    maps[:, :, 5:11, 5:11] += 1.0
    maps[5, :3] = 0.0
    return maps


def _scores(split: int | None = None, old_format: bool = False) -> tuple[list[float], dict[str, Any]]:
    """The detector's scores over :func:`_maps`, saved and loaded (``weights_only``) after evaluation ``split``;
    ``old_format``: the state as a checkpoint from before ``previous_blank`` was saved holds it."""
    detector, scores = ShiftDetector(), []
    for i, maps in enumerate(_maps()):
        found = detector.update("gradcam", maps, (16, 16), armed=True)
        scores.append(float("nan") if found is None else found.score)
        if i == split:
            state = detector.state_dict()
            if old_format:
                for method in state.values():
                    del method["previous_blank"]
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            detector = ShiftDetector()
            detector.load_state_dict(torch.load(buffer, weights_only=True))
    return scores[1:], detector.state_dict()


def test_a_detector_state_from_before_previous_blank_resumes_as_an_uninterrupted_run() -> None:
    # the saved pooled maps say which previous maps had no relevance (uniform): a probe whose map comes back after
    # the resume did not move, as in a run that was not interrupted
    expected, state = _scores()
    for old_format in (False, True):
        scores, resumed = _scores(split=5, old_format=old_format)
        assert scores == expected
        assert resumed["gradcam"]["scores"] == state["gradcam"]["scores"]


def test_an_old_state_without_blank_maps_marks_none() -> None:
    detector = ShiftDetector()
    maps = _maps()
    detector.update("gradcam", maps[0], (16, 16), armed=True)
    state = detector.state_dict()
    del state["gradcam"]["previous_blank"]
    detector.load_state_dict(state)
    assert not detector.state_dict()["gradcam"]["previous_blank"].any()
