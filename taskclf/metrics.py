"""Quality measures of predicted labels, per timeline, per user and pooled.

Row measures: accuracy, macro F1 (scikit-learn's ``f1_score(average="macro", zero_division=0)`` over
the labels present) and reject rate (the share of ``Mixed/Unknown``). Timeline measures read runs of
equal labels, which never cross a timeline (see docs/contract.md): segmental F1@k, edit score, flap
rate and block share (the share of predicted runs of at least the minimum block duration). Each is
computed from counts per timeline; pooled and per-user figures apply the same rule to summed counts:
segmental F1 pools true and false positives and negatives, edit score distances and run counts (a
timeline weighs by its runs), flap rate all changes inside timelines over all buckets. Empty input
scores 1.0, but 0.0 for the flap and reject rates. Labels may be any hashable values, never missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

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
from taskclf._folds import check_labels
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
from taskclf.core.types import MIXED_UNKNOWN, OUTPUT_LABELS
from taskclf.exceptions import ColumnTypeError, InputError, InvalidParameterError
from taskclf.stages._base import DURATION, GAP, SECONDS, check_value, integer, one_of, real
from taskclf.stages._timeline import find_timelines
from taskclf.stages.merge import min_buckets_of
from taskclf.stages.segment import run_starts

DEFAULT_OVERLAPS: tuple[float, ...] = (0.1, 0.25, 0.5)
"""IoU thresholds of the segmental F1 scores :func:`summarize` reports."""

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 20 for i in range(21))
"""Confidence thresholds of the coverage-accuracy curve of :func:`evaluate`."""

Counts = dict[str, np.ndarray]  # by name, each an array with one row per timeline
_OVERLAP = real(0.0, 1.0, open_low=True)


def _encode(
    y_true: object, y_pred: object, n_rows: int | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of ``y_true`` and ``y_pred`` into the distinct labels of both, and those."""
    true, pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if true.ndim != 1 or pred.ndim != 1:
        raise InputError(f"{where}: y_true and y_pred must be one-dimensional")
    if len(true) != len(pred):
        raise InputError(f"{where}: y_true has {len(true)} labels but y_pred has {len(pred)}")
    if n_rows is not None and n_rows != len(true):
        raise InputError(f"{where}: X has {n_rows} rows but y_true and y_pred have {len(true)}")
    true_codes, true_labels = factorize_labels(true, f"{where}: y_true labels")
    pred_codes, pred_labels = factorize_labels(pred, f"{where}: y_pred labels")
    index = pd.Index(np.concatenate([true_labels, pred_labels]), dtype=object).unique()
    pred_codes = index.get_indexer(pd.Index(pred_labels, dtype=object))[pred_codes]
    return true_codes, pred_codes, np.asarray(index)


def _rejected_flags(frame: pd.DataFrame, where: str) -> np.ndarray:
    """The boolean ``is_rejected`` column of ``frame``."""
    require_columns(frame, [IS_REJECTED], where)
    flags = frame[IS_REJECTED]
    if not pd.api.types.is_bool_dtype(flags.dtype):
        raise ColumnTypeError(f"{where}: column {IS_REJECTED!r} must be boolean, got {flags.dtype}")
    return flags.to_numpy(dtype=bool)


def _min_buckets(gap: Any, bucket_seconds: Any, min_block_seconds: Any, where: str) -> int:
    """The shortest block in buckets, from checked widths (the gap is only checked)."""
    check_value(gap, GAP, "max_gap_seconds", where)
    width = check_value(bucket_seconds, SECONDS, "bucket_seconds", where)
    shortest = check_value(min_block_seconds, DURATION, "min_block_seconds", where)
    return min_buckets_of(shortest, width)


def _ratio(numerator: ArrayLike, denominator: ArrayLike, empty: float) -> np.ndarray:
    """``numerator / denominator``, and ``empty`` where the denominator is 0."""
    top, bottom = np.asarray(numerator, dtype=float), np.asarray(denominator)
    out = np.full(np.broadcast_shapes(top.shape, bottom.shape), empty)
    return np.divide(top, bottom, out=out, where=bottom != 0)


def label_changes(codes: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Label changes inside each timeline of ``codes`` (timelines concatenated in time order;
    ``bounds``: the start of each, then ``len(codes)``), the kernel of the flap rate."""
    return np.diff(np.searchsorted(run_starts(codes, bounds), bounds)).astype(np.int64) - 1


def _runs(codes: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Start, end (exclusive), label and timeline of each run of equal codes."""
    start = run_starts(codes, bounds)
    end = np.append(start[1:], len(codes))[: len(start)]
    return start, end, codes[start], np.searchsorted(bounds, start, side="right") - 1


def _matched_runs(true: tuple, pred: tuple, overlaps: Sequence[float], k: int) -> np.ndarray:
    """Matched true runs per timeline and overlap (:func:`segmental_f1`), from overlapping pairs."""
    (t_start, t_end, t_label, t_line), (p_start, p_end, p_label, _) = true, pred
    lo = np.searchsorted(t_end, p_start, side="right")  # first true run overlapping
    count = np.searchsorted(t_start, p_end, side="left") - lo  # at least 1
    first = np.cumsum(count) - count
    pair_pred = np.repeat(np.arange(len(p_start)), count)
    pair_true = np.arange(int(count.sum())) - np.repeat(first - lo, count)
    ps, pe, ts, te = p_start[pair_pred], p_end[pair_pred], t_start[pair_true], t_end[pair_true]
    iou = (np.minimum(pe, te) - np.maximum(ps, ts)) / (np.maximum(pe, te) - np.minimum(ps, ts))
    iou = np.where(p_label[pair_pred] == t_label[pair_true], iou, 0.0)
    best_iou = np.maximum.reduceat(iou, first)
    candidates = np.where(iou == best_iou[pair_pred], pair_true, len(t_start))
    best_true = np.minimum.reduceat(candidates, first)
    matched = np.zeros((k, len(overlaps)), dtype=np.int64)
    for column, overlap in enumerate(overlaps):
        hits = np.unique(best_true[best_iou >= overlap])
        matched[:, column] = np.bincount(t_line[hits], minlength=k)
    return matched


def _levenshtein(a: np.ndarray, b: np.ndarray) -> int:
    """Edit distance of two sequences, one vectorized row of the programme per element."""
    if np.array_equal(a, b):
        return 0
    a, b = (a, b) if len(a) <= len(b) else (b, a)
    index = np.arange(len(b) + 1, dtype=np.int64)
    row, step = index.copy(), np.empty_like(index)
    for i, value in enumerate(a.tolist(), start=1):
        step[0] = i
        np.minimum(row[1:] + 1, row[:-1] + (b != value), out=step[1:])
        row = np.minimum.accumulate(step - index) + index  # the chain of insertions
    return int(row[-1])


def _counts(
    true: np.ndarray,
    pred: np.ndarray,
    labels: np.ndarray,
    bounds: np.ndarray,
    overlaps: Sequence[float] = (),
    min_buckets: int = 1,
    edit: bool = False,
) -> Counts:
    """What the measures are made of, per timeline; ``edit`` asks for the costly distances."""
    k, n_labels = len(bounds) - 1, len(labels)
    row = np.repeat(np.arange(k), np.diff(bounds)) * n_labels

    def per_label(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(row + codes, weights, minlength=k * n_labels).reshape(k, n_labels)

    true_runs, pred_runs = _runs(true, bounds), _runs(pred, bounds)
    long_runs = pred_runs[1] - pred_runs[0] >= min_buckets
    predicted = per_label(pred)
    counts = {
        "buckets": np.diff(bounds),
        "true": per_label(true),
        "pred": predicted,
        "hits": per_label(true, true == pred),
        "rejected": predicted[:, labels == MIXED_UNKNOWN].sum(axis=1),
        "changes": label_changes(pred, bounds),
        "true_runs": np.bincount(true_runs[3], minlength=k),
        "pred_runs": np.bincount(pred_runs[3], minlength=k),
        "long_runs": np.bincount(pred_runs[3], long_runs, minlength=k),
    }
    matched = _matched_runs(true_runs, pred_runs, overlaps, k)
    for column, overlap in enumerate(overlaps):
        counts[f"segmental_f1@{overlap * 100:g}"] = matched[:, column]
    if edit:  # the run labels of each timeline (np.split gives one part even when k = 0)
        true_parts = np.split(true_runs[2], np.cumsum(counts["true_runs"])[:-1])
        pred_parts = np.split(pred_runs[2], np.cumsum(counts["pred_runs"])[:-1])
        distance = [_levenshtein(a, b) for a, b in zip(true_parts, pred_parts, strict=True)][:k]
        counts["edit_distance"] = np.array(distance, dtype=np.int64)
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
        if key.startswith("segmental_f1@"):  # 2PR / (P + R) = 2 tp / (pred runs + true runs)
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
    """One measure of two label sequences taken as one timeline of ``n_rows`` rows."""
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
    """Check the input, find the timelines of ``X``, count per timeline; and the timelines."""
    overlaps = [float(check_value(o, _OVERLAP, "overlap", where)) for o in overlaps]
    min_buckets = _min_buckets(max_gap_seconds, bucket_seconds, min_block_seconds, where)
    frame = check_frame(X, where)
    require_columns(frame, [BUCKET_START_TS], where)
    true, pred, labels = _encode(y_true, y_pred, len(frame), where)
    timelines = find_timelines(frame, max_gap_seconds)
    sort = timelines.to_sorted
    counts = _counts(sort(true), sort(pred), labels, timelines.bounds, overlaps, min_buckets, edit)
    return counts, timelines


def log_loss(proba: np.ndarray, codes: np.ndarray) -> float:
    """Mean negative log probability of the true class, clipped as scikit-learn's; NaN if empty."""
    eps = np.finfo(float).eps
    true = proba[np.arange(len(codes)), codes]
    return float(-np.mean(np.log(np.clip(true, eps, 1 - eps)))) if len(codes) else np.nan


def brier_score(proba: np.ndarray, codes: np.ndarray) -> float:
    """Mean of ``sum_k (p_k - [y == k])^2`` (multiclass ``brier_score_loss``); NaN if empty."""
    error = proba.copy()
    error[np.arange(len(codes)), codes] -= 1.0
    return float(np.mean(np.einsum("ij,ij->i", error, error))) if len(codes) else np.nan


def flap_rate(labels: Sequence[object]) -> float:
    """Label changes divided by the number of buckets (0.0 for none) of one sequence."""
    return _sequence_score("flap_rate", labels, labels, "flap_rate")


def segmental_f1(y_true: ArrayLike, y_pred: ArrayLike, *, overlap: float = 0.5) -> float:
    """Segmental F1@k of one timeline (labels in time order; 1.0 when both are empty).

    Taking the predicted runs of equal labels in time order, each is a true positive when its best
    true run (same label, highest intersection over union in buckets, the earlier on ties) reaches
    ``overlap`` (in (0, 1]; F1@50 uses 0.5) and is not matched yet (it then is); else a false
    positive. Unmatched true runs are false negatives. F1 = 2PR / (P + R), 0.0 when P + R = 0.
    """
    overlap = float(check_value(overlap, _OVERLAP, "overlap", "segmental_f1"))
    key = f"segmental_f1@{overlap * 100:g}"
    return _sequence_score(key, y_true, y_pred, "segmental_f1", overlaps=[overlap])


def edit_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Segmental edit score of one timeline: ``1 - d / max(m, n)`` (1.0 when empty).

    ``d`` is the Levenshtein distance between the label sequences of the ``m`` true and ``n``
    predicted runs: the order of activities counts, not their durations.
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

    ``X`` has ``bucket_start_ts`` (and ``user_id`` for several users); ``y_true`` and ``y_pred``
    label its rows in the same (any) order. ``overlaps`` are the IoU thresholds of the segmental F1
    scores; ``max_gap_seconds`` the longest gap inside a timeline, ``min_block_seconds`` the
    shortest block of the block share. Returns ``accuracy``, ``macro_f1``,
    ``segmental_f1@<100 * overlap>`` for each overlap, ``edit_score``, ``flap_rate``,
    ``reject_rate``, ``block_share``.

    >>> X = pd.DataFrame({"bucket_start_ts": pd.date_range("2025-01-06", periods=8, freq="min")})
    >>> scores = summarize(X, list("AAAABBBB"), list("AAABBBBB"))
    >>> scores["accuracy"], scores["segmental_f1@50"], scores["flap_rate"]
    (0.875, 1.0, 0.125)
    """
    widths = (max_gap_seconds, min_block_seconds, bucket_seconds)
    return _pooled(_frame_counts(X, y_true, y_pred, "summarize", overlaps, True, *widths)[0])


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
    """What :func:`summarize` (same parameters) gives for each timeline alone.

    A row per timeline (users by first appearance, then time): ``user_id`` (when
    ``X`` has it), ``start_ts``, ``end_ts`` (UTC, the last bucket's start plus
    ``bucket_seconds``), ``bucket_count``, then the keys of :func:`summarize`.
    """
    widths = (max_gap_seconds, min_block_seconds, bucket_seconds)
    counts, timelines = _frame_counts(X, y_true, y_pred, "timeline_report", overlaps, True, *widths)
    first, ts = timelines.bounds[:-1], timelines.ts_ns
    columns: dict[str, Any] = {}
    if timelines.users is not None:
        columns["user_id"] = timelines.users[timelines.user_codes[first]]
    columns["start_ts"] = pd.to_datetime(ts[first], utc=True)
    end = ts[timelines.bounds[1:] - 1] + np.int64(bucket_seconds) * 1_000_000_000
    columns["end_ts"] = pd.to_datetime(end, utc=True)
    return pd.DataFrame({**columns, "bucket_count": counts["buckets"], **_scores(counts)})


def _label_figures(scores: dict[str, float], true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """``scores``, and the per-class figures and confusion matrix of some rows."""
    n = len(OUTPUT_LABELS)
    confusion = np.bincount(true * n + pred, minlength=n * n).reshape(n, n)
    hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    per_class = pd.DataFrame(
        {
            "precision": _ratio(hits, predicted, 0.0),
            "recall": _ratio(hits, support, 0.0),
            "f1": _ratio(2 * hits, support + predicted, 0.0),
            "support": support,
        },
        index=OUTPUT_LABELS,
    )[support + predicted > 0]
    matrix = {"labels": list(OUTPUT_LABELS), "counts": confusion.tolist()}
    return {**scores, "per_class": per_class.to_dict("index"), "confusion_matrix": matrix}


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
    """How good ``pipeline.transform``'s output is against the true core labels.

    The widths are :func:`summarize`'s; ``thresholds`` are the confidences of the
    coverage-accuracy curve, ``n_bins`` the equal-width confidence bins of the ECE.
    Returns ``pooled`` and ``per_user`` (by user id as first seen; empty without
    ``user_id``) figures: ``rows``, ``brier``, ``log_loss``, ``ece`` and ``reliability``,
    ``coverage_accuracy`` (of the top class), ``reject_rate``, ``accepted_accuracy`` (of
    ``raw_label``), and for ``label`` and ``raw_label`` the keys of :func:`summarize`,
    ``per_class`` and ``confusion_matrix`` (a row per true label); NaN without rows.
    """
    where = "evaluate"
    frame = check_frame(frame, where)
    require_columns(frame, [*PROBA_COLUMNS, CONFIDENCE, RAW_LABEL, LABEL, BUCKET_START_TS], where)
    min_buckets = _min_buckets(max_gap_seconds, bucket_seconds, min_block_seconds, where)
    n_bins = check_value(n_bins, integer(1, 10_000), "n_bins", where)
    grid = np.sort([check_value(t, real(0.0, 1.0), "thresholds", where) for t in thresholds])
    true = check_labels(y_true, len(frame), where)
    values = frame[[*PROBA_COLUMNS, CONFIDENCE]].to_numpy(dtype=float)
    check_finite_columns(values, [*PROBA_COLUMNS, CONFIDENCE])
    rejected = _rejected_flags(frame, where)
    predicted = {column: label_codes(frame[column], column) for column in (LABEL, RAW_LABEL)}

    timelines = find_timelines(frame, max_gap_seconds)
    sort, bounds, labels = timelines.to_sorted, timelines.bounds, np.asarray(OUTPUT_LABELS)
    true, values, rejected = sort(true), sort(values), sort(rejected)
    predicted = {column: sort(codes).astype(np.int64) for column, codes in predicted.items()}
    counts = {
        column: _counts(true, pred, labels, bounds, DEFAULT_OVERLAPS, min_buckets, edit=True)
        for column, pred in predicted.items()
    }

    def group(rows: slice, owned: slice) -> dict[str, Any]:
        truth, proba, confidence = true[rows], values[rows, :-1], values[rows, -1]
        n, flags, raw = len(truth), rejected[rows], predicted[RAW_LABEL][rows]
        correct = proba.argmax(axis=1) == truth
        in_bin = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
        bins = np.bincount(in_bin, minlength=n_bins)
        bin_confidence = np.bincount(in_bin, confidence, n_bins)
        bin_correct = np.bincount(in_bin, correct, n_bins)
        kept = confidence[:, None] >= grid
        kept_right = (kept & correct[:, None]).sum(axis=0)
        accepted_right = (~flags & (raw == truth)).sum()
        figures = {
            "rows": n,
            "brier": brier_score(proba, truth),
            "log_loss": log_loss(proba, truth),
            "ece": float(_ratio(np.abs(bin_correct - bin_confidence).sum(), n, np.nan)),
            "reliability": {
                "rows": bins.tolist(),
                "confidence": _ratio(bin_confidence, bins, np.nan).tolist(),
                "accuracy": _ratio(bin_correct, bins, np.nan).tolist(),
            },
            "reject_rate": float(_ratio(flags.sum(), n, np.nan)),
            "accepted_accuracy": float(_ratio(accepted_right, (~flags).sum(), np.nan)),
            "coverage_accuracy": {
                "threshold": grid.tolist(),
                "coverage": _ratio(kept.sum(axis=0), n, np.nan).tolist(),
                "accuracy": _ratio(kept_right, kept.sum(axis=0), np.nan).tolist(),
            },
        }
        for column, pred in predicted.items():
            scores = _pooled({key: value[owned] for key, value in counts[column].items()})
            figures[column] = _label_figures(scores, truth, pred[rows])
        return figures

    per_user = {}  # in timeline order, the rows and the timelines of a user are contiguous
    if timelines.user_codes is not None and timelines.users is not None:
        rows_at = np.searchsorted(timelines.user_codes, np.arange(len(timelines.users) + 1))
        at = np.searchsorted(bounds, rows_at)
        for u, name in enumerate(timelines.users.tolist()):
            per_user[name] = group(slice(*rows_at[u : u + 2]), slice(*at[u : u + 2]))
    return {"pooled": group(slice(None), slice(None)), "per_user": per_user}


_SEGMENTAL = ["segmental_f1", *(f"segmental_f1@{o * 100:g}" for o in DEFAULT_OVERLAPS)]
_SCORER_PARAMS: dict[str, tuple[str, ...]] = {
    "accuracy": (),
    "macro_f1": (),
    **dict.fromkeys(_SEGMENTAL, ("overlap", "max_gap_seconds")),
    "edit_score": ("max_gap_seconds",),
    "neg_flap_rate": ("max_gap_seconds",),
    "neg_reject_rate": ("source",),
    "block_share": ("max_gap_seconds", "min_block_seconds", "bucket_seconds"),
}
"""Scorer name: the parameters it takes (``@k`` presets ``overlap=k/100``)."""

_NO_ROWS = pd.DataFrame(
    {BUCKET_START_TS: pd.to_datetime([], utc=True), IS_REJECTED: np.zeros(0, dtype=bool)}
)


def _measure(
    name: str,
    y_true: object,
    y_pred: object,
    X: Any,
    *,
    overlap: float = 0.5,
    source: str = "label",
    **params: Any,
) -> float:
    """The measure of scorer ``name``, unsigned; row measures only check ``X``'s length."""
    where = f"scorer {name!r}"
    segmental = name.startswith("segmental_f1")
    key = f"segmental_f1@{overlap * 100:g}" if segmental else name.removeprefix("neg_")
    check_value(source, one_of("label", "is_rejected"), "source", where)
    if y_true is None and key in ("flap_rate", "reject_rate", "block_share"):
        y_true = y_pred  # measures of the prediction alone
    if source == "is_rejected":
        flags = _rejected_flags(check_frame(X, where), where)
        _encode(y_true, y_pred, len(flags), where)
        return float(_ratio(flags.sum(), len(flags), 0.0))
    if key in ("accuracy", "macro_f1", "reject_rate"):
        return _sequence_score(key, y_true, y_pred, where, n_rows=None if X is None else len(X))
    overlaps = [overlap] if segmental else []
    counts, _ = _frame_counts(X, y_true, y_pred, where, overlaps, key == "edit_score", **params)
    return _pooled(counts)[key]


def _sign(name: str) -> float:
    return -1.0 if name.startswith("neg_") else 1.0


def _check_params(accepted: Sequence[str], params: dict[str, Any], who: str) -> None:
    if unknown := sorted(set(params) - set(accepted)):
        raise InvalidParameterError(
            f"{who} takes no parameter(s) {unknown}; it accepts {list(accepted) or 'none'}"
        )


def _check_name(name: object, valid: Iterable[str]) -> None:
    if not isinstance(name, str) or name not in valid:
        raise InvalidParameterError(f"unknown scorer {name!r}; valid names: {sorted(valid)}")


class TimelineScorer:
    """A picklable scikit-learn scorer for one measure, pooled over the timelines of ``X``
    as :func:`summarize` does; higher is better (rates come negated).

    ``name`` is one of :data:`SCORERS` or ``"segmental_f1"``. ``params``: ``overlap``
    (segmental F1), ``max_gap_seconds`` (timeline measures), ``min_block_seconds`` and
    ``bucket_seconds`` (block share), ``source`` (reject rate: ``"label"``, the share
    of ``Mixed/Unknown``, or ``"is_rejected"``, the mean of that column of ``X``). An
    unknown name or parameter, or a value out of range, raises InvalidParameterError.
    """

    def __init__(self, name: str, **params: Any) -> None:
        _check_name(name, _SCORER_PARAMS)
        self.name = name
        self.params = {"overlap": int(name[13:]) / 100, **params} if "@" in name else params
        _check_params(_SCORER_PARAMS[name], self.params, f"scorer {name!r}")
        _measure(name, [], [], _NO_ROWS, **self.params)  # refuses bad values now

    def score(self, y_true: ArrayLike | None, y_pred: ArrayLike, X: pd.DataFrame) -> float:
        """Score a prediction, signed (``y_true`` may be None for the rates and block share)."""
        return _sign(self.name) * _measure(self.name, y_true, y_pred, X, **self.params) + 0.0

    def __call__(self, estimator: Any, X: pd.DataFrame, y: ArrayLike) -> float:
        if y is None:
            raise InputError(f"scorer {self.name!r} needs the true labels y, got None")
        return self.score(y, estimator.predict(X), X)

    def __repr__(self) -> str:
        shown = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({self.name!r}{shown})"


SCORERS: dict[str, TimelineScorer] = {
    name: TimelineScorer(name) for name in _SCORER_PARAMS if name != "segmental_f1"
}
"""Ready scorers by name, with default parameters (docs/grid-search.md lists them)."""


class SummaryScorer:
    """A multi-metric scikit-learn scorer: one prediction, one timeline pass, the signed
    scores of :func:`summarize` by ``names`` (of :data:`SCORERS`); ``params`` are
    ``max_gap_seconds``, ``min_block_seconds`` and ``bucket_seconds``."""

    def __init__(self, names: Sequence[str], **params: Any) -> None:
        self.names, self.params = list(names), dict(params)
        for name in self.names:
            _check_name(name, SCORERS)
        _check_params(_SCORER_PARAMS["block_share"], params, "a summary scorer")  # the widths
        summarize(_NO_ROWS, [], [], **params)  # refuses bad values now

    def __call__(self, estimator: Any, X: pd.DataFrame, y: ArrayLike) -> dict[str, float]:
        if y is None:
            raise InputError("a summary scorer needs the true labels y, got None")
        scores = summarize(X, y, estimator.predict(X), **self.params)
        return {name: _sign(name) * scores[name.removeprefix("neg_")] + 0.0 for name in self.names}

    def __repr__(self) -> str:
        shown = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({self.names!r}{shown})"


def get_scorer(name: str) -> TimelineScorer:
    """The scorer of a name in :data:`SCORERS`, with default parameters."""
    _check_name(name, SCORERS)
    return TimelineScorer(name)


def make_timeline_scorer(metric_name: str, **kwargs: Any) -> TimelineScorer:
    """A scorer for one measure with chosen parameters (see :class:`TimelineScorer`)."""
    return TimelineScorer(metric_name, **kwargs)


def make_summary_scorer(names: Sequence[str] | None = None, **kwargs: Any) -> SummaryScorer:
    """A multi-metric scorer of ``names`` (all of :data:`SCORERS` by default)."""
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
