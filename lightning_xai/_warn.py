"""How the monitor speaks: warnings on rank 0 that point at the user's line (the first frame outside this package,
Lightning, PyTorch and Captum), and failure reports that never raise, even under ``-W error``. (Lightning's
``WarningCache`` keys by text at a fixed ``stacklevel``; the monitor warns once per condition, from varying depths.)"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

from lightning.pytorch.utilities.rank_zero import rank_zero_only

log = logging.getLogger("lightning_xai")
_FILES = [getattr(sys.modules.get(m), "__file__", None) for m in ("lightning_xai", "lightning", "torch", "captum")]
#: package directories and the standard library's (``contextlib``): frames there are not the user's
_INTERNAL = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (*_FILES, __file__, warnings.__file__) if f)


def warn(message: str) -> None:
    """Warn on rank 0 at the user's line."""
    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def count(n: int, one: str, many: str = "") -> str:
    """``n`` and the noun it takes, for messages: ``count(1, "probe")`` is ``"1 probe"``, ``count(3, "class",
    "classes")`` is ``"3 classes"``."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def report(message: str, say: Callable[[str], None] | None = None) -> None:
    """Report an isolated failure with ``say`` (default :func:`warn`); to the ``lightning_xai`` logger where warning
    filters turn warnings into errors."""
    try:
        (say or warn)(message)
    except Warning:
        log.warning(message)
