"""Calibration maps (identity; temperature softmax(log(clip(p, 1e-12)) / T); isotonic per
class, floored at 1e-12, rows renormalized), the per-user store with its global fallback,
and the calibrate stage that applies and fits them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, proba_frame, refused
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression

from taskclf import build_pipeline
from taskclf._columns import PROBA_COLUMNS
from taskclf.calibration import (
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
    check_proba,
    load_calibrator,
    load_calibrator_store,
    save_calibrator,
)
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    NotFittedError,
    ProbabilityShapeError,
    ReaderError,
)
from taskclf.infer.calibration import Calibrator as CalibrationMap  # taskclf 0.4's protocol
from taskclf.stages.calibrate import Calibrator, fit_temperature

FLOOR = 1e-12
P = list(PROBA_COLUMNS)


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
    assert isinstance(IdentityCalibrator(), CalibrationMap) and not isinstance(p, CalibrationMap)
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


BAD_CALIBRATOR_FILES = [
    ("{", ReaderError, "is not JSON"),
    ("[1]", InvalidParameterError, "not a calibrator (AttributeError"),
    ('{"type": "temperature"}', InvalidParameterError, "not a calibrator (KeyError('temperature')"),
    ('{"type": "platt"}', InvalidParameterError, "unknown calibrator type 'platt'"),
]


@pytest.mark.parametrize(("text", "error", "words"), BAD_CALIBRATOR_FILES)
def test_files_that_are_no_calibrators_are_refused_naming_the_file(text, error, words, tmp_path):
    (tmp_path / "map.json").write_text(text)
    refused(lambda: load_calibrator(tmp_path / "map.json"), error, "map.json", words)
    (tmp_path / "store.json").write_text("[1]")
    refused(lambda: load_calibrator_store(tmp_path), InvalidParameterError, "not a store header")
    words = "cannot save a calibrator of type dict"
    refused(lambda: save_calibrator({}, tmp_path / "x.json"), InvalidParameterError, words)


def test_stage_applies_the_store_with_user_id_else_its_map():
    p = random_proba(9, 6)
    users = ["a", "b", "a", "c", "b", "a"]
    store = CalibratorStore(TemperatureCalibrator(3.0), {"a": TemperatureCalibrator(0.5)})
    stage = Calibrator.from_maps(TemperatureCalibrator(2.0), store)
    out = stage.transform(proba_frame(p, index=list("uvwxyz"), user_id=users, keys=1.0))
    assert out.columns.tolist() == [*PROBA_COLUMNS, "user_id", "keys"]
    assert out.index.tolist() == list("uvwxyz")
    np.testing.assert_allclose(out[P], reference_store(store, p, users))
    without = stage.transform(proba_frame(p))[P].to_numpy()
    np.testing.assert_allclose(without, reference_temperature(p, 2.0))
    for identity in (Calibrator(), Calibrator.from_maps(store=store)):
        np.testing.assert_array_equal(identity.transform(proba_frame(p))[P], p)


def test_given_maps_are_fitted_stages_kept_by_freezing():
    given = TemperatureCalibrator(2.0)
    stage = Calibrator.from_maps(given)
    assert stage.calibrator_ is given and stage.store_ is None and np.isnan(stage.log_loss_after_)
    assert not hasattr(clone(stage), "calibrator_")  # a clone is a fresh identity stage
    frozen = FrozenEstimator(stage)
    assert clone(frozen) is frozen
    proba, labels = calibrated_sample(50, seed=5)
    assert frozen.fit(proba_frame(proba), labels) is frozen and frozen.calibrator_ is given
    assert Calibrator.from_maps().calibrator_ == IdentityCalibrator()


def test_stage_refuses_what_is_not_a_map_and_lists_missing_columns():
    words = "calibrator must have a calibrate(proba) method, got float"
    refused(lambda: Calibrator.from_maps(2.0), InvalidParameterError, words)
    words = "store must be a CalibratorStore, got dict"
    refused(lambda: Calibrator.from_maps(store={"a": 1}), InvalidParameterError, words)
    frame = proba_frame(np.full((2, 8), 0.125)).drop(columns=["proba_Meet", "proba_Write"])
    stage = Calibrator.from_maps(TemperatureCalibrator(2.0))
    refused(lambda: stage.transform(frame), MissingColumnsError, "'proba_Meet', 'proba_Write'")


# Fitting


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
    out = stage.transform(proba_frame(proba))[P].to_numpy()
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert out.min() >= 1e-13
    assert stage.brier_after_ < stage.brier_before_
    assert stage.log_loss_after_ < stage.log_loss_before_
    for regressor in stage.calibrator_.regressors:
        assert (regressor.out_of_bounds, regressor.y_min, regressor.y_max) == ("clip", 0, 1)


def test_identity_needs_no_fit_and_fitted_methods_do():
    proba, labels = calibrated_sample(300, seed=3)
    stage = Calibrator().fit(proba_frame(proba), labels)  # the scores, by their definitions
    codes = pd.Index(CLASS_ORDER).get_indexer(labels)
    brier = ((proba - np.eye(8)[codes]) ** 2).sum(axis=1).mean()
    assert stage.brier_before_ == pytest.approx(brier) == stage.brier_after_
    log_loss = -np.log(proba[np.arange(300), codes]).mean()
    assert stage.log_loss_before_ == pytest.approx(log_loss) == stage.log_loss_after_
    frame = proba_frame(proba[:10])
    pd.testing.assert_frame_equal(Calibrator().fit(frame).transform(frame), frame)
    fitted = Calibrator(method="temperature")
    refused(lambda: fitted.transform(frame), NotFittedError, "temperature")
    refused(lambda: fitted.fit(frame), InputError, "pass y")
    refused(lambda: fitted.fit(frame, ["Nap"] * 10), InputError, "'Nap'")
    refused(lambda: fitted.fit(frame, ["Build"] * 9), InputError, "9 labels")
    nan = frame.assign(proba_Meet=np.nan)
    refused(lambda: fitted.fit(nan, labels[:10]), InputError, "'proba_Meet' holds nan at row 0")


def user_rows(user: str, rows: int, days: int, labels: int, distortion: float = 1.0):
    """One user's rows over ``days`` UTC days with ``labels`` distinct labels."""
    start = pd.Timestamp("2025-03-03 08:00", tz="UTC")
    position = np.arange(rows)
    ts = start + pd.to_timedelta(position % days, unit="D") + pd.to_timedelta(position, unit="min")
    proba, y = calibrated_sample(rows, seed=rows + days + labels, distortion=distortion)
    if labels < 8:
        y = np.asarray(CLASS_ORDER)[position % labels]
    return proba_frame(proba, user_id=user, bucket_start_ts=ts, y=y)


THRESHOLDS = {"min_user_rows": 120, "min_user_days": 2, "min_user_labels": 2}


@pytest.mark.parametrize(
    ("rows", "days", "labels", "params", "eligible"),
    [
        (200, 3, 3, {}, True),
        (199, 3, 3, {}, False),
        (200, 2, 3, {}, False),
        (200, 3, 2, {}, False),
        (120, 2, 2, THRESHOLDS, True),
        (119, 2, 2, THRESHOLDS, False),
    ],
)
def test_per_user_eligibility_at_and_just_under_each_threshold(
    rows, days, labels, params, eligible
):
    probe, regular = user_rows("probe", rows, days, labels), user_rows("regular", 300, 4, 8)
    frame = pd.concat([probe, regular], ignore_index=True)
    stage = Calibrator(method="temperature", per_user=True, **params)
    stage.fit(frame.drop(columns="y"), frame["y"])
    assert stage.store_.user_ids == (["probe", "regular"] if eligible else ["regular"])
    assert stage.store_.global_calibrator is stage.calibrator_


def test_per_user_maps_calibrate_their_users_and_the_global_one_the_rest():
    users = [("sharp", 2000, 3, 8, 0.5), ("soft", 2000, 3, 8, 2.0), ("small", 150, 3, 8)]
    frame = pd.concat([user_rows(*user) for user in users], ignore_index=True)
    X, y = frame.drop(columns="y"), frame["y"]
    stage = Calibrator(method="temperature", per_user=True).fit(X, y)
    store = stage.store_
    assert store.user_ids == ["sharp", "soft"]
    assert store.get_calibrator("sharp").temperature == pytest.approx(2.0, rel=0.15)
    assert store.get_calibrator("soft").temperature == pytest.approx(0.5, rel=0.15)
    assert store.get_calibrator("small") is stage.calibrator_
    out, given = stage.transform(X)[P].to_numpy(), X[P].to_numpy()
    for user in ("small", "sharp", "soft"):
        rows = (X["user_id"] == user).to_numpy()
        np.testing.assert_array_equal(out[rows], store.get_calibrator(user).calibrate(given[rows]))
    # without user ids only the global map is fitted
    stage = Calibrator(method="temperature", per_user=True).fit(X[P], y)
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
    assert fit_temperature(oof[P].to_numpy(), codes).temperature == fitted_t
    # Fitting on in-sample probabilities would give another temperature.
    in_sample = fresh.named_steps["predict"].transform(encoded)[P].to_numpy()
    assert fit_temperature(in_sample, codes).temperature != pytest.approx(fitted_t, rel=0.05)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_fit_reports_accuracy_and_macro_f1_as_scikit_learn_computes_them(method):
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(4)
    proba = rng.dirichlet(np.ones(8) * 0.5, size=300)
    truth = np.asarray(CLASS_ORDER)[
        np.where(rng.random(300) < 0.6, proba.argmax(1), rng.integers(0, 8, 300))
    ]
    frame = pd.DataFrame(proba, columns=PROBA_COLUMNS)
    stage = Calibrator(method=method).fit(frame, truth)
    top = np.asarray(CLASS_ORDER)[stage.transform(frame)[list(PROBA_COLUMNS)].to_numpy().argmax(1)]
    assert stage.accuracy_ == accuracy_score(truth, top)
    assert stage.macro_f1_ == pytest.approx(f1_score(truth, top, average="macro"), abs=1e-12)
