"""Rolling-majority smoothing of labels along each timeline.

The kernel :func:`rolling_majority_codes` works on integer label codes of
many timelines at once; :class:`MajoritySmoother` is the pipeline stage and
:func:`rolling_majority` the list form of the functional API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd

from taskclf._columns import RAW_LABEL, SMOOTHED_LABEL
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
    """Rolling majority of label codes over concatenated timelines.

    Row ``i``'s window spans rows ``i - window // 2`` to ``i + window // 2``,
    clipped to its timeline. A row keeps its label when that label has the
    highest count in the window; otherwise the label with the highest count
    wins, and among several with that count the one occurring first in the
    window.

    Parameters
    ----------
    codes : ndarray of int, shape (n,)
        Label codes in ``[0, n_labels)``, timelines concatenated.
    bounds : ndarray of int, shape (n_timelines + 1,)
        Start position of each timeline, then ``n``.
    window : int
        Window width, ≥ 1.
    n_labels : int
        Number of distinct codes.

    Returns
    -------
    ndarray, shape (n,)
        Smoothed codes, same dtype as ``codes``.
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
    present = np.flatnonzero(np.bincount(codes, minlength=n_labels))
    cumulative = np.zeros((n_labels, n + 1), dtype=np.int32)
    best = np.zeros(n, dtype=np.int32)
    for k in present:
        np.cumsum(codes == k, out=cumulative[k, 1:])
        np.maximum(best, cumulative[k, hi] - cumulative[k, lo], out=best)
    own = cumulative[codes, hi] - cumulative[codes, lo]

    out = codes.copy()
    changed = np.flatnonzero(own < best)
    if len(changed) == 0:
        return out
    lo_c, hi_c, best_c = lo[changed], hi[changed], best[changed]
    counts = cumulative[:, hi_c] - cumulative[:, lo_c]  # (n_labels, n_changed)
    unresolved = np.ones(len(changed), dtype=bool)
    columns = np.arange(len(changed))
    for offset in range(2 * half + 1):
        at = lo_c + offset
        inside = unresolved & (at < hi_c)
        candidate = codes[np.minimum(at, n - 1)]
        wins = inside & (counts[candidate, columns] == best_c)
        out[changed[wins]] = candidate[wins]
        unresolved &= ~wins
        if not unresolved.any():
            break
    return out


def rolling_majority(labels: Sequence[str], window: int = DEFAULT_SMOOTH_WINDOW) -> list[str]:
    """Smooth one sequence of labels with a centred rolling majority.

    The list form of :class:`MajoritySmoother` for a single timeline.

    Parameters
    ----------
    labels : sequence of str
        Labels in time order.
    window : int, default 3
        Window width in buckets, ≥ 1.

    Returns
    -------
    list of str

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
    """Pipeline stage: rolling-majority smoothing of ``raw_label``.

    Adds ``smoothed_label``. Windows never cross a timeline boundary: a
    timeline is one user's rows in time order, split where consecutive
    buckets start more than ``max_gap_seconds`` apart.

    Parameters
    ----------
    window : int, default 3
        Window width in buckets (≥ 1); row ``i`` sees rows ``i - window//2``
        to ``i + window//2`` of its timeline.
    max_gap_seconds : float, default 300.0
        Longest gap between bucket starts inside one timeline.
    timelines : {"per_user", "as_given"}, default "per_user"
        ``"as_given"`` treats the whole frame as one sequence in the order
        given, as taskclf 0.4 does (see docs/migrating.md).

    See Also
    --------
    taskclf.Rejector : the stage before, which adds ``raw_label``.
    taskclf.Segmenter : the stage after.

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
        require_columns(X, [RAW_LABEL, "bucket_start_ts"], type(self).__name__)
        timelines = find_timelines(X, self.max_gap_seconds, self.timelines)
        codes = timelines.to_sorted(label_codes(X[RAW_LABEL], RAW_LABEL))
        smoothed = rolling_majority_codes(codes, timelines.bounds, int(self.window), n_labels=9)
        return add_columns(X, {SMOOTHED_LABEL: labels_from_codes(timelines.to_input(smoothed))})
