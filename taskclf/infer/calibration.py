"""Calibration maps of the functional API (re-exported)."""

from taskclf.calibration import (
    CalibrationMap,
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
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
]
