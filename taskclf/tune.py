"""Fast grid search over the post-processing steps of a pipeline.

:class:`PostprocessingSearchCV` searches the same grid as
``sklearn.model_selection.GridSearchCV`` and reports the same scores, but
fits the steps before the first swept one (encoding, the model,
calibration) once per fold instead of once per candidate and fold.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import ParameterGrid, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted, indexable

from taskclf._columns import USER_ID
from taskclf._progress import step
from taskclf.core.time import timestamps_ns
from taskclf.exceptions import InvalidParameterError, NotFittedError
from taskclf.pipeline import TaskPipeline

__all__ = ["PostprocessingSearchCV", "day_fingerprints", "training_overlap"]

NS_PER_DAY = 86_400 * 1_000_000_000


def _take(data: Any, rows: np.ndarray) -> Any:
    if data is None:
        return None
    if isinstance(data, (pd.DataFrame, pd.Series)):
        return data.iloc[rows]
    return np.asarray(data)[rows]


def _one_number(score: Any) -> float:
    if not isinstance(score, (int, float, np.number)):
        raise InvalidParameterError(
            f"scoring must give one number per call, got {type(score).__name__}; "
            "multi-metric scoring is not supported"
        )
    return float(score)


def _param_columns(candidates: Sequence[Mapping[str, Any]]) -> dict[str, np.ma.MaskedArray]:
    """``param_<name>`` columns: one masked array per parameter name."""
    names = sorted({name for params in candidates for name in params})
    columns = {}
    for name in names:
        column: np.ma.MaskedArray = np.ma.MaskedArray(
            np.empty(len(candidates), dtype=object), mask=True
        )
        for i, params in enumerate(candidates):
            if name in params:
                column[i] = params[name]
        columns[f"param_{name}"] = column
    return columns


def _rank(means: np.ndarray) -> np.ndarray:
    """Rank 1 for the best mean score; NaN scores rank with the worst."""
    if np.isnan(means).all():
        return np.ones(len(means), dtype=np.int32)
    filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
    return np.asarray(rankdata(-filled, method="min"), dtype=np.int32)


class PostprocessingSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Grid search over the later steps of a pipeline, fitting the model once per fold.

    Same interface and results as ``sklearn.model_selection.GridSearchCV``
    for a :class:`~sklearn.pipeline.Pipeline` (for instance one made by
    :func:`taskclf.build_pipeline`). Whatever comes before the first step
    the grid touches (encoding, the booster, calibration when the grid
    sweeps ``reject__threshold`` and ``smooth__window``) is fitted once per
    fold; each candidate then fits and scores only the remaining steps on
    the first steps' output frames, which keep every input column. Every
    candidate is scored by ``scoring(remaining_steps, Xt_test, y_test)``,
    which equals GridSearchCV's score of the whole pipeline exactly (given
    a deterministic model, as :class:`~taskclf.BoosterPredictor` is).

    Parameters
    ----------
    estimator : sklearn.pipeline.Pipeline
        The pipeline to tune.
    param_grid : dict or list of dict
        Parameter names (``"<step>__<param>"``, or a step name to swap the
        whole step) mapped to lists of values, as for GridSearchCV.
    scoring : str or callable, optional
        One metric: a scikit-learn scorer name, a taskclf scorer name
        (:data:`taskclf.metrics.SCORERS`, e.g. ``"segmental_f1@50"``), or a
        callable ``scorer(estimator, X, y) -> float`` such as
        :func:`taskclf.metrics.get_scorer`'s. ``None`` uses the pipeline's
        ``score``.
    cv : int, cross-validation generator or iterable, optional
        As GridSearchCV's ``cv`` (``None``: 5 folds); pass ``groups`` to
        ``fit`` for group-aware splitters such as ``GroupKFold``.
    refit : bool, default True
        Refit the best candidate on all rows as ``best_estimator_``.

    Attributes
    ----------
    cv_results_ : dict of ndarray
        ``params``, ``param_<name>``, ``split<i>_test_score``,
        ``mean_test_score``, ``std_test_score``, ``rank_test_score``,
        ``mean_fit_time``/``std_fit_time`` (fitting of the remaining
        steps) and ``mean_score_time``/``std_score_time``.
    best_index_ : int
        Candidate with rank 1 (the first of them).
    best_score_ : float
        Its mean test score.
    best_params_ : dict
        Its parameters.
    best_estimator_ : Pipeline
        The pipeline refitted on all rows with ``best_params_`` (``refit``).
    n_splits_ : int
        Number of folds.
    scorer_ : callable
        The scorer used.
    split_step_ : str
        The first swept step; the steps before it were fitted once per fold.
    prefix_fit_times_ : ndarray
        Seconds spent fitting the shared first steps, per fold.
    refit_time_ : float
        Seconds spent refitting the best candidate.

    See Also
    --------
    sklearn.model_selection.GridSearchCV : the general search it matches.

    Examples
    --------
    >>> from sklearn.model_selection import GroupKFold
    >>> from taskclf import build_pipeline
    >>> search = PostprocessingSearchCV(
    ...     build_pipeline(num_boost_round=20),
    ...     {"reject__threshold": [0.3, 0.5], "smooth__window": [1, 3]},
    ...     scoring="accuracy",
    ...     cv=GroupKFold(3),
    ... )
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

    def _split_index(self, candidates: Sequence[Mapping[str, Any]]) -> int:
        """Index of the first step any candidate changes."""
        if not isinstance(self.estimator, Pipeline):
            raise InvalidParameterError(
                "PostprocessingSearchCV tunes a sklearn Pipeline, got "
                f"{type(self.estimator).__name__}"
            )
        names = [name for name, _ in self.estimator.steps]
        first = len(names)
        for params in candidates:
            for key in params:
                step = key.split("__", 1)[0]
                if step not in names:
                    raise InvalidParameterError(
                        f"parameter {key!r} names no step of the pipeline; steps are {names}"
                    )
                first = min(first, names.index(step))
        return first

    def _scorer(self) -> Any:
        if callable(self.scoring):
            return self.scoring
        if isinstance(self.scoring, str):
            from taskclf.metrics import SCORERS, get_scorer

            if self.scoring not in get_scorer_names() and self.scoring in SCORERS:
                return get_scorer(self.scoring)
        if isinstance(self.scoring, str) and self.scoring not in get_scorer_names():
            from taskclf.metrics import SCORERS

            raise InvalidParameterError(
                f"scoring {self.scoring!r} is neither a taskclf scorer ({', '.join(SCORERS)}) "
                "nor a scikit-learn scorer name (sklearn.metrics.get_scorer_names())"
            )
        if self.scoring is None and not hasattr(self.estimator, "score"):
            raise InvalidParameterError(
                "scoring is needed: the pipeline has no score method; pass a taskclf "
                "scorer name such as 'segmental_f1@50', a scikit-learn scorer name or a "
                "callable"
            )
        if self.scoring is None or isinstance(self.scoring, str):
            return check_scoring(self.estimator, self.scoring)
        raise InvalidParameterError(
            f"scoring must be one metric (a name or a callable), got {self.scoring!r}"
        )

    def _candidate(self, params: Mapping[str, Any]) -> Pipeline:
        pipeline: Pipeline = clone(self.estimator)
        return pipeline.set_params(**clone(dict(params), safe=False))

    def fit(self, X: Any, y: Any = None, groups: Any = None) -> PostprocessingSearchCV:
        """Score every candidate on every fold and pick the best.

        Parameters
        ----------
        X : DataFrame
            Feature rows.
        y : array-like of str
            Core label of each row.
        groups : array-like, optional
            Group of each row, for group-aware splitters.

        Returns
        -------
        self
        """
        try:
            candidates = list(ParameterGrid(self.param_grid))
        except (TypeError, ValueError) as exc:  # scikit-learn's words on a malformed grid
            raise InvalidParameterError(f"param_grid: {exc}") from None
        if not candidates:
            raise InvalidParameterError("param_grid gives no candidate")
        # The last step is always refitted per candidate: it is what predicts.
        split = min(self._split_index(candidates), len(self.estimator.steps) - 1)
        for params in candidates:  # refuse bad names or values before any work
            TaskPipeline(self._candidate(params).steps)._check_steps()
        scorer = self._scorer()
        X, y, groups = indexable(X, y, groups)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        folds = list(cv.split(X, y, groups))

        n_candidates, n_splits = len(candidates), len(folds)
        scores = np.empty((n_candidates, n_splits), dtype=np.float64)
        fit_times = np.empty_like(scores)
        score_times = np.empty_like(scores)
        prefix_times = np.zeros(n_splits, dtype=np.float64)
        head = self.estimator.steps[:split]
        with step("tuning", n_candidates * n_splits) as advance:
            for s, (train, test) in enumerate(folds):
                X_train, y_train = _take(X, train), _take(y, train)
                X_test, y_test = _take(X, test), _take(y, test)
                if head:  # fitted once per fold; its outputs feed every candidate
                    started = time.perf_counter()
                    prefix = Pipeline([(name, clone(stage)) for name, stage in head])
                    X_train = prefix.fit_transform(X_train, y_train)
                    X_test = prefix.transform(X_test)
                    prefix_times[s] = time.perf_counter() - started
                for c, params in enumerate(candidates):
                    started = time.perf_counter()
                    tail = TaskPipeline(self._candidate(params).steps[split:])
                    tail.fit(X_train, y_train)
                    fitted = time.perf_counter()
                    scores[c, s] = _one_number(scorer(tail, X_test, y_test))
                    fit_times[c, s] = fitted - started
                    score_times[c, s] = time.perf_counter() - fitted
                    advance(1)

        results: dict[str, Any] = {}
        for key, array in (("fit_time", fit_times), ("score_time", score_times)):
            mean = np.average(array, axis=1)
            results[f"mean_{key}"] = mean
            results[f"std_{key}"] = np.sqrt(np.average((array - mean[:, None]) ** 2, axis=1))
        results.update(_param_columns(candidates))
        results["params"] = candidates
        for s in range(n_splits):
            results[f"split{s}_test_score"] = scores[:, s]
        means = np.average(scores, axis=1)
        results["mean_test_score"] = means
        results["std_test_score"] = np.sqrt(np.average((scores - means[:, None]) ** 2, axis=1))
        results["rank_test_score"] = _rank(means)

        self.cv_results_ = results
        self.best_index_ = int(results["rank_test_score"].argmin())
        self.best_score_ = float(means[self.best_index_])
        self.best_params_ = candidates[self.best_index_]
        self.n_splits_ = n_splits
        self.scorer_ = scorer
        self.multimetric_ = False
        self.split_step_ = self.estimator.steps[split][0]
        self.prefix_fit_times_ = prefix_times
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
    """A digest of each user's rows of each UTC day → ``(user_id, day)``.

    The digest covers the day's rows (every column but the label, in any
    order), so the same rows give the same digest wherever they appear. A
    saved model records them as ``training_days``; :func:`training_overlap`
    compares them with the rows a search is about to score.
    """
    if len(X) == 0:
        return {}
    frame = X.drop(columns=["label"], errors="ignore")
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    users = (
        frame[USER_ID].astype(str).reset_index(drop=True)
        if USER_ID in frame.columns
        else pd.Series("", index=range(len(frame)))
    )
    days = pd.Series(timestamps_ns(frame) // NS_PER_DAY)
    digests: dict[str, tuple[Any, str]] = {}
    groups: dict[Any, Any] = pd.Series(rows).groupby([users, days]).indices
    for key, positions in groups.items():
        user, day = key
        digest = hashlib.sha256(np.sort(rows[positions]).tobytes()).hexdigest()[:16]
        digests[digest] = (user, str(pd.Timestamp(int(day) * NS_PER_DAY, tz="UTC").date()))
    return digests


def training_overlap(training_days: Any, X: pd.DataFrame) -> list[tuple[Any, str]]:
    """The ``(user_id, day)`` groups of ``X`` that the model was trained on."""
    recorded = set(training_days or ())
    return sorted(where for digest, where in day_fingerprints(X).items() if digest in recorded)
