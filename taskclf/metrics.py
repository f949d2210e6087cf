"""Quality measures of predicted labels, per timeline, per user and pooled.

Row measures look at each bucket alone: accuracy, macro F1 (scikit-learn's
``f1_score(average="macro", zero_division=0)`` over the labels present in
the truth or the prediction) and reject rate (the share of ``Mixed/Unknown``
predictions). Timeline measures look at runs of equal labels, which never
cross a timeline boundary (see docs/contract.md): segmental F1@k, edit
score, flap rate and block share (the share of predicted runs lasting at
least the minimum block duration).

Every measure is computed from counts per timeline (buckets per label,
runs, matched runs, edit distances, ...); pooled and per-user figures apply
the same rule to the summed counts. So segmental F1 pools true and false
positives and negatives, edit score pools distances and run counts, flap
rate divides all changes inside timelines by all buckets. Empty input
scores as perfect: 1.0 for accuracy, macro F1, segmental F1, edit score and
block share; 0.0 for flap and reject rate. Labels may be any hashable
values; a missing label is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from taskclf._columns import (
    BUCKET_START_TS,
    CONFIDENCE,
    IS_REJECTED,
    LABEL,
    PROBA_COLUMNS,
    RAW_LABEL,
)
from taskclf._frame import (
    check_finite_columns,
    check_frame,
    factorize_labels,
    label_codes,
    require_columns,
)
from taskclf.core.defaults import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_IDLE_GAP_SECONDS,
    MIN_BLOCK_DURATION_SECONDS,
)
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN, OUTPUT_LABELS
from taskclf.exceptions import ColumnTypeError, InputError, InvalidParameterError
from taskclf.stages._base import DURATION, GAP, SECONDS, check_value, integer, one_of, real
from taskclf.stages._timeline import find_timelines
from taskclf.stages.merge import min_buckets_of
from taskclf.stages.segment import run_starts

DEFAULT_OVERLAPS: tuple[float, ...] = (0.1, 0.25, 0.5)
"""IoU thresholds of the segmental F1 scores :func:`summarize` reports."""

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 20 for i in range(21))
"""Confidence thresholds of the coverage-accuracy curve of :func:`evaluate`."""

Counts = dict[str, np.ndarray]
"""Counts by name, each an array with one row per timeline."""

_OVERLAP = real(0.0, 1.0, open_low=True)
_ROW_MEASURES = ("accuracy", "macro_f1", "reject_rate")


def _one_dimensional(values: object, name: str, where: str) -> np.ndarray:
    """``values`` as a 1-d object array."""
    array = np.asarray(values, dtype=object)
    if isinstance(values, pd.DataFrame) or array.ndim != 1:
        raise InputError(f"{where}: {name} must be one-dimensional, got shape {array.shape}")
    return array


def _encode(
    y_true: object, y_pred: object, n_rows: int | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of ``y_true`` and ``y_pred`` into the distinct labels of both."""
    true = _one_dimensional(y_true, "y_true", where)
    pred = _one_dimensional(y_pred, "y_pred", where)
    if len(true) != len(pred):
        raise InputError(f"{where}: y_true has {len(true)} labels but y_pred has {len(pred)}")
    if n_rows is not None and n_rows != len(true):
        raise InputError(
            f"{where}: X has {n_rows} rows but y_true and y_pred have {len(true)} labels"
        )
    true_codes, true_labels = factorize_labels(true, f"{where}: y_true labels")
    pred_codes, pred_labels = factorize_labels(pred, f"{where}: y_pred labels")
    both = np.concatenate([true_labels, pred_labels])
    labels = pd.Index(both, dtype=object, tupleize_cols=False).unique()
    pred_index = pd.Index(pred_labels, dtype=object, tupleize_cols=False)
    return true_codes, labels.get_indexer(pred_index)[pred_codes], np.asarray(labels)


def _rejected_flags(frame: pd.DataFrame, where: str) -> np.ndarray:
    """The boolean ``is_rejected`` column of ``frame``."""
    require_columns(frame, [IS_REJECTED], where)
    flags = frame[IS_REJECTED]
    if not pd.api.types.is_bool_dtype(flags.dtype):
        raise ColumnTypeError(f"{where}: column {IS_REJECTED!r} must be boolean, got {flags.dtype}")
    return flags.to_numpy(dtype=bool)


def _min_buckets(bucket_seconds: Any, min_block_seconds: Any, where: str) -> int:
    """The shortest block in buckets, from checked widths."""
    width = check_value(bucket_seconds, SECONDS, "bucket_seconds", where)
    duration = check_value(min_block_seconds, DURATION, "min_block_seconds", where)
    return min_buckets_of(duration, width)


def _overlap_key(overlap: float) -> str:
    return f"segmental_f1@{overlap * 100:g}"


def _ratio(numerator: ArrayLike, denominator: ArrayLike, empty: float) -> np.ndarray:
    """``numerator / denominator``, and ``empty`` where the denominator is 0."""
    top, bottom = np.asarray(numerator, dtype=float), np.asarray(denominator)
    out = np.full(np.broadcast_shapes(top.shape, bottom.shape), empty)
    return np.divide(top, bottom, out=out, where=bottom != 0)


# --------------------------------------------------------------------------
# Counts per timeline
# --------------------------------------------------------------------------


def label_changes(codes: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Label changes inside each timeline, the kernel of the flap rate.

    Parameters
    ----------
    codes : ndarray, shape (n,)
        Labels (any comparable dtype), timelines concatenated in time order.
    bounds : ndarray of int, shape (n_timelines + 1,)
        Start position of each timeline, then ``n``.

    Returns
    -------
    ndarray of int64, shape (n_timelines,)
        Positions where the label differs from the previous one of the same timeline.

    Examples
    --------
    >>> label_changes(np.array([1, 2, 2, 1, 1]), np.array([0, 3, 5])).tolist()
    [1, 0]
    """
    starts = run_starts(codes, bounds)
    return np.diff(np.searchsorted(starts, bounds)).astype(np.int64) - 1


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
        end = np.append(start[1:], len(codes))[: len(start)]
        timeline = np.searchsorted(bounds, start, side="right") - 1
        return cls(start, end, codes[start], timeline)


def _matched_runs(true: _Runs, pred: _Runs, overlaps: Sequence[float], k: int) -> np.ndarray:
    """True runs matched at each overlap, per timeline: shape (k, len(overlaps)).

    Only overlapping pairs of runs are formed. Each predicted run's best
    true run is the one of the same label with the highest IoU, the earliest
    among ties; a true run is matched exactly when it is the best run of
    some predicted run with enough IoU, so the matches need no loop.
    """
    matched = np.zeros((k, len(overlaps)), dtype=np.int64)
    if len(pred.start) == 0:
        return matched
    # True runs overlapping predicted run j: indices lo[j] .. lo[j] + count[j] - 1.
    lo = np.searchsorted(true.end, pred.start, side="right")
    count = np.searchsorted(true.start, pred.end, side="left") - lo
    first = np.concatenate(([0], np.cumsum(count)[:-1]))
    pair_pred = np.repeat(np.arange(len(pred.start)), count)
    pair_true = np.arange(int(count.sum())) - np.repeat(first - lo, count)
    p_start, p_end = pred.start[pair_pred], pred.end[pair_pred]
    t_start, t_end = true.start[pair_true], true.end[pair_true]
    intersection = np.minimum(p_end, t_end) - np.maximum(p_start, t_start)
    union = np.maximum(p_end, t_end) - np.minimum(p_start, t_start)
    iou = np.where(pred.label[pair_pred] == true.label[pair_true], intersection / union, 0.0)
    best_iou = np.maximum.reduceat(iou, first)
    candidates = np.where(iou == best_iou[pair_pred], pair_true, len(true.start))
    best_true = np.minimum.reduceat(candidates, first)
    for column, overlap in enumerate(overlaps):
        hits = np.unique(best_true[best_iou >= overlap])
        matched[:, column] = np.bincount(true.timeline[hits], minlength=k)
    return matched


def _levenshtein(a: np.ndarray, b: np.ndarray) -> int:
    """Edit distance of two sequences, one vectorized row of the programme per element."""
    if len(a) > len(b):
        a, b = b, a
    index = np.arange(len(b) + 1, dtype=np.int64)
    row = index.copy()
    step = np.empty_like(row)
    for i, value in enumerate(a.tolist(), start=1):
        step[0] = i
        np.minimum(row[1:] + 1, row[:-1] + (b != value), out=step[1:])
        # The insertion chain along the row is a running minimum of row[j] - j.
        row = np.minimum.accumulate(step - index) + index
    return int(row[-1])


def _edit_distances(true: _Runs, pred: _Runs, k: int) -> np.ndarray:
    """Edit distance between the run label sequences of each timeline."""
    true_at = np.searchsorted(true.timeline, np.arange(k + 1))
    pred_at = np.searchsorted(pred.timeline, np.arange(k + 1))
    distance = np.zeros(k, dtype=np.int64)
    for t in range(k):
        a = true.label[true_at[t] : true_at[t + 1]]
        b = pred.label[pred_at[t] : pred_at[t + 1]]
        if not np.array_equal(a, b):
            distance[t] = _levenshtein(a, b)
    return distance


def _counts(
    true: np.ndarray,
    pred: np.ndarray,
    labels: np.ndarray,
    bounds: np.ndarray,
    overlaps: Sequence[float] = (),
    min_buckets: int = 1,
    edit: bool = False,
) -> Counts:
    """Everything the measures are made of, one row per timeline.

    ``true`` and ``pred`` are codes into ``labels``, timelines concatenated
    in time order; ``edit`` asks for the edit distances, the costly count.
    """
    k, n_labels = len(bounds) - 1, len(labels)
    buckets = np.diff(bounds)
    row = np.repeat(np.arange(k), buckets) * n_labels

    def per_label(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(row + codes, weights, minlength=k * n_labels).reshape(k, n_labels)

    true_runs, pred_runs = _Runs.of(true, bounds), _Runs.of(pred, bounds)
    counts = {
        "buckets": buckets,
        "true": per_label(true),
        "pred": per_label(pred),
        "hits": per_label(true, true == pred),
        "changes": label_changes(pred, bounds),
        "true_runs": np.bincount(true_runs.timeline, minlength=k),
        "pred_runs": np.bincount(pred_runs.timeline, minlength=k),
        "long_runs": np.bincount(
            pred_runs.timeline, pred_runs.end - pred_runs.start >= min_buckets, k
        ),
    }
    counts["rejected"] = counts["pred"][:, labels == MIXED_UNKNOWN].sum(axis=1)
    matched = _matched_runs(true_runs, pred_runs, overlaps, k)
    for column, overlap in enumerate(overlaps):
        counts[_overlap_key(overlap)] = matched[:, column]
    if edit:
        counts["edit_distance"] = _edit_distances(true_runs, pred_runs, k)
        counts["edit_length"] = np.maximum(counts["true_runs"], counts["pred_runs"])
    return counts


def _scores(counts: Counts) -> dict[str, np.ndarray]:
    """The measures of each row of ``counts``, keyed as :func:`summarize`'s."""
    buckets, present = counts["buckets"], counts["true"] + counts["pred"]
    label_f1 = _ratio(2 * counts["hits"], present, 0.0)
    scores = {
        "accuracy": _ratio(counts["hits"].sum(axis=1), buckets, 1.0),
        "macro_f1": _ratio(label_f1.sum(axis=1), (present > 0).sum(axis=1), 1.0),
    }
    runs = counts["true_runs"] + counts["pred_runs"]
    for key in counts:
        if key.startswith("segmental_f1@"):  # 2PR / (P + R), P = tp / pred runs, R = tp / true runs
            scores[key] = _ratio(2 * counts[key], runs, 1.0)
    if "edit_distance" in counts:
        scores["edit_score"] = 1.0 - _ratio(counts["edit_distance"], counts["edit_length"], 0.0)
    scores["flap_rate"] = _ratio(counts["changes"], buckets, 0.0)
    scores["reject_rate"] = _ratio(counts["rejected"], buckets, 0.0)
    scores["block_share"] = _ratio(counts["long_runs"], counts["pred_runs"], 1.0)
    return scores


def _pooled(counts: Counts) -> dict[str, float]:
    """The measures of the counts summed over the timelines."""
    total = {key: value.sum(axis=0, keepdims=True) for key, value in counts.items()}
    return {key: float(value[0]) for key, value in _scores(total).items()}


def _sequence_score(
    key: str, y_true: object, y_pred: object, where: str, n_rows: int | None = None, **params: Any
) -> float:
    """One measure of two label sequences taken as one timeline."""
    true, pred, labels = _encode(y_true, y_pred, n_rows, where)
    bounds = np.array([0, len(true)] if len(true) else [0], dtype=np.int64)
    return _pooled(_counts(true, pred, labels, bounds, **params))[key]


def _frame_counts(
    X: object,
    y_true: object,
    y_pred: object,
    where: str,
    overlaps: Iterable[float] = (),
    edit: bool = False,
    max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> tuple[Counts, Any]:
    """Check the input, find the timelines of ``X`` and count per timeline."""
    overlaps = [float(check_value(o, _OVERLAP, "overlap", where)) for o in overlaps]
    min_buckets = _min_buckets(bucket_seconds, min_block_seconds, where)
    check_value(max_gap_seconds, GAP, "max_gap_seconds", where)
    frame = check_frame(X, where)
    require_columns(frame, [BUCKET_START_TS], where)
    true, pred, labels = _encode(y_true, y_pred, len(frame), where)
    timelines = find_timelines(frame, max_gap_seconds)
    sort = timelines.to_sorted
    counts = _counts(sort(true), sort(pred), labels, timelines.bounds, overlaps, min_buckets, edit)
    return counts, timelines


# --------------------------------------------------------------------------
# One sequence; a frame pooled and per timeline
# --------------------------------------------------------------------------


def flap_rate(labels: Sequence[object]) -> float:
    """Label changes divided by the number of buckets, of one sequence.

    Not divided by the number of transitions; 0.0 for one bucket or none.

    Examples
    --------
    >>> flap_rate(["Build", "Build", "Debug", "Build"])
    0.5
    """
    return _sequence_score("flap_rate", labels, labels, "flap_rate")


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

    Examples
    --------
    Against one true run of 8 A, the predicted runs AAA (IoU 3/8) and B are
    false positives, AAAA (IoU 4/8) a true positive: P = 1/3, R = 1.

    >>> segmental_f1(list("AAAAAAAA"), list("AAABAAAA"), overlap=0.5)
    0.5
    """
    overlap = float(check_value(overlap, _OVERLAP, "overlap", "segmental_f1"))
    key = _overlap_key(overlap)
    return _sequence_score(key, y_true, y_pred, "segmental_f1", overlaps=[overlap])


def edit_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Segmental edit score of one timeline, on a 0..1 scale.

    ``1 - d / max(m, n)``, where ``d`` is the Levenshtein distance (unit
    cost insertions, deletions and substitutions) between the label
    sequences of the ``m`` true and the ``n`` predicted runs: the order of
    activities counts, not how long each lasts. 1.0 for empty sequences.

    Examples
    --------
    Runs A|B|A against A|B|C|A: one insertion over four runs.

    >>> edit_score(list("AABBAA"), list("AABCAA"))
    0.75
    """
    return _sequence_score("edit_score", y_true, y_pred, "edit_score", edit=True)


def summarize(
    X: pd.DataFrame,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    overlaps: Iterable[float] = DEFAULT_OVERLAPS,
    max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> dict[str, float]:
    """Every measure at once, pooled over the timelines of ``X``.

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
        Minimum block duration (≥ 0) of the block share.
    bucket_seconds : int, default 60
        Bucket width.

    Returns
    -------
    dict of str to float
        ``accuracy``, ``macro_f1``, ``segmental_f1@<100 * overlap>`` for
        each overlap, ``edit_score``, ``flap_rate``, ``reject_rate`` and
        ``block_share``.

    Examples
    --------
    >>> X = pd.DataFrame({"bucket_start_ts": pd.date_range("2025-01-06", periods=8, freq="min")})
    >>> scores = summarize(X, list("AAAABBBB"), list("AAABBBBB"))
    >>> scores["accuracy"], scores["segmental_f1@50"], scores["flap_rate"]
    (0.875, 1.0, 0.125)
    """
    widths = (max_gap_seconds, min_block_seconds, bucket_seconds)
    counts, _ = _frame_counts(X, y_true, y_pred, "summarize", overlaps, True, *widths)
    return _pooled(counts)


def timeline_report(
    X: pd.DataFrame,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    overlaps: Iterable[float] = DEFAULT_OVERLAPS,
    max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> pd.DataFrame:
    """Every measure of every timeline: what :func:`summarize` (same parameters) gives for each.

    Returns
    -------
    DataFrame
        One row per timeline, in order (users by first appearance, then
        time): ``user_id`` (when ``X`` has it), ``start_ts``, ``end_ts`` (UTC;
        a timeline ends at its last bucket's start plus ``bucket_seconds``),
        ``bucket_count``, then the keys of :func:`summarize`.

    Examples
    --------
    >>> minutes = list(pd.date_range("2025-01-06 09:00", periods=4, freq="min"))
    >>> X = pd.DataFrame({"user_id": ["u1"] * 4 + ["u2"] * 4, "bucket_start_ts": minutes * 2})
    >>> report = timeline_report(X, list("AABBAAAA"), list("AABBAAAB"))
    >>> report[["user_id", "bucket_count", "segmental_f1@50", "flap_rate"]]
      user_id  bucket_count  segmental_f1@50  flap_rate
    0      u1             4         1.000000       0.25
    1      u2             4         0.666667       0.25
    """
    widths = (max_gap_seconds, min_block_seconds, bucket_seconds)
    counts, timelines = _frame_counts(X, y_true, y_pred, "timeline_report", overlaps, True, *widths)
    first, last = timelines.bounds[:-1], timelines.bounds[1:] - 1
    columns: dict[str, Any] = {}
    if timelines.users is not None:
        columns["user_id"] = timelines.users[timelines.user_codes[first]]
    width_ns = np.int64(bucket_seconds) * 1_000_000_000
    columns["start_ts"] = pd.to_datetime(timelines.ts_ns[first], utc=True)
    columns["end_ts"] = pd.to_datetime(timelines.ts_ns[last] + width_ns, utc=True)
    columns["bucket_count"] = counts["buckets"]
    return pd.DataFrame({**columns, **_scores(counts)})


# --------------------------------------------------------------------------
# Evaluation of a transformed frame, pooled and per user
# --------------------------------------------------------------------------


def _kept_at(passed: np.ndarray, n_thresholds: int, weights: np.ndarray | None = None) -> Any:
    """Rows (or weights) passing more than ``j`` thresholds, for each ``j``."""
    below = np.cumsum(np.bincount(passed, weights, minlength=n_thresholds + 1))[:-1]
    return (len(passed) if weights is None else weights.sum()) - below


def _row_figures(
    true: np.ndarray,
    proba: np.ndarray,
    confidence: np.ndarray,
    rejected: np.ndarray,
    raw: np.ndarray,
    thresholds: np.ndarray,
    n_bins: int,
) -> dict[str, Any]:
    """The probability and rejection figures of some rows (codes in class order)."""
    n = len(true)
    rows = np.arange(n)
    error = proba.copy()
    error[rows, true] -= 1.0
    eps = np.finfo(float).eps
    correct = proba.argmax(axis=1) == true
    in_bin = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    bins = np.bincount(in_bin, minlength=n_bins)
    bin_confidence = np.bincount(in_bin, confidence, n_bins)
    bin_correct = np.bincount(in_bin, correct, n_bins)
    passed = np.searchsorted(thresholds, confidence, side="right")  # thresholds <= confidence
    kept = _kept_at(passed, len(thresholds))
    return {
        "rows": n,
        "brier": float(_ratio(np.einsum("ij,ij->", error, error), n, np.nan)),
        "log_loss": float(
            _ratio(-np.log(np.clip(proba[rows, true], eps, 1 - eps)).sum(), n, np.nan)
        ),
        "ece": float(_ratio(np.abs(bin_correct - bin_confidence).sum(), n, np.nan)),
        "reliability": {
            "rows": bins.tolist(),
            "confidence": _ratio(bin_confidence, bins, np.nan).tolist(),
            "accuracy": _ratio(bin_correct, bins, np.nan).tolist(),
        },
        "reject_rate": float(_ratio(rejected.sum(), n, np.nan)),
        "accepted_accuracy": float(
            _ratio((~rejected & (raw == true)).sum(), n - rejected.sum(), np.nan)
        ),
        "coverage_accuracy": {
            "threshold": thresholds.tolist(),
            "coverage": _ratio(kept, n, np.nan).tolist(),
            "accuracy": _ratio(_kept_at(passed, len(thresholds), correct), kept, np.nan).tolist(),
        },
    }


def _label_figures(counts: Counts, true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """The measures of :func:`summarize`, per class and the confusion of some rows."""
    figures: dict[str, Any] = {key: float(value[0]) for key, value in _scores(counts).items()}
    n_labels = len(OUTPUT_LABELS)
    confusion = np.bincount(true * n_labels + pred, minlength=n_labels**2)
    confusion = confusion.reshape(n_labels, n_labels)
    hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    figures["per_class"] = {
        label: {
            "precision": float(_ratio(hits[i], predicted[i], 0.0)),
            "recall": float(_ratio(hits[i], support[i], 0.0)),
            "f1": float(_ratio(2 * hits[i], support[i] + predicted[i], 0.0)),
            "support": int(support[i]),
        }
        for i, label in enumerate(OUTPUT_LABELS)
        if support[i] + predicted[i] > 0
    }
    figures["confusion_matrix"] = {"labels": list(OUTPUT_LABELS), "counts": confusion.tolist()}
    return figures


def _true_codes(y_true: object, n_rows: int, where: str) -> np.ndarray:
    """Codes of the true core labels in class order, refusing anything else."""
    labels = pd.Series(_one_dimensional(y_true, "y_true", where), dtype=object)
    if len(labels) != n_rows:
        raise InputError(f"{where}: y_true has {len(labels)} labels but the frame {n_rows} rows")
    codes = label_codes(labels, "y_true")
    unknown = np.flatnonzero(codes == len(CLASS_ORDER))
    if len(unknown):
        raise InputError(
            f"{where}: y_true holds {MIXED_UNKNOWN!r} at row {int(unknown[0])}; "
            f"true labels are core labels"
        )
    return codes.astype(np.int64)


def evaluate(
    frame: pd.DataFrame,
    y_true: ArrayLike,
    *,
    max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    n_bins: int = 10,
) -> dict[str, Any]:
    """How good a transformed frame is against the true labels, pooled and per user.

    Parameters
    ----------
    frame : DataFrame
        The output of ``pipeline.transform``: ``proba_<Class>``,
        ``confidence``, ``is_rejected``, ``raw_label``, ``label``,
        ``bucket_start_ts`` and, for the per-user figures, ``user_id``.
    y_true : sequence of str
        The true core label of each row of ``frame``.
    max_gap_seconds, min_block_seconds, bucket_seconds : int
        Timelines and the minimum block duration, as in :func:`summarize`.
    thresholds : sequence of float, default 0.0, 0.05, ..., 1.0
        Confidence thresholds of the coverage-accuracy curve.
    n_bins : int, default 10
        Equal-width confidence bins of the expected calibration error.

    Returns
    -------
    dict
        ``pooled`` (all rows) and ``per_user`` (by user id, in order of
        first appearance; empty without ``user_id``), each a dict of
        ``rows``; from the probabilities, ``brier`` (multiclass Brier
        score), ``log_loss``, ``ece`` (expected calibration error: the
        row-weighted gap between the accuracy and the mean confidence of the
        top class in each confidence bin; the bins are in ``reliability``)
        and ``coverage_accuracy`` (for each threshold, the share of rows
        with confidence ≥ threshold and the accuracy of their top class);
        ``reject_rate`` (``is_rejected``) and ``accepted_accuracy`` (of the
        raw label on rows not rejected); and for the final ``label`` and
        the ``raw_label`` each, the keys of :func:`summarize`
        (``block_share`` counts blocks of at least ``min_block_seconds``),
        ``per_class`` (``precision``, ``recall``, ``f1``, ``support`` of each
        label present) and ``confusion_matrix`` (``labels``, and ``counts``
        with a row per true label). Values without rows to average are NaN.

    Examples
    --------
    >>> from taskclf._columns import PROBA_COLUMNS
    >>> proba = np.eye(8)[[0, 0, 1]] * 0.9 + 0.1 / 8
    >>> frame = pd.DataFrame(proba, columns=PROBA_COLUMNS).assign(
    ...     confidence=proba.max(axis=1),
    ...     is_rejected=False,
    ...     raw_label=["Build", "Build", "Debug"],
    ...     label=["Build", "Build", "Build"],
    ...     bucket_start_ts=pd.date_range("2025-01-06", periods=3, freq="min"),
    ... )
    >>> pooled = evaluate(frame, ["Build", "Build", "Debug"])["pooled"]
    >>> pooled["raw_label"]["accuracy"], round(pooled["label"]["accuracy"], 4)
    (1.0, 0.6667)
    """
    where = "evaluate"
    frame = check_frame(frame, where)
    columns = [*PROBA_COLUMNS, CONFIDENCE, IS_REJECTED, RAW_LABEL, LABEL, BUCKET_START_TS]
    require_columns(frame, columns, where)
    min_buckets = _min_buckets(bucket_seconds, min_block_seconds, where)
    n_bins = check_value(n_bins, integer(1, 10_000), "n_bins", where)
    grid = np.sort([check_value(t, real(0.0, 1.0), "thresholds", where) for t in thresholds])
    true = _true_codes(y_true, len(frame), where)
    proba = frame[list(PROBA_COLUMNS)].to_numpy(dtype=float)
    confidence = frame[CONFIDENCE].to_numpy(dtype=float)
    check_finite_columns(np.column_stack([proba, confidence]), [*PROBA_COLUMNS, CONFIDENCE])
    rejected = _rejected_flags(frame, where)
    predicted = {column: label_codes(frame[column], column) for column in (LABEL, RAW_LABEL)}

    timelines = find_timelines(frame, max_gap_seconds)
    sort, bounds = timelines.to_sorted, timelines.bounds
    true, proba, confidence, rejected = sort(true), sort(proba), sort(confidence), sort(rejected)
    predicted = {column: sort(codes).astype(np.int64) for column, codes in predicted.items()}
    labels = np.asarray(OUTPUT_LABELS, dtype=object)
    counts = {
        column: _counts(true, pred, labels, bounds, DEFAULT_OVERLAPS, min_buckets, edit=True)
        for column, pred in predicted.items()
    }
    user = np.zeros(len(frame), np.int64) if timelines.user_codes is None else timelines.user_codes

    def group(u: int | None) -> dict[str, Any]:
        rows = slice(None) if u is None else user == u
        owned = slice(None) if u is None else user[bounds[:-1]] == u
        raw = predicted[RAW_LABEL][rows]
        figures = _row_figures(
            true[rows], proba[rows], confidence[rows], rejected[rows], raw, grid, n_bins
        )
        for column, pred in predicted.items():
            summed = {
                key: value[owned].sum(axis=0, keepdims=True)
                for key, value in counts[column].items()
            }
            figures[column] = _label_figures(summed, true[rows], pred[rows])
        return figures

    users = [] if timelines.users is None else timelines.users.tolist()
    return {"pooled": group(None), "per_user": {name: group(u) for u, name in enumerate(users)}}


# --------------------------------------------------------------------------
# scikit-learn scorers
# --------------------------------------------------------------------------

_SEGMENTAL = ("overlap", "max_gap_seconds")
_SCORER_SPECS: dict[str, tuple[float, tuple[str, ...], dict[str, float]]] = {
    "accuracy": (1.0, (), {}),
    "macro_f1": (1.0, (), {}),
    "segmental_f1": (1.0, _SEGMENTAL, {}),
    "segmental_f1@10": (1.0, _SEGMENTAL, {"overlap": 0.1}),
    "segmental_f1@25": (1.0, _SEGMENTAL, {"overlap": 0.25}),
    "segmental_f1@50": (1.0, _SEGMENTAL, {"overlap": 0.5}),
    "edit_score": (1.0, ("max_gap_seconds",), {}),
    "neg_flap_rate": (-1.0, ("max_gap_seconds",), {}),
    "neg_reject_rate": (-1.0, ("source",), {}),
    "block_share": (1.0, ("min_block_seconds", "bucket_seconds", "max_gap_seconds"), {}),
}
"""Scorer name: (sign, the parameters it takes, preset parameters)."""

_NO_ROWS = pd.DataFrame(
    {BUCKET_START_TS: pd.to_datetime([], utc=True), IS_REJECTED: np.zeros(0, dtype=bool)}
)


def _measure(
    name: str,
    y_true: object,
    y_pred: object,
    X: object,
    *,
    overlap: float = 0.5,
    source: str = "label",
    **params: Any,
) -> float:
    """The measure of scorer ``name`` (unsigned); row measures only check ``X``'s length."""
    where = f"scorer {name!r}"
    key = _overlap_key(overlap) if name.startswith("segmental_f1") else name.removeprefix("neg_")
    check_value(source, one_of("label", "is_rejected"), "source", where)
    if y_true is None and key in ("flap_rate", "reject_rate", "block_share"):
        y_true = y_pred  # measures of the prediction alone
    if source == "is_rejected":
        flags = _rejected_flags(check_frame(X, where), where)
        _encode(y_true, y_pred, len(flags), where)
        return float(_ratio(flags.sum(), len(flags), 0.0))
    if key in _ROW_MEASURES:
        return _sequence_score(key, y_true, y_pred, where, None if X is None else len(X))  # type: ignore[arg-type]
    overlaps = [overlap] if key.startswith("segmental_f1") else []
    counts, _ = _frame_counts(X, y_true, y_pred, where, overlaps, key == "edit_score", **params)
    return _pooled(counts)[key]


def _check_params(accepted: Sequence[str], params: dict[str, Any], who: str) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidParameterError(
            f"{who} takes no parameter(s) {unknown}; it accepts {list(accepted) or 'none'}"
        )


def _unknown_name(name: object, valid: Iterable[str]) -> InvalidParameterError:
    return InvalidParameterError(f"unknown scorer {name!r}; valid names: {sorted(valid)}")


def _check_y(y: object, name: str) -> None:
    if y is None:
        raise InputError(f"scorer {name!r} needs the true labels y, got None")


class TimelineScorer:
    """A scikit-learn scorer for one taskclf measure.

    Called as ``scorer(estimator, X, y)``: predicts ``X`` once and scores
    the predictions against ``y``, pooled over the timelines of ``X``
    (``bucket_start_ts``, ``user_id``; any row order) as :func:`summarize`
    does. Higher is always better: rates come negated. Instances are
    picklable and usually made with :func:`get_scorer` or
    :func:`make_timeline_scorer`.

    Parameters
    ----------
    name : str
        A scorer name (see :data:`SCORERS`), or ``"segmental_f1"``.
    **params
        ``overlap`` (segmental F1, in (0, 1]), ``max_gap_seconds``
        (timeline measures), ``min_block_seconds`` and ``bucket_seconds``
        (block share), ``source`` (reject rate: ``"label"``, the share of
        ``Mixed/Unknown`` predictions, or ``"is_rejected"``, the mean of that
        column of ``X``), overriding the name's presets.

    Attributes
    ----------
    name : str
    params : dict
        The parameters the measure is computed with.
    """

    def __init__(self, name: str, **params: Any) -> None:
        if not isinstance(name, str) or name not in _SCORER_SPECS:
            raise _unknown_name(name, _SCORER_SPECS)
        _, accepted, presets = _SCORER_SPECS[name]
        self.name = name
        self.params = {**presets, **params}
        _check_params(accepted, self.params, f"scorer {name!r}")
        _measure(name, [], [], _NO_ROWS, **self.params)  # refuses bad values now

    def score(self, y_true: ArrayLike | None, y_pred: ArrayLike, X: pd.DataFrame) -> float:
        """Score given predictions (sign applied).

        ``y_true`` may be None for the measures of the prediction alone
        (flap rate, reject rate, block share).
        """
        sign = _SCORER_SPECS[self.name][0]
        return sign * _measure(self.name, y_true, y_pred, X, **self.params) + 0.0

    def __call__(self, estimator: Any, X: pd.DataFrame, y: ArrayLike) -> float:
        """Predict ``X`` with ``estimator`` once and score against ``y``."""
        _check_y(y, self.name)
        return self.score(y, estimator.predict(X), X)

    def __repr__(self) -> str:
        shown = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({self.name!r}{shown})"


SCORERS: dict[str, TimelineScorer] = {
    name: TimelineScorer(name) for name in _SCORER_SPECS if name != "segmental_f1"
}
"""Ready scorers by name: accuracy, macro_f1, segmental_f1@10, @25, @50,
edit_score, neg_flap_rate, neg_reject_rate, block_share (default
parameters)."""


class SummaryScorer:
    """A multi-metric scikit-learn scorer: one prediction, one timeline pass.

    Called as ``scorer(estimator, X, y)`` it returns a dict from scorer
    names to the signed scores of :func:`summarize`, as ``scoring=`` in
    ``cross_validate`` and ``GridSearchCV`` accepts (give ``refit`` one of
    the names). Made with :func:`make_summary_scorer`.

    Parameters
    ----------
    names : sequence of str
        Names from :data:`SCORERS`.
    **params
        ``max_gap_seconds``, ``min_block_seconds``, ``bucket_seconds`` of
        :func:`summarize`.
    """

    def __init__(self, names: Sequence[str], **params: Any) -> None:
        names = list(names)
        unknown = [name for name in names if name not in SCORERS]
        if unknown:
            raise _unknown_name(unknown[0], SCORERS)
        if "overlaps" in params:
            raise InvalidParameterError(
                "a summary scorer takes its overlaps from the names (segmental_f1@10, @25, @50)"
            )
        accepted = ("max_gap_seconds", "min_block_seconds", "bucket_seconds")
        _check_params(accepted, params, "a summary scorer")
        summarize(_NO_ROWS, [], [], **params)  # refuses bad values now
        self.names = names
        self.params = dict(params)

    def __call__(self, estimator: Any, X: pd.DataFrame, y: ArrayLike) -> dict[str, float]:
        """Predict ``X`` once; score every named measure (signs applied)."""
        _check_y(y, "summary")
        scores = summarize(X, y, estimator.predict(X), **self.params)
        return {
            name: _SCORER_SPECS[name][0] * scores[name.removeprefix("neg_")] + 0.0
            for name in self.names
        }

    def __repr__(self) -> str:
        shown = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({self.names!r}{shown})"


def get_scorer(name: str) -> TimelineScorer:
    """The scorer of a name in :data:`SCORERS`, with default parameters.

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
    """A scorer for one measure with chosen parameters (see :class:`TimelineScorer`).

    Raises
    ------
    InvalidParameterError
        For an unknown name or parameter, or a parameter out of range.

    Examples
    --------
    >>> make_timeline_scorer("segmental_f1", overlap=0.75)
    TimelineScorer('segmental_f1', overlap=0.75)
    """
    return TimelineScorer(metric_name, **kwargs)


def make_summary_scorer(names: Sequence[str] | None = None, **kwargs: Any) -> SummaryScorer:
    """A multi-metric scorer of ``names`` (all of :data:`SCORERS` by default).

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
    "edit_score",
    "evaluate",
    "flap_rate",
    "get_scorer",
    "label_changes",
    "make_summary_scorer",
    "make_timeline_scorer",
    "segmental_f1",
    "summarize",
    "timeline_report",
]
