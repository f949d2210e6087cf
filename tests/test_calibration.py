"""Calibration maps: identity; temperature softmax(log(clip(p, 1e-12)) / T); isotonic per
class, clipped below at 1e-12, rows renormalized; a per-user store with a global fallback,
used by the stage when the frame has user_id."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
from conftest import proba_frame, refused
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
from taskclf.exceptions import InvalidParameterError, MissingColumnsError, ProbabilityShapeError
from taskclf.stages.calibrate import Calibrator

FLOOR = 1e-12


def reference_temperature(proba, temperature):
    """softmax(log(clip(p, 1e-12)) / T), row by row with math."""
    out = []
    for row in proba:
        logits = [math.log(max(p, FLOOR)) / temperature for p in row]
        weights = [math.exp(v - max(logits)) for v in logits]
        out.append([w / sum(weights) for w in weights])
    return np.array(out)


def reference_isotonic(proba, regressors):
    """Each class by linear interpolation of its regressor's thresholds, floored, renormalized."""
    out = []
    for row in proba:
        values = [
            max(float(np.interp(p, r.X_thresholds_, r.y_thresholds_)), FLOOR)
            for r, p in zip(regressors, row)
        ]
        out.append([v / sum(values) for v in values])
    return np.array(out)


def reference_store(store, proba, users):
    """Each row through its user's map, or the global one."""
    rows = [store.get_calibrator(u).calibrate(row[None, :])[0] for row, u in zip(proba, users)]
    return np.array(rows).reshape(len(proba), 8)


def random_proba(seed, n):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(8, 0.5), size=n)
    p[rng.random(p.shape) < 0.2] = 0.0
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def regressors():
    """Real isotonic regressions fitted on over-confident probabilities (fitted on [0.05, 0.95])."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.05, 0.95, (8, 300))
    hits = rng.random((8, 300)) < scores**2
    return [IsotonicRegression().fit(s, h) for s, h in zip(scores, hits)]


probas = st.integers(1, 12).flatmap(
    lambda n: arrays(np.float64, (n, 8), elements=st.floats(0.0, 1.0, width=32))
)


@settings(max_examples=30)
@given(proba=probas, temperature=st.floats(0.1, 10.0))
def test_temperature_matches_the_rule(proba, temperature):
    before = proba.copy()
    out = TemperatureCalibrator(temperature).calibrate(proba)
    expected = proba if temperature == 1.0 else reference_temperature(proba, temperature)
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-300)
    np.testing.assert_array_equal(proba, before)


def test_temperature_worked_example_and_identities():
    # [0.7, 0.3, 0...] at T=2: weights sqrt(0.7), sqrt(0.3), sqrt(1e-12) x 6
    weights = np.array([0.7**0.5, 0.3**0.5] + [1e-6] * 6)
    worked = TemperatureCalibrator(2.0).calibrate(np.array([[0.7, 0.3] + [0.0] * 6]))
    np.testing.assert_allclose(worked, [weights / weights.sum()], rtol=1e-12)
    p = random_proba(1, 4)
    assert IdentityCalibrator().calibrate(p) is p
    assert TemperatureCalibrator().calibrate(p) is p
    soft, sharp = TemperatureCalibrator(3.0).calibrate(p), TemperatureCalibrator(0.5).calibrate(p)
    assert np.all(soft.max(axis=1) <= p.max(axis=1)) and np.all(sharp.max(axis=1) >= p.max(axis=1))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_temperature_is_refused(bad):
    refused(lambda: TemperatureCalibrator(bad), InvalidParameterError, "positive and finite")


@settings(max_examples=30)
@given(proba=probas)
def test_isotonic_matches_the_rule(proba, regressors):
    out = IsotonicCalibrator(regressors).calibrate(proba)
    np.testing.assert_allclose(out, reference_isotonic(proba, regressors), rtol=1e-9)
    assert np.isfinite(out).all()  # outside the fitted range too


def test_isotonic_edge_cases(regressors):
    p = random_proba(5, 3)
    iso = IsotonicCalibrator(regressors)
    np.testing.assert_array_equal(iso.calibrate(p[0]), iso.calibrate(p)[0])  # one 1-D row
    assert iso.calibrate(np.empty((0, 8))).shape == (0, 8)
    flat = [IsotonicRegression().fit([0.0, 1.0], [0.0, 0.0]) for _ in range(8)]
    np.testing.assert_allclose(IsotonicCalibrator(flat).calibrate(p), np.full((3, 8), 1 / 8))
    three = IsotonicCalibrator(regressors[:3])
    assert three.n_classes == 3
    np.testing.assert_allclose(three.calibrate(np.full((2, 3), 1 / 3)).sum(axis=1), 1.0)
    refused(lambda: three.calibrate(p), ProbabilityShapeError, "3 regressors", "8 columns")
    refused(lambda: IsotonicCalibrator([]), InvalidParameterError, "must not be empty")


def test_calibration_maps_are_frozen_values():
    t = TemperatureCalibrator(2.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.temperature = 3.0  # type: ignore[misc]
    assert attrs.evolve(t, temperature=3.0) == TemperatureCalibrator(3)


@settings(max_examples=30)
@given(proba=probas, users=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=12))
def test_store_matches_the_rule(proba, users):
    users = users[: len(proba)]
    maps = {"a": TemperatureCalibrator(0.7), "b": IdentityCalibrator()}
    store = CalibratorStore(TemperatureCalibrator(2.0), maps)
    out = store.calibrate_batch(proba, users)
    np.testing.assert_allclose(out, reference_store(store, proba, users), rtol=1e-9)
    assert store.get_calibrator("c") == TemperatureCalibrator(2.0) and store.user_ids == ["a", "b"]


def test_store_refuses_mismatched_lengths_and_widths():
    store = CalibratorStore(IdentityCalibrator(), {"a": TemperatureCalibrator(2.0)})
    p = np.full((3, 8), 0.125)
    refused(lambda: store.calibrate_batch(p, ["a"]), ProbabilityShapeError, "3 probability rows")
    width = r"shape (n, 8), got shape (2, 3)"
    refused(lambda: store.calibrate_batch(p[:2, :3], "ab"), ProbabilityShapeError, width)
    refused(lambda: check_proba(np.full(8, 0.125)), ProbabilityShapeError, "got shape (8,)")


def test_stage_applies_the_store_with_user_id_else_its_map():
    p = random_proba(9, 6)
    users = ["a", "b", "a", "c", "b", "a"]
    store = CalibratorStore(TemperatureCalibrator(3.0), {"a": TemperatureCalibrator(0.5)})
    stage = Calibrator.from_maps(TemperatureCalibrator(2.0), store)
    out = stage.transform(proba_frame(p, index=list("uvwxyz"), user_id=users, keys=1.0))
    assert out.columns.tolist() == [*PROBA_COLUMNS, "user_id", "keys"]
    assert out.index.tolist() == list("uvwxyz")
    np.testing.assert_allclose(out[list(PROBA_COLUMNS)], reference_store(store, p, users))
    without = stage.transform(proba_frame(p))[list(PROBA_COLUMNS)].to_numpy()
    np.testing.assert_allclose(without, reference_temperature(p, 2.0))
    for identity in (Calibrator(), Calibrator.from_maps(store=store)):
        np.testing.assert_array_equal(identity.transform(proba_frame(p))[list(PROBA_COLUMNS)], p)


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
    frame = proba_frame(np.full((2, 8), 0.125)).drop(columns=["proba_Meet", "proba_Write"])
    stage = Calibrator.from_maps(TemperatureCalibrator(2.0))
    refused(lambda: stage.transform(frame), MissingColumnsError, "'proba_Meet', 'proba_Write'")
