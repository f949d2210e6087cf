"""Bundles: one file holding a fitted pipeline and its metadata.

A bundle file is laid out as::

    b"TASKCLF-BUNDLE"          14 bytes, magic
    format version             2 bytes, big-endian unsigned
    header length n            4 bytes, big-endian unsigned
    header                     n bytes, UTF-8 JSON (metadata, payload digest)
    SHA-256 of the header      32 bytes
    payload                    the joblib-pickled pipeline

so that the metadata can be read, and the payload's SHA-256 checked,
before anything is unpickled.

.. warning::

   Unpickling runs code chosen by whoever wrote the file. The digests
   protect against corruption and, with a digest pinned by the caller
   (``load_bundle(path, sha256=...)``), against substitution; they do not
   make a bundle from an untrusted source safe. For such bundles use the
   pickle-free format of :mod:`taskclf.bundle_dir`.
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

from taskclf._io import atomic_write_bytes, read_regular_file
from taskclf.core.schema import SCHEMAS
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    BundleError,
    BundleVersionWarning,
    InvalidParameterError,
    NotFittedError,
    ReaderError,
    TaskclfError,
)

MAGIC: Final = b"TASKCLF-BUNDLE"
FORMAT_VERSION: Final = 1
_PREFIX: Final = struct.Struct(">14sHI")
MAX_HEADER_BYTES: Final = 16 * 1024 * 1024
"""Largest JSON header (and bundle directory manifest) a reader accepts."""
MAX_BUNDLE_BYTES: Final = 2 * 1024 * 1024 * 1024
"""Largest bundle file (and pickle-free pipeline file) a reader accepts."""
CHECKED_LIBRARIES: Final = ("taskclf", "scikit-learn", "lightgbm", "numpy", "pandas")
"""Libraries whose versions are recorded and compared when loading."""
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def library_versions() -> dict[str, str]:
    """Versions of taskclf, the libraries a saved pipeline depends on, and Python."""
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
    digest = hashlib.sha256(json.dumps([str(c) for c in X.columns]).encode("utf-8"))
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy(np.uint64).tobytes())
    if y is not None:
        labels = pd.util.hash_pandas_object(pd.Series(np.asarray(y, dtype=object)), index=False)
        digest.update(labels.to_numpy(np.uint64).tobytes())
    return digest.hexdigest()


def record_training(pipeline: Pipeline, X: pd.DataFrame, y: Any = None) -> Pipeline:
    """Record :func:`training_fingerprint` of the training data on a fitted pipeline.

    :func:`save_bundle` and :func:`~taskclf.export_bundle_dir` then write it
    as ``training_fingerprint``. The ``taskclf train`` command does this.

    Returns
    -------
    Pipeline
        ``pipeline``, whose ``predict`` step now has ``training_fingerprint_``.
    """
    predictor_of(pipeline, "record_training").training_fingerprint_ = training_fingerprint(X, y)
    return pipeline


def _to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


_NAMES = v.deep_iterable(v.instance_of(str), v.instance_of(tuple))


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
        :func:`training_fingerprint` of the training data, when recorded
        (:func:`record_training`).
    training_metrics : dict or None
        The out-of-fold log loss and Brier score before and after
        calibration, when taskclf fitted the pipeline.
    extra : dict
        The caller's own JSON-ready entries (``save_bundle(metadata=...)``).
    """

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
    def from_dict(cls, data: object) -> BundleMetadata:
        """Build from a mapping read from JSON.

        Raises
        ------
        BundleError
            On a missing or unknown key, or a value of the wrong type.
        """
        if not isinstance(data, dict):
            raise BundleError(f"metadata must be a JSON object, got {type(data).__name__}")
        fields = attrs.fields_dict(cls)
        unknown = sorted(set(data) - set(fields))
        missing = sorted(
            k for k, f in fields.items() if f.default is attrs.NOTHING and k not in data
        )
        if unknown or missing:
            raise BundleError(f"metadata has unknown field(s) {unknown}, lacks {missing}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"metadata field {exc}") from None


def _json_ready(value: Any, what: str) -> Any:
    """``value`` as plain JSON types (numpy scalars as numbers), or raise ValueError."""

    def plain(item: Any) -> Any:
        if isinstance(item, np.generic):
            return item.item()
        raise ValueError(f"{what}: a {type(item).__name__} is not JSON-ready")

    try:
        return json.loads(json.dumps(value, allow_nan=False, default=plain))
    except TypeError as exc:  # keys that are not strings or numbers
        raise ValueError(f"{what}: {exc}") from None


def pipeline_params(pipeline: Pipeline) -> dict[str, Any]:
    """The plain hyperparameters of ``pipeline`` (``step__param`` → value).

    Objects (the booster, calibrators, a taxonomy) and containers of more
    than 64 items (vocabularies) are left out: the bundle holds them.
    """
    out = {}
    for key, value in pipeline.get_params(deep=True).items():
        if "__" not in key or (isinstance(value, (list, tuple, Mapping)) and len(value) > 64):
            continue
        try:
            out[key] = _json_ready(value, key)
        except ValueError:
            continue
    return out


def predictor_of(pipeline: object, where: str) -> Any:
    """The fitted ``predict`` step of a taskclf pipeline, or raise BundleError."""
    if not isinstance(pipeline, Pipeline) or "predict" not in pipeline.named_steps:
        raise BundleError(
            f"{where}: expected a taskclf pipeline (sklearn Pipeline with a 'predict' "
            f"step, as build_pipeline makes), got {type(pipeline).__name__}"
        )
    predictor = pipeline.named_steps["predict"]
    try:
        check_is_fitted(predictor)
    except SklearnNotFittedError:
        raise NotFittedError(
            f"{where}: the pipeline is not fitted; call pipeline.fit first"
        ) from None
    return predictor


def _oof_metrics(pipeline: Pipeline) -> dict[str, float] | None:
    """The out-of-fold log loss and Brier score before and after calibration, when fitted."""
    calibrate = pipeline.named_steps.get("calibrate")
    names = ("brier_before_", "brier_after_", "log_loss_before_", "log_loss_after_")
    values = {f"oof_{name[:-1]}": getattr(calibrate, name, None) for name in names}
    metrics = {k: float(x) for k, x in values.items() if isinstance(x, float) and np.isfinite(x)}
    return metrics or None


def make_metadata(
    pipeline: Pipeline, extra: Mapping[str, Any] | None, where: str = "save_bundle"
) -> BundleMetadata:
    """The metadata :func:`save_bundle` records for a fitted pipeline."""
    predictor = predictor_of(pipeline, where)
    try:
        schema = predictor.schema_
    except TaskclfError as exc:
        raise BundleError(f"{where}: cannot tell the model's feature schema: {exc}") from None
    try:
        extra_json = _json_ready(dict(extra or {}), f"{where}: metadata")
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"{exc} (it must be JSON-ready)") from None
    fingerprint = getattr(predictor, "training_fingerprint_", None)
    return BundleMetadata(
        schema_version=schema.version,
        schema_hash=schema.schema_hash,
        label_set=CLASS_ORDER,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions=library_versions(),
        steps=tuple(name for name, _ in pipeline.steps),
        params=pipeline_params(pipeline),
        training_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        training_metrics=_oof_metrics(pipeline),
        extra=extra_json,
    )


def check_schema_and_labels(meta: BundleMetadata, where: str) -> None:
    """Refuse metadata whose schema (version and hash) or label set differs from this taskclf's."""
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


def _release(version: str) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    return None if match is None else tuple(int(p) for p in match.groups() if p is not None)


def check_compatibility(meta: BundleMetadata, where: str) -> None:
    """Refuse metadata this installation cannot honour; warn on safe version drift.

    Raises
    ------
    BundleError
        If the schema or label set differs (:func:`check_schema_and_labels`),
        or a library's major version (minor while it is 0.x) differs.

    Warns
    -----
    BundleVersionWarning
        When a library's minor or patch version differs.
    """
    check_schema_and_labels(meta, where)
    current = library_versions()
    drift = []
    for name in CHECKED_LIBRARIES:
        saved_text = meta.versions.get(name)
        if saved_text is None:
            raise BundleError(f"{where}: the metadata records no {name} version")
        saved, now = _release(saved_text), _release(current[name])
        if saved is None:
            raise BundleError(f"{where}: unreadable {name} version {saved_text!r}")
        if now is None or saved_text == current[name]:
            continue
        if saved[0] != now[0] or (saved[0] == 0 and saved[1:2] != now[1:2]):
            raise BundleError(
                f"{where}: written with {name} {saved_text}, but this is {name} "
                f"{current[name]}: incompatible versions. Install {name} "
                f"{'.'.join(map(str, saved[:2]))}.x, or load the model there and re-export it "
                "as a pickle-free bundle directory (taskclf.export_bundle_dir)"
            )
        drift.append(f"{name} {saved_text} (now {current[name]})")
    if drift:
        warnings.warn(
            f"{where}: written with other library versions: {', '.join(drift)}",
            BundleVersionWarning,
            stacklevel=3,
        )


def check_runs(pipeline: Any, meta: BundleMetadata, where: str) -> Pipeline:
    """Refuse a loaded pipeline that is not a taskclf pipeline of ``meta``'s schema, or cannot run.

    The pipeline predicts one row of the recorded schema: a pipeline saved
    by another taskclf whose stages this one cannot run is refused here,
    naming the file, rather than on the user's first frame.
    """
    try:
        found = predictor_of(pipeline, where).schema_.version
    except TaskclfError as exc:
        raise BundleError(f"{where}: {exc}") from None
    except AttributeError:  # a stage of another taskclf, without this one's fitted state
        writer = meta.versions.get("taskclf", "another taskclf")
        raise BundleError(
            f"{where}: the pipeline was saved by taskclf {writer}, whose model stage this "
            "taskclf cannot run; fit it again with this taskclf and save it anew"
        ) from None
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
    try:
        pipeline.predict(pd.DataFrame(row))
    except Exception as exc:
        writer = meta.versions.get("taskclf", "another taskclf")
        raise BundleError(
            f"{where}: this taskclf cannot run the pipeline saved by taskclf {writer} "
            f"({type(exc).__name__}: {exc}); fit it again with this taskclf and save it anew"
        ) from None
    return pipeline


def encode_bundle(header: Mapping[str, Any], payload: bytes) -> bytes:
    """The bytes of a bundle file with this ``header`` and ``payload``."""
    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(text))
    return b"".join((prefix, text, hashlib.sha256(text).digest(), payload))


def decode_bundle(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """Split and verify a bundle's bytes; nothing is unpickled.

    Returns
    -------
    header : dict
        With ``metadata`` and ``payload`` (``sha256``, ``length``, ``serializer``).
    payload : bytes
        The pickled pipeline, its SHA-256 verified.

    Raises
    ------
    BundleError
        Naming ``where`` and the cause.
    """
    if not data.startswith(MAGIC[: len(data)]) or not data:
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
    except OSError as exc:  # a directory: read_regular_file lets IsADirectoryError through
        raise BundleError(f"bundle file {str(path)!r} cannot be read: {exc.strerror}") from None


def read_json(path: Path, limit: int) -> Any:
    """The JSON value of a bundle's file of at most ``limit`` bytes, or raise BundleError."""
    try:
        return json.loads(read_file(path, limit).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also 5000-digit numbers, nesting bombs
        raise BundleError(f"bundle file {str(path)!r} is not valid JSON: {exc}") from None


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


def _read_bundle(path: Path) -> tuple[BundleInfo, bytes]:
    where = f"bundle file {str(path)!r}"
    if path.is_dir():
        raise BundleError(f"{where} is a directory; load bundle directories with load_bundle_dir")
    data = read_file(path, MAX_BUNDLE_BYTES)
    header, payload = decode_bundle(data, where)
    try:
        meta = BundleMetadata.from_dict(header.get("metadata"))
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    return BundleInfo(path, meta, digest, header["payload"]["sha256"], len(payload)), payload


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read and verify a bundle file's metadata and digests, without unpickling.

    Raises
    ------
    BundleError
        If the file is missing, empty, not a bundle, truncated, corrupt or
        tampered with.
    """
    return _read_bundle(Path(path))[0]


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
    recorded, the training fingerprint and metrics. The file carries the
    SHA-256 of its pickled payload.

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
    described = {"sha256": hashlib.sha256(payload).hexdigest(), "length": len(payload)}
    header = {"metadata": meta.to_dict(), "payload": {**described, "serializer": "joblib"}}
    return atomic_write_bytes(path, encode_bundle(header, payload))


def load_bundle(path: str | os.PathLike[str], *, sha256: str | None = None) -> Pipeline:
    """Verify a bundle file, check its compatibility, then unpickle the pipeline.

    Before unpickling anything: the file's structure and the SHA-256 of
    its header and payload are verified, a digest pinned by the caller is
    compared with the whole file's SHA-256, and the recorded schema hash,
    label set and library versions are checked against this installation.
    After unpickling, the pipeline must be a taskclf pipeline of the
    recorded schema that this taskclf can run.

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
        payload that is not a taskclf pipeline this taskclf can run.

    Warns
    -----
    BundleVersionWarning
        When a library's minor or patch version differs from the writer's.
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
