"""Write images and text to TensorBoard without blocking the training thread.

PNG encoding (inside ``SummaryWriter.add_image``) dominates the cost of logging an image grid; a single
background thread with a bounded queue does it, and :meth:`BackgroundWriter.flush` waits for everything
submitted so far (called at the end of fit/validate and on exceptions) so nothing is lost.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from torch import Tensor

Job = Callable[[], None]


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
        errors, self.errors = self.errors, []
        return errors

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn: threads and queues are recreated
        return {"background": self.background, "max_pending": self._queue.maxsize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["background"], state["max_pending"])  # type: ignore[misc]


def add_image_job(writer: Any, tag: str, image: Tensor, step: int) -> Job:
    """A job logging a uint8 ``(3, H, W)`` CPU image with ``SummaryWriter.add_image``."""
    return lambda: writer.add_image(tag, image, global_step=step, dataformats="CHW")


def add_text_job(writer: Any, tag: str, text: str, step: int) -> Job:
    """A job logging markdown text with ``SummaryWriter.add_text``."""
    return lambda: writer.add_text(tag, text, global_step=step)
