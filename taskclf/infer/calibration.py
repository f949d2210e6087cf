"""Calibration maps of the functional API (re-exported, the names of taskclf 0.4)."""

from typing import Protocol, runtime_checkable

import numpy as np

from taskclf.calibration import CalibratorStore as CalibratorStore
from taskclf.calibration import IdentityCalibrator as IdentityCalibrator
from taskclf.calibration import IsotonicCalibrator as IsotonicCalibrator
from taskclf.calibration import TemperatureCalibrator as TemperatureCalibrator
from taskclf.calibration import load_calibrator as load_calibrator
from taskclf.calibration import load_calibrator_store as load_calibrator_store
from taskclf.calibration import save_calibrator as save_calibrator
from taskclf.calibration import save_calibrator_store as save_calibrator_store


@runtime_checkable
class Calibrator(Protocol):
    """The protocol every calibration map follows: ``calibrate(proba) -> proba``."""

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray: ...
