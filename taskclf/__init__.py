"""taskclf: task-type labels and time segments from per-minute activity features.

The batch-inference stages are scikit-learn transformers chained by
:func:`build_pipeline` into one ``sklearn.pipeline.Pipeline``.
"""

from taskclf.bundle import load_bundle, read_bundle_info, save_bundle
from taskclf.bundle_dir import export_bundle_dir, load_bundle_dir
from taskclf.calibration import (
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
)
from taskclf.core.types import CLASS_ORDER, LABEL_SET_V1, MIXED_UNKNOWN, CoreLabel
from taskclf.pipeline import build_pipeline
from taskclf.stages.calibrate import Calibrator
from taskclf.stages.encode import CategoricalEncoder
from taskclf.stages.merge import HysteresisMerger
from taskclf.stages.model import BoosterPredictor
from taskclf.stages.reject import Rejector
from taskclf.stages.segment import Segment, Segmenter, frame_to_segments
from taskclf.stages.smooth import MajoritySmoother
from taskclf.stages.viterbi import ViterbiSmoother
from taskclf.taxonomy import TaxonomyConfig, TaxonomyMapper, load_taxonomy

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
