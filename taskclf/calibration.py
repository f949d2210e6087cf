"""Calibration maps of ``(n, k)`` probability matrices, the per-user store, and their JSON
files in taskclf 0.4's layout. The stage applying them is :class:`taskclf.Calibrator`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pandas as pd

from taskclf._io import atomic_directory, atomic_write_text, read_regular_file
from taskclf.core.types import N_CLASSES
from taskclf.exceptions import InvalidParameterError, ProbabilityShapeError, ReaderError

PROBA_FLOOR = 1e-12
MAX_CALIBRATOR_BYTES = 64 * 1024 * 1024
_MODEL_KEYS = ("model_bundle_id", "model_schema_hash", "created_at")


def check_proba(proba: object, where: str = "probabilities") -> np.ndarray:
    """Return ``proba`` as a float64 (n, 8) matrix or raise ProbabilityShapeError."""
    matrix = np.asarray(proba, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != N_CLASSES:
        raise ProbabilityShapeError(
            f"{where}: expected a probability matrix of shape (n, {N_CLASSES}), "
            f"got shape {matrix.shape}"
        )
    return matrix


def isotonic_regression(
    x: Any, y: Any, increasing: bool = True, out_of_bounds: str = "clip"
) -> Any:
    """A fitted isotonic regression of ``y`` on ``x``, bounded to [0, 1], as taskclf 0.4 fits."""
    from sklearn.isotonic import IsotonicRegression

    options = {"increasing": increasing, "out_of_bounds": out_of_bounds, "y_min": 0.0, "y_max": 1.0}
    return IsotonicRegression(**options).fit(np.asarray(x, float), np.asarray(y, float))


@attrs.frozen
class IdentityCalibrator:
    """Calibration map that returns the probabilities unchanged."""

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray:
        """Return ``core_probs`` as given."""
        return core_probs

    def to_dict(self) -> dict[str, Any]:
        return {"type": "identity"}


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"temperature must be positive and finite, got {value!r}")


@attrs.frozen
class TemperatureCalibrator:
    """Temperature scaling ``softmax(log(clip(p, 1e-12)) / T)``: a ``temperature`` ``T``
    above 1 softens the probabilities, below 1 (and > 0) sharpens them.

    Examples
    --------
    >>> p = np.array([[0.7, 0.3] + [0.0] * 6])
    >>> TemperatureCalibrator(2.0).calibrate(p)[0, :2].round(3).tolist()
    [0.604, 0.396]
    """

    temperature: float = attrs.field(default=1.0, converter=float, validator=_positive)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "temperature", "temperature": self.temperature}

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray:
        """Scale the log-probabilities by ``1 / T`` and renormalize."""
        if self.temperature == 1.0:
            return core_probs
        # C order: every row is reduced alike whatever the input's layout or row count.
        logits = np.log(np.clip(np.ascontiguousarray(core_probs), PROBA_FLOOR, None))
        logits /= self.temperature
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        return logits


@attrs.frozen(eq=False)
class IsotonicCalibrator:
    """Fitted isotonic ``regressors``, one per class in class order; outputs clipped below at
    1e-12, rows renormalized."""

    regressors: tuple[Any, ...] = attrs.field(converter=tuple)

    @regressors.validator
    def _check(self, attribute: attrs.Attribute, value: tuple[Any, ...]) -> None:
        if not value:
            raise InvalidParameterError(
                "IsotonicCalibrator: regressors list must not be empty (one per class)"
            )

    @property
    def n_classes(self) -> int:
        return len(self.regressors)

    def to_dict(self) -> dict[str, Any]:
        keys = "X_thresholds_", "y_thresholds_", "X_min_", "X_max_", "increasing_", "out_of_bounds"
        regressors = [
            {key: np.asarray(getattr(r, key)).tolist() for key in keys} for r in self.regressors
        ]
        return {"type": "isotonic", "regressors": regressors}

    def calibrate(self, core_probs: np.ndarray) -> np.ndarray:
        """Map each class column through its regressor and renormalize."""
        matrix = np.atleast_2d(core_probs)
        out = np.empty(matrix.shape, dtype=np.float64)
        if len(matrix) == 0:  # scikit-learn's regressors refuse to predict nothing
            return out
        if matrix.shape[1] != self.n_classes:
            raise ProbabilityShapeError(
                f"IsotonicCalibrator has {self.n_classes} regressors but the probabilities "
                f"have {matrix.shape[1]} columns (length mismatch)"
            )
        for k, regressor in enumerate(self.regressors):
            # Clipped first: out_of_bounds="nan" would give NaN outside the fitted range.
            out[:, k] = regressor.predict(np.clip(matrix[:, k], regressor.X_min_, regressor.X_max_))
        np.clip(out, PROBA_FLOOR, None, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out[0] if np.ndim(core_probs) == 1 else out


@attrs.frozen(eq=False)
class CalibratorStore:
    """Per-user calibration maps with a global fallback.

    ``global_calibrator`` serves users without their own map; ``method`` and
    the optional ``model_bundle_id``, ``model_schema_hash`` and ``created_at``
    are informative, as in taskclf 0.4.

    Examples
    --------
    >>> store = CalibratorStore(IdentityCalibrator(), {"u1": TemperatureCalibrator(2.0)})
    >>> p = np.array([[0.7, 0.3] + [0.0] * 6] * 2)
    >>> store.calibrate_batch(p, ["u1", "u2"])[:, 0].round(3).tolist()
    [0.604, 0.7]
    """

    global_calibrator: Any = attrs.field(factory=IdentityCalibrator)
    user_calibrators: Mapping[Any, Any] = attrs.field(
        factory=dict, converter=lambda m: dict(m or {})
    )
    method: str = "temperature"
    model_bundle_id: str | None = None
    model_schema_hash: str | None = None
    created_at: str | None = None

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
        """Each row calibrated by its user's map (a user's rows together), or the global one."""
        proba = check_proba(core_probs, "CalibratorStore")
        users = pd.Series(np.asarray(user_ids, dtype=object))
        if len(users) != len(proba):
            raise ProbabilityShapeError(
                f"CalibratorStore: {len(proba)} probability rows but {len(users)} user ids"
            )
        own = users.isin(list(self.user_calibrators)).to_numpy()
        out = np.empty(proba.shape, dtype=np.float64)
        if not own.all():  # each map works row by row, so a subset calibrates alike
            out[~own] = self.global_calibrator.calibrate(proba[~own])
        for user, rows in users[own].groupby(users[own], sort=False).indices.items():
            where = np.flatnonzero(own)[rows]
            out[where] = self.user_calibrators[user].calibrate(proba[where])
        return out


def _read_json(path: Path) -> Any:
    data = read_regular_file(path, MAX_CALIBRATOR_BYTES, "calibrator file")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ReaderError(f"calibrator file {str(path)!r} is not JSON: {exc}") from None


def _json_text(calibrator: Any) -> str:
    if not hasattr(calibrator, "to_dict"):
        raise InvalidParameterError(f"cannot save a calibrator of type {type(calibrator).__name__}")
    return json.dumps(calibrator.to_dict(), indent=2)


def save_calibrator(calibrator: Any, path: str | os.PathLike[str]) -> Path:
    """Write a calibration map as JSON, atomically, as taskclf 0.4 does; return ``path``."""
    return atomic_write_text(path, _json_text(calibrator))


def load_calibrator(path: str | os.PathLike[str]) -> Any:
    """Read a calibration map written by :func:`save_calibrator` (or taskclf 0.4).

    Raises MissingFileError (a ``FileNotFoundError``) for a missing file, and
    InvalidParameterError or ReaderError naming a file that is not a calibrator.
    """
    data, where = _read_json(Path(path)), f"calibrator file {str(path)!r}"
    try:
        kind = data.get("type", "identity")
        if kind == "identity":
            return IdentityCalibrator()
        if kind == "temperature":
            return TemperatureCalibrator(float(data["temperature"]))
        if kind == "isotonic":
            keys = ("X_thresholds_", "y_thresholds_", "increasing_", "out_of_bounds")
            items = data["regressors"]
            return IsotonicCalibrator([isotonic_regression(*(i[k] for k in keys)) for i in items])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidParameterError(f"{where}: not a calibrator ({exc!r:.200})") from None
    raise InvalidParameterError(f"{where}: unknown calibrator type {kind!r:.50}")


def _user_file(user_id: Any) -> str:
    name = f"{user_id}.json"
    if not isinstance(user_id, str) or not user_id or "/" in name or name.startswith("."):
        raise InvalidParameterError(
            f"user id {user_id!r:.60} cannot name a calibrator file in a store directory"
        )
    return name


def _is_store(directory: Path) -> bool:
    children = directory.iterdir()
    return (directory / "store.json").is_file() and all(
        c.name in ("store.json", "global.json", "users") for c in children
    )


def save_calibrator_store(store: CalibratorStore, path: str | os.PathLike[str]) -> Path:
    """Write a store as a directory in taskclf 0.4's layout, atomically; return ``path``.

    ``store.json`` (method, user ids, the model it belongs to),
    ``global.json`` and ``users/<user_id>.json``. An existing directory is
    replaced only when it is empty or a calibrator store.
    """
    names = {user: _user_file(user) for user in store.user_calibrators}
    meta = {"method": store.method, "user_count": len(names), "user_ids": sorted(names)}
    meta |= {k: getattr(store, k) for k in _MODEL_KEYS if getattr(store, k) is not None}
    with atomic_directory(path, _is_store, "calibrator store") as staging:
        (staging / "global.json").write_text(_json_text(store.global_calibrator))
        (staging / "store.json").write_text(json.dumps(meta, indent=2))
        if names:
            (staging / "users").mkdir()
        for user, calibrator in store.user_calibrators.items():
            (staging / "users" / names[user]).write_text(_json_text(calibrator))
    return Path(path)


def load_calibrator_store(path: str | os.PathLike[str]) -> CalibratorStore:
    """Read a store directory written by :func:`save_calibrator_store` (or taskclf 0.4).

    Raises MissingFileError when ``store.json`` or ``global.json`` is missing, and
    InvalidParameterError or ReaderError naming a file that is not what it should be.
    """
    directory = Path(path)
    meta = _read_json(directory / "store.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("user_ids", []), list):
        raise InvalidParameterError(f"{str(directory / 'store.json')!r}: not a store header")
    files = {user: directory / "users" / _user_file(user) for user in meta.get("user_ids", [])}
    return CalibratorStore(
        load_calibrator(directory / "global.json"),
        {user: load_calibrator(file) for user, file in files.items() if file.exists()},
        method=str(meta.get("method", "temperature")),
        **{k: None if meta.get(k) is None else str(meta[k]) for k in _MODEL_KEYS},
    )
