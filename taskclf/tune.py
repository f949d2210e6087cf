"""Fast grid search over the post-processing steps of a pipeline, and honest tuning.

:class:`PostprocessingSearchCV` gives GridSearchCV's results, fitting the
model once per fold; :func:`training_overlap` finds rows a model was trained on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import ParameterGrid, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import check_is_fitted, indexable

from taskclf._columns import LABEL, USER_ID
from taskclf._progress import step
from taskclf.core.time import NS_PER_DAY, timestamps_ns
from taskclf.exceptions import InvalidParameterError, NotFittedError
from taskclf.pipeline import TaskPipeline

__all__ = ["PostprocessingSearchCV", "day_fingerprints", "training_overlap"]


def _cv_results(
    candidates: list[dict[str, Any]], scores: np.ndarray, times: np.ndarray
) -> dict[str, Any]:
    """GridSearchCV's ``cv_results_``: same keys, order, dtypes and arithmetic."""
    results: dict[str, Any] = {}
    for key, array in (("fit_time", times[0]), ("score_time", times[1])):
        results[f"mean_{key}"], results[f"std_{key}"] = array.mean(axis=1), array.std(axis=1)
    for name in dict.fromkeys(name for params in candidates for name in params):
        column: np.ma.MaskedArray = np.ma.masked_all(len(candidates), dtype=object)
        for i, params in enumerate(candidates):
            if name in params:
                column[i] = params[name]
        results[f"param_{name}"] = column
    results["params"] = candidates
    for s in range(scores.shape[1]):
        results[f"split{s}_test_score"] = scores[:, s]
    results["mean_test_score"], results["std_test_score"] = scores.mean(axis=1), scores.std(axis=1)
    means = results["mean_test_score"]
    if np.isnan(means).all():
        results["rank_test_score"] = np.ones(len(means), dtype=np.int32)
    else:  # NaN scores rank with the worst
        filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
        results["rank_test_score"] = rankdata(-filled, method="min").astype(np.int32)
    return results


class PostprocessingSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Grid search over the later steps of a pipeline, fitting the model once per fold.

    Same interface and results as ``sklearn.model_selection.GridSearchCV``
    on a :class:`~sklearn.pipeline.Pipeline`. The steps before the first
    one the grid touches (the model, calibration) are fitted once per fold;
    each candidate fits the remaining steps on their output and is scored
    by ``scoring(remaining_steps, Xt_test, y_test)``, which equals
    GridSearchCV's score of the whole (deterministic) pipeline.

    Parameters
    ----------
    estimator : sklearn.pipeline.Pipeline
    param_grid, cv, refit
        As GridSearchCV's.
    scoring : str or callable, optional
        One metric: a scikit-learn or taskclf scorer name
        (:data:`taskclf.metrics.SCORERS`) or a callable
        ``scorer(estimator, X, y) -> float``; ``None``: the pipeline's ``score``.

    Attributes
    ----------
    cv_results_, best_index_, best_score_, best_params_, best_estimator_, n_splits_
        As GridSearchCV's (``mean_fit_time`` times the remaining steps only);
        also ``scorer_`` and ``refit_time_``.
    split_step_ : str
        The first swept step; the steps before it were fitted once per fold.
    prefix_fit_times_ : ndarray
        Seconds spent fitting the steps before it, per fold.

    Examples
    --------
    >>> from sklearn.model_selection import GroupKFold
    >>> from taskclf import build_pipeline
    >>> grid = {"reject__threshold": [0.3, 0.5], "smooth__window": [1, 3]}
    >>> search = PostprocessingSearchCV(build_pipeline(), grid, cv=GroupKFold(3))
    >>> sorted(search.get_params()["param_grid"])
    ['reject__threshold', 'smooth__window']
    """

    def __init__(
        self,
        estimator: Pipeline,
        param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
        *,
        scoring: Any = None,
        cv: Any = None,
        refit: bool = True,
    ) -> None:
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.cv = cv
        self.refit = refit

    def _candidates(self) -> tuple[list[dict[str, Any]], int]:
        """The grid's candidates and the index of the first step any of them changes."""
        if not isinstance(self.estimator, Pipeline):
            raise InvalidParameterError(
                "PostprocessingSearchCV tunes a sklearn Pipeline, got "
                f"{type(self.estimator).__name__}"
            )
        try:
            candidates = list(ParameterGrid(self.param_grid))
        except (TypeError, ValueError) as exc:  # scikit-learn's words on a malformed grid
            raise InvalidParameterError(f"param_grid: {exc}") from None
        if not candidates:
            raise InvalidParameterError("param_grid gives no candidate")
        names = [name for name, _ in self.estimator.steps]
        swept = {key.split("__", 1)[0]: key for params in candidates for key in params}
        for name, key in swept.items():
            if name not in names:
                raise InvalidParameterError(
                    f"parameter {key!r} names no step of the pipeline; steps are {names}"
                )
        # The last step is always refitted per candidate: it is what predicts.
        first = min([names.index(name) for name in swept] + [len(names) - 1])
        for params in candidates:  # bad values are refused before any work
            TaskPipeline(self._candidate(params).steps)._check_steps()
        return candidates, first

    def _scorer(self) -> Any:
        scoring = self.scoring
        if not (scoring is None or isinstance(scoring, str) or callable(scoring)):
            raise InvalidParameterError(
                f"scoring must be one metric (a name or a callable), got {scoring!r}"
            )
        if isinstance(scoring, str) and scoring not in get_scorer_names():
            from taskclf.metrics import SCORERS, get_scorer

            if scoring not in SCORERS:
                raise InvalidParameterError(
                    f"scoring {scoring!r} is neither a taskclf scorer ({', '.join(SCORERS)}) "
                    "nor a scikit-learn scorer name (sklearn.metrics.get_scorer_names())"
                )
            return get_scorer(scoring)
        try:
            return check_scoring(self.estimator, scoring)
        except TypeError as exc:  # no scoring, and the pipeline has no score method
            raise InvalidParameterError(f"scoring is needed: {exc}") from None

    def _candidate(self, params: Mapping[str, Any]) -> Pipeline:
        pipeline: Pipeline = clone(self.estimator)
        return pipeline.set_params(**clone(dict(params), safe=False))

    def fit(self, X: Any, y: Any = None, groups: Any = None) -> PostprocessingSearchCV:
        """Score every candidate on every fold (``groups`` for group-aware splitters)."""
        candidates, split = self._candidates()
        scorer = self._scorer()
        X, y, groups = indexable(X, y, groups)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        folds = list(cv.split(X, y, groups))
        scores = np.empty((len(candidates), len(folds)))
        times = np.empty((2, *scores.shape))  # fitting, scoring
        self.prefix_fit_times_ = np.zeros(len(folds))
        with step("tuning", scores.size) as advance:
            for s, (train, test) in enumerate(folds):
                X_train, y_train = _safe_indexing(X, train), _safe_indexing(y, train)
                X_test, y_test = _safe_indexing(X, test), _safe_indexing(y, test)
                if split:  # fitted once per fold; its outputs feed every candidate
                    started = time.perf_counter()
                    prefix = Pipeline(clone(self.estimator.steps[:split], safe=False))
                    X_train = prefix.fit_transform(X_train, y_train)
                    X_test = prefix.transform(X_test)
                    self.prefix_fit_times_[s] = time.perf_counter() - started
                for c, params in enumerate(candidates):
                    started = time.perf_counter()
                    tail = TaskPipeline(self._candidate(params).steps[split:]).fit(X_train, y_train)
                    fitted = time.perf_counter()
                    score = scorer(tail, X_test, y_test)
                    if not isinstance(score, (int, float, np.number)):
                        raise InvalidParameterError(
                            f"scoring must give one number per call, got {type(score).__name__}"
                            "; multi-metric scoring is not supported"
                        )
                    scores[c, s] = score
                    times[:, c, s] = fitted - started, time.perf_counter() - fitted
                    advance(1)

        self.cv_results_ = _cv_results(candidates, scores, times)
        self.best_index_ = int(self.cv_results_["rank_test_score"].argmin())
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.best_params_ = candidates[self.best_index_]
        self.n_splits_ = len(folds)
        self.scorer_ = scorer
        self.multimetric_ = False
        self.split_step_ = self.estimator.steps[split][0]
        if self.refit:
            started = time.perf_counter()
            self.best_estimator_ = self._candidate(self.best_params_).fit(X, y)
            self.refit_time_ = time.perf_counter() - started
        return self

    def _best(self) -> Pipeline:
        check_is_fitted(self, "cv_results_")
        if not self.refit:
            raise NotFittedError(
                "PostprocessingSearchCV(refit=False) keeps no best_estimator_ to use"
            )
        return self.best_estimator_

    def predict(self, X: Any) -> Any:
        """``best_estimator_.predict(X)``."""
        return self._best().predict(X)

    def transform(self, X: Any) -> Any:
        """``best_estimator_.transform(X)``."""
        return self._best().transform(X)

    def score(self, X: Any, y: Any = None) -> float:
        """The scorer's value of ``best_estimator_`` on ``X, y``."""
        return float(self.scorer_(self._best(), X, y))


def day_fingerprints(X: pd.DataFrame) -> dict[str, tuple[Any, str]]:
    """A digest of each user's rows of each UTC day → ``(user_id, "YYYY-MM-DD")``.

    The digest covers the day's rows in any order and their columns but
    ``label`` (by name). Recorded at training, the digests let
    :func:`training_overlap` find the rows a search should not score.
    """
    frame = X.drop(columns=[LABEL], errors="ignore")
    frame = frame[sorted(frame.columns, key=str)]
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    users = frame[USER_ID].astype(str).to_numpy() if USER_ID in frame else np.full(len(frame), "")
    days = timestamps_ns(frame) // NS_PER_DAY
    digests: dict[str, tuple[Any, str]] = {}
    groups: dict[Any, Any] = pd.Series(rows).groupby([users, days]).indices
    for (user, day), positions in groups.items():
        digest = hashlib.sha256(np.sort(rows[positions]).tobytes()).hexdigest()[:16]
        digests[digest] = (user, str(pd.Timestamp(int(day) * NS_PER_DAY, tz="UTC").date()))
    return digests


def training_overlap(training_days: Iterable[str] | None, X: pd.DataFrame) -> list[tuple[Any, str]]:
    """The sorted ``(user_id, "YYYY-MM-DD")`` groups of ``X`` whose digest is in
    ``training_days`` (:func:`day_fingerprints` of the training rows)."""
    recorded = set(training_days or ())
    return sorted(where for digest, where in day_fingerprints(X).items() if digest in recorded)
