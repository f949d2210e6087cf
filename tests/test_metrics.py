"""Tests of taskclf.metrics: hand-worked values, plain-Python rules, scikit-learn, scorers."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate
from sklearn.utils.validation import check_is_fitted

from taskclf import metrics
from taskclf._columns import PROBA_COLUMNS
from taskclf.core.types import CLASS_ORDER, OUTPUT_LABELS
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
)
from taskclf.metrics import (
    DEFAULT_THRESHOLDS,
    SCORERS,
    edit_score,
    evaluate,
    get_scorer,
    label_changes,
    make_summary_scorer,
    make_timeline_scorer,
    segmental_f1,
    summarize,
    timeline_report,
)
from taskclf.pipeline import build_pipeline

T0 = pd.Timestamp("2025-01-06 09:00")


# --------------------------------------------------------------------------
# Plain-Python statements of the rules (row loops are fine here)
# --------------------------------------------------------------------------


def ref_runs(labels):
    """[(label, start, end)] of the runs of equal labels, end exclusive."""
    runs = []
    for i, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1][2] = i + 1
        else:
            runs.append([label, i, i + 1])
    return [tuple(r) for r in runs]


def ref_segment_counts(y_true, y_pred, overlap):
    """(tp, fp, fn) of segmental F1 on one timeline, as the rule reads."""
    true_runs = ref_runs(y_true)
    used = [False] * len(true_runs)
    tp = fp = 0
    for p_label, p_start, p_end in ref_runs(y_pred):
        best, best_iou = None, 0.0
        for i, (t_label, t_start, t_end) in enumerate(true_runs):
            intersection = min(p_end, t_end) - max(p_start, t_start)
            if t_label != p_label or intersection <= 0:
                continue
            iou = intersection / (max(p_end, t_end) - min(p_start, t_start))
            if iou > best_iou:  # strict: the earlier true run wins ties
                best, best_iou = i, iou
        if best is not None and best_iou >= overlap and not used[best]:
            tp += 1
            used[best] = True
        else:
            fp += 1
    return tp, fp, len(true_runs) - tp


def ref_f1(tp, fp, fn):
    if tp + fp + fn == 0:
        return 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_levenshtein(a, b):
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def ref_edit_counts(y_true, y_pred):
    a = [r[0] for r in ref_runs(y_true)]
    b = [r[0] for r in ref_runs(y_pred)]
    return ref_levenshtein(a, b), max(len(a), len(b))


def ref_changes(labels):
    """Label changes between consecutive buckets (the flap rate's numerator)."""
    return sum(a != b for a, b in itertools.pairwise(labels))


def frame_of(pieces):
    """A frame from [(user, start minute, n buckets)] pieces."""
    users, stamps = [], []
    for user, start, n in pieces:
        users += [user] * n
        stamps += [T0 + pd.Timedelta(minutes=start + k) for k in range(n)]
    return pd.DataFrame({"user_id": users, "bucket_start_ts": stamps})


def one_timeline(n):
    return pd.DataFrame({"bucket_start_ts": pd.date_range(T0, periods=n, freq="min")})


def score(name, y_true, y_pred, X, **params):
    """The unsigned measure of a scorer name, given predictions."""
    scorer = make_timeline_scorer(name, **params)
    return abs(scorer.score(y_true, y_pred, X))


# --------------------------------------------------------------------------
# One timeline, by hand
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_true", "y_pred", "overlap", "expected"),
    [
        # True AAAA|BBBB, pred AAA|BBBBB: IoU(A) = 3/4, IoU(B) = 4/5.
        ("AAAABBBB", "AAABBBBB", 0.1, 1.0),
        ("AAAABBBB", "AAABBBBB", 0.75, 1.0),  # 3/4 >= 0.75: inclusive
        ("AAAABBBB", "AAABBBBB", 0.8, 0.5),  # A misses (FP + FN), B hits: P = R = 1/2
        ("AAAABBBB", "AAABBBBB", 0.9, 0.0),  # nothing matches: P + R = 0
        # One true run A[0,8) against A[0,3) B[3,4) A[4,8). @50: A[0,3) IoU 3/8
        # FP, B FP, A[4,8) 4/8 TP. @25: A[0,3) takes the true run, A[4,8) finds
        # it used: FP. Either way tp=1 fp=2: P = 1/3, R = 1, F1 = 1/2.
        ("AAAAAAAA", "AAABAAAA", 0.5, 0.5),
        ("AAAAAAAA", "AAABAAAA", 0.25, 0.5),
        # A IoU 1 TP; extra C FP; B IoU 4/5 TP: P = 2/3, R = 1.
        ("AAAAABBBBB", "AAAAACBBBB", 0.5, 0.8),
        # Pred A[1,5) ties at IoU 1/5 between true A[0,2) and A[3,11): the
        # earlier one wins, so A[3,11) stays free for pred A[6,11) (IoU 5/8).
        # tp=2, fp=2 (X, C), fn=1 (B): 4/7 (2/7 had the tie gone the other way).
        ("AABAAAAAAAA", "XAAAACAAAAA", 0.1, 4 / 7),
        ("AABB", "BBAA", 0.5, 0.0),  # same boundaries, other labels
        ("AABB", "AABB", 1.0, 1.0),
        ("AABB", "ABBB", 1.0, 0.0),
        ("", "", 0.5, 1.0),
    ],
)
def test_segmental_f1_by_hand(y_true, y_pred, overlap, expected):
    assert segmental_f1(list(y_true), list(y_pred), overlap=overlap) == pytest.approx(expected)


def test_segmental_f1_reads_positions_not_the_index():
    y_true = np.array(["Build"] * 3 + ["Debug"] * 3)
    y_pred = pd.Series(["Build"] * 2 + ["Debug"] * 4, index=[9, 8, 7, 6, 5, 4])
    assert segmental_f1(y_true, y_pred) == 1.0


@pytest.mark.parametrize("overlap", [0, -0.1, 1.0001, float("nan"), True, "0.5"])
def test_segmental_f1_refuses_bad_overlap(overlap):
    with pytest.raises(InvalidParameterError, match="overlap"):
        segmental_f1(list("AB"), list("AB"), overlap=overlap)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "expected"),
    [
        ("AAAABBBB", "AAABBBBB", 1.0),  # same runs A|B, other boundaries
        ("AABBAA", "AABCAA", 0.75),  # A|B|A vs A|B|C|A: 1 insertion / 4
        ("AAAA", "BBBB", 0.0),  # 1 substitution / 1
        ("ABAB", "AAAA", 0.25),  # 3 deletions / 4
        ("AABBCC", "AACCBB", 1 / 3),  # 2 substitutions / 3
        ("", "", 1.0),
    ],
)
def test_edit_score_by_hand(y_true, y_pred, expected):
    assert edit_score(list(y_true), list(y_pred)) == pytest.approx(expected)
    assert edit_score(list(y_pred), list(y_true)) == pytest.approx(expected)


# --------------------------------------------------------------------------
# Frames: timelines scored apart and pooled
# --------------------------------------------------------------------------

PIECES = [("u1", 0, 10), ("u1", 20, 6), ("u2", 0, 8)]  # u1 has a 10-minute gap
Y_TRUE = list("AAAAABBBBB" + "CCCAAA" + "BBBBAAAA")
Y_PRED = list("AAAABBBBCB" + "CCAAAA" + "BBBBBAAA")


def test_pieces_pooled_by_hand():
    X = frame_of(PIECES)
    scores = summarize(X, Y_TRUE, Y_PRED)
    # u1a: true A5|B5 vs pred A4|B4|C1|B1 -> @50: A 4/5 TP, B[4,8) 4/6 TP,
    #      C FP, B[9,10) 1/6 FP: (2, 2, 0). u1b: C 2/3, A 3/4: (2, 0, 0).
    # u2: B 4/5, A 3/4: (2, 0, 0). Pooled tp=6 fp=2 fn=0: F1 = 6/7.
    assert scores["segmental_f1@50"] == pytest.approx(6 / 7)
    # Edit: u1a A|B vs A|B|C|B: d=2 of 4; u1b 0 of 2; u2 0 of 2 -> 1 - 2/8.
    assert scores["edit_score"] == pytest.approx(0.75)
    # Flap: 3 + 1 + 1 changes over 24 buckets; steps between pieces don't count.
    assert scores["flap_rate"] == pytest.approx(5 / 24)
    # Blocks (3 buckets): A4 B4 C1 B1 | C2 A4 | B5 A3 -> 5 of 8 segments.
    assert scores["block_share"] == pytest.approx(5 / 8)
    # The same rows as one timeline give other scores: timelines are read from X.
    joined = summarize(one_timeline(len(Y_TRUE)), Y_TRUE, Y_PRED)
    assert joined["flap_rate"] == pytest.approx(7 / 24)
    assert joined["segmental_f1@50"] == pytest.approx(
        ref_f1(*ref_segment_counts(Y_TRUE, Y_PRED, 0.5))
    )

    report = timeline_report(X, Y_TRUE, Y_PRED)
    assert list(report.columns[:4]) == ["user_id", "start_ts", "end_ts", "bucket_count"]
    assert list(report.columns[4:]) == list(scores)
    assert report["user_id"].tolist() == ["u1", "u1", "u2"]
    assert report["bucket_count"].tolist() == [10, 6, 8]
    assert report["start_ts"].iloc[1] == pd.Timestamp("2025-01-06 09:20", tz="UTC")
    assert report["end_ts"].iloc[1] == pd.Timestamp("2025-01-06 09:26", tz="UTC")
    assert report["segmental_f1@50"].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert report["edit_score"].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert report["flap_rate"].tolist() == pytest.approx([3 / 10, 1 / 6, 1 / 8])
    assert report["block_share"].tolist() == pytest.approx([2 / 4, 1 / 2, 2 / 2])
    assert report["accuracy"].tolist() == pytest.approx([0.8, 5 / 6, 7 / 8])


def test_block_share_parameters():
    X = one_timeline(6)
    # Segments AAA (3), B (1), AA (2); 180 s / 60 s = 3 buckets: 1 of 3.
    assert score("block_share", None, list("AAABAA"), X) == pytest.approx(1 / 3)
    # 0 s -> max(1, 0) = 1 bucket: every segment is a block.
    assert score("block_share", None, list("AAABAA"), X, min_block_seconds=0) == 1.0
    # 30-s buckets: 180 // 30 = 6 buckets; none long enough.
    assert score("block_share", None, list("AAABAA"), X, bucket_seconds=30) == 0.0
    # Segments stop at timeline boundaries: AA | AA are two short ones.
    assert score("block_share", None, list("AAAA"), frame_of([("u", 0, 2), ("u", 30, 2)])) == 0.0


def test_flap_rate_gap_parameter():
    X = frame_of([("u1", 0, 4), ("u1", 14, 4)])  # a 10-minute gap between AAAA and BBBB
    assert score("neg_flap_rate", None, list("AAAABBBB"), X) == 0.0
    assert score("neg_flap_rate", None, list("AAAABBBB"), X, max_gap_seconds=900) == 1 / 8


def test_label_changes_kernel():
    codes = np.array([1, 2, 2, 1, 1, 3, 3])
    assert label_changes(codes, np.array([0, 3, 5, 7])).tolist() == [1, 0, 0]
    assert label_changes(codes, np.array([0, 7])).tolist() == [3]
    assert label_changes(codes[:0], np.array([0])).tolist() == []


def test_reject_rate_from_labels_and_from_the_column():
    y_pred = ["Build", "Mixed/Unknown", "Mixed/Unknown", "Debug"]
    X = one_timeline(4).assign(is_rejected=[True, False, False, False])
    assert score("neg_reject_rate", None, y_pred, X) == 0.5
    assert score("neg_reject_rate", None, y_pred, X, source="is_rejected") == 0.25
    assert score("neg_reject_rate", None, y_pred, None) == 0.5  # X is only checked
    with pytest.raises(MissingColumnsError, match="is_rejected"):
        score("neg_reject_rate", None, y_pred, one_timeline(4), source="is_rejected")
    with pytest.raises(ColumnTypeError, match="is_rejected"):
        score("neg_reject_rate", None, y_pred, X.assign(is_rejected=1), source="is_rejected")
    with pytest.raises(InvalidParameterError, match="source"):
        make_timeline_scorer("neg_reject_rate", source="proba")


def test_empty_frame_is_perfect():
    assert summarize(one_timeline(0), [], []) == {
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "segmental_f1@10": 1.0,
        "segmental_f1@25": 1.0,
        "segmental_f1@50": 1.0,
        "edit_score": 1.0,
        "flap_rate": 0.0,
        "reject_rate": 0.0,
        "block_share": 1.0,
    }
    assert len(timeline_report(one_timeline(0), [], [])) == 0
    assert (
        list(summarize(one_timeline(2), list("AB"), list("AB"), overlaps=[0.75]))[2]
        == "segmental_f1@75"
    )


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(InputError, match="y_true has 3 labels but y_pred has 2"):
        segmental_f1(list("AAB"), list("AA"))
    with pytest.raises(InputError, match="X has 4 rows but y_true and y_pred have 3"):
        summarize(one_timeline(4), list("AAB"), list("AAB"))
    with pytest.raises(InputError, match="X has 4 rows"):
        score("accuracy", list("AAB"), list("AAB"), one_timeline(4))
    with pytest.raises(MissingColumnsError, match="bucket_start_ts"):
        summarize(pd.DataFrame({"x": [1, 2]}), list("AB"), list("AB"))
    with pytest.raises(InputError, match="DataFrame"):
        timeline_report(np.zeros((2, 1)), list("AB"), list("AB"))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="y_true labels hold a missing value at position 1"):
        segmental_f1(["A", None], ["A", "A"])
    with pytest.raises(InputError, match="y_pred labels hold a missing value at position 0"):
        summarize(one_timeline(2), list("AB"), [np.nan, "A"])
    with pytest.raises(InputError, match="one-dimensional"):
        score("accuracy", np.zeros((2, 2)), np.zeros((2, 2)), None)
    with pytest.raises(InvalidParameterError, match="max_gap_seconds"):
        summarize(one_timeline(2), list("AB"), list("AB"), max_gap_seconds=0)
    with pytest.raises(InvalidParameterError, match="min_block_seconds"):
        timeline_report(one_timeline(2), list("AB"), list("AB"), min_block_seconds=-1)
    with pytest.raises(InvalidParameterError, match="overlap"):
        summarize(one_timeline(2), list("AB"), list("AB"), overlaps=[0.5, 0])


# --------------------------------------------------------------------------
# Properties: the references and scikit-learn, per timeline and pooled
# --------------------------------------------------------------------------

LABELS = "ABC"


@st.composite
def label_pairs(draw):
    y_true = draw(st.lists(st.sampled_from(LABELS), max_size=30))
    n = len(y_true)
    return y_true, draw(st.lists(st.sampled_from(LABELS), min_size=n, max_size=n))


@settings(max_examples=200, deadline=None)
@given(label_pairs(), st.floats(min_value=0.0, max_value=1.0, exclude_min=True))
def test_one_timeline_agrees_with_the_references(pair, overlap):
    y_true, y_pred = pair
    expected = ref_f1(*ref_segment_counts(y_true, y_pred, overlap))
    assert segmental_f1(y_true, y_pred, overlap=overlap) == pytest.approx(expected)
    d, m = ref_edit_counts(y_true, y_pred)
    assert edit_score(y_true, y_pred) == pytest.approx(1.0 if m == 0 else 1 - d / m)


@st.composite
def frames(draw):
    """Pieces of a frame (users, gaps) with true and predicted labels."""
    pieces, clock = [], {}
    for _ in range(draw(st.integers(1, 4))):
        user = draw(st.sampled_from(["u1", "u2", "u3"]))
        n = draw(st.integers(1, 12))
        start = clock.get(user, 0) + (draw(st.integers(6, 30)) if user in clock else 0)
        clock[user] = start + n
        pieces.append((user, start, n))
    n = sum(p[2] for p in pieces)
    labels = st.sampled_from(["A", "B", "Mixed/Unknown"])
    y_true = draw(st.lists(labels, min_size=n, max_size=n))
    y_pred = draw(st.lists(labels, min_size=n, max_size=n))
    return pieces, np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)


def reference_scores(y_true, y_pred, parts):
    """summarize's measures from the references, pooled over the parts."""
    true_parts = [y_true[a:b] for a, b in parts]
    pred_parts = [y_pred[a:b] for a, b in parts]
    present = sorted(set(y_true) | set(y_pred))
    scores = {
        "accuracy": accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0),
    }
    for overlap in (0.1, 0.25, 0.5):
        counts = [ref_segment_counts(t, p, overlap) for t, p in zip(true_parts, pred_parts)]
        scores[f"segmental_f1@{overlap * 100:g}"] = ref_f1(*np.sum(counts, axis=0))
    d, m = np.sum([ref_edit_counts(t, p) for t, p in zip(true_parts, pred_parts)], axis=0)
    scores["edit_score"] = 1 - d / m
    scores["flap_rate"] = sum(ref_changes(list(p)) for p in pred_parts) / len(y_pred)
    scores["reject_rate"] = np.mean(y_pred == "Mixed/Unknown")
    runs = [r for p in pred_parts for r in ref_runs(list(p))]
    scores["block_share"] = np.mean([end - start >= 3 for _, start, end in runs])
    return scores


def timeline_order(pieces):
    """Piece indices in report order: users by first appearance, then time."""
    first = {}
    for user, _, _ in pieces:
        first.setdefault(user, len(first))
    return sorted(range(len(pieces)), key=lambda i: (first[pieces[i][0]], pieces[i][1]))


@settings(max_examples=150, deadline=None)
@given(frames(), st.randoms(use_true_random=False))
def test_frames_agree_with_the_references_and_sklearn(drawn, random):
    pieces, y_true, y_pred = drawn
    X = frame_of(pieces)
    at = np.cumsum([0] + [n for _, _, n in pieces])
    order_of_pieces = timeline_order(pieces)
    timelines = [np.arange(at[i], at[i + 1]) for i in order_of_pieces]
    order = np.concatenate(timelines)
    sorted_true, sorted_pred = y_true[order], y_pred[order]
    bounds = np.cumsum([0] + [len(t) for t in timelines])
    parts = list(itertools.pairwise(bounds))
    expected = reference_scores(sorted_true, sorted_pred, parts)

    shuffle = list(range(len(X)))
    random.shuffle(shuffle)
    shuffled = summarize(X.iloc[shuffle], y_true[shuffle], y_pred[shuffle])
    assert shuffled == pytest.approx(expected)
    assert summarize(X, y_true, y_pred) == pytest.approx(expected)

    report = timeline_report(X, y_true, y_pred)
    for row, (a, b) in enumerate(parts):
        one = reference_scores(sorted_true[a:b], sorted_pred[a:b], [(0, b - a)])
        assert report.iloc[row][list(one)].tolist() == pytest.approx(list(one.values()))
    assert report["user_id"].tolist() == [pieces[i][0] for i in order_of_pieces]
    assert report["bucket_count"].tolist() == [len(t) for t in timelines]


@settings(max_examples=60, deadline=None)
@given(frames())
def test_scorers_equal_summarize_and_perfect_prediction_scores_one(drawn):
    pieces, y_true, y_pred = drawn
    X = frame_of(pieces)
    scores = summarize(X, y_true, y_pred)
    for name in SCORERS:
        assert abs(get_scorer(name).score(y_true, y_pred, X)) == scores[name.removeprefix("neg_")]
    perfect = summarize(X, y_true, y_true)
    for key in ("accuracy", "macro_f1", "segmental_f1@10", "segmental_f1@50", "edit_score"):
        assert perfect[key] == 1.0


# --------------------------------------------------------------------------
# Scorers in scikit-learn
# --------------------------------------------------------------------------


class ThresholdLabeler(ClassifierMixin, BaseEstimator):
    """Predicts "Build" where column ``x`` exceeds ``threshold``, else "Debug"; counts calls."""

    calls = 0

    def __init__(self, threshold=0.5):
        self.threshold = threshold

    def fit(self, X, y):
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict(self, X):
        check_is_fitted(self)
        type(self).calls += 1
        return np.where(X["x"].to_numpy() > self.threshold, "Build", "Debug")


@pytest.fixture
def activity():
    """Three users, 90 minutes each with a gap; x constant over blocks of minutes."""
    rng = np.random.default_rng(7)
    rows = []
    for user in ("u1", "u2", "u3"):
        minute = 0
        while minute < 90:
            level = float(rng.uniform(0, 1))
            for _ in range(int(rng.integers(1, 9))):
                rows.append((user, T0 + pd.Timedelta(minutes=minute), level))
                minute += 1
            if minute == 40:
                minute += 15  # an idle gap
    X = pd.DataFrame(rows, columns=["user_id", "bucket_start_ts", "x"])
    # Noisy truth: the true boundary is at 0.3, plus a few flipped buckets.
    y = np.where(X["x"] > 0.3, "Build", "Debug")
    flip = rng.random(len(X)) < 0.03
    y[flip] = np.where(y[flip] == "Build", "Debug", "Build")
    return X, y


def test_scorer_names():
    segmental = ["segmental_f1@10", "segmental_f1@25", "segmental_f1@50"]
    rates = ["neg_flap_rate", "neg_reject_rate"]
    expected = ["accuracy", "macro_f1", *segmental, "edit_score", *rates, "block_share"]
    assert list(SCORERS) == expected
    with pytest.raises(InvalidParameterError, match="valid names") as info:
        get_scorer("segmental_f1@40")
    assert "segmental_f1@50" in str(info.value)
    for bad in ("flap_rate", ["accuracy"]):
        with pytest.raises(InvalidParameterError, match="valid names"):
            make_timeline_scorer(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="valid names") as info:
        make_summary_scorer(["segmental_f1"])
    assert "'segmental_f1'," not in str(info.value).split("valid names")[1]


def test_scorer_parameters_are_checked_when_made():
    assert repr(get_scorer("segmental_f1@50")) == "TimelineScorer('segmental_f1@50', overlap=0.5)"
    with pytest.raises(InvalidParameterError, match="overlap"):
        make_timeline_scorer("segmental_f1", overlap=0)
    with pytest.raises(InvalidParameterError, match="takes no parameter"):
        make_timeline_scorer("accuracy", overlap=0.5)
    with pytest.raises(InvalidParameterError, match="max_gap_seconds"):
        make_timeline_scorer("edit_score", max_gap_seconds=-5)
    with pytest.raises(InvalidParameterError, match="min_block_seconds"):
        make_summary_scorer(min_block_seconds=-1)
    with pytest.raises(InvalidParameterError, match="takes no parameter"):
        make_summary_scorer(overlap=0.5)
    with pytest.raises(InvalidParameterError, match="overlaps"):
        make_summary_scorer(overlaps=[0.5])


def test_scorers_predict_once_and_sign_the_scores(activity):
    X, y = activity
    model = ThresholdLabeler(0.5).fit(X, y)
    expected = summarize(X, y, model.predict(X))
    assert expected["flap_rate"] > 0
    for name, scorer in SCORERS.items():
        ThresholdLabeler.calls = 0
        sign = -1 if name.startswith("neg_") else 1
        assert scorer(model, X, y) == sign * expected[name.removeprefix("neg_")] + 0.0
        assert ThresholdLabeler.calls == 1, name
    ThresholdLabeler.calls = 0
    assert make_summary_scorer()(model, X, y) == {
        name: scorer(model, X, y) for name, scorer in SCORERS.items()
    }
    assert ThresholdLabeler.calls == 1 + len(SCORERS)
    with pytest.raises(InputError, match="needs the true labels"):
        get_scorer("accuracy")(model, X, None)
    with pytest.raises(InputError, match="needs the true labels"):
        make_summary_scorer()(model, X, None)


def test_scorer_parameters_reach_the_measure_and_survive_pickling(activity):
    X, y = activity
    model = ThresholdLabeler(0.5).fit(X, y)
    pred = model.predict(X)
    wide = summarize(X, y, pred, overlaps=[0.75], max_gap_seconds=3600, min_block_seconds=300)
    narrow = summarize(X, y, pred, overlaps=[0.75], min_block_seconds=300)
    scorers = {
        make_timeline_scorer("segmental_f1", overlap=0.75): narrow["segmental_f1@75"],
        make_timeline_scorer("neg_flap_rate", max_gap_seconds=3600): -wide["flap_rate"],
        make_summary_scorer(["block_share"], min_block_seconds=300): {
            "block_share": narrow["block_share"]
        },
    }
    for scorer, expected in scorers.items():
        again = pickle.loads(pickle.dumps(scorer))
        assert repr(again) == repr(scorer)
        assert scorer(model, X, y) == again(model, X, y) == expected


def test_cross_val_score_and_grid_search_score_each_fold_by_its_timelines(activity):
    X, y = activity
    cv = KFold(3, shuffle=True, random_state=0)  # folds in shuffled row order
    model = ThresholdLabeler(0.4).fit(X, y)
    scores = cross_val_score(model, X, y, cv=cv, scoring=get_scorer("segmental_f1@50"))
    expected = [
        summarize(X.iloc[test], y[test], model.predict(X.iloc[test]))["segmental_f1@50"]
        for _, test in cv.split(X)
    ]
    assert scores == pytest.approx(expected)
    grid = {"threshold": [0.1, 0.3, 0.6, 0.9]}
    cv = KFold(3, shuffle=True, random_state=1)
    one = GridSearchCV(ThresholdLabeler(), grid, scoring=get_scorer("segmental_f1@50"), cv=cv)
    assert one.fit(X, y).best_params_ == {"threshold": 0.3}
    every = GridSearchCV(
        ThresholdLabeler(), grid, scoring=dict(SCORERS), refit="segmental_f1@50", cv=KFold(3)
    ).fit(X, y)
    assert every.best_params_ == {"threshold": 0.3}
    assert all(f"mean_test_{name}" in every.cv_results_ for name in SCORERS)
    assert np.all(every.cv_results_["mean_test_neg_flap_rate"] <= 0)


@pytest.mark.slow
def test_grid_search_with_the_summary_scorer_in_parallel(activity):
    X, y = activity
    search = GridSearchCV(
        ThresholdLabeler(),
        {"threshold": [0.1, 0.3, 0.6]},
        scoring=make_summary_scorer(),
        refit="segmental_f1@25",
        cv=KFold(3),
        n_jobs=2,
    ).fit(X, y)
    assert search.best_params_ == {"threshold": 0.3}
    serial = cross_validate(ThresholdLabeler(0.3), X, y, cv=KFold(3), scoring=make_summary_scorer())
    assert search.cv_results_["mean_test_edit_score"][1] == pytest.approx(
        serial["test_edit_score"].mean()
    )


def test_public_names_are_exported():
    for name in metrics.__all__:
        assert hasattr(metrics, name)


# --------------------------------------------------------------------------
# evaluate: a transformed frame against the truth
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(booster_v1, encoders_v1):
    """A real pipeline's output on unseen, noisier rows (shuffled), the truth, the evaluation."""
    labelled = make_frame(n_users=3, minutes=150, seed=11).sample(frac=1.0, random_state=0)
    numeric = [c for c in labelled.columns if labelled[c].dtype == float]
    noise = np.random.default_rng(0).normal(0, 6, size=(len(labelled), len(numeric)))
    labelled[numeric] += noise
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.6)
    out = pipeline.transform(labelled.drop(columns="label"))
    y = labelled["label"].to_numpy()
    return out, y, evaluate(out, y)


def reference_evaluation(out, y):
    """The figures of evaluate from scikit-learn and plain loops."""
    proba = out[list(PROBA_COLUMNS)].to_numpy()
    top = np.asarray(CLASS_ORDER, dtype=object)[proba.argmax(axis=1)]
    confidence = out["confidence"].to_numpy()
    kept = ~out["is_rejected"].to_numpy()
    bins = np.minimum((confidence * 10).astype(int), 9)
    gaps = [
        abs(np.sum(top[bins == b] == y[bins == b]) - confidence[bins == b].sum()) for b in range(10)
    ]
    figures = {
        "brier": brier_score_loss(y, proba, labels=list(CLASS_ORDER)),
        "log_loss": log_loss(y, proba, labels=list(CLASS_ORDER)),
        "ece": sum(gaps) / len(y),
        "reject_rate": np.mean(~kept),
        "accepted_accuracy": accuracy_score(y[kept], out["raw_label"].to_numpy()[kept]),
        "coverage": [np.mean(confidence >= t) for t in DEFAULT_THRESHOLDS],
    }
    for column in ("label", "raw_label"):
        pred = out[column].to_numpy(dtype=object)
        present = [label for label in OUTPUT_LABELS if label in set(y) | set(pred)]
        p, r, f, support = precision_recall_fscore_support(y, pred, labels=present, zero_division=0)
        figures[column] = {
            **summarize(out, y, pred),
            "macro_f1": f1_score(y, pred, labels=present, average="macro", zero_division=0),
            "accuracy": accuracy_score(y, pred),
            "per_class": {
                label: {"precision": p[i], "recall": r[i], "f1": f[i], "support": support[i]}
                for i, label in enumerate(present)
            },
            "confusion_matrix": {
                "labels": list(OUTPUT_LABELS),
                "counts": confusion_matrix(y, pred, labels=list(OUTPUT_LABELS)).tolist(),
            },
        }
    return figures


def assert_matches(got, expected):
    for key, value in expected.items():
        if key == "coverage":
            assert got["coverage_accuracy"]["coverage"] == pytest.approx(value)
        elif isinstance(value, dict):
            assert_matches(got[key], value)
        elif isinstance(value, list):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value), key


def test_evaluate_equals_sklearn_pooled_and_per_user(evaluated):
    out, y, result = evaluated
    assert result["pooled"]["rows"] == len(out)
    assert 0 < result["pooled"]["reject_rate"] < 1
    assert_matches(result["pooled"], reference_evaluation(out, y))
    assert list(result["per_user"]) == list(out["user_id"].unique())
    for user, figures in result["per_user"].items():
        mine = (out["user_id"] == user).to_numpy()
        assert figures["rows"] == mine.sum()
        assert_matches(figures, reference_evaluation(out[mine], y[mine]))


def test_evaluate_reliability_and_coverage_by_hand():
    proba = np.full((4, 8), 0.1)
    proba[:2] = 0.02
    proba[[0, 1, 2, 3], [0, 0, 1, 2]] = [0.86, 0.86, 0.3, 0.3]  # rows sum to 1
    top = CLASS_ORDER[0]
    out = pd.DataFrame(proba, columns=PROBA_COLUMNS).assign(
        confidence=proba.max(axis=1),
        is_rejected=[False, False, True, True],
        raw_label=[top, top, "Mixed/Unknown", "Mixed/Unknown"],
        label=[top] * 4,
        bucket_start_ts=pd.date_range(T0, periods=4, freq="min"),
    )
    y = [CLASS_ORDER[0], CLASS_ORDER[1], CLASS_ORDER[1], CLASS_ORDER[1]]
    pooled = evaluate(out, y, thresholds=[0.5, 0.0], n_bins=2)["pooled"]
    high, low = 0.86, 0.3
    # Bin [0.5, 1]: rows 0, 1 (top class right, wrong); bin [0, 0.5): rows 2, 3 (right, wrong).
    assert pooled["reliability"]["rows"] == [2, 2]
    assert pooled["reliability"]["accuracy"] == [0.5, 0.5]
    assert pooled["reliability"]["confidence"] == pytest.approx([low, high])
    assert pooled["ece"] == pytest.approx((abs(1 - 2 * low) + abs(1 - 2 * high)) / 4)
    assert pooled["coverage_accuracy"] == {
        "threshold": [0.0, 0.5],
        "coverage": [1.0, 0.5],
        "accuracy": [0.5, 0.5],
    }
    assert pooled["accepted_accuracy"] == 0.5
    assert evaluate(out, y)["per_user"] == {}  # no user_id column


def test_evaluate_refuses_bad_input(evaluated):
    out, y, _ = evaluated
    with pytest.raises(MissingColumnsError, match="confidence"):
        evaluate(out.drop(columns="confidence"), y)
    with pytest.raises(InputError, match="'Mixed/Unknown' at row 2"):
        evaluate(out.iloc[:3], [y[0], y[1], "Mixed/Unknown"])
    with pytest.raises(ColumnTypeError, match="y_true"):
        evaluate(out.iloc[:2], ["Build", "Lunch"])
    with pytest.raises(InputError, match="2 labels but the frame 3 rows"):
        evaluate(out.iloc[:3], y[:2])
    with pytest.raises(ColumnTypeError, match="is_rejected"):
        evaluate(out.assign(is_rejected=0), y)
    with pytest.raises(InvalidParameterError, match="threshold"):
        evaluate(out, y, thresholds=[0.5, 1.5])
    with pytest.raises(InvalidParameterError, match="n_bins"):
        evaluate(out, y, n_bins=0)
