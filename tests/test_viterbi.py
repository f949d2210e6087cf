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


def reference_smooth(frame: pd.DataFrame, switch_prob: float, max_gap_seconds: int) -> list[str]:
    """The stage's rule, timeline by timeline, in plain Python."""
    out = [""] * len(frame)
    transition = sticky_log_transitions(switch_prob).tolist()
    users = frame["user_id"] if "user_id" in frame else pd.Series("", index=frame.index)
    for _, rows in frame.groupby(users.to_numpy(), sort=False):
        rows = rows.sort_values("bucket_start_ts")
        times = rows["bucket_start_ts"].tolist()
        starts = [0] + [
            i
            for i in range(1, len(times))
            if (times[i] - times[i - 1]).total_seconds() > max_gap_seconds
        ]
        for a, b in zip(starts, [*starts[1:], len(times)]):
            part = rows.iloc[a:b]
            rejected = part[IS_REJECTED].tolist()
            log_e = np.log(np.clip(part[list(PROBA_COLUMNS)].to_numpy(), 1e-12, None)).tolist()
            log_e = [[0.0] * 8 if r else e for e, r in zip(log_e, rejected)]
            path = reference_viterbi(log_e, transition)
            for position, state, r in zip(part.index, path, rejected):
                out[frame.index.get_loc(position)] = MIXED_UNKNOWN if r else CLASS_ORDER[state]
    return out


def frame_from(
    weights: list[list[int]], users: list[int], steps: list[int], rejected: list[bool]
) -> pd.DataFrame:
    proba = np.asarray(weights, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)
    users_arr = np.asarray(users)
    ts = np.zeros(len(users), dtype=np.int64)
    for u in np.unique(users_arr):
        rows = np.flatnonzero(users_arr == u)
        ts[rows] = np.cumsum(np.asarray(steps)[rows])
    frame = pd.DataFrame(proba, columns=list(PROBA_COLUMNS))
    frame["user_id"] = [f"u{u}" for u in users]
    frame["bucket_start_ts"] = pd.Timestamp("2025-01-06 09:00", tz="UTC") + pd.to_timedelta(
        ts, unit="min"
    )
    frame[IS_REJECTED] = rejected
    return frame


rows_strategy = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        st.lists(st.lists(st.integers(1, 6), min_size=8, max_size=8), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.sampled_from([1, 1, 1, 2, 9]), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, switch_prob=st.floats(0.001, 0.95), seed=st.integers(0, 10))
def test_stage_equals_plain_python_viterbi_per_timeline(rows, switch_prob, seed):
    frame = frame_from(*rows)
    # rows in any order: results come back in input order
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    stage = ViterbiSmoother(switch_prob=switch_prob, max_gap_seconds=300)
    out = stage.transform(frame)
    assert out[SMOOTHED_LABEL].astype(object).tolist() == reference_smooth(frame, switch_prob, 300)


@settings(max_examples=60, deadline=None)
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


def timeline_frame(n: int = 200, seed: int = 0, users: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for u in range(users):
        proba = rng.dirichlet(np.full(8, 0.7), size=n)
        minutes = np.arange(n) + 30 * (np.arange(n) >= n // 2)  # a gap mid-way
        parts.append(
            pd.DataFrame(proba, columns=list(PROBA_COLUMNS)).assign(
                user_id=f"user{u}",
                bucket_start_ts=pd.Timestamp("2025-01-06 09:00", tz="UTC")
                + pd.to_timedelta(minutes, unit="min"),
                is_rejected=rng.random(n) < 0.1,
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_rejected_rows_keep_mixed_unknown_and_their_probabilities_do_not_matter():
    frame = timeline_frame()
    out = ViterbiSmoother(switch_prob=0.05).transform(frame)
    rejected = frame[IS_REJECTED].to_numpy()
    assert (out[SMOOTHED_LABEL][rejected] == MIXED_UNKNOWN).all()
    assert (out[SMOOTHED_LABEL][~rejected] != MIXED_UNKNOWN).all()
    changed = frame.copy()
    noise = np.random.default_rng(1).dirichlet(np.ones(8), size=int(rejected.sum()))
    changed.loc[rejected, list(PROBA_COLUMNS)] = noise
    again = ViterbiSmoother(switch_prob=0.05).transform(changed)
    pd.testing.assert_series_equal(again[SMOOTHED_LABEL], out[SMOOTHED_LABEL])


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


def test_tiny_switch_probability_keeps_one_label_per_timeline():
    frame = timeline_frame(seed=2).assign(is_rejected=False)
    out = ViterbiSmoother(switch_prob=1e-12).transform(frame)
    half = (
        frame["bucket_start_ts"] - frame["bucket_start_ts"].min()
    ).dt.total_seconds() >= 100 * 60
    timeline = frame["user_id"] + half.astype(str)
    assert (out.groupby(timeline)[SMOOTHED_LABEL].nunique() == 1).all()
    # ... the label with the highest summed log probability
    logp = np.log(frame[list(PROBA_COLUMNS)]).groupby(timeline).sum()
    expected = np.asarray(CLASS_ORDER)[logp.to_numpy().argmax(axis=1)]
    assert (
        out.groupby(timeline)[SMOOTHED_LABEL].first().astype(object).tolist() == expected.tolist()
    )


def test_uniform_transitions_give_each_rows_most_probable_label():
    frame = timeline_frame(seed=3).assign(is_rejected=False)
    out = ViterbiSmoother(switch_prob=7 / 8).transform(frame)
    expected = np.asarray(CLASS_ORDER)[frame[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1)]
    assert out[SMOOTHED_LABEL].astype(object).tolist() == expected.tolist()


def test_smoothing_removes_short_flips_that_argmax_keeps():
    proba = np.full((12, 8), 0.05)
    proba[:, 7] = 0.65  # Write
    proba[5] = 0.05
    proba[5, 3] = 0.65  # one Debug minute
    frame = pd.DataFrame(proba, columns=list(PROBA_COLUMNS)).assign(
        bucket_start_ts=pd.date_range("2025-01-06 09:00", periods=12, freq="min")
    )
    assert ViterbiSmoother(0.01).transform(frame)[SMOOTHED_LABEL].eq("Write").all()
    assert ViterbiSmoother(0.875).transform(frame)[SMOOTHED_LABEL].tolist()[5] == "Debug"


def test_stage_keeps_input_and_order_and_handles_empty_frames():
    frame = timeline_frame(n=40, seed=4).sample(frac=1.0, random_state=0)
    before = frame.copy()
    out = ViterbiSmoother().transform(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert out.index.equals(frame.index)
    pd.testing.assert_frame_equal(out.drop(columns=SMOOTHED_LABEL), frame)
    empty = ViterbiSmoother().transform(frame.iloc[:0])
    assert len(empty) == 0 and SMOOTHED_LABEL in empty


@pytest.mark.parametrize(
    ("params", "words"),
    [
        *[
            ({"switch_prob": bad}, "switch_prob must be a number in (0.0, 1.0)")
            for bad in (0, 1, 1.5, -0.1, "0.1", True, None)
        ],
        ({"max_gap_seconds": 0}, "max_gap_seconds must be a number in (0, 31622400]"),
        ({"max_gap_seconds": 10**10}, "max_gap_seconds must be a number in (0, 31622400]"),
    ],
)
def test_bad_parameters_are_refused_at_fit_and_transform(params, words):
    stage = ViterbiSmoother(switch_prob=0.1).set_params(**params)  # set_params only stores
    frame = timeline_frame(n=4)
    refused(lambda: stage.fit(frame), InvalidParameterError, f"ViterbiSmoother: {words}")
    refused(lambda: stage.transform(frame), InvalidParameterError, f"ViterbiSmoother: {words}")
    lacking = timeline_frame(n=4).drop(columns="proba_Write")
    refused(lambda: ViterbiSmoother().transform(lacking), MissingColumnsError, "proba_Write")
