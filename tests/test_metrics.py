"""Tests of taskclf.metrics: hand-worked values, plain-Python references, scorers."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate
from sklearn.utils.validation import check_is_fitted

from taskclf import metrics
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
)
from taskclf.metrics import (
    SCORERS,
    accuracy_score,
    block_share_score,
    edit_score,
    flap_rate,
    flap_rate_score,
    get_scorer,
    macro_f1_score,
    make_summary_scorer,
    make_timeline_scorer,
    reject_rate_score,
    segmental_edit_score,
    segmental_f1,
    segmental_f1_score,
    summarize,
    timeline_report,
)

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
            if t_label != p_label:
                continue
            intersection = min(p_end, t_end) - max(p_start, t_start)
            if intersection <= 0:
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
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


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


def frame_of(pieces):
    """A frame from [(user, start minute, n buckets)] pieces."""
    users, stamps = [], []
    for user, start, n in pieces:
        users += [user] * n
        stamps += [T0 + pd.Timedelta(minutes=start + k) for k in range(n)]
    return pd.DataFrame({"user_id": users, "bucket_start_ts": stamps})


def one_timeline(n):
    return pd.DataFrame({"bucket_start_ts": pd.date_range(T0, periods=n, freq="min")})


# --------------------------------------------------------------------------
# segmental_f1 on one timeline, by hand
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        # true AAAA|BBBB, pred AAA|BBBBB: IoU(A) = 3/4, IoU(B) = 4/5.
        (0.1, 1.0),
        (0.25, 1.0),
        (0.5, 1.0),
        (0.75, 1.0),  # 3/4 >= 0.75: the threshold is inclusive
        # 0.8: A misses (FP, and its true run is a FN), B hits: P = R = 1/2.
        (0.8, 0.5),
        (0.9, 0.0),  # nothing matches: P + R = 0
    ],
)
def test_segmental_f1_shifted_boundary(overlap, expected):
    assert segmental_f1(list("AAAABBBB"), list("AAABBBBB"), overlap=overlap) == expected


def test_segmental_f1_over_segmented():
    # True: one run A[0,8). Pred: A[0,3), B[3,4), A[4,8).
    # @50: A[0,3) IoU 3/8 < 1/2 -> FP; B no same-label run -> FP;
    #      A[4,8) IoU 4/8 -> TP. tp=1 fp=2 fn=0: P=1/3, R=1, F1=1/2.
    # @25: A[0,3) 3/8 >= 1/4 -> TP (uses the true run); B -> FP;
    #      A[4,8) best is the used true run -> FP. Again tp=1 fp=2: 1/2.
    for overlap in (0.1, 0.25, 0.5):
        assert segmental_f1(list("AAAAAAAA"), list("AAABAAAA"), overlap=overlap) == 0.5


def test_segmental_f1_extra_short_run():
    # True A[0,5) B[5,10); pred A[0,5) C[5,6) B[6,10).
    # A IoU 1 -> TP; C -> FP; B IoU 4/5 -> TP. tp=2 fp=1 fn=0: P=2/3, R=1, F1=0.8.
    got = segmental_f1(list("AAAAABBBBB"), list("AAAAACBBBB"), overlap=0.5)
    assert got == pytest.approx(0.8)


def test_segmental_f1_tie_goes_to_the_earlier_true_run():
    # True: A[0,2) B[2,3) A[3,11). Pred: X[0,1) A[1,5) C[5,6) A[6,11).
    # Pred A[1,5) has IoU 1/5 with A[0,2) (1 of 5) and 2/10 with A[3,11):
    # a tie, won by the earlier true run A[0,2), so A[3,11) stays free for
    # pred A[6,11) (IoU 5/8). @10: tp=2, fp=2 (X, C), fn=1 (B): F1 = 4/7.
    # Had the tie gone to A[3,11), pred A[6,11) would be a FP: F1 = 2/7.
    y_true = list("AABAAAAAAAA")
    y_pred = list("XAAAACAAAAA")
    assert ref_segment_counts(y_true, y_pred, 0.1) == (2, 2, 1)
    assert segmental_f1(y_true, y_pred, overlap=0.1) == pytest.approx(4 / 7)


def test_segmental_f1_label_must_match():
    # Same boundaries, other label: IoU counts only runs of the same label.
    assert segmental_f1(list("AABB"), list("BBAA")) == 0.0


def test_segmental_f1_empty_is_perfect():
    assert segmental_f1([], []) == 1.0


def test_segmental_f1_accepts_arrays_and_series():
    y_true = np.array(["Build"] * 3 + ["Debug"] * 3)
    y_pred = pd.Series(["Build"] * 2 + ["Debug"] * 4, index=[9, 8, 7, 6, 5, 4])
    # Build IoU 2/3, Debug IoU 3/4: both match at 0.5; positions, not index, count.
    assert segmental_f1(y_true, y_pred) == 1.0


@pytest.mark.parametrize("overlap", [0, 0.0, -0.1, 1.0001, 2, float("nan"), True, "0.5"])
def test_segmental_f1_refuses_bad_overlap(overlap):
    with pytest.raises(InvalidParameterError, match="overlap"):
        segmental_f1(list("AB"), list("AB"), overlap=overlap)


def test_overlap_one_needs_exact_runs():
    assert segmental_f1(list("AABB"), list("AABB"), overlap=1.0) == 1.0
    assert segmental_f1(list("AABB"), list("ABBB"), overlap=1.0) == 0.0


# --------------------------------------------------------------------------
# edit_score on one timeline, by hand
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_true", "y_pred", "expected"),
    [
        ("AAAABBBB", "AAABBBBB", 1.0),  # same runs A|B, other boundaries
        ("AABBAA", "AABCAA", 0.75),  # A|B|A vs A|B|C|A: 1 insertion / 4
        ("AAAA", "BBBB", 0.0),  # 1 substitution / 1
        ("ABAB", "AAAA", 0.25),  # A|B|A|B vs A: 3 deletions / 4
        ("AABBCC", "AACCBB", 1 / 3),  # A|B|C vs A|C|B: 2 substitutions / 3
        ("", "", 1.0),
    ],
)
def test_edit_score_by_hand(y_true, y_pred, expected):
    assert edit_score(list(y_true), list(y_pred)) == pytest.approx(expected)


def test_edit_score_is_symmetric():
    assert edit_score(list("AABBCA"), list("ACCBAA")) == edit_score(list("ACCBAA"), list("AABBCA"))


# --------------------------------------------------------------------------
# Row measures
# --------------------------------------------------------------------------


def test_accuracy_and_macro_f1_by_hand():
    y_true = ["Build", "Debug", "Debug", "Meet"]
    y_pred = ["Build", "Build", "Debug", "Mixed/Unknown"]
    assert accuracy_score(y_true, y_pred) == 0.5
    # Build: P 1/2 R 1 F1 2/3; Debug: P 1 R 1/2 F1 2/3; Meet: 0; Mixed/Unknown: 0.
    assert macro_f1_score(y_true, y_pred) == pytest.approx((2 / 3 + 2 / 3) / 4)


def test_macro_f1_matches_sklearn_on_the_union_of_labels():
    rng = np.random.default_rng(3)
    y_true = rng.choice(["Build", "Debug", "Meet"], size=200)
    y_pred = rng.choice(["Build", "Debug", "Write"], size=200)
    expected = f1_score(
        y_true,
        y_pred,
        labels=sorted(set(y_true) | set(y_pred)),
        average="macro",
        zero_division=0,
    )
    assert macro_f1_score(y_true, y_pred) == pytest.approx(expected)


def test_reject_rate_from_labels_and_from_the_column():
    y_pred = ["Build", "Mixed/Unknown", "Mixed/Unknown", "Debug"]
    assert reject_rate_score(None, y_pred) == 0.5
    X = one_timeline(4).assign(is_rejected=[True, False, False, False])
    assert reject_rate_score(None, y_pred, X, source="is_rejected") == 0.25
    with pytest.raises(MissingColumnsError, match="is_rejected"):
        reject_rate_score(None, y_pred, one_timeline(4), source="is_rejected")
    with pytest.raises(ColumnTypeError, match="is_rejected"):
        reject_rate_score(None, y_pred, X.assign(is_rejected=[1, 0, 0, 0]), source="is_rejected")
    with pytest.raises(InvalidParameterError, match="source"):
        reject_rate_score(None, y_pred, X, source="proba")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Flap rate and block share
# --------------------------------------------------------------------------


def test_flap_rate_is_changes_over_buckets():
    # A B B A: 2 changes over 4 buckets (not over 3 transitions).
    assert flap_rate_score(None, list("ABBA"), one_timeline(4)) == 0.5
    assert flap_rate_score(None, ["A"], one_timeline(1)) == 0.0
    assert flap_rate_score(None, [], one_timeline(0)) == 0.0


def test_flap_rate_ignores_changes_across_timelines():
    # u1 AAAA, u2 BBBB: the A -> B step is between users.
    X = frame_of([("u1", 0, 4), ("u2", 0, 4)])
    assert flap_rate_score(None, list("AAAABBBB"), X) == 0.0
    # One user, a 10-minute gap between AAAA and BBBB.
    X = frame_of([("u1", 0, 4), ("u1", 14, 4)])
    assert flap_rate_score(None, list("AAAABBBB"), X) == 0.0
    assert flap_rate_score(None, list("AAAABBBB"), X, max_gap_seconds=900) == 1 / 8


def test_block_share_by_hand():
    X = one_timeline(6)
    # Segments AAA (3), B (1), AA (2); 180 s / 60 s = 3 buckets: 1 of 3.
    assert block_share_score(None, list("AAABAA"), X) == pytest.approx(1 / 3)
    # min 0 s -> max(1, 0) = 1 bucket: every segment is a block.
    assert block_share_score(None, list("AAABAA"), X, min_block_seconds=0) == 1.0
    # 30-s buckets: 180 // 30 = 6 buckets; none long enough.
    assert block_share_score(None, list("AAABAA"), X, bucket_seconds=30) == 0.0
    # Segments stop at timeline boundaries: AAA | AAA are two 3-bucket blocks,
    # AA | AA two short ones.
    X2 = frame_of([("u1", 0, 3), ("u2", 0, 3)])
    assert block_share_score(None, list("AAAAAA"), X2) == 1.0
    X3 = frame_of([("u1", 0, 2), ("u1", 30, 2)])
    assert block_share_score(None, list("AAAA"), X3) == 0.0


# --------------------------------------------------------------------------
# Timelines: pieces scored apart and pooled by hand; row order
# --------------------------------------------------------------------------

PIECES = [("u1", 0, 10), ("u1", 20, 6), ("u2", 0, 8)]  # u1 has a 10-minute gap
Y_TRUE = list("AAAAABBBBB" + "CCCAAA" + "BBBBAAAA")
Y_PRED = list("AAAABBBBCB" + "CCAAAA" + "BBBBBAAA")


def test_frame_scores_pool_the_pieces_by_hand():
    X = frame_of(PIECES)
    # u1a: true A5|B5 vs pred A4|B4|C1|B1 -> @50: A 4/5 TP, B[4,8) 4/6 TP,
    #      C FP, B[9,10) 1/6 FP. (2, 2, 0)
    # u1b: true C3|A3 vs pred C2|A4 -> C 2/3 TP, A 3/4 TP. (2, 0, 0)
    # u2:  true B4|A4 vs pred B5|A3 -> B 4/5 TP, A 3/4 TP. (2, 0, 0)
    # Pooled: tp=6 fp=2 fn=0: P=3/4, R=1, F1=6/7.
    assert segmental_f1_score(Y_TRUE, Y_PRED, X) == pytest.approx(6 / 7)
    # Edit: u1a A|B vs A|B|C|B: d=2, max 4; u1b: 0 of 2; u2: 0 of 2 -> 1 - 2/8.
    assert segmental_edit_score(Y_TRUE, Y_PRED, X) == pytest.approx(0.75)
    # Flap: 3 + 1 + 1 changes over 24 buckets; the steps between pieces don't count.
    assert flap_rate_score(None, Y_PRED, X) == pytest.approx(5 / 24)
    # Blocks (3 buckets): A4 B4 C1 B1 | C2 A4 | B5 A3 -> 5 of 8 segments.
    assert block_share_score(None, Y_PRED, X) == pytest.approx(5 / 8)


def test_frame_scores_equal_the_pieces_pooled_by_the_reference():
    X = frame_of(PIECES)
    bounds = np.cumsum([0] + [n for _, _, n in PIECES])
    parts = [(Y_TRUE[a:b], Y_PRED[a:b]) for a, b in itertools.pairwise(bounds)]
    for overlap in (0.1, 0.25, 0.5, 0.75):
        counts = np.sum([ref_segment_counts(t, p, overlap) for t, p in parts], axis=0)
        assert segmental_f1_score(Y_TRUE, Y_PRED, X, overlap=overlap) == pytest.approx(
            ref_f1(*counts)
        )
    d, m = np.sum([ref_edit_counts(t, p) for t, p in parts], axis=0)
    assert segmental_edit_score(Y_TRUE, Y_PRED, X) == pytest.approx(1 - d / m)
    changes = sum(flap_rate(p) * len(p) for _, p in parts)
    assert flap_rate_score(None, Y_PRED, X) == pytest.approx(changes / len(Y_PRED))


def test_without_timelines_the_pieces_would_merge():
    # The same rows as one timeline (no user_id, no gaps) give other scores:
    # the timelines really are read from X.
    X = frame_of(PIECES)
    joined = one_timeline(len(Y_TRUE))
    assert flap_rate_score(None, Y_PRED, joined) != flap_rate_score(None, Y_PRED, X)
    assert segmental_f1_score(Y_TRUE, Y_PRED, joined) == pytest.approx(
        ref_f1(*ref_segment_counts(Y_TRUE, Y_PRED, 0.5))
    )


def test_row_order_does_not_matter():
    X = frame_of(PIECES)
    expected = summarize(X, Y_TRUE, Y_PRED)
    order = np.random.default_rng(0).permutation(len(X))
    shuffled = summarize(
        X.iloc[order].reset_index(drop=True),
        np.asarray(Y_TRUE)[order],
        np.asarray(Y_PRED)[order],
    )
    assert shuffled == pytest.approx(expected)


def test_summarize_equals_the_individual_functions():
    X = frame_of(PIECES).assign(x=1.0)
    scores = summarize(X, Y_TRUE, Y_PRED)
    assert list(scores) == [
        "accuracy",
        "macro_f1",
        "segmental_f1@10",
        "segmental_f1@25",
        "segmental_f1@50",
        "edit_score",
        "flap_rate",
        "reject_rate",
        "block_share",
    ]
    assert scores["accuracy"] == accuracy_score(Y_TRUE, Y_PRED, X)
    assert scores["macro_f1"] == macro_f1_score(Y_TRUE, Y_PRED, X)
    for key, overlap in [("10", 0.1), ("25", 0.25), ("50", 0.5)]:
        assert scores[f"segmental_f1@{key}"] == segmental_f1_score(
            Y_TRUE, Y_PRED, X, overlap=overlap
        )
    assert scores["edit_score"] == segmental_edit_score(Y_TRUE, Y_PRED, X)
    assert scores["flap_rate"] == flap_rate_score(Y_TRUE, Y_PRED, X)
    assert scores["reject_rate"] == reject_rate_score(Y_TRUE, Y_PRED, X)
    assert scores["block_share"] == block_share_score(Y_TRUE, Y_PRED, X)


def test_summarize_other_overlaps_and_empty_frame():
    X = frame_of(PIECES)
    assert list(summarize(X, Y_TRUE, Y_PRED, overlaps=[0.75]))[2] == "segmental_f1@75"
    empty = summarize(one_timeline(0), [], [])
    assert empty == {
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


def test_timeline_report_by_hand():
    X = frame_of(PIECES)
    report = timeline_report(X, Y_TRUE, Y_PRED)
    assert list(report.columns[:4]) == ["user_id", "start_ts", "end_ts", "bucket_count"]
    assert report["user_id"].tolist() == ["u1", "u1", "u2"]
    assert report["bucket_count"].tolist() == [10, 6, 8]
    assert report["start_ts"].iloc[1] == pd.Timestamp("2025-01-06 09:20", tz="UTC")
    assert report["end_ts"].iloc[1] == pd.Timestamp("2025-01-06 09:26", tz="UTC")
    # Same pieces as test_frame_scores_pool_the_pieces_by_hand:
    # @50 counts (2, 2, 0), (2, 0, 0), (2, 0, 0).
    assert report["segmental_f1@50"].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert report["edit_score"].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert report["flap_rate"].tolist() == pytest.approx([3 / 10, 1 / 6, 1 / 8])
    assert report["block_share"].tolist() == pytest.approx([2 / 4, 1 / 2, 2 / 2])
    # Accuracy: u1a 8/10 (rows 4 and 8 wrong), u1b 5/6, u2 7/8.
    assert report["accuracy"].tolist() == pytest.approx([0.8, 5 / 6, 7 / 8])
    # Pooling by bucket count gives back the pooled rates.
    pooled = summarize(X, Y_TRUE, Y_PRED)
    weights = report["bucket_count"] / report["bucket_count"].sum()
    for key in ("accuracy", "flap_rate", "reject_rate"):
        assert (report[key] * weights).sum() == pytest.approx(pooled[key])


def test_timeline_report_without_user_id():
    report = timeline_report(one_timeline(3), list("ABB"), list("ABB"))
    assert list(report.columns[:3]) == ["start_ts", "end_ts", "bucket_count"]
    assert report["macro_f1"].tolist() == [1.0]
    assert len(timeline_report(one_timeline(0), [], [])) == 0


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_length_mismatch_names_both_lengths():
    with pytest.raises(InputError, match="y_true has 3 labels but y_pred has 2"):
        segmental_f1(list("AAB"), list("AA"))
    with pytest.raises(InputError, match="X has 4 rows but y_true and y_pred have 3"):
        segmental_f1_score(list("AAB"), list("AAB"), one_timeline(4))
    with pytest.raises(InputError, match="X has 4 rows"):
        summarize(one_timeline(4), list("AAB"), list("AAB"))
    with pytest.raises(InputError, match="X has 4 rows"):
        accuracy_score(list("AAB"), list("AAB"), one_timeline(4))


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(MissingColumnsError, match="bucket_start_ts"):
        segmental_f1_score(list("AB"), list("AB"), pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(InputError, match="DataFrame"):
        segmental_f1_score(list("AB"), list("AB"), np.zeros((2, 1)))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="DataFrame"):
        summarize(list("AB"), list("AB"), one_timeline(2))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="y_true labels hold a missing value at position 1"):
        segmental_f1(["A", None], ["A", "A"])
    with pytest.raises(InputError, match="one-dimensional"):
        accuracy_score(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(InvalidParameterError, match="max_gap_seconds"):
        flap_rate_score(None, list("AB"), one_timeline(2), max_gap_seconds=0)
    with pytest.raises(InvalidParameterError, match="min_block_seconds"):
        block_share_score(None, list("AB"), one_timeline(2), min_block_seconds=-1)
    with pytest.raises(InvalidParameterError, match="overlap"):
        summarize(one_timeline(2), list("AB"), list("AB"), overlaps=[0.5, 0])


# --------------------------------------------------------------------------
# Properties against the references
# --------------------------------------------------------------------------

labels = st.lists(st.sampled_from("ABC"), max_size=30)
overlaps = st.one_of(
    st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]),
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
)


@st.composite
def label_pairs(draw):
    y_true = draw(labels)
    y_pred = draw(st.lists(st.sampled_from("ABC"), min_size=len(y_true), max_size=len(y_true)))
    return y_true, y_pred


@settings(max_examples=300, deadline=None)
@given(label_pairs(), overlaps)
def test_segmental_f1_agrees_with_the_reference(pair, overlap):
    y_true, y_pred = pair
    expected = ref_f1(*ref_segment_counts(y_true, y_pred, overlap))
    assert segmental_f1(y_true, y_pred, overlap=overlap) == pytest.approx(expected)


@settings(max_examples=300, deadline=None)
@given(label_pairs())
def test_edit_score_agrees_with_the_reference(pair):
    y_true, y_pred = pair
    d, m = ref_edit_counts(y_true, y_pred)
    assert edit_score(y_true, y_pred) == pytest.approx(1.0 if m == 0 else 1 - d / m)


@st.composite
def frames(draw):
    """Pieces of a frame (users, gaps) with true and predicted labels."""
    n_pieces = draw(st.integers(1, 4))
    pieces, clock = [], {}
    for _ in range(n_pieces):
        user = draw(st.sampled_from(["u1", "u2", "u3"]))
        n = draw(st.integers(1, 12))
        start = clock.get(user, 0) + (draw(st.integers(6, 30)) if user in clock else 0)
        clock[user] = start + n
        pieces.append((user, start, n))
    n = sum(p[2] for p in pieces)
    y_true = draw(st.lists(st.sampled_from("ABC"), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from("ABC"), min_size=n, max_size=n))
    return pieces, y_true, y_pred


def pieces_of(pieces, values):
    """Split values (in frame order) per timeline, timelines in any order."""
    out, at = {}, 0
    for user, start, n in pieces:
        out.setdefault(user, []).append((start, values[at : at + n]))
        at += n
    return [v for user in out for _, v in sorted(out[user])]


@settings(max_examples=200, deadline=None)
@given(frames(), st.sampled_from([0.1, 0.25, 0.5]), st.randoms(use_true_random=False))
def test_frame_scores_pool_the_references_over_timelines(drawn, overlap, random):
    pieces, y_true, y_pred = drawn
    X = frame_of(pieces)
    parts = list(zip(pieces_of(pieces, y_true), pieces_of(pieces, y_pred), strict=True))
    n = len(y_true)

    counts = np.sum([ref_segment_counts(t, p, overlap) for t, p in parts], axis=0)
    d, m = np.sum([ref_edit_counts(t, p) for t, p in parts], axis=0)
    changes = sum(flap_rate(p) * len(p) for _, p in parts)
    runs = [r for _, p in parts for r in ref_runs(p)]
    expected = {
        "segmental": ref_f1(*counts),
        "edit": 1 - d / m,
        "flap": changes / n,
        "blocks": np.mean([end - start >= 3 for _, start, end in runs]),
    }

    order = list(range(n))
    random.shuffle(order)
    Xs, ts, ps = X.iloc[order], np.asarray(y_true)[order], np.asarray(y_pred)[order]
    for frame, t, p in [(X, y_true, y_pred), (Xs, ts, ps)]:
        assert segmental_f1_score(t, p, frame, overlap=overlap) == pytest.approx(
            expected["segmental"]
        )
        assert segmental_edit_score(t, p, frame) == pytest.approx(expected["edit"])
        assert flap_rate_score(t, p, frame) == pytest.approx(expected["flap"])
        assert block_share_score(t, p, frame) == pytest.approx(expected["blocks"])


@settings(max_examples=100, deadline=None)
@given(frames())
def test_timeline_report_rows_are_the_pieces_summarized(drawn):
    pieces, y_true, y_pred = drawn
    X = frame_of(pieces)
    # One user's pieces may sit apart in X; the report lists them in time order.
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    report = timeline_report(X, y_true, y_pred).sort_values(["user_id", "start_ts"])
    at = np.cumsum([0] + [n for _, _, n in pieces])
    expected = []
    for (user, _start, n), a in sorted(zip(pieces, at[:-1], strict=True)):
        one = summarize(X.iloc[a : a + n], y_true[a : a + n], y_pred[a : a + n])
        expected.append({"user_id": user, "bucket_count": n, **one})
    expected_frame = pd.DataFrame(expected)
    assert report["user_id"].tolist() == expected_frame["user_id"].tolist()
    for column in expected_frame.columns[1:]:
        assert report[column].tolist() == pytest.approx(expected_frame[column].tolist())


@settings(max_examples=100, deadline=None)
@given(frames())
def test_perfect_prediction_scores_one(drawn):
    pieces, y_true, _ = drawn
    scores = summarize(frame_of(pieces), y_true, y_true)
    for key in ("accuracy", "macro_f1", "segmental_f1@10", "segmental_f1@25"):
        assert scores[key] == 1.0
    assert scores["segmental_f1@50"] == 1.0
    assert scores["edit_score"] == 1.0
    assert scores["reject_rate"] == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("ABC"), max_size=30))
def test_flap_rate_on_one_timeline_is_smooths_rule(y_pred):
    X = one_timeline(len(y_pred))
    assert flap_rate_score(None, y_pred, X) == pytest.approx(flap_rate(y_pred))


# --------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------


class ThresholdLabeler(ClassifierMixin, BaseEstimator):
    """Predicts "Build" where column ``column`` exceeds ``threshold``, else "Debug"."""

    def __init__(self, threshold=0.5, column="x"):
        self.threshold = threshold
        self.column = column

    def fit(self, X, y):
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict(self, X):
        check_is_fitted(self)
        return np.where(X[self.column].to_numpy() > self.threshold, "Build", "Debug")


class CountingLabeler(ThresholdLabeler):
    """ThresholdLabeler that counts its predict calls (class-level counter)."""

    calls = 0

    def predict(self, X):
        type(self).calls += 1
        return super().predict(X)


@pytest.fixture
def activity():
    """Three users, 90 minutes each with a gap; x constant over blocks of minutes."""
    rng = np.random.default_rng(7)
    rows = []
    for user in ("u1", "u2", "u3"):
        minute = 0
        while minute < 90:
            length = int(rng.integers(1, 9))
            level = float(rng.uniform(0, 1))
            for _ in range(length):
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
    assert sorted(SCORERS) == sorted(
        [
            "accuracy",
            "macro_f1",
            "segmental_f1@10",
            "segmental_f1@25",
            "segmental_f1@50",
            "edit_score",
            "neg_flap_rate",
            "neg_reject_rate",
            "block_share",
        ]
    )
    with pytest.raises(InvalidParameterError, match="valid names") as info:
        get_scorer("segmental_f1@40")
    assert "segmental_f1@50" in str(info.value)
    with pytest.raises(InvalidParameterError, match="valid names"):
        make_timeline_scorer("flap_rate")
    with pytest.raises(InvalidParameterError, match="valid names"):
        make_timeline_scorer(["accuracy"])  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="valid names") as info:
        make_summary_scorer(["segmental_f1"])
    assert "'segmental_f1'," not in str(info.value).split("valid names")[1]


def test_scorers_need_true_labels(activity):
    X, y = activity
    model = ThresholdLabeler().fit(X, y)
    with pytest.raises(InputError, match="needs the true labels"):
        get_scorer("accuracy")(model, X, None)
    with pytest.raises(InputError, match="needs the true labels"):
        make_summary_scorer()(model, X, None)


def test_scorers_score_the_prediction_with_signs(activity):
    X, y = activity
    model = ThresholdLabeler(0.5).fit(X, y)
    pred = model.predict(X)
    expected = summarize(X, y, pred)
    for name, key in [
        ("accuracy", "accuracy"),
        ("macro_f1", "macro_f1"),
        ("segmental_f1@10", "segmental_f1@10"),
        ("segmental_f1@25", "segmental_f1@25"),
        ("segmental_f1@50", "segmental_f1@50"),
        ("edit_score", "edit_score"),
        ("block_share", "block_share"),
    ]:
        assert get_scorer(name)(model, X, y) == expected[key]
    assert get_scorer("neg_flap_rate")(model, X, y) == -expected["flap_rate"]
    assert expected["flap_rate"] > 0
    assert get_scorer("neg_reject_rate")(model, X, y) == 0.0
    assert make_summary_scorer()(model, X, y) == {
        name: get_scorer(name)(model, X, y) for name in SCORERS
    }


def test_scorers_call_predict_once(activity):
    X, y = activity
    model = CountingLabeler().fit(X, y)
    for name in SCORERS:
        CountingLabeler.calls = 0
        get_scorer(name)(model, X, y)
        assert CountingLabeler.calls == 1, name
    CountingLabeler.calls = 0
    make_summary_scorer()(model, X, y)
    assert CountingLabeler.calls == 1


def test_make_timeline_scorer_parameters(activity):
    X, y = activity
    model = ThresholdLabeler(0.5).fit(X, y)
    pred = model.predict(X)
    scorer = make_timeline_scorer("segmental_f1", overlap=0.75)
    assert scorer(model, X, y) == segmental_f1_score(y, pred, X, overlap=0.75)
    scorer = make_timeline_scorer("neg_flap_rate", max_gap_seconds=3600)
    assert scorer(model, X, y) == -flap_rate_score(y, pred, X, max_gap_seconds=3600)
    scorer = make_timeline_scorer("block_share", min_block_seconds=300)
    assert scorer(model, X, y) == block_share_score(y, pred, X, min_block_seconds=300)
    with pytest.raises(InvalidParameterError, match="overlap"):
        make_timeline_scorer("segmental_f1", overlap=0)
    with pytest.raises(InvalidParameterError, match="takes no parameter"):
        make_timeline_scorer("accuracy", overlap=0.5)
    with pytest.raises(InvalidParameterError, match="max_gap_seconds"):
        make_timeline_scorer("edit_score", max_gap_seconds=-5)
    with pytest.raises(InvalidParameterError, match="valid names"):
        make_summary_scorer(["accuracy", "flap_rate"])


def test_scorers_pickle(activity):
    X, y = activity
    model = ThresholdLabeler(0.5).fit(X, y)
    every = [*SCORERS.values(), make_timeline_scorer("segmental_f1", overlap=0.3)]
    for scorer in every:
        again = pickle.loads(pickle.dumps(scorer))
        assert repr(again) == repr(scorer)
        assert again(model, X, y) == scorer(model, X, y)
    summary = make_summary_scorer(["edit_score", "neg_flap_rate"])
    assert pickle.loads(pickle.dumps(summary))(model, X, y) == summary(model, X, y)


def test_cross_val_score_scores_each_fold_by_its_timelines(activity):
    X, y = activity
    cv = KFold(3, shuffle=True, random_state=0)  # folds in shuffled row order
    model = ThresholdLabeler(0.4).fit(X, y)
    scores = cross_val_score(model, X, y, cv=cv, scoring=get_scorer("segmental_f1@50"))
    expected = [
        segmental_f1_score(y[test], model.predict(X.iloc[test]), X.iloc[test])
        for _, test in cv.split(X)
    ]
    assert scores == pytest.approx(expected)


def test_grid_search_finds_the_threshold(activity):
    X, y = activity
    search = GridSearchCV(
        ThresholdLabeler(),
        {"threshold": [0.1, 0.3, 0.6, 0.9]},
        scoring=get_scorer("segmental_f1@50"),
        cv=KFold(3, shuffle=True, random_state=1),
    ).fit(X, y)
    assert search.best_params_ == {"threshold": 0.3}


def test_grid_search_with_a_dict_of_scorers(activity):
    X, y = activity
    search = GridSearchCV(
        ThresholdLabeler(),
        {"threshold": [0.1, 0.3, 0.6]},
        scoring=dict(SCORERS),
        refit="segmental_f1@50",
        cv=KFold(3),
    ).fit(X, y)
    for name in SCORERS:
        assert f"mean_test_{name}" in search.cv_results_
    assert search.best_params_ == {"threshold": 0.3}
    assert np.all(search.cv_results_["mean_test_neg_flap_rate"] <= 0)


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
