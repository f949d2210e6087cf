"""Calibration stage: replace the probability columns with calibrated ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import f1_score
from sklearn.utils import Tags

from taskclf._columns import BUCKET_START_TS, PROBA_COLUMNS, USER_ID
from taskclf._folds import check_labels
from taskclf._frame import (
    add_columns,
    check_finite_columns,
    check_frame,
    frame_tags,
    require_columns,
)
from taskclf.calibration import (
    PROBA_FLOOR,
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
    isotonic_regression,
)
from taskclf.core.time import NS_PER_DAY, timestamps_ns
from taskclf.core.types import N_CLASSES
from taskclf.exceptions import InvalidParameterError, NotFittedError
from taskclf.metrics import brier_score, log_loss
from taskclf.stages._base import check_params, instance_of, integer, one_of

TEMPERATURE_BOUNDS = (0.02, 50.0)
"""Search interval of a fitted temperature."""


def fit_temperature(proba: np.ndarray, codes: np.ndarray) -> TemperatureCalibrator:
    """The temperature minimizing the log loss (a bounded search over ``log T``)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    logp = np.log(np.clip(proba, PROBA_FLOOR, None))
    true = logp[np.arange(len(codes)), codes]

    def loss(log_t: float) -> float:
        beta = np.exp(-log_t)
        return float(np.mean(logsumexp(logp * beta, axis=1) - true * beta))

    bounds = tuple(np.log(TEMPERATURE_BOUNDS))
    result = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    return TemperatureCalibrator(float(np.exp(result.x)))


def fit_isotonic(proba: np.ndarray, codes: np.ndarray) -> IsotonicCalibrator:
    """One isotonic regression per class of its one-vs-rest target, bounded to [0, 1]."""
    regressions = [isotonic_regression(proba[:, k], codes == k) for k in range(N_CLASSES)]
    return IsotonicCalibrator(regressions)


_FIT: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
    "identity": lambda proba, codes: IdentityCalibrator(),
    "temperature": fit_temperature,
    "isotonic": fit_isotonic,
}


class Calibrator(TransformerMixin, BaseEstimator):
    """Pipeline stage: replace the probability columns with calibrated ones.

    ``fit(X, y)`` learns a map from the probability columns (in a pipeline,
    the out-of-fold ones of :class:`~taskclf.BoosterPredictor`) and labels;
    maps made elsewhere make a fitted stage through :meth:`from_maps`.

    Parameters
    ----------
    method : {"identity", "temperature", "isotonic"}, default "identity"
        Nothing, a temperature minimizing the log loss, or one isotonic
        regression per class.
    per_user : bool, default False
        Also fit a map per user with at least ``min_user_rows`` labelled
        rows over ``min_user_days`` UTC days and ``min_user_labels`` labels.
    min_user_rows, min_user_days, min_user_labels : int, default 200, 3, 3

    Attributes
    ----------
    calibrator_, store_ : calibration map, CalibratorStore or None
        The global map; the per-user maps, used when the frame has ``user_id``.
    brier_before_, brier_after_, log_loss_before_, log_loss_after_, accuracy_, macro_f1_ : float
        Scores of the fitting rows (in a pipeline: out of fold) before and after
        calibration; accuracy and macro-F1 after. NaN without labels.

    Examples
    --------
    >>> frame = pd.DataFrame([[0.9, 0.1] + [0.0] * 6] * 4, columns=PROBA_COLUMNS)
    >>> stage = Calibrator(method="temperature").fit(frame, ["BreakIdle"] * 3 + ["Build"])
    >>> stage.calibrator_.temperature > 1, stage.log_loss_after_ < stage.log_loss_before_
    (True, True)
    """

    _parameter_rules: ClassVar = {
        "method": one_of(*_FIT),
        "per_user": instance_of(bool, what="True or False"),
        "min_user_rows": integer(1, 2**31),
        "min_user_days": integer(1, 2**31),
        "min_user_labels": integer(1, 2**31),
    }

    def __init__(
        self,
        method: str = "identity",
        *,
        per_user: bool = False,
        min_user_rows: int = 200,
        min_user_days: int = 3,
        min_user_labels: int = 3,
    ) -> None:
        self.method = method
        self.per_user = per_user
        self.min_user_rows = min_user_rows
        self.min_user_days = min_user_days
        self.min_user_labels = min_user_labels

    @classmethod
    def from_maps(cls, calibrator: Any = None, store: CalibratorStore | None = None) -> Calibrator:
        """A fitted stage applying ``calibrator`` (identity when omitted) to every row.

        ``store``'s per-user maps are used instead when the frame has ``user_id``.
        Wrap the stage in :class:`sklearn.frozen.FrozenEstimator` to keep ``fit``
        from relearning it.
        """
        if calibrator is not None and not hasattr(calibrator, "calibrate"):
            raise InvalidParameterError(
                f"calibrator must have a calibrate(proba) method, got {type(calibrator).__name__}"
            )
        if store is not None and not isinstance(store, CalibratorStore):
            raise InvalidParameterError(
                f"store must be a CalibratorStore, got {type(store).__name__}"
            )
        return cls()._set_maps(IdentityCalibrator() if calibrator is None else calibrator, store)

    def _set_maps(self, calibrator: Any, store: CalibratorStore | None) -> Calibrator:
        self.calibrator_, self.store_ = calibrator, store
        self.brier_before_ = self.brier_after_ = float("nan")
        self.log_loss_before_ = self.log_loss_after_ = float("nan")
        self.accuracy_ = self.macro_f1_ = float("nan")
        return self

    def _user_maps(self, X: pd.DataFrame, proba: np.ndarray, codes: np.ndarray) -> dict[Any, Any]:
        """A map of ``method`` for each user with enough rows, UTC days and labels."""
        if USER_ID not in X.columns:
            return {}
        require_columns(X, [BUCKET_START_TS], f"{type(self).__name__}(per_user=True)")
        users = X[USER_ID].to_numpy(dtype=object)
        days = timestamps_ns(X, BUCKET_START_TS) // NS_PER_DAY
        stats = pd.DataFrame({"user": users, "day": days, "label": codes})
        grouped = stats.groupby("user", sort=False)
        rows = grouped.indices
        stats = grouped.agg(
            rows=("label", "size"), days=("day", "nunique"), labels=("label", "nunique")
        )
        minimums = [self.min_user_rows, self.min_user_days, self.min_user_labels]
        chosen = stats.index[(stats >= minimums).all(axis=1).to_numpy()]
        return {u: _FIT[self.method](proba[rows[u]], codes[rows[u]]) for u in chosen}

    def fit(self, X: pd.DataFrame, y: object = None) -> Calibrator:
        """Fit the calibration map(s) on the probability columns and core labels ``y``.

        ``X`` needs ``user_id`` and ``bucket_start_ts`` too for ``per_user``; ``y`` is
        optional with ``method="identity"``. Raises InputError for missing or bad labels.
        """
        check_params(self)
        check_frame(X, type(self).__name__)
        if y is None and self.method == "identity":
            return self._set_maps(IdentityCalibrator(), None)
        require_columns(X, PROBA_COLUMNS, type(self).__name__)
        codes = check_labels(y, len(X), f"{type(self).__name__}.fit")
        proba = X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
        check_finite_columns(proba, PROBA_COLUMNS)  # before the search, which NaN would steer
        global_map = _FIT[self.method](proba, codes)
        own = self._user_maps(X, proba, codes) if self.per_user else None
        store = None if own is None else CalibratorStore(global_map, own, method=self.method)
        self._set_maps(global_map, store)
        calibrated = self._calibrate(proba, X)
        self.brier_before_ = brier_score(proba, codes)
        self.brier_after_ = brier_score(calibrated, codes)
        self.log_loss_before_ = log_loss(proba, codes)
        self.log_loss_after_ = log_loss(calibrated, codes)
        top = calibrated.argmax(axis=1)
        self.accuracy_ = float(np.mean(top == codes))
        self.macro_f1_ = float(f1_score(codes, top, average="macro"))
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return self.method == "identity" or hasattr(self, "calibrator_")

    def _calibrate(self, proba: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        """``proba`` calibrated for the rows of ``X`` (by the store's maps given user ids)."""
        if not hasattr(self, "calibrator_"):
            if self.method != "identity":
                raise NotFittedError(
                    f"Calibrator(method={self.method!r}) is not fitted: call fit(X, y) first"
                )
            return proba
        if self.store_ is not None and USER_ID in X.columns:
            return self.store_.calibrate_batch(proba, X[USER_ID].to_numpy())
        return np.asarray(self.calibrator_.calibrate(proba), dtype=np.float64)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with the probability columns calibrated."""
        check_params(self)
        check_frame(X, type(self).__name__)
        require_columns(X, PROBA_COLUMNS, type(self).__name__)
        proba = X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
        check_finite_columns(proba, PROBA_COLUMNS)
        calibrated = self._calibrate(proba, X)
        if calibrated is proba:
            return X.copy(deep=False)
        return add_columns(X, pd.DataFrame(calibrated, columns=list(PROBA_COLUMNS)))

    def __sklearn_tags__(self) -> Tags:
        # Probability columns by name, none missing; the identity needs no fitting.
        return frame_tags(super().__sklearn_tags__(), requires_fit=self.method != "identity")
