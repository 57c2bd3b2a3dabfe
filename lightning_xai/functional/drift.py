"""Attribution drift between two batches of attribution maps: how far the explanation moved.

Both distances compare the *magnitude* of the attributions (``|A|``): the sign of a map is ignored, so a
map and its negation are at distance 0. Maps may have any trailing shape ``(N, ...)``; every sample is
flattened to one row of ``D`` cells. The functions are batched (no Python loop over the samples), work on
any device and input dtype, compute in float64 (float32 on MPS) and return float32 on the input's device.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from lightning_xai.functional._common import compute_dtype as _compute_dtype

__all__ = ["average_ranks", "spearman_distance", "topk_iou_distance"]


def _check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")
    if value.is_complex():
        raise ValueError(f"`{name}` must be a real tensor, got dtype {value.dtype}.")
    return value


def _flatten_pair(current: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a pair of attribution batches and return ``(|current|, |reference|)`` as (N, D) rows."""
    _check_tensor("current", current)
    _check_tensor("reference", reference)
    if current.ndim < 2:
        raise ValueError(
            f"`current` must have a batch dimension and at least one more, i.e. shape (N, ...) with "
            f"ndim >= 2; got shape {tuple(current.shape)}."
        )
    if current.shape != reference.shape:
        raise ValueError(
            f"`current` and `reference` must have the same shape; got `current` {tuple(current.shape)} "
            f"and `reference` {tuple(reference.shape)}."
        )
    if current.device != reference.device:
        raise ValueError(
            f"`current` and `reference` must be on the same device; got `current` on {current.device} "
            f"and `reference` on {reference.device}."
        )
    n = current.shape[0]
    d = math.prod(current.shape[1:])
    if d == 0:
        raise ValueError(f"`current` must have at least one cell per sample; got shape {tuple(current.shape)}.")
    dtype = _compute_dtype(current.device)
    cur = current.detach().reshape(n, d).to(dtype).abs()
    ref = reference.detach().reshape(n, d).to(dtype).abs()
    return cur, ref


def _average_ranks(values: Tensor) -> Tensor:
    """Average (1-based) ranks of each row of a 2-D floating tensor, in the dtype of ``values``."""
    n, d = values.shape
    sorted_values, order = values.sort(dim=1)
    positions = torch.arange(d, device=values.device).expand(n, d)
    if d > 1:
        differs = sorted_values[:, 1:] != sorted_values[:, :-1]
    else:
        differs = torch.zeros(n, 0, dtype=torch.bool, device=values.device)
    edge = torch.ones(n, 1, dtype=torch.bool, device=values.device)
    is_first = torch.cat([edge, differs], dim=1)  # a tie group starts here
    is_last = torch.cat([differs, edge], dim=1)  # a tie group ends here
    first = torch.where(is_first, positions, torch.zeros_like(positions)).cummax(dim=1).values
    last_source = torch.where(is_last, positions, torch.full_like(positions, d - 1))
    last = last_source.flip(1).cummin(dim=1).values.flip(1)
    sorted_ranks = (first + last).to(values.dtype) / 2 + 1
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of every row, ties sharing the average of the ranks they span.

    Identical to ``scipy.stats.rankdata(row, method="average")`` applied to each row, but batched and
    sort-based: ``O(N·D log D)`` time and ``O(N·D)`` memory. NaNs are ranked after every number (each NaN
    its own group) instead of propagating as in scipy.

    Args:
        values: real tensor of shape ``(N, D)``.

    Returns:
        float32 tensor of shape ``(N, D)`` on the device of ``values``.

    Raises:
        ValueError: if ``values`` is not 2-D.

    Example::

        >>> average_ranks(torch.tensor([[10.0, 20.0, 10.0, 5.0]]))
        tensor([[2.5000, 4.0000, 2.5000, 1.0000]])
    """
    _check_tensor("values", values)
    if values.ndim != 2:
        raise ValueError(f"`values` must be 2-D with shape (N, D); got shape {tuple(values.shape)}.")
    ranks = _average_ranks(values.detach().to(_compute_dtype(values.device)))
    return ranks.to(torch.float32)


def _nan_rows(current: Tensor, reference: Tensor) -> Tensor:
    return current.isnan().any(dim=1) | reference.isnan().any(dim=1)


def spearman_distance(current: Tensor, reference: Tensor) -> Tensor:
    """``1 - ρ``, the Spearman rank correlation between ``|current|`` and ``|reference|``, per sample.

    ``ρ`` is the Pearson correlation of the average ranks (ties share their mean rank, as in
    ``scipy.stats.spearmanr``). The result lies in ``[0, 2]``: 0 when the cells are ranked identically,
    1 when the rankings are unrelated, 2 when one is the reverse of the other.

    Constant rows never give NaN: if both maps of a sample are constant the distance is 0 (nothing
    moved); if exactly one is constant it carries no rank information, ``ρ`` is treated as 0 and the
    distance is 1. A sample whose maps contain NaN gets NaN.

    Args:
        current: attributions of shape ``(N, ...)``.
        reference: attributions of the same shape.

    Returns:
        float32 tensor of shape ``(N,)`` on the input's device.

    Raises:
        ValueError: if the shapes differ or the inputs have fewer than 2 dimensions.

    Example::

        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> spearman_distance(a, a), spearman_distance(a, -a), spearman_distance(a, a.flip(1))
        (tensor([0.]), tensor([0.]), tensor([2.]))
    """
    cur, ref = _flatten_pair(current, reference)
    d = cur.shape[1]
    center = (d + 1) / 2  # the mean of 1..D, exact for average ranks too
    rank_cur = _average_ranks(cur) - center
    rank_ref = _average_ranks(ref) - center
    cov = (rank_cur * rank_ref).sum(dim=1)
    var_cur = rank_cur.square().sum(dim=1)
    var_ref = rank_ref.square().sum(dim=1)

    const_cur = cur.amax(dim=1) == cur.amin(dim=1)
    const_ref = ref.amax(dim=1) == ref.amin(dim=1)
    denom = (var_cur * var_ref).sqrt()
    safe_denom = torch.where(const_cur | const_ref, torch.ones_like(denom), denom)
    distance = (1 - cov / safe_denom).clamp(0.0, 2.0)
    distance = torch.where(const_cur | const_ref, torch.ones_like(distance), distance)
    distance = torch.where(const_cur & const_ref, torch.zeros_like(distance), distance)
    distance = torch.where(_nan_rows(cur, ref), torch.full_like(distance, math.nan), distance)
    return distance.to(dtype=torch.float32, device=current.device)


def _topk_count(k: float, d: int) -> int:
    """``ceil(k·D)`` in ``[1, D]``, rounded first so float noise cannot add a cell (0.07 * 100 → 7, not 8)."""
    return min(d, max(1, math.ceil(round(k * d, 9))))


def topk_iou_distance(current: Tensor, reference: Tensor, k: float = 0.1) -> Tensor:
    """``1 - IoU`` of the most attributed cells of ``|current|`` and ``|reference|``, per sample.

    The set of a map holds the cells whose ``|value|`` is at least that of its ``ceil(k·D)``-th largest
    cell *and* strictly positive: cells tied at the boundary are all included (the set may be larger than
    ``ceil(k·D)``), and zero cells are never "attributed". If both sets are empty the distance is 0; if
    exactly one is empty it is 1. A sample whose maps contain NaN gets NaN. ``k·D`` is rounded to 9
    decimals before the ceiling so float noise cannot add a cell (``0.07 * 100`` is ``7.000000000000001``).

    Args:
        current: attributions of shape ``(N, ...)``.
        reference: attributions of the same shape.
        k: fraction of the ``D`` cells of a sample to keep, in ``(0, 1]``.

    Returns:
        float32 tensor of shape ``(N,)`` in ``[0, 1]`` on the input's device.

    Raises:
        ValueError: if the shapes differ, the inputs have fewer than 2 dimensions or ``k`` is not in
            ``(0, 1]``.

    Example::

        >>> a = torch.tensor([[4.0, 3.0, 2.0, 0.0, 0.0, 0.0]])
        >>> b = torch.tensor([[0.0, 3.0, 4.0, 2.0, 0.0, 0.0]])
        >>> topk_iou_distance(a, b, k=0.5)  # {0, 1, 2} vs {1, 2, 3}: IoU = 2 / 4
        tensor([0.5000])
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < k <= 1:
        raise ValueError(f"`k` must be a fraction in (0, 1]; got {k!r}.")
    cur, ref = _flatten_pair(current, reference)
    count = _topk_count(float(k), cur.shape[1])

    def top_set(values: Tensor) -> Tensor:
        threshold = values.topk(count, dim=1).values[:, -1:]
        return (values >= threshold) & (values > 0)

    set_cur, set_ref = top_set(cur), top_set(ref)
    inter = (set_cur & set_ref).sum(dim=1).to(cur.dtype)
    union = (set_cur | set_ref).sum(dim=1).to(cur.dtype)
    distance = 1 - inter / union.clamp_min(1)  # both empty: 0 / 1 → distance 1, fixed below
    distance = torch.where(union == 0, torch.zeros_like(distance), distance)
    distance = torch.where(_nan_rows(cur, ref), torch.full_like(distance, math.nan), distance)
    return distance.to(dtype=torch.float32, device=current.device)
