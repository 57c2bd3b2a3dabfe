"""Write images and text to the loggers on one background thread. Its jobs do no torch work, and on Linux it lowers
its own priority, so that under contention the training threads run first."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

Job = Callable[[], None]

#: how much the worker thread lowers its own priority (Linux ``nice``, that thread only; 0: as the training threads)
NICENESS = 10


class BackgroundWriter:
    """Runs jobs in order on one daemon thread (inline without ``background``); at most ``max_pending`` wait."""

    def __init__(self, background: bool = True, max_pending: int = 16) -> None:
        self.background = background
        self.errors: list[str] = []
        #: CPU seconds the worker thread spent on jobs (what the background work took from training)
        self.busy_seconds = 0.0
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._open = threading.Event()  # cleared while :meth:`held`: the worker waits before its next job
        self._open.set()

    def _run(self) -> None:
        if NICENESS and hasattr(os, "setpriority") and os.uname().sysname == "Linux":
            tid = threading.get_native_id()  # on Linux a thread id's priority is that thread's only
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS))
        while (job := self._queue.get()) is not None:
            self._open.wait()
            started = time.thread_time()
            try:  # a job's SystemExit or other BaseException is its failure too: the thread goes on, flush never hangs
                self._call(job)
            except BaseException as err:  # noqa: BLE001 - on this thread nothing is the training's to propagate
                self.errors.append(f"{type(err).__name__}: {err}")
            finally:
                self.busy_seconds += time.thread_time() - started
                self._queue.task_done()
        self._queue.task_done()

    def _call(self, job: Job) -> None:
        try:
            job()
        except Exception as err:  # noqa: BLE001 - a logging failure must never kill training
            self.errors.append(f"{type(err).__name__}: {err}")

    def submit(self, job: Job) -> None:
        """Queue ``job`` (run it now without ``background``)."""
        if not self.background:
            self._call(job)
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="lightning_xai-writer", daemon=True)
            self._thread.start()
        if self._queue.full():
            self._open.set()  # never wait on a held worker
        self._queue.put(job)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Jobs wait until the block ends (they start at once when the queue is full): the monitor's own Python work
        (drift, Lightning's ``log`` of its scalars) does not share the GIL with the writer's."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def flush(self) -> None:
        """Wait until every submitted job has run (also inside :meth:`held`, which it ends)."""
        if self._thread is not None and self._thread.is_alive():
            self._open.set()
            self._queue.join()

    def close(self) -> None:
        """Flush and stop the worker thread."""
        if self._thread is not None and self._thread.is_alive():
            self._open.set()
            self._queue.put(None)
            self._thread.join()
        self._thread = None

    def pop_errors(self) -> list[str]:
        """The errors so far, taken out one by one (``list.pop`` is atomic: none the writer adds meanwhile is lost)."""
        return [self.errors.pop(0) for _ in range(len(self.errors))]

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for ddp_spawn: a new writer, its thread started when needed
        return BackgroundWriter, (self.background, self._queue.maxsize)


def add_text_job(writer: Any, tag: str, text: str, step: int) -> Job:
    """A job logging markdown text with ``SummaryWriter.add_text``."""
    return lambda: writer.add_text(tag, text, global_step=step)
