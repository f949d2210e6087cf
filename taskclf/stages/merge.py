"""Hysteresis: merge segments shorter than the minimum block duration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, LABEL, SEGMENT_ID, SMOOTHED_LABEL
from taskclf._frame import (
    add_columns,
    factorize_labels,
    label_accuracy,
    label_codes,
    labels_from_codes,
    refuse_missing,
    require_columns,
)
from taskclf.core.defaults import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_IDLE_GAP_SECONDS,
    MIN_BLOCK_DURATION_SECONDS,
)
from taskclf.exceptions import ColumnTypeError
from taskclf.stages._base import DURATION, SECONDS, FrameTransformer, check_value, instance_of
from taskclf.stages._timeline import TIMELINE_RULES, find_timelines
from taskclf.stages.segment import Segment, run_starts


def min_buckets_of(min_duration_seconds: int, bucket_seconds: int) -> int:
    """Shortest segment kept, in buckets."""
    return max(1, int(min_duration_seconds) // int(bucket_seconds))


def merge_runs(
    labels: list[int], counts: list[int], min_buckets: int
) -> tuple[list[int], list[int], list[int]]:
    """Apply the hysteresis rule (docs/contract.md; cases (i)-(v) in its order) to one
    timeline's segments; return each merged segment's first input segment, label and count."""
    firsts = list(range(len(labels)))
    labels, counts = list(labels), list(counts)
    # A pass changes nothing once all segments are long but a first one that stays (iii).
    while min(counts[1:], default=min_buckets) < min_buckets or (
        len(labels) > 1 and counts[0] < min_buckets and labels[1] == labels[0]
    ):
        out: list[list[int]] = []  # [first, label, count] of each emitted segment
        i = 0
        while i < len(labels):
            label, count = labels[i], counts[i]
            after = i + 1 < len(labels)
            if count >= min_buckets or (not out and not (after and labels[i + 1] == label)):
                out.append([firsts[i], label, count])  # kept, or (iii)
            elif out and out[-1][1] == label:  # (i)
                out[-1][2] += count
            elif after and (labels[i + 1] == label or counts[i + 1] > out[-1][2]):
                out.append([firsts[i], labels[i + 1], count + counts[i + 1]])  # (ii), (v) next
                i += 1
            else:  # (iv), (v) previous
                out[-1][2] += count
            i += 1
        firsts, labels, counts = (list(column) for column in zip(*out))
    return firsts, labels, counts


def merge_segment_codes(
    labels: np.ndarray,
    counts: np.ndarray,
    bounds: np.ndarray,
    min_buckets: int,
    *,
    join_equal: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_runs` over concatenated timelines (``bounds``: first segment of each), then
    with ``join_equal`` joining neighbours of one label: the merged segment of each input
    segment (numbered from 0), and the label code of each merged segment."""
    sizes = np.diff(bounds)
    timeline = np.repeat(np.arange(len(sizes)), sizes)
    # Only timelines of several segments, one of them short, change.
    busy = (np.bincount(timeline[counts < min_buckets], minlength=len(sizes)) > 0) & (sizes > 1)
    keep_start = ~busy[timeline]  # segments untouched by merging stay
    merged_labels = labels.copy()
    all_labels, all_counts = labels.tolist(), counts.tolist()
    for lo, hi in zip(bounds[:-1][busy].tolist(), bounds[1:][busy].tolist()):
        firsts, new_labels, _ = merge_runs(all_labels[lo:hi], all_counts[lo:hi], min_buckets)
        starts = np.add(firsts, lo)
        keep_start[starts] = True
        merged_labels[starts] = new_labels
    merged_id = np.cumsum(keep_start) - 1
    merged_labels = merged_labels[keep_start]
    if join_equal and len(merged_labels) > 1:
        timeline = timeline[keep_start]
        same = (merged_labels[1:] == merged_labels[:-1]) & (timeline[1:] == timeline[:-1])
        new = np.concatenate(([True], ~same))
        merged_id = (np.cumsum(new) - 1)[merged_id]
        merged_labels = merged_labels[new]
    return merged_id.astype(np.int64), merged_labels


def merge_short_segments(
    segments: Sequence[Segment],
    *,
    min_duration_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> list[Segment]:
    """Merge segments shorter than ``min_duration_seconds`` into neighbours: the list form
    of :class:`HysteresisMerger` without ``join_equal``."""
    where = "merge_short_segments"
    width = check_value(bucket_seconds, SECONDS, "bucket_seconds", where)
    minimum = check_value(min_duration_seconds, DURATION, "min_duration_seconds", where)
    segments = list(segments)
    if len(segments) <= 1:
        return segments
    codes, names = factorize_labels([s.label for s in segments], "segment labels")
    counts = [s.bucket_count for s in segments]
    firsts, labels, merged = merge_runs(codes.tolist(), counts, min_buckets_of(minimum, width))
    lasts = [*(f - 1 for f in firsts[1:]), len(segments) - 1]
    return [
        attrs.evolve(segments[a], end_ts=segments[b].end_ts, label=str(names[c]), bucket_count=n)
        for a, b, c, n in zip(firsts, lasts, labels, merged)
    ]


class HysteresisMerger(FrameTransformer):
    """Pipeline stage: merge short segments, renumber ``segment_id`` (per user from 0, in time
    order) and give every row its final ``label``. The rule, its parameters and ``join_equal``
    (``False`` keeps taskclf 0.4's segments) are in docs/contract.md.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "bucket_start_ts": pd.date_range("2025-01-06 09:00", periods=7, freq="min"),
    ...     "smoothed_label": ["Build"] * 3 + ["Debug"] + ["Build"] * 3,
    ...     "segment_id": [0, 0, 0, 1, 2, 2, 2],
    ... })
    >>> HysteresisMerger().predict(frame).tolist().count("Build")
    7
    """

    _parameter_rules: ClassVar = {
        "min_block_seconds": DURATION,
        "bucket_seconds": SECONDS,
        **TIMELINE_RULES,
        "join_equal": instance_of(bool, what="True or False"),
    }

    def __init__(
        self,
        min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
        bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
        max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
        timelines: str = "per_user",
        join_equal: bool = True,
    ) -> None:
        self.min_block_seconds = min_block_seconds
        self.bucket_seconds = bucket_seconds
        self.max_gap_seconds = max_gap_seconds
        self.timelines = timelines
        self.join_equal = join_equal

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        require_columns(X, [SEGMENT_ID, SMOOTHED_LABEL, BUCKET_START_TS], type(self).__name__)
        timelines = find_timelines(X, self.max_gap_seconds, self.timelines)
        refuse_missing(X[SEGMENT_ID].isna().to_numpy(), SEGMENT_ID)
        if not pd.api.types.is_integer_dtype(X[SEGMENT_ID].dtype):
            raise ColumnTypeError(
                f"column {SEGMENT_ID!r} must hold integers (as Segmenter writes them), "
                f"found {X[SEGMENT_ID].dtype}"
            )
        segment = timelines.to_sorted(X[SEGMENT_ID].to_numpy(dtype=np.int64))
        codes = timelines.to_sorted(label_codes(X[SMOOTHED_LABEL], SMOOTHED_LABEL))
        # A segment starts where the id changes or a timeline starts.
        starts = run_starts(segment, timelines.bounds)
        counts = np.diff(np.append(starts, len(segment)))
        seg_bounds = np.searchsorted(starts, timelines.bounds)
        minimum = min_buckets_of(self.min_block_seconds, self.bucket_seconds)
        merged_id, merged_labels = merge_segment_codes(
            codes[starts], counts, seg_bounds, minimum, join_equal=self.join_equal
        )
        merged = np.repeat(merged_id, counts)
        row_segment = timelines.number_per_user(np.flatnonzero(np.diff(merged, prepend=-1)))
        row_label = labels_from_codes(timelines.to_input(merged_labels[merged]))
        return add_columns(X, {SEGMENT_ID: timelines.to_input(row_segment), LABEL: row_label})

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Final label of each row, in input order."""
        return np.asarray(self.transform(X)[LABEL].to_numpy(dtype=object))

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of the final labels against ``y``."""
        return label_accuracy(y, self.predict(X), sample_weight)
