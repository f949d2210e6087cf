"""Calibration stage: replace the probability columns with calibrated ones."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
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
    CALIBRATION_METHODS,
    MIN_USER_DAYS,
    MIN_USER_LABELS,
    MIN_USER_ROWS,
    CalibratorStore,
    IdentityCalibrator,
    apply_calibration,
    brier_score,
    eligible_users,
    fit_calibration_map,
    log_loss,
)
from taskclf.core.time import timestamps_ns
from taskclf.exceptions import InvalidParameterError, NotFittedError
from taskclf.stages._base import check_params, instance_of, integer, one_of


class Calibrator(TransformerMixin, BaseEstimator):
    """Pipeline stage: replace the probability columns with calibrated ones.

    ``fit(X, y)`` learns a map of ``method`` from the probability columns
    of ``X`` and the true labels ``y``; with ``per_user=True`` also one map
    per user who has at least ``min_user_rows`` labelled rows over
    ``min_user_days`` distinct UTC days with ``min_user_labels`` distinct
    labels, the global map serving everyone else. ``method="identity"``
    needs no fitting. Maps made elsewhere make a fitted stage through
    :meth:`from_maps`.

    In a pipeline, the stage is fitted on the *out-of-fold* probabilities
    that :class:`~taskclf.BoosterPredictor` returns from ``fit_transform``,
    so it calibrates the probabilities of rows the model never saw.

    Parameters
    ----------
    method : {"identity", "temperature", "isotonic"}, default "identity"
        What ``fit`` learns: nothing, a temperature ``T`` minimizing the
        log loss, or one isotonic regression per class (one-vs-rest).
    per_user : bool, default False
        Also fit a map per eligible user.
    min_user_rows, min_user_days, min_user_labels : int, default 200, 3, 3
        The eligibility rule of per-user maps.

    Attributes
    ----------
    calibrator_ : calibration map
        The global map.
    store_ : CalibratorStore or None
        The per-user maps with the global fallback, used when the frame
        has ``user_id``.
    brier_before_, brier_after_ : float
        Multiclass Brier score of the fitting rows before and after
        calibration (NaN when ``fit`` had no labels).
    log_loss_before_, log_loss_after_ : float
        Log loss of the fitting rows before and after calibration.

    Examples
    --------
    >>> import pandas as pd
    >>> from taskclf._columns import PROBA_COLUMNS
    >>> from taskclf.calibration import TemperatureCalibrator
    >>> frame = pd.DataFrame([[0.7, 0.3] + [0.0] * 6], columns=PROBA_COLUMNS)
    >>> out = Calibrator.from_maps(TemperatureCalibrator(2.0)).transform(frame)
    >>> round(float(out["proba_BreakIdle"].iloc[0]), 3)
    0.604
    >>> frame = pd.DataFrame([[0.9, 0.1] + [0.0] * 6] * 4, columns=PROBA_COLUMNS)
    >>> stage = Calibrator(method="temperature").fit(frame, ["BreakIdle"] * 3 + ["Build"])
    >>> stage.calibrator_.temperature > 1, stage.log_loss_after_ < stage.log_loss_before_
    (True, True)
    """

    _parameter_rules: ClassVar = {
        "method": one_of(*CALIBRATION_METHODS),
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
        min_user_rows: int = MIN_USER_ROWS,
        min_user_days: int = MIN_USER_DAYS,
        min_user_labels: int = MIN_USER_LABELS,
    ) -> None:
        self.method = method
        self.per_user = per_user
        self.min_user_rows = min_user_rows
        self.min_user_days = min_user_days
        self.min_user_labels = min_user_labels

    @classmethod
    def from_maps(cls, calibrator: Any = None, store: CalibratorStore | None = None) -> Calibrator:
        """A fitted stage applying given maps.

        Parameters
        ----------
        calibrator : calibration map, optional
            One map for every row (identity when omitted).
        store : CalibratorStore, optional
            Per-user maps with a global fallback, used when the frame has
            ``user_id`` (winning over ``calibrator``).

        Returns
        -------
        Calibrator
            Fitted; wrap it in :class:`sklearn.frozen.FrozenEstimator` to
            keep ``fit`` from relearning it.
        """
        if calibrator is not None and not hasattr(calibrator, "calibrate"):
            raise InvalidParameterError(
                f"calibrator must have a calibrate(proba) method, got {type(calibrator).__name__}"
            )
        if store is not None and not isinstance(store, CalibratorStore):
            raise InvalidParameterError(
                f"store must be a CalibratorStore, got {type(store).__name__}"
            )
        stage = cls()
        stage.calibrator_ = calibrator if calibrator is not None else IdentityCalibrator()
        stage.store_ = store
        stage._no_scores()
        return stage

    def _no_scores(self) -> None:
        nan = float("nan")
        self.brier_before_ = self.brier_after_ = nan
        self.log_loss_before_ = self.log_loss_after_ = nan

    def _fit_maps(self, X: pd.DataFrame, proba: np.ndarray, codes: np.ndarray) -> None:
        global_map = fit_calibration_map(self.method, proba, codes)
        self.calibrator_ = global_map
        self.store_: CalibratorStore | None = None
        if not self.per_user:
            return
        own: dict[Any, Any] = {}
        if USER_ID in X.columns:
            require_columns(X, [BUCKET_START_TS], f"{type(self).__name__}(per_user=True)")
            users = X[USER_ID].to_numpy(dtype=object)
            days = timestamps_ns(X, BUCKET_START_TS) // (86_400 * 1_000_000_000)
            for user in eligible_users(
                users,
                days,
                codes,
                min_rows=self.min_user_rows,
                min_days=self.min_user_days,
                min_labels=self.min_user_labels,
            ):
                rows = users == user
                own[user] = fit_calibration_map(self.method, proba[rows], codes[rows])
        self.store_ = CalibratorStore(global_map, own, method=self.method)

    def fit(self, X: pd.DataFrame, y: object = None) -> Calibrator:
        """Fit the calibration map(s) on the probability columns and labels.

        With ``method="identity"`` nothing is learned and ``y`` is
        optional; the quality attributes are filled when ``y`` is given.

        Parameters
        ----------
        X : DataFrame
            Frame with the probability columns (out-of-fold in a pipeline),
            and ``user_id``/``bucket_start_ts`` for ``per_user``.
        y : array-like of str
            Core label of each row.

        Returns
        -------
        self

        Raises
        ------
        InputError
            When labels are needed and missing, of another length than
            ``X``, or not core labels.
        """
        check_params(self)
        check_frame(X, type(self).__name__)
        if y is None and self.method == "identity":
            self.calibrator_, self.store_ = IdentityCalibrator(), None
            self._no_scores()
            return self
        require_columns(X, PROBA_COLUMNS, type(self).__name__)
        codes = check_labels(y, len(X), f"{type(self).__name__}.fit")
        proba = X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
        self._fit_maps(X, proba, codes)
        calibrated = self.calibrate_proba(proba, X)
        self.brier_before_ = brier_score(proba, codes)
        self.brier_after_ = brier_score(calibrated, codes)
        self.log_loss_before_ = log_loss(proba, codes)
        self.log_loss_after_ = log_loss(calibrated, codes)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return self.method == "identity" or hasattr(self, "calibrator_")

    def calibrate_proba(self, proba: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        """Calibrated copy of ``proba`` for the rows of ``X``."""
        if not hasattr(self, "calibrator_"):
            if self.method != "identity":
                raise NotFittedError(
                    f"Calibrator(method={self.method!r}) is not fitted: call fit(X, y) first"
                )
            return proba
        user_ids = X[USER_ID].to_numpy() if USER_ID in X.columns else None
        return apply_calibration(proba, self.calibrator_, self.store_, user_ids)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with the probability columns calibrated."""
        check_params(self)
        check_frame(X, type(self).__name__)
        require_columns(X, PROBA_COLUMNS, type(self).__name__)
        proba = X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
        check_finite_columns(proba, PROBA_COLUMNS)
        calibrated = self.calibrate_proba(proba, X)
        if calibrated is proba:
            return X.copy(deep=False)
        return add_columns(X, pd.DataFrame(calibrated, columns=list(PROBA_COLUMNS)))

    def __sklearn_tags__(self) -> Tags:
        # Probability columns by name; missing probabilities are refused.
        # The identity needs no fitting.
        return frame_tags(super().__sklearn_tags__(), requires_fit=self.method != "identity")
