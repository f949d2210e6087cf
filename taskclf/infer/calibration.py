"""Calibration maps of the functional API (re-exported)."""

from taskclf.calibration import (
    CalibrationMap,
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
    load_calibrator,
    load_calibrator_store,
    save_calibrator,
    save_calibrator_store,
)

Calibrator = CalibrationMap
"""The protocol every calibration map follows: ``calibrate(proba) -> proba``."""

__all__ = [
    "CalibrationMap",
    "Calibrator",
    "CalibratorStore",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "TemperatureCalibrator",
    "load_calibrator",
    "load_calibrator_store",
    "save_calibrator",
    "save_calibrator_store",
]
