"""Rejection of unsure buckets."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.utils import Tags

from taskclf._columns import CONFIDENCE, IS_REJECTED, PROBA_COLUMNS, RAW_LABEL
from taskclf._frame import (
    add_columns,
    check_finite_columns,
    frame_tags,
    labels_from_codes,
    require_columns,
)
from taskclf.core.types import N_CLASSES
from taskclf.stages._base import FrameTransformer, optional, real

MIXED_CODE = N_CLASSES  # the code of Mixed/Unknown in the label columns, after the classes


def reject_codes(
    proba: np.ndarray, threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence, rejection flags and label codes of a probability matrix (docs/contract.md)."""
    confidence = proba.max(axis=1)
    best = np.zeros(len(proba), dtype=np.int8)
    for k in range(proba.shape[1] - 1, -1, -1):  # the first maximum, faster than argmax
        best = np.where(proba[:, k] == confidence, k, best)
    rejected = np.zeros(len(proba), dtype=bool) if threshold is None else confidence < threshold
    codes = np.where(rejected, MIXED_CODE, best).astype(np.int8)
    return confidence, rejected, codes


class Rejector(FrameTransformer):
    """Pipeline stage: ``confidence``, ``is_rejected`` and ``raw_label`` of each bucket, by
    :func:`reject_codes`'s rule on the calibrated probabilities (``None`` rejects nothing)."""

    _parameter_rules: ClassVar = {"threshold": optional(real(0.0, 1.0))}

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold

    def __sklearn_tags__(self) -> Tags:
        # Probability columns by name; missing probabilities are refused.
        return frame_tags(super().__sklearn_tags__())

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        require_columns(X, PROBA_COLUMNS, type(self).__name__)
        proba = X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
        check_finite_columns(proba, PROBA_COLUMNS)
        confidence, rejected, codes = reject_codes(proba, self.threshold)
        new = {CONFIDENCE: confidence, IS_REJECTED: rejected, RAW_LABEL: labels_from_codes(codes)}
        return add_columns(X, new)
