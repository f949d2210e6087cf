"""Tests of taskclf.metrics: hand-worked values, plain-Python rules, scikit-learn, scorers."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from conftest import make_frame
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
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
    flap_rate,
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
BAD_OVERLAPS = [0, -0.1, 1.0001, float("nan"), True, "0.5"]


# Plain-Python statements of the rules (row loops are fine here)


def ref_runs(labels):
    """[(label, start, end)] of the runs of equal labels, end exclusive."""
    runs = []
    for i, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1][2] = i + 1
        else:
            runs.append([label, i, i + 1])
    return runs


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


def ref_edit_counts(y_true, y_pred):
    """(Levenshtein distance, longer length) of the run label sequences."""
    a, b = [r[0] for r in ref_runs(y_true)], [r[0] for r in ref_runs(y_pred)]
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1], max(len(a), len(b))


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
    return abs(make_timeline_scorer(name, **params).score(y_true, y_pred, X))


# One timeline, by hand


@pytest.mark.parametrize(
    ("y_true", "y_pred", "overlap", "expected"),
    [
        # True AAAA|BBBB, pred AAA|BBBBB: IoU(A) = 3/4, IoU(B) = 4/5.
        ("AAAABBBB", "AAABBBBB", 0.75, 1.0),  # 3/4 >= 0.75: inclusive
        ("AAAABBBB", "AAABBBBB", 0.8, 0.5),  # A misses (FP + FN), B hits: P = R = 1/2
        # One true run A[0,8) against A[0,3) B[3,4) A[4,8). @50: A[0,3) IoU 3/8
        # FP, B FP, A[4,8) 4/8 TP. @25: A[0,3) takes the true run, A[4,8) finds
        # it used: FP. Either way tp=1 fp=2: P = 1/3, R = 1, F1 = 1/2.
        ("AAAAAAAA", "AAABAAAA", 0.5, 0.5),
        ("AAAAAAAA", "AAABAAAA", 0.25, 0.5),
        # Pred A[1,5) ties at IoU 1/5 between true A[0,2) and A[3,11): the
        # earlier one wins, so A[3,11) stays free for pred A[6,11) (IoU 5/8).
        # tp=2, fp=2 (X, C), fn=1 (B): 4/7 (2/7 had the tie gone the other way).
        ("AABAAAAAAAA", "XAAAACAAAAA", 0.1, 4 / 7),
        ("AABB", "BBAA", 0.5, 0.0),  # same boundaries, other labels
        ("", "", 0.5, 1.0),
    ],
)
def test_segmental_f1_by_hand(y_true, y_pred, overlap, expected):
    assert segmental_f1(list(y_true), list(y_pred), overlap=overlap) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "expected"),
    [
        ("AAAABBBB", "AAABBBBB", 1.0),  # same runs A|B, other boundaries
        ("AABBAA", "AABCAA", 0.75),  # A|B|A vs A|B|C|A: 1 insertion / 4
        ("AABBCC", "AACCBB", 1 / 3),  # 2 substitutions / 3
        ("", "", 1.0),
    ],
)
def test_edit_score_by_hand(y_true, y_pred, expected):
    assert edit_score(list(y_true), list(y_pred)) == pytest.approx(expected)
    assert edit_score(list(y_pred), list(y_true)) == pytest.approx(expected)


def test_one_sequence_reads_positions_and_flap_rate_counts_buckets():
    y_pred = pd.Series(["Build"] * 2 + ["Debug"] * 4, index=[9, 8, 7, 6, 5, 4])
    assert segmental_f1(np.array(["Build"] * 3 + ["Debug"] * 3), y_pred) == 1.0
    assert flap_rate(list("AABA")) == 0.5 and flap_rate([]) == 0.0
    codes = np.array([1, 2, 2, 1, 1, 3, 3])
    assert label_changes(codes, np.array([0, 3, 5, 7])).tolist() == [1, 0, 0]
    assert label_changes(codes[:0], np.array([0])).tolist() == []


# Frames: timelines scored apart and pooled

PIECES = [("u1", 0, 10), ("u1", 20, 6), ("u2", 0, 8)]  # u1 has a 10-minute gap
Y_TRUE = list("AAAAABBBBB" + "CCCAAA" + "BBBBAAAA")
Y_PRED = list("AAAABBBBCB" + "CCAAAA" + "BBBBBAAA")
OVERLAP_KEYS = ["segmental_f1@10", "segmental_f1@25", "segmental_f1@50"]


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
    assert summarize(one_timeline(24), Y_TRUE, Y_PRED)["flap_rate"] == pytest.approx(7 / 24)
    perfect = summarize(X, Y_TRUE, Y_TRUE)
    assert all(perfect[key] == 1.0 for key in ["accuracy", "macro_f1", "edit_score", *OVERLAP_KEYS])

    report = timeline_report(X, Y_TRUE, Y_PRED)
    assert list(report.columns) == ["user_id", "start_ts", "end_ts", "bucket_count", *scores]
    assert report["user_id"].tolist() == ["u1", "u1", "u2"]
    assert report["bucket_count"].tolist() == [10, 6, 8]
    assert report["start_ts"].iloc[1] == pd.Timestamp("2025-01-06 09:20", tz="UTC")
    assert report["end_ts"].iloc[1] == pd.Timestamp("2025-01-06 09:26", tz="UTC")
    assert report["segmental_f1@50"].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert report["flap_rate"].tolist() == pytest.approx([3 / 10, 1 / 6, 1 / 8])


@pytest.mark.parametrize(
    ("name", "pieces", "y_pred", "params", "expected"),
    [
        # Segments AAA (3), B (1), AA (2); 180 s / 60 s = 3 buckets: 1 of 3.
        ("block_share", [("u", 0, 6)], "AAABAA", {}, 1 / 3),
        ("block_share", [("u", 0, 6)], "AAABAA", {"min_block_seconds": 0}, 1.0),  # 1 bucket
        ("block_share", [("u", 0, 6)], "AAABAA", {"bucket_seconds": 30}, 0.0),  # 6 buckets
        ("block_share", [("u", 0, 2), ("u", 30, 2)], "AAAA", {}, 0.0),  # AA | AA, split
        ("neg_flap_rate", [("u", 0, 4), ("u", 14, 4)], "AAAABBBB", {}, 0.0),  # a gap
        ("neg_flap_rate", [("u", 0, 4), ("u", 14, 4)], "AAAABBBB", {"max_gap_seconds": 900}, 1 / 8),
    ],
)
def test_measures_of_the_prediction_alone_follow_their_parameters(
    name, pieces, y_pred, params, expected
):
    assert score(name, None, list(y_pred), frame_of(pieces), **params) == pytest.approx(expected)


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


def test_empty_frame_is_perfect():
    keys = [key.removeprefix("neg_") for key in SCORERS]
    expected = {key: 0.0 if key.endswith("rate") else 1.0 for key in keys}
    assert summarize(one_timeline(0), [], []) == expected
    assert len(timeline_report(one_timeline(0), [], [])) == 0
    assert "segmental_f1@75" in summarize(one_timeline(2), list("AB"), list("AB"), overlaps=[0.75])


ONE, FOUR = one_timeline(1), one_timeline(4)
IE, PE = InputError, InvalidParameterError
VALID_NAMES = r"valid names: .*'neg_reject_rate', 'segmental_f1@10', 'segmental_f1@25', "


@pytest.mark.parametrize(
    ("call", "args", "params", "error", "match"),
    [
        (segmental_f1, (list("AAB"), list("AA")), {}, IE, "3 labels but y_pred has 2"),
        (summarize, (FOUR, list("AAB"), list("AAB")), {}, IE, "X has 4 rows"),
        (score, ("accuracy", list("AAB"), list("AAB"), FOUR), {}, IE, "X has 4 rows"),
        (summarize, (pd.DataFrame({"x": [1]}), ["A"], ["A"]), {}, MissingColumnsError, "bucket_"),
        (timeline_report, (np.zeros((2, 1)), list("AB"), list("AB")), {}, IE, "DataFrame"),
        (segmental_f1, (["A", None], ["A", "A"]), {}, IE, "y_true labels hold a missing value"),
        (summarize, (ONE, ["A"], [np.nan]), {}, IE, "y_pred labels hold a missing value"),
        (score, ("accuracy", np.zeros((2, 2)), np.zeros((2, 2)), None), {}, IE, "one-dimensional"),
        (summarize, (ONE, ["A"], ["A"]), {"max_gap_seconds": 0}, PE, "max_gap_seconds"),
        (timeline_report, (ONE, ["A"], ["A"]), {"min_block_seconds": -1}, PE, "min_block"),
        (summarize, (ONE, ["A"], ["A"]), {"overlaps": [0.5, 0]}, PE, "overlap"),
        (get_scorer, ("segmental_f1@40",), {}, PE, VALID_NAMES),
        (make_timeline_scorer, ("flap_rate",), {}, PE, "valid names"),
        (make_timeline_scorer, (["accuracy"],), {}, PE, "valid names"),
        (make_summary_scorer, (["segmental_f1"],), {}, PE, VALID_NAMES),
        (make_timeline_scorer, ("segmental_f1",), {"overlap": 0}, PE, "overlap"),
        (make_timeline_scorer, ("accuracy",), {"overlap": 0.5}, PE, "takes no parameter"),
        (make_timeline_scorer, ("edit_score",), {"max_gap_seconds": -5}, PE, "max_gap_seconds"),
        (make_timeline_scorer, ("neg_reject_rate",), {"source": "proba"}, PE, "source"),
        (make_summary_scorer, (), {"min_block_seconds": -1}, PE, "min_block_seconds"),
        (make_summary_scorer, (), {"overlap": 0.5}, PE, "takes no parameter"),
        (make_summary_scorer, (), {"overlaps": [0.5]}, PE, "overlaps"),
    ]
    + [(segmental_f1, (["A"], ["A"]), {"overlap": o}, PE, "overlap") for o in BAD_OVERLAPS],
)
def test_bad_inputs_are_refused_clearly(call, args, params, error, match):
    with pytest.raises(error, match=match):
        call(*args, **params)


# Properties: the references and scikit-learn, per timeline and pooled


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("ABC"), st.sampled_from("ABC")), max_size=25),
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
)
def test_one_timeline_agrees_with_the_references(pairs, overlap):
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    expected = ref_f1(*ref_segment_counts(y_true, y_pred, overlap))
    assert segmental_f1(y_true, y_pred, overlap=overlap) == pytest.approx(expected)
    d, m = ref_edit_counts(y_true, y_pred)
    assert edit_score(y_true, y_pred) == pytest.approx(1.0 if m == 0 else 1 - d / m)


@st.composite
def frames(draw):
    """Pieces of a frame in timeline order (users, gaps), with true and predicted labels."""
    pieces = []
    for user in ["u1", "u2", "u3"][: draw(st.integers(1, 3))]:
        start = 0
        for n in draw(st.lists(st.integers(1, 8), min_size=1, max_size=2)):
            pieces.append((user, start, n))
            start += n + draw(st.integers(6, 30))  # a gap of more than 5 minutes
    n = sum(p[2] for p in pieces)
    labels = st.lists(st.sampled_from(["A", "B", "Mixed/Unknown"]), min_size=n, max_size=n)
    return pieces, np.asarray(draw(labels), dtype=object), np.asarray(draw(labels), dtype=object)


def reference_scores(y_true, y_pred, parts):
    """summarize's measures from the references and scikit-learn, pooled over the parts."""
    pairs = [(list(y_true[a:b]), list(y_pred[a:b])) for a, b in parts]
    present = sorted(set(y_true) | set(y_pred))
    scores = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "macro_f1": skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0),
    }
    for overlap in (0.1, 0.25, 0.5):
        counts = [ref_segment_counts(t, p, overlap) for t, p in pairs]
        scores[f"segmental_f1@{overlap * 100:g}"] = ref_f1(*np.sum(counts, axis=0))
    d, m = np.sum([ref_edit_counts(t, p) for t, p in pairs], axis=0)
    scores["edit_score"] = 1 - d / m
    changes = sum(a != b for _, p in pairs for a, b in itertools.pairwise(p))
    scores["flap_rate"] = changes / len(y_pred)
    scores["reject_rate"] = np.mean(y_pred == "Mixed/Unknown")
    runs = [r for _, p in pairs for r in ref_runs(p)]
    scores["block_share"] = np.mean([end - start >= 3 for _, start, end in runs])
    return scores


@settings(max_examples=30, deadline=None)
@given(frames(), st.randoms(use_true_random=False))
def test_frames_agree_with_the_references_sklearn_and_the_scorers(drawn, random):
    pieces, y_true, y_pred = drawn
    X = frame_of(pieces)
    parts = list(itertools.pairwise(np.cumsum([0] + [n for _, _, n in pieces])))
    expected = reference_scores(y_true, y_pred, parts)

    shuffle = list(range(len(X)))
    random.shuffle(shuffle)
    assert summarize(X.iloc[shuffle], y_true[shuffle], y_pred[shuffle]) == pytest.approx(expected)
    for name, scorer in SCORERS.items():
        measure = abs(scorer.score(y_true, y_pred, X))
        assert measure == pytest.approx(expected[name.removeprefix("neg_")])
    report = timeline_report(X, y_true, y_pred)
    for row, (a, b) in enumerate(parts):
        one = reference_scores(y_true[a:b], y_pred[a:b], [(0, b - a)])
        assert report.iloc[row][list(one)].tolist() == pytest.approx(list(one.values()))
    assert report["user_id"].tolist() == [user for user, _, _ in pieces]


# Scorers in scikit-learn


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


@pytest.fixture(scope="module")
def activity():
    """Three users, 60 minutes each with a gap; x constant over blocks of minutes."""
    rng = np.random.default_rng(7)
    rows = []
    for user in ("u1", "u2", "u3"):
        minute = 0
        while minute < 60:
            level = float(rng.uniform(0, 1))
            for _ in range(int(rng.integers(1, 9))):
                rows.append((user, T0 + pd.Timedelta(minutes=minute), level))
                minute += 1
            if minute == 30:
                minute += 15  # an idle gap
    X = pd.DataFrame(rows, columns=["user_id", "bucket_start_ts", "x"])
    # Noisy truth: the true boundary is at 0.3, plus a few flipped buckets.
    y = np.where(X["x"] > 0.3, "Build", "Debug")
    flip = rng.random(len(X)) < 0.03
    y[flip] = np.where(y[flip] == "Build", "Debug", "Build")
    return X, y


def test_scorer_names_and_public_names():
    names = "accuracy macro_f1 segmental_f1@10 segmental_f1@25 segmental_f1@50 edit_score"
    assert list(SCORERS) == [*names.split(), "neg_flap_rate", "neg_reject_rate", "block_share"]
    assert repr(get_scorer("segmental_f1@50")) == "TimelineScorer('segmental_f1@50', overlap=0.5)"
    assert all(hasattr(metrics, name) for name in metrics.__all__)


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
    search = GridSearchCV(
        ThresholdLabeler(),
        {"threshold": [0.1, 0.3, 0.9]},
        scoring=make_summary_scorer(),
        refit="segmental_f1@50",
        cv=KFold(3),
    ).fit(X, y)
    assert search.best_params_ == {"threshold": 0.3}
    assert all(f"mean_test_{name}" in search.cv_results_ for name in SCORERS)
    assert np.all(search.cv_results_["mean_test_neg_flap_rate"] <= 0)


# evaluate: a transformed frame against the truth


@pytest.fixture(scope="module")
def evaluated(booster_v1, encoders_v1):
    """A real pipeline's output on unseen, noisier rows (shuffled), the truth, the evaluation."""
    labelled = make_frame(n_users=3, minutes=130, seed=11).sample(frac=1.0, random_state=0)
    numeric = [c for c in labelled.columns if labelled[c].dtype == float]
    labelled[numeric] += np.random.default_rng(0).normal(0, 6, size=(len(labelled), len(numeric)))
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
        "brier": skm.brier_score_loss(y, proba, labels=list(CLASS_ORDER)),
        "log_loss": skm.log_loss(y, proba, labels=list(CLASS_ORDER)),
        "ece": sum(gaps) / len(y),
        "reject_rate": np.mean(~kept),
        "accepted_accuracy": skm.accuracy_score(y[kept], out["raw_label"].to_numpy()[kept]),
        "coverage": [np.mean(confidence >= t) for t in DEFAULT_THRESHOLDS],
    }
    for column in ("label", "raw_label"):
        pred = out[column].to_numpy(dtype=object)
        present = [label for label in OUTPUT_LABELS if label in set(y) | set(pred)]
        p, r, f, support = skm.precision_recall_fscore_support(
            y, pred, labels=present, zero_division=0
        )
        figures[column] = {
            **summarize(out, y, pred),
            "macro_f1": skm.f1_score(y, pred, labels=present, average="macro", zero_division=0),
            "accuracy": skm.accuracy_score(y, pred),
            "per_class": {
                label: {"precision": p[i], "recall": r[i], "f1": f[i], "support": support[i]}
                for i, label in enumerate(present)
            },
            "confusion_matrix": {
                "labels": list(OUTPUT_LABELS),
                "counts": skm.confusion_matrix(y, pred, labels=list(OUTPUT_LABELS)).tolist(),
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


def small_output():
    """Four rows of a transformed frame: two confident, two rejected; and their truth."""
    proba = np.full((4, 8), 0.1)
    proba[:2] = 0.02
    proba[[0, 1, 2, 3], [0, 0, 1, 2]] = [0.86, 0.86, 0.3, 0.3]  # rows sum to 1
    top, unknown = CLASS_ORDER[0], "Mixed/Unknown"
    out = pd.DataFrame(proba, columns=PROBA_COLUMNS).assign(
        confidence=proba.max(axis=1),
        is_rejected=[False, False, True, True],
        raw_label=[top, top, unknown, unknown],
        label=[top] * 4,
        bucket_start_ts=pd.date_range(T0, periods=4, freq="min"),
    )
    return out, [CLASS_ORDER[0], CLASS_ORDER[1], CLASS_ORDER[1], CLASS_ORDER[1]]


def test_evaluate_reliability_and_coverage_by_hand():
    out, y = small_output()
    pooled = evaluate(out, y, thresholds=[0.5, 0.0], n_bins=2)["pooled"]
    high, low = 0.86, 0.3
    # Bin [0.5, 1]: rows 0, 1 (top class right, wrong); bin [0, 0.5): rows 2, 3 (right, wrong).
    assert pooled["reliability"]["rows"] == [2, 2]
    assert pooled["reliability"]["accuracy"] == [0.5, 0.5]
    assert pooled["reliability"]["confidence"] == pytest.approx([low, high])
    assert pooled["ece"] == pytest.approx((abs(1 - 2 * low) + abs(1 - 2 * high)) / 4)
    curve = {"threshold": [0.0, 0.5], "coverage": [1.0, 0.5], "accuracy": [0.5, 0.5]}
    assert pooled["coverage_accuracy"] == curve
    assert pooled["accepted_accuracy"] == 0.5
    assert evaluate(out, y)["per_user"] == {}  # no user_id column
    empty = evaluate(out.iloc[:0], [])["pooled"]
    assert empty["rows"] == 0 and np.isnan(empty["brier"]) and empty["label"]["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("change", "params", "error", "match"),
    [
        (lambda out, y: (out.drop(columns="confidence"), y), {}, MissingColumnsError, "confid"),
        (lambda out, y: (out, [*y[:3], "Mixed/Unknown"]), {}, IE, r"'Mixed/Unknown' \(row 3\)"),
        (lambda out, y: (out, [*y[:3], "Lunch"]), {}, IE, "'Lunch'"),
        (lambda out, y: (out, y[:2]), {}, IE, "2 labels but X has 4 rows"),
        (lambda out, y: (out.assign(is_rejected=0), y), {}, ColumnTypeError, "is_rejected"),
        (lambda out, y: (out.assign(confidence=np.nan), y), {}, IE, "confidence"),
        (lambda out, y: (out, y), {"thresholds": [0.5, 1.5]}, PE, "thresholds"),
        (lambda out, y: (out, y), {"n_bins": 0}, PE, "n_bins"),
        (lambda out, y: (out, y), {"max_gap_seconds": 0}, PE, "max_gap_seconds"),
    ],
)
def test_evaluate_refuses_bad_input(change, params, error, match):
    with pytest.raises(error, match=match):
        evaluate(*change(*small_output()), **params)
