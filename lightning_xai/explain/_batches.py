"""How Integrated Gradients' samples are cut into Captum calls and passes: from sizes alone, never from timings."""

from __future__ import annotations

import math


def plan_batches(num_probes: int, n_steps: int, cap: int) -> list[tuple[int, int]]:
    """``(probes, Captum's internal_batch_size)`` of each Captum call, for passes of at most ``cap`` samples.

    Captum packs ``internal_batch_size // probes`` whole steps of all probes per pass and never fewer than all
    probes, so probes beyond the cap are split into slices (sizes within one of each other), one call each. The
    steps are spread evenly over the fewest passes (no small tail pass).

    Example::

        >>> plan_batches(8, 32, 64), plan_batches(4, 12, 32), plan_batches(10, 3, 4)
        ([(8, 64)], [(4, 24)], [(4, 4), (3, 3), (3, 3)])
    """
    slices = math.ceil(num_probes / max(1, cap))
    plan = []
    for probes in (num_probes // slices + (i < num_probes % slices) for i in range(slices)):
        steps = max(1, min(n_steps, cap // probes))
        plan.append((probes, probes * math.ceil(n_steps / math.ceil(n_steps / steps))))
    return plan
