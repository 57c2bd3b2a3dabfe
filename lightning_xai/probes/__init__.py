"""Stage 1 of the pipeline: the fixed probe images and the classes they are explained for."""

from lightning_xai.probes.collect import ProbeSet, collect_probes
from lightning_xai.probes.masks import resolve_masks
from lightning_xai.probes.targets import (
    TargetSpec,
    are_probabilities,
    check_target,
    classes_of,
    output_index,
    predict,
    probabilities,
    probabilities_note,
    resolve_targets,
    shard_target,
)

__all__ = ["ProbeSet", "TargetSpec", "are_probabilities", "check_target", "classes_of", "collect_probes",
           "output_index", "predict", "probabilities", "probabilities_note", "resolve_masks", "resolve_targets",
           "shard_target"]  # fmt: skip
