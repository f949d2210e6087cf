"""taskclf: task-type labels and time segments from per-minute activity features.

The batch-inference stages are scikit-learn transformers chained by
:func:`build_pipeline` into one ``sklearn.pipeline.Pipeline``.
"""

from taskclf.bundle import load_bundle, read_bundle_info, save_bundle
from taskclf.bundle_dir import export_bundle_dir, load_bundle_dir
from taskclf.calibration import (
    Calibrator,
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
)
from taskclf.core.types import CLASS_ORDER, LABEL_SET_V1, MIXED_UNKNOWN, CoreLabel
from taskclf.encode import CategoricalEncoder
from taskclf.merge import HysteresisMerger
from taskclf.pipeline import build_pipeline
from taskclf.predict import BoosterPredictor
from taskclf.reject import Rejector
from taskclf.segment import Segment, Segmenter, frame_to_segments
from taskclf.smooth import MajoritySmoother
from taskclf.taxonomy import TaxonomyConfig, TaxonomyMapper, load_taxonomy
from taskclf.viterbi import ViterbiSmoother

__version__ = "0.5.0"

__all__ = [
    "CLASS_ORDER",
    "LABEL_SET_V1",
    "MIXED_UNKNOWN",
    "BoosterPredictor",
    "Calibrator",
    "CalibratorStore",
    "CategoricalEncoder",
    "CoreLabel",
    "HysteresisMerger",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "MajoritySmoother",
    "Rejector",
    "Segment",
    "Segmenter",
    "TaxonomyConfig",
    "TaxonomyMapper",
    "TemperatureCalibrator",
    "ViterbiSmoother",
    "build_pipeline",
    "export_bundle_dir",
    "frame_to_segments",
    "load_bundle",
    "load_bundle_dir",
    "load_taxonomy",
    "read_bundle_info",
    "save_bundle",
]
