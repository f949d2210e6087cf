"""taskclf: task-type labels and time segments from per-minute activity features.

The batch-inference stages are scikit-learn transformers chained by
:func:`build_pipeline` into one ``sklearn.pipeline.Pipeline``.

The names below are imported on first use, so that ``import taskclf`` (and
``taskclf --help``) does not load scikit-learn and LightGBM.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.5.0"

_HOMES = {
    "taskclf.bundle": ("load_bundle", "read_bundle_info", "save_bundle"),
    "taskclf.bundle_dir": ("export_bundle_dir", "load_bundle_dir"),
    "taskclf.calibration": (
        "CalibratorStore",
        "IdentityCalibrator",
        "IsotonicCalibrator",
        "TemperatureCalibrator",
    ),
    "taskclf.core.types": ("CLASS_ORDER", "LABEL_SET_V1", "MIXED_UNKNOWN", "CoreLabel"),
    "taskclf.pipeline": ("build_pipeline",),
    "taskclf.stages.calibrate": ("Calibrator",),
    "taskclf.stages.encode": ("CategoricalEncoder",),
    "taskclf.stages.merge": ("HysteresisMerger",),
    "taskclf.stages.model": ("BoosterPredictor",),
    "taskclf.stages.reject": ("Rejector",),
    "taskclf.stages.segment": ("Segment", "Segmenter", "frame_to_segments"),
    "taskclf.stages.smooth": ("MajoritySmoother",),
    "taskclf.stages.viterbi": ("ViterbiSmoother",),
    "taskclf.taxonomy": ("TaxonomyConfig", "TaxonomyMapper", "load_taxonomy"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF, key=lambda name: (not name.isupper(), name[0].islower(), name))


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _HOME_OF:
        raise AttributeError(f"module 'taskclf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
