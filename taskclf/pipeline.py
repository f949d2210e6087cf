"""Assemble the seven stages into one scikit-learn Pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sklearn.pipeline import Pipeline

from taskclf.calibration import Calibrator, CalibratorStore
from taskclf.core.defaults import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_MAX_GAP_SECONDS,
    DEFAULT_SMOOTH_WINDOW,
    MIN_BLOCK_DURATION_SECONDS,
)
from taskclf.encode import CategoricalEncoder, vocabulary_of
from taskclf.merge import HysteresisMerger
from taskclf.predict import BoosterPredictor
from taskclf.reject import Rejector
from taskclf.segment import Segmenter
from taskclf.smooth import MajoritySmoother
from taskclf.taxonomy import TaxonomyMapper

STEP_NAMES = ("encode", "predict", "calibrate", "reject", "smooth", "segment", "merge")
"""Names of the pipeline steps, in order (plus ``taxonomy`` when mapped)."""


def build_pipeline(
    booster: Any,
    cat_encoders: Mapping[str, Any] | None = None,
    *,
    reject_threshold: float | None = None,
    smooth_window: int = DEFAULT_SMOOTH_WINDOW,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
    min_block_seconds: int = MIN_BLOCK_DURATION_SECONDS,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
    calibrator: Any = None,
    calibrator_store: CalibratorStore | None = None,
    taxonomy: Any = None,
    schema_version: str | None = None,
) -> Pipeline:
    """A ready batch-inference pipeline around a trained LightGBM booster.

    Parameters
    ----------
    booster : lightgbm.Booster
        Trained multiclass booster (eight classes in class order).
    cat_encoders : dict, optional
        Column → fitted ``LabelEncoder`` (or value list): the categorical
        vocabulary the booster was trained with.
    reject_threshold : float or None, default None
        Confidence floor in [0, 1]; ``None`` rejects nothing.
    smooth_window : int, default 3
        Rolling-majority window in buckets.
    bucket_seconds : int, default 60
        Bucket width.
    min_block_seconds : int, default 180
        Hysteresis minimum block duration.
    max_gap_seconds : int, default 300
        Longest gap inside one timeline.
    calibrator : calibration map, optional
        Applied to every row.
    calibrator_store : CalibratorStore, optional
        Per-user calibration, used when the frame has ``user_id``.
    taxonomy : TaxonomyConfig, optional
        Adds a ``taxonomy`` step mapping core labels to user buckets.
    schema_version : str, optional
        The booster's feature schema; guessed from its width when omitted.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``encode``, ``predict``, ``calibrate``, ``reject``,
        ``smooth``, ``segment``, ``merge`` (and ``taxonomy``).
        ``predict(df)`` gives the final label of each row in input order;
        ``transform(df)`` the frame annotated by every stage.
    """
    vocabulary = (
        None
        if cat_encoders is None
        else {column: vocabulary_of(enc) for column, enc in cat_encoders.items()}
    )
    steps: list[tuple[str, Any]] = [
        ("encode", CategoricalEncoder(vocabulary, schema_version=schema_version)),
        ("predict", BoosterPredictor(booster, schema_version=schema_version)),
        ("calibrate", Calibrator(calibrator, calibrator_store)),
        ("reject", Rejector(reject_threshold)),
        ("smooth", MajoritySmoother(smooth_window, max_gap_seconds)),
        ("segment", Segmenter(bucket_seconds, max_gap_seconds)),
        ("merge", HysteresisMerger(min_block_seconds, bucket_seconds, max_gap_seconds)),
    ]
    if taxonomy is not None:
        steps.append(("taxonomy", TaxonomyMapper(taxonomy)))
    return Pipeline(steps)
