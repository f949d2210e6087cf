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
from taskclf.stages._base import GAP, MAX_BUCKETS, FrameTransformer, check_params, integer, one_of
from taskclf.stages._timeline import TIMELINE_MODES, find_timelines


def rolling_majority_codes(
    codes: np.ndarray, bounds: np.ndarray, window: int, n_labels: int
) -> np.ndarray:
    """Rolling majority (docs/contract.md) of label codes over concatenated timelines.

    ``bounds`` holds each timeline's start, then ``n``; ``n_labels`` is the
    number of distinct codes. Returns smoothed codes of ``codes``'s dtype.
    """
    n = len(codes)
    half = window // 2
    if half == 0 or n == 0:
        return codes.copy()
    position = np.arange(n, dtype=np.int64)
    timeline = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    lo = np.maximum(position - half, bounds[timeline])
    hi = np.minimum(position + half, bounds[timeline + 1] - 1) + 1  # exclusive

    # cumulative[k, j]: how many of rows [0, j) carry label k.
    cumulative = np.zeros((n_labels, n + 1), dtype=np.int32)
    best = np.zeros(n, dtype=np.int32)
    for k in np.flatnonzero(np.bincount(codes, minlength=n_labels)):
        np.cumsum(codes == k, out=cumulative[k, 1:])
        np.maximum(best, cumulative[k, hi] - cumulative[k, lo], out=best)
    own = cumulative[codes, hi] - cumulative[codes, lo]

    out = codes.copy()
    changed = np.flatnonzero(own < best)
    lo_c, hi_c, best_c = lo[changed], hi[changed], best[changed]
    counts = cumulative[:, hi_c] - cumulative[:, lo_c]  # (n_labels, n_changed)
    unresolved = np.ones(len(changed), dtype=bool)
    columns = np.arange(len(changed))
    for offset in range(2 * half + 1):  # the first label in the window with the top count
        if not unresolved.any():
            break
        at = lo_c + offset
        candidate = codes[np.minimum(at, n - 1)]
        wins = unresolved & (at < hi_c) & (counts[candidate, columns] == best_c)
        out[changed[wins]] = candidate[wins]
        unresolved &= ~wins
    return out


def rolling_majority(labels: Sequence[str], window: int = DEFAULT_SMOOTH_WINDOW) -> list[str]:
    """Smooth one time-ordered sequence of labels with a centred rolling majority.

    Examples
    --------
    >>> rolling_majority(["Build", "Debug", "Build", "Build"], window=3)
    ['Build', 'Build', 'Build', 'Build']
    """
    check_params(MajoritySmoother(window))
    codes, uniques = factorize_labels(labels)
    bounds = np.array([0, len(codes)], dtype=np.int64)
    smoothed = rolling_majority_codes(codes, bounds, window, max(len(uniques), 1))
    return [str(v) for v in uniques[smoothed]]


class MajoritySmoother(FrameTransformer):
    """Pipeline stage: ``smoothed_label``, the rolling majority of ``raw_label``.

    The rule, ``window`` (in buckets), ``max_gap_seconds`` and ``timelines``
    are in docs/contract.md.

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

    _parameter_rules: ClassVar = {
        "window": integer(1, MAX_BUCKETS),
        "max_gap_seconds": GAP,
        "timelines": one_of(*TIMELINE_MODES),
    }

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
        smoothed = rolling_majority_codes(codes, timelines.bounds, int(self.window), n_labels=9)
        return add_columns(X, {SMOOTHED_LABEL: labels_from_codes(timelines.to_input(smoothed))})
