"""Rejector: confidence = row max; rejected iff confidence < threshold (strict);
raw label = class of the first maximum, or Mixed/Unknown when rejected; None
rejects nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import proba_frame, refused
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from taskclf._frame import LABEL_DTYPE
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import InvalidParameterError, MissingColumnsError
from taskclf.stages.reject import MIXED_CODE, Rejector, reject_codes


def reference_reject(proba, threshold):
    """The rule, row by row."""
    confidences, rejected, labels = [], [], []
    for row in proba.tolist():
        top = max(row)
        is_rejected = threshold is not None and top < threshold
        confidences.append(top)
        rejected.append(is_rejected)
        labels.append(MIXED_UNKNOWN if is_rejected else CLASS_ORDER[row.index(top)])
    return confidences, rejected, labels


def row(**probs):
    return [probs.get(c, 0.0) for c in CLASS_ORDER]


@pytest.mark.parametrize(
    ("threshold", "rows", "labels"),
    [
        (0.5, [row(Build=0.5, Debug=0.3, Meet=0.2)], ["Build"]),  # equal: kept
        (0.55, [row(Build=0.5, Debug=0.5)], [MIXED_UNKNOWN]),  # below: rejected
        (None, [[0.125] * 8, row(Meet=0.2, Write=0.8)], ["BreakIdle", "Write"]),
        (0.0, [[0.125] * 8, row(Meet=1.0)], ["BreakIdle", "Meet"]),
        (1, [[0.125] * 8, row(Meet=1.0)], [MIXED_UNKNOWN, "Meet"]),
        # ties go to the first maximum in class order
        (None, [row(Write=0.4, Build=0.4, Meet=0.2)], ["Build"]),
        (None, [row(Review=0.3, Debug=0.3, Communicate=0.3, Meet=0.1)], ["Communicate"]),
    ],
)
def test_rule_by_hand(threshold, rows, labels):
    out = Rejector(threshold=threshold).transform(proba_frame(rows))
    assert out["raw_label"].tolist() == labels
    assert out["is_rejected"].tolist() == [label == MIXED_UNKNOWN for label in labels]
    assert out["confidence"].tolist() == [max(r) for r in rows]


def test_stage_columns_dtypes_and_order():
    rows = [row(Meet=0.9, Build=0.1), row(Debug=0.6, Review=0.4), [0.125] * 8]
    df = proba_frame(rows, index=[30, 10, 20], user_id=["a", "b", "c"])
    before = df.copy(deep=True)
    out = Rejector(threshold=0.55).transform(df)
    pd.testing.assert_frame_equal(df, before)
    assert list(out.columns) == [*df.columns, "confidence", "is_rejected", "raw_label"]
    assert out.index.tolist() == [30, 10, 20]
    assert out["raw_label"].dtype == LABEL_DTYPE
    assert out["is_rejected"].dtype == bool
    assert out["confidence"].dtype == np.float64
    assert out["raw_label"].tolist() == ["Meet", "Debug", MIXED_UNKNOWN]
    pd.testing.assert_frame_equal(out[list(df.columns)], df)


probas = st.integers(0, 15).flatmap(
    lambda n: arrays(np.float64, (n, 8), elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.55, 1]))
)


@settings(max_examples=40, deadline=None)
@given(proba=probas, threshold=st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.55, 1.0])))
def test_reject_codes_match_the_rule(proba, threshold):
    confidence, rejected, codes = reject_codes(proba, threshold)
    ref_conf, ref_rejected, ref_labels = reference_reject(proba, threshold)
    assert confidence.tolist() == ref_conf
    assert rejected.tolist() == ref_rejected
    assert [[*CLASS_ORDER, MIXED_UNKNOWN][c] for c in codes.tolist()] == ref_labels
    assert MIXED_CODE == 8
    out = Rejector(threshold=threshold).transform(proba_frame(proba.reshape(-1, 8)))
    assert out["raw_label"].astype(object).tolist() == ref_labels


@pytest.mark.parametrize("bad", [1.5, -0.01, 2.0, float("nan"), "0.5", True, [0.5]])
def test_threshold_outside_unit_interval_or_not_a_number_is_refused(bad):
    stage = Rejector(threshold=0.4).set_params(threshold=bad)  # set_params only stores
    assert stage.threshold is bad
    for call in (stage.fit, stage.transform):
        refused(
            lambda: call(proba_frame([[0.125] * 8])),  # noqa: B023
            InvalidParameterError,
            "Rejector: threshold must be None or a number in [0.0, 1.0], got",
        )


def test_missing_probability_columns_are_listed():
    df = proba_frame([[0.125] * 8]).drop(columns=["proba_Build"])
    refused(lambda: Rejector().transform(df), MissingColumnsError, "Rejector", "'proba_Build'")
