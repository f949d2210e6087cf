"""Probability calibration: calibration maps and the ``calibrate`` stage.

A calibration map turns an ``(n, 8)`` probability matrix into calibrated
probabilities: :class:`IdentityCalibrator`, :class:`TemperatureCalibrator`
and :class:`IsotonicCalibrator`. :class:`CalibratorStore` holds one map per
user with a global fallback. :class:`Calibrator` is the pipeline stage that
applies them to the probability columns of a frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from taskclf._base import add_columns, check_frame, require_columns
from taskclf._columns import PROBA_COLUMNS, USER_ID
from taskclf.core.types import N_CLASSES
from taskclf.exceptions import InvalidParameterError, ProbabilityShapeError

PROBA_FLOOR = 1e-12


def check_proba(proba: object, where: str = "probabilities") -> np.ndarray:
    """Return ``proba`` as a float64 (n, 8) matrix or raise ProbabilityShapeError."""
    matrix = np.asarray(proba, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != N_CLASSES:
        raise ProbabilityShapeError(
            f"{where}: expected a probability matrix of shape (n, {N_CLASSES}), "
            f"got shape {matrix.shape}"
        )
    return matrix


@runtime_checkable
class CalibrationMap(Protocol):
    """Anything with ``calibrate(proba) -> proba`` on (n, 8) matrices."""

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray: ...


@attrs.frozen
class IdentityCalibrator:
    """Calibration map that returns the probabilities unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.full((1, 8), 0.125)
    >>> IdentityCalibrator().calibrate(p) is p
    True
    """

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray:
        """Return ``core_probs`` as given."""
        return core_probs


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"temperature must be > 0 and finite, got {value!r}")


@attrs.frozen
class TemperatureCalibrator:
    """Temperature scaling: ``softmax(log(clip(p, 1e-12)) / T)``.

    ``T > 1`` softens the probabilities, ``T < 1`` sharpens them and
    ``T == 1`` returns them unchanged.

    Parameters
    ----------
    temperature : float, default 1.0
        ``T > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.7, 0.3] + [0.0] * 6])
    >>> TemperatureCalibrator(2.0).calibrate(p)[0, :2].round(3).tolist()
    [0.604, 0.396]
    """

    temperature: float = attrs.field(default=1.0, converter=float, validator=_positive)

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray:
        """Scale the log-probabilities by ``1 / T`` and renormalize."""
        if self.temperature == 1.0:
            return core_probs
        logits = np.log(np.clip(core_probs, PROBA_FLOOR, None)) / self.temperature
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        return logits


@attrs.frozen(eq=False)
class IsotonicCalibrator:
    """One fitted isotonic regression per class, rows renormalized.

    Each class's probability goes through its regressor, is clipped below
    at 1e-12, and every row is divided by its sum.

    Parameters
    ----------
    regressors : sequence of sklearn.isotonic.IsotonicRegression
        Fitted regressors, one per class, in class order.
    """

    regressors: tuple[Any, ...] = attrs.field(converter=tuple)

    @regressors.validator
    def _check(self, attribute: attrs.Attribute, value: tuple[Any, ...]) -> None:
        if len(value) != N_CLASSES:
            raise InvalidParameterError(
                f"IsotonicCalibrator needs {N_CLASSES} regressors, got {len(value)}"
            )

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray:
        """Map each class column through its regressor and renormalize."""
        single = core_probs.ndim == 1
        matrix = np.atleast_2d(core_probs)
        out = np.empty(matrix.shape, dtype=np.float64)
        for k, regressor in enumerate(self.regressors):
            out[:, k] = regressor.predict(matrix[:, k])
        np.clip(out, PROBA_FLOOR, None, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out[0] if single else out


@attrs.frozen(eq=False)
class CalibratorStore:
    """Per-user calibration maps with a global fallback.

    Parameters
    ----------
    global_calibrator : calibration map
        Used for users without their own map.
    user_calibrators : mapping of user id to calibration map
        Per-user maps.
    method : str, default "temperature"
        How the maps were made (informative).

    Examples
    --------
    >>> import numpy as np
    >>> store = CalibratorStore(IdentityCalibrator(), {"u1": TemperatureCalibrator(2.0)})
    >>> p = np.array([[0.7, 0.3] + [0.0] * 6] * 2)
    >>> store.calibrate_batch(p, ["u1", "u2"])[:, 0].round(3).tolist()
    [0.604, 0.7]
    """

    global_calibrator: Any = attrs.field(factory=IdentityCalibrator)
    user_calibrators: Mapping[str, Any] = attrs.field(
        factory=dict, converter=lambda m: dict(m or {})
    )
    method: str = "temperature"

    def get_calibrator(self, user_id: str) -> Any:
        """The map of ``user_id``, or the global one."""
        return self.user_calibrators.get(user_id, self.global_calibrator)

    @property
    def user_ids(self) -> list[str]:
        """Sorted ids of the users with their own map."""
        return sorted(self.user_calibrators)

    def calibrate_batch(
        self, core_probs: np.ndarray, user_ids: Sequence[Any] | np.ndarray
    ) -> np.ndarray:
        """Calibrate each row with its user's map (grouped by user)."""
        proba = check_proba(core_probs, "CalibratorStore")
        codes, users = pd.factorize(pd.Series(np.asarray(user_ids, dtype=object)))
        if len(codes) != len(proba):
            raise ProbabilityShapeError(
                f"CalibratorStore: {len(proba)} probability rows but {len(codes)} user ids"
            )
        own = [u for u in users.tolist() if u in self.user_calibrators]
        if not own:
            return self.global_calibrator.calibrate(proba)
        out = np.empty_like(proba)
        covered = np.zeros(len(proba), dtype=bool)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(users) + 1))
        position = {u: i for i, u in enumerate(users.tolist())}
        for user in own:
            i = position[user]
            rows = order[bounds[i] : bounds[i + 1]]
            out[rows] = self.user_calibrators[user].calibrate(proba[rows])
            covered[rows] = True
        rest = ~covered
        if rest.any():
            out[rest] = self.global_calibrator.calibrate(proba[rest])
        return out


def apply_calibration(
    proba: np.ndarray,
    calibrator: Any = None,
    calibrator_store: CalibratorStore | None = None,
    user_ids: Sequence[Any] | np.ndarray | None = None,
) -> np.ndarray:
    """Calibrate ``proba``: the store per user when there are user ids, else one map."""
    if calibrator_store is not None and user_ids is not None:
        return calibrator_store.calibrate_batch(proba, user_ids)
    if calibrator is None:
        return proba
    return np.asarray(calibrator.calibrate(proba), dtype=np.float64)


class Calibrator(TransformerMixin, BaseEstimator):
    """Pipeline stage: replace the probability columns with calibrated ones.

    Applies ``calibrator_store`` per user when the frame has ``user_id``,
    else ``calibrator``; with neither it is the identity.

    Parameters
    ----------
    calibrator : calibration map, optional
        One map for every row.
    calibrator_store : CalibratorStore, optional
        Per-user maps with a global fallback; wins over ``calibrator`` when
        the frame has ``user_id``.

    Examples
    --------
    >>> import pandas as pd
    >>> from taskclf._columns import PROBA_COLUMNS
    >>> frame = pd.DataFrame([[0.7, 0.3] + [0.0] * 6], columns=PROBA_COLUMNS)
    >>> out = Calibrator(TemperatureCalibrator(2.0)).transform(frame)
    >>> round(float(out["proba_BreakIdle"].iloc[0]), 3)
    0.604
    """

    def __init__(
        self,
        calibrator: Any = None,
        calibrator_store: CalibratorStore | None = None,
    ) -> None:
        self.calibrator = calibrator
        self.calibrator_store = calibrator_store

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def _validate_params(self) -> None:
        if self.calibrator is not None and not hasattr(self.calibrator, "calibrate"):
            raise InvalidParameterError(
                "calibrator must have a calibrate(proba) method, got "
                f"{type(self.calibrator).__name__}"
            )
        if self.calibrator_store is not None and not hasattr(
            self.calibrator_store, "calibrate_batch"
        ):
            raise InvalidParameterError(
                "calibrator_store must be a CalibratorStore, got "
                f"{type(self.calibrator_store).__name__}"
            )

    def fit(self, X: pd.DataFrame, y: object = None) -> Calibrator:
        """Check the parameters; the given maps are used as they are.

        Returns
        -------
        self
        """
        self._validate_params()
        check_frame(X, type(self).__name__)
        return self

    def calibrate_proba(self, proba: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        """Calibrated copy of ``proba`` for the rows of ``X``."""
        user_ids = X[USER_ID].to_numpy() if USER_ID in X.columns else None
        return apply_calibration(proba, self.calibrator, self.calibrator_store, user_ids)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with the probability columns calibrated."""
        self._validate_params()
        check_frame(X, type(self).__name__)
        require_columns(X, PROBA_COLUMNS, type(self).__name__)
        if self.calibrator is None and self.calibrator_store is None:
            return X.copy(deep=False)
        proba = X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
        calibrated = self.calibrate_proba(proba, X)
        return add_columns(X, pd.DataFrame(calibrated, columns=list(PROBA_COLUMNS)))
