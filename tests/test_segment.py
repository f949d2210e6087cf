"""Segments: runs of equal labels; start = first bucket's start, end = last bucket's
start + bucket width, bucket_count = number of buckets; never across a timeline.
Segment ids are numbered from 0 for each user, in time order."""

from __future__ import annotations

import datetime as dt

import attrs
import numpy as np
import pandas as pd
import pytest
from conftest import refused, timeline_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf.exceptions import ColumnTypeError, InvalidParameterError, MissingColumnsError
from taskclf.infer.smooth import Segment, aggregate_session_label, segmentize
from taskclf.stages.segment import Segmenter, frame_to_segments, run_starts

UTC = dt.UTC
T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def minute(m, seconds=0):
    return T0 + dt.timedelta(minutes=m, seconds=seconds)


def reference_segments(starts, labels, width_seconds):
    """Segments of one sorted sequence, bucket by bucket."""
    out = []
    for start, label in zip(starts, labels):
        end = start + dt.timedelta(seconds=width_seconds)
        if out and out[-1][2] == label:
            out[-1] = (out[-1][0], end, label, out[-1][3] + 1)
        else:
            out.append((start, end, label, 1))
    return out


def as_tuples(segments):
    return [(s.start_ts, s.end_ts, s.label, s.bucket_count) for s in segments]


def test_segmentize_by_hand():
    labels = ["Build", "Build", "Debug", "Build", "Build", "Build"]
    segments = segmentize([minute(m) for m in range(6)], labels, bucket_seconds=60)
    assert as_tuples(segments) == [
        (minute(0), minute(2), "Build", 2),
        (minute(2), minute(3), "Debug", 1),
        (minute(3), minute(6), "Build", 3),
    ]
    assert all(s.user_id is None for s in segments)
    # the end is the last start plus the bucket width (default 60 s)
    half = segmentize([minute(0), minute(0, 30), minute(1)], ["Meet"] * 3, bucket_seconds=30)
    assert as_tuples(half) == [(minute(0), minute(1, 30), "Meet", 3)]
    assert as_tuples(segmentize([minute(5)], ["Meet"])) == [(minute(5), minute(6), "Meet", 1)]


def test_timestamps_are_written_as_utc():
    naive = [dt.datetime(2025, 1, 6, 9, m) for m in range(2)]
    paris = dt.timezone(dt.timedelta(hours=1))
    aware = [dt.datetime(2025, 1, 6, 10, m, tzinfo=paris) for m in (0, 1)]
    for starts in (naive, aware, pd.DatetimeIndex(naive), [pd.Timestamp(t) for t in aware]):
        (segment,) = segmentize(starts, ["Write", "Write"])
        record = segment.to_dict()  # naive values are UTC
        assert record["start_ts"] == "2025-01-06T09:00:00+00:00"
        assert record["end_ts"] == "2025-01-06T09:02:00+00:00"


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(st.sampled_from(["Build", "Debug", "Meet"]), max_size=20),
    width=st.sampled_from([30, 60, 300]),
)
def test_segmentize_matches_the_rule(labels, width):
    starts = [T0 + dt.timedelta(seconds=width * i) for i in range(len(labels))]
    assert as_tuples(segmentize(starts, labels, width)) == reference_segments(starts, labels, width)


@pytest.mark.parametrize("bad", [0, -60, 60.0, 10**10])
def test_bad_bucket_width_is_refused(bad):
    words = ("bucket_seconds must be an integer in [1, 31622400], got",)
    refused(lambda: segmentize([minute(0)], ["Build"], bad), InvalidParameterError, *words)
    frame = timeline_frame(["a"], [0], segment_id=[0], label=["Build"])
    refused(lambda: frame_to_segments(frame, bucket_seconds=bad), InvalidParameterError, *words)


timelines = st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=10), max_size=5)


@settings(max_examples=50, deadline=None)
@given(parts=timelines)
def test_run_starts_matches_the_rule(parts):
    # a run starts at a timeline start or where the value differs from the previous
    codes = [c for part in parts for c in part]
    bounds = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    expected = [i for i, v in enumerate(codes) if i in bounds[:-1] or v != codes[i - 1]]
    assert run_starts(np.array(codes, dtype=np.int64), bounds).tolist() == expected
    labels = np.array(["a", "a", "b", "b", "b"], dtype=object)
    assert run_starts(labels, np.array([0, 3, 5])).tolist() == [0, 2, 3]


def test_segment_value_object():
    segment = Segment(pd.Timestamp("2025-01-06 09:00"), minute(3), "Build", 3, user_id="u1")
    assert type(segment.start_ts) is dt.datetime  # pandas timestamps become datetimes
    assert segment.to_dict() == {
        "start_ts": "2025-01-06T09:00:00+00:00",
        "end_ts": "2025-01-06T09:03:00+00:00",
        "label": "Build",
        "bucket_count": 3,
        "user_id": "u1",
    }
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        segment.label = "Debug"  # type: ignore[misc]
    assert attrs.evolve(segment, label="Debug").label == "Debug"
    with pytest.raises(ValueError, match="bucket_count"):
        Segment(minute(0), minute(1), "Build", 0)


def segmented(users, minutes, labels, index=None, **params):
    frame = timeline_frame(users, minutes, index=index, smoothed_label=labels)
    before = frame.copy(deep=True)
    out = Segmenter(**params).transform(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert list(out.columns) == [*frame.columns, "segment_id"]
    assert out["segment_id"].dtype == np.int64
    return out["segment_id"].tolist()


def test_segment_ids_are_numbered_per_user_and_never_cross_a_gap():
    # user b first, then user a; a's minutes 3 -> 9 is a gap of 360 s
    users, minutes = ["b", "b", "a", "a", "a", "a"], [0, 1, 2, 3, 9, 10]
    assert segmented(users, minutes, ["Meet"] * 6) == [0, 0, 0, 0, 1, 1]
    assert segmented(users, minutes, ["Meet"] * 6, max_gap_seconds=400) == [0] * 6
    assert segmented(users, minutes, ["Meet"] * 6, max_gap_seconds=359.5) == [0, 0, 0, 0, 1, 1]
    assert segmented(None, [0, 1, 2, 3], ["Build", "Build", "Debug", "Debug"]) == [0, 0, 1, 1]


def test_segmenter_refuses_bad_labels_missing_columns_and_parameters():
    frame = timeline_frame(["a"], [0], smoothed_label=["Lunch"])
    refused(lambda: Segmenter().transform(frame), ColumnTypeError, "'smoothed_label' holds 'Lunch'")
    lacking = frame.drop(columns="smoothed_label")
    refused(lambda: Segmenter().transform(lacking), MissingColumnsError, "'smoothed_label'")
    for bad in (0, -1, "300", 10**10):
        refused(
            lambda: Segmenter(max_gap_seconds=bad).fit(frame),  # noqa: B023
            InvalidParameterError,
            "Segmenter: max_gap_seconds must be a number in (0, 31622400]",
        )
    assert Segmenter().get_params()["max_gap_seconds"] == 300


def test_frame_to_segments_by_user_and_time():
    frame = timeline_frame(
        ["b", "a", "b", "a", "b"],
        [2, 0, 0, 1, 1],
        smoothed_label=["Debug", "Meet", "Build", "Meet", "Build"],
    )
    df = Segmenter().transform(frame)
    assert df["segment_id"].tolist() == [1, 0, 0, 0, 0]  # both users have a segment 0
    segments = frame_to_segments(df, bucket_seconds=60, label_column="smoothed_label")
    assert [(s.user_id, *t) for s, t in zip(segments, as_tuples(segments))] == [
        ("b", minute(0), minute(2), "Build", 2),
        ("b", minute(2), minute(3), "Debug", 1),
        ("a", minute(0), minute(2), "Meet", 2),
    ]
    no_users = Segmenter().transform(timeline_frame(None, [0, 1], smoothed_label=["Meet"] * 2))
    (only,) = frame_to_segments(no_users, label_column="smoothed_label", bucket_seconds=30)
    assert (only.user_id, only.end_ts, only.bucket_count) == (None, minute(1, 30), 2)
    assert frame_to_segments(df.iloc[:0], label_column="smoothed_label") == []
    refused(lambda: frame_to_segments(frame), MissingColumnsError, "'segment_id'", "'label'")


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([("Build", 7), ("Debug", 3)], "Build"),
        ([("Build", 5), ("Debug", 5)], "Mixed"),
        ([], "Mixed"),
    ],
)
def test_session_label_is_the_label_of_most_buckets_when_it_holds_the_threshold(runs, expected):
    t = dt.datetime(2025, 1, 6, 9)
    segments = [Segment(t, t, label, count) for label, count in runs]
    assert aggregate_session_label(segments) == expected
    assert aggregate_session_label(segments, threshold=0.5) == (runs[0][0] if runs else "Mixed")
