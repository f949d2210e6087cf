"""Quality measures of predicted labels, per timeline, per user and pooled.

Row measures look at each bucket alone: accuracy, macro F1 (scikit-learn's
``f1_score(average="macro", zero_division=0)`` over the labels present in
the truth or the prediction) and reject rate (the share of ``Mixed/Unknown``
predictions). Timeline measures look at runs of equal labels, which never
cross a timeline boundary (one user's rows in time order, split at gaps
longer than ``max_gap_seconds``; see docs/contract.md): segmental F1@k
(:func:`segmental_f1`), edit score (:func:`edit_score`), flap rate
(:func:`flap_rate`) and block share (the share of predicted runs lasting at
least the minimum block duration).

Every measure is computed once, from counts per timeline: buckets per label,
runs, matched runs, edit distances, ... :func:`timeline_report` turns each
timeline's counts into its scores; :func:`summarize`, the scorers and
:func:`evaluate` apply the same rule to counts summed over the timelines
(of a user, or of all). So segmental F1 pools true and false positives and
negatives, edit score pools distances and normalizers (a timeline weighs by
its number of runs), flap rate divides all changes inside timelines by all
buckets, and block share counts every predicted run once. Empty input
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
from taskclf.stages._base import DURATION, GAP, SECONDS, check_value, integer, real
from taskclf.stages._timeline import Timelines, find_timelines
from taskclf.stages.merge import min_buckets_of
from taskclf.stages.segment import run_starts

DEFAULT_OVERLAPS: tuple[float, ...] = (0.1, 0.25, 0.5)
"""IoU thresholds of the segmental F1 scores :func:`summarize` reports."""

Counts = dict[str, np.ndarray]
"""Counts by name, each an array with one row per timeline."""


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _one_dimensional(values: object, name: str, where: str) -> np.ndarray:
    if isinstance(values, pd.DataFrame):
        raise InputError(f"{where}: {name} must be one-dimensional, got a DataFrame")
    array = np.asarray(values, dtype=object)
    if array.ndim != 1:
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
    labels = pd.Index(
        np.concatenate([true_labels, pred_labels]), dtype=object, tupleize_cols=False
    ).unique()
    pred_index = pd.Index(pred_labels, dtype=object, tupleize_cols=False)
    return true_codes, labels.get_indexer(pred_index)[pred_codes], np.asarray(labels)


def _rejected_flags(frame: pd.DataFrame, where: str) -> np.ndarray:
    """The boolean ``is_rejected`` column of ``frame``."""
    require_columns(frame, [IS_REJECTED], where)
    flags = frame[IS_REJECTED]
    if not pd.api.types.is_bool_dtype(flags.dtype):
        raise ColumnTypeError(f"{where}: column {IS_REJECTED!r} must be boolean, got {flags.dtype}")
    return flags.to_numpy(dtype=bool)


def _bounds_of_one(n: int) -> np.ndarray:
    """Bounds of ``n`` rows forming one timeline (none when ``n`` is 0)."""
    return np.array([0, n] if n else [0], dtype=np.int64)


def _min_buckets(bucket_seconds: Any, min_block_seconds: Any, where: str) -> int:
    """Checked widths: the shortest block in buckets."""
    width = check_value(bucket_seconds, SECONDS, "bucket_seconds", where)
    return min_buckets_of(
        check_value(min_block_seconds, DURATION, "min_block_seconds", where), width
    )


def _check_overlap(overlap: object) -> float:
    """Validate an IoU threshold: a real number in (0, 1]."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.number)):
        raise InvalidParameterError(f"overlap must be a number in (0, 1], got {overlap!r}")
    if not 0.0 < float(overlap) <= 1.0:
        raise InvalidParameterError(f"overlap must be in (0, 1], got {overlap!r}")
    return float(overlap)


def _overlap_key(overlap: float) -> str:
    return f"segmental_f1@{overlap * 100:g}"


# --------------------------------------------------------------------------
# Kernels: counts per timeline
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
        Number of positions where the label differs from the previous one
        of the same timeline.

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

    @property
    def length(self) -> np.ndarray:
        """Number of buckets of each run."""
        return self.end - self.start

    def per_timeline(self, n_timelines: int) -> np.ndarray:
        """Number of runs of each timeline."""
        return np.bincount(self.timeline, minlength=n_timelines)


def _matched_runs(true: _Runs, pred: _Runs, overlaps: Sequence[float], k: int) -> np.ndarray:
    """True runs matched at each overlap, per timeline: shape (k, len(overlaps)).

    Only overlapping pairs of runs are formed (runs partition the same
    positions, so there are fewer than ``n_true + n_pred``). Each predicted
    run's best true run is the one of the same label with the highest IoU,
    the earliest among ties. Taken in time order, a predicted run matches
    its best true run when the IoU reaches the overlap and that run is still
    free, so a true run is matched exactly when it is the best run of some
    predicted run with enough IoU: the matches need no loop.
    """
    matched = np.zeros((k, len(overlaps)), dtype=np.int64)
    if len(pred.start) == 0 or len(overlaps) == 0:
        return matched
    # True runs overlapping predicted run j: indices lo[j] .. hi[j] - 1.
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
    """Edit distance between two integer sequences (unit costs).

    One row of the dynamic programme per element of the shorter sequence,
    each row vectorized: the insertion chain along a row is a running
    minimum of ``row[k] - k``.
    """
    if len(a) > len(b):
        a, b = b, a
    index = np.arange(len(b) + 1, dtype=np.int64)
    row = index.copy()
    step = np.empty_like(row)
    for i, value in enumerate(a.tolist(), start=1):
        step[0] = i
        np.minimum(row[1:] + 1, row[:-1] + (b != value), out=step[1:])
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
    in time order. ``edit`` asks for the edit distances, the only costly
    count. Matched true runs are keyed like the segmental F1 of their overlap.
    """
    k, n_labels = len(bounds) - 1, len(labels)
    buckets = np.diff(bounds)
    row = np.repeat(np.arange(k), buckets) * n_labels

    def per_label(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(row + codes, weights, minlength=k * n_labels).reshape(k, n_labels)

    predicted = per_label(pred)
    true_runs, pred_runs = _Runs.of(true, bounds), _Runs.of(pred, bounds)
    counts = {
        "buckets": buckets,
        "true": per_label(true),
        "pred": predicted,
        "hits": per_label(true, true == pred),
        "rejected": predicted[:, labels == MIXED_UNKNOWN].sum(axis=1),
        "changes": label_changes(pred, bounds),
        "true_runs": true_runs.per_timeline(k),
        "pred_runs": pred_runs.per_timeline(k),
        "long_runs": np.bincount(pred_runs.timeline, pred_runs.length >= min_buckets, k),
    }
    matched = _matched_runs(true_runs, pred_runs, overlaps, k)
    for column, overlap in enumerate(overlaps):
        counts[_overlap_key(overlap)] = matched[:, column]
    if edit:
        counts["edit_distance"] = _edit_distances(true_runs, pred_runs, k)
        counts["edit_length"] = np.maximum(counts["true_runs"], counts["pred_runs"])
    return counts


def _ratio(numerator: ArrayLike, denominator: ArrayLike, empty: float) -> np.ndarray:
    """``numerator / denominator``, and ``empty`` where the denominator is 0."""
    top, bottom = np.asarray(numerator, dtype=float), np.asarray(denominator)
    out = np.full(np.broadcast_shapes(top.shape, bottom.shape), empty)
    return np.divide(top, bottom, out=out, where=bottom != 0)


def _scores(counts: Counts) -> dict[str, np.ndarray]:
    """The measures of each row of ``counts``, keyed as :func:`summarize`'s."""
    buckets = counts["buckets"]
    present = counts["true"] + counts["pred"]
    label_f1 = _ratio(2 * counts["hits"], present, 0.0)
    scores = {
        "accuracy": _ratio(counts["hits"].sum(axis=1), buckets, 1.0),
        "macro_f1": _ratio(label_f1.sum(axis=1), (present > 0).sum(axis=1), 1.0),
    }
    runs = counts["true_runs"] + counts["pred_runs"]
    for key in counts:
        if key.startswith("segmental_f1@"):
            # 2PR / (P + R) with P = tp / pred runs and R = tp / true runs.
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


def _frame_counts(
    X: object,
    y_true: object,
    y_pred: object,
    where: str,
    *,
    overlaps: Iterable[float] = (),
    edit: bool = False,
    max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> tuple[Counts, Timelines]:
    """Validate the input, find the timelines of ``X`` and count per timeline."""
    checked = [_check_overlap(overlap) for overlap in overlaps]
    min_buckets = _min_buckets(bucket_seconds, min_block_seconds, where)
    check_value(max_gap_seconds, GAP, "max_gap_seconds", where)
    frame = check_frame(X, where)
    require_columns(frame, [BUCKET_START_TS], where)
    true, pred, labels = _encode(y_true, y_pred, len(frame), where)
    timelines = find_timelines(frame, max_gap_seconds)
    sort = timelines.to_sorted
    counts = _counts(sort(true), sort(pred), labels, timelines.bounds, checked, min_buckets, edit)
    return counts, timelines


def _sequence_score(
    key: str, y_true: object, y_pred: object, where: str, X: object = None, **params: Any
) -> float:
    """One measure of two label sequences taken as one timeline."""
    n_rows = None if X is None else len(X)  # type: ignore[arg-type]
    true, pred, labels = _encode(y_true, y_pred, n_rows, where)
    return _pooled(_counts(true, pred, labels, _bounds_of_one(len(true)), **params))[key]


# --------------------------------------------------------------------------
# One sequence
# --------------------------------------------------------------------------


def flap_rate(labels: Sequence[object]) -> float:
    """Label changes divided by the number of buckets, of one sequence.

    Not divided by the number of transitions; 0.0 for one bucket or none.

    Examples
    --------
    >>> flap_rate(["Build", "Build", "Debug", "Build"])
    0.5
    """
    codes, _ = factorize_labels(labels)
    changes = label_changes(codes, _bounds_of_one(len(codes)))
    return float(_ratio(changes.sum(), len(codes), 0.0))


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
    Over-segmentation: against one true run of 8 A, the predicted runs
    AAA (IoU 3/8) and B (another label) are false positives, AAAA (IoU
    4/8) a true positive: P = 1/3, R = 1, F1 = 0.5.

    >>> segmental_f1(list("AAAAAAAA"), list("AAABAAAA"), overlap=0.5)
    0.5
    """
    overlap = _check_overlap(overlap)
    return _sequence_score(
        _overlap_key(overlap), y_true, y_pred, "segmental_f1", overlaps=[overlap]
    )


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


# --------------------------------------------------------------------------
# Pooled over the timelines of a frame, and per timeline
# --------------------------------------------------------------------------


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
    counts, _ = _frame_counts(
        X,
        y_true,
        y_pred,
        "summarize",
        overlaps=overlaps,
        edit=True,
        max_gap_seconds=max_gap_seconds,
        min_block_seconds=min_block_seconds,
        bucket_seconds=bucket_seconds,
    )
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
    """Every measure of every timeline, one row per timeline.

    Each row holds what :func:`summarize` (same parameters) gives for that
    timeline alone.

    Returns
    -------
    DataFrame
        Timelines in order (users by first appearance, then time):
        ``user_id`` (when ``X`` has it), ``start_ts``, ``end_ts`` (UTC; a
        timeline ends at its last bucket's start plus ``bucket_seconds``),
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
    counts, timelines = _frame_counts(
        X,
        y_true,
        y_pred,
        "timeline_report",
        overlaps=overlaps,
        edit=True,
        max_gap_seconds=max_gap_seconds,
        min_block_seconds=min_block_seconds,
        bucket_seconds=bucket_seconds,
    )
    first, last = timelines.bounds[:-1], timelines.bounds[1:] - 1
    columns: dict[str, Any] = {}
    if timelines.user_codes is not None and timelines.users is not None:
        columns["user_id"] = timelines.users[timelines.user_codes[first]]
    width_ns = np.int64(bucket_seconds) * 1_000_000_000
    columns["start_ts"] = pd.to_datetime(timelines.ts_ns[first], utc=True)
    columns["end_ts"] = pd.to_datetime(timelines.ts_ns[last] + width_ns, utc=True)
    columns["bucket_count"] = counts["buckets"]
    return pd.DataFrame({**columns, **_scores(counts)})


# --------------------------------------------------------------------------
# Evaluation of a transformed frame, pooled and per user
# --------------------------------------------------------------------------

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 20 for i in range(21))
"""Confidence thresholds of the coverage-accuracy curve of :func:`evaluate`."""


def _group_sums(counts: Counts, groups: np.ndarray, n_groups: int) -> Counts:
    """Sum the rows of every count by group."""
    out = {}
    for key, value in counts.items():
        out[key] = np.zeros((n_groups, *value.shape[1:]), dtype=value.dtype)
        np.add.at(out[key], groups, value)
    return out


def _row_counts(
    groups: np.ndarray,
    n_groups: int,
    true: np.ndarray,
    proba: np.ndarray,
    confidence: np.ndarray,
    rejected: np.ndarray,
    raw: np.ndarray,
    thresholds: np.ndarray,
    n_bins: int,
) -> Counts:
    """Sums per group of the row losses, rejections, confidence bins and coverage.

    ``true`` and ``raw`` (the raw labels) are codes in class order.
    """

    def total(
        weights: np.ndarray | None, column: np.ndarray | None = None, width: int = 1
    ) -> np.ndarray:
        index = groups if column is None else groups * width + column
        sums = np.bincount(index, weights, minlength=n_groups * width)
        return sums if column is None else sums.reshape(n_groups, width)

    rows = np.arange(len(true))
    error = proba.copy()
    error[rows, true] -= 1.0
    eps = np.finfo(proba.dtype).eps
    correct = proba.argmax(axis=1) == true
    in_bin = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    # Rows with confidence >= thresholds[j] are kept at threshold j; they are
    # the rows whose number of thresholds <= confidence exceeds j.
    passed = np.searchsorted(thresholds, confidence, side="right")
    width = len(thresholds) + 1
    kept = np.cumsum(total(None, passed, width)[:, ::-1], axis=1)[:, ::-1][:, 1:]
    kept_correct = np.cumsum(total(correct, passed, width)[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return {
        "rows": total(None),
        "rejected": total(rejected),
        "accepted_correct": total(~rejected & (raw == true)),
        "brier": total(np.einsum("ij,ij->i", error, error)),
        "log_loss": total(-np.log(np.clip(proba[rows, true], eps, 1 - eps))),
        "bin_rows": total(None, in_bin, n_bins),
        "bin_confidence": total(confidence, in_bin, n_bins),
        "bin_correct": total(correct, in_bin, n_bins),
        "kept": kept,
        "kept_correct": kept_correct,
    }


def _label_report(counts: Counts, confusion: np.ndarray) -> dict[str, Any]:
    """Label measures of one group: :func:`summarize`'s, per class, confusion."""
    report: dict[str, Any] = {key: float(value[0]) for key, value in _scores(counts).items()}
    true, pred, hits = counts["true"][0], counts["pred"][0], counts["hits"][0]
    report["per_class"] = {
        label: {
            "precision": float(_ratio(hits[i], pred[i], 0.0)),
            "recall": float(_ratio(hits[i], true[i], 0.0)),
            "f1": float(_ratio(2 * hits[i], true[i] + pred[i], 0.0)),
            "support": int(true[i]),
        }
        for i, label in enumerate(OUTPUT_LABELS)
        if true[i] + pred[i] > 0
    }
    report["confusion_matrix"] = {"labels": list(OUTPUT_LABELS), "counts": confusion.tolist()}
    return report


def _group_report(counts: dict[str, Counts], thresholds: np.ndarray) -> dict[str, Any]:
    """The evaluation of one group from its counts (arrays of one row)."""
    p = counts["rows"]
    n, rejected = p["rows"][0], p["rejected"][0]
    bins = p["bin_rows"][0]
    calibration_gap = np.abs(p["bin_correct"][0] - p["bin_confidence"][0]).sum()
    return {
        "rows": int(n),
        "brier": float(_ratio(p["brier"][0], n, np.nan)),
        "log_loss": float(_ratio(p["log_loss"][0], n, np.nan)),
        "ece": float(_ratio(calibration_gap, n, np.nan)),
        "reliability": {
            "rows": bins.tolist(),
            "confidence": _ratio(p["bin_confidence"][0], bins, np.nan).tolist(),
            "accuracy": _ratio(p["bin_correct"][0], bins, np.nan).tolist(),
        },
        "reject_rate": float(_ratio(rejected, n, np.nan)),
        "accepted_accuracy": float(_ratio(p["accepted_correct"][0], n - rejected, np.nan)),
        "coverage_accuracy": {
            "threshold": thresholds.tolist(),
            "coverage": _ratio(p["kept"][0], n, np.nan).tolist(),
            "accuracy": _ratio(p["kept_correct"][0], p["kept"][0], np.nan).tolist(),
        },
        LABEL: _label_report(counts[LABEL], counts[LABEL]["confusion"][0]),
        RAW_LABEL: _label_report(counts[RAW_LABEL], counts[RAW_LABEL]["confusion"][0]),
    }


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
    grid = [check_value(t, real(0.0, 1.0), "thresholds", where) for t in thresholds]
    true = _true_codes(y_true, len(frame), where)
    proba = frame[list(PROBA_COLUMNS)].to_numpy(dtype=float)
    confidence = frame[CONFIDENCE].to_numpy(dtype=float)
    check_finite_columns(np.column_stack([proba, confidence]), [*PROBA_COLUMNS, CONFIDENCE])
    rejected = _rejected_flags(frame, where)
    predicted = {column: label_codes(frame[column], column) for column in (LABEL, RAW_LABEL)}

    timelines = find_timelines(frame, max_gap_seconds)
    sort = timelines.to_sorted
    n_users = 1 if timelines.users is None else len(timelines.users)
    user = np.zeros(len(frame), np.int64) if timelines.user_codes is None else timelines.user_codes
    true, raw = sort(true), sort(predicted[RAW_LABEL])
    grid_array = np.sort(np.asarray(grid, dtype=float))
    counts = {
        "rows": _row_counts(
            user,
            n_users,
            true,
            sort(proba),
            sort(confidence),
            sort(rejected),
            raw,
            grid_array,
            n_bins,
        )
    }
    labels = np.asarray(OUTPUT_LABELS, dtype=object)
    n_labels = len(labels)
    for column, codes in predicted.items():
        pred = sort(codes)
        per_timeline = _counts(
            true, pred, labels, timelines.bounds, DEFAULT_OVERLAPS, min_buckets, edit=True
        )
        counts[column] = _group_sums(per_timeline, user[timelines.bounds[:-1]], n_users)
        pairs = (user * n_labels + true) * n_labels + pred
        confusion = np.bincount(pairs, minlength=n_users * n_labels * n_labels)
        counts[column]["confusion"] = confusion.reshape(n_users, n_labels, n_labels)

    def group(index: slice) -> dict[str, Any]:
        summed = {
            part: {key: value[index].sum(axis=0, keepdims=True) for key, value in sums.items()}
            for part, sums in counts.items()
        }
        return _group_report(summed, grid_array)

    users = [] if timelines.users is None else timelines.users.tolist()
    return {
        "pooled": group(slice(None)),
        "per_user": {name: group(slice(u, u + 1)) for u, name in enumerate(users)},
    }


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
    return codes


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


def _rejected_share(X: object, y_true: object, y_pred: object, where: str) -> float:
    """Mean of the boolean ``is_rejected`` column of ``X``."""
    flags = _rejected_flags(check_frame(X, where), where)
    _encode(y_true, y_pred, len(flags), where)
    return float(_ratio(flags.sum(), len(flags), 0.0))


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
    """The measure of scorer ``name`` (unsigned), pooled over the timelines of ``X``.

    Row measures (accuracy, macro F1, reject rate) only check ``X``'s length.
    """
    where = f"scorer {name!r}"
    key = _overlap_key(overlap) if name.startswith("segmental_f1") else name.removeprefix("neg_")
    if y_true is None and key in ("flap_rate", "reject_rate", "block_share"):
        y_true = y_pred  # measures of the prediction alone
    if source not in ("label", "is_rejected"):
        raise InvalidParameterError(f"source must be 'label' or 'is_rejected', got {source!r}")
    if source == "is_rejected":
        return _rejected_share(X, y_true, y_pred, where)
    if key in ("accuracy", "macro_f1", "reject_rate"):
        return _sequence_score(key, y_true, y_pred, where, X)
    overlaps = [overlap] if key.startswith("segmental_f1") else []
    counts, _ = _frame_counts(
        X, y_true, y_pred, where, overlaps=overlaps, edit=key == "edit_score", **params
    )
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
