"""Bundles: one file holding a fitted pipeline and its metadata.

A bundle file is laid out as::

    b"TASKCLF-BUNDLE"          14 bytes, magic
    format version             2 bytes, big-endian unsigned
    header length n            4 bytes, big-endian unsigned
    header                     n bytes, UTF-8 JSON (metadata, payload digest)
    SHA-256 of the header      32 bytes
    payload                    the joblib-pickled pipeline

so that the metadata can be read, and the payload's SHA-256 checked,
before anything is unpickled. :func:`save_bundle` writes it atomically;
:func:`load_bundle` verifies it, checks the recorded schema, label set and
library versions against this installation, and only then unpickles.

.. warning::

   Unpickling runs code chosen by whoever wrote the file. The digests
   protect against corruption and, with a digest pinned by the caller
   (``load_bundle(path, sha256=...)``), against substitution; they do not
   make a bundle from an untrusted source safe. For such bundles use the
   pickle-free format of :mod:`taskclf.bundle_dir`
   (:func:`~taskclf.export_bundle_dir` / :func:`~taskclf.load_bundle_dir`).
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
from sklearn.pipeline import Pipeline

from taskclf._io import atomic_write_bytes
from taskclf.core.schema import SCHEMAS
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    BundleError,
    BundleVersionWarning,
    InvalidParameterError,
    NotFittedError,
    TaskclfError,
)

MAGIC: Final = b"TASKCLF-BUNDLE"
FORMAT_VERSION: Final = 1
_PREFIX: Final = struct.Struct(">14sHI")
_DIGEST_BYTES: Final = 32
MAX_HEADER_BYTES: Final = 16 * 1024 * 1024
"""Largest header a reader accepts (a guard against absurd lengths)."""

CHECKED_LIBRARIES: Final = ("taskclf", "scikit-learn", "lightgbm", "numpy", "pandas")
"""Libraries whose versions are recorded and compared when loading."""

_HEX64: Final = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Versions of taskclf and the libraries a pickled pipeline depends on."""
    from taskclf import __version__

    versions = {"taskclf": __version__}
    for name in ("scikit-learn", "lightgbm", "numpy", "pandas", "joblib"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:  # pragma: no cover
            versions[name] = "unknown"
    versions["python"] = platform.python_version()
    return versions


def training_fingerprint(X: pd.DataFrame, y: Any = None) -> str:
    """SHA-256 (hex) identifying a training frame (and its labels).

    Built from :func:`pandas.util.hash_pandas_object` of the rows (index
    excluded) and the column names, so that the same data in the same
    order gives the same fingerprint.

    Examples
    --------
    >>> import pandas as pd
    >>> a = training_fingerprint(pd.DataFrame({"x": [1, 2]}))
    >>> a == training_fingerprint(pd.DataFrame({"x": [1, 2]}))
    True
    >>> a == training_fingerprint(pd.DataFrame({"x": [2, 1]}))
    False
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in X.columns]).encode("utf-8"))
    rows = pd.util.hash_pandas_object(X, index=False).to_numpy(dtype=np.uint64)
    digest.update(rows.tobytes())
    if y is not None:
        labels = pd.util.hash_pandas_object(pd.Series(np.asarray(y, dtype=object)), index=False)
        digest.update(labels.to_numpy(dtype=np.uint64).tobytes())
    return digest.hexdigest()


def _check_str(name: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if not isinstance(value, str):
            raise BundleError(f"metadata field {name!r} must be a string, got {value!r}")

    return check


def _check_mapping(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, dict):
        raise BundleError(f"metadata field {attribute.name!r} must be a JSON object")


def _check_optional_mapping(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None:
        _check_mapping(instance, attribute, value)


def _check_versions(instance: object, attribute: attrs.Attribute, value: object) -> None:
    _check_mapping(instance, attribute, value)
    assert isinstance(value, dict)
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise BundleError(f"metadata field 'versions' has a non-string entry {bad[0]!r}")


def _check_names(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"metadata field {attribute.name!r} must be a list of strings")


def _check_fingerprint(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and not (isinstance(value, str) and _HEX64.fullmatch(value)):
        raise BundleError(f"metadata field 'training_fingerprint' is not a SHA-256: {value!r}")


def _to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class BundleMetadata:
    """What a bundle records beside the pipeline.

    Attributes
    ----------
    schema_version : str
        Feature schema of the model (``"v1"``, ``"v2"``, ``"v3"``).
    schema_hash : str
        Hash of that schema's row registry when the bundle was written.
    label_set : tuple of str
        The model's classes, in class order.
    created_at : str
        Creation time, ISO 8601 UTC.
    versions : dict of str to str
        taskclf, scikit-learn, LightGBM, numpy, pandas (and joblib,
        Python) versions of the writer.
    steps : tuple of str
        The pipeline's step names.
    params : dict
        The pipeline's scalar hyperparameters (``step__param``).
    training_fingerprint : str or None
        SHA-256 of the training data, when the pipeline was fitted through
        taskclf.
    training_metrics : dict or None
        Metrics recorded at fit, when the pipeline was fitted through
        taskclf.
    extra : dict
        The caller's own JSON-ready entries (``save_bundle(metadata=...)``).
    """

    schema_version: str = attrs.field(validator=_check_str("schema_version"))
    schema_hash: str = attrs.field(validator=_check_str("schema_hash"))
    label_set: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_check_names)
    created_at: str = attrs.field(validator=_check_str("created_at"))
    versions: dict[str, str] = attrs.field(validator=_check_versions)
    steps: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_check_names)
    params: dict[str, Any] = attrs.field(factory=dict, validator=_check_mapping)
    training_fingerprint: str | None = attrs.field(default=None, validator=_check_fingerprint)
    training_metrics: dict[str, Any] | None = attrs.field(
        default=None, validator=_check_optional_mapping
    )
    extra: dict[str, Any] = attrs.field(factory=dict, validator=_check_mapping)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (absent training facts are left out)."""
        out = attrs.asdict(self, recurse=False)
        out["label_set"] = list(self.label_set)
        out["steps"] = list(self.steps)
        for optional in ("training_fingerprint", "training_metrics"):
            if out[optional] is None:
                del out[optional]
        return out

    @classmethod
    def from_dict(cls, data: object) -> BundleMetadata:
        """Build from a mapping read from JSON.

        Raises
        ------
        BundleError
            On a missing or unknown key, or a value of the wrong type.
        """
        if not isinstance(data, dict):
            raise BundleError(f"metadata must be a JSON object, got {type(data).__name__}")
        fields = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise BundleError(f"metadata has unknown field(s) {unknown}")
        required = {f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING}
        missing = sorted(required - set(data))
        if missing:
            raise BundleError(f"metadata lacks field(s) {missing}")
        return cls(**data)


def _json_ready(value: Any) -> Any:
    """``value`` as plain JSON types, or raise TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON-ready")


_SCALARS = (type(None), bool, str, int, float, np.integer, np.floating)
_MAX_PARAM_ITEMS = 64


def pipeline_params(pipeline: Pipeline) -> dict[str, Any]:
    """The scalar hyperparameters of ``pipeline`` (``step__param`` → value).

    Objects (the booster, calibrators, a taxonomy, vocabularies) and
    containers of more than 64 items are left out: the bundle holds them.
    """
    out: dict[str, Any] = {}
    for key, value in pipeline.get_params(deep=True).items():
        if "__" not in key:
            continue
        if isinstance(value, _SCALARS):
            out[key] = _json_ready(value)
        elif isinstance(value, (list, tuple, Mapping)) and len(value) <= _MAX_PARAM_ITEMS:
            items = value.values() if isinstance(value, Mapping) else value
            if all(isinstance(v, _SCALARS) for v in items):
                out[key] = _json_ready(value)
    return out


def predictor_of(pipeline: object, where: str) -> Any:
    """The fitted ``predict`` step of a taskclf pipeline, or raise."""
    if not isinstance(pipeline, Pipeline) or "predict" not in pipeline.named_steps:
        raise BundleError(
            f"{where}: expected a taskclf pipeline (sklearn Pipeline with a 'predict' "
            f"step, as build_pipeline makes), got {type(pipeline).__name__}"
        )
    predictor = pipeline.named_steps["predict"]
    fitted = getattr(predictor, "__sklearn_is_fitted__", lambda: True)()
    if not fitted:
        raise NotFittedError(f"{where}: the pipeline is not fitted; call pipeline.fit first")
    return predictor


_CALIBRATION_METRICS: Final = (
    "brier_before_",
    "brier_after_",
    "log_loss_before_",
    "log_loss_after_",
)


def _training_facts(pipeline: Pipeline) -> tuple[str | None, dict[str, Any] | None]:
    """Training fingerprint and metrics recorded when taskclf fitted the pipeline.

    The fingerprint is a ``training_fingerprint_`` attribute of the pipeline
    or one of its steps (see :func:`record_training`). The metrics are a
    ``training_metrics_`` mapping, and the out-of-fold log loss and Brier
    score before and after calibration that a fitted ``calibrate`` step
    keeps.
    """
    fingerprint = None
    metrics: dict[str, Any] = {}
    for owner in (pipeline, *(step for _, step in pipeline.steps)):
        fingerprint = fingerprint or getattr(owner, "training_fingerprint_", None)
        recorded = getattr(owner, "training_metrics_", None)
        if isinstance(recorded, Mapping):
            metrics.update(recorded)
    calibrate = pipeline.named_steps.get("calibrate")
    for name in _CALIBRATION_METRICS:
        value = getattr(calibrate, name, None)
        if isinstance(value, (float, np.floating)) and np.isfinite(value):
            metrics[f"oof_{name[:-1]}"] = float(value)
    try:
        json_metrics = _json_ready(metrics) if metrics else None
        json.dumps(json_metrics, allow_nan=False)
    except (TypeError, ValueError):
        json_metrics = None
    if fingerprint is not None and not (
        isinstance(fingerprint, str) and _HEX64.fullmatch(fingerprint)
    ):
        fingerprint = None
    return fingerprint, json_metrics


def record_training(pipeline: Pipeline, X: pd.DataFrame, y: Any = None) -> Pipeline:
    """Record the fingerprint of the training data on a fitted pipeline.

    :func:`save_bundle` and :func:`~taskclf.export_bundle_dir` then write it
    as ``training_fingerprint``. The ``taskclf train`` command does this.

    Parameters
    ----------
    pipeline : Pipeline
        The pipeline fitted on ``X`` (and ``y``).
    X : DataFrame
        The training frame.
    y : array-like, optional
        The training labels.

    Returns
    -------
    Pipeline
        ``pipeline``, whose ``predict`` step now has
        ``training_fingerprint_``.
    """
    predictor = predictor_of(pipeline, "record_training")
    predictor.training_fingerprint_ = training_fingerprint(X, y)
    return pipeline


def make_metadata(pipeline: Pipeline, extra: Mapping[str, Any] | None = None) -> BundleMetadata:
    """The metadata :func:`save_bundle` records for a fitted pipeline."""
    predictor = predictor_of(pipeline, "save_bundle")
    try:
        schema = predictor.schema_
    except TaskclfError as exc:
        raise BundleError(f"save_bundle: cannot tell the model's feature schema: {exc}") from None
    try:
        extra_json = _json_ready(dict(extra or {}))
        json.dumps(extra_json, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"save_bundle: metadata must be JSON-ready: {exc}") from None
    fingerprint, metrics = _training_facts(pipeline)
    return BundleMetadata(
        schema_version=schema.version,
        schema_hash=schema.schema_hash,
        label_set=CLASS_ORDER,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions=library_versions(),
        steps=tuple(name for name, _ in pipeline.steps),
        params=pipeline_params(pipeline),
        training_fingerprint=fingerprint,
        training_metrics=metrics,
        extra=extra_json,
    )


# ---------------------------------------------------------------------------
# Compatibility
# ---------------------------------------------------------------------------


def _release(version: str) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def _compatible(saved: tuple[int, ...], current: tuple[int, ...]) -> bool:
    """Same major version (and same minor while the major is 0)."""
    if saved[0] != current[0]:
        return False
    if saved[0] == 0:
        return saved[1:2] == current[1:2]
    return True


def check_schema_and_labels(meta: BundleMetadata, where: str) -> None:
    """Refuse metadata whose schema or label set differs from this taskclf's.

    Raises
    ------
    BundleError
        If the schema version is unknown, its hash differs, or the label
        set differs.
    """
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
    if sorted(meta.label_set) != sorted(CLASS_ORDER) or len(meta.label_set) != len(CLASS_ORDER):
        raise BundleError(
            f"{where}: label set mismatch: the bundle has {sorted(meta.label_set)}, "
            f"this taskclf has {sorted(CLASS_ORDER)}"
        )


def check_compatibility(meta: BundleMetadata, where: str) -> None:
    """Refuse metadata that this installation cannot honour; warn on safe drift.

    Raises
    ------
    BundleError
        If the schema version is unknown or its hash differs, the label set
        differs, or a library's major version (minor for 0.x) differs.

    Warns
    -----
    BundleVersionWarning
        When a library's minor or patch version differs.
    """
    check_schema_and_labels(meta, where)
    current = library_versions()
    drift = []
    for name in CHECKED_LIBRARIES:
        if name not in meta.versions:
            raise BundleError(f"{where}: the metadata records no {name} version")
        saved_text, current_text = meta.versions[name], current[name]
        saved, now = _release(saved_text), _release(current_text)
        if saved is None:
            raise BundleError(f"{where}: unreadable {name} version {saved_text!r}")
        if now is None or saved == now:
            continue
        if not _compatible(saved, now):
            raise BundleError(
                f"{where}: written with {name} {saved_text}, but this is {name} "
                f"{current_text}: incompatible versions. Install {name} "
                f"{'.'.join(map(str, saved[:2]))}.x, or re-export the model as a "
                "pickle-free bundle directory (taskclf.export_bundle_dir) with the old one"
            )
        drift.append(f"{name} {saved_text} (now {current_text})")
    if drift:
        warnings.warn(
            f"{where}: written with other library versions: {', '.join(drift)}",
            BundleVersionWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------
# The file format
# ---------------------------------------------------------------------------


def encode_bundle(header: Mapping[str, Any], payload: bytes) -> bytes:
    """The bytes of a bundle file with this ``header`` and ``payload``."""
    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    return b"".join(
        (
            _PREFIX.pack(MAGIC, FORMAT_VERSION, len(text)),
            text,
            hashlib.sha256(text).digest(),
            payload,
        )
    )


def decode_bundle(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """Split and verify a bundle's bytes; nothing is unpickled.

    Returns
    -------
    header : dict
        With ``metadata`` (a dict) and ``payload`` (``sha256``, ``length``,
        ``serializer``).
    payload : bytes
        The pickled pipeline, its SHA-256 verified.

    Raises
    ------
    BundleError
        Naming ``where`` and the cause.
    """
    if len(data) == 0:
        raise BundleError(f"{where} is empty")
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise BundleError(f"{where} is truncated ({len(data)} bytes)")
    if not data.startswith(MAGIC):
        raise BundleError(f"{where} is not a taskclf bundle (no TASKCLF-BUNDLE magic bytes)")
    if len(data) < _PREFIX.size:
        raise BundleError(f"{where} is truncated ({len(data)} bytes)")
    _, version, header_length = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{where} has bundle format version {version}; this taskclf reads version "
            f"{FORMAT_VERSION} (a newer taskclf wrote it, or the file is corrupt)"
        )
    if header_length > MAX_HEADER_BYTES:
        raise BundleError(f"{where} is corrupt: header length {header_length} is absurd")
    body = _PREFIX.size + header_length
    if len(data) < body + _DIGEST_BYTES:
        raise BundleError(f"{where} is truncated ({len(data)} bytes; header needs {body + 32})")
    text = data[_PREFIX.size : body]
    if hashlib.sha256(text).digest() != data[body : body + _DIGEST_BYTES]:
        raise BundleError(f"{where} is corrupt or tampered with: header digest mismatch")
    try:
        header = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also 5000-digit numbers, nesting bombs
        raise BundleError(f"{where} is corrupt: header is not JSON ({exc})") from None
    payload_info = header.get("payload") if isinstance(header, dict) else None
    if (
        not isinstance(payload_info, dict)
        or not isinstance(payload_info.get("sha256"), str)
        or not _HEX64.fullmatch(payload_info["sha256"])
        or not isinstance(payload_info.get("length"), int)
        or isinstance(payload_info.get("length"), bool)
        or payload_info.get("serializer") != "joblib"
    ):
        raise BundleError(f"{where} is corrupt: header lacks a valid payload description")
    payload = data[body + _DIGEST_BYTES :]
    if len(payload) != payload_info["length"]:
        state = "truncated" if len(payload) < payload_info["length"] else "corrupt"
        raise BundleError(
            f"{where} is {state}: payload has {len(payload)} bytes, the header says "
            f"{payload_info['length']}"
        )
    if hashlib.sha256(payload).hexdigest() != payload_info["sha256"]:
        raise BundleError(f"{where} is corrupt or tampered with: payload SHA-256 mismatch")
    return header, payload


def _where(path: Path) -> str:
    return f"bundle file {str(path)!r}"


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise BundleError(
            f"{_where(path)} is a directory; load bundle directories with load_bundle_dir"
        )
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{_where(path)} does not exist") from None
    except OSError as exc:
        raise BundleError(f"{_where(path)} cannot be read: {exc}") from None


@attrs.frozen
class BundleInfo:
    """What a bundle file says about itself, read without unpickling.

    Attributes
    ----------
    path : Path
    metadata : BundleMetadata
    file_sha256 : str
        SHA-256 of the whole file (what ``sha256sum`` prints; the digest
        to pin with ``load_bundle(path, sha256=...)``).
    payload_sha256 : str
        SHA-256 of the pickled payload, as recorded and verified.
    payload_bytes : int
    format_version : int
    """

    path: Path
    metadata: BundleMetadata
    file_sha256: str
    payload_sha256: str
    payload_bytes: int
    format_version: int = FORMAT_VERSION


def _info(path: Path, data: bytes) -> tuple[BundleInfo, bytes]:
    where = _where(path)
    header, payload = decode_bundle(data, where)
    try:
        meta = BundleMetadata.from_dict(header.get("metadata"))
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None
    info = BundleInfo(
        path=path,
        metadata=meta,
        file_sha256=hashlib.sha256(data).hexdigest(),
        payload_sha256=header["payload"]["sha256"],
        payload_bytes=len(payload),
    )
    return info, payload


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read and verify a bundle file's metadata and digests, without unpickling.

    Raises
    ------
    BundleError
        If the file is missing, empty, not a bundle, truncated, corrupt or
        tampered with.
    """
    path = Path(path)
    return _info(path, _read(path))[0]


def save_bundle(
    pipeline: Pipeline,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a fitted pipeline and its metadata to one bundle file, atomically.

    The metadata records the taskclf, scikit-learn, LightGBM, numpy and
    pandas versions, the feature schema version and hash, the label set,
    the creation time (UTC), the pipeline's scalar parameters and, when
    taskclf fitted the pipeline, a fingerprint of the training data and the
    training metrics. The file carries the SHA-256 of its pickled payload.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted taskclf pipeline (:func:`taskclf.build_pipeline`).
    path : path-like
        Destination file (conventionally ``*.taskclf``); replaced if it exists.
    metadata : mapping, optional
        Your own JSON-ready entries, stored as ``extra``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BundleError
        If ``pipeline`` is not a taskclf pipeline.
    NotFittedError
        If it is not fitted.
    InvalidParameterError
        If ``metadata`` is not JSON-ready.

    See Also
    --------
    load_bundle, read_bundle_info, taskclf.export_bundle_dir

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
    header = {
        "metadata": meta.to_dict(),
        "payload": {
            "sha256": hashlib.sha256(payload).hexdigest(),
            "length": len(payload),
            "serializer": "joblib",
        },
    }
    try:
        data = encode_bundle(header, payload)
    except ValueError as exc:  # NaN or infinity in the parameters or metrics
        raise InvalidParameterError(f"save_bundle: metadata is not valid JSON: {exc}") from None
    return atomic_write_bytes(path, data)


def load_bundle(path: str | os.PathLike[str], *, sha256: str | None = None) -> Pipeline:
    """Verify a bundle file, check its compatibility, then unpickle the pipeline.

    Before unpickling anything: the file's structure and the SHA-256 of
    its header and payload are verified, a digest pinned by the caller is
    compared with the whole file's SHA-256, and the recorded schema hash,
    label set and library versions are checked against this installation.

    .. warning::

       Unpickling runs code chosen by whoever wrote the file. Load bundles
       only from sources you trust, ideally with a pinned ``sha256``. To
       share models with people who should not have to trust you, use
       :func:`taskclf.export_bundle_dir` and :func:`taskclf.load_bundle_dir`,
       which never unpickle.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_bundle`.
    sha256 : str, optional
        Expected SHA-256 (hex) of the whole file, e.g. as printed by
        ``sha256sum`` or ``taskclf inspect``.

    Returns
    -------
    sklearn.pipeline.Pipeline

    Raises
    ------
    BundleError
        Naming the file and the cause: missing, empty, not a bundle,
        truncated, corrupt or tampered with, pinned digest mismatch,
        schema or label-set mismatch, incompatible library version, or a
        payload that does not unpickle to a taskclf pipeline.

    Warns
    -----
    BundleVersionWarning
        When a library's minor or patch version differs from the writer's.
    """
    path = Path(path)
    where = _where(path)
    data = _read(path)
    if sha256 is not None:
        expected = str(sha256).strip().lower()
        if not _HEX64.fullmatch(expected):
            raise InvalidParameterError(f"sha256 must be 64 hex digits, got {sha256!r}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise BundleError(
                f"{where}: SHA-256 mismatch: expected {expected}, the file has {actual}"
            )
    info, payload = _info(path, data)
    check_compatibility(info.metadata, where)
    try:
        pipeline = joblib.load(io.BytesIO(payload))
    except Exception as exc:
        raise BundleError(f"{where}: the payload cannot be unpickled: {exc!r}") from None
    predictor = predictor_of(pipeline, where)
    try:
        version = predictor.schema_.version
    except TaskclfError as exc:
        raise BundleError(f"{where}: the model's schema cannot be told: {exc}") from None
    if version != info.metadata.schema_version:
        raise BundleError(
            f"{where}: the metadata says schema {info.metadata.schema_version} but the "
            f"model is a {version} model"
        )
    return pipeline


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "BundleInfo",
    "BundleMetadata",
    "check_compatibility",
    "check_schema_and_labels",
    "load_bundle",
    "read_bundle_info",
    "record_training",
    "save_bundle",
    "training_fingerprint",
]
