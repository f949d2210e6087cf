"""ViterbiSmoother and its kernel, checked against a plain-Python Viterbi."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from conftest import refused
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf import MIXED_UNKNOWN, ViterbiSmoother
from taskclf._columns import IS_REJECTED, PROBA_COLUMNS, RAW_LABEL, SMOOTHED_LABEL
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InvalidParameterError, MissingColumnsError
from taskclf.stages.viterbi import sticky_log_transitions, viterbi_codes


def reference_viterbi(
    log_emission: list[list[float]], log_transition: list[list[float]]
) -> list[int]:
    """Viterbi on one sequence, one state at a time; ties go to the lowest state."""
    k = len(log_transition)
    score = list(log_emission[0])
    pointers = []
    for row in log_emission[1:]:
        new, back = [], []
        for j in range(k):
            best_i, best = 0, score[0] + log_transition[0][j]
            for i in range(1, k):
                value = score[i] + log_transition[i][j]
                if value > best:
                    best_i, best = i, value
            new.append(best + row[j])
            back.append(best_i)
        score = new
        pointers.append(back)
    state = max(range(k), key=lambda j: (score[j], -j))
    path = [state]
    for back in reversed(pointers):
        state = back[state]
        path.append(state)
    return path[::-1]


def reference_smooth(frame: pd.DataFrame, switch_prob: float) -> list[str]:
    """The stage's rule, timeline by timeline (gaps over 300 s), in plain Python."""
    out = pd.Series("", index=frame.index, dtype=object)
    transition = sticky_log_transitions(switch_prob).tolist()
    for _, rows in frame.sort_values("bucket_start_ts").groupby("user_id"):
        gap = rows["bucket_start_ts"].diff().dt.total_seconds() > 300
        for _, part in rows.groupby(gap.cumsum()):
            rejected = part[IS_REJECTED].tolist()
            log_e = np.log(np.clip(part[list(PROBA_COLUMNS)].to_numpy(), 1e-12, None)).tolist()
            path = reference_viterbi([[0.0] * 8 if r else e for e, r in zip(log_e, rejected)],
                                     transition)  # fmt: skip
            labels = [MIXED_UNKNOWN if r else CLASS_ORDER[k] for k, r in zip(path, rejected)]
            out[part.index] = labels
    return out.tolist()


def random_frame(n: int = 200, seed: int = 0, users: int = 2) -> pd.DataFrame:
    """``n`` rows per user: random probabilities, steps of 1-9 minutes, a tenth rejected."""
    rng = np.random.default_rng(seed)
    parts = []
    for u in range(users):
        minutes = np.cumsum(rng.choice([1, 1, 1, 2, 9], n))
        part = pd.DataFrame(rng.dirichlet(np.full(8, 0.7), n), columns=list(PROBA_COLUMNS))
        ts = pd.Timestamp("2025-01-06 09:00", tz="UTC") + pd.to_timedelta(minutes, unit="min")
        parts.append(
            part.assign(user_id=f"user{u}", bucket_start_ts=ts, is_rejected=rng.random(n) < 0.1)
        )
    return pd.concat(parts, ignore_index=True)


@settings(max_examples=20)
@given(n=st.integers(1, 30), users=st.integers(1, 3), switch_prob=st.floats(0.001, 0.95),
       seed=st.integers(0, 1000))  # fmt: skip
def test_stage_equals_plain_python_viterbi_per_timeline(n, users, switch_prob, seed):
    # rows in any order: results come back in input order
    frame = random_frame(n, seed, users).sample(frac=1.0, random_state=seed)
    out = ViterbiSmoother(switch_prob=switch_prob).transform(frame)
    assert out[SMOOTHED_LABEL].astype(object).tolist() == reference_smooth(frame, switch_prob)


@settings(max_examples=40)
@given(
    lengths=st.lists(st.integers(0, 15), min_size=1, max_size=5),
    switch_prob=st.floats(0.001, 0.999),
    k=st.integers(2, 8),
    data=st.data(),
)
def test_kernel_equals_plain_python_viterbi(lengths, switch_prob, k, data):
    n = sum(lengths)
    values = data.draw(
        st.lists(st.sampled_from([-3.0, -1.5, -0.5, -0.25, 0.0]), min_size=n * k, max_size=n * k)
    )
    log_e = np.asarray(values, dtype=np.float64).reshape(n, k)
    bounds = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    transition = sticky_log_transitions(switch_prob, k)
    path = viterbi_codes(log_e, bounds, transition)
    assert path.dtype == np.int8
    for a, b in itertools.pairwise(bounds):
        if b > a:
            assert path[a:b].tolist() == reference_viterbi(log_e[a:b].tolist(), transition.tolist())


def test_a_rejected_row_inside_a_task_does_not_break_it():
    proba = np.full((7, 8), 0.02)
    proba[:, 1] = 0.86  # Build throughout ...
    proba[3] = 0.02
    proba[3, 4] = 0.86  # ... except one confident Meet, which is rejected
    frame = pd.DataFrame(proba, columns=list(PROBA_COLUMNS)).assign(
        bucket_start_ts=pd.date_range("2025-01-06 09:00", periods=7, freq="min"),
        raw_label=["Build"] * 3 + [MIXED_UNKNOWN] + ["Build"] * 3,
    )
    out = ViterbiSmoother(switch_prob=0.6).transform(frame)[SMOOTHED_LABEL].tolist()
    assert out == ["Build"] * 3 + [MIXED_UNKNOWN] + ["Build"] * 3
    flagged = frame.drop(columns=RAW_LABEL).assign(is_rejected=False)
    out = ViterbiSmoother(switch_prob=0.6).transform(flagged)[SMOOTHED_LABEL].tolist()
    assert out == ["Build"] * 3 + ["Meet"] + ["Build"] * 3


def test_tiny_and_uniform_switch_probabilities():
    frame = random_frame(seed=2).assign(is_rejected=False)
    proba = frame[list(PROBA_COLUMNS)]
    # 1e-12: one label per timeline, the one of highest summed log probability ...
    out = ViterbiSmoother(switch_prob=1e-12).transform(frame)[SMOOTHED_LABEL].astype(object)
    gap = frame.groupby("user_id")["bucket_start_ts"].diff().dt.total_seconds() > 300
    timeline = frame["user_id"] + gap.groupby(frame["user_id"]).cumsum().astype(str)
    best = np.log(proba).groupby(timeline).sum().idxmax(axis=1).str.removeprefix("proba_")
    assert out.tolist() == best[timeline].tolist()
    # ... 7/8: each row's most probable label
    out = ViterbiSmoother(switch_prob=7 / 8).transform(frame)[SMOOTHED_LABEL].astype(object)
    assert out.tolist() == proba.idxmax(axis=1).str.removeprefix("proba_").tolist()


def test_stage_keeps_input_and_order_and_handles_empty_frames():
    frame = random_frame(n=40, seed=4).sample(frac=1.0, random_state=0)
    before = frame.copy()
    out = ViterbiSmoother().transform(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert out.index.equals(frame.index)
    pd.testing.assert_frame_equal(out.drop(columns=SMOOTHED_LABEL), frame)
    empty = ViterbiSmoother().transform(frame.iloc[:0])
    assert len(empty) == 0 and SMOOTHED_LABEL in empty


BAD = {"switch_prob": (0, 1, 1.5, -0.1, "0.1", True, None), "max_gap_seconds": (0, 10**10)}
RANGES = {"switch_prob": "(0.0, 1.0)", "max_gap_seconds": "(0, 31622400]"}


@pytest.mark.parametrize(
    ("params", "words"),
    [({k: v}, f"{k} must be a number in {RANGES[k]}") for k, values in BAD.items() for v in values],
)
def test_bad_parameters_are_refused_at_fit_and_transform(params, words):
    stage = ViterbiSmoother(switch_prob=0.1).set_params(**params)  # set_params only stores
    frame = random_frame(n=4)
    refused(lambda: stage.fit(frame), InvalidParameterError, f"ViterbiSmoother: {words}")
    refused(lambda: stage.transform(frame), InvalidParameterError, f"ViterbiSmoother: {words}")
    lacking = random_frame(n=4).drop(columns="proba_Write")
    refused(lambda: ViterbiSmoother().transform(lacking), MissingColumnsError, "proba_Write")
