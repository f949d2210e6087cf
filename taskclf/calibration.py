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

from taskclf.core.types import N_CLASSES
from taskclf.exceptions import InvalidParameterError, ProbabilityShapeError

PROBA_FLOOR = 1e-12

CALIBRATION_METHODS = ("identity", "temperature", "isotonic")
"""What :class:`Calibrator` can fit."""

MIN_USER_ROWS = 200
MIN_USER_DAYS = 3
MIN_USER_LABELS = 3
TEMPERATURE_BOUNDS = (0.02, 50.0)
"""Search interval of a fitted temperature."""


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
        # C order: each row is then reduced the same way, whatever the
        # number of rows or the layout of the input (a frame's columns come
        # out in Fortran order), so a row's result never depends on the others.
        logits = np.log(np.clip(np.ascontiguousarray(core_probs), PROBA_FLOOR, None))
        logits /= self.temperature
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
        if len(matrix) == 0:  # scikit-learn's regressors refuse to predict nothing
            return out
        for k, regressor in enumerate(self.regressors):
            values = matrix[:, k]
            if hasattr(regressor, "X_min_"):
                # Outside its fitted range a regressor built with
                # out_of_bounds="nan" would give NaN: clamp to the range.
                values = np.clip(values, regressor.X_min_, regressor.X_max_)
            out[:, k] = regressor.predict(values)
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


def log_loss(proba: np.ndarray, codes: np.ndarray) -> float:
    """Mean negative log probability of the true class (clipped at 1e-12).

    Examples
    --------
    >>> import numpy as np
    >>> round(log_loss(np.full((2, 8), 0.125), np.array([0, 3])), 4)
    2.0794
    """
    if len(codes) == 0:
        return float("nan")
    true = proba[np.arange(len(codes)), codes]
    return float(-np.mean(np.log(np.clip(true, PROBA_FLOOR, None))))


def brier_score(proba: np.ndarray, codes: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of ``sum_k (p_k - [y == k])^2``.

    Examples
    --------
    >>> import numpy as np
    >>> brier_score(np.eye(8)[[0, 1]], np.array([0, 2]))
    1.0
    """
    if len(codes) == 0:
        return float("nan")
    error = proba.copy()
    error[np.arange(len(codes)), codes] -= 1.0
    return float(np.mean(np.einsum("ij,ij->i", error, error)))


def fit_temperature(proba: np.ndarray, codes: np.ndarray) -> TemperatureCalibrator:
    """The temperature minimizing the log loss of ``softmax(log p / T)``.

    A bounded scalar search over ``log T`` (``T`` in
    :data:`TEMPERATURE_BOUNDS`); the loss is convex in ``1 / T``, so the
    search finds the global minimum.

    Parameters
    ----------
    proba : ndarray, shape (n, 8)
        Uncalibrated probabilities.
    codes : ndarray of int, shape (n,)
        True class of each row.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9] + [0.1 / 7] * 7] * 4)
    >>> fit_temperature(p, np.array([0, 0, 0, 1])).temperature > 1
    True
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    logp = np.log(np.clip(proba, PROBA_FLOOR, None))
    true = logp[np.arange(len(codes)), codes]

    def loss(log_t: float) -> float:
        beta = np.exp(-log_t)
        return float(np.mean(logsumexp(logp * beta, axis=1) - true * beta))

    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return TemperatureCalibrator(float(np.exp(result.x)))


def fit_isotonic(proba: np.ndarray, codes: np.ndarray) -> IsotonicCalibrator:
    """One isotonic regression per class on one-vs-rest targets.

    Each regressor maps the class's probability to the observed frequency
    of the class, clipped to [0, 1] outside the fitted range.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.tile(np.full(8, 0.125), (16, 1))
    >>> fit_isotonic(p, np.arange(16) % 8).calibrate(p[:1]).round(3).tolist()
    [[0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]]
    """
    from sklearn.isotonic import IsotonicRegression

    regressors = []
    for k in range(N_CLASSES):
        regressor = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        regressors.append(regressor.fit(proba[:, k], (codes == k).astype(np.float64)))
    return IsotonicCalibrator(regressors)


def fit_calibration_map(method: str, proba: np.ndarray, codes: np.ndarray) -> Any:
    """Fit the calibration map of ``method`` (one of :data:`CALIBRATION_METHODS`)."""
    if method == "temperature":
        return fit_temperature(proba, codes)
    if method == "isotonic":
        return fit_isotonic(proba, codes)
    return IdentityCalibrator()


def eligible_users(
    user_ids: np.ndarray,
    days: np.ndarray,
    codes: np.ndarray,
    *,
    min_rows: int = MIN_USER_ROWS,
    min_days: int = MIN_USER_DAYS,
    min_labels: int = MIN_USER_LABELS,
) -> list[Any]:
    """Users with enough labelled data for a calibration map of their own.

    A user qualifies with at least ``min_rows`` labelled rows over at
    least ``min_days`` distinct days and ``min_labels`` distinct labels.

    Parameters
    ----------
    user_ids : ndarray, shape (n,)
        User of each labelled row.
    days : ndarray of int, shape (n,)
        Day of each row (any integer day number).
    codes : ndarray of int, shape (n,)
        Label code of each row.

    Returns
    -------
    list
        The qualifying users, in order of first appearance.

    Examples
    --------
    >>> import numpy as np
    >>> users = np.array(["a"] * 6 + ["b"] * 6)
    >>> days = np.tile([0, 0, 1, 1, 2, 2], 2)
    >>> codes = np.array([0, 1, 2, 0, 1, 2] + [0] * 6)
    >>> eligible_users(users, days, codes, min_rows=6, min_days=3, min_labels=3)
    ['a']
    """
    frame = pd.DataFrame({"user": user_ids, "day": days, "label": codes})
    stats = frame.groupby("user", sort=False).agg(
        rows=("label", "size"), days=("day", "nunique"), labels=("label", "nunique")
    )
    ok = (stats["rows"] >= min_rows) & (stats["days"] >= min_days) & (stats["labels"] >= min_labels)
    return stats.index[ok.to_numpy()].tolist()


def _check_count(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}")


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
