"""``python -m lightning_xai report LOGDIR``: the ``lightning-xai`` console script, where the environment's scripts
are not on ``PATH`` (a notebook, a virtual environment not activated)."""

import sys

from lightning_xai.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
