"""Grid search: GridSearchCV on taskclf pipelines, and PostprocessingSearchCV matching it."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from conftest import FEATURE_CASES, TIMELINE_CASES, make_frame, refused
from joblib import Memory
from sklearn.base import clone
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, GroupKFold

from taskclf import MajoritySmoother, ViterbiSmoother, build_pipeline
from taskclf._columns import SMOOTHED_LABEL
from taskclf.exceptions import InvalidParameterError, NotFittedError
from taskclf.metrics import get_scorer, make_summary_scorer
from taskclf.tune import PostprocessingSearchCV

TRAIN = {
    "num_boost_round": 3,
    "num_threads": 1,
    "n_folds": 2,
    "booster_params": {"num_leaves": 7, "max_bin": 15, "learning_rate": 0.5},
}
GRID = {"reject__threshold": [None, 0.152], "smooth__window": [1, 5]}  # about the median confidence
FOLDS = GroupKFold(2)


@pytest.fixture(scope="module")
def noisy() -> tuple[pd.DataFrame, pd.Series]:
    """Four users; noisy features so that thresholds and windows matter."""
    frame = make_frame(n_users=4, minutes=100, seed=2)
    X = frame.drop(columns="label")
    numeric = [c for c in X.columns if X[c].dtype == np.float64]
    noise = np.random.default_rng(0).normal(scale=4.0, size=(len(X), len(numeric)))
    X[numeric] = X[numeric] + noise
    return X, frame["label"]


@pytest.fixture
def count_training(monkeypatch) -> list[int]:
    calls: list[int] = []
    train = lgb.train

    def counting(*args, **kwargs):
        calls.append(1)
        return train(*args, **kwargs)

    monkeypatch.setattr(lgb, "train", counting)
    return calls


def smoothed_accuracy(estimator, X, y) -> float:
    """A scorer that reads the annotated frame rather than predict()."""
    return float(accuracy_score(y, estimator.transform(X)[SMOOTHED_LABEL].astype(object)))


def assert_same_search(grid: GridSearchCV, fast: PostprocessingSearchCV) -> None:
    ours, theirs = fast.cv_results_, grid.cv_results_
    assert list(ours) == list(theirs)
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        assert (ours[key] == theirs[key]).all(), key
        assert ours[key].dtype == theirs[key].dtype, key
    for s in range(grid.n_splits_):
        assert (ours[f"split{s}_test_score"] == theirs[f"split{s}_test_score"]).all()
    assert ours["params"] == theirs["params"]
    for key in (k for k in theirs if k.startswith("param_")):
        assert ours[key].tolist() == theirs[key].tolist()
        assert (ours[key].mask == theirs[key].mask).all()
    assert fast.best_params_ == grid.best_params_
    assert fast.best_score_ == grid.best_score_
    assert fast.best_index_ == grid.best_index_
    assert fast.n_splits_ == grid.n_splits_


@pytest.mark.slow
def test_fast_search_equals_gridsearchcv_and_trains_once_per_fold(noisy, count_training):
    X, y = noisy
    pipeline = build_pipeline(**TRAIN)
    search = {"cv": FOLDS, "scoring": "accuracy"}
    grid = GridSearchCV(pipeline, GRID, error_score="raise", **search)
    grid.fit(X, y, groups=X["user_id"])
    trained = len(count_training)
    fast = PostprocessingSearchCV(pipeline, GRID, **search).fit(X, y, groups=X["user_id"])
    assert_same_search(grid, fast)
    assert len(np.unique(grid.cv_results_["mean_test_score"])) == 4  # the candidates differ
    # each fit trains one model on all rows and one per inner fold
    per_fit = 1 + TRAIN["n_folds"]
    assert trained == (4 * 2 + 1) * per_fit
    assert len(count_training) - trained == (2 + 1) * per_fit  # once per fold, then the refit
    assert fast.split_step_ == "reject"
    assert fast.prefix_fit_times_.shape == (2,) and (fast.prefix_fit_times_ > 0).all()
    np.testing.assert_array_equal(fast.predict(X.iloc[:150]), grid.predict(X.iloc[:150]))
    assert fast.score(X, y) == grid.score(X, y)
    assert fast.transform(X).equals(grid.best_estimator_.transform(X))


@pytest.mark.slow
def test_memory_pipeline_and_a_swapped_smoother_match(noisy, count_training, tmp_path):
    # The pattern of docs/tuning.md: GridSearchCV over a pipeline with memory
    # trains once per fold; the grid swaps in the Viterbi smoother and tunes it.
    X, y = noisy
    pipeline = build_pipeline(memory=Memory(tmp_path, verbose=0), **TRAIN)
    grid = [
        {"smooth": [MajoritySmoother(window=5)]},
        {"smooth": [ViterbiSmoother()], "smooth__switch_prob": [0.5]},
    ]
    search = {"cv": FOLDS, "scoring": smoothed_accuracy}
    slow = GridSearchCV(pipeline, grid, error_score="raise", **search)
    slow.fit(X, y, groups=X["user_id"])
    assert len(count_training) == (2 + 1) * (1 + TRAIN["n_folds"])
    fast = PostprocessingSearchCV(pipeline, grid, **search).fit(X, y, groups=X["user_id"])
    assert_same_search(slow, fast)
    assert fast.cv_results_["param_smooth__switch_prob"].mask.tolist() == [True, False]
    assert fast.split_step_ == "smooth"
    assert isinstance(fast.best_estimator_.named_steps["smooth"], type(slow.best_params_["smooth"]))


@pytest.mark.parametrize("scoring", [None, "segmental_f1@50"])
def test_fast_search_equals_gridsearchcv_on_a_frozen_booster(
    booster_v1, encoders_v1, frame_v1, scoring
):
    head = frame_v1.groupby("user_id").head(60)  # an hour of each user
    X, y = head.drop(columns="label"), head["label"]
    pipeline = build_pipeline(booster_v1, encoders_v1)
    theirs = get_scorer(scoring) if scoring else None  # scikit-learn knows no taskclf names
    grid = GridSearchCV(pipeline, GRID, cv=FOLDS, scoring=theirs, error_score="raise")
    grid.fit(X, y, groups=X["user_id"])
    fast = PostprocessingSearchCV(pipeline, GRID, cv=FOLDS, scoring=scoring)
    fast.fit(X, y, groups=X["user_id"])
    assert_same_search(grid, fast)
    assert fast.best_estimator_.named_steps["predict"].booster_ is booster_v1
    if scoring:
        assert repr(fast.scorer_) == repr(theirs)


def test_refit_false_keeps_no_estimator(booster_v1, encoders_v1, frame_v1):
    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    fast = PostprocessingSearchCV(
        build_pipeline(booster_v1, encoders_v1),
        {"smooth__window": [1, 3]},
        scoring="accuracy",
        cv=FOLDS,
        refit=False,
    ).fit(X, y, groups=X["user_id"])
    assert not hasattr(fast, "best_estimator_")
    assert fast.best_params_ in ({"smooth__window": 1}, {"smooth__window": 3})
    refused(lambda: fast.predict(X), NotFittedError, "refit=False")


def test_search_parameters_clone():
    search = PostprocessingSearchCV(build_pipeline(**TRAIN), GRID, scoring="accuracy", cv=3)
    copy = clone(search).set_params(estimator__reject__threshold=0.3)
    assert copy.get_params()["cv"] == 3 and copy.get_params()["param_grid"] == GRID
    assert copy.estimator.named_steps["reject"].threshold == 0.3
    assert search.estimator.named_steps["reject"].threshold is None


def test_default_score_is_the_accuracy_of_final_labels(booster_v1, encoders_v1, frame_v1):
    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.9)
    assert pipeline.score(X, y) == accuracy_score(y, pipeline.predict(X))
    assert 0.0 < pipeline.score(X, y) < 1.0


# Bad searches: refused before any training, naming the problem

BAD_SEARCHES = {
    "a threshold above 1": (
        {"param_grid": {"reject__threshold": [0.5, 1.5]}},
        ("threshold", "1.5"),
    ),
    "a window of 0": ({"param_grid": {"smooth__window": [3, 0]}}, ("window", "0")),
    "a step that does not exist": (
        {"param_grid": {"rejekt__threshold": [0.5]}},
        ("'rejekt__threshold'", "steps are"),
    ),
    "a pipeline parameter": ({"param_grid": {"memory": [None]}}, ("'memory'", "steps are")),
    "an empty grid": ({"param_grid": {"reject__threshold": []}}, ("param_grid",)),
    "a malformed grid": ({"param_grid": {"reject__threshold": 0.5}}, ("param_grid",)),
    "an unknown scorer": ({"scoring": "segmental_f1@99"}, ("'segmental_f1@99'", "@50")),
    "two scorers": ({"scoring": ["accuracy"]}, ("one metric",)),
    "not a pipeline": ({"estimator": MajoritySmoother()}, ("Pipeline", "MajoritySmoother")),
}


@pytest.mark.parametrize(("kwargs", "words"), BAD_SEARCHES.values(), ids=BAD_SEARCHES)
def test_bad_searches_are_refused_before_any_training(
    kwargs, words, labelled_frame, count_training
):
    X, y = labelled_frame.drop(columns="label"), labelled_frame["label"]
    params = {"param_grid": GRID, "scoring": "accuracy", "cv": FOLDS, **kwargs}
    search = PostprocessingSearchCV(params.pop("estimator", build_pipeline(**TRAIN)), **params)
    refused(lambda: search.fit(X, y, groups=X["user_id"]), InvalidParameterError, *words)
    assert count_training == []


def test_multi_metric_scorers_are_refused(booster_v1, encoders_v1, labelled_frame):
    X, y = labelled_frame.drop(columns="label"), labelled_frame["label"]
    search = PostprocessingSearchCV(
        build_pipeline(booster_v1, encoders_v1), GRID, scoring=make_summary_scorer(), cv=FOLDS
    )
    refused(lambda: search.fit(X, y, groups=X["user_id"]), InvalidParameterError, "multi-metric")


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        pytest.param(*TIMELINE_CASES["a duplicate (user_id, bucket_start_ts) row"], id="dup"),
        pytest.param(*FEATURE_CASES["missing feature columns"], id="missing"),
    ],
)
def test_tuning_refuses_bad_frames(mutate, error, words, labelled_frame):
    bad = mutate(labelled_frame)
    y = bad.pop("label")
    search = PostprocessingSearchCV(build_pipeline(**TRAIN), GRID, scoring="accuracy", cv=FOLDS)
    refused(lambda: search.fit(bad, y, groups=bad["user_id"]), error, *words)
