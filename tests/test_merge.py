"""Hysteresis merging of short segments (docs/contract.md, step ``merge``).

min_buckets = max(1, min_duration_seconds // bucket_seconds). Passes from left to
right repeat until one changes nothing. A segment of at least min_buckets is kept.
A short one (i) joins the previous segment as already emitted in this pass if that
has its label; else (ii) joins the next if that has its label (emitted as one, the
next skipped); else (iii) stays if it is the first; else (iv) is absorbed by the
previous if it is the last; else (v) is absorbed by the neighbour with more
buckets, the previous on ties; absorbed by the next it takes the next's label.
The stage then joins neighbouring segments of one label (``join_equal``); the
list form keeps the rule's output.
"""

from __future__ import annotations

import datetime as dt

import attrs
import numpy as np
import pandas as pd
import pytest
from conftest import join_equal_neighbours, refused, timeline_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
)
from taskclf.infer.smooth import Segment, merge_short_segments, segmentize
from taskclf.stages.merge import HysteresisMerger, merge_runs, merge_segment_codes, min_buckets_of
from taskclf.stages.segment import Segmenter, frame_to_segments

T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)


def reference_merge(segments, min_buckets):
    """The rule on dicts with label, count, start, end (and first: input index)."""
    current = [dict(s, first=i) for i, s in enumerate(segments)]
    changed = len(current) > 1
    while changed:  # a pass merging nothing emits every segment
        emitted, i = [], 0
        while i < len(current):
            seg, prev = current[i], emitted[-1] if emitted else None
            nxt = current[i + 1] if i + 1 < len(current) else None
            i += 1
            if seg["count"] >= min_buckets:
                emitted.append(dict(seg))
                continue
            if prev is not None and prev["label"] == seg["label"]:  # (i)
                prev.update(count=prev["count"] + seg["count"], end=seg["end"])
            elif nxt is not None and nxt["label"] == seg["label"]:  # (ii)
                emitted.append(dict(seg, count=seg["count"] + nxt["count"], end=nxt["end"]))
                i += 1
            elif prev is None:  # (iii)
                emitted.append(dict(seg))
            elif nxt is None or prev["count"] >= nxt["count"]:  # (iv), (v) previous
                prev.update(count=prev["count"] + seg["count"], end=seg["end"])
            else:  # (v) next
                count = seg["count"] + nxt["count"]
                emitted.append(dict(seg, label=nxt["label"], count=count, end=nxt["end"]))
                i += 1
        changed = len(emitted) != len(current)
        current = emitted
    return current


def short_form(segments):
    """'A5 B1' -> list of dicts (label, count, start, end in minutes)."""
    out, minute = [], 0
    for token in segments.split():
        count = int(token[1:])
        out.append({"label": token[0], "count": count, "start": minute, "end": minute + count})
        minute += count
    return out


def run_rule(text, min_buckets=3):
    """merge_runs on 'A5 B1 ...', written back in the same short form."""
    segments = short_form(text)
    names = sorted({s["label"] for s in segments})
    codes = [names.index(s["label"]) for s in segments]
    firsts, labels, counts = merge_runs(codes, [s["count"] for s in segments], min_buckets)
    reference = reference_merge(segments, min_buckets)
    assert firsts == [s["first"] for s in reference]
    assert [names[c] for c in labels] == [s["label"] for s in reference]
    assert counts == [s["count"] for s in reference]
    return " ".join(f"{names[c]}{n}" for c, n in zip(labels, counts))


@pytest.mark.parametrize(
    ("before", "after", "why"),
    [
        ("A5 B5 C5", "A5 B5 C5", "nothing short"),
        ("A5 A1 B5", "A6 B5", "(i) joins the previous with its label"),
        ("A5 B1 A1 C5", "A7 C5", "(v) B joins A, then (i) A1 joins A as emitted"),
        ("A5 B1 A1", "A7", "(i) on the last segment"),
        ("A5 B1 B1 C5", "A7 C5", "(ii) pair B2, still short: next pass (v) tie -> previous"),
        ("B1 B1 A5", "B2 A5", "(ii) on the first, then (iii) keeps the short first"),
        ("A5 B1 B1", "A7", "(ii) on the last two, then (iv)"),
        ("A1 B5", "A1 B5", "(iii) a short first segment stays"),
        ("A1 B1 C5", "A1 C6", "(iii), then (v) the bigger next absorbs B"),
        ("A5 B1", "A6", "(iv) the last is absorbed by the previous"),
        ("A1 B2", "A3", "(iv) even by a smaller previous"),
        ("A5 B1 C2", "A8", "(v) previous, then (iv) on the last"),
        ("A3 B1 C4", "A3 C5", "(v) the next has more buckets and gives its label"),
        ("A4 B1 C4", "A5 C4", "(v) tie -> previous"),
        ("A5 B1 C4", "A6 C4", "(v) the previous has more buckets"),
        ("A4 B1 C1 D5", "A6 D5", "(v) the previous as emitted (A5) ties D5"),
        ("A1 B1 C1 D1", "A4", "a run of short ones collapses"),
        ("", "", "no segment"),
        ("E1", "E1", "one segment"),
    ],
)
def test_hysteresis_by_hand(before, after, why):
    assert run_rule(before) == after, why


@pytest.mark.parametrize(
    ("seconds", "width", "buckets"),
    [(180, 60, 3), (179, 60, 2), (59, 60, 1), (0, 60, 1), (180, 30, 6), (180, 300, 1)],
)
def test_min_buckets_rule(seconds, width, buckets):
    assert min_buckets_of(seconds, width) == buckets


def segments_of(text, user_id=None, width=60):
    return [
        Segment(
            T0 + dt.timedelta(seconds=width * s["start"]),
            T0 + dt.timedelta(seconds=width * s["end"]),
            s["label"],
            s["count"],
            user_id,
        )
        for s in short_form(text)
    ]


def test_merged_segments_span_and_add_counts():
    merged = merge_short_segments(segments_of("A3 B1 C4 D1 E6 F1 G5", user_id="u1"))
    # B1 goes to C (more buckets), D1 to E (6 > C's 5 as emitted), F1 to E (7 > 5)
    assert [(s.label, s.bucket_count) for s in merged] == [("A", 3), ("C", 5), ("E", 8), ("G", 5)]
    minute = dt.timedelta(minutes=1)
    assert [(s.start_ts, s.end_ts) for s in merged] == [
        (T0, T0 + 3 * minute),
        (T0 + 3 * minute, T0 + 8 * minute),
        (T0 + 8 * minute, T0 + 16 * minute),
        (T0 + 16 * minute, T0 + 21 * minute),
    ]
    assert {s.user_id for s in merged} == {"u1"}


def test_min_duration_bucket_width_and_single_segments():
    segments = segments_of("A5 B2 C5")
    assert [s.label for s in merge_short_segments(segments)] == ["A", "C"]
    # 179 s of 60 s buckets -> min 2 buckets: B2 stays
    kept = merge_short_segments(segments, min_duration_seconds=179)
    assert [s.label for s in kept] == ["A", "B", "C"]
    assert merge_short_segments(segments, min_duration_seconds=0) == segments
    # 30 s buckets: 180 s is 6 buckets, so A5 and C5 are short too
    merged = merge_short_segments(segments_of("A5 B2 C5", width=30), bucket_seconds=30)
    assert [(s.label, s.bucket_count) for s in merged] == [("A", 12)]
    (only,) = segments_of("A1")
    assert merge_short_segments([only])[0] is only
    assert merge_short_segments([]) == []


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"bucket_seconds": 0}, "bucket_seconds must be an integer in [1, 31622400], got 0"),
        ({"bucket_seconds": 10**10}, "bucket_seconds must be an integer in [1, 31622400]"),
        ({"min_duration_seconds": -1}, "min_duration_seconds must be an integer in [0, "),
        ({"min_duration_seconds": 1.5}, "min_duration_seconds must be an integer in [0, "),
    ],
)
def test_bad_parameters_are_refused(kwargs, words):
    call = lambda: merge_short_segments(segments_of("A5 B1"), **kwargs)  # noqa: E731
    refused(call, InvalidParameterError, "merge_short_segments", words)


def test_segment_without_label_is_refused_not_mislabelled():
    segments = segments_of("A5 B1 C5")
    segments[1] = Segment(segments[1].start_ts, segments[1].end_ts, None, 1)  # type: ignore[arg-type]
    refused(
        lambda: merge_short_segments(segments),
        InputError,
        "segment labels hold a missing value at position 1",
    )


segment_lists = st.lists(
    st.tuples(st.sampled_from("ABC"), st.integers(1, 6)), min_size=0, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(runs=segment_lists, min_seconds=st.sampled_from([0, 60, 120, 180, 300]))
def test_merge_runs_and_merge_short_segments_match_the_rule(runs, min_seconds):
    text = " ".join(f"{label}{count}" for label, count in runs)
    merged = run_rule(text, max(1, min_seconds // 60))  # checked against the reference inside
    assert sum(int(t[1:]) for t in merged.split()) == sum(count for _, count in runs)
    segments = merge_short_segments(
        segments_of(text, user_id="u"), min_duration_seconds=min_seconds
    )
    reference = reference_merge(short_form(text), max(1, min_seconds // 60))
    minute = dt.timedelta(minutes=1)
    assert [(s.label, s.bucket_count, s.start_ts, s.end_ts, s.user_id) for s in segments] == [
        (r["label"], r["count"], T0 + r["start"] * minute, T0 + r["end"] * minute, "u")
        for r in reference
    ]


@settings(max_examples=60, deadline=None)
@given(
    timelines=st.lists(segment_lists.filter(bool), min_size=1, max_size=4),
    min_buckets=st.integers(1, 4),
    join_equal=st.booleans(),
)
def test_merge_segment_codes_matches_the_rule_per_timeline(timelines, min_buckets, join_equal):
    labels = np.array(["ABC".index(lab) for t in timelines for lab, _ in t], dtype=np.int8)
    counts = np.array([c for t in timelines for _, c in t], dtype=np.int64)
    bounds = np.cumsum([0] + [len(t) for t in timelines]).astype(np.int64)
    merged_id, merged_labels = merge_segment_codes(
        labels, counts, bounds, min_buckets, join_equal=join_equal
    )
    expected_ids, expected_labels = [], []
    for t in timelines:
        reference = reference_merge(short_form(" ".join(f"{a}{c}" for a, c in t)), min_buckets)
        # each input segment's merged segment within the timeline
        own = [sum(1 for r in reference if r["first"] <= i) - 1 for i in range(len(t))]
        names = [r["label"] for r in reference]
        if join_equal:  # neighbours with one label become one segment
            joined = [k for k in range(len(names)) if k == 0 or names[k] != names[k - 1]]
            own = [sum(1 for j in joined if j <= k) - 1 for k in own]
            names = [names[j] for j in joined]
        expected_ids += [len(expected_labels) + k for k in own]
        expected_labels += ["ABC".index(name) for name in names]
    assert merged_id.tolist() == expected_ids
    assert merged_labels.tolist() == expected_labels


def merge_frame(users, minutes, labels, index=None, **params):
    """The merger's output on segmented rows; the input is left as it was."""
    frame = Segmenter().transform(timeline_frame(users, minutes, smoothed_label=labels))
    frame.index = frame.index if index is None else index
    before = frame.copy(deep=True)
    out = HysteresisMerger(**params).transform(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert list(out.columns) == [*frame.columns, "label"]
    return out


def test_stage_merges_within_each_timeline_only():
    # user a: Build x3, Debug x1 | gap | Meet x1, Build x3 ; user b: Debug x1, Build x4
    users = ["a"] * 8 + ["b"] * 5
    minutes = [0, 1, 2, 3, 20, 21, 22, 23, 0, 1, 2, 3, 4]
    labels = ["Build"] * 3 + ["Debug"] + ["Meet"] + ["Build"] * 3 + ["Debug"] + ["Build"] * 4
    out = merge_frame(users, minutes, labels)
    # Debug (last of its timeline) -> Build (iv); Meet (first after the gap) stays
    # (iii); b's Debug is first of its timeline and stays (iii)
    assert out["label"].astype(object).tolist() == (
        ["Build"] * 4 + ["Meet"] + ["Build"] * 3 + ["Debug"] + ["Build"] * 4
    )
    # numbered per user; the Build blocks either side of the gap stay apart
    assert out["segment_id"].tolist() == [0] * 4 + [1] + [2] * 3 + [0] + [1] * 4


@pytest.mark.parametrize("join_equal", [True, False])
def test_equal_neighbours_are_joined_only_with_join_equal(join_equal):
    # Debug (short, equal neighbours) is absorbed by the previous Build (v, tie):
    # the rule leaves Build 4, Build 3, which join_equal makes one segment
    labels = ["Build"] * 3 + ["Debug"] + ["Build"] * 3
    out = merge_frame(["u"] * 7, range(7), labels, join_equal=join_equal)
    assert out["label"].astype(object).tolist() == ["Build"] * 7
    assert out["segment_id"].tolist() == [0] * 7 if join_equal else [0] * 4 + [1] * 3
    segments = frame_to_segments(out)
    assert [s.bucket_count for s in segments] == ([7] if join_equal else [4, 3])


@pytest.mark.parametrize("join_equal", [True, False])
def test_stage_equals_the_list_form_on_one_timeline(join_equal):
    rng = np.random.default_rng(0)
    labels = []
    while len(labels) < 60:
        labels += [str(rng.choice(["Build", "Debug", "Meet"]))] * int(rng.integers(1, 5))
    labels = labels[:60]
    out = merge_frame(["u"] * 60, range(60), labels, join_equal=join_equal)
    expected = merge_short_segments(
        segmentize([T0 + dt.timedelta(minutes=m) for m in range(60)], labels)
    )
    if join_equal:
        expected = join_equal_neighbours(expected)
    assert frame_to_segments(out) == [attrs.evolve(s, user_id="u") for s in expected]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"bucket_seconds": 0}, "bucket_seconds must be an integer in [1, 31622400], got 0"),
        ({"bucket_seconds": 10**10}, "bucket_seconds must be an integer in [1, 31622400]"),
        ({"min_block_seconds": -5}, "min_block_seconds must be an integer in [0, 31622400]"),
        ({"max_gap_seconds": 0}, "max_gap_seconds must be a number in (0, 31622400]"),
        ({"join_equal": "yes"}, "join_equal must be True or False, got 'yes'"),
    ],
)
def test_stage_refuses_bad_parameters_at_fit_and_transform(params, words):
    frame = Segmenter().transform(timeline_frame(["a"], [0], smoothed_label=["Build"]))
    stage = HysteresisMerger().set_params(**params)  # set_params only stores
    for call in (stage.fit, stage.transform):
        refused(lambda: call(frame), InvalidParameterError, "HysteresisMerger: " + words)  # noqa: B023


def test_stage_refuses_missing_columns_and_segment_ids_that_are_not_integers():
    frame = Segmenter().transform(timeline_frame(["a", "a"], [0, 1], smoothed_label=["Build"] * 2))
    lacking = frame.drop(columns=["segment_id"])
    refused(lambda: HysteresisMerger().transform(lacking), MissingColumnsError, "'segment_id'")
    holed = frame.assign(segment_id=[0.0, np.nan])
    refused(lambda: HysteresisMerger().transform(holed), ColumnTypeError, "1 missing", "row 1")
    text = frame.assign(segment_id=["0", "0"])
    refused(lambda: HysteresisMerger().transform(text), ColumnTypeError, "must hold integers")
