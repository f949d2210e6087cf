"""Fitting the calibrate stage: temperature, isotonic, per user, honest folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import refused
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator

from taskclf import (
    Calibrator,
    CalibratorStore,
    IsotonicCalibrator,
    TemperatureCalibrator,
)
from taskclf._columns import PROBA_COLUMNS
from taskclf.stages.calibrate import (
    brier_score,
    eligible_users,
    fit_temperature,
    log_loss,
)
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InputError, InvalidParameterError, NotFittedError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def calibrated_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    proba = softmax(rng.normal(scale=2.0, size=(n, 8)))
    labels = (rng.random(n)[:, None] > proba.cumsum(axis=1)).sum(axis=1)
    return proba, np.minimum(labels, 7)


def frame_of(proba: np.ndarray, **columns: object) -> pd.DataFrame:
    frame = pd.DataFrame(proba, columns=list(PROBA_COLUMNS))
    return frame.assign(**columns)


def names(codes: np.ndarray) -> np.ndarray:
    return np.asarray(CLASS_ORDER)[codes]


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_temperature_recovers_the_temperature_that_distorted_calibrated_probabilities(true_t):
    proba, labels = calibrated_sample(20_000, seed=1)
    # Distort: q = softmax(log p / true_t); undoing it takes T = 1 / true_t.
    distorted = softmax(np.log(proba) / true_t)
    stage = Calibrator(method="temperature").fit(frame_of(distorted), names(labels))
    assert stage.calibrator_.temperature == pytest.approx(1 / true_t, rel=0.05)
    assert stage.log_loss_after_ < stage.log_loss_before_
    assert stage.brier_after_ < stage.brier_before_
    # On calibrated probabilities the fitted temperature is about 1.
    assert fit_temperature(proba, labels).temperature == pytest.approx(1.0, rel=0.05)


def test_isotonic_fit_renormalises_and_improves_the_fit():
    proba, labels = calibrated_sample(5_000, seed=2)
    distorted = softmax(np.log(proba) / 0.4)
    stage = Calibrator(method="isotonic").fit(frame_of(distorted), names(labels))
    assert isinstance(stage.calibrator_, IsotonicCalibrator)
    out = stage.transform(frame_of(distorted))[list(PROBA_COLUMNS)].to_numpy()
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert out.min() >= 1e-13
    assert stage.brier_after_ < stage.brier_before_
    assert stage.log_loss_after_ < stage.log_loss_before_
    for regressor in stage.calibrator_.regressors:
        assert regressor.out_of_bounds == "clip"
        assert (regressor.y_min, regressor.y_max) == (0, 1)


def test_scores_of_the_fit_match_their_definitions():
    proba, labels = calibrated_sample(300, seed=3)
    stage = Calibrator().fit(frame_of(proba), names(labels))
    onehot = np.eye(8)[labels]
    assert stage.brier_before_ == pytest.approx(((proba - onehot) ** 2).sum(axis=1).mean())
    assert stage.log_loss_before_ == pytest.approx(-np.log(proba[np.arange(300), labels]).mean())
    assert stage.brier_after_ == stage.brier_before_  # identity
    assert brier_score(proba, labels) == stage.brier_before_
    assert log_loss(proba, labels) == stage.log_loss_before_


def test_identity_needs_no_fit_and_fitted_methods_do():
    proba, _ = calibrated_sample(10, seed=4)
    frame = frame_of(proba)
    pd.testing.assert_frame_equal(Calibrator().transform(frame), frame)
    with pytest.raises(NotFittedError, match="temperature"):
        Calibrator(method="temperature").transform(frame)
    with pytest.raises(InputError, match="pass y"):
        Calibrator(method="temperature").fit(frame)
    with pytest.raises(InputError, match="'Nap'"):
        Calibrator(method="temperature").fit(frame, ["Nap"] * 10)
    with pytest.raises(InputError, match="9 labels"):
        Calibrator(method="isotonic").fit(frame, ["Build"] * 9)


def test_given_maps_are_frozen_through_fit():
    proba, labels = calibrated_sample(500, seed=5)
    given = TemperatureCalibrator(2.0)
    stage = FrozenEstimator(Calibrator.from_maps(given))
    assert stage.fit(frame_of(proba), names(labels)) is stage
    assert stage.calibrator_ is given
    assert np.isnan(stage.log_loss_after_)  # nothing was fitted
    out = stage.transform(frame_of(proba))[list(PROBA_COLUMNS)].to_numpy()
    np.testing.assert_allclose(out, given.calibrate(proba), rtol=1e-12)


def per_user_frame(
    rows: int, days: int, labels: int, user: str, distortion: float | None = None
) -> pd.DataFrame:
    """One user's rows over ``days`` days with ``labels`` distinct labels.

    With ``distortion``, labels are drawn from calibrated probabilities
    which are then distorted by that temperature.
    """
    start = pd.Timestamp("2025-03-03 08:00", tz="UTC")
    position = np.arange(rows)
    ts = start + pd.to_timedelta(position % days, unit="D") + pd.to_timedelta(position, unit="min")
    proba, codes = calibrated_sample(rows, seed=rows + days + labels + len(user))
    if distortion is None:
        codes = position % labels
    else:
        proba = softmax(np.log(proba) / distortion)
    return frame_of(proba, user_id=user, bucket_start_ts=ts, y=names(codes))


@pytest.mark.parametrize(
    ("rows", "days", "labels", "eligible"),
    [
        (200, 3, 3, True),
        (199, 3, 3, False),
        (200, 2, 3, False),
        (200, 3, 2, False),
        (400, 5, 8, True),
    ],
)
def test_per_user_eligibility_at_and_just_under_each_threshold(rows, days, labels, eligible):
    frame = pd.concat(
        [per_user_frame(rows, days, labels, "probe"), per_user_frame(600, 4, 8, "regular")],
        ignore_index=True,
    )
    stage = Calibrator(method="temperature", per_user=True)
    stage.fit(frame.drop(columns="y"), frame["y"])
    expected = ["probe", "regular"] if eligible else ["regular"]
    assert stage.store_.user_ids == expected
    assert isinstance(stage.store_, CalibratorStore)
    assert stage.store_.global_calibrator is stage.calibrator_


def test_eligibility_thresholds_are_parameters():
    users = np.array(["a"] * 4 + ["b"] * 4)
    days = np.array([0, 1, 0, 1] * 2)
    codes = np.array([0, 1, 0, 1, 0, 0, 0, 0])
    assert eligible_users(users, days, codes, min_rows=4, min_days=2, min_labels=2) == ["a"]
    assert eligible_users(users, days, codes, min_rows=4, min_days=2, min_labels=1) == ["a", "b"]
    assert eligible_users(users, days, codes, min_rows=5, min_days=1, min_labels=1) == []


def test_per_user_maps_calibrate_their_users_and_the_global_one_the_rest():
    frame = pd.concat(
        [
            per_user_frame(3000, 3, 8, "sharp", distortion=0.5),
            per_user_frame(3000, 3, 8, "soft", distortion=2.0),
            per_user_frame(150, 3, 8, "small", distortion=1.0),
        ],
        ignore_index=True,
    )
    X, y = frame.drop(columns="y"), frame["y"]
    stage = Calibrator(method="temperature", per_user=True).fit(X, y)
    store = stage.store_
    assert store.user_ids == ["sharp", "soft"]
    assert store.get_calibrator("sharp").temperature == pytest.approx(2.0, rel=0.1)
    assert store.get_calibrator("soft").temperature == pytest.approx(0.5, rel=0.1)
    assert store.get_calibrator("small") is stage.calibrator_
    inputs = X[list(PROBA_COLUMNS)].to_numpy()
    out = stage.transform(X)[list(PROBA_COLUMNS)].to_numpy()
    for user in ("small", "sharp", "soft"):
        rows = (X["user_id"] == user).to_numpy()
        expected = store.get_calibrator(user).calibrate(inputs[rows])
        np.testing.assert_array_equal(out[rows], expected)


def test_per_user_without_user_ids_fits_the_global_map_only():
    proba, labels = calibrated_sample(400, seed=6)
    stage = Calibrator(method="temperature", per_user=True).fit(frame_of(proba), names(labels))
    assert stage.store_.user_ids == []
    assert isinstance(stage.calibrator_, TemperatureCalibrator)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"method": "platt"}, "method must be one of ['identity', 'temperature', 'isotonic']"),
        ({"per_user": 1}, "per_user must be True or False, got 1"),
        ({"min_user_rows": 0}, "min_user_rows must be an integer in [1, 2147483648], got 0"),
        ({"min_user_days": 2.5}, "min_user_days must be an integer in [1, 2147483648]"),
    ],
)
def test_bad_parameters_are_refused_at_fit_and_transform(params, words):
    stage = Calibrator(method="isotonic", per_user=True, min_user_rows=50)
    assert clone(stage).get_params() == stage.get_params()
    stage.set_params(**params)  # only stored
    frame = frame_of(np.full((1, 8), 0.125))
    for call in (lambda: stage.fit(frame, ["Build"]), lambda: stage.transform(frame)):
        refused(call, InvalidParameterError, "Calibrator: " + words)


def test_the_pipeline_calibrates_on_out_of_fold_probabilities(fitted, labelled):
    X, y = labelled
    fitted_t = fitted.named_steps["calibrate"].calibrator_.temperature

    # The same steps by hand: encode, out-of-fold probabilities, temperature.
    fresh = clone(fitted)
    encoded = fresh.named_steps["encode"].fit_transform(X, y)
    oof = fresh.named_steps["predict"].fit_transform(encoded, y)
    codes = pd.Index(CLASS_ORDER).get_indexer(y)
    assert fit_temperature(oof[list(PROBA_COLUMNS)].to_numpy(), codes).temperature == fitted_t
    # Fitting on in-sample probabilities would give another temperature.
    in_sample = fresh.named_steps["predict"].transform(encoded)[list(PROBA_COLUMNS)].to_numpy()
    assert fit_temperature(in_sample, codes).temperature != pytest.approx(fitted_t, rel=0.05)
