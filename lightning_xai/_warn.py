"""How the monitor speaks: one warning per thing that needs the user, attributed to the user's code.

A warning points at the first frame outside this package, Lightning, PyTorch and Captum (the user's ``trainer.fit``
line), not at package-internal paths. A failure the monitor isolates is reported even where warning filters turn
warnings into errors (``-W error``): it then goes to the ``lightning_xai`` logger instead of raising into training.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

from lightning.pytorch.utilities.rank_zero import rank_zero_only

log = logging.getLogger("lightning_xai")


def _package_dir(module: str) -> str:
    found = sys.modules.get(module)
    file = getattr(found, "__file__", None)
    return os.path.dirname(os.path.abspath(file)) + os.sep if file else "\0"


_INTERNAL = tuple(_package_dir(m) for m in ("lightning_xai", "lightning", "torch", "captum", "contextlib"))
_INTERNAL += (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.path.dirname(warnings.__file__) + os.sep)


def user_stacklevel() -> int:
    """The ``stacklevel`` of ``warnings.warn`` called by the caller of this function that names the first frame
    outside the library code (the user's line), or the outermost frame."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str) -> None:
    """Warn on rank 0 at the user's line."""
    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    warnings.warn(message, UserWarning, stacklevel=user_stacklevel())


def report(message: str, say: Callable[[str], None] | None = None) -> None:
    """Report a failure the monitor isolated with ``say`` (default :func:`warn`); it never raises, whatever the
    warning filters say: where they turn warnings into errors (``-W error``) it goes to ``lightning_xai``'s logger.

    Example::

        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("error")
        ...     report("AttributionMonitor: gradcam failed")  # logged, not raised
    """
    try:
        (say or warn)(message)
    except Warning:
        log.warning(message)
