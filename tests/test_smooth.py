"""Rolling majority: window w >= 1, half = w // 2, row i sees rows i-half .. i+half
clipped to its timeline. The row keeps its label when that label has the highest
count in the window; otherwise the label with the highest count wins, the one
occurring first in the window among ties. Flap rate = changes / buckets."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from taskclf._frame import LABEL_DTYPE
from taskclf.core.types import MIXED_UNKNOWN
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
)
from taskclf.infer.smooth import flap_rate, rolling_majority
from taskclf.stages.smooth import MajoritySmoother, rolling_majority_codes

T0 = pd.Timestamp("2025-01-06 09:00", tz="UTC")


def reference_majority(labels, window, bounds=None):
    """The rule, row by row, never looking across a timeline bound."""
    if bounds is None:
        bounds = [0, len(labels)]
    half = window // 2
    out = []
    for start, stop in itertools.pairwise(bounds):
        for i in range(start, stop):
            seen = labels[max(start, i - half) : min(stop, i + half + 1)]
            counts = {}
            for value in seen:
                counts[value] = counts.get(value, 0) + 1
            top = max(counts.values())
            if counts[labels[i]] == top:
                out.append(labels[i])
            else:
                out.append(next(value for value in seen if counts[value] == top))
    return out


def reference_flap_rate(labels):
    if len(labels) < 2:
        return 0.0
    changes = sum(1 for a, b in itertools.pairwise(labels) if a != b)
    return changes / len(labels)


def test_window_three_by_hand():
    labels = ["A", "B", "A", "B", "B", "C"]
    # row 0 sees A,B (own A ties for top: stays); row 1 sees A,B,A -> A;
    # row 5 sees B,C (own C ties: stays)
    assert rolling_majority(labels, window=3) == ["A", "A", "B", "B", "B", "C"]


def test_own_label_tied_for_top_stays():
    assert rolling_majority(["A", "B", "C"], window=3) == ["A", "B", "C"]
    assert rolling_majority(["A", "A", "B", "B"], window=3) == ["A", "A", "B", "B"]


def test_tie_among_others_goes_to_the_first_in_the_window():
    labels = ["A", "A", "B", "A", "C", "A", "B"]
    # row 4 (C) sees B, A, C, A, B: A and B have two each; B occurs first in
    # the window although A occurs first in the sequence.
    expected = ["A", "A", "A", "A", "B", "A", "B"]
    assert rolling_majority(labels, window=5) == expected
    assert rolling_majority(["A", "B", "C", "B", "A"], window=5) == ["A", "B", "A", "B", "A"]


def test_even_window_spans_half_on_each_side():
    labels = ["A", "A", "B", "A", "C", "A", "B"]
    assert rolling_majority(labels, window=4) == rolling_majority(labels, window=5)
    assert rolling_majority(labels, window=2) == rolling_majority(labels, window=3)
    assert rolling_majority(["A", "B", "A"], window=2) == ["A", "A", "A"]


def test_window_one_and_short_sequences():
    labels = ["A", "B", "A", "C"]
    assert rolling_majority(labels, window=1) == labels
    assert rolling_majority([], window=3) == []
    assert rolling_majority(["A"], window=9) == ["A"]
    # a window wider than the sequence sees the whole sequence for every row
    assert rolling_majority(["A", "B", "B", "C"], window=99) == ["B", "B", "B", "B"]


def test_default_window_is_three():
    labels = ["A", "B", "A", "B", "B", "C"]
    assert rolling_majority(labels) == rolling_majority(labels, window=3)


@pytest.mark.parametrize("bad", [0, -3])
def test_window_below_one_is_refused(bad):
    with pytest.raises(InvalidParameterError, match=f"window must be >= 1, got {bad}"):
        rolling_majority(["A"], window=bad)
    with pytest.raises(InvalidParameterError, match=f"window must be >= 1, got {bad}"):
        MajoritySmoother(window=bad).fit(pd.DataFrame())


@pytest.mark.parametrize("bad", [2.5, "3", True, None])
def test_window_that_is_not_an_integer_is_refused(bad):
    with pytest.raises(InvalidParameterError, match="window must be an integer >= 1"):
        rolling_majority(["A"], window=bad)


timelines = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(parts=timelines, window=st.integers(1, 8))
def test_kernel_matches_the_rule_over_many_timelines(parts, window):
    codes = np.array([c for part in parts for c in part], dtype=np.int8)
    bounds = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    out = rolling_majority_codes(codes, bounds, window, n_labels=4)
    assert out.dtype == codes.dtype
    assert out.tolist() == reference_majority(codes.tolist(), window, bounds.tolist())


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.sampled_from(["Build", "Debug", "Meet", MIXED_UNKNOWN])),
    window=st.integers(1, 7),
)
def test_list_form_matches_the_rule(labels, window):
    assert rolling_majority(labels, window) == reference_majority(labels, window)


def test_flap_rate_by_hand():
    assert flap_rate(["Build", "Build", "Debug", "Build"]) == 0.5  # 2 changes / 4 buckets
    assert flap_rate(["Build", "Debug"]) == 0.5
    assert flap_rate(["Build"] * 5) == 0.0
    assert flap_rate(["Build"]) == 0.0
    assert flap_rate([]) == 0.0
    assert flap_rate(np.array(["A", "B", "C"])) == 2 / 3


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.sampled_from(["A", "B", "C"])))
def test_flap_rate_matches_the_rule(labels):
    assert flap_rate(labels) == reference_flap_rate(labels)


def frame(users, minutes, labels, index=None):
    return pd.DataFrame(
        {
            "user_id": users,
            "bucket_start_ts": [T0 + pd.Timedelta(minutes=m) for m in minutes],
            "raw_label": labels,
        },
        index=index,
    )


def test_windows_do_not_cross_users_or_gaps():
    # user a: minutes 0-2, then a 10-minute gap, then 13-14; user b: 0-1
    users = ["a"] * 5 + ["b"] * 2
    minutes = [0, 1, 2, 13, 14, 0, 1]
    labels = ["Build", "Build", "Debug", "Meet", "Debug", "Meet", "Debug"]
    df = frame(users, minutes, labels)
    out = MajoritySmoother(window=3).transform(df)["smoothed_label"].astype(object).tolist()
    # alone, each timeline keeps its edge labels; a window across the gap or
    # the user would have turned row 2 (Debug) into Meet or row 5 into Debug
    per_timeline = (
        reference_majority(labels[:3], 3)
        + reference_majority(labels[3:5], 3)
        + reference_majority(labels[5:], 3)
    )
    assert out == per_timeline == ["Build", "Build", "Debug", "Meet", "Debug", "Meet", "Debug"]
    whole = reference_majority(labels, 3)
    assert out != whole


def test_shuffled_rows_come_back_in_input_order():
    rng = np.random.default_rng(0)
    labels = list(rng.choice(["Build", "Debug", "Meet", MIXED_UNKNOWN], size=30))
    users = ["a"] * 15 + ["b"] * 15
    minutes = list(range(15)) * 2
    df = frame(users, minutes, labels)
    expected = MajoritySmoother(window=5).transform(df)
    order = rng.permutation(30)
    shuffled = df.iloc[order].set_axis([f"r{i}" for i in order])
    out = MajoritySmoother(window=5).transform(shuffled)
    assert out.index.tolist() == shuffled.index.tolist()
    assert out["smoothed_label"].tolist() == expected["smoothed_label"].iloc[order].tolist()
    assert expected["smoothed_label"].astype(object).tolist() == (
        reference_majority(labels[:15], 5) + reference_majority(labels[15:], 5)
    )


def test_stage_output_dtype_and_no_mutation():
    df = frame(["a"] * 3, [0, 1, 2], ["Build", "Debug", "Build"])
    before = copy.deepcopy(df)
    out = MajoritySmoother().transform(df)
    pd.testing.assert_frame_equal(df, before)
    assert out["smoothed_label"].dtype == LABEL_DTYPE
    assert list(out.columns) == [*df.columns, "smoothed_label"]


def test_stage_refuses_unknown_labels_and_missing_columns():
    df = frame(["a"] * 2, [0, 1], ["Build", "Coding"])
    with pytest.raises(ColumnTypeError, match="column 'raw_label' holds 'Coding' \\(row 1\\)"):
        MajoritySmoother().transform(df)
    gap = frame(["a"] * 2, [0, 1], ["Build", None])
    with pytest.raises(ColumnTypeError, match="column 'raw_label' holds .*\\(row 1\\)"):
        MajoritySmoother().transform(gap)
    with pytest.raises(MissingColumnsError, match="'raw_label'"):
        MajoritySmoother().transform(df.drop(columns="raw_label"))


def test_params_clone_and_refused_set_params():
    stage = MajoritySmoother(window=5, max_gap_seconds=600)
    assert clone(stage).get_params() == {"window": 5, "max_gap_seconds": 600}
    with pytest.raises(InvalidParameterError, match="window must be >= 1, got 0"):
        stage.set_params(window=0)
    with pytest.raises(InvalidParameterError, match="max_gap_seconds must be > 0"):
        stage.set_params(max_gap_seconds=0)
    assert stage.get_params() == {"window": 5, "max_gap_seconds": 600}


def test_missing_label_is_refused_naming_its_position():
    with pytest.raises(InputError, match="labels hold a missing value at position 1"):
        rolling_majority(["Build", None, "Build", "Debug"])
