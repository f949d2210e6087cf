"""Pickle-free bundles: a fitted pipeline as a directory of text files.

:func:`export_bundle_dir` writes

- ``model.txt``: the LightGBM model as text (``booster.model_to_string``);
- ``pipeline.json``: every stage, in order, with its class, its parameters
  and its learned state (vocabularies, calibrator parameters including
  isotonic thresholds, thresholds, windows, the taxonomy), as plain JSON;
- ``bundle.json``: the metadata (as a bundle file records it) and the
  SHA-256 of the two files above.

:func:`load_bundle_dir` rebuilds an identical pipeline (same predictions)
from those files without unpickling anything: only the stage classes of
taskclf can be named, and every value is checked before use. It also reads
the model directories of taskclf 0.4 (``model.txt``, ``metadata.json``,
optional ``categorical_encoders.json``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast

import attrs
import numpy as np
import sklearn
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder

from taskclf._model_text import check_model_text
from taskclf.bundle import (
    BundleMetadata,
    check_schema_and_labels,
    make_metadata,
    predictor_of,
)
from taskclf.calibration import (
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
)
from taskclf.core.schema import SCHEMAS
from taskclf.core.types import N_CLASSES
from taskclf.exceptions import BundleError, TaskclfError, TaskclfWarning
from taskclf.stages.calibrate import Calibrator
from taskclf.stages.encode import CategoricalEncoder
from taskclf.stages.merge import HysteresisMerger
from taskclf.stages.model import BoosterPredictor
from taskclf.stages.reject import Rejector
from taskclf.stages.segment import Segmenter
from taskclf.stages.smooth import MajoritySmoother
from taskclf.taxonomy import TaxonomyConfig, taxonomy_from_dict, taxonomy_to_dict

DIR_FORMAT: Final = "taskclf-bundle-dir"
DIR_FORMAT_VERSION: Final = 1
MANIFEST: Final = "bundle.json"
PIPELINE_FILE: Final = "pipeline.json"
MODEL_FILE: Final = "model.txt"
LEGACY_METADATA: Final = "metadata.json"
LEGACY_ENCODERS: Final = "categorical_encoders.json"

MAX_JSON_BYTES: Final = 256 * 1024 * 1024
"""Largest JSON file a reader accepts."""
MAX_MODEL_BYTES: Final = 2 * 1024 * 1024 * 1024
"""Largest model text file a reader accepts."""
MAX_ITEMS: Final = 50_000_000
"""Most items a list, mapping or array in a bundle directory may hold."""

_STEP_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_STATE_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}_")
_MODEL_NAME: Final = re.compile(r"model(_[0-9]{1,4})?\.txt")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_DTYPES: Final = ("float64", "float32", "int64", "int32", "int8", "bool", "str")


_OPTIONAL_STAGES: Final = (
    ("taskclf.taxonomy", "TaxonomyMapper"),
    ("taskclf.stages.viterbi", "ViterbiSmoother"),
)
"""Stages of other modules that a ``pipeline.json`` may name."""


def _stage_classes() -> dict[str, type]:
    """The classes a ``pipeline.json`` may name (taskclf's stages only)."""
    classes: list[type] = [
        CategoricalEncoder,
        BoosterPredictor,
        Calibrator,
        Rejector,
        MajoritySmoother,
        Segmenter,
        HysteresisMerger,
    ]
    # Stages of optional modules, when this installation has them.
    for module_name, class_name in _OPTIONAL_STAGES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover
            continue
        stage = getattr(module, class_name, None)
        if isinstance(stage, type):
            classes.append(stage)
    return {cls.__name__: cls for cls in classes}


_DERIVED_STATE: Final[dict[str, tuple[str, ...]]] = {"TaxonomyMapper": ("resolver_",)}
"""Learned attributes that are rebuilt from the others (by ``fit``) when loading."""


# ---------------------------------------------------------------------------
# Writing: Python values → JSON
# ---------------------------------------------------------------------------


def _is_booster(value: Any) -> bool:
    """Whether ``value`` is a LightGBM booster (without importing LightGBM first)."""
    lightgbm = sys.modules.get("lightgbm")
    return lightgbm is not None and isinstance(value, lightgbm.Booster)


class _Encoder:
    """Turns stage parameters and state into JSON, collecting boosters."""

    def __init__(self) -> None:
        self.boosters: dict[str, Any] = {}  # file name → booster
        self._names: dict[int, str] = {}

    def booster(self, booster: Any) -> dict[str, str]:
        key = id(booster)
        if key not in self._names:
            name = MODEL_FILE if not self._names else f"model_{len(self._names)}.txt"
            self._names[key] = name
            self.boosters[name] = booster
        return {"$booster": self._names[key]}

    def value(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            number = float(value)
            return number if np.isfinite(number) else {"$float": repr(number)}
        if _is_booster(value):
            return self.booster(value)
        if isinstance(value, np.ndarray):
            return {"$ndarray": _array_to_json(value, where)}
        if isinstance(value, LabelEncoder):
            return {"$label_encoder": self.value(list(value.classes_), where)}
        if isinstance(value, CalibratorStore):
            return {"$calibrator_store": _store_to_json(value, where)}
        if isinstance(value, (IdentityCalibrator, TemperatureCalibrator, IsotonicCalibrator)):
            return {"$calibration": _calibration_to_json(value, where)}
        if isinstance(value, TaxonomyConfig):
            return {"$taxonomy": taxonomy_to_dict(value)}
        if isinstance(value, (list, tuple)):
            return [self.value(v, where) for v in value]
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str) or key.startswith("$"):
                    raise BundleError(f"cannot export {where}: mapping key {key!r} is not plain")
                out[key] = self.value(item, f"{where}[{key!r}]")
            return out
        raise BundleError(
            f"cannot export {where}: a {type(value).__name__} has no pickle-free form"
        )


def _array_to_json(array: np.ndarray, where: str) -> dict[str, Any]:
    if array.dtype.kind in "OUT":
        values = array.ravel().tolist()
        if not all(isinstance(v, str) for v in values):
            raise BundleError(f"cannot export {where}: an object array of non-strings")
        dtype = "str"
    elif array.dtype.name in _DTYPES:
        values = array.ravel().tolist()
        dtype = array.dtype.name
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            # JSON has no NaN or infinity: spell them as strings.
            values = [v if np.isfinite(v) else repr(v) for v in values]
    else:
        raise BundleError(f"cannot export {where}: arrays of {array.dtype} are not supported")
    return {"dtype": dtype, "shape": list(array.shape), "data": values}


def _calibration_to_json(calibration: Any, where: str) -> dict[str, Any]:
    if isinstance(calibration, IdentityCalibrator):
        return {"kind": "identity"}
    if isinstance(calibration, TemperatureCalibrator):
        return {"kind": "temperature", "temperature": float(calibration.temperature)}
    if isinstance(calibration, IsotonicCalibrator):
        regressors = []
        for k, regressor in enumerate(calibration.regressors):
            if not isinstance(regressor, IsotonicRegression) or not hasattr(
                regressor, "X_thresholds_"
            ):
                raise BundleError(
                    f"cannot export {where}: regressor {k} is not a fitted IsotonicRegression"
                )
            regressors.append(
                {
                    "params": {
                        "y_min": _optional_float(regressor.y_min),
                        "y_max": _optional_float(regressor.y_max),
                        "increasing": regressor.increasing,
                        "out_of_bounds": regressor.out_of_bounds,
                    },
                    "increasing_": bool(regressor.increasing_),
                    "X_min_": float(regressor.X_min_),
                    "X_max_": float(regressor.X_max_),
                    "X_thresholds_": np.asarray(regressor.X_thresholds_, np.float64).tolist(),
                    "y_thresholds_": np.asarray(regressor.y_thresholds_, np.float64).tolist(),
                }
            )
        return {"kind": "isotonic", "regressors": regressors}
    raise BundleError(
        f"cannot export {where}: calibration map {type(calibration).__name__} has no "
        "pickle-free form"
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _store_to_json(store: CalibratorStore, where: str) -> dict[str, Any]:
    users = {}
    for user, calibration in store.user_calibrators.items():
        if not isinstance(user, str):
            raise BundleError(f"cannot export {where}: user id {user!r} is not a string")
        users[user] = _calibration_to_json(calibration, f"{where} user {user!r}")
    return {
        "global": _calibration_to_json(store.global_calibrator, f"{where} global"),
        "users": users,
        "method": str(store.method),
    }


def _step_to_json(name: str, stage: Any, encoder: _Encoder) -> dict[str, Any]:
    classes = _stage_classes()
    cls_name = type(stage).__name__
    if classes.get(cls_name) is not type(stage):
        raise BundleError(
            f"cannot export step {name!r}: {type(stage).__module__}.{cls_name} is not a "
            "taskclf stage"
        )
    params = {
        key: encoder.value(value, f"{name}__{key}")
        for key, value in cast(Any, stage).get_params(deep=False).items()
    }
    derived = _DERIVED_STATE.get(cls_name, ())
    state = {
        key: encoder.value(value, f"{name}.{key}")
        for key, value in vars(stage).items()
        if _STATE_NAME.fullmatch(key) and key not in derived
    }
    return {"name": name, "class": cls_name, "params": params, "state": state}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_bundle_dir(directory: Path) -> bool:
    return (directory / MANIFEST).is_file() or (
        (directory / LEGACY_METADATA).is_file() and (directory / MODEL_FILE).is_file()
    )


def export_bundle_dir(
    pipeline: Pipeline,
    directory: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a fitted pipeline as a pickle-free bundle directory.

    The directory is assembled beside its destination and renamed into
    place, so a reader never sees half of it. An existing bundle directory
    at ``directory`` is replaced; any other non-empty directory is refused.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted taskclf pipeline.
    directory : path-like
        Destination directory.
    metadata : mapping, optional
        Your own JSON-ready entries, stored as ``extra``.

    Returns
    -------
    Path
        ``directory``.

    Raises
    ------
    BundleError
        If a stage is not a taskclf stage or holds a value without a JSON
        form, or ``directory`` is a non-empty directory of something else.

    See Also
    --------
    load_bundle_dir, taskclf.save_bundle

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from taskclf import build_pipeline, export_bundle_dir, load_bundle_dir
    >>> from taskclf.synth import make_activity_frame
    >>> frame = make_activity_frame(n_users=2, n_days=1, random_state=0)
    >>> pipe = build_pipeline(num_boost_round=5, num_threads=1).fit(
    ...     frame.drop(columns="label"), frame["label"])
    >>> target = export_bundle_dir(pipe, pathlib.Path(tempfile.mkdtemp()) / "model")
    >>> sorted(p.name for p in target.iterdir())
    ['bundle.json', 'model.txt', 'pipeline.json']
    >>> (load_bundle_dir(target).predict(frame) == pipe.predict(frame)).all()
    np.True_
    """
    target = Path(directory)
    predictor_of(pipeline, "export_bundle_dir")
    meta = make_metadata(pipeline, metadata)
    encoder = _Encoder()
    steps = [_step_to_json(name, stage, encoder) for name, stage in pipeline.steps]
    if target.exists():
        if not target.is_dir():
            raise BundleError(f"cannot export to {str(target)!r}: it is a file")
        if any(target.iterdir()) and not _is_bundle_dir(target):
            raise BundleError(
                f"cannot export to {str(target)!r}: a non-empty directory that is not a "
                "taskclf bundle directory"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, booster in encoder.boosters.items():
            (staging / name).write_text(booster.model_to_string(), encoding="utf-8")
        pipeline_json = {"format": DIR_FORMAT, "format_version": DIR_FORMAT_VERSION}
        pipeline_json["steps"] = steps
        try:
            text = json.dumps(pipeline_json, indent=1, allow_nan=False)
        except ValueError as exc:
            raise BundleError(f"cannot export: a parameter is not finite ({exc})") from None
        (staging / PIPELINE_FILE).write_text(text, encoding="utf-8")
        files = {p.name: _sha256_file(p) for p in sorted(staging.iterdir())}
        manifest = {
            "format": DIR_FORMAT,
            "format_version": DIR_FORMAT_VERSION,
            "metadata": meta.to_dict(),
            "files": files,
        }
        (staging / MANIFEST).write_text(
            json.dumps(manifest, indent=1, allow_nan=False), encoding="utf-8"
        )
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------
# Reading: JSON → Python values, every value checked
# ---------------------------------------------------------------------------


def _check_size(path: Path, limit: int) -> str:
    """``path``'s name for messages, once it exists and holds at most ``limit`` bytes."""
    where = f"bundle file {str(path)!r}"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BundleError(f"{where} is missing") from None
    if size > limit:
        raise BundleError(f"{where} is absurdly large ({size} bytes)")
    return where


def _read_json(path: Path) -> Any:
    where = _check_size(path, MAX_JSON_BYTES)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also 5000-digit numbers, nesting bombs
        raise BundleError(f"{where} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise BundleError(f"{where} cannot be read: {exc}") from None


def _load_booster(path: Path) -> Any:
    where = _check_size(path, MAX_MODEL_BYTES)
    import lightgbm as lgb

    try:
        text = path.read_text(encoding="utf-8")
        # LightGBM's parser can abort the process on malformed text: check first
        check_model_text(text, N_CLASSES)
        booster = lgb.Booster(model_str=text)
    except (UnicodeDecodeError, OSError, lgb.basic.LightGBMError, ValueError) as exc:
        raise BundleError(f"{where} is not a LightGBM model: {exc}") from None
    if booster.num_model_per_iteration() != N_CLASSES:
        raise BundleError(
            f"{where}: the model has {booster.num_model_per_iteration()} classes, "
            f"taskclf needs {N_CLASSES}"
        )
    return booster


class _Decoder:
    """Turns JSON read from ``pipeline.json`` back into values, checking each."""

    def __init__(self, directory: Path, where: str, digests: Mapping[str, str]) -> None:
        self.directory = directory
        self.where = where
        self.digests = digests
        self.boosters: dict[str, Any] = {}

    def fail(self, what: str, problem: str) -> BundleError:
        return BundleError(f"{self.where}: {what}: {problem}")

    def booster(self, name: object, what: str) -> Any:
        if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
            raise self.fail(what, f"model file name {name!r} is not allowed")
        if name not in self.digests:
            raise self.fail(what, f"model file {name!r} is not listed in {MANIFEST}")
        if name not in self.boosters:
            self.boosters[name] = _load_booster(self.directory / name)
        return self.boosters[name]

    def value(self, value: Any, what: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            if len(value) > MAX_ITEMS:
                raise self.fail(what, f"absurdly long list ({len(value)} items)")
            return [self.value(v, what) for v in value]
        if not isinstance(value, dict):  # pragma: no cover - JSON has no other types
            raise self.fail(what, f"unexpected {type(value).__name__}")
        markers = [k for k in value if k.startswith("$")]
        if not markers:
            if len(value) > MAX_ITEMS:
                raise self.fail(what, f"absurdly large mapping ({len(value)} keys)")
            return {k: self.value(v, f"{what}[{k!r}]") for k, v in value.items()}
        if len(value) != 1:
            raise self.fail(what, f"a tagged value must have one key, got {sorted(value)}")
        tag, body = next(iter(value.items()))
        decoders: dict[str, Callable[[Any, str], Any]] = {
            "$float": self.special_float,
            "$booster": self.booster,
            "$ndarray": self.array,
            "$label_encoder": self.label_encoder,
            "$calibration": self.calibration,
            "$calibrator_store": self.store,
            "$taxonomy": self.taxonomy,
        }
        if tag not in decoders:
            raise self.fail(what, f"unknown tag {tag!r}")
        return decoders[tag](body, what)

    def special_float(self, body: Any, what: str) -> float:
        if body not in ("nan", "inf", "-inf"):
            raise self.fail(what, f"{body!r} is not one of 'nan', 'inf', '-inf'")
        return float(body)

    def array(self, body: Any, what: str) -> np.ndarray:
        if not isinstance(body, dict) or set(body) != {"dtype", "shape", "data"}:
            raise self.fail(what, "an array needs exactly 'dtype', 'shape' and 'data'")
        dtype, shape, data = body["dtype"], body["shape"], body["data"]
        if dtype not in _DTYPES:
            raise self.fail(what, f"array dtype {dtype!r} is not one of {list(_DTYPES)}")
        if (
            not isinstance(shape, list)
            or len(shape) > 4
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        ):
            raise self.fail(what, f"array shape {shape!r} is not a list of sizes")
        if not isinstance(data, list) or len(data) != int(np.prod(shape, dtype=np.float64)):
            raise self.fail(what, f"array data does not hold {shape} values")
        kinds: tuple[type, ...] = (str,) if dtype == "str" else (bool, int, float)
        if dtype.startswith("float"):
            data = [float(v) if v in ("nan", "inf", "-inf") else v for v in data]
        if not all(isinstance(v, kinds) for v in data):
            raise self.fail(what, f"array data holds values that are not {dtype}")
        try:
            if dtype == "str":
                return np.asarray(data, dtype=object).reshape(shape)
            return np.asarray(data, dtype=dtype).reshape(shape)
        except (ValueError, OverflowError) as exc:
            raise self.fail(what, f"bad array: {exc}") from None

    def label_encoder(self, body: Any, what: str) -> LabelEncoder:
        if not isinstance(body, list) or not all(isinstance(v, (str, int, float)) for v in body):
            raise self.fail(what, "a label encoder needs a list of class values")
        if len(body) > MAX_ITEMS:
            raise self.fail(what, f"absurdly many classes ({len(body)})")
        try:
            return LabelEncoder().fit(body)
        except (TypeError, ValueError) as exc:
            raise self.fail(what, f"bad label encoder classes: {exc}") from None

    def calibration(self, body: Any, what: str) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            raise self.fail(what, "a calibration map needs a 'kind'")
        kind = body["kind"]
        expected = {
            "identity": {"kind"},
            "temperature": {"kind", "temperature"},
            "isotonic": {"kind", "regressors"},
        }
        if kind not in expected:
            raise self.fail(what, f"unknown calibration kind {kind!r}")
        if set(body) != expected[kind]:
            raise self.fail(what, f"a {kind} calibration needs keys {sorted(expected[kind])}")
        if kind == "identity":
            return IdentityCalibrator()
        if kind == "temperature":
            temperature = body["temperature"]
            if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
                raise self.fail(what, f"temperature {temperature!r} is not a number")
            try:
                return TemperatureCalibrator(temperature)
            except TaskclfError as exc:
                raise self.fail(what, str(exc)) from None
        regressors = body["regressors"]
        if not isinstance(regressors, list) or len(regressors) != N_CLASSES:
            raise self.fail(what, f"isotonic calibration needs {N_CLASSES} regressors")
        return IsotonicCalibrator(
            tuple(self.isotonic(r, f"{what} regressor {k}") for k, r in enumerate(regressors))
        )

    def isotonic(self, body: Any, what: str) -> IsotonicRegression:
        keys = {"params", "increasing_", "X_min_", "X_max_", "X_thresholds_", "y_thresholds_"}
        if not isinstance(body, dict) or set(body) != keys:
            raise self.fail(what, f"needs exactly the keys {sorted(keys)}")
        params = body["params"]
        if not isinstance(params, dict) or set(params) != {
            "y_min",
            "y_max",
            "increasing",
            "out_of_bounds",
        }:
            raise self.fail(what, "params need y_min, y_max, increasing, out_of_bounds")
        if params["out_of_bounds"] not in ("nan", "clip", "raise"):
            raise self.fail(what, f"out_of_bounds {params['out_of_bounds']!r} is not allowed")
        if params["increasing"] not in (True, False, "auto"):
            raise self.fail(what, f"increasing {params['increasing']!r} is not allowed")
        for bound in ("y_min", "y_max"):
            if params[bound] is not None and not _is_number(params[bound]):
                raise self.fail(what, f"{bound} {params[bound]!r} is not a number")
        if not isinstance(body["increasing_"], bool):
            raise self.fail(what, "increasing_ must be true or false")
        x, y = body["X_thresholds_"], body["y_thresholds_"]
        for name, values in (("X_thresholds_", x), ("y_thresholds_", y)):
            if not isinstance(values, list) or not values or len(values) > MAX_ITEMS:
                raise self.fail(what, f"{name} must be a non-empty list")
            if not all(_is_number(v) and np.isfinite(v) for v in values):
                raise self.fail(what, f"{name} must hold finite numbers")
        if len(x) != len(y):
            raise self.fail(what, "X_thresholds_ and y_thresholds_ differ in length")
        x_array = np.asarray(x, dtype=np.float64)
        if np.any(np.diff(x_array) < 0):
            raise self.fail(what, "X_thresholds_ is not sorted")
        for bound in ("X_min_", "X_max_"):
            if not _is_number(body[bound]) or not np.isfinite(body[bound]):
                raise self.fail(what, f"{bound} must be a finite number")
        regressor = IsotonicRegression(**params)
        regressor.__setstate__(
            {
                **vars(regressor),
                "increasing_": body["increasing_"],
                "X_min_": float(body["X_min_"]),
                "X_max_": float(body["X_max_"]),
                "X_thresholds_": x_array,
                "y_thresholds_": np.asarray(y, dtype=np.float64),
                "_sklearn_version": sklearn.__version__,
            }
        )
        return regressor

    def store(self, body: Any, what: str) -> CalibratorStore:
        if not isinstance(body, dict) or set(body) != {"global", "users", "method"}:
            raise self.fail(what, "a calibrator store needs 'global', 'users' and 'method'")
        users = body["users"]
        if not isinstance(users, dict) or len(users) > MAX_ITEMS:
            raise self.fail(what, "'users' must map user ids to calibration maps")
        if not isinstance(body["method"], str):
            raise self.fail(what, "'method' must be a string")
        return CalibratorStore(
            self.calibration(body["global"], f"{what} global"),
            {u: self.calibration(c, f"{what} user {u!r}") for u, c in users.items()},
            method=body["method"],
        )

    def taxonomy(self, body: Any, what: str) -> Any:
        if not isinstance(body, dict):
            raise self.fail(what, "a taxonomy must be a JSON object")
        try:
            return taxonomy_from_dict(body)
        except TaskclfError as exc:
            raise self.fail(what, f"bad taxonomy: {exc}") from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _build_stage(step: Any, index: int, decoder: _Decoder) -> tuple[str, Any]:
    what = f"step {index}"
    if not isinstance(step, dict) or set(step) != {"name", "class", "params", "state"}:
        raise decoder.fail(what, "needs exactly the keys 'name', 'class', 'params', 'state'")
    name, cls_name, params, state = step["name"], step["class"], step["params"], step["state"]
    if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
        raise decoder.fail(what, f"step name {name!r} is not a plain identifier")
    what = f"step {name!r}"
    classes = _stage_classes()
    if not isinstance(cls_name, str) or cls_name not in classes:
        raise decoder.fail(what, f"class {cls_name!r} is not one of {sorted(classes)}")
    if not isinstance(params, dict) or not isinstance(state, dict):
        raise decoder.fail(what, "'params' and 'state' must be JSON objects")
    cls = classes[cls_name]
    allowed = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise decoder.fail(what, f"unknown parameter(s) {unknown} for {cls_name}")
    bad_state = sorted(k for k in state if not _STATE_NAME.fullmatch(k) or k in allowed)
    if bad_state:
        raise decoder.fail(what, f"state name(s) {bad_state} are not allowed")
    stage = cls(**{k: decoder.value(v, f"{what} parameter {k!r}") for k, v in params.items()})
    if state and cls_name in _DERIVED_STATE:
        # The derived attributes come from the parameters alone: refit (no data).
        try:
            stage.fit(None)
        except (TaskclfError, TypeError, ValueError) as exc:
            raise decoder.fail(what, str(exc)) from None
    for key, value in state.items():
        if key in _DERIVED_STATE.get(cls_name, ()):
            raise decoder.fail(what, f"state {key!r} is rebuilt, not read")
        setattr(stage, key, decoder.value(value, f"{what} state {key!r}"))
    # Each taskclf stage checks its parameters in its own _validate_params
    # (scikit-learn's BaseEstimator has one of another kind: skip that).
    validate = getattr(cls, "_validate_params", None)
    if validate is not None and validate is not getattr(BaseEstimator, "_validate_params", None):
        try:
            validate(stage)
        except (TaskclfError, TypeError, ValueError) as exc:
            raise decoder.fail(what, str(exc)) from None
    return name, stage


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _manifest(directory: Path) -> tuple[BundleMetadata, dict[str, str]]:
    path = directory / MANIFEST
    where = f"bundle file {str(path)!r}"
    data = _read_json(path)
    if not isinstance(data, dict) or set(data) != {
        "format",
        "format_version",
        "metadata",
        "files",
    }:
        raise BundleError(
            f"{where}: needs exactly the keys 'format', 'format_version', 'metadata', 'files'"
        )
    if data["format"] != DIR_FORMAT:
        raise BundleError(f"{where}: format {data['format']!r} is not {DIR_FORMAT!r}")
    if data["format_version"] != DIR_FORMAT_VERSION or isinstance(data["format_version"], bool):
        raise BundleError(
            f"{where}: format version {data['format_version']!r}; this taskclf reads "
            f"version {DIR_FORMAT_VERSION}"
        )
    files = data["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{where}: 'files' must map file names to SHA-256 digests")
    for name, digest in files.items():
        if "/" in name or "\\" in name or name in ("", ".", "..") or os.sep in name:
            raise BundleError(f"{where}: file name {name!r} has a path separator")
        if name != PIPELINE_FILE and not _MODEL_NAME.fullmatch(name):
            raise BundleError(f"{where}: file name {name!r} is not allowed")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise BundleError(f"{where}: digest of {name!r} is not a SHA-256")
    if PIPELINE_FILE not in files:
        raise BundleError(f"{where}: lists no {PIPELINE_FILE}")
    try:
        meta = BundleMetadata.from_dict(data["metadata"])
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None
    for name, digest in files.items():
        file = directory / name
        if not file.is_file():
            raise BundleError(f"bundle file {str(file)!r} is missing")
        if _sha256_file(file) != digest:
            raise BundleError(
                f"bundle file {str(file)!r} is corrupt or tampered with: SHA-256 mismatch"
            )
    return meta, files


def _load_current(directory: Path) -> Pipeline:
    meta, files = _manifest(directory)
    check_schema_and_labels(meta, f"bundle directory {str(directory)!r}")
    path = directory / PIPELINE_FILE
    where = f"bundle file {str(path)!r}"
    data = _read_json(path)
    if not isinstance(data, dict) or set(data) != {"format", "format_version", "steps"}:
        raise BundleError(f"{where}: needs exactly the keys 'format', 'format_version', 'steps'")
    if data["format"] != DIR_FORMAT or data["format_version"] != DIR_FORMAT_VERSION:
        raise BundleError(f"{where}: not a {DIR_FORMAT} version {DIR_FORMAT_VERSION} file")
    steps = data["steps"]
    if not isinstance(steps, list) or not steps or len(steps) > 64:
        raise BundleError(f"{where}: 'steps' must be a non-empty list of stages")
    decoder = _Decoder(directory, where, files)
    built = [_build_stage(step, i, decoder) for i, step in enumerate(steps)]
    names = [name for name, _ in built]
    if len(set(names)) != len(names):
        raise BundleError(f"{where}: step names repeat: {names}")
    try:
        pipeline = Pipeline(built)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where}: not a valid pipeline: {exc}") from None
    _check_model_schema(pipeline, meta.schema_version, where)
    return pipeline


def _check_model_schema(pipeline: Pipeline, version: str, where: str) -> None:
    try:
        predictor = predictor_of(pipeline, where)
        found = predictor.schema_.version
    except TaskclfError as exc:
        raise BundleError(f"{where}: {exc}") from None
    if found != version:
        raise BundleError(
            f"{where}: the metadata says schema {version} but the model is a {found} model"
        )
    _dry_run(pipeline, SCHEMAS[version], where)


def _dry_run(pipeline: Pipeline, schema: Any, where: str) -> None:
    """Run ``pipeline`` on an empty frame of ``schema``: refuse it at load if it cannot run.

    Every file is valid on its own, yet the steps may not fit together (a
    step left out, an encoder without the model's categorical columns, a
    vocabulary of values that cannot be sorted): such a bundle would fail
    on its first frame, so it fails here, naming the file.
    """
    import pandas as pd

    categorical = set(schema.categorical_columns)
    columns = {
        name: pd.Series([], dtype=object if name in categorical else np.float64)
        for name in schema.feature_columns
    }
    columns["bucket_start_ts"] = pd.Series([], dtype="datetime64[ns, UTC]")
    try:
        pipeline.predict(pd.DataFrame(columns))
    except Exception as exc:
        raise BundleError(
            f"{where}: the pipeline cannot run (tried on an empty {schema.version} frame): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _load_legacy(directory: Path) -> Pipeline:
    """Read a taskclf 0.4 model directory."""
    from taskclf.pipeline import build_pipeline

    meta, vocabulary, threshold = _legacy_metadata(directory)
    booster = _load_booster(directory / MODEL_FILE)
    where = f"bundle directory {str(directory)!r}"
    schema = SCHEMAS[meta.schema_version]
    if booster.num_feature() != schema.n_features:
        raise BundleError(
            f"bundle file {str(directory / MODEL_FILE)!r}: the model has "
            f"{booster.num_feature()} features, schema {schema.version} has {schema.n_features}"
        )
    if vocabulary is None:
        warnings.warn(
            f"{where} has no {LEGACY_ENCODERS}: the categorical columns "
            f"{list(schema.categorical_columns)} are treated as unseen values",
            TaskclfWarning,
            stacklevel=3,
        )
        vocabulary = {c: [] for c in schema.categorical_columns}
    pipeline = build_pipeline(
        booster,
        vocabulary,
        reject_threshold=threshold,
        schema_version=schema.version,
    )
    _check_model_schema(pipeline, schema.version, where)
    return pipeline


def _legacy_metadata(
    directory: Path,
) -> tuple[BundleMetadata, dict[str, list[Any]] | None, float | None]:
    path = directory / LEGACY_METADATA
    where = f"bundle file {str(path)!r}"
    data = _read_json(path)
    if not isinstance(data, dict):
        raise BundleError(f"{where}: must hold a JSON object")
    missing = [k for k in ("schema_version", "schema_hash", "label_set") if k not in data]
    if missing:
        raise BundleError(f"{where}: lacks key(s) {missing}")
    version, schema_hash, labels = data["schema_version"], data["schema_hash"], data["label_set"]
    if not isinstance(version, str) or not isinstance(schema_hash, str):
        raise BundleError(f"{where}: schema_version and schema_hash must be strings")
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise BundleError(f"{where}: label_set must be a list of strings")
    if len(labels) > 1000:
        raise BundleError(f"{where}: label_set is absurdly long ({len(labels)})")
    threshold = data.get("reject_threshold")
    if threshold is not None and (not _is_number(threshold) or not 0.0 <= threshold <= 1.0):
        raise BundleError(f"{where}: reject_threshold {threshold!r} is not a number in [0, 1]")
    created = data.get("created_at", "")
    meta = BundleMetadata(
        schema_version=version,
        schema_hash=schema_hash,
        label_set=tuple(labels),
        created_at=created if isinstance(created, str) else "",
        versions={},
        steps=(),
        params={"reject__threshold": threshold},
        extra={k: v for k, v in data.items() if k not in ("schema_version", "schema_hash")},
    )
    check_schema_and_labels(meta, where)
    encoders = directory / LEGACY_ENCODERS
    vocabulary = None
    if encoders.exists():
        vocabulary = _legacy_vocabulary(encoders, SCHEMAS[version].categorical_columns)
    return meta, vocabulary, threshold


def _legacy_vocabulary(path: Path, categorical: tuple[str, ...]) -> dict[str, list[Any]]:
    where = f"bundle file {str(path)!r}"
    data = _read_json(path)
    if not isinstance(data, dict):
        raise BundleError(f"{where}: must map column names to vocabulary lists")
    vocabulary = {}
    for column, values in data.items():
        if column not in categorical:
            raise BundleError(
                f"{where}: {column!r} is not a categorical column of the model "
                f"({list(categorical)})"
            )
        if not isinstance(values, list) or len(values) > MAX_ITEMS:
            raise BundleError(f"{where}: the vocabulary of {column!r} must be a list")
        kinds = {type(v) for v in values}
        if not (kinds <= {str} or kinds <= {int, float}):
            raise BundleError(
                f"{where}: the vocabulary of {column!r} must hold strings (or numbers)"
            )
        vocabulary[column] = sorted(set(values))
    return vocabulary


def load_bundle_dir(directory: str | os.PathLike[str]) -> Pipeline:
    """Rebuild a pipeline from a bundle directory, without unpickling anything.

    Reads directories written by :func:`export_bundle_dir` (checking every
    file's SHA-256, the schema hash and the label set) and the model
    directories of taskclf 0.4 (``model.txt``, ``metadata.json`` with
    ``schema_version``, ``schema_hash``, ``label_set`` and
    ``reject_threshold``, optional ``categorical_encoders.json``), which
    become the standard seven-stage pipeline.

    Parameters
    ----------
    directory : path-like

    Returns
    -------
    sklearn.pipeline.Pipeline
        Ready to ``predict``; identical in its predictions to the exported
        pipeline.

    Raises
    ------
    BundleError
        Naming the file and the cause: a missing or corrupt file, a digest
        mismatch, a schema or label-set mismatch, or hostile JSON (wrong
        types, missing keys, absurd sizes, names with path separators,
        classes that are not taskclf stages).

    Warns
    -----
    TaskclfWarning
        For a taskclf 0.4 directory without ``categorical_encoders.json``.
    """
    path = Path(directory)
    if not path.exists():
        raise BundleError(f"bundle directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise BundleError(
            f"bundle directory {str(path)!r} is a file; load bundle files with load_bundle"
        )
    if (path / MANIFEST).exists():
        return _load_current(path)
    if (path / LEGACY_METADATA).exists() and (path / MODEL_FILE).exists():
        return _load_legacy(path)
    raise BundleError(
        f"bundle directory {str(path)!r} is not a taskclf bundle: it has neither "
        f"{MANIFEST} nor {LEGACY_METADATA} with {MODEL_FILE}"
    )


@attrs.frozen
class BundleDirInfo:
    """What a bundle directory says about itself.

    Attributes
    ----------
    path : Path
    metadata : BundleMetadata
    files : dict of str to str
        File name → SHA-256 (as recorded; for a 0.4 directory as found).
    legacy : bool
        True for a taskclf 0.4 model directory.
    """

    path: Path
    metadata: BundleMetadata
    files: dict[str, str]
    legacy: bool = False


def read_bundle_dir_info(directory: str | os.PathLike[str]) -> BundleDirInfo:
    """Read a bundle directory's metadata and verify its files' digests.

    Raises
    ------
    BundleError
        As :func:`load_bundle_dir` for the manifest and metadata files.
    """
    path = Path(directory)
    if not path.is_dir():
        raise BundleError(f"bundle directory {str(path)!r} does not exist or is not a directory")
    if (path / MANIFEST).exists():
        meta, files = _manifest(path)
        return BundleDirInfo(path, meta, dict(files))
    if (path / LEGACY_METADATA).exists() and (path / MODEL_FILE).exists():
        meta, _, _ = _legacy_metadata(path)
        files = {
            p.name: _sha256_file(p)
            for p in sorted(path.iterdir())
            if p.is_file() and p.suffix in (".txt", ".json")
        }
        return BundleDirInfo(path, meta, files, legacy=True)
    raise BundleError(f"bundle directory {str(path)!r} is not a taskclf bundle")


__all__ = [
    "BundleDirInfo",
    "export_bundle_dir",
    "load_bundle_dir",
    "read_bundle_dir_info",
]
