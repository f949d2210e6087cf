"""Timelines: one user's rows in time order, split at gaps longer than max_gap_seconds."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from conftest import T0, refused, timeline_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf.exceptions import (
    ColumnTypeError,
    DuplicateRowsError,
    MissingColumnsError,
    TimestampError,
)
from taskclf.stages._timeline import find_timelines, shared_timelines


def reference_timelines(users, minutes, max_gap_seconds):
    """The rule, row by row: per user (first appearance), by time, split at long gaps;
    the input positions of each timeline's rows."""
    first_seen = {u: users.index(u) for u in users}
    rows = sorted(range(len(users)), key=lambda i: (first_seen[users[i]], minutes[i]))
    timelines = [[rows[0]]]
    for before, row in itertools.pairwise(rows):
        if users[row] != users[before] or (minutes[row] - minutes[before]) * 60 > max_gap_seconds:
            timelines.append([row])
        else:
            timelines[-1].append(row)
    return timelines


def timelines_as_rows(t):
    order = np.arange(len(t.ts_ns)) if t.order is None else t.order
    return [order[lo:hi].tolist() for lo, hi in zip(t.bounds[:-1], t.bounds[1:])]


def test_sorted_frame_without_users_is_one_timeline_split_at_gaps():
    # a gap of exactly 300 s (2 -> 7) stays inside a timeline; 360 s (8 -> 14) splits it
    t = find_timelines(timeline_frame(None, [0, 1, 2, 7, 8, 14, 15]), max_gap_seconds=300)
    assert t.order is None
    assert t.bounds.tolist() == [0, 5, 7]
    assert t.user_codes is None and t.users is None
    # a shorter max gap splits at 2 -> 7 too
    assert find_timelines(timeline_frame(None, [0, 1, 2, 7, 8, 14, 15]), 299).bounds.tolist() == [
        0,
        3,
        5,
        7,
    ]


def test_shuffled_users_are_sorted_by_first_appearance_then_time():
    users = ["b", "a", "b", "a", "b"]
    minutes = [3, 10, 1, 9, 2]
    t = find_timelines(timeline_frame(users, minutes), max_gap_seconds=300)
    assert t.users.tolist() == ["b", "a"]
    assert timelines_as_rows(t) == [[2, 4, 0], [3, 1]]
    assert t.user_codes.tolist() == [0, 0, 0, 1, 1]
    # to_sorted and to_input are inverse permutations
    values = np.array([10, 11, 12, 13, 14])
    assert t.to_sorted(values).tolist() == [12, 14, 10, 13, 11]
    assert t.to_input(t.to_sorted(values)).tolist() == values.tolist()


def test_timestamps_are_read_as_utc():
    # naive values are UTC; aware ones are converted: 10:00+01:00 is 09:00 UTC
    df = pd.DataFrame(
        {"bucket_start_ts": ["2025-01-06T10:01:00+01:00", "2025-01-06 09:00", "2025-01-06T09:02Z"]}
    )
    t = find_timelines(df, max_gap_seconds=300)
    assert t.order.tolist() == [1, 0, 2]
    assert np.diff(t.ts_ns).tolist() == [60_000_000_000] * 2
    assert t.bounds.tolist() == [0, 3]


def test_empty_frame_has_no_timeline():
    t = find_timelines(timeline_frame(["u"], [0]).iloc[:0], max_gap_seconds=300)
    assert t.bounds.tolist() == [0]
    assert len(t.ts_ns) == 0


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 40)),
        min_size=1,
        max_size=40,
        unique=True,
    ),
    max_gap_minutes=st.integers(1, 8),
    with_users=st.booleans(),
)
def test_find_timelines_matches_the_rule(rows, max_gap_minutes, with_users):
    if not with_users:  # one timeline per frame: keep the times unique
        rows = list({m: (u, m) for u, m in rows}.values())
    users = [u for u, _ in rows] if with_users else ["all"] * len(rows)
    minutes = [m for _, m in rows]
    t = find_timelines(timeline_frame(users if with_users else None, minutes), max_gap_minutes * 60)
    assert timelines_as_rows(t) == reference_timelines(users, minutes, max_gap_minutes * 60)
    assert t.bounds[-1] == len(rows)


BAD_FRAMES = {
    "a duplicate row": (
        timeline_frame(["a", "b", "a"], [0, 0, 0]),
        DuplicateRowsError,
        ("1 duplicate (user_id, bucket_start_ts)", "user_id 'a'", "2025-01-06T09:00:00"),
    ),
    "a missing timestamp": (
        pd.DataFrame({"bucket_start_ts": [T0, None, T0 + pd.Timedelta(minutes=1)]}),
        TimestampError,
        ("'bucket_start_ts' has 1 missing timestamp", "row 1"),
    ),
    "an unparseable timestamp": (
        pd.DataFrame({"bucket_start_ts": ["2025-01-06 09:00", "yesterday-ish"]}),
        TimestampError,
        ("cannot parse 'yesterday-ish' (row 1)",),
    ),
    "numbers as timestamps": (
        pd.DataFrame({"bucket_start_ts": [1.5, 2.5]}),
        TimestampError,
        ("'bucket_start_ts' holds float64 values",),
    ),
    "no timestamp column": (
        pd.DataFrame({"user_id": ["a"]}),
        MissingColumnsError,
        ("'bucket_start_ts'",),
    ),
    "a missing user_id": (
        timeline_frame(["a", None], [0, 1]),
        ColumnTypeError,
        ("'user_id' has 1 missing value", "row 1"),
    ),
}


@pytest.mark.parametrize(("bad", "error", "words"), BAD_FRAMES.values(), ids=BAD_FRAMES)
def test_bad_frames_are_refused(bad, error, words):
    refused(lambda: find_timelines(bad, 300), error, *words)
    # the same minute for two different users is fine
    assert find_timelines(timeline_frame(["a", "b"], [0, 0]), 300).bounds.tolist() == [0, 1, 2]


def test_timelines_are_found_once_per_call():
    one, other = timeline_frame(["a", "b"], [0, 1]), timeline_frame(["a", "a"], [0, 9])
    assert find_timelines(one, 300) is not find_timelines(one, 300)
    with shared_timelines():
        first = find_timelines(one, 300)
        assert find_timelines(one, 300) is first
        assert find_timelines(one, 60) is not first  # another gap, another answer
    assert find_timelines(one, 300) is not first
    with shared_timelines():  # a new call starts afresh
        assert find_timelines(other, 300).bounds.tolist() == [0, 1, 2]


def test_runs_are_numbered_per_user():
    t = find_timelines(timeline_frame(["b", "a", "b", "a", "b"], [3, 10, 1, 9, 2]), 300)
    # timeline order: b (rows 2, 4, 0), then a (rows 3, 1); runs start at 0, 1, 3, 4
    assert t.number_per_user(np.array([0, 1, 3, 4])).tolist() == [0, 1, 1, 0, 1]
    alone = find_timelines(timeline_frame(None, [0, 1, 2]), 300)
    assert alone.number_per_user(np.array([0, 2])).tolist() == [0, 0, 1]
