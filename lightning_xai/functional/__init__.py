"""Pure, batched metric functions on attribution maps (drift between epochs, ground-truth localisation)."""

from lightning_xai.functional.drift import average_ranks, spearman_distance, topk_iou_distance
from lightning_xai.functional.localization import pointing_game, relevance_mass

__all__ = [
    "average_ranks",
    "pointing_game",
    "relevance_mass",
    "spearman_distance",
    "topk_iou_distance",
]
