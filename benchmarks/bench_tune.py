"""GridSearchCV vs PostprocessingSearchCV on a 4 x 4 grid with 3 folds.

Run: ``PYTHONPATH=. python benchmarks/bench_tune.py [n_users] [n_days]``.

Sweeps ``reject__threshold`` x ``smooth__window`` (16 candidates) over
``GroupKFold(3)`` by user on a synthetic frame (:mod:`taskclf.synth`),
scoring segmental F1@50, and prints the seconds of GridSearchCV, of
GridSearchCV with ``Pipeline(memory=...)`` caching, and of
PostprocessingSearchCV, the speed-ups, and whether the mean test scores
are equal.
"""

from __future__ import annotations

import sys
import tempfile
import time

from joblib import Memory
from sklearn.model_selection import GridSearchCV, GroupKFold

from taskclf import build_pipeline
from taskclf.metrics import get_scorer
from taskclf.synth import make_activity_frame
from taskclf.tune import PostprocessingSearchCV

GRID = {
    "reject__threshold": [None, 0.3, 0.4, 0.5],
    "smooth__window": [1, 3, 5, 9],
}
TRAIN = {"num_boost_round": 50, "num_threads": 1}


def main() -> None:
    n_users = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    n_days = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    frame = make_activity_frame(n_users=n_users, n_days=n_days, random_state=0)
    X, y = frame.drop(columns="label"), frame["label"]
    groups = X["user_id"]
    search = {"cv": GroupKFold(3), "scoring": get_scorer("segmental_f1@50")}
    print(f"{len(X):,} rows, {n_users} users; 16 candidates x 3 folds; {TRAIN}")

    started = time.perf_counter()
    grid = GridSearchCV(build_pipeline(**TRAIN), GRID, error_score="raise", **search)
    grid.fit(X, y, groups=groups)
    grid_seconds = time.perf_counter() - started
    print(f"GridSearchCV:                     {grid_seconds:8.1f} s")

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        pipeline = build_pipeline(memory=Memory(cache, verbose=0), **TRAIN)
        cached = GridSearchCV(pipeline, GRID, error_score="raise", **search)
        cached.fit(X, y, groups=groups)
        cached_seconds = time.perf_counter() - started
    print(
        f"GridSearchCV, Pipeline(memory):   {cached_seconds:8.1f} s "
        f"({grid_seconds / cached_seconds:.1f}x)"
    )

    started = time.perf_counter()
    fast = PostprocessingSearchCV(build_pipeline(**TRAIN), GRID, **search)
    fast.fit(X, y, groups=groups)
    fast_seconds = time.perf_counter() - started
    print(
        f"PostprocessingSearchCV:           {fast_seconds:8.1f} s "
        f"({grid_seconds / fast_seconds:.1f}x)"
    )

    ours, theirs = fast.cv_results_, grid.cv_results_
    same = (ours["mean_test_score"] == theirs["mean_test_score"]).all()
    same_cached = (cached.cv_results_["mean_test_score"] == theirs["mean_test_score"]).all()
    print(f"speed-up: {grid_seconds / fast_seconds:.1f}x")
    print(f"mean_test_score equal (==): {bool(same)}; with memory: {bool(same_cached)}")
    print(f"best: {fast.best_params_} score {fast.best_score_:.4f}")
    print(f"GridSearchCV best: {grid.best_params_} score {grid.best_score_:.4f}")


if __name__ == "__main__":
    main()
