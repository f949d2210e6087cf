"""Assemble the seven stages into one scikit-learn Pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from taskclf._columns import USER_ID
from taskclf.calibration import CalibratorStore
from taskclf.core.defaults import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_IDLE_GAP_SECONDS,
    DEFAULT_SMOOTH_WINDOW,
    MIN_BLOCK_DURATION_SECONDS,
)
from taskclf.exceptions import InvalidParameterError
from taskclf.stages._base import check_params
from taskclf.stages._timeline import shared_timelines
from taskclf.stages.calibrate import Calibrator
from taskclf.stages.encode import CategoricalEncoder
from taskclf.stages.merge import HysteresisMerger
from taskclf.stages.model import DEFAULT_N_FOLDS, DEFAULT_NUM_BOOST_ROUND, BoosterPredictor
from taskclf.stages.reject import Rejector
from taskclf.stages.segment import Segmenter
from taskclf.stages.smooth import MajoritySmoother
from taskclf.stages.viterbi import ViterbiSmoother
from taskclf.taxonomy import TaxonomyMapper

SMOOTHERS = ("majority", "viterbi")


class TaskPipeline(Pipeline):
    """``sklearn.pipeline.Pipeline`` that checks every step's parameters first.

    A bad value given to ``set_params`` is refused before the model runs;
    the steps of one call share the timelines they find.
    """

    def _check_steps(self) -> None:
        """Check every step's parameters against its rules."""
        for _, step in self.steps:
            if hasattr(type(step), "_parameter_rules"):
                check_params(step)

    def _run(self, method: str, *args: Any, **params: Any) -> Any:
        self._check_steps()
        with shared_timelines():
            return getattr(super(), method)(*args, **params)

    def fit(self, X: Any, y: Any = None, **params: Any) -> TaskPipeline:
        """``Pipeline.fit``, parameters checked first."""
        return self._run("fit", X, y, **params)

    def fit_transform(self, X: Any, y: Any = None, **params: Any) -> Any:
        """``Pipeline.fit_transform``, parameters checked first."""
        return self._run("fit_transform", X, y, **params)

    def transform(self, X: Any, **params: Any) -> Any:
        """``Pipeline.transform``, parameters checked first."""
        return self._run("transform", X, **params)

    def predict(self, X: Any, **params: Any) -> Any:
        """``Pipeline.predict``, parameters checked first."""
        return self._run("predict", X, **params)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None, **params: Any) -> float:
        """``Pipeline.score``, parameters checked first."""
        return self._run("score", X, y, sample_weight=sample_weight, **params)


def build_pipeline(
    booster: Any = None,
    cat_encoders: Mapping[str, Any] | None = None,
    *,
    reject_threshold: float | None = None,
    smooth_window: int = DEFAULT_SMOOTH_WINDOW,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
    calibrator: Any = None,
    calibrator_store: CalibratorStore | None = None,
    taxonomy: Any = None,
    schema_version: str | None = None,
    booster_params: Mapping[str, Any] | None = None,
    num_boost_round: int = DEFAULT_NUM_BOOST_ROUND,
    class_weight: Any = "balanced",
    n_folds: int = DEFAULT_N_FOLDS,
    calibration: str | None = None,
    per_user_calibration: bool = False,
    smoother: str = "majority",
    timelines: str = "per_user",
    random_state: int | None = 0,
    num_threads: int | None = None,
    backend: str = "lightgbm",
    memory: Any = None,
) -> Pipeline:
    """The batch-inference pipeline: around a trained booster, or to be fitted.

    With ``booster`` the pipeline predicts without ``fit`` (the given booster, vocabulary
    and calibration maps are stages in :class:`sklearn.frozen.FrozenEstimator`); without
    it, ``pipeline.fit(df, y)`` trains them (docs/tuning.md).

    Parameters
    ----------
    booster : lightgbm.Booster, optional
        Trained multiclass booster (eight classes in class order).
    cat_encoders : dict, optional
        Column → fitted ``LabelEncoder`` (or value list): the booster's
        vocabulary (``user_id``'s goes to the model stage); omitted, ``fit`` learns it.
    calibrator, calibrator_store : calibration map, CalibratorStore, optional
        Global and per-user calibration (frozen; win over ``calibration``).
    taxonomy : TaxonomyConfig, optional
        Adds a ``taxonomy`` step mapping core labels to user buckets.
    reject_threshold, smooth_window, bucket_seconds, min_block_seconds, max_gap_seconds
        The stages' parameters (docs/contract.md lists the defaults).
    schema_version, booster_params, num_boost_round, class_weight, n_folds, num_threads, backend
        :class:`~taskclf.BoosterPredictor`'s parameters (``params``: LightGBM's).
    calibration : {"identity", "temperature", "isotonic"}, optional
        What ``fit`` learns in ``calibrate``: by default ``"temperature"`` when the
        pipeline trains its booster, else ``"identity"`` (it predicts without ``fit``).
    per_user_calibration : bool, default False
        Also fit one calibration map per user with enough labelled data.
    smoother : {"majority", "viterbi"}, default "majority"
        :class:`~taskclf.MajoritySmoother` or :class:`~taskclf.ViterbiSmoother`.
    timelines : {"per_user", "as_given"}, default "per_user"
        See docs/contract.md (Timelines).
    random_state : int, default 0
        Seed of training and of unknown-value masking.
    memory : str or joblib.Memory, optional
        ``Pipeline(memory=...)``: a grid search over later steps then trains
        the booster once per fold.

    Returns
    -------
    TaskPipeline
        Steps ``encode``, ``predict``, ``calibrate``, ``reject``,
        ``smooth``, ``segment``, ``merge`` (and ``taxonomy``).

    Examples
    --------
    >>> pipeline = build_pipeline(num_boost_round=20, reject_threshold=0.5)
    >>> pipeline.get_params()["calibrate__method"]
    'temperature'
    >>> [name for name, _ in pipeline.steps][:3]
    ['encode', 'predict', 'calibrate']
    """
    if smoother not in SMOOTHERS:
        raise InvalidParameterError(f"smoother must be one of {list(SMOOTHERS)}, got {smoother!r}")
    if calibration is None:
        calibration = "identity" if booster is not None else "temperature"
    encode: Any = CategoricalEncoder(schema_version, random_state=random_state)
    if cat_encoders is not None:
        encode = FrozenEstimator(CategoricalEncoder.from_vocabulary(cat_encoders, schema_version))
    predict: Any = BoosterPredictor(
        schema_version,
        params=booster_params,
        num_boost_round=num_boost_round,
        class_weight=class_weight,
        n_folds=n_folds,
        random_state=random_state,
        num_threads=num_threads,
        backend=backend,
    )
    if booster is not None:
        users = (cat_encoders or {}).get(USER_ID)
        predict = FrozenEstimator(
            BoosterPredictor.from_booster(
                booster, schema_version, user_vocabulary=users, backend=backend
            )
        )
    calibrate: Any = Calibrator(calibration, per_user=per_user_calibration)
    if calibrator is not None or calibrator_store is not None:
        calibrate = FrozenEstimator(Calibrator.from_maps(calibrator, calibrator_store))
    smooth: Any = (
        MajoritySmoother(smooth_window, max_gap_seconds, timelines)
        if smoother == "majority"
        else ViterbiSmoother(max_gap_seconds=max_gap_seconds, timelines=timelines)
    )
    steps: list[tuple[str, Any]] = [
        ("encode", encode),
        ("predict", predict),
        ("calibrate", calibrate),
        ("reject", Rejector(reject_threshold)),
        ("smooth", smooth),
        ("segment", Segmenter(max_gap_seconds, timelines)),
        ("merge", HysteresisMerger(min_block_seconds, bucket_seconds, max_gap_seconds, timelines)),
    ]
    if taxonomy is not None:
        steps.append(("taxonomy", TaxonomyMapper(taxonomy)))
    return TaskPipeline(steps, memory=memory)


FROZEN_STEPS = ("encode", "predict", "calibrate")  # the fitted steps freeze() keeps


def freeze(pipeline: Pipeline) -> Pipeline:
    """A copy of fitted ``pipeline`` whose ``encode``, ``predict`` and ``calibrate`` never refit.

    Those steps are wrapped in :class:`sklearn.frozen.FrozenEstimator` and the later
    ones cloned, so that cross-validation tunes a trained model (or a loaded bundle)
    without retraining it.
    """
    steps = [
        (name, FrozenEstimator(stage) if name in FROZEN_STEPS else clone(stage))
        for name, stage in pipeline.steps
    ]
    return TaskPipeline(steps)
