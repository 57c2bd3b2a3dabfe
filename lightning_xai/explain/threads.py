"""How many torch threads the explanations use on the CPU, chosen on the run: the user's count, or one thread while
other processes keep the cores busy.

With every core contended, the threads of one operation wait for each other at its end while the kernel runs
another process, and the passes get slower than one thread alone (resnet18 at 3x64x64, 2 cores, 2 CPU-bound neighbour
processes: 93-134 input-gradient samples/s with 2 threads, 172-194 with 1); on quiet cores the user's count is
faster (1.7x on the same machine). The sign is in the methods' own run: the process's CPU time over their wall time
per thread is 0.99-1.00 on quiet cores and 0.49-0.50 with those neighbours. So the methods' passes are timed per
sample with the count they ran with; when the user's count got less than :data:`BUSY` of its cores, one thread is
tried for one evaluation and the faster of the last measured rates is used, the other count tried again every
:data:`RETRY_EVERY` evaluations. Quiet cores never pay for a try. On a GPU, or with one thread set, nothing changes.

Example::

    >>> choice = ThreadChoice()
    >>> choice.rates, choice.age = {2: 100.0, 1: 180.0}, {2: 0, 1: 0}  # samples/s: one thread was faster
    >>> with torch_threads(2):
    ...     choice.best("cpu"), choice.best("cuda")
    (1, None)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: the user's count runs on busy cores when the methods got less than this share of CPU time per thread
BUSY = 0.75
#: while one thread is faster, the user's count is tried again after this many evaluations (and the other way round)
RETRY_EVERY = 5


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the block (None: unchanged), restored after (process-wide)."""
    user = torch.get_num_threads()
    if count is not None and count != user:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != user:
            torch.set_num_threads(user)


@contextmanager
def one_torch_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block on the CPU (restored after; nothing changes for a GPU)."""
    # many small operations: on busy cores each waits for a descheduled partner thread (measured: 10-18 ms per
    # evaluation with one thread, 60-680 ms with two); the setting is process-wide: the training thread only
    with torch_threads(1 if torch.device(device).type == "cpu" else None):
        yield


class ThreadChoice:
    """The thread count of an evaluation's passes: the faster of the last measured rates (see the module)."""

    def __init__(self) -> None:
        #: samples per second of the methods' passes, per thread count, and evaluations since each was measured
        self.rates: dict[int, float] = {}
        self.age: dict[int, int] = {}
        self.busy = False  # the user's count got less than BUSY of its cores the last time it ran
        self.methods: tuple[str, ...] = ()  # the methods the rates were measured on

    def best(self, device: torch.device | str) -> int | None:
        """The count for the coming evaluation's methods: 1 or None (the user's count)."""
        user = torch.get_num_threads()
        if torch.device(device).type != "cpu" or user == 1:
            return None
        if self.rates.get(1, 0.0) > self.rates.get(user, 0.0):  # one thread was faster: the user's count now and then
            return None if self.age.get(user, RETRY_EVERY) >= RETRY_EVERY else 1
        return 1 if self.busy and self.age.get(1, RETRY_EVERY) >= RETRY_EVERY else None  # busy cores: try one

    def fastest(self, device: torch.device | str) -> int | None:
        """The count measured fastest so far on the CPU (the user's when nothing says otherwise); None on a GPU. For
        other work the monitor runs with the model's passes (the transplant test)."""
        user = torch.get_num_threads()
        if torch.device(device).type != "cpu":
            return None
        return 1 if self.rates.get(1, 0.0) > self.rates.get(user, 0.0) else user

    def record(
        self, count: int | None, samples: float, seconds: float, cpu_seconds: float, methods: tuple[str, ...] = ()
    ) -> None:
        """The ``methods`` ran ``samples`` forward+backward samples in ``seconds`` (``cpu_seconds`` of the process's
        CPU time) with ``count`` threads (None: the user's); rates of another set of methods are forgotten."""
        user = torch.get_num_threads()
        if seconds <= 0 or samples <= 0 or user == 1:
            return
        if methods != self.methods:  # a method skipped, failed or added: the rates are not comparable
            self.rates, self.age, self.methods = {}, {}, methods
        used = user if count is None else count
        self.age = {c: a + 1 for c, a in self.age.items()}
        self.rates[used], self.age[used] = samples / seconds, 0
        if used == user:
            self.busy = cpu_seconds / (seconds * user) < BUSY
