"""Write images and text to the loggers without blocking the training thread.

Composing the sheet and encoding its PNG (:class:`~lightning_xai.visualize.media.Picture`) dominate the cost of logging
an evaluation; a single background thread with a bounded queue does it, and :meth:`BackgroundWriter.flush` waits for
everything submitted so far (called at the end of fit/validate and on exceptions) so nothing is lost.

The thread must not compete with training for the cores: its jobs do no torch work (numpy, Pillow, protobuf and file
writes only, each single-threaded; torch's intra-op pool and ``torch.set_num_threads`` are process-wide, so they are
left alone), and on Linux the thread lowers its own scheduling priority (``nice`` +10, that thread only), so that
under contention the kernel runs the training threads first and the writer in the gaps.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

Job = Callable[[], None]

#: how much the worker thread lowers its own priority (Linux ``nice``; 0 = as the training threads)
NICENESS = 10


def lower_thread_priority(niceness: int = NICENESS) -> bool:
    """Lower the calling thread's scheduling priority by ``niceness`` (Linux, where ``setpriority`` on a thread id
    affects that thread only); True when it did. Never raises."""
    if not niceness or not hasattr(os, "setpriority") or not os.uname().sysname == "Linux":
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError:
        return False
    return True


class BackgroundWriter:
    """Runs logging jobs in order on one daemon thread (or inline when ``background=False``).

    Args:
        background: run jobs on a worker thread; False runs them immediately in the caller.
        max_pending: bound of the queue; ``submit`` blocks when it is full, so memory stays bounded.

    Example::

        >>> out = []
        >>> writer = BackgroundWriter()
        >>> writer.submit(lambda: out.append(1))
        >>> writer.flush(); out
        [1]
        >>> writer.close()
    """

    def __init__(self, background: bool = True, max_pending: int = 16) -> None:
        self.background = background
        self.errors: list[str] = []
        #: CPU seconds the worker thread spent on jobs (what the background work took from training)
        self.busy_seconds = 0.0
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        lower_thread_priority()
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                started = time.thread_time()
                self._call(job)
                self.busy_seconds += time.thread_time() - started
            finally:
                self._queue.task_done()

    def _call(self, job: Job) -> None:
        try:
            job()
        except Exception as err:  # noqa: BLE001 - a logging failure must never kill training
            self.errors.append(f"{type(err).__name__}: {err}")

    def submit(self, job: Job) -> None:
        """Queue ``job`` (blocks only while ``max_pending`` jobs are already waiting)."""
        if not self.background:
            self._call(job)
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="lightning_xai-writer", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def flush(self) -> None:
        """Wait until every submitted job has run."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    def close(self) -> None:
        """Flush and stop the worker thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._thread = None

    def pop_errors(self) -> list[str]:
        """The errors so far, taken out one by one (``list.pop`` is atomic: none the writer adds meanwhile is lost)."""
        errors: list[str] = []
        while self.errors:
            errors.append(self.errors.pop(0))
        return errors

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn: threads and queues are recreated
        return {"background": self.background, "max_pending": self._queue.maxsize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["background"], state["max_pending"])  # type: ignore[misc]


def add_text_job(writer: Any, tag: str, text: str, step: int) -> Job:
    """A job logging markdown text with ``SummaryWriter.add_text``."""
    return lambda: writer.add_text(tag, text, global_step=step)
