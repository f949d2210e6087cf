"""Rejector: confidence = row max; rejected iff confidence < threshold (strict);
raw label = class of the first maximum, or Mixed/Unknown when rejected; None
rejects nothing."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone

from taskclf._columns import PROBA_COLUMNS
from taskclf._frame import LABEL_DTYPE
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import InvalidParameterError, MissingColumnsError
from taskclf.stages.reject import MIXED_CODE, Rejector, reject_codes


def reference_reject(proba, threshold):
    """The rule, row by row."""
    confidences, rejected, labels = [], [], []
    for row in proba.tolist():
        top = max(row)
        first = row.index(top)
        is_rejected = threshold is not None and top < threshold
        confidences.append(top)
        rejected.append(is_rejected)
        labels.append(MIXED_UNKNOWN if is_rejected else CLASS_ORDER[first])
    return confidences, rejected, labels


def frame(rows, index=None):
    return pd.DataFrame(np.asarray(rows, dtype=float), columns=list(PROBA_COLUMNS), index=index)


def row(**probs):
    return [probs.get(c, 0.0) for c in CLASS_ORDER]


def test_confidence_equal_to_threshold_is_not_rejected():
    out = Rejector(threshold=0.5).transform(frame([row(Build=0.5, Debug=0.3, Meet=0.2)]))
    assert out["confidence"].tolist() == [0.5]
    assert out["is_rejected"].tolist() == [False]
    assert out["raw_label"].tolist() == ["Build"]


def test_confidence_below_threshold_is_rejected():
    out = Rejector(threshold=0.55).transform(frame([row(Build=0.5, Debug=0.5)]))
    assert out["is_rejected"].tolist() == [True]
    assert out["raw_label"].tolist() == [MIXED_UNKNOWN]
    assert out["confidence"].tolist() == [0.5]


def test_ties_go_to_the_first_maximum_in_class_order():
    rows = [
        row(Write=0.4, Build=0.4, Meet=0.2),  # Build precedes Write
        row(Review=0.3, Debug=0.3, Communicate=0.3, Meet=0.1),  # Communicate first
        [0.125] * 8,  # BreakIdle is class 0
    ]
    out = Rejector().transform(frame(rows))
    assert out["raw_label"].tolist() == ["Build", "Communicate", "BreakIdle"]


def test_threshold_none_rejects_nothing():
    rows = [[0.125] * 8, row(Meet=0.2, Write=0.8)]
    out = Rejector(threshold=None).transform(frame(rows))
    assert out["is_rejected"].tolist() == [False, False]
    assert out["raw_label"].tolist() == ["BreakIdle", "Write"]


def test_threshold_bounds():
    rows = [[0.125] * 8, row(Meet=1.0)]
    assert Rejector(threshold=0.0).transform(frame(rows))["is_rejected"].tolist() == [False] * 2
    assert Rejector(threshold=1.0).transform(frame(rows))["is_rejected"].tolist() == [True, False]
    assert Rejector(threshold=1).transform(frame(rows))["raw_label"].tolist() == [
        MIXED_UNKNOWN,
        "Meet",
    ]


def test_stage_columns_dtypes_and_order():
    rows = [row(Meet=0.9, Build=0.1), row(Debug=0.6, Review=0.4), [0.125] * 8]
    df = frame(rows, index=[30, 10, 20]).assign(user_id=["a", "b", "c"])
    out = Rejector(threshold=0.55).transform(df)
    assert list(out.columns) == [*df.columns, "confidence", "is_rejected", "raw_label"]
    assert out.index.tolist() == [30, 10, 20]
    assert out["raw_label"].dtype == LABEL_DTYPE
    assert out["is_rejected"].dtype == bool
    assert out["confidence"].dtype == np.float64
    assert out["raw_label"].tolist() == ["Meet", "Debug", MIXED_UNKNOWN]
    pd.testing.assert_frame_equal(out[list(df.columns)], df)


def test_no_input_mutation():
    df = frame([row(Meet=0.9, Build=0.1)])
    before = copy.deepcopy(df)
    Rejector(threshold=0.95).transform(df)
    pd.testing.assert_frame_equal(df, before)


probas = st.integers(0, 15).flatmap(
    lambda n: arrays(np.float64, (n, 8), elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.55, 1]))
)


@settings(max_examples=100, deadline=None)
@given(proba=probas, threshold=st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.55, 1.0])))
def test_reject_codes_match_the_rule(proba, threshold):
    confidence, rejected, codes = reject_codes(proba, threshold)
    ref_conf, ref_rejected, ref_labels = reference_reject(proba, threshold)
    assert confidence.tolist() == ref_conf
    assert rejected.tolist() == ref_rejected
    names = [*CLASS_ORDER, MIXED_UNKNOWN]
    assert [names[c] for c in codes.tolist()] == ref_labels
    assert MIXED_CODE == 8
    out = Rejector(threshold=threshold).transform(frame(proba.reshape(-1, 8)))
    assert out["raw_label"].astype(object).tolist() == ref_labels


@pytest.mark.parametrize("bad", [1.5, -0.01, 2.0, float("nan")])
def test_threshold_outside_unit_interval_is_refused(bad):
    with pytest.raises(InvalidParameterError, match=r"threshold must lie in \[0, 1\]"):
        Rejector(threshold=bad).transform(frame([[0.125] * 8]))


@pytest.mark.parametrize("bad", ["0.5", True, [0.5]])
def test_threshold_that_is_not_a_number_is_refused(bad):
    with pytest.raises(InvalidParameterError, match="threshold must be a number in"):
        Rejector(threshold=bad).fit(frame([[0.125] * 8]))


def test_refused_set_params_keeps_the_old_threshold():
    stage = Rejector(threshold=0.4)
    with pytest.raises(InvalidParameterError, match="got 2.0"):
        stage.set_params(threshold=2.0)
    assert stage.get_params() == {"threshold": 0.4}
    stage.set_params(threshold=0.7)
    assert clone(stage).threshold == 0.7


def test_missing_probability_columns_are_listed():
    df = frame([[0.125] * 8]).drop(columns=["proba_Build"])
    with pytest.raises(MissingColumnsError, match="Rejector: missing 1 .*'proba_Build'"):
        Rejector().transform(df)
