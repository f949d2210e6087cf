"""Segments: runs of equal labels; start = first bucket's start, end = last bucket's
start + bucket width, bucket_count = number of buckets; never across a timeline."""

from __future__ import annotations

import copy
import datetime as dt

import attrs
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
)
from taskclf.infer.smooth import Segment, segmentize
from taskclf.stages.segment import Segmenter, frame_to_segments, run_starts

UTC = dt.UTC
T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def minute(m, seconds=0):
    return T0 + dt.timedelta(minutes=m, seconds=seconds)


def reference_run_starts(codes, bounds):
    """A run starts at a timeline start or where the value differs from the previous."""
    starts = []
    for i, value in enumerate(codes):
        if i in bounds[:-1] or value != codes[i - 1]:
            starts.append(i)
    return starts


def reference_segments(starts, labels, width_seconds):
    """Segments of one sorted sequence, bucket by bucket."""
    out = []
    for start, label in zip(starts, labels):
        end = start + dt.timedelta(seconds=width_seconds)
        if out and out[-1]["label"] == label:
            out[-1]["end"] = end
            out[-1]["count"] += 1
        else:
            out.append({"start": start, "end": end, "label": label, "count": 1})
    return [(s["start"], s["end"], s["label"], s["count"]) for s in out]


def as_tuples(segments):
    return [(s.start_ts, s.end_ts, s.label, s.bucket_count) for s in segments]


def test_segmentize_by_hand():
    starts = [minute(m) for m in range(6)]
    labels = ["Build", "Build", "Debug", "Build", "Build", "Build"]
    segments = segmentize(starts, labels, bucket_seconds=60)
    assert as_tuples(segments) == [
        (minute(0), minute(2), "Build", 2),
        (minute(2), minute(3), "Debug", 1),
        (minute(3), minute(6), "Build", 3),
    ]
    assert all(s.user_id is None for s in segments)


def test_end_is_last_start_plus_bucket_width():
    starts = [minute(0), minute(0, 30), minute(1)]
    segments = segmentize(starts, ["Meet"] * 3, bucket_seconds=30)
    assert as_tuples(segments) == [(minute(0), minute(1, 30), "Meet", 3)]
    # the default width is 60 s
    assert segmentize([minute(0)], ["Meet"])[0].end_ts == minute(1)


def test_timestamps_are_utc():
    naive = [dt.datetime(2025, 1, 6, 9, m) for m in range(2)]
    aware = [
        dt.datetime(2025, 1, 6, 10, m, tzinfo=dt.timezone(dt.timedelta(hours=1))) for m in range(2)
    ]
    for starts in (naive, aware, pd.DatetimeIndex(naive), [pd.Timestamp(t) for t in aware]):
        (segment,) = segmentize(starts, ["Write", "Write"])
        assert segment.start_ts == minute(0)
        assert segment.start_ts.tzinfo == UTC
        assert segment.end_ts.isoformat() == "2025-01-06T09:02:00+00:00"


def test_empty_and_single():
    assert segmentize([], []) == []
    assert as_tuples(segmentize([minute(5)], ["Meet"])) == [(minute(5), minute(6), "Meet", 1)]


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.sampled_from(["Build", "Debug", "Meet"]), max_size=20),
    width=st.sampled_from([30, 60, 300]),
)
def test_segmentize_matches_the_rule(labels, width):
    starts = [T0 + dt.timedelta(seconds=width * i) for i in range(len(labels))]
    assert as_tuples(segmentize(starts, labels, width)) == reference_segments(starts, labels, width)


def test_length_mismatch_is_refused():
    with pytest.raises(InputError, match="bucket_starts has 2 values but labels has 1"):
        segmentize([minute(0), minute(1)], ["Build"])


@pytest.mark.parametrize("bad", [0, -60])
def test_bucket_width_not_positive_is_refused(bad):
    with pytest.raises(InvalidParameterError, match=f"bucket_seconds must be > 0, got {bad}"):
        segmentize([minute(0)], ["Build"], bucket_seconds=bad)
    with pytest.raises(InvalidParameterError, match="bucket_seconds must be > 0"):
        Segmenter(bucket_seconds=bad).fit(pd.DataFrame())


timelines = st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=10), max_size=5)


@settings(max_examples=150, deadline=None)
@given(parts=timelines)
def test_run_starts_matches_the_rule(parts):
    codes = np.array([c for part in parts for c in part], dtype=np.int64)
    bounds = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    out = run_starts(codes, bounds)
    assert out.tolist() == reference_run_starts(codes.tolist(), bounds.tolist())


def test_run_starts_on_strings():
    labels = np.array(["a", "a", "b", "b", "b"], dtype=object)
    assert run_starts(labels, np.array([0, 3, 5])).tolist() == [0, 2, 3]


def test_segment_value_object():
    segment = Segment(dt.datetime(2025, 1, 6, 9), minute(3), "Build", 3, user_id="u1")
    assert segment.start_ts == minute(0)  # naive read as UTC
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


def frame(users, minutes, labels, index=None):
    return pd.DataFrame(
        {
            "user_id": users,
            "bucket_start_ts": [pd.Timestamp(minute(m)) for m in minutes],
            "smoothed_label": labels,
        },
        index=index,
    )


def test_segmenter_numbers_runs_in_timeline_order():
    df = frame(["a"] * 4, [0, 1, 2, 3], ["Build", "Build", "Debug", "Debug"])
    out = Segmenter().transform(df)
    assert out["segment_id"].tolist() == [0, 0, 1, 1]
    assert out["segment_id"].dtype == np.int64
    assert list(out.columns) == [*df.columns, "segment_id"]


def test_segments_never_cross_a_user_or_a_gap():
    # user b first (first appearance), then user a; a's minutes 3 -> 9 is a gap
    users = ["b", "b", "a", "a", "a", "a"]
    minutes = [0, 1, 2, 3, 9, 10]
    labels = ["Meet"] * 6
    out = Segmenter(max_gap_seconds=300).transform(frame(users, minutes, labels))
    assert out["segment_id"].tolist() == [0, 0, 1, 1, 2, 2]
    wider = Segmenter(max_gap_seconds=400).transform(frame(users, minutes, labels))
    assert wider["segment_id"].tolist() == [0, 0, 1, 1, 1, 1]


def test_segmenter_keeps_input_order_and_index():
    users = ["a", "a", "a", "b", "b"]
    minutes = [0, 1, 2, 0, 1]
    labels = ["Build", "Debug", "Debug", "Debug", "Meet"]
    base = Segmenter().transform(frame(users, minutes, labels))
    order = [4, 2, 0, 3, 1]
    shuffled = frame(
        [users[i] for i in order],
        [minutes[i] for i in order],
        [labels[i] for i in order],
        index=[f"r{i}" for i in order],
    )
    out = Segmenter().transform(shuffled)
    assert out.index.tolist() == [f"r{i}" for i in order]
    # ids follow the users' first appearance (b comes first now): the same
    # rows share a segment, under other numbers
    assert out["segment_id"].tolist() == [1, 3, 2, 0, 3]
    same_partition = (
        pd.factorize(out["segment_id"])[0] == pd.factorize(base["segment_id"].iloc[order])[0]
    )
    assert same_partition.all()
    assert base["segment_id"].tolist() == [0, 1, 1, 2, 3]


def test_segmenter_does_not_mutate_input():
    df = frame(["a"] * 3, [0, 1, 2], ["Build", "Debug", "Debug"])
    before = copy.deepcopy(df)
    Segmenter().transform(df)
    pd.testing.assert_frame_equal(df, before)


def test_segmenter_refuses_bad_labels_and_missing_columns():
    with pytest.raises(ColumnTypeError, match="'smoothed_label' holds 'Lunch'"):
        Segmenter().transform(frame(["a"], [0], ["Lunch"]))
    with pytest.raises(MissingColumnsError, match="'smoothed_label'"):
        Segmenter().transform(frame(["a"], [0], ["Meet"]).drop(columns="smoothed_label"))


def test_segmenter_params():
    stage = Segmenter(bucket_seconds=30, max_gap_seconds=120)
    assert clone(stage).get_params() == {"bucket_seconds": 30, "max_gap_seconds": 120}
    with pytest.raises(InvalidParameterError, match="bucket_seconds must be > 0, got 0"):
        stage.set_params(bucket_seconds=0)
    assert stage.bucket_seconds == 30


def test_frame_to_segments_by_user_and_time():
    users = ["b", "a", "b", "a", "b"]
    minutes = [2, 0, 0, 1, 1]
    labels = ["Debug", "Meet", "Build", "Meet", "Build"]
    df = Segmenter().transform(frame(users, minutes, labels))
    segments = frame_to_segments(df, bucket_seconds=60, label_column="smoothed_label")
    assert [(s.user_id, *t) for s, t in zip(segments, as_tuples(segments))] == [
        ("b", minute(0), minute(2), "Build", 2),
        ("b", minute(2), minute(3), "Debug", 1),
        ("a", minute(0), minute(2), "Meet", 2),
    ]
    no_users = Segmenter().transform(frame(["x"] * 2, [0, 1], ["Meet"] * 2).drop(columns="user_id"))
    (only,) = frame_to_segments(no_users, label_column="smoothed_label", bucket_seconds=30)
    assert (only.user_id, only.end_ts, only.bucket_count) == (None, minute(1, 30), 2)
    assert frame_to_segments(df.iloc[:0], label_column="smoothed_label") == []


def test_frame_to_segments_lists_missing_columns():
    with pytest.raises(MissingColumnsError, match="'segment_id', 'label'"):
        frame_to_segments(frame(["a"], [0], ["Meet"]))


def test_missing_label_is_refused_not_mislabelled():
    starts = [minute(m) for m in range(4)]
    with pytest.raises(InputError, match="labels hold a missing value at position 1"):
        segmentize(starts, ["Build", None, None, "Debug"])
