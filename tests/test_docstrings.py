"""Every docstring example in taskclf runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import taskclf

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

SUBMODULES = pkgutil.walk_packages(taskclf.__path__, prefix="taskclf.")
MODULES = ["taskclf", *sorted(info.name for info in SUBMODULES)]


def test_modules_are_found():
    assert "taskclf.stages.smooth" in MODULES
    assert "taskclf.infer.batch" in MODULES
    assert "taskclf.core.schema" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # an optional dependency of this module is not installed
        if exc.name is None or exc.name.split(".")[0] == "taskclf":
            raise
        pytest.skip(f"{name} needs {exc.name}")
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
