"""Training a pipeline: pipeline.fit(df, y) with real LightGBM models."""

from __future__ import annotations

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from conftest import FAST, FEATURE_CASES, SMALL_TREES, TIMELINE_CASES, make_frame, refused
from joblib import Memory
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.frozen import FrozenEstimator

from taskclf import BoosterPredictor, CategoricalEncoder, build_pipeline, frame_to_segments
from taskclf._columns import PROBA_COLUMNS
from taskclf._folds import check_labels, fold_groups, group_folds
from taskclf.core.schema import get_schema
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import (
    InputError,
    InvalidParameterError,
)
from taskclf.pipeline import FROZEN_STEPS, TaskPipeline, freeze
from taskclf.stages.model import feature_matrix


def proba_of(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(PROBA_COLUMNS)].to_numpy()


@pytest.fixture(scope="module")
def encoded(labelled):
    """The first 150 minutes of the four users, encoded, and their labels."""
    X, y = labelled
    rows = X.groupby("user_id").cumcount().to_numpy() < 150
    return CategoricalEncoder().fit_transform(X[rows], y[rows]), y[rows].to_numpy()


def test_fitted_pipeline_predicts_new_rows_and_survives_joblib(fitted, tmp_path):
    new = make_frame(n_users=2, minutes=240, seed=7)
    predicted = fitted.predict(new.drop(columns="label"))
    assert (predicted == new["label"].to_numpy()).mean() > 0.9
    joblib.dump(fitted, tmp_path / "pipeline.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "pipeline.joblib").predict(new.drop(columns="label")), predicted
    )


def test_booster_is_multiclass_over_the_eight_classes_with_categoricals_declared(fitted):
    stage = fitted.named_steps["predict"]
    booster = stage.booster_
    assert isinstance(booster, lgb.Booster)
    assert booster.num_trees() == FAST["num_boost_round"] * 8
    schema = get_schema("v1")
    infos = booster.dump_model()["feature_infos"]
    for j, name in enumerate(schema.feature_columns):
        assert bool(infos[f"Column_{j}"]["values"]) == (name in schema.categorical_columns), name
    assert list(stage.classes_) == list(CLASS_ORDER)


def test_training_is_deterministic_and_params_override_the_defaults(encoded):
    Xe, y = encoded
    first, second = (BoosterPredictor(params={"num_leaves": 3}, **FAST).fit(Xe, y) for _ in "ab")
    assert first.booster_.model_to_string() == second.booster_.model_to_string()
    leaves = [tree["num_leaves"] for tree in first.booster_.dump_model()["tree_info"]]
    assert max(leaves) <= 3
    assert first.lightgbm_params()["num_leaves"] == 3
    assert first.lightgbm_params()["num_threads"] == 1


def test_balanced_class_weight_raises_the_probability_of_a_rare_class():
    # Build is rare (30 rows) and drawn from features overlapping Debug's.
    frame = make_frame(n_users=2, minutes=400, seed=1)
    rare = np.flatnonzero(frame["label"].to_numpy() == "Debug")[:30]
    labels = np.where(frame["label"].to_numpy() == "Build", "Debug", frame["label"].to_numpy())
    labels[rare] = "Build"
    X = frame.drop(columns="label")
    numeric = [c for c in X.columns if X[c].dtype == np.float64]
    X[numeric] += np.random.default_rng(0).normal(scale=3.0, size=(len(X), len(numeric)))
    Xe = CategoricalEncoder().fit_transform(X, labels)

    def build_proba(class_weight: object) -> float:
        stage = BoosterPredictor(class_weight=class_weight, params=SMALL_TREES, **FAST)
        return float(stage.fit(Xe, labels).predict_proba(Xe)[labels == "Build", 1].mean())

    assert build_proba("balanced") > build_proba(None) + 0.1


def test_out_of_fold_rows_are_scored_by_a_model_that_never_saw_them(encoded):
    Xe, y = encoded
    # v2 (v1's features less user_id, which makes the folds): a refit encodes alike
    stage = BoosterPredictor("v2", n_folds=3, params=SMALL_TREES, **FAST)
    oof = proba_of(stage.fit_transform(Xe, y))
    fold = stage.oof_fold_
    users = Xe["user_id"].to_numpy()
    # Group-aware: each user is held out in exactly one fold.
    assert all(len(np.unique(fold[users == u])) == 1 for u in np.unique(users))
    assert sorted(np.unique(fold).tolist()) == [0, 1, 2]
    for k in range(3):
        held_out = fold == k
        model = clone(stage).fit(Xe[~held_out], y[~held_out])
        np.testing.assert_array_equal(oof[held_out], model.predict_proba(Xe[held_out]))
    # transform after fit uses the model trained on all rows.
    full = clone(stage).fit(Xe, y).predict_proba(Xe)
    np.testing.assert_array_equal(proba_of(stage.transform(Xe)), full)


@pytest.mark.slow
def test_out_of_fold_probabilities_do_not_reflect_memorization():
    # Random labels: only memorization fits them.
    frame = make_frame(n_users=3, minutes=100, seed=4)
    labels = np.asarray(CLASS_ORDER)[np.random.default_rng(1).integers(0, 8, len(frame))]
    Xe = CategoricalEncoder().fit_transform(frame.drop(columns="label"), labels)
    stage = BoosterPredictor(
        params={"min_data_in_leaf": 1, "num_leaves": 63, "learning_rate": 1.0, "max_bin": 63},
        num_boost_round=6,
        n_folds=2,
        num_threads=1,
    )
    oof = proba_of(stage.fit_transform(Xe, labels))
    in_sample = stage.predict_proba(Xe)
    assert (np.asarray(CLASS_ORDER)[in_sample.argmax(1)] == labels).mean() > 0.9
    assert (np.asarray(CLASS_ORDER)[oof.argmax(1)] == labels).mean() < 0.25


def test_folds_fall_back_to_days_then_to_blocks_of_time():
    frame = make_frame(n_users=1, minutes=60)
    days = pd.concat(
        [
            frame.assign(bucket_start_ts=frame["bucket_start_ts"] + pd.Timedelta(days=d))
            for d in (0, 1, 2)
        ],
        ignore_index=True,
    )
    groups, kind = fold_groups(days)
    assert kind == "day"
    fold = group_folds(days, 5)  # three days give three folds
    assert sorted(np.unique(fold).tolist()) == [0, 1, 2]
    assert all(len(np.unique(fold[groups == g])) == 1 for g in np.unique(groups))

    shuffled = frame.sample(frac=1.0, random_state=0)
    assert fold_groups(shuffled)[1] == "row"
    fold = group_folds(shuffled, 3)
    ts = shuffled["bucket_start_ts"].to_numpy()
    # contiguous in time: every row of fold k starts before every row of fold k + 1
    for k in range(2):
        assert ts[fold == k].max() < ts[fold == k + 1].min()
    assert np.bincount(fold).tolist() == [20, 20, 20]
    with pytest.raises(InputError, match="at least 2 rows"):
        group_folds(frame.iloc[:1], 3)


def test_a_pretrained_booster_stays_frozen_through_fit_and_clone(booster_v1, encoders_v1, frame_v1):
    pipeline = build_pipeline(booster_v1, encoders_v1)
    before = booster_v1.model_to_string()
    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    ready = pipeline.predict(X)
    pipeline.fit(X)  # nothing to learn: labels are optional
    assert np.isnan(pipeline.named_steps["calibrate"].log_loss_before_)
    pipeline.fit(X, y)
    assert pipeline.named_steps["calibrate"].log_loss_before_ > 0
    stage = pipeline.named_steps["predict"]
    assert isinstance(stage, FrozenEstimator) and stage.booster_ is booster_v1
    assert booster_v1.model_to_string() == before
    assert clone(pipeline).named_steps["predict"] is stage
    np.testing.assert_array_equal(pipeline.predict(X), ready)
    # without maps or an explicit method the calibration is the identity
    assert pipeline.get_params()["calibrate__method"] == "identity"


def test_freeze_keeps_the_trained_steps_and_clones_the_others(fitted, labelled, monkeypatch):
    X, y = labelled
    frozen = freeze(fitted)
    assert isinstance(frozen, TaskPipeline)
    expected = fitted.predict(X)
    calls = []
    monkeypatch.setattr(lgb, "train", lambda *a, **k: calls.append(1))
    frozen.set_params(reject__threshold=0.3).fit(X.iloc[:500], y.iloc[:500])
    assert calls == []  # never retrained
    for name, step in frozen.steps:
        if name in FROZEN_STEPS:
            assert step.estimator is fitted.named_steps[name]
            assert clone(frozen).named_steps[name] is step
        else:
            assert step is not fitted.named_steps[name]
    np.testing.assert_array_equal(frozen.set_params(reject__threshold=None).predict(X), expected)


def test_new_parameters_work_with_get_params_set_params_and_clone():
    pipeline = build_pipeline(
        booster_params={"num_leaves": 7},
        num_boost_round=12,
        class_weight=None,
        n_folds=4,
        calibration="isotonic",
        per_user_calibration=True,
        num_threads=2,
    )
    expected = {
        "predict__params": {"num_leaves": 7},
        "predict__num_boost_round": 12,
        "predict__class_weight": None,
        "predict__n_folds": 4,
        "predict__num_threads": 2,
        "calibrate__method": "isotonic",
        "calibrate__per_user": True,
    }
    assert {name: pipeline.get_params()[name] for name in expected} == expected
    pipeline.set_params(predict__num_boost_round=5, calibrate__method="temperature")
    copy = clone(pipeline)
    assert copy.get_params()["predict__num_boost_round"] == 5
    assert copy.get_params()["calibrate__method"] == "temperature"
    assert copy.named_steps["predict"] is not pipeline.named_steps["predict"]


def test_unseen_users_are_predicted_on_their_own_timelines(fitted):
    # Two users the model never saw, at the same minutes: they must not be
    # merged into one "__unknown__" user (which would duplicate rows).
    new = make_frame(n_users=2, minutes=120, seed=9).drop(columns="label")
    new["user_id"] = np.repeat(["newcomer_a", "newcomer_b"], 120)
    out = fitted.transform(new)
    assert out["user_id"].tolist() == new["user_id"].tolist()
    stage = fitted.named_steps["predict"]
    codes = feature_matrix(out, stage.schema_, stage.user_vocabulary_)[:, -1]
    assert set(codes) == {stage.user_vocabulary_.index("__unknown__")}
    segments = frame_to_segments(out)
    assert {s.user_id for s in segments} == {"newcomer_a", "newcomer_b"}
    for user in ("newcomer_a", "newcomer_b"):
        assert sum(s.bucket_count for s in segments if s.user_id == user) == 120


@pytest.mark.slow
def test_memory_caching_trains_the_booster_once(labelled, tmp_path, monkeypatch):
    X, y = labelled
    calls = []
    train = lgb.train
    monkeypatch.setattr(lgb, "train", lambda *a, **k: calls.append(1) or train(*a, **k))
    memory = Memory(tmp_path, verbose=0)
    rows = np.r_[0:150, 480:630]  # two users
    X, y = X.iloc[rows], y.iloc[rows]
    params = {"n_folds": 2, "booster_params": SMALL_TREES, "num_boost_round": 3, "num_threads": 1}
    first = build_pipeline(memory=memory, **params).fit(X, y)
    assert len(calls) == 3  # the full model and two fold models
    second = build_pipeline(memory=memory, **params).set_params(reject__threshold=0.4)
    second.fit(X, y)
    assert len(calls) == 3  # loaded from the cache
    np.testing.assert_array_equal(
        proba_of(first[:3].transform(X)), proba_of(second[:3].transform(X))
    )


# --------------------------------------------------------------------------
# Bad input (contract: a specific error naming the problem)
# --------------------------------------------------------------------------


def train(frame: pd.DataFrame, y=None, **params):
    """Fit a fresh pipeline (small, single-threaded) on ``frame`` and ``y``."""
    defaults = {"num_boost_round": 3, "num_threads": 1, "n_folds": 2}
    return build_pipeline(**{**defaults, **params}).fit(frame, y)


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        pytest.param(*case, id=name)
        for name, case in {**FEATURE_CASES, **TIMELINE_CASES}.items()
        # the checks of prediction (test_pipeline), one of each kind; a frame saying
        # "v2" is trained as v2 (v1's features less user_id): no model to differ
        if name
        in (
            "missing feature columns",
            "words in a boolean column",
            "another schema hash",
            "an unparseable timestamp",
            "a duplicate (user_id, bucket_start_ts) row",
        )
    ],
)
def test_bad_frame_is_refused_in_training(mutate, error, words, labelled_frame):
    bad = mutate(labelled_frame)
    y = bad.pop("label")
    refused(lambda: train(bad, y), error, *words)


LABEL_CASES = {
    "no labels": (lambda y: None, ("pass y",)),
    "too few labels": (lambda y: y[:5], ("y has 5 labels", "60 rows")),
    "an unknown label": (lambda y: y.where(y.index != 3, "Coding"), ("'Coding'", "row 3")),
    "a missing label": (lambda y: y.where(y.index != 8), ("nan", "row 8")),
    "Mixed/Unknown as a label": (
        lambda y: y.where(y.index != 0, MIXED_UNKNOWN),
        ("'Mixed/Unknown'", "row 0"),
    ),
    "labels as numbers": (lambda y: np.arange(len(y)) % 8, ("row 0",)),
}


@pytest.mark.parametrize(("change", "words"), LABEL_CASES.values(), ids=LABEL_CASES.keys())
def test_bad_labels_are_refused(change, words, labelled_frame):
    assert check_labels(np.array(["Write", "Build"]), 2, "x").tolist() == [7, 1]
    frame = labelled_frame.drop(columns="label")
    refused(lambda: train(frame, change(labelled_frame["label"])), InputError, *words)


TRAINING_PARAMETERS = {
    "an unknown calibration": ({"calibration": "platt"}, ("method", "'platt'")),
    "no boosting rounds": ({"num_boost_round": 0}, ("num_boost_round", "0")),
    "one fold": ({"n_folds": 1}, ("n_folds", "1")),
    "a weight for an unknown label": ({"class_weight": {"Coding": 2.0}}, ("'Coding'",)),
    "a negative weight": ({"class_weight": {"Build": -1.0}}, ("class_weight", "-1.0")),
    "negative threads": ({"num_threads": -2}, ("num_threads", "-2")),
    "LightGBM refuses its parameters": (
        {"booster_params": {"num_leaves": -5}},
        ("LightGBM", "num_leaves"),
    ),
    "another number of classes": ({"booster_params": {"num_class": 3}}, ("num_class",)),
}


@pytest.mark.parametrize(
    ("params", "words"), TRAINING_PARAMETERS.values(), ids=TRAINING_PARAMETERS.keys()
)
def test_bad_training_parameter_is_refused(params, words, labelled_frame):
    frame = labelled_frame.drop(columns="label")
    refused(lambda: train(frame, labelled_frame["label"], **params), InvalidParameterError, *words)


def test_training_on_nothing_is_refused_and_unseen_values_are_not_errors(labelled_frame, fitted):
    frame, y = labelled_frame.drop(columns="label"), labelled_frame["label"]
    refused(lambda: train(frame.iloc[:0], y.iloc[:0]), InputError, "empty")
    with pytest.raises(SklearnNotFittedError, match="fit"):
        build_pipeline().predict(frame)
    assert fitted.predict(frame.iloc[:0]).shape == (0,)
    assert len(fitted.transform(frame.iloc[:0])) == 0
    strangers = frame["user_id"].map({"user0": "zed", "user1": "ann"})
    odd = frame.assign(app_id="app-never-seen", user_id=strangers, domain_category=None)
    assert len(fitted.predict(odd)) == len(frame)
