"""Segments: runs of equal labels along each timeline, and the :class:`Segment` value."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, LABEL, SEGMENT_ID, SMOOTHED_LABEL
from taskclf._frame import add_columns, factorize_labels, label_codes, require_columns
from taskclf.core.defaults import DEFAULT_BUCKET_SECONDS, DEFAULT_IDLE_GAP_SECONDS
from taskclf.core.time import ns_to_datetime, timestamps_ns, to_utc_series, ts_utc_aware_get
from taskclf.exceptions import InputError
from taskclf.stages._base import SECONDS, FrameTransformer, check_value, one_of
from taskclf.stages._timeline import TIMELINE_MODES, TIMELINE_RULES, find_timelines, user_codes_of


def _datetime(value: dt.datetime) -> dt.datetime:
    return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value


@attrs.frozen
class Segment:
    """A contiguous run of ``bucket_count`` (>= 1) buckets with one label.

    ``start_ts`` is the first bucket's start, ``end_ts`` the last's plus the
    bucket width (aware UTC from the pipeline; naive values from
    :func:`segmentize` mean UTC); ``user_id`` is the user, when known.
    """

    start_ts: dt.datetime = attrs.field(converter=_datetime)
    end_ts: dt.datetime = attrs.field(converter=_datetime)
    label: str
    bucket_count: int = attrs.field(validator=attrs.validators.ge(1))
    user_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping with ISO 8601 UTC timestamps (``+00:00``)."""
        return {
            "start_ts": ts_utc_aware_get(self.start_ts).isoformat(),
            "end_ts": ts_utc_aware_get(self.end_ts).isoformat(),
            "label": self.label,
            "bucket_count": self.bucket_count,
            "user_id": self.user_id,
        }


def run_starts(codes: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sorted start positions of the runs of equal ``codes``, never crossing ``bounds``."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.empty(len(codes), dtype=bool)
    new[0] = True
    np.not_equal(codes[1:], codes[:-1], out=new[1:])
    new[bounds[:-1]] = True
    return np.flatnonzero(new)


def number_runs(
    X: pd.DataFrame, codes: np.ndarray, max_gap_seconds: float, mode: str = "per_user"
) -> np.ndarray:
    """Segment id of each row of ``X`` (input order): runs of equal ``codes`` per timeline,
    numbered from 0 per user in time order."""
    timelines = find_timelines(X, max_gap_seconds, mode)
    sorted_codes = timelines.to_sorted(codes)
    return timelines.to_input(timelines.number_per_user(run_starts(sorted_codes, timelines.bounds)))


def segmentize(
    bucket_starts: Sequence[dt.datetime],
    labels: Sequence[str],
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
) -> list[Segment]:
    """Turn one time-ordered sequence of labels into segments (naive starts are UTC);
    :class:`~taskclf.exceptions.InputError` if the two sequences differ in length."""
    width = int(check_value(bucket_seconds, SECONDS, "bucket_seconds", "segmentize"))
    if len(bucket_starts) != len(labels):
        raise InputError(
            f"bucket_starts ({len(bucket_starts)}) and labels ({len(labels)}) "
            "must have the same length"
        )
    # checked as every frame's timestamps are: a bad value is a TimestampError
    to_utc_series(pd.Series(list(bucket_starts), dtype=object), column="bucket_starts")
    codes, uniques = factorize_labels(labels)
    starts = run_starts(codes, np.array([0, len(codes)], dtype=np.int64))
    ends = np.append(starts[1:], len(codes))
    step = dt.timedelta(seconds=width)
    given = list(bucket_starts)  # naive stays naive, as in taskclf 0.4
    return [
        Segment(given[a], _datetime(given[b - 1]) + step, str(uniques[codes[a]]), int(b - a))
        for a, b in zip(starts.tolist(), ends.tolist())
    ]


def aggregate_session_label(
    segments: Sequence[Segment],
    session_start_ts: dt.datetime | None = None,
    session_end_ts: dt.datetime | None = None,
    threshold: float = 0.6,
) -> str:
    """The label holding at least ``threshold`` of the session's buckets (the first seen among
    ties), else ``"Mixed"``; the session bounds are taskclf 0.4's signature, unused as there."""
    counts: dict[str, int] = {}
    for segment in segments:
        counts[segment.label] = counts.get(segment.label, 0) + segment.bucket_count
    if not counts:
        return "Mixed"
    label = max(counts, key=counts.__getitem__)
    return label if counts[label] / sum(counts.values()) >= threshold else "Mixed"


def frame_to_segments(
    frame: pd.DataFrame,
    *,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
    label_column: str = LABEL,
    timelines: str = "per_user",
) -> list[Segment]:
    """The segments of ``pipeline.transform``'s output, by user (first seen), then time.

    Rows are grouped by ``(user_id, segment_id)`` (``segment_id`` alone
    without ``user_id``); a segment's label is its first row's
    ``label_column``. With ``timelines="as_given"`` (as the pipeline was
    run) segments are the runs of ``segment_id`` in row order, without user.
    """
    where = "frame_to_segments"
    width = np.int64(check_value(bucket_seconds, SECONDS, "bucket_seconds", where))
    require_columns(frame, [SEGMENT_ID, label_column, BUCKET_START_TS], where)
    as_given = check_value(timelines, one_of(*TIMELINE_MODES), "timelines", where) == "as_given"
    if len(frame) == 0:
        return []
    ts = timestamps_ns(frame)
    codes, users = (None, None) if as_given else user_codes_of(frame)
    user = np.zeros(len(ts), dtype=np.int64) if codes is None else codes
    seg = frame[SEGMENT_ID].to_numpy()
    order = np.arange(len(seg)) if as_given else np.lexsort((ts, seg, user))
    user_starts = np.flatnonzero(np.diff(user[order], prepend=-1))
    starts = run_starts(seg[order], np.append(user_starts, len(order)))
    ends = np.append(starts[1:], len(order))
    first, last = order[starts], order[ends - 1]
    labels = np.asarray(frame[label_column].to_numpy(dtype=object))[first].tolist()
    owners = [None] * len(first) if users is None else users[codes[first]].tolist()  # type: ignore[index]
    start_ns, end_ns = ts[first].tolist(), (ts[last] + width * 1_000_000_000).tolist()
    counts = (ends - starts).tolist()
    return [
        Segment(ns_to_datetime(s), ns_to_datetime(e), str(label), c, user)
        for s, e, label, c, user in zip(start_ns, end_ns, labels, counts, owners)
    ]


class Segmenter(FrameTransformer):
    """Pipeline stage: ``segment_id`` (int64), the runs of equal ``smoothed_label`` (the rule
    and parameters: docs/contract.md); :func:`frame_to_segments` reads the segments."""

    _parameter_rules: ClassVar = TIMELINE_RULES

    def __init__(
        self, max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS, timelines: str = "per_user"
    ) -> None:
        self.max_gap_seconds = max_gap_seconds
        self.timelines = timelines

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        require_columns(X, [SMOOTHED_LABEL, BUCKET_START_TS], type(self).__name__)
        codes = label_codes(X[SMOOTHED_LABEL], SMOOTHED_LABEL)
        ids = number_runs(X, codes, self.max_gap_seconds, self.timelines)
        return add_columns(X, {SEGMENT_ID: ids})
