"""Quality measures of predicted labels, per timeline and pooled.

Row measures (accuracy, macro F1, reject rate) look at each bucket alone.
Timeline measures look at runs of equal labels, and a run never crosses a
timeline boundary (one user's rows in time order, split at gaps longer
than ``max_gap_seconds``; see :func:`taskclf.stages._timeline.find_timelines`):

- segmental F1@k, the temporal action segmentation F1: predicted and true
  runs are matched by intersection over union (IoU), each true run at most
  once;
- edit score, one minus the normalized Levenshtein distance between the
  label sequences of the true and the predicted runs;
- flap rate, label changes divided by buckets (the rule of
  :func:`taskclf.stages.smooth.flap_rate`);
- block share, the share of predicted runs lasting at least the minimum
  block duration.

Three layers use one set of kernels:

- :func:`segmental_f1` and :func:`edit_score` score one timeline given as
  two label sequences in time order;
- the ``*_score`` functions, ``(y_true, y_pred, X, **params) -> float``,
  read the timelines from the frame ``X`` (``bucket_start_ts``, and
  ``user_id`` when present), score every timeline and pool the results;
  :func:`summarize` computes all of them in one pass and
  :func:`timeline_report` lists them for each timeline;
- scorers (:func:`get_scorer`, :func:`make_timeline_scorer`,
  :func:`make_summary_scorer`) wrap them in scikit-learn's scorer protocol
  ``scorer(estimator, X, y)`` for ``cross_val_score`` and ``GridSearchCV``.

Pooling over timelines
----------------------
Segmental F1 sums true positives, false positives and false negatives over
the timelines and computes one F1 from the sums. Edit score sums the edit
distances and the normalizers (the longer run sequence of each timeline),
so a timeline weighs by its number of runs. Flap rate divides all label
changes inside timelines by all buckets. Block share counts predicted runs
over all timelines, each run once whatever its length. Accuracy, macro F1
and reject rate do not depend on timelines.

Conventions
-----------
All scores are on a 0..1 scale. Empty input scores as perfect: 1.0 for
accuracy, macro F1, segmental F1, edit score and block share; 0.0 for flap
and reject rate. Labels may be any hashable values (not only the core
labels); a missing label is an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import f1_score

from taskclf._columns import BUCKET_START_TS, IS_REJECTED
from taskclf._frame import require_columns
from taskclf.core.defaults import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_MAX_GAP_SECONDS,
    MIN_BLOCK_DURATION_SECONDS,
)
from taskclf.core.types import MIXED_UNKNOWN
from taskclf.exceptions import ColumnTypeError, InputError, InvalidParameterError
from taskclf.stages._timeline import Timelines, check_positive_seconds, find_timelines
from taskclf.stages.merge import check_min_duration, min_buckets_of
from taskclf.stages.segment import run_starts

DEFAULT_OVERLAPS: tuple[float, ...] = (0.1, 0.25, 0.5)
"""IoU thresholds of the segmental F1 scores :func:`summarize` reports."""


# --------------------------------------------------------------------------
# Validation and label encoding
# --------------------------------------------------------------------------


def _check_overlap(overlap: object) -> float:
    """Validate an IoU threshold: a real number in (0, 1]."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.number)):
        raise InvalidParameterError(f"overlap must be a number in (0, 1], got {overlap!r}")
    value = float(overlap)
    if not (0.0 < value <= 1.0):
        raise InvalidParameterError(f"overlap must be in (0, 1], got {overlap!r}")
    return value


def _check_frame(X: object, where: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise InputError(
            f"{where}: X must be a pandas DataFrame with a 'bucket_start_ts' column, "
            f"got {type(X).__name__}"
        )
    return X


def _labels_1d(values: object, name: str, where: str) -> np.ndarray:
    """``values`` as a 1-D object array, position by position."""
    if isinstance(values, pd.DataFrame):
        raise InputError(f"{where}: {name} must be one-dimensional, got a DataFrame")
    array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise InputError(f"{where}: {name} must be one-dimensional, got shape {array.shape}")
    return array


def _encode(
    y_true: object, y_pred: object, X: pd.DataFrame | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint integer codes of the true and predicted labels.

    Returns the codes of ``y_true``, the codes of ``y_pred`` and the
    distinct labels (an object array the codes index).

    Raises
    ------
    InputError
        When the lengths differ (naming both) or a label is missing.
    """
    true = _labels_1d(y_true, "y_true", where)
    pred = _labels_1d(y_pred, "y_pred", where)
    if len(true) != len(pred):
        raise InputError(f"{where}: y_true has {len(true)} labels but y_pred has {len(pred)}")
    if X is not None and len(X) != len(true):
        raise InputError(
            f"{where}: X has {len(X)} rows but y_true and y_pred have {len(true)} labels"
        )
    codes, uniques = pd.factorize(np.concatenate([true, pred]), use_na_sentinel=True)
    if len(codes) and codes.min() < 0:
        position = int(np.flatnonzero(codes < 0)[0])
        name = "y_true" if position < len(true) else "y_pred"
        row = position if position < len(true) else position - len(true)
        raise InputError(f"{where}: {name} has a missing label at position {row}")
    codes = codes.astype(np.int64, copy=False)
    return codes[: len(true)], codes[len(true) :], np.asarray(uniques, dtype=object)


# --------------------------------------------------------------------------
# Runs along timelines
# --------------------------------------------------------------------------


@attrs.frozen(eq=False)
class _Runs:
    """Runs of equal labels on concatenated timelines (half-open intervals)."""

    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    timeline: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray, bounds: np.ndarray) -> _Runs:
        start = run_starts(codes, bounds)
        end = np.append(start[1:], len(codes)).astype(np.int64)[: len(start)]
        timeline = np.searchsorted(bounds, start, side="right") - 1
        return cls(start, end, codes[start], timeline)

    def __len__(self) -> int:
        return len(self.start)

    def per_timeline(self, n_timelines: int) -> np.ndarray:
        """Number of runs of each timeline."""
        return np.bincount(self.timeline, minlength=n_timelines)

    def slices(self, n_timelines: int) -> np.ndarray:
        """Run positions where each timeline starts, then ``len(self)``."""
        return np.searchsorted(self.timeline, np.arange(n_timelines + 1), side="left")


@attrs.frozen(eq=False)
class _Aligned:
    """True and predicted labels in timeline order, with their runs."""

    true: np.ndarray
    pred: np.ndarray
    labels: np.ndarray
    bounds: np.ndarray
    true_runs: _Runs
    pred_runs: _Runs
    timelines: Timelines | None

    @classmethod
    def of(
        cls,
        true: np.ndarray,
        pred: np.ndarray,
        labels: np.ndarray,
        bounds: np.ndarray,
        timelines: Timelines | None = None,
    ) -> _Aligned:
        true_runs, pred_runs = _Runs.of(true, bounds), _Runs.of(pred, bounds)
        return cls(true, pred, labels, bounds, true_runs, pred_runs, timelines)

    @property
    def n_timelines(self) -> int:
        return len(self.bounds) - 1


def _align(y_true: object, y_pred: object, X: object, max_gap_seconds: int, where: str) -> _Aligned:
    """Encode the labels and put them in timeline order, as read from ``X``."""
    frame = _check_frame(X, where)
    check_positive_seconds(max_gap_seconds, "max_gap_seconds")
    require_columns(frame, [BUCKET_START_TS], where)
    true, pred, labels = _encode(y_true, y_pred, frame, where)
    timelines = find_timelines(frame, max_gap_seconds)
    return _Aligned.of(
        timelines.to_sorted(true),
        timelines.to_sorted(pred),
        labels,
        timelines.bounds,
        timelines,
    )


def _align_one(y_true: object, y_pred: object, where: str) -> _Aligned:
    """Encode two label sequences forming one timeline in time order."""
    true, pred, labels = _encode(y_true, y_pred, None, where)
    bounds = np.array([0, len(true)] if len(true) else [0], dtype=np.int64)
    return _Aligned.of(true, pred, labels, bounds)


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------


def _best_matches(aligned: _Aligned) -> tuple[np.ndarray, np.ndarray]:
    """For each predicted run, its best true run and their IoU.

    The best true run is the one of the same label with the highest IoU,
    the earliest among ties; the IoU is 0.0 when no true run of the same
    label overlaps. Only overlapping pairs are formed: runs partition the
    same positions, so there are fewer than ``n_true + n_pred`` of them, and
    they never cross a timeline boundary.
    """
    true, pred = aligned.true_runs, aligned.pred_runs
    # True runs overlapping predicted run j: indices lo[j] .. hi[j] - 1.
    lo = np.searchsorted(true.end, pred.start, side="right")
    hi = np.searchsorted(true.start, pred.end, side="left")
    count = hi - lo
    group = np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64)
    pair_pred = np.repeat(np.arange(len(pred)), count)
    pair_true = np.arange(int(count.sum())) - np.repeat(group - lo, count)

    p_start, p_end = pred.start[pair_pred], pred.end[pair_pred]
    t_start, t_end = true.start[pair_true], true.end[pair_true]
    intersection = np.minimum(p_end, t_end) - np.maximum(p_start, t_start)
    union = np.maximum(p_end, t_end) - np.minimum(p_start, t_start)
    iou = np.where(pred.label[pair_pred] == true.label[pair_true], intersection / union, 0.0)
    best_iou = np.maximum.reduceat(iou, group)
    is_best = iou == best_iou[pair_pred]
    best_true = np.minimum.reduceat(np.where(is_best, pair_true, len(true)), group)
    return best_true, best_iou


def _segment_counts(
    aligned: _Aligned, overlaps: Sequence[float]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-timeline (tp, fp, fn) of the segmental F1 at each overlap.

    Predicted runs are taken in time order; one whose best true run has IoU
    ≥ overlap and is not yet used is a true positive and uses it, any other
    is a false positive; unused true runs are false negatives. A true run
    is therefore matched exactly when some predicted run has it as its best
    match with enough IoU, which counts the true positives without a loop.
    """
    k = aligned.n_timelines
    n_true = aligned.true_runs.per_timeline(k)
    n_pred = aligned.pred_runs.per_timeline(k)
    if len(aligned.pred_runs) == 0:
        zeros = np.zeros(k, dtype=np.int64)
        return [(zeros, n_pred, n_true) for _ in overlaps]
    best_true, best_iou = _best_matches(aligned)
    out = []
    for overlap in overlaps:
        matched = np.unique(best_true[best_iou >= overlap])
        tp = np.bincount(aligned.true_runs.timeline[matched], minlength=k)
        out.append((tp, n_pred - tp, n_true - tp))
    return out


def _accuracy_of(true: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(true == pred)) if len(true) else 1.0


def _macro_f1_of(true: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """Macro F1 over codes ``0 .. n_labels - 1`` (every one of them present)."""
    if len(true) == 0:
        return 1.0
    labels = np.arange(n_labels)
    return float(f1_score(true, pred, labels=labels, average="macro", zero_division=0))


def _mixed_code(labels: np.ndarray) -> int:
    """Code of ``Mixed/Unknown`` among ``labels``, or -1 when absent."""
    mixed = np.flatnonzero(labels == MIXED_UNKNOWN)
    return int(mixed[0]) if len(mixed) else -1


def _reject_of(pred: np.ndarray, labels: np.ndarray) -> float:
    """Share of codes ``pred`` standing for ``Mixed/Unknown``."""
    return float(np.mean(pred == _mixed_code(labels))) if len(pred) else 0.0


def _f1_from_counts(tp: int, fp: int, fn: int) -> float:
    if tp + fp + fn == 0:
        return 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _levenshtein(a: np.ndarray, b: np.ndarray) -> int:
    """Edit distance between two integer sequences (unit costs).

    The dynamic programme runs one row per element of the shorter sequence,
    each row vectorized: the left-to-right insertion chain of a row is a
    running minimum of ``row[k] - k``.
    """
    if len(a) > len(b):
        a, b = b, a
    if len(a) == 0:
        return len(b)
    index = np.arange(len(b) + 1, dtype=np.int64)
    row = index.copy()
    step = np.empty_like(row)
    for i, value in enumerate(a.tolist(), start=1):
        step[0] = i
        np.minimum(row[1:] + 1, row[:-1] + (b != value), out=step[1:])
        row = np.minimum.accumulate(step - index) + index
    return int(row[-1])


def _edit_counts(aligned: _Aligned) -> tuple[np.ndarray, np.ndarray]:
    """Per-timeline edit distance between run label sequences, and its normalizer."""
    k = aligned.n_timelines
    true, pred = aligned.true_runs, aligned.pred_runs
    true_at, pred_at = true.slices(k), pred.slices(k)
    distance = np.zeros(k, dtype=np.int64)
    normalizer = np.maximum(np.diff(true_at), np.diff(pred_at))
    for t in range(k):
        a = true.label[true_at[t] : true_at[t + 1]]
        b = pred.label[pred_at[t] : pred_at[t + 1]]
        if len(a) != len(b) or not np.array_equal(a, b):
            distance[t] = _levenshtein(a, b)
    return distance, normalizer


def _edit_from_counts(distance: int, normalizer: int) -> float:
    return 1.0 if normalizer == 0 else 1.0 - distance / normalizer


# --------------------------------------------------------------------------
# One timeline
# --------------------------------------------------------------------------


def segmental_f1(y_true: ArrayLike, y_pred: ArrayLike, *, overlap: float = 0.5) -> float:
    """Segmental F1@k of one timeline.

    Both sequences are split into runs of equal labels. Taking the
    predicted runs in time order, each is compared with every true run of
    the same label by intersection over union (IoU, in buckets); it is a
    true positive when its best true run (highest IoU, the earlier on ties)
    reaches ``overlap`` and has not been matched yet, which then counts as
    matched; otherwise it is a false positive. True runs left unmatched
    are false negatives. F1 = 2PR / (P + R), 0.0 when P + R = 0.

    Parameters
    ----------
    y_true, y_pred : sequence
        Labels of one timeline, in time order, of equal length.
    overlap : float, default 0.5
        IoU threshold in (0, 1]; F1@10, F1@25 and F1@50 use 0.1, 0.25, 0.5.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both sequences are empty.

    Raises
    ------
    InputError
        If the sequences differ in length or hold a missing label.
    InvalidParameterError
        If ``overlap`` is outside (0, 1].

    See Also
    --------
    segmental_f1_score : the same over the timelines of a frame, pooled.

    Examples
    --------
    True runs AAAA|BBBB, predicted AAA|BBBBB: IoU 3/4 and 4/5.

    >>> segmental_f1(list("AAAABBBB"), list("AAABBBBB"), overlap=0.5)
    1.0

    Over-segmentation: against one true run of 8 A, the predicted runs
    AAA (IoU 3/8) and B (another label) are false positives, AAAA (IoU
    4/8) a true positive: P = 1/3, R = 1, F1 = 0.5.

    >>> segmental_f1(list("AAAAAAAA"), list("AAABAAAA"), overlap=0.5)
    0.5
    """
    overlap = _check_overlap(overlap)
    aligned = _align_one(y_true, y_pred, "segmental_f1")
    ((tp, fp, fn),) = _segment_counts(aligned, [overlap])
    return _f1_from_counts(int(tp.sum()), int(fp.sum()), int(fn.sum()))


def edit_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Segmental edit score of one timeline, on a 0..1 scale.

    ``1 - d / max(m, n)``, where ``d`` is the Levenshtein distance (unit
    cost insertions, deletions and substitutions) between the label
    sequences of the true runs (``m`` of them) and the predicted runs
    (``n``). It rewards getting the order of activities right and ignores
    how long each lasts.

    Parameters
    ----------
    y_true, y_pred : sequence
        Labels of one timeline, in time order, of equal length.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both sequences are empty.

    Raises
    ------
    InputError
        If the sequences differ in length or hold a missing label.

    See Also
    --------
    segmental_edit_score : the same over the timelines of a frame, pooled.

    Examples
    --------
    Runs A|B|A against A|B|C|A: one insertion over four runs.

    >>> edit_score(list("AABBAA"), list("AABCAA"))
    0.75
    """
    aligned = _align_one(y_true, y_pred, "edit_score")
    distance, normalizer = _edit_counts(aligned)
    return _edit_from_counts(int(distance.sum()), int(normalizer.sum()))


# --------------------------------------------------------------------------
# Frames: per timeline, pooled
# --------------------------------------------------------------------------


def accuracy_score(y_true: ArrayLike, y_pred: ArrayLike, X: pd.DataFrame | None = None) -> float:
    """Share of buckets whose predicted label equals the true one.

    A rejected bucket (``Mixed/Unknown``) counts as wrong unless the true
    label is ``Mixed/Unknown`` too. ``X`` is only checked for its length:
    timelines do not change accuracy.

    Parameters
    ----------
    y_true, y_pred : sequence
        Labels, position by position.
    X : DataFrame, optional
        The rows the labels belong to.

    Returns
    -------
    float
        1.0 for empty input.

    Examples
    --------
    >>> accuracy_score(["Build", "Debug", "Meet"], ["Build", "Debug", "Build"])
    0.6666666666666666
    """
    true, pred, _ = _encode(y_true, y_pred, X, "accuracy_score")
    return _accuracy_of(true, pred)


def macro_f1_score(y_true: ArrayLike, y_pred: ArrayLike, X: pd.DataFrame | None = None) -> float:
    """Macro-averaged F1 over the labels present in ``y_true`` or ``y_pred``.

    Computed with :func:`sklearn.metrics.f1_score` (``average="macro"``,
    ``zero_division=0``) over the union of the labels present, so a label
    only ever predicted (for instance ``Mixed/Unknown``) scores 0 and
    lowers the mean. ``X`` is only checked for its length.

    Parameters
    ----------
    y_true, y_pred : sequence
        Labels, position by position.
    X : DataFrame, optional
        The rows the labels belong to.

    Returns
    -------
    float
        1.0 for empty input.

    Examples
    --------
    Build: P = 1/2, R = 1, F1 = 2/3; Debug: P = 1, R = 1/2, F1 = 2/3.

    >>> round(macro_f1_score(["Build", "Debug", "Debug"], ["Build", "Build", "Debug"]), 4)
    0.6667
    """
    true, pred, labels = _encode(y_true, y_pred, X, "macro_f1_score")
    return _macro_f1_of(true, pred, len(labels))


def segmental_f1_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    X: pd.DataFrame,
    *,
    overlap: float = 0.5,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
) -> float:
    """Segmental F1@k over the timelines of ``X``, pooled.

    Runs are found per timeline (see :func:`segmental_f1` for the matching
    rule); true positives, false positives and false negatives are summed
    over all timelines and one F1 is computed from the sums.

    Parameters
    ----------
    y_true, y_pred : sequence
        Labels of the rows of ``X``, in the same (any) order.
    X : DataFrame
        Has ``bucket_start_ts``, and ``user_id`` when there are several users.
    overlap : float, default 0.5
        IoU threshold in (0, 1].
    max_gap_seconds : int, default 300
        Longest gap between bucket starts inside one timeline.

    Returns
    -------
    float
        1.0 for an empty frame.

    Raises
    ------
    InputError
        On a length mismatch, a missing label, or unusable ``X``.
    InvalidParameterError
        If ``overlap`` or ``max_gap_seconds`` is out of range.

    Examples
    --------
    Two users: A|B against A|B (2 TP) and A against A|B (1 TP, 1 FP at
    F1@50: the B run's IoU with the true A run is 0). P = 3/4, R = 1.

    >>> import pandas as pd
    >>> minutes = list(pd.date_range("2025-01-06 09:00", periods=4, freq="min"))
    >>> X = pd.DataFrame(
    ...     {"user_id": ["u1"] * 4 + ["u2"] * 4, "bucket_start_ts": minutes * 2}
    ... )
    >>> round(segmental_f1_score(list("AABBAAAA"), list("AABBAAAB"), X), 4)
    0.8571
    """
    overlap = _check_overlap(overlap)
    aligned = _align(y_true, y_pred, X, max_gap_seconds, "segmental_f1_score")
    ((tp, fp, fn),) = _segment_counts(aligned, [overlap])
    return _f1_from_counts(int(tp.sum()), int(fp.sum()), int(fn.sum()))


def segmental_edit_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    X: pd.DataFrame,
    *,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
) -> float:
    """Edit score over the timelines of ``X``, pooled by run count.

    ``1 - sum(d_t) / sum(max(m_t, n_t))`` over timelines ``t``, with
    ``d_t``, ``m_t``, ``n_t`` as in :func:`edit_score`: each timeline
    weighs by the length of its longer run sequence.

    Parameters
    ----------
    y_true, y_pred : sequence
        Labels of the rows of ``X``, in the same (any) order.
    X : DataFrame
        Has ``bucket_start_ts``, and ``user_id`` when there are several users.
    max_gap_seconds : int, default 300
        Longest gap between bucket starts inside one timeline.

    Returns
    -------
    float
        1.0 for an empty frame.

    Examples
    --------
    One timeline A|B|A against A|B|C|A (d = 1 over 4 runs) and a
    perfect one of 2 runs: 1 - 1/6.

    >>> import pandas as pd
    >>> minutes = list(pd.date_range("2025-01-06 09:00", periods=6, freq="min"))
    >>> X = pd.DataFrame(
    ...     {"user_id": ["u1"] * 6 + ["u2"] * 2, "bucket_start_ts": minutes + minutes[:2]}
    ... )
    >>> round(segmental_edit_score(list("AABBAAAB"), list("AABCAAAB"), X), 4)
    0.8333
    """
    aligned = _align(y_true, y_pred, X, max_gap_seconds, "segmental_edit_score")
    distance, normalizer = _edit_counts(aligned)
    return _edit_from_counts(int(distance.sum()), int(normalizer.sum()))


def _flap_from_runs(aligned: _Aligned) -> float:
    n = len(aligned.pred)
    changes = len(aligned.pred_runs) - aligned.n_timelines
    return changes / n if n else 0.0


def flap_rate_score(
    y_true: ArrayLike | None,
    y_pred: ArrayLike,
    X: pd.DataFrame,
    *,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
) -> float:
    """Flap rate of the predictions over the timelines of ``X``, pooled.

    The rule of :func:`taskclf.stages.smooth.flap_rate` (label changes divided by
    buckets, not by transitions) applied per timeline and pooled: all label
    changes between consecutive buckets of one timeline, divided by all
    buckets. A change across a timeline boundary is not a change. Lower is
    better; the scorer ``"neg_flap_rate"`` returns its negative.

    Parameters
    ----------
    y_true : sequence or None
        Ignored (``None`` is accepted); kept for a uniform signature.
    y_pred : sequence
        Predicted labels of the rows of ``X``, in the same (any) order.
    X : DataFrame
        Has ``bucket_start_ts``, and ``user_id`` when there are several users.
    max_gap_seconds : int, default 300
        Longest gap between bucket starts inside one timeline.

    Returns
    -------
    float
        0.0 for an empty frame or single buckets.

    See Also
    --------
    taskclf.stages.smooth.flap_rate : the same rule on one sequence.

    Examples
    --------
    Two changes in 4 buckets of u1; none in u2; the u1 -> u2 change does
    not count: 2 / 6.

    >>> import pandas as pd
    >>> minutes = list(pd.date_range("2025-01-06 09:00", periods=4, freq="min"))
    >>> X = pd.DataFrame(
    ...     {"user_id": ["u1"] * 4 + ["u2"] * 2, "bucket_start_ts": minutes + minutes[:2]}
    ... )
    >>> round(flap_rate_score(None, list("ABBABB"), X), 4)
    0.3333
    """
    pred = _labels_1d(y_pred, "y_pred", "flap_rate_score")
    true = pred if y_true is None else y_true
    aligned = _align(true, pred, X, max_gap_seconds, "flap_rate_score")
    return _flap_from_runs(aligned)


def reject_rate_score(
    y_true: ArrayLike | None,
    y_pred: ArrayLike,
    X: pd.DataFrame | None = None,
    *,
    source: Literal["label", "is_rejected"] = "label",
) -> float:
    """Share of rejected buckets.

    With ``source="label"`` a bucket is rejected when its predicted label
    is ``Mixed/Unknown`` (after smoothing and merging, when ``y_pred`` is
    the pipeline's final label). With ``source="is_rejected"`` the mean of
    the ``is_rejected`` column of ``X`` is taken: the rejector's own
    decision, before smoothing (``X`` must then be a transformed frame).
    Lower is better; the scorer ``"neg_reject_rate"`` returns its negative.

    Parameters
    ----------
    y_true : sequence or None
        Ignored (``None`` is accepted); kept for a uniform signature.
    y_pred : sequence
        Predicted labels.
    X : DataFrame, optional
        Checked for its length; read for ``source="is_rejected"``.
    source : {"label", "is_rejected"}, default "label"
        Where rejection is read from.

    Returns
    -------
    float
        0.0 for empty input.

    Examples
    --------
    >>> reject_rate_score(None, ["Build", "Mixed/Unknown", "Build", "Debug"])
    0.25
    """
    where = "reject_rate_score"
    if source not in ("label", "is_rejected"):
        raise InvalidParameterError(f"source must be 'label' or 'is_rejected', got {source!r}")
    _, pred, labels = _encode(y_pred if y_true is None else y_true, y_pred, X, where)
    if source == "label":
        return _reject_of(pred, labels)
    frame = _check_frame(X, where)
    require_columns(frame, [IS_REJECTED], where)
    flags = frame[IS_REJECTED]
    if not pd.api.types.is_bool_dtype(flags.dtype):
        raise ColumnTypeError(f"{where}: column {IS_REJECTED!r} must be boolean, got {flags.dtype}")
    return float(flags.to_numpy(dtype=bool).mean()) if len(flags) else 0.0


def _block_share_from_runs(aligned: _Aligned, min_buckets: int) -> float:
    runs = aligned.pred_runs
    if len(runs) == 0:
        return 1.0
    return float(np.mean((runs.end - runs.start) >= min_buckets))


def block_share_score(
    y_true: ArrayLike | None,
    y_pred: ArrayLike,
    X: pd.DataFrame,
    *,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
) -> float:
    """Share of predicted segments at least the minimum block duration long.

    Segments are the runs of equal predicted labels inside each timeline.
    A segment is long enough with at least ``max(1, min_block_seconds //
    bucket_seconds)`` buckets (the hysteresis merger's rule). Every segment
    counts once, whatever its length; the share is over all timelines.

    Parameters
    ----------
    y_true : sequence or None
        Ignored (``None`` is accepted); kept for a uniform signature.
    y_pred : sequence
        Predicted labels of the rows of ``X``, in the same (any) order.
    X : DataFrame
        Has ``bucket_start_ts``, and ``user_id`` when there are several users.
    min_block_seconds : int, default 180
        Minimum block duration (≥ 0).
    bucket_seconds : int, default 60
        Bucket width (> 0).
    max_gap_seconds : int, default 300
        Longest gap between bucket starts inside one timeline.

    Returns
    -------
    float
        1.0 for an empty frame.

    Examples
    --------
    Segments AAA (3 buckets), B (1), AA (2): one of three reaches 3 buckets.

    >>> import pandas as pd
    >>> X = pd.DataFrame(
    ...     {"bucket_start_ts": pd.date_range("2025-01-06 09:00", periods=6, freq="min")}
    ... )
    >>> round(block_share_score(None, list("AAABAA"), X), 4)
    0.3333
    """
    where = "block_share_score"
    min_buckets = min_buckets_of(
        check_min_duration(min_block_seconds),
        check_positive_seconds(bucket_seconds, "bucket_seconds"),
    )
    pred = _labels_1d(y_pred, "y_pred", where)
    aligned = _align(pred if y_true is None else y_true, pred, X, max_gap_seconds, where)
    return _block_share_from_runs(aligned, min_buckets)


def _overlap_key(overlap: float) -> str:
    return f"segmental_f1@{overlap * 100:g}"


def summarize(
    X: pd.DataFrame,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    overlaps: Iterable[float] = DEFAULT_OVERLAPS,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> dict[str, float]:
    """Every measure at once, finding the timelines of ``X`` once.

    Parameters
    ----------
    X : DataFrame
        Has ``bucket_start_ts``, and ``user_id`` when there are several users.
    y_true, y_pred : sequence
        Labels of the rows of ``X``, in the same (any) order.
    overlaps : iterable of float, default (0.1, 0.25, 0.5)
        IoU thresholds of the segmental F1 scores.
    max_gap_seconds : int, default 300
        Longest gap between bucket starts inside one timeline.
    min_block_seconds : int, default 180
        Minimum block duration of :func:`block_share_score`.
    bucket_seconds : int, default 60
        Bucket width.

    Returns
    -------
    dict of str to float
        ``accuracy``, ``macro_f1``, ``segmental_f1@<100 * overlap>`` for
        each overlap (``segmental_f1@10``, ``@25``, ``@50`` by default),
        ``edit_score``, ``flap_rate``, ``reject_rate`` and ``block_share``,
        equal to what the individual functions return.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame(
    ...     {"bucket_start_ts": pd.date_range("2025-01-06 09:00", periods=8, freq="min")}
    ... )
    >>> scores = summarize(X, list("AAAABBBB"), list("AAABBBBB"))
    >>> scores["accuracy"], scores["segmental_f1@50"], scores["flap_rate"]
    (0.875, 1.0, 0.125)
    """
    where = "summarize"
    frame = _check_frame(X, where)
    checked = [_check_overlap(overlap) for overlap in overlaps]
    min_buckets = min_buckets_of(
        check_min_duration(min_block_seconds),
        check_positive_seconds(bucket_seconds, "bucket_seconds"),
    )
    aligned = _align(y_true, y_pred, frame, max_gap_seconds, where)

    scores: dict[str, float] = {
        "accuracy": _accuracy_of(aligned.true, aligned.pred),
        "macro_f1": _macro_f1_of(aligned.true, aligned.pred, len(aligned.labels)),
    }
    for overlap, (tp, fp, fn) in zip(checked, _segment_counts(aligned, checked), strict=True):
        scores[_overlap_key(overlap)] = _f1_from_counts(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    distance, normalizer = _edit_counts(aligned)
    scores["edit_score"] = _edit_from_counts(int(distance.sum()), int(normalizer.sum()))
    scores["flap_rate"] = _flap_from_runs(aligned)
    scores["reject_rate"] = _reject_of(aligned.pred, aligned.labels)
    scores["block_share"] = _block_share_from_runs(aligned, min_buckets)
    return scores


def _f1_per_timeline(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Segmental F1 of each timeline from its counts (every timeline has runs)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (2 * tp + fp + fn)
    return np.where(tp > 0, f1, 0.0)


def _macro_f1_per_timeline(aligned: _Aligned) -> np.ndarray:
    """Macro F1 of each timeline over the labels present in it.

    Per (timeline, label) pair present in the truth or the prediction,
    F1 = 2 TP / (true count + predicted count), the value of
    :func:`sklearn.metrics.f1_score`; each timeline averages its pairs.
    """
    k, n_labels, n = aligned.n_timelines, len(aligned.labels), len(aligned.true)
    row_timeline = np.repeat(np.arange(k), np.diff(aligned.bounds))
    keys, pair = np.unique(
        np.concatenate(
            [row_timeline * n_labels + aligned.true, row_timeline * n_labels + aligned.pred]
        ),
        return_inverse=True,
    )
    true_count = np.bincount(pair[:n], minlength=len(keys))
    pred_count = np.bincount(pair[n:], minlength=len(keys))
    hits = np.bincount(pair[:n], weights=aligned.true == aligned.pred, minlength=len(keys))
    f1 = 2 * hits / (true_count + pred_count)
    owner = keys // n_labels
    return np.bincount(owner, weights=f1, minlength=k) / np.bincount(owner, minlength=k)


def timeline_report(
    X: pd.DataFrame,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    overlaps: Iterable[float] = DEFAULT_OVERLAPS,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> pd.DataFrame:
    """Every measure of every timeline, one row per timeline.

    Each row holds what :func:`summarize` would give for that timeline
    alone; :func:`summarize` pools the same per-timeline counts.

    Parameters
    ----------
    X : DataFrame
        Has ``bucket_start_ts``, and ``user_id`` when there are several users.
    y_true, y_pred : sequence
        Labels of the rows of ``X``, in the same (any) order.
    overlaps : iterable of float, default (0.1, 0.25, 0.5)
        IoU thresholds of the segmental F1 scores.
    max_gap_seconds : int, default 300
        Longest gap between bucket starts inside one timeline.
    min_block_seconds : int, default 180
        Minimum block duration of :func:`block_share_score`.
    bucket_seconds : int, default 60
        Bucket width; a timeline ends at its last bucket's start plus this.

    Returns
    -------
    DataFrame
        Timelines in order (users by first appearance, then time):
        ``user_id`` (when ``X`` has it), ``start_ts``, ``end_ts`` (UTC),
        ``bucket_count``, then the columns named as the keys of
        :func:`summarize`.

    Examples
    --------
    >>> import pandas as pd
    >>> minutes = list(pd.date_range("2025-01-06 09:00", periods=4, freq="min"))
    >>> X = pd.DataFrame(
    ...     {"user_id": ["u1"] * 4 + ["u2"] * 4, "bucket_start_ts": minutes * 2}
    ... )
    >>> report = timeline_report(X, list("AABBAAAA"), list("AABBAAAB"))
    >>> report[["user_id", "bucket_count", "segmental_f1@50", "flap_rate"]]
      user_id  bucket_count  segmental_f1@50  flap_rate
    0      u1             4         1.000000       0.25
    1      u2             4         0.666667       0.25
    """
    where = "timeline_report"
    frame = _check_frame(X, where)
    checked = [_check_overlap(overlap) for overlap in overlaps]
    width = check_positive_seconds(bucket_seconds, "bucket_seconds")
    min_buckets = min_buckets_of(check_min_duration(min_block_seconds), width)
    aligned = _align(y_true, y_pred, frame, max_gap_seconds, where)
    timelines = aligned.timelines
    assert timelines is not None
    k = aligned.n_timelines
    first, last = aligned.bounds[:-1], aligned.bounds[1:] - 1
    size = np.diff(aligned.bounds)
    row_timeline = np.repeat(np.arange(k), size)

    columns: dict[str, Any] = {}
    if timelines.user_codes is not None and timelines.users is not None:
        columns["user_id"] = timelines.users[timelines.user_codes[first]]
    end_ns = timelines.ts_ns[last] + np.int64(width) * 1_000_000_000
    columns["start_ts"] = pd.to_datetime(timelines.ts_ns[first], utc=True)
    columns["end_ts"] = pd.to_datetime(end_ns, utc=True)
    columns["bucket_count"] = size
    correct = np.bincount(row_timeline, weights=aligned.true == aligned.pred, minlength=k)
    columns["accuracy"] = correct / size
    columns["macro_f1"] = _macro_f1_per_timeline(aligned)
    for overlap, (tp, fp, fn) in zip(checked, _segment_counts(aligned, checked), strict=True):
        columns[_overlap_key(overlap)] = _f1_per_timeline(tp, fp, fn)
    distance, normalizer = _edit_counts(aligned)
    columns["edit_score"] = 1.0 - distance / np.maximum(normalizer, 1)
    runs = aligned.pred_runs
    n_runs = runs.per_timeline(k)
    columns["flap_rate"] = (n_runs - 1) / size
    rejected = aligned.pred == _mixed_code(aligned.labels)
    columns["reject_rate"] = np.bincount(row_timeline, weights=rejected, minlength=k) / size
    long_runs = (runs.end - runs.start) >= min_buckets
    columns["block_share"] = np.bincount(
        runs.timeline, weights=long_runs, minlength=k
    ) / np.maximum(n_runs, 1)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------
# scikit-learn scorers
# --------------------------------------------------------------------------


@attrs.frozen
class _Metric:
    function: Callable[..., float]
    sign: float
    defaults: Mapping[str, Any] = attrs.field(factory=dict)


_METRICS: dict[str, _Metric] = {
    "accuracy": _Metric(accuracy_score, 1.0),
    "macro_f1": _Metric(macro_f1_score, 1.0),
    "segmental_f1": _Metric(segmental_f1_score, 1.0),
    "segmental_f1@10": _Metric(segmental_f1_score, 1.0, {"overlap": 0.1}),
    "segmental_f1@25": _Metric(segmental_f1_score, 1.0, {"overlap": 0.25}),
    "segmental_f1@50": _Metric(segmental_f1_score, 1.0, {"overlap": 0.5}),
    "edit_score": _Metric(segmental_edit_score, 1.0),
    "neg_flap_rate": _Metric(flap_rate_score, -1.0),
    "neg_reject_rate": _Metric(reject_rate_score, -1.0),
    "block_share": _Metric(block_share_score, 1.0),
}

_SUMMARY_KEYS: dict[str, str] = {
    "accuracy": "accuracy",
    "macro_f1": "macro_f1",
    "segmental_f1@10": "segmental_f1@10",
    "segmental_f1@25": "segmental_f1@25",
    "segmental_f1@50": "segmental_f1@50",
    "edit_score": "edit_score",
    "neg_flap_rate": "flap_rate",
    "neg_reject_rate": "reject_rate",
    "block_share": "block_share",
}


def _keyword_params(function: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def _check_params(name: str, function: Callable[..., Any], params: Mapping[str, Any]) -> None:
    allowed = _keyword_params(function)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidParameterError(
            f"scorer {name!r} takes no parameter(s) {unknown}; "
            f"it accepts {allowed if allowed else 'none'}"
        )
    if "overlap" in params:
        _check_overlap(params["overlap"])
    for key in ("max_gap_seconds", "bucket_seconds"):
        if key in params:
            check_positive_seconds(params[key], key)
    if "min_block_seconds" in params:
        check_min_duration(params["min_block_seconds"])
    if "source" in params and params["source"] not in ("label", "is_rejected"):
        raise InvalidParameterError(
            f"source must be 'label' or 'is_rejected', got {params['source']!r}"
        )


def _unknown_name(name: object, valid: Iterable[str]) -> InvalidParameterError:
    return InvalidParameterError(f"unknown scorer {name!r}; valid names: {sorted(valid)}")


def _check_y(y: object, name: str) -> None:
    if y is None:
        raise InputError(f"scorer {name!r} needs the true labels y, got None")


class TimelineScorer:
    """A scikit-learn scorer for one taskclf measure.

    Called as ``scorer(estimator, X, y)``: predicts ``X`` once and scores
    the predictions against ``y``; timeline measures read the timelines from
    ``X`` (``bucket_start_ts``, ``user_id``), whatever the row order. Higher
    is always better: rates come negated. Instances are picklable and are
    usually made with :func:`get_scorer` or :func:`make_timeline_scorer`.

    Parameters
    ----------
    name : str
        A scorer name (see :data:`SCORERS`), or ``"segmental_f1"``.
    **params
        Keyword parameters of the measure (``overlap``,
        ``max_gap_seconds``, ...), overriding the name's presets.

    Attributes
    ----------
    name : str
    params : dict
        The parameters the measure is called with.
    """

    def __init__(self, name: str, **params: Any) -> None:
        if not isinstance(name, str) or name not in _METRICS:
            raise _unknown_name(name, _METRICS)
        metric = _METRICS[name]
        merged = {**metric.defaults, **params}
        _check_params(name, metric.function, merged)
        self.name = name
        self.params = merged

    def score(self, y_true: ArrayLike, y_pred: ArrayLike, X: pd.DataFrame) -> float:
        """Score given predictions (sign applied)."""
        metric = _METRICS[self.name]
        value = metric.function(y_true, y_pred, X, **self.params)
        return float(metric.sign * value) + 0.0

    def __call__(self, estimator: Any, X: pd.DataFrame, y: ArrayLike) -> float:
        """Predict ``X`` with ``estimator`` once and score against ``y``."""
        _check_y(y, self.name)
        return self.score(y, estimator.predict(X), X)

    def __repr__(self) -> str:
        shown = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({self.name!r}{shown})"


class SummaryScorer:
    """A multi-metric scikit-learn scorer: one prediction, one timeline pass.

    Called as ``scorer(estimator, X, y)`` it returns a dict from scorer
    names to signed scores, as ``scoring=`` in ``cross_validate`` and
    ``GridSearchCV`` accepts (give ``refit`` one of the names). Made with
    :func:`make_summary_scorer`.

    Parameters
    ----------
    names : sequence of str
        Names from :data:`SCORERS`.
    **params
        Parameters of :func:`summarize` (``max_gap_seconds``,
        ``min_block_seconds``, ``bucket_seconds``).
    """

    def __init__(self, names: Sequence[str], **params: Any) -> None:
        names = list(names)
        unknown = [name for name in names if name not in _SUMMARY_KEYS]
        if unknown:
            raise _unknown_name(unknown[0], _SUMMARY_KEYS)
        _check_params("summary", summarize, params)
        if "overlaps" in params:
            raise InvalidParameterError(
                "a summary scorer takes its overlaps from the names (segmental_f1@10, @25, @50)"
            )
        self.names = names
        self.params = dict(params)

    def __call__(self, estimator: Any, X: pd.DataFrame, y: ArrayLike) -> dict[str, float]:
        """Predict ``X`` once; score every named measure (signs applied)."""
        _check_y(y, "summary")
        scores = summarize(X, y, estimator.predict(X), **self.params)
        return {
            name: float(_METRICS[name].sign * scores[_SUMMARY_KEYS[name]]) + 0.0
            for name in self.names
        }

    def __repr__(self) -> str:
        shown = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({self.names!r}{shown})"


SCORERS: dict[str, TimelineScorer] = {
    name: TimelineScorer(name) for name in _METRICS if name != "segmental_f1"
}
"""Ready scorers by name: accuracy, macro_f1, segmental_f1@10, @25, @50,
edit_score, neg_flap_rate, neg_reject_rate, block_share (default
parameters)."""


def get_scorer(name: str) -> TimelineScorer:
    """The scorer of a name in :data:`SCORERS`, with default parameters.

    Parameters
    ----------
    name : str
        One of ``accuracy``, ``macro_f1``, ``segmental_f1@10``,
        ``segmental_f1@25``, ``segmental_f1@50``, ``edit_score``,
        ``neg_flap_rate``, ``neg_reject_rate``, ``block_share``.

    Returns
    -------
    TimelineScorer

    Raises
    ------
    InvalidParameterError
        For an unknown name; the message lists the valid ones.

    Examples
    --------
    >>> get_scorer("segmental_f1@50")
    TimelineScorer('segmental_f1@50', overlap=0.5)
    """
    if not isinstance(name, str) or name not in SCORERS:
        raise _unknown_name(name, SCORERS)
    return TimelineScorer(name)


def make_timeline_scorer(metric_name: str, **kwargs: Any) -> TimelineScorer:
    """A scorer for one measure with chosen parameters.

    Parameters
    ----------
    metric_name : str
        A name in :data:`SCORERS`, or ``"segmental_f1"`` (any overlap).
    **kwargs
        Keyword parameters of the measure's function, e.g. ``overlap`` for
        segmental F1, ``max_gap_seconds`` for timeline measures,
        ``min_block_seconds`` for the block share.

    Returns
    -------
    TimelineScorer

    Raises
    ------
    InvalidParameterError
        For an unknown name or parameter, or a parameter out of range.

    Examples
    --------
    >>> make_timeline_scorer("segmental_f1", overlap=0.75)
    TimelineScorer('segmental_f1', overlap=0.75)
    >>> make_timeline_scorer("neg_flap_rate", max_gap_seconds=600)
    TimelineScorer('neg_flap_rate', max_gap_seconds=600)
    """
    return TimelineScorer(metric_name, **kwargs)


def make_summary_scorer(names: Sequence[str] | None = None, **kwargs: Any) -> SummaryScorer:
    """A multi-metric scorer computing several measures from one prediction.

    Parameters
    ----------
    names : sequence of str, optional
        Names from :data:`SCORERS`; all of them by default.
    **kwargs
        ``max_gap_seconds``, ``min_block_seconds``, ``bucket_seconds``.

    Returns
    -------
    SummaryScorer

    Examples
    --------
    >>> make_summary_scorer(["segmental_f1@50", "neg_flap_rate"])
    SummaryScorer(['segmental_f1@50', 'neg_flap_rate'])
    """
    return SummaryScorer(list(SCORERS) if names is None else names, **kwargs)


__all__ = [
    "DEFAULT_OVERLAPS",
    "SCORERS",
    "SummaryScorer",
    "TimelineScorer",
    "accuracy_score",
    "block_share_score",
    "edit_score",
    "flap_rate_score",
    "get_scorer",
    "macro_f1_score",
    "make_summary_scorer",
    "make_timeline_scorer",
    "reject_rate_score",
    "segmental_edit_score",
    "segmental_f1",
    "segmental_f1_score",
    "summarize",
    "timeline_report",
]
