"""Batch inference, the functional API of taskclf 0.4, composed of the pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import LabelEncoder

from taskclf._columns import CONFIDENCE, IS_REJECTED, PROBA_COLUMNS, RAW_LABEL, SMOOTHED_LABEL
from taskclf._frame import check_frame
from taskclf._readers import read_segments_json, write_predictions_csv, write_segments_json
from taskclf.calibration import CalibratorStore
from taskclf.core.defaults import DEFAULT_BUCKET_SECONDS, DEFAULT_SMOOTH_WINDOW
from taskclf.core.schema import get_schema, resolve_schema_version
from taskclf.core.types import MIXED_UNKNOWN
from taskclf.pipeline import build_pipeline
from taskclf.stages.reject import Rejector, reject_codes
from taskclf.stages.segment import Segment, frame_to_segments
from taskclf.taxonomy import TaxonomyResolver

__all__ = [
    "BatchInferenceResult",
    "predict_labels",
    "predict_proba",
    "read_segments_json",
    "run_batch_inference",
    "write_predictions_csv",
    "write_segments_json",
]


@dataclass(frozen=True, slots=True)
class BatchInferenceResult:
    """What :func:`run_batch_inference` returns, per row unless said.

    Attributes
    ----------
    raw_labels, smoothed_labels : list of str
        Label before (``Mixed/Unknown`` if rejected) and after smoothing.
    segments : list of Segment
        Hysteresis-merged segments, by user and time.
    confidences, core_probs : ndarray
        Maximum calibrated probability; calibrated probabilities, shape (n, 8).
    mapped_labels, mapped_probs : list of str, list of dict, or None
        Taxonomy bucket and bucket probabilities, when a taxonomy was given.
    """

    raw_labels: list[str]
    smoothed_labels: list[str]
    segments: list[Segment]
    confidences: np.ndarray
    is_rejected: np.ndarray
    core_probs: np.ndarray
    mapped_labels: list[str] | None = None
    mapped_probs: list[dict[str, float]] | None = None


def _vocabulary(
    features_df: pd.DataFrame, cat_encoders: dict[str, LabelEncoder] | None, version: str
) -> dict[str, Any]:
    """The encoders, or each categorical column's own values."""
    if cat_encoders is not None:
        return cat_encoders
    columns = [c for c in get_schema(version).categorical_columns if c in features_df]
    return {c: pd.unique(features_df[c].dropna()) for c in columns}


def predict_proba(
    model: Any,
    features_df: pd.DataFrame,
    cat_encoders: dict[str, LabelEncoder] | None = None,
    *,
    schema_version: str | None = None,
) -> np.ndarray:
    """Raw class probabilities of each row of ``features_df``.

    Parameters
    ----------
    model : lightgbm.Booster
    cat_encoders : dict of str to LabelEncoder, optional
        Fitted encoders of the categorical columns (default: each column's own values).
    schema_version : str, optional
        ``"v1"``, ``"v2"`` or ``"v3"``; resolved from the frame when omitted.

    Returns
    -------
    ndarray, shape (n, 8)
    """
    check_frame(features_df, "predict_proba")
    version = resolve_schema_version(features_df, schema_version)
    vocabulary = _vocabulary(features_df, cat_encoders, version)
    stages = build_pipeline(model, vocabulary, schema_version=version).named_steps
    return stages["predict"].predict_proba(stages["encode"].transform(features_df))


def predict_labels(
    model: Any,
    features_df: pd.DataFrame,
    label_encoder: LabelEncoder,
    cat_encoders: dict[str, LabelEncoder] | None = None,
    *,
    reject_threshold: float | None = None,
    schema_version: str | None = None,
) -> list[str]:
    """Predicted label of each row; ``Mixed/Unknown`` below ``reject_threshold``.

    Parameters
    ----------
    model, features_df, cat_encoders, schema_version
        As for :func:`predict_proba`.
    label_encoder : LabelEncoder
        Encoder fitted on the label vocabulary (class index → name).
    reject_threshold : float, optional
        Rows whose maximum probability is below it become ``Mixed/Unknown``.
    """
    threshold = Rejector(reject_threshold).fit(features_df).threshold
    proba = predict_proba(model, features_df, cat_encoders, schema_version=schema_version)
    _, rejected, _ = reject_codes(proba, threshold)
    names = np.asarray(label_encoder.inverse_transform(proba.argmax(axis=1)), dtype=object)
    names[rejected] = MIXED_UNKNOWN
    return [str(v) for v in names]


def run_batch_inference(
    model: Any,
    features_df: pd.DataFrame,
    *,
    cat_encoders: dict[str, LabelEncoder] | None = None,
    smooth_window: int = DEFAULT_SMOOTH_WINDOW,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
    reject_threshold: float | None = None,
    taxonomy: Any = None,
    calibrator: Any = None,
    calibrator_store: CalibratorStore | None = None,
    schema_version: str | None = None,
    timelines: str = "per_user",
) -> BatchInferenceResult:
    """Predict, calibrate, reject, smooth, segment and merge in one call.

    Runs the stages of :func:`taskclf.build_pipeline` on ``features_df`` (timelines:
    docs/contract.md); per-row results come back in input order.

    Parameters
    ----------
    model, cat_encoders, schema_version
        As for :func:`predict_proba`.
    features_df : DataFrame
        Feature columns of the schema and ``bucket_start_ts``.
    smooth_window, bucket_seconds, reject_threshold
        As for :func:`taskclf.build_pipeline`.
    taxonomy : TaxonomyConfig, optional
        Fills ``mapped_labels`` and ``mapped_probs``.
    calibrator, calibrator_store : calibration map, CalibratorStore, optional
        Applied before rejection; the store's per-user maps win when the frame has ``user_id``.
    timelines : {"per_user", "as_given"}, default "per_user"
        ``"as_given"`` treats the frame as one sequence in the order given,
        which reproduces taskclf 0.4's results on any frame.
    """
    check_frame(features_df, "run_batch_inference")
    resolver = None if taxonomy is None else TaxonomyResolver(taxonomy)  # refused before work
    version = resolve_schema_version(features_df, schema_version)
    pipeline = build_pipeline(
        model,
        _vocabulary(features_df, cat_encoders, version),
        reject_threshold=reject_threshold,
        smooth_window=smooth_window,
        bucket_seconds=bucket_seconds,
        calibrator=calibrator,
        calibrator_store=calibrator_store,
        schema_version=version,
        timelines=timelines,
    )
    pipeline.set_params(merge__join_equal=False)  # 0.4's segments, as they were
    frame = pipeline.transform(features_df)
    proba = frame[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
    is_rejected = frame[IS_REJECTED].to_numpy(dtype=bool)
    mapped = None
    if resolver is not None:
        mapped = resolver.resolve_batch(proba.argmax(axis=1), proba, is_rejected=is_rejected)
    return BatchInferenceResult(
        raw_labels=frame[RAW_LABEL].astype(object).tolist(),
        smoothed_labels=frame[SMOOTHED_LABEL].astype(object).tolist(),
        segments=frame_to_segments(frame, bucket_seconds=bucket_seconds, timelines=timelines),
        confidences=frame[CONFIDENCE].to_numpy(dtype=np.float64),
        is_rejected=is_rejected,
        core_probs=proba,
        mapped_labels=None if mapped is None else [r.mapped_label for r in mapped],
        mapped_probs=None if mapped is None else [r.mapped_probs for r in mapped],
    )
