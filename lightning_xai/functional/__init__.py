"""Pure, batched metrics on attribution maps: drift between epochs, localisation, concentration, perturbation curves."""

from lightning_xai.functional.drift import average_ranks, spearman_distance, topk_iou_distance
from lightning_xai.functional.localization import pointing_game, relevance_mass
from lightning_xai.functional.quality import curve_auc, entropy, sparseness

__all__ = ["average_ranks", "curve_auc", "entropy", "sparseness", "pointing_game", "relevance_mass",
           "spearman_distance", "topk_iou_distance"]  # fmt: skip
