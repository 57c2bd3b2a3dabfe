"""Batch sizes for methods that expand the probe batch (Integrated Gradients: probes × steps), chosen at the knee.

A forward+backward pass costs a fixed overhead plus a per-sample cost; throughput rises with the batch until
the device is busy (the *knee*) and then stays flat or falls (CPU caches), while memory keeps growing with the
batch. :class:`KneeBatcher` finds the knee **on the real work** and never spends a pass on measuring:

- **Ramp.** The first chunks run at 8, 16, 32, ... samples; each size runs three times and the fastest of
  the two warm runs is its time (the minimum is robust to other processes taking the cores for a while).
  The ramp stops when doubling gained less than ``min_gain`` (5 %), or when a two-point model
  ``t(b) = t0 + c·b`` fitted to the last two sizes predicts that the next doubling would gain less than that,
  or at the memory cap (or ``max_batch``). The chosen size is the smallest measured one within half of
  ``min_gain`` of the best rate (timings of the first calls are noisy: when in doubt, the larger batch).
- **Memory.** The bytes autograd saves for backward are counted (``saved_tensors_hooks``) on the first two
  ramp sizes; their difference gives the per-sample cost (parameters saved by reference cancel out). The cap
  is ``memory_budget / (safety × per-sample bytes)``; before the slope is known, the first size's total bytes
  per sample (an upper bound) is used.
- **Default budget.** CUDA: a quarter of the free device memory at the first call; CPU: a tenth of
  ``MemAvailable``, at most 2 GiB. Pass ``memory_budget=`` (bytes) to set it.

The batcher holds per-model state (rates, bytes per sample); :class:`WorkCursor` turns a batch size into chunks
of whole probe groups (all probes × k steps) or, below one group, slices of the probes for one step.

Example::

    >>> batcher = KneeBatcher(internal_batch_size=64)
    >>> cursor = WorkCursor(num_probes=8, n_steps=32)
    >>> sizes = []
    >>> while not cursor.done:
    ...     chunk = cursor.next(batcher.target(8, 32))
    ...     sizes.append(chunk.batch)
    >>> sizes
    [64, 64, 64, 64]
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

#: multiplier on the saved-tensor bytes for the transient buffers of backward (gradients of the live layer)
MEMORY_SAFETY = 1.5
#: first ramp size, in samples
RAMP_START = 8


def default_memory_budget(device: torch.device) -> int:
    """Bytes the monitor may use for one expanded pass on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    available = _mem_available_bytes()
    return int(min(2 << 30, available // 10)) if available else 1 << 30


def _mem_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


@contextmanager
def count_saved_bytes() -> Iterator[list[int]]:
    """Count the bytes autograd saves for backward inside the block (each storage once).

    Yields a one-element list holding the total when the block exits.

    Example::

        >>> x = torch.ones(4, 10, requires_grad=True)
        >>> with count_saved_bytes() as total:
        ...     y = (x * 2).exp()
        >>> total[0]  # exp saves its 4x10 float32 result
        160
    """
    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key not in seen:
                seen.add(key)
                total[0] += storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some subclasses)
            total[0] += t.numel() * t.element_size()
        return t

    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield total


@dataclass
class Chunk:
    """One forward+backward pass: ``steps[s]`` × ``probes`` (a slice of the probe indices)."""

    steps: range
    probes: slice
    num_probes: int

    @property
    def batch(self) -> int:
        return len(self.steps) * self.num_probes


class WorkCursor:
    """Walks the (step, probe) work of one IG call in chunks of at most a target batch size.

    At or above one probe group, chunks are ``k`` whole steps × all probes (``k = batch // P``); below, they are
    slices of the probes for one step. Given ``even=True`` the remaining work is split into equal chunks (no
    small tail chunk).
    """

    def __init__(self, num_probes: int, n_steps: int) -> None:
        self.num_probes = num_probes
        self.n_steps = n_steps
        self.step = 0
        self.probe = 0

    @property
    def done(self) -> bool:
        return self.step >= self.n_steps

    def next(self, target: int, even: bool = False) -> Chunk:
        target = max(1, int(target))
        p = self.num_probes
        if self.probe > 0 or target < p:  # a slice of the probes of one step
            remaining = p - self.probe
            size = min(target, remaining)
            if even and self.probe == 0:
                size = math.ceil(p / math.ceil(p / target))
            chunk = Chunk(range(self.step, self.step + 1), slice(self.probe, self.probe + size), size)
            self.probe += size
            if self.probe >= p:
                self.step, self.probe = self.step + 1, 0
            return chunk
        remaining_steps = self.n_steps - self.step
        k = min(max(1, target // p), remaining_steps)
        if even:
            k = math.ceil(remaining_steps / math.ceil(remaining_steps / k))
        chunk = Chunk(range(self.step, self.step + k), slice(0, p), p)
        self.step += k
        return chunk


@dataclass
class KneeBatcher:
    """Chooses the samples per pass: the measured throughput knee, under a memory budget.

    Args:
        internal_batch_size: a fixed size (samples per pass); None measures the knee on the real work.
        memory_budget: bytes one pass may use; None picks :func:`default_memory_budget` at the first call.
        min_gain: a doubling of the batch must raise throughput by this fraction to be taken.
        max_batch: an upper bound in samples (None: only memory and the knee bound it).
    """

    internal_batch_size: int | None = None
    memory_budget: int | None = None
    min_gain: float = 0.05
    max_batch: int | None = None
    #: warm runs timed per ramp size (their minimum counts)
    timed_runs: int = 2
    #: warm samples/s measured per batch size
    rates: dict[int, float] = field(default_factory=dict)
    #: saved bytes measured per batch size (first two sizes)
    saved: dict[int, int] = field(default_factory=dict)
    #: the chosen size, once the ramp has ended
    chosen: int | None = None
    #: how the choice was made: "fixed", "knee", "memory", "max_batch", "work"
    reason: str = ""
    _runs: dict[int, int] = field(default_factory=dict)
    _times: dict[int, list[float]] = field(default_factory=dict)
    _ramp_target: int = RAMP_START
    _current: int = 0

    def __post_init__(self) -> None:
        if self.internal_batch_size is not None:
            if self.internal_batch_size < 1:
                raise ValueError(f"`internal_batch_size` must be >= 1, got {self.internal_batch_size}.")
            self.chosen, self.reason = int(self.internal_batch_size), "fixed"

    # ------------------------------------------------------------------------------------------ queries
    @property
    def ramping(self) -> bool:
        return self.chosen is None

    def per_sample_bytes(self) -> float | None:
        """Saved bytes per sample: the slope between the first two sizes, or an upper bound from one size."""
        if len(self.saved) >= 2:
            (b1, s1), (b2, s2) = sorted(self.saved.items())[:2]
            slope = (s2 - s1) / (b2 - b1)
            if slope > 0:
                return slope
        if self.saved:
            b, s = min(self.saved.items())
            return s / b
        return None

    def memory_cap(self, device: torch.device | None = None) -> int | None:
        """Largest batch (samples) under the memory budget, once a per-sample cost is known."""
        per_sample = self.per_sample_bytes()
        if per_sample is None or per_sample <= 0:
            return None
        if self.memory_budget is None:
            self.memory_budget = default_memory_budget(device or torch.device("cpu"))
        return max(1, int(self.memory_budget // (MEMORY_SAFETY * per_sample)))

    def measuring_memory(self, batch: int) -> bool:
        """Whether the pass at ``batch`` should count saved bytes (first run of each of the first two sizes)."""
        return self.ramping and batch not in self.saved and len(self.saved) < 2

    def timing(self, batch: int) -> bool:
        """Whether the pass at ``batch`` should be timed (a warm run at the current ramp size)."""
        return self.ramping and batch == self._current and self._runs.get(batch, 0) >= 1 and batch not in self.rates

    def target(self, num_probes: int, n_steps: int, device: torch.device | None = None) -> int:
        """The batch size (samples) to use for the next chunk."""
        if not self.ramping:
            assert self.chosen is not None
            return self.chosen if self.max_batch is None else min(self.chosen, self.max_batch)
        target = self._ramp_target
        if target > num_probes:  # realisable sizes above one group are whole groups
            target = (target // num_probes) * num_probes
        cap = self._cap(device)
        if cap is not None and target > cap:
            target = max(1, cap)
        self._current = min(target, num_probes * n_steps)
        return self._current

    def _cap(self, device: torch.device | None) -> int | None:
        caps = [c for c in (self.memory_cap(device), self.max_batch) if c is not None]
        return min(caps) if caps else None

    # ----------------------------------------------------------------------------------------- updates
    def record(
        self,
        batch: int,
        seconds: float | None,
        saved_bytes: int | None = None,
        device: torch.device | None = None,
        num_probes: int = 1,
    ) -> None:
        """Feed back one pass: its batch, its (warm) time, and the bytes it saved for backward."""
        if not self.ramping:
            return
        self._runs[batch] = self._runs.get(batch, 0) + 1
        if saved_bytes is not None and batch not in self.saved:
            self.saved[batch] = saved_bytes
        if seconds is not None and seconds > 0 and batch == self._current and batch not in self.rates:
            times = self._times.setdefault(batch, [])
            times.append(seconds)
            if len(times) >= self.timed_runs:
                self.rates[batch] = batch / min(times)
                self._advance(batch, device, num_probes)

    def _advance(self, batch: int, device: torch.device | None, num_probes: int) -> None:
        """After a warm measurement at ``batch``: ramp on, or choose."""
        sizes = sorted(self.rates)
        best = max(self.rates.values())
        cap = self._cap(device)
        next_target = 2 * batch
        if next_target > num_probes:
            next_target = (next_target // num_probes) * num_probes
        stop, reason = False, "knee"
        if len(sizes) >= 2:
            prev = sizes[-2] if sizes[-1] == batch else None
            if prev is not None:
                gain = self.rates[batch] / self.rates[prev] - 1.0
                if gain < self.min_gain:
                    stop = True
                else:
                    # two-point model t(b) = t0 + c*b: does the next doubling still pay?
                    t_prev, t_cur = prev / self.rates[prev], batch / self.rates[batch]
                    c = (t_cur - t_prev) / (batch - prev)
                    t0 = t_cur - c * batch
                    if c > 0 and t0 >= 0:
                        predicted = next_target / (t0 + c * next_target)
                        if predicted < (1.0 + self.min_gain) * self.rates[batch]:
                            stop = True
        if not stop and cap is not None and next_target > cap:
            stop, reason = True, "memory" if cap == self.memory_cap(device) else "max_batch"
        if stop:
            self.chosen = min(b for b in sizes if self.rates[b] >= (1.0 - self.min_gain / 2) * best)
            self.reason = reason
        else:
            self._ramp_target = next_target

    def finish_if_stuck(self, largest_possible: int) -> None:
        """End the ramp when the work of a call can never reach the next ramp size."""
        if self.ramping and self.rates and self._ramp_target > largest_possible:
            best = max(self.rates.values())
            self.chosen = min(b for b in self.rates if self.rates[b] >= (1.0 - self.min_gain / 2) * best)
            self.reason = "work"

    def state(self) -> dict[str, object]:
        """A summary for logs and benchmarks."""
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "rates": {b: round(r, 1) for b, r in sorted(self.rates.items())},
            "per_sample_bytes": self.per_sample_bytes(),
            "memory_budget": self.memory_budget,
        }
