"""Statistics the detector's tests need, as pure functions: Student's t quantile, the binomial tail and its count."""

from __future__ import annotations

import functools
import math

import torch


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (Cornish–Fisher, within 0.5 % for ``dof >= 3``); ``inf`` below 3 degrees of freedom."""
    if dof < 3:
        return math.inf
    z, n = float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64))), float(dof)
    two_terms = z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
    return two_terms + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)


def _log_pmf(n: int, p: float) -> list[float]:
    """``log P(Binomial(n, p) = k)`` for ``k = 0..n`` (log space: any ``n`` works)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    return [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
        for k in range(n + 1)
    ]


@functools.cache
def min_binomial_count(n: int, p: float, alpha: float) -> int:
    """The smallest ``k >= 2`` with ``P(Binomial(n, p) >= k) <= alpha`` (``n + 1``: never, when none is); the terms
    in log space, so any ``n`` works.

    Example::

        >>> min_binomial_count(10, 0.02, 0.005), min_binomial_count(64, 0.02, 0.005)
        (3, 6)
    """
    log_pmf = _log_pmf(n, p)
    tail = 0.0
    tails = [0.0] * (n + 2)
    for k in range(n, -1, -1):  # P(X >= k), summed from the top
        tail += math.exp(log_pmf[k])
        tails[k] = tail
    return next((k for k in range(2, n + 1) if tails[k] <= alpha), n + 1)


def binomial_tail(n: int, k: int, p: float) -> float:
    """``P(Binomial(n, p) >= k)``, exact (terms in log space); 1.0 for ``k <= 0``.

    Example::

        >>> round(binomial_tail(10, 9, 0.5), 6), binomial_tail(0, 0, 0.5)
        (0.010742, 1.0)
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    terms = _log_pmf(n, p)[k:]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))
