"""Synthetic datasets for demos and tests of ``lightning_xai`` (optional; the core package never imports them).

scikit-learn is an optional extra used for its bundled digits; install it with
``pip install 'lightning_xai[examples]'``. It is imported only when the digits are first loaded.

Example::

    >>> from examples.shortcut import DecoyDigits, DecoySwitch
    >>> train, val = DecoyDigits("train"), DecoyDigits("val")
    >>> len(train) + len(val)
    1797
"""

from examples.shortcut.decoy_digits import (
    CORNER_NAMES,
    NUM_CLASSES,
    DecoyDigits,
    DecoySpec,
    DecoySwitch,
    decoy_for_labels,
    decoy_masks,
    label_for_decoy,
    load_digits_tensors,
    mismatched_decoy_images,
    random_decoy,
    stamp_decoy,
)

__all__ = [
    "CORNER_NAMES",
    "NUM_CLASSES",
    "DecoyDigits",
    "DecoySpec",
    "DecoySwitch",
    "decoy_for_labels",
    "decoy_masks",
    "label_for_decoy",
    "load_digits_tensors",
    "mismatched_decoy_images",
    "random_decoy",
    "stamp_decoy",
]
