"""Calibration: identity; temperature softmax(log(clip(p, 1e-12)) / T); isotonic per
class, clipped below at 1e-12, rows renormalized; a per-user store with a global
fallback, used when the frame has user_id."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pandas as pd
import pytest
from conftest import refused
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression

from taskclf._columns import PROBA_COLUMNS
from taskclf.calibration import (
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
    check_proba,
)
from taskclf.exceptions import (
    InvalidParameterError,
    MissingColumnsError,
    ProbabilityShapeError,
)
from taskclf.stages.calibrate import Calibrator

FLOOR = 1e-12


def reference_temperature(proba, temperature):
    """softmax(log(clip(p, 1e-12)) / T), row by row with math."""
    out = []
    for row in proba:
        logits = [math.log(max(p, FLOOR)) / temperature for p in row]
        top = max(logits)
        weights = [math.exp(v - top) for v in logits]
        total = sum(weights)
        out.append([w / total for w in weights])
    return np.array(out)


def reference_isotonic(proba, regressors):
    """Each class through its regressor, clipped below at 1e-12, row renormalized."""
    out = []
    for row in proba:
        values = [max(float(r.predict([p])[0]), FLOOR) for r, p in zip(regressors, row)]
        total = sum(values)
        out.append([v / total for v in values])
    return np.array(out)


def random_proba(rng, n, zeros=True):
    p = rng.dirichlet(np.full(8, 0.5), size=n)
    if zeros:
        p[rng.random(p.shape) < 0.2] = 0.0
        p /= p.sum(axis=1, keepdims=True)
    return p


@pytest.fixture(scope="module")
def regressors():
    """Real isotonic regressions fitted on over-confident synthetic probabilities."""
    rng = np.random.default_rng(0)
    fitted = []
    for k in range(8):
        scores = rng.random(300)
        hits = rng.random(300) < scores**2 * (0.5 + k / 16)
        fitted.append(IsotonicRegression(out_of_bounds="clip").fit(scores, hits))
    return fitted


probas = st.integers(1, 12).flatmap(
    lambda n: arrays(np.float64, (n, 8), elements=st.floats(0.0, 1.0, width=32))
)


def test_identity_and_temperature_one_return_the_input():
    p = random_proba(np.random.default_rng(1), 4)
    assert IdentityCalibrator().calibrate(p) is p
    np.testing.assert_array_equal(TemperatureCalibrator(1.0).calibrate(p), p)
    assert TemperatureCalibrator().temperature == 1.0


@pytest.mark.parametrize("temperature", [0.5, 2.0, 3.7])
def test_temperature_scaling_by_hand(temperature):
    p = random_proba(np.random.default_rng(3), 6)
    before = p.copy()
    out = TemperatureCalibrator(temperature).calibrate(p)
    np.testing.assert_array_equal(p, before)
    np.testing.assert_allclose(out, reference_temperature(p, temperature), rtol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    # T > 1 softens, T < 1 sharpens: the top probability moves accordingly
    if temperature > 1:
        assert np.all(out.max(axis=1) <= p.max(axis=1) + 1e-12)
    else:
        assert np.all(out.max(axis=1) >= p.max(axis=1) - 1e-12)
    # [0.7, 0.3, 0...] at T=2: weights sqrt(0.7), sqrt(0.3), sqrt(1e-12) x 6
    weights = np.array([0.7**0.5, 0.3**0.5] + [1e-6] * 6)
    worked = TemperatureCalibrator(2.0).calibrate(np.array([[0.7, 0.3] + [0.0] * 6]))
    np.testing.assert_allclose(worked, [weights / weights.sum()], rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(proba=probas, temperature=st.floats(0.1, 10.0))
def test_temperature_matches_the_rule(proba, temperature):
    out = TemperatureCalibrator(temperature).calibrate(proba)
    expected = proba if temperature == 1.0 else reference_temperature(proba, temperature)
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_temperature_is_refused(bad):
    with pytest.raises(InvalidParameterError, match="temperature must be positive and finite"):
        TemperatureCalibrator(bad)


def test_isotonic_with_fitted_regressors(regressors):
    p = random_proba(np.random.default_rng(5), 20)
    out = IsotonicCalibrator(regressors).calibrate(p)
    np.testing.assert_allclose(out, reference_isotonic(p, regressors), rtol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert np.all(out >= FLOOR / 8 - 1e-30)
    # a single row (1-D) gives a single row
    np.testing.assert_allclose(IsotonicCalibrator(regressors).calibrate(p[0]), out[0], rtol=1e-12)


def test_isotonic_renormalizes_rows_the_regressors_send_to_zero():
    # every regressor maps everything to 0: the clip at 1e-12 makes rows uniform
    flat = [IsotonicRegression().fit([0.0, 1.0], [0.0, 0.0]) for _ in range(8)]
    out = IsotonicCalibrator(flat).calibrate(np.eye(8)[:3])
    np.testing.assert_allclose(out, np.full((3, 8), 1 / 8))


@settings(max_examples=40, deadline=None)
@given(proba=probas)
def test_isotonic_matches_the_rule(proba, regressors):
    out = IsotonicCalibrator(regressors).calibrate(proba)
    np.testing.assert_allclose(out, reference_isotonic(proba, regressors), rtol=1e-12)


def test_isotonic_needs_a_regressor_per_class(regressors):
    with pytest.raises(InvalidParameterError, match="regressors list must not be empty"):
        IsotonicCalibrator([])
    three = IsotonicCalibrator(regressors[:3]).calibrate(np.full((2, 3), 1 / 3))
    np.testing.assert_allclose(three.sum(axis=1), 1.0)


def test_calibration_maps_are_frozen_values():
    t = TemperatureCalibrator(2.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.temperature = 3.0  # type: ignore[misc]
    assert attrs.evolve(t, temperature=3.0).temperature == 3.0
    assert TemperatureCalibrator(2) == TemperatureCalibrator(2.0)


def reference_store(store, proba, users):
    """Each row through its user's map, or the global one."""
    rows = []
    for row, user in zip(proba, users):
        chosen = store.user_calibrators.get(user, store.global_calibrator)
        rows.append(chosen.calibrate(row[None, :])[0])
    return np.array(rows).reshape(len(proba), 8)


def test_store_uses_each_users_map_and_falls_back_to_global(regressors):
    store = CalibratorStore(
        TemperatureCalibrator(1.5),
        {"u1": TemperatureCalibrator(0.5), "u2": IsotonicCalibrator(regressors)},
    )
    rng = np.random.default_rng(6)
    p = random_proba(rng, 12)
    users = ["u3", "u1", "u2", "u1", "u9", "u2", "u1", "u3", "u2", "u2", "u1", "u3"]
    out = store.calibrate_batch(p, users)
    np.testing.assert_allclose(out, reference_store(store, p, users), rtol=1e-12)
    # rows of users without a map use the global map
    other = [i for i, u in enumerate(users) if u in ("u3", "u9")]
    np.testing.assert_allclose(out[other], TemperatureCalibrator(1.5).calibrate(p[other]))
    assert store.get_calibrator("u1") == TemperatureCalibrator(0.5)
    assert store.get_calibrator("nobody") == TemperatureCalibrator(1.5)
    assert store.user_ids == ["u1", "u2"]


@settings(max_examples=40, deadline=None)
@given(
    proba=probas,
    users=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=12, max_size=12),
)
def test_store_matches_the_rule(proba, users):
    users = users[: len(proba)]
    store = CalibratorStore(
        TemperatureCalibrator(2.0),
        {"a": TemperatureCalibrator(0.7), "b": IdentityCalibrator()},
    )
    out = store.calibrate_batch(proba, users)
    np.testing.assert_allclose(out, reference_store(store, proba, users), rtol=1e-9)


def test_store_refuses_mismatched_lengths_and_widths():
    store = CalibratorStore(IdentityCalibrator(), {"a": TemperatureCalibrator(2.0)})
    with pytest.raises(ProbabilityShapeError, match="3 probability rows but 2 user ids"):
        store.calibrate_batch(np.full((3, 8), 0.125), ["a", "b"])
    with pytest.raises(ProbabilityShapeError, match=r"shape \(n, 8\), got shape \(2, 3\)"):
        store.calibrate_batch(np.full((2, 3), 1 / 3), ["a", "b"])
    with pytest.raises(ProbabilityShapeError, match=r"got shape \(8,\)"):
        check_proba(np.full(8, 0.125))


def proba_frame(p, users=None, index=None):
    df = pd.DataFrame(p, columns=list(PROBA_COLUMNS), index=index)
    df.insert(0, "keys_per_min", np.arange(len(p), dtype=float))
    if users is not None:
        df["user_id"] = users
    return df


def test_stage_applies_one_map_to_every_row():
    p = random_proba(np.random.default_rng(7), 5)
    out = Calibrator.from_maps(TemperatureCalibrator(2.0)).transform(
        proba_frame(p, index=list("abcde"))
    )
    np.testing.assert_allclose(out[list(PROBA_COLUMNS)].to_numpy(), reference_temperature(p, 2.0))
    assert out.index.tolist() == list("abcde")
    assert out["keys_per_min"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_stage_without_maps_is_the_identity():
    p = random_proba(np.random.default_rng(8), 4)
    out = Calibrator().transform(proba_frame(p))
    np.testing.assert_array_equal(out[list(PROBA_COLUMNS)].to_numpy(), p)


def test_store_wins_over_the_single_map_when_the_frame_has_user_id():
    p = random_proba(np.random.default_rng(9), 6)
    users = ["a", "b", "a", "c", "b", "a"]
    store = CalibratorStore(TemperatureCalibrator(3.0), {"a": TemperatureCalibrator(0.5)})
    stage = Calibrator.from_maps(TemperatureCalibrator(2.0), store)
    with_users = stage.transform(proba_frame(p, users))[list(PROBA_COLUMNS)].to_numpy()
    np.testing.assert_allclose(with_users, reference_store(store, p, users))
    # without user_id the store cannot be used: the single map is applied
    without = stage.transform(proba_frame(p))[list(PROBA_COLUMNS)].to_numpy()
    np.testing.assert_allclose(without, reference_temperature(p, 2.0))
    # a store alone and no user_id: the identity
    alone = Calibrator.from_maps(store=store).transform(proba_frame(p))
    np.testing.assert_array_equal(alone[list(PROBA_COLUMNS)].to_numpy(), p)


def test_given_maps_are_fitted_stages_kept_by_freezing():
    stage = Calibrator.from_maps(TemperatureCalibrator(2.0))
    assert stage.calibrator_ == TemperatureCalibrator(2.0) and stage.store_ is None
    assert not hasattr(clone(stage), "calibrator_")  # a clone is a fresh identity stage
    frozen = FrozenEstimator(stage)
    assert clone(frozen) is frozen
    assert Calibrator.from_maps().calibrator_ == IdentityCalibrator()


@pytest.mark.parametrize(
    ("maps", "words"),
    [
        ({"calibrator": 2.0}, "calibrator must have a calibrate(proba) method, got float"),
        ({"store": {"a": 1}}, "store must be a CalibratorStore, got dict"),
    ],
)
def test_stage_refuses_things_that_are_not_maps(maps, words):
    refused(lambda: Calibrator.from_maps(**maps), InvalidParameterError, words)


def test_stage_lists_missing_probability_columns():
    df = proba_frame(np.full((2, 8), 0.125)).drop(columns=["proba_Meet", "proba_Write"])
    with pytest.raises(MissingColumnsError, match="'proba_Meet', 'proba_Write'"):
        Calibrator.from_maps(TemperatureCalibrator(2.0)).transform(df)


def test_isotonic_map_never_returns_nan_outside_the_fitted_range():
    rng = np.random.default_rng(0)
    regs = [IsotonicRegression().fit(rng.uniform(0.2, 0.8, 50), rng.random(50)) for _ in range(8)]
    proba = np.full((2, 8), 0.125)
    proba[0, 0], proba[1, 0] = 0.01, 0.99
    out = IsotonicCalibrator(regs).calibrate(proba)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
