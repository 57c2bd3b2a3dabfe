"""The monitor's setup check: one evaluation's whole path, once per fit, before its first training step, at
minimum cost: the explanation stage's dry run (:func:`lightning_xai.explain.setup.dry_run`), then the drift
measurement on copies of the monitor's state and, when the run logs images, the sheet rendered and encoded (not
logged). What does not fit fails here with a ``ValueError`` naming the argument, the value and the fix."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.drift.measure import measure, monitored
from lightning_xai.explain.forward import model_device
from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.explain.setup import DryRunReport, Warn, dry_run
from lightning_xai.explain.threads import one_torch_thread
from lightning_xai.visualize.display import check_display_channels, has_colour, looks_channels_last
from lightning_xai.visualize.media import evaluation_media


def check_monitor(
    monitor: Any, model: nn.Module, renders: bool, before_training: bool = False, warn: Warn | None = None
) -> DryRunReport:
    """The setup check with an :class:`~lightning_xai.AttributionMonitor`'s settings (``renders``: the run logs
    images; ``warn(key, message)``: what the check says)."""
    media, masks = monitor.media, monitor.masks
    shape = tuple(monitor.probes.images.shape)
    check_display_channels(media.denormalize, shape, render=renders, drawn=monitor.probes.drawn)
    if monitor.probes.drawn and looks_channels_last(shape) == "maybe" and warn is not None:  # not refused: said
        warn(
            "channels_last",
            f"AttributionMonitor: the probes {shape} may be channels-last (N, H, W, C), which every method would read "
            f"as {shape[1]} channels of {shape[2]}x{shape[3]}; if so, make the batches (N, C, H, W) where they are "
            "made and give the model channels-last input with `forward_fn=`.",
        )
    settings = (monitor.probes, monitor.explainers, monitor.target, monitor.forward_fn)
    with one_torch_thread(model_device(model)):  # tiny passes: on busy cores two threads wait on each other
        report, done = dry_run(model, *settings, warn=warn, before_training=before_training)
    colour = has_colour(monitor.probes.images, media.denormalize)  # as the monitor measures: grey probes, no colour
    if done.results:  # measure twice (a reference, then a comparison) on copies: the drift keys the comparison logs
        drift, detector, tracker = copy.deepcopy((monitor.drift_tracker, monitor.detector, monitor.alert_tracker))
        first = max(int(drift.warmup_epochs), int(drift.reference_epoch or 0))
        device_masks = None if masks is None else masks[: len(done.inputs)].to(done.inputs.device)
        try:
            for epoch in (first, first + 1):
                found = (done, epoch, 0, drift, detector, tracker, device_masks)
                record = measure(*found, colour=colour, measure_empty=True)  # every key a measurement logs
        except Exception as err:
            raise ValueError(
                f"Measuring drift on the probes' maps failed at setup: {type(err).__name__}: {err}. Check `methods` "
                "(custom explainers' maps) and `Display.probe_masks` (one (H, W) mask per probe)."
            ) from err
        report.drift_keys = tuple(k for k in record.scalars if "/drift/" in k or monitored(k))  # scores too
    if renders:
        _render(done, {e.name: e.display_normalization for e in monitor.explainers}, media)
    return report


def _render(done: ProbeExplanations, normalizations: dict[str, str], media: Any) -> None:
    """Render the first probes' sheet as the monitor (its ``MediaLogger``) draws it and encode it (not logged)."""
    first, denormalize = done.inputs[:1], media.denormalize
    if callable(denormalize):
        try:
            shown = denormalize(first.clone())
        except Exception as err:
            raise ValueError(
                f"`denormalize` raised {type(err).__name__}: {err} on a probe of shape {tuple(first.shape)}."
            ) from err
        if not isinstance(shown, Tensor) or shown.ndim != 4 or shown.shape[0] != 1 or shown.shape[1] not in (1, 3):
            got = tuple(shown.shape) if isinstance(shown, Tensor) else type(shown).__name__
            raise ValueError(
                f"`denormalize` maps a batch of probes {tuple(first.shape)} to {got}; it must return an "
                "(N, 1 or 3, H, W) tensor in [0, 1] (grey or RGB images)."
            )
    shown_as = {"colormap": media.colormap, "denormalize": denormalize, "tile_size": media.tile_size, "labels": None}
    predictions = {key: getattr(done, key) for key in ("predicted", "confidence", "targets")}
    try:
        with torch.no_grad():
            sheet = evaluation_media(
                done.inputs, done.results, normalizations, epoch=0, step=0, **predictions, **shown_as
            )
            for _, picture in sheet.images[:1]:
                picture.encoded()
    except Exception as err:
        raise ValueError(
            f"Rendering the probes for the logger failed at setup: {type(err).__name__}: {err}. Check `denormalize` "
            "(it must map the probes to 1 or 3 channels in [0, 1]) and `Display.colormap`."
        ) from err
