"""Rolling majority: window w >= 1, half = w // 2, row i sees rows i-half .. i+half
clipped to its timeline. The row keeps its label when that label has the highest
count in the window; otherwise the label with the highest count wins, the one
occurring first in the window among ties. Flap rate = changes / buckets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import refused, timeline_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf._frame import LABEL_DTYPE
from taskclf.core.types import MIXED_UNKNOWN
from taskclf.exceptions import ColumnTypeError, InvalidParameterError, MissingColumnsError
from taskclf.infer.smooth import flap_rate, rolling_majority
from taskclf.stages.smooth import MajoritySmoother, rolling_majority_codes


def reference_majority(labels, window, bounds=None):
    """The rule, row by row, never looking across a timeline bound."""
    bounds = [0, len(labels)] if bounds is None else bounds
    half = window // 2
    out = []
    for start, stop in itertools.pairwise(bounds):
        for i in range(start, stop):
            seen = labels[max(start, i - half) : min(stop, i + half + 1)]
            counts = {value: seen.count(value) for value in seen}
            top = max(counts.values())
            if counts[labels[i]] == top:
                out.append(labels[i])
            else:
                out.append(next(value for value in seen if counts[value] == top))
    return out


@pytest.mark.parametrize(
    ("labels", "window", "expected"),
    [
        # row 0 sees A,B (own A ties: stays); row 1 sees A,B,A -> A; row 5 sees B,C
        ("ABABBC", 3, "AABBBC"),
        ("ABC", 3, "ABC"),  # own label tied for top stays
        ("AABB", 3, "AABB"),
        # row 4 (C) sees B,A,C,A,B: A and B tie; B occurs first in the window
        ("AABACAB", 5, "AAAABAB"),
        ("ABCBA", 5, "ABABA"),
        ("AABACAB", 4, "AAAABAB"),  # an even window spans half on each side
        ("ABA", 2, "AAA"),
        ("ABAC", 1, "ABAC"),
        ("", 3, ""),
        ("A", 9, "A"),
        ("ABBC", 99, "BBBB"),  # a window wider than the sequence sees all of it
    ],
)
def test_rolling_majority_by_hand(labels, window, expected):
    assert rolling_majority(list(labels), window=window) == list(expected)
    assert rolling_majority(list(labels), window=window) == reference_majority(list(labels), window)
    assert rolling_majority(list("ABABBC")) == list("AABBBC")  # the default window is 3


@pytest.mark.parametrize(
    ("name", "bad"),
    [("window", b) for b in (0, -3, 2.5, "3", True, None, 2**64, 100_001)]
    + [("max_gap_seconds", b) for b in (0, -60, "300", True, 10**10)],
)
def test_bad_parameters_are_refused(name, bad):
    words = f"MajoritySmoother: {name} must be"
    if name == "window":
        words += " an integer in [1, 100000], got"
        refused(lambda: rolling_majority(["Build"], window=bad), InvalidParameterError, words)
    stage = MajoritySmoother().set_params(**{name: bad})  # set_params only stores
    frame = timeline_frame(["a"], [0], raw_label=["Build"])
    refused(lambda: stage.fit(frame), InvalidParameterError, words)
    refused(lambda: stage.transform(frame), InvalidParameterError, words)


timelines = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=5)


@settings(max_examples=50, deadline=None)
@given(parts=timelines, window=st.integers(1, 8))
def test_kernel_matches_the_rule_over_many_timelines(parts, window):
    codes = np.array([c for part in parts for c in part], dtype=np.int8)
    bounds = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    out = rolling_majority_codes(codes, bounds, window, n_labels=4)
    assert out.dtype == codes.dtype
    assert out.tolist() == reference_majority(codes.tolist(), window, bounds.tolist())


@settings(max_examples=30, deadline=None)
@given(labels=st.lists(st.sampled_from(["A", "B", "C"])))
def test_flap_rate_matches_the_rule(labels):
    changes = sum(1 for a, b in itertools.pairwise(labels) if a != b)
    assert flap_rate(labels) == (changes / len(labels) if len(labels) > 1 else 0.0)
    assert flap_rate(["Build", "Build", "Debug", "Build"]) == 0.5  # 2 changes / 4 buckets
    assert flap_rate(np.array(["A", "B", "C"])) == 2 / 3


def test_windows_do_not_cross_users_or_gaps():
    # user a: minutes 0-2, then a 10-minute gap, then 13-14; user b: 0-1
    labels = ["Build", "Build", "Debug", "Meet", "Debug", "Meet", "Debug"]
    df = timeline_frame(["a"] * 5 + ["b"] * 2, [0, 1, 2, 13, 14, 0, 1], raw_label=labels)
    out = MajoritySmoother(window=3).transform(df)["smoothed_label"].astype(object).tolist()
    per_timeline = (
        reference_majority(labels[:3], 3)
        + reference_majority(labels[3:5], 3)
        + reference_majority(labels[5:], 3)
    )
    # a window across the gap or the user would have changed row 2 or row 5
    assert out == per_timeline != reference_majority(labels, 3)


def test_stage_adds_smoothed_label_per_timeline():
    rng = np.random.default_rng(0)
    labels = list(rng.choice(["Build", "Debug", "Meet", MIXED_UNKNOWN], size=30))
    df = timeline_frame(["a"] * 15 + ["b"] * 15, list(range(15)) * 2, raw_label=labels)
    out = MajoritySmoother(window=5).transform(df)
    assert list(out.columns) == [*df.columns, "smoothed_label"]
    assert out["smoothed_label"].dtype == LABEL_DTYPE
    assert out["smoothed_label"].astype(object).tolist() == (
        reference_majority(labels[:15], 5) + reference_majority(labels[15:], 5)
    )


def test_stage_refuses_unknown_labels_and_missing_columns():
    df = timeline_frame(["a"] * 2, [0, 1], raw_label=["Build", "Coding"])
    stage = MajoritySmoother()
    refused(lambda: stage.transform(df), ColumnTypeError, "'raw_label' holds 'Coding' (row 1)")
    gap = df.assign(raw_label=["Build", None])
    refused(lambda: stage.transform(gap), ColumnTypeError, "'raw_label' holds", "(row 1)")
    refused(
        lambda: stage.transform(df.drop(columns="raw_label")), MissingColumnsError, "'raw_label'"
    )
