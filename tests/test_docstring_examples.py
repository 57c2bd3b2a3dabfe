"""Every ``Example::`` in the package's docstrings runs and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lightning_xai

MODULES = sorted(m.name for m in pkgutil.walk_packages(lightning_xai.__path__, prefix="lightning_xai.") if not m.ispkg)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"


def test_the_examples_are_collected() -> None:
    attempted = sum(doctest.testmod(importlib.import_module(n), verbose=False, report=False).attempted for n in MODULES)
    assert attempted >= 100  # about 130 today: a collector that finds none must fail
