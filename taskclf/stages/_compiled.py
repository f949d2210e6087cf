"""The model compiled to machine code: the ``backend="compiled"`` of the model stage.

A placeholder until the compiled backend lands: it warns once and lets
LightGBM predict.
"""

from __future__ import annotations

import warnings
from typing import Any

from taskclf.exceptions import TaskclfWarning


def compiled_model(booster: Any) -> Any:
    """An object whose ``predict(matrix)`` equals ``booster.predict(matrix)``."""
    warnings.warn(
        "the compiled backend is not available; LightGBM predicts", TaskclfWarning, stacklevel=2
    )
    return booster
