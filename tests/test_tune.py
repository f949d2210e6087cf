"""Grid search: GridSearchCV on taskclf pipelines, and PostprocessingSearchCV matching it."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from conftest import FEATURE_CASES, TIMELINE_CASES, make_frame, refused
from joblib import Memory
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, GroupKFold

from taskclf import MajoritySmoother, ViterbiSmoother, build_pipeline
from taskclf._columns import SMOOTHED_LABEL
from taskclf.exceptions import InvalidParameterError, NotFittedError
from taskclf.metrics import get_scorer, make_summary_scorer
from taskclf.tune import PostprocessingSearchCV

TRAIN = {
    "num_boost_round": 8,
    "num_threads": 1,
    "n_folds": 2,
    "booster_params": {"num_leaves": 7, "max_bin": 31},
}
GRID = {"reject__threshold": [None, 0.99], "smooth__window": [1, 5]}


@pytest.fixture(scope="module")
def noisy() -> tuple[pd.DataFrame, pd.Series]:
    """Four users; noisy features so that thresholds and windows matter."""
    frame = make_frame(n_users=4, minutes=480, seed=2)
    X = frame.drop(columns="label")
    numeric = [c for c in X.columns if X[c].dtype == np.float64]
    noise = np.random.default_rng(0).normal(scale=6.0, size=(len(X), len(numeric)))
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
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        assert (ours[key] == theirs[key]).all(), key
        assert ours[key].dtype == theirs[key].dtype, key
    for s in range(grid.n_splits_):
        assert (ours[f"split{s}_test_score"] == theirs[f"split{s}_test_score"]).all()
    assert ours["params"] == theirs["params"]
    for name in GRID:
        assert ours[f"param_{name}"].tolist() == theirs[f"param_{name}"].tolist()
    assert fast.best_params_ == grid.best_params_
    assert fast.best_score_ == grid.best_score_
    assert fast.best_index_ == grid.best_index_
    assert fast.n_splits_ == grid.n_splits_


@pytest.mark.slow
def test_fast_search_equals_gridsearchcv_on_a_fittable_pipeline(noisy, count_training):
    X, y = noisy
    pipeline = build_pipeline(**TRAIN)
    search = {"cv": GroupKFold(2), "scoring": "accuracy"}
    grid = GridSearchCV(pipeline, GRID, error_score="raise", **search)
    grid.fit(X, y, groups=X["user_id"])
    trained = len(count_training)
    fast = PostprocessingSearchCV(pipeline, GRID, **search).fit(X, y, groups=X["user_id"])
    assert_same_search(grid, fast)
    # the search is not degenerate: the candidates score differently
    assert len(np.unique(grid.cv_results_["mean_test_score"])) == 4
    # the model steps were fitted once per fold (each fit trains one model on
    # all rows and one per inner fold), then once more for the refit
    per_fit = 1 + TRAIN["n_folds"]
    assert trained == (4 * 2 + 1) * per_fit
    assert len(count_training) - trained == (2 + 1) * per_fit
    assert fast.split_step_ == "reject"
    assert fast.prefix_fit_times_.shape == (2,)
    new = X.iloc[:150]
    np.testing.assert_array_equal(fast.predict(new), grid.predict(new))
    assert fast.score(X, y) == grid.score(X, y)


@pytest.mark.slow
def test_gridsearchcv_with_pipeline_memory_trains_once_per_fold(noisy, count_training, tmp_path):
    # The pattern of docs/tuning.md, with a scorer that reads the annotated frame.
    X, y = noisy
    pipeline = build_pipeline(memory=Memory(tmp_path, verbose=0), **TRAIN)
    search = {"cv": GroupKFold(2), "scoring": smoothed_accuracy}
    grid = GridSearchCV(pipeline, GRID, error_score="raise", **search)
    grid.fit(X, y, groups=X["user_id"])
    per_fit = 1 + TRAIN["n_folds"]
    assert len(count_training) == (2 + 1) * per_fit
    fast = PostprocessingSearchCV(build_pipeline(**TRAIN), GRID, **search)
    fast.fit(X, y, groups=X["user_id"])
    assert_same_search(grid, fast)


@pytest.mark.parametrize("scoring", [None, get_scorer("segmental_f1@50")], ids=["score", "f1"])
def test_fast_search_equals_gridsearchcv_on_a_frozen_booster_pipeline(
    booster_v1, encoders_v1, frame_v1, scoring
):
    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    pipeline = build_pipeline(booster_v1, encoders_v1)
    search = {"cv": GroupKFold(3), "scoring": scoring}
    grid = GridSearchCV(pipeline, GRID, error_score="raise", **search).fit(
        X, y, groups=X["user_id"]
    )
    fast = PostprocessingSearchCV(pipeline, GRID, **search).fit(X, y, groups=X["user_id"])
    assert_same_search(grid, fast)
    assert grid.best_estimator_.named_steps["predict"].booster_ is booster_v1
    assert fast.best_estimator_.named_steps["predict"].booster_ is booster_v1


@pytest.mark.slow
def test_swapping_in_the_viterbi_smoother_and_tuning_it(noisy, tmp_path):
    X, y = noisy
    pipeline = build_pipeline(memory=Memory(tmp_path, verbose=0), **TRAIN)
    grid = [
        {"smooth": [MajoritySmoother(window=5)]},
        {"smooth": [ViterbiSmoother()], "smooth__switch_prob": [0.001, 0.05, 0.5]},
    ]
    search = {"cv": GroupKFold(2), "scoring": get_scorer("segmental_f1@50")}
    slow = GridSearchCV(pipeline, grid, error_score="raise", **search).fit(
        X, y, groups=X["user_id"]
    )
    fast = PostprocessingSearchCV(pipeline, grid, **search).fit(X, y, groups=X["user_id"])
    assert (fast.cv_results_["mean_test_score"] == slow.cv_results_["mean_test_score"]).all()
    assert fast.cv_results_["param_smooth__switch_prob"].mask.tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert fast.split_step_ == "smooth"
    assert isinstance(fast.best_estimator_.named_steps["smooth"], type(slow.best_params_["smooth"]))


def test_refit_false_keeps_no_estimator(noisy):
    X, y = noisy
    fast = PostprocessingSearchCV(
        build_pipeline(**TRAIN),
        {"smooth__window": [1, 3]},
        scoring="accuracy",
        cv=GroupKFold(2),
        refit=False,
    ).fit(X, y, groups=X["user_id"])
    assert not hasattr(fast, "best_estimator_")
    assert fast.best_params_ in ({"smooth__window": 1}, {"smooth__window": 3})
    with pytest.raises(NotFittedError, match="refit=False"):
        fast.predict(X)


def test_bad_grids_are_refused_before_any_training(noisy, count_training):
    X, y = noisy
    pipeline = build_pipeline(**TRAIN)
    with pytest.raises(InvalidParameterError, match="smoothing__window"):
        PostprocessingSearchCV(
            pipeline, {"smoothing__window": [3]}, scoring="accuracy", cv=GroupKFold(2)
        ).fit(X, y, groups=X["user_id"])
    with pytest.raises(ValueError, match="memory"):
        PostprocessingSearchCV(
            pipeline, {"memory": [None]}, scoring="accuracy", cv=GroupKFold(2)
        ).fit(X, y, groups=X["user_id"])
    with pytest.raises(InvalidParameterError, match="Pipeline"):
        PostprocessingSearchCV(MajoritySmoother(), {"window": [1]}).fit(X, y)
    with pytest.raises(InvalidParameterError, match="one metric"):
        PostprocessingSearchCV(pipeline, GRID, scoring=["accuracy"]).fit(X, y)
    assert count_training == []
    with pytest.raises(InvalidParameterError, match="multi-metric"):
        PostprocessingSearchCV(
            pipeline, {"smooth__window": [1]}, scoring=make_summary_scorer(), cv=GroupKFold(2)
        ).fit(X, y, groups=X["user_id"])


def test_bad_grid_values_are_refused_before_any_training(noisy, count_training):
    X, y = noisy
    search = PostprocessingSearchCV(
        build_pipeline(**TRAIN), {"smooth__window": [0]}, scoring="accuracy", cv=GroupKFold(2)
    )
    with pytest.raises(InvalidParameterError, match="window"):
        search.fit(X, y, groups=X["user_id"])
    assert count_training == []


def test_taskclf_scorer_names_are_accepted(booster_v1, encoders_v1, frame_v1):
    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    pipeline = build_pipeline(booster_v1, encoders_v1)
    grid = {"smooth__window": [1, 9]}
    by_name = PostprocessingSearchCV(pipeline, grid, scoring="segmental_f1@50", cv=GroupKFold(3))
    by_name.fit(X, y, groups=X["user_id"])
    scorer = get_scorer("segmental_f1@50")
    by_object = PostprocessingSearchCV(pipeline, grid, scoring=scorer, cv=GroupKFold(3))
    by_object.fit(X, y, groups=X["user_id"])
    assert (
        by_name.cv_results_["mean_test_score"] == by_object.cv_results_["mean_test_score"]
    ).all()
    assert repr(by_name.scorer_) == repr(scorer)


def test_search_parameters_clone():
    from sklearn.base import clone

    search = PostprocessingSearchCV(build_pipeline(**TRAIN), GRID, scoring="accuracy", cv=3)
    copy = clone(search)
    assert copy.get_params()["cv"] == 3
    assert copy.get_params()["param_grid"] == GRID
    copy.set_params(estimator__reject__threshold=0.3)
    assert copy.estimator.named_steps["reject"].threshold == 0.3
    assert search.estimator.named_steps["reject"].threshold is None


def test_default_score_is_the_accuracy_of_final_labels(booster_v1, encoders_v1, frame_v1):
    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.9)
    assert pipeline.score(X, y) == accuracy_score(y, pipeline.predict(X))
    assert 0.0 < pipeline.score(X, y) < 1.0


# Bad searches (contract: refused before any work, naming the problem)


def _search(**kwargs):
    params = {
        "param_grid": {"reject__threshold": [0.3, 0.6]},
        "scoring": "accuracy",
        "cv": GroupKFold(2),
        **kwargs,
    }
    pipeline = build_pipeline(num_boost_round=2, num_threads=1, n_folds=2)
    return PostprocessingSearchCV(pipeline, **params)


TUNING_CASES = {
    "a threshold above 1": (
        {"param_grid": {"reject__threshold": [0.5, 1.5]}},
        InvalidParameterError,
        ("threshold", "1.5"),
    ),
    "a window of 0": (
        {"param_grid": {"smooth__window": [3, 0]}},
        InvalidParameterError,
        ("window", "0"),
    ),
    "a step that does not exist": (
        {"param_grid": {"rejekt__threshold": [0.5]}},
        InvalidParameterError,
        ("'rejekt__threshold'", "steps are"),
    ),
    "an empty grid": (
        {"param_grid": {"reject__threshold": []}},
        InvalidParameterError,
        ("param_grid", "reject__threshold"),
    ),
    "an unknown scorer": (
        {"scoring": "segmental_f1@99"},
        InvalidParameterError,
        ("'segmental_f1@99'", "segmental_f1@50"),
    ),
}


@pytest.mark.parametrize(("kwargs", "error", "words"), TUNING_CASES.values(), ids=TUNING_CASES)
def test_tuning_refuses_bad_searches_before_any_work(kwargs, error, words, labelled_frame):
    frame, y = labelled_frame.drop(columns="label"), labelled_frame["label"]
    refused(lambda: _search(**kwargs).fit(frame, y, groups=frame["user_id"]), error, *words)


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
    refused(lambda: _search().fit(bad, y, groups=bad["user_id"]), error, *words)
