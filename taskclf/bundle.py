"""Bundles: one file holding a fitted pipeline and its metadata (layout: docs/bundles.md).

The metadata and digests are checked before anything is unpickled; unpickling still
runs the writer's code, so for bundles from untrusted sources use :mod:`taskclf.bundle_dir`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import struct
import warnings
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Final

import attrs
import joblib
import numpy as np
import pandas as pd
from attrs import validators as v
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from taskclf._columns import USER_ID
from taskclf._io import atomic_write_bytes, read_regular_file
from taskclf.core.schema import SCHEMAS
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    BundleError,
    BundleVersionWarning,
    InvalidParameterError,
    NotFittedError,
    ReaderError,
)
from taskclf.stages.model import BoosterPredictor

MAGIC: Final = b"TASKCLF-BUNDLE"
FORMAT_VERSION: Final = 1
_PREFIX: Final = struct.Struct(">14sHI")
MAX_HEADER_BYTES: Final = 16 * 1024 * 1024
"""Largest JSON header (and bundle directory manifest) a reader accepts."""
MAX_BUNDLE_BYTES: Final = 2 * 1024 * 1024 * 1024
"""Largest bundle file (and pickle-free pipeline file) a reader accepts."""
CHECKED_LIBRARIES: Final = ("taskclf", "scikit-learn", "lightgbm", "numpy", "pandas")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def library_versions() -> dict[str, str]:
    """Versions of taskclf, the libraries a saved pipeline depends on, and Python."""
    from taskclf import __version__

    names = (*CHECKED_LIBRARIES[1:], "joblib")
    versions = {"taskclf": __version__, **{n: importlib_metadata.version(n) for n in names}}
    return {**versions, "python": platform.python_version()}


def training_fingerprint(X: pd.DataFrame, y: Any = None) -> str:
    """SHA-256 (hex) of a training frame's column names and rows (index excluded), and labels."""
    digest = hashlib.sha256(json.dumps([str(c) for c in X.columns]).encode("utf-8"))
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy(np.uint64).tobytes())
    if y is not None:
        labels = pd.util.hash_pandas_object(pd.Series(np.asarray(y, dtype=object)), index=False)
        digest.update(labels.to_numpy(np.uint64).tobytes())
    return digest.hexdigest()


def record_training(pipeline: Pipeline, X: pd.DataFrame, y: Any = None) -> Pipeline:
    """Set the ``predict`` step's ``training_fingerprint_`` (for bundles); return ``pipeline``."""
    predictor_of(pipeline, "record_training").training_fingerprint_ = training_fingerprint(X, y)
    return pipeline


def _to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


_NAMES = v.deep_iterable(v.instance_of(str), v.instance_of(tuple))


@attrs.frozen
class BundleMetadata:
    """What a bundle records beside the pipeline; docs/bundles.md has the table of fields."""

    schema_version: str = attrs.field(validator=v.instance_of(str))
    schema_hash: str = attrs.field(validator=v.instance_of(str))
    label_set: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_NAMES)
    created_at: str = attrs.field(validator=v.instance_of(str))
    versions: dict[str, str] = attrs.field(
        validator=v.deep_mapping(v.instance_of(str), v.instance_of(str), v.instance_of(dict))
    )
    steps: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_NAMES)
    params: dict[str, Any] = attrs.field(factory=dict, validator=v.instance_of(dict))
    training_fingerprint: str | None = attrs.field(
        default=None, validator=v.optional([v.instance_of(str), v.matches_re(_SHA256)])
    )
    training_metrics: dict[str, Any] | None = attrs.field(
        default=None, validator=v.optional(v.instance_of(dict))
    )
    extra: dict[str, Any] = attrs.field(factory=dict, validator=v.instance_of(dict))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (absent training facts are left out)."""
        out = attrs.asdict(self, filter=lambda _, value: value is not None)
        return {key: list(v) if isinstance(v, tuple) else v for key, v in out.items()}

    @classmethod
    def from_dict(cls, data: object, where: str = "bundle") -> BundleMetadata:
        """Build from a mapping read from JSON, or raise BundleError naming ``where`` and field."""
        if not isinstance(data, dict):
            message = f"metadata must be a JSON object, got {type(data).__name__}"
            raise BundleError(f"{where}: {message}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where}: metadata: {exc}") from None


def _json_ready(value: Any) -> Any:
    """``value`` as plain JSON types (numpy scalars as numbers), or raise TypeError/ValueError."""

    def plain(item: Any) -> Any:
        if isinstance(item, np.generic):
            return item.item()
        raise TypeError(f"a {type(item).__name__} is not JSON-ready")

    return json.loads(json.dumps(value, allow_nan=False, default=plain))


def _scalar_params(pipeline: Pipeline) -> dict[str, Any]:
    """The JSON-ready ``step__param`` values of ``pipeline``, without containers over 64 items."""
    out = {}
    for key, value in pipeline.get_params(deep=True).items():
        if "__" not in key or (isinstance(value, (list, tuple, Mapping)) and len(value) > 64):
            continue
        try:
            out[key] = _json_ready(value)
        except (TypeError, ValueError):
            continue
    return out


def predictor_of(pipeline: object, where: str) -> Any:
    """The fitted ``predict`` step of a taskclf pipeline, or raise BundleError/NotFittedError."""
    if not isinstance(pipeline, Pipeline) or "predict" not in pipeline.named_steps:
        raise BundleError(
            f"{where}: expected a taskclf pipeline (sklearn Pipeline with a 'predict' "
            f"step, as build_pipeline makes), got {type(pipeline).__name__}"
        )
    try:
        check_is_fitted(pipeline.named_steps["predict"])
    except SklearnNotFittedError:
        raise NotFittedError(
            f"{where}: the pipeline is not fitted; call pipeline.fit first"
        ) from None
    return pipeline.named_steps["predict"]


def make_metadata(
    pipeline: Pipeline, extra: Mapping[str, Any] | None, where: str = "save_bundle"
) -> BundleMetadata:
    """The metadata :func:`save_bundle` records for a fitted pipeline."""
    predictor = predictor_of(pipeline, where)
    try:
        extra_json = _json_ready(dict(extra or {}))
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"{where}: metadata: {exc} (it must be JSON-ready)") from None
    calibrate = pipeline.named_steps.get("calibrate")
    names = [f"{n}_{w}" for n in ("brier", "log_loss") for w in ("before", "after")]
    names += ["accuracy", "macro_f1"]
    scores = {f"oof_{name}": getattr(calibrate, f"{name}_", None) for name in names}
    metrics = {k: x for k, x in scores.items() if isinstance(x, float) and np.isfinite(x)}
    fingerprint = getattr(predictor, "training_fingerprint_", None)
    return BundleMetadata(
        schema_version=predictor.schema_.version,
        schema_hash=predictor.schema_.schema_hash,
        label_set=CLASS_ORDER,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions=library_versions(),
        steps=tuple(name for name, _ in pipeline.steps),
        params=_scalar_params(pipeline),
        training_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        training_metrics=metrics or None,
        extra=extra_json,
    )


def _series(version: str) -> tuple[int, ...] | None:
    """The part of ``version`` that must match: the major version, or major.minor while 0.x."""
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    if match is None:
        return None
    major, minor = int(match[1]), int(match[2] or 0)
    return (major,) if major else (0, minor)


def check_compatibility(meta: BundleMetadata, where: str, *, versions: bool = True) -> None:
    """Refuse other schemas and label sets (and major library versions; warn on minor ones)."""
    schema = SCHEMAS.get(meta.schema_version)
    if schema is None:
        raise BundleError(
            f"{where}: unknown schema version {meta.schema_version!r}; this taskclf "
            f"knows {sorted(SCHEMAS)}"
        )
    if meta.schema_hash != schema.schema_hash:
        raise BundleError(
            f"{where}: schema hash mismatch: the bundle records {meta.schema_hash!r} for "
            f"schema {schema.version}, this taskclf has {schema.schema_hash!r}"
        )
    if sorted(meta.label_set) != sorted(CLASS_ORDER):
        raise BundleError(
            f"{where}: label set mismatch: the bundle has {sorted(meta.label_set)}, "
            f"this taskclf has {sorted(CLASS_ORDER)}"
        )
    if not versions:
        return
    current = library_versions()
    drift = []
    for name in CHECKED_LIBRARIES:
        saved = meta.versions.get(name, "")
        if _series(saved) is None:
            raise BundleError(f"{where}: the metadata records no readable {name} version")
        if saved == current[name] or _series(current[name]) is None:
            continue
        if _series(saved) != _series(current[name]):
            series = ".".join(map(str, _series(saved) or ()))
            raise BundleError(
                f"{where}: written with {name} {saved}, but this is {name} {current[name]}: "
                f"incompatible versions. Install {name} {series}.x, or load the model there "
                "and re-export it as a pickle-free bundle directory (taskclf.export_bundle_dir)"
            )
        drift.append(f"{name} {saved} (now {current[name]})")
    if drift:
        message = f"{where}: written with other library versions: {', '.join(drift)}"
        warnings.warn(message, BundleVersionWarning, stacklevel=3)


def _upgrade(pipeline: Pipeline) -> None:
    """Move the ``user_id`` vocabulary of an older pipeline from its encoder to its model stage."""
    encoder, predictor = (
        getattr(step, "estimator", step)  # in a FrozenEstimator or not
        for step in (pipeline.named_steps.get("encode"), pipeline.named_steps["predict"])
    )
    if isinstance(predictor, BoosterPredictor) and not hasattr(predictor, "user_vocabulary_"):
        predictor.user_vocabulary_ = getattr(encoder, "vocabulary_", {}).pop(USER_ID, None)
        predictor.__dict__ = {**BoosterPredictor().get_params(), **predictor.__dict__}  # new params


def check_runs(pipeline: Any, meta: BundleMetadata, where: str) -> Pipeline:
    """Refuse a loaded pipeline that is not of ``meta``'s schema or cannot predict one row."""
    try:
        found = predictor_of(pipeline, where).schema_.version
        _upgrade(pipeline)
        if found != meta.schema_version:
            raise BundleError(
                f"{where}: the metadata says schema {meta.schema_version} but the model is a "
                f"{found} model"
            )
        schema = SCHEMAS[found]
        row: dict[str, list[Any]] = {
            c: ["?"] if c in schema.categorical_columns else [0.0] for c in schema.feature_columns
        }
        row["bucket_start_ts"] = [pd.Timestamp("2000-01-03", tz="UTC")]
        pipeline.predict(pd.DataFrame(row))
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(
            f"{where}: this taskclf cannot run the pipeline saved by taskclf "
            f"{meta.versions.get('taskclf', '?')} ({type(exc).__name__}: {exc}); "
            "fit it again with this taskclf and save it anew"
        ) from None
    return pipeline


def encode_bundle(header: Mapping[str, Any], payload: bytes) -> bytes:
    """The bytes of a bundle file with this ``header`` and ``payload``."""
    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(text))
    return b"".join((prefix, text, hashlib.sha256(text).digest(), payload))


def decode_bundle(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """Split a bundle's bytes into its header and payload, both verified, or raise BundleError."""
    if not data or not data.startswith(MAGIC[: len(data)]):
        raise BundleError(f"{where} is {'empty' if not data else 'not a taskclf bundle'}")
    if len(data) < _PREFIX.size:
        raise BundleError(f"{where} is truncated ({len(data)} bytes)")
    _, version, length = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{where} has bundle format version {version}; this taskclf reads version "
            f"{FORMAT_VERSION} (a newer taskclf wrote it, or the file is corrupt)"
        )
    if length > MAX_HEADER_BYTES:
        raise BundleError(f"{where} is corrupt: header length {length} is absurd")
    text, digest = data[_PREFIX.size :][:length], data[_PREFIX.size + length :][:32]
    if len(digest) < 32:
        raise BundleError(f"{where} is truncated ({len(data)} bytes)")
    if hashlib.sha256(text).digest() != digest:
        raise BundleError(f"{where} is corrupt or tampered with: header digest mismatch")
    try:
        header = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also 5000-digit numbers, nesting bombs
        raise BundleError(f"{where} is corrupt: header is not JSON ({exc})") from None
    described = header.get("payload") if isinstance(header, dict) else None
    if not (
        isinstance(described, dict)
        and described.get("serializer") == "joblib"
        and _SHA256.fullmatch(str(described.get("sha256")))
        and type(described.get("length")) is int
    ):
        raise BundleError(f"{where} is corrupt: header lacks a valid payload description")
    payload = data[_PREFIX.size + length + 32 :]
    if len(payload) != described["length"]:
        state = "truncated" if len(payload) < described["length"] else "corrupt"
        raise BundleError(
            f"{where} is {state}: payload has {len(payload)} bytes, the header says "
            f"{described['length']}"
        )
    if hashlib.sha256(payload).hexdigest() != described["sha256"]:
        raise BundleError(f"{where} is corrupt or tampered with: payload SHA-256 mismatch")
    return header, payload


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of a bundle's regular file of at most ``limit`` bytes, or raise BundleError."""
    try:
        return read_regular_file(path, limit, "bundle file")
    except ReaderError as exc:
        raise BundleError(str(exc)) from None


def read_json(path: Path, limit: int) -> Any:
    """The JSON value of a bundle's file of at most ``limit`` bytes, or raise BundleError."""
    try:
        return json.loads(read_file(path, limit).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also 5000-digit numbers, nesting bombs
        raise BundleError(f"bundle file {str(path)!r} is not valid JSON: {exc}") from None


@attrs.frozen
class BundleInfo:
    """What a bundle file says about itself, read without unpickling.

    ``file_sha256`` is the whole file's (as ``sha256sum`` prints it).
    """

    path: Path
    metadata: BundleMetadata
    file_sha256: str
    payload_sha256: str
    payload_bytes: int
    format_version: int = FORMAT_VERSION


def _read_bundle(path: Path) -> tuple[BundleInfo, bytes]:
    where = f"bundle file {str(path)!r}"
    if path.is_dir():
        raise BundleError(f"{where} is a directory; load bundle directories with load_bundle_dir")
    data = read_file(path, MAX_BUNDLE_BYTES)
    header, payload = decode_bundle(data, where)
    meta = BundleMetadata.from_dict(header.get("metadata"), where)
    digest = hashlib.sha256(data).hexdigest()
    return BundleInfo(path, meta, digest, header["payload"]["sha256"], len(payload)), payload


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read and verify a bundle file's metadata and digests (without unpickling), or raise
    BundleError naming the file."""
    return _read_bundle(Path(path))[0]


def save_bundle(
    pipeline: Pipeline, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write a fitted pipeline and its :class:`BundleMetadata` to one file, atomically.

    ``path`` (conventionally ``*.taskclf``) is replaced if it exists, and returned;
    ``metadata`` (your own JSON-ready entries) is stored as ``extra``. Raises BundleError,
    NotFittedError or InvalidParameterError if ``pipeline`` is not a fitted taskclf
    pipeline or ``metadata`` not JSON-ready.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from taskclf import build_pipeline, save_bundle, load_bundle
    >>> from taskclf.synth import make_activity_frame
    >>> frame = make_activity_frame(n_users=2, n_days=1, random_state=0)
    >>> pipe = build_pipeline(num_boost_round=5, num_threads=1).fit(
    ...     frame.drop(columns="label"), frame["label"])
    >>> path = save_bundle(pipe, pathlib.Path(tempfile.mkdtemp()) / "model.taskclf")
    >>> (load_bundle(path).predict(frame) == pipe.predict(frame)).all()
    np.True_
    """
    meta = make_metadata(pipeline, metadata)
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    payload = buffer.getvalue()
    described = {"sha256": hashlib.sha256(payload).hexdigest(), "length": len(payload)}
    header = {"metadata": meta.to_dict(), "payload": {**described, "serializer": "joblib"}}
    return atomic_write_bytes(path, encode_bundle(header, payload))


def load_bundle(path: str | os.PathLike[str], *, sha256: str | None = None) -> Pipeline:
    """Verify a bundle file and its compatibility, then unpickle the pipeline.

    Unpickling runs the writer's code: load bundles only from sources you trust.

    ``sha256`` is the expected SHA-256 (hex) of the whole file, as ``sha256sum``
    prints it. Raises BundleError naming the file and the cause (docs/bundles.md
    lists what is checked); warns (BundleVersionWarning) when a library's minor or
    patch version differs from the writer's.
    """
    path = Path(path)
    where = f"bundle file {str(path)!r}"
    expected = None if sha256 is None else str(sha256).strip().lower()
    if expected is not None and not _SHA256.fullmatch(expected):
        raise InvalidParameterError(f"sha256 must be 64 hex digits, got {sha256!r}")
    info, payload = _read_bundle(path)
    if expected is not None and info.file_sha256 != expected:
        raise BundleError(
            f"{where}: SHA-256 mismatch: expected {expected}, the file has {info.file_sha256}"
        )
    check_compatibility(info.metadata, where)
    try:
        pipeline = joblib.load(io.BytesIO(payload))
    except Exception as exc:
        raise BundleError(f"{where}: the payload cannot be unpickled: {exc!r}") from None
    return check_runs(pipeline, info.metadata, where)
