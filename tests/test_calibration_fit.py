"""Fitting the calibrate stage: temperature, isotonic, per user, honest folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, proba_frame, refused
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator

from taskclf import Calibrator, IsotonicCalibrator, TemperatureCalibrator, build_pipeline
from taskclf._columns import PROBA_COLUMNS
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InputError, InvalidParameterError, NotFittedError
from taskclf.stages.calibrate import eligible_users, fit_temperature


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def calibrated_sample(n: int, seed: int, distortion: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from probabilities, which are then distorted by ``distortion`` as a
    temperature (undoing it takes ``T = 1 / distortion``); class names."""
    rng = np.random.default_rng(seed)
    proba = softmax(rng.normal(scale=2.0, size=(n, 8)))
    codes = np.minimum((rng.random(n)[:, None] > proba.cumsum(axis=1)).sum(axis=1), 7)
    return softmax(np.log(proba) / distortion), np.asarray(CLASS_ORDER)[codes]


@pytest.mark.parametrize("distortion", [0.5, 2.0])
def test_temperature_recovers_the_distortion(distortion):
    proba, labels = calibrated_sample(4000, seed=1, distortion=distortion)
    stage = Calibrator(method="temperature").fit(proba_frame(proba), labels)
    assert stage.calibrator_.temperature == pytest.approx(1 / distortion, rel=0.1)
    assert stage.log_loss_after_ < stage.log_loss_before_
    assert stage.brier_after_ < stage.brier_before_
    proba, labels = calibrated_sample(4000, seed=1)  # calibrated already: T is about 1
    codes = pd.Index(CLASS_ORDER).get_indexer(labels)
    assert fit_temperature(proba, codes).temperature == pytest.approx(1.0, rel=0.1)


def test_isotonic_fit_renormalises_and_improves_the_fit():
    proba, labels = calibrated_sample(3000, seed=2, distortion=0.4)
    stage = Calibrator(method="isotonic").fit(proba_frame(proba), labels)
    assert isinstance(stage.calibrator_, IsotonicCalibrator)
    out = stage.transform(proba_frame(proba))[list(PROBA_COLUMNS)].to_numpy()
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert out.min() >= 1e-13
    assert stage.brier_after_ < stage.brier_before_
    assert stage.log_loss_after_ < stage.log_loss_before_
    for regressor in stage.calibrator_.regressors:
        assert (regressor.out_of_bounds, regressor.y_min, regressor.y_max) == ("clip", 0, 1)


def test_scores_of_the_fit_match_their_definitions():
    proba, labels = calibrated_sample(300, seed=3)
    stage = Calibrator().fit(proba_frame(proba), labels)
    codes = pd.Index(CLASS_ORDER).get_indexer(labels)
    onehot = np.eye(8)[codes]
    assert stage.brier_before_ == pytest.approx(((proba - onehot) ** 2).sum(axis=1).mean())
    assert stage.log_loss_before_ == pytest.approx(-np.log(proba[np.arange(300), codes]).mean())
    assert (stage.brier_after_, stage.log_loss_after_) == (
        stage.brier_before_,
        stage.log_loss_before_,
    )


def test_identity_needs_no_fit_and_fitted_methods_do():
    frame = proba_frame(calibrated_sample(10, seed=4)[0])
    pd.testing.assert_frame_equal(Calibrator().fit(frame).transform(frame), frame)
    fitted = Calibrator(method="temperature")
    refused(lambda: fitted.transform(frame), NotFittedError, "temperature")
    refused(lambda: fitted.fit(frame), InputError, "pass y")
    refused(lambda: fitted.fit(frame, ["Nap"] * 10), InputError, "'Nap'")
    refused(lambda: fitted.fit(frame, ["Build"] * 9), InputError, "9 labels")


def test_given_maps_are_frozen_through_fit():
    proba, labels = calibrated_sample(50, seed=5)
    given = TemperatureCalibrator(2.0)
    stage = FrozenEstimator(Calibrator.from_maps(given))
    assert stage.fit(proba_frame(proba), labels) is stage
    assert stage.calibrator_ is given and np.isnan(stage.log_loss_after_)


def user_rows(user: str, rows: int, days: int, labels: int, distortion: float = 1.0):
    """One user's rows over ``days`` UTC days with ``labels`` distinct labels."""
    start = pd.Timestamp("2025-03-03 08:00", tz="UTC")
    position = np.arange(rows)
    ts = start + pd.to_timedelta(position % days, unit="D") + pd.to_timedelta(position, unit="min")
    proba, y = calibrated_sample(rows, seed=rows + days + labels, distortion=distortion)
    if labels < 8:
        y = np.asarray(CLASS_ORDER)[position % labels]
    return proba_frame(proba, user_id=user, bucket_start_ts=ts, y=y)


@pytest.mark.parametrize(
    ("rows", "days", "labels", "eligible"),
    [(200, 3, 3, True), (199, 3, 3, False), (200, 2, 3, False), (200, 3, 2, False)],
)
def test_per_user_eligibility_at_and_just_under_each_threshold(rows, days, labels, eligible):
    probe, regular = user_rows("probe", rows, days, labels), user_rows("regular", 300, 4, 8)
    frame = pd.concat([probe, regular], ignore_index=True)
    stage = Calibrator(method="temperature", per_user=True)
    stage.fit(frame.drop(columns="y"), frame["y"])
    assert stage.store_.user_ids == (["probe", "regular"] if eligible else ["regular"])
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
            user_rows("sharp", 2000, 3, 8, 0.5),
            user_rows("soft", 2000, 3, 8, 2.0),
            user_rows("small", 150, 3, 8),
        ],
        ignore_index=True,
    )
    X, y = frame.drop(columns="y"), frame["y"]
    stage = Calibrator(method="temperature", per_user=True).fit(X, y)
    store = stage.store_
    assert store.user_ids == ["sharp", "soft"]
    assert store.get_calibrator("sharp").temperature == pytest.approx(2.0, rel=0.15)
    assert store.get_calibrator("soft").temperature == pytest.approx(0.5, rel=0.15)
    assert store.get_calibrator("small") is stage.calibrator_
    out = stage.transform(X)[list(PROBA_COLUMNS)].to_numpy()
    for user in ("small", "sharp", "soft"):
        rows = (X["user_id"] == user).to_numpy()
        expected = store.get_calibrator(user).calibrate(X[list(PROBA_COLUMNS)].to_numpy()[rows])
        np.testing.assert_array_equal(out[rows], expected)
    # without user ids only the global map is fitted
    stage = Calibrator(method="temperature", per_user=True).fit(X[list(PROBA_COLUMNS)], y)
    assert stage.store_.user_ids == [] and isinstance(stage.calibrator_, TemperatureCalibrator)


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
    frame = proba_frame(np.full((1, 8), 0.125))
    for call in (lambda: stage.fit(frame, ["Build"]), lambda: stage.transform(frame)):
        refused(call, InvalidParameterError, "Calibrator: " + words)


def test_the_pipeline_calibrates_on_out_of_fold_probabilities():
    frame = make_frame(n_users=2, minutes=200, seed=2)
    X, y = frame.drop(columns="label"), frame["label"]
    fitted = build_pipeline(
        num_boost_round=10, num_threads=1, n_folds=2, booster_params={"num_leaves": 7}
    ).fit(X, y)
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
