"""Rolling-majority smoothing of labels along each timeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, RAW_LABEL, SMOOTHED_LABEL
from taskclf._frame import (
    add_columns,
    factorize_labels,
    label_codes,
    labels_from_codes,
    require_columns,
)
from taskclf.core.defaults import DEFAULT_IDLE_GAP_SECONDS, DEFAULT_SMOOTH_WINDOW
from taskclf.core.types import OUTPUT_LABELS
from taskclf.stages._base import MAX_BUCKETS, FrameTransformer, check_params, integer
from taskclf.stages._timeline import TIMELINE_RULES, find_timelines


def rolling_majority_codes(
    codes: np.ndarray, bounds: np.ndarray, window: int, n_labels: int
) -> np.ndarray:
    """Rolling majority (docs/contract.md) of label codes (``0 … n_labels - 1``) over
    concatenated timelines, each starting at ``bounds`` (then ``n``); ``codes``'s dtype."""
    n = len(codes)
    half = window // 2
    out = codes.copy()
    if half == 0 or n == 0:
        return out
    timeline = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    lo = np.maximum(np.arange(n) - half, bounds[timeline])
    hi = np.minimum(np.arange(n) + half, bounds[timeline + 1] - 1)  # inclusive
    # Only a row whose window holds a change of label can change.
    changes = np.zeros(n, dtype=np.int32)
    np.cumsum(codes[1:] != codes[:-1], out=changes[1:])
    rows = np.flatnonzero(changes[hi] != changes[lo])
    lo, hi = lo[rows], hi[rows] + 1
    counts = np.zeros((n_labels, len(rows)), dtype=np.int32)  # of each label in each window
    cumulative = np.zeros(n + 1, dtype=np.int32)
    for k in np.flatnonzero(np.bincount(codes, minlength=n_labels)):
        np.cumsum(codes == k, out=cumulative[1:])
        np.subtract(cumulative[hi], cumulative[lo], out=counts[k])
    best = counts.max(axis=0)
    beaten = counts[codes[rows], np.arange(len(rows))] < best  # the row's own label is not top
    rows, lo, hi, best = rows[beaten], lo[beaten], hi[beaten], best[beaten]
    counts = counts[:, beaten]
    unresolved = np.ones(len(rows), dtype=bool)
    for offset in range(2 * half + 1):  # the first label in the window with the top count
        if not unresolved.any():
            break
        at = lo + offset
        candidate = codes[np.minimum(at, n - 1)]
        wins = unresolved & (at < hi) & (counts[candidate, np.arange(len(rows))] == best)
        out[rows[wins]] = candidate[wins]
        unresolved &= ~wins
    return out


def rolling_majority(labels: Sequence[str], window: int = DEFAULT_SMOOTH_WINDOW) -> list[str]:
    """Smooth one time-ordered sequence of labels with a centred rolling majority."""
    check_params(MajoritySmoother(window))
    codes, uniques = factorize_labels(labels)
    bounds = np.array([0, len(codes)], dtype=np.int64)
    smoothed = rolling_majority_codes(codes, bounds, window, max(len(uniques), 1))
    return [str(v) for v in uniques[smoothed]]


class MajoritySmoother(FrameTransformer):
    """Pipeline stage: ``smoothed_label``, the rolling majority of ``raw_label`` (the rule, the
    ``window`` in buckets and the other parameters: docs/contract.md).

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "bucket_start_ts": pd.date_range("2025-01-06 09:00", periods=4, freq="min"),
    ...     "raw_label": ["Build", "Debug", "Build", "Build"],
    ... })
    >>> MajoritySmoother(window=3).transform(frame)["smoothed_label"].tolist()
    ['Build', 'Build', 'Build', 'Build']
    """

    _parameter_rules: ClassVar = {"window": integer(1, MAX_BUCKETS), **TIMELINE_RULES}

    def __init__(
        self,
        window: int = DEFAULT_SMOOTH_WINDOW,
        max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
        timelines: str = "per_user",
    ) -> None:
        self.window = window
        self.max_gap_seconds = max_gap_seconds
        self.timelines = timelines

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        require_columns(X, [RAW_LABEL, BUCKET_START_TS], type(self).__name__)
        timelines = find_timelines(X, self.max_gap_seconds, self.timelines)
        codes = timelines.to_sorted(label_codes(X[RAW_LABEL], RAW_LABEL))
        smoothed = rolling_majority_codes(
            codes, timelines.bounds, int(self.window), n_labels=len(OUTPUT_LABELS)
        )
        return add_columns(X, {SMOOTHED_LABEL: labels_from_codes(timelines.to_input(smoothed))})
