"""Pickle-free bundles: a fitted pipeline as a directory that loads without unpickling.

:func:`export_bundle_dir` writes

- ``pipeline.skops``: the pipeline in :mod:`skops.io`'s format, in which
  every object is named by its type and loading creates only the types
  listed as trusted (the LightGBM booster travels as LightGBM's own model
  text, as in its pickled state);
- ``bundle.json``: the metadata (as a bundle file records it) and the
  SHA-256 of ``pipeline.skops``.

:func:`load_bundle_dir` verifies the digest before parsing anything,
refuses a file that names a type outside :data:`TRUSTED_TYPES`, those
skops trusts and taskclf's own classes, then rebuilds the pipeline. It
also reads the model directories of taskclf 0.4 (:mod:`taskclf._legacy`).
Needs the ``safe`` extra: ``pip install 'taskclf[safe]'``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
from sklearn.pipeline import Pipeline

from taskclf import _legacy
from taskclf._io import atomic_directory, check_replaceable
from taskclf.bundle import (
    MAX_BUNDLE_BYTES,
    MAX_HEADER_BYTES,
    BundleMetadata,
    check_runs,
    check_schema_and_labels,
    make_metadata,
    read_file,
    read_json,
)
from taskclf.exceptions import BundleError

DIR_FORMAT: Final = "taskclf-bundle-dir"
DIR_FORMAT_VERSION: Final = 2
MANIFEST: Final = "bundle.json"
PIPELINE_FILE: Final = "pipeline.skops"
_WHAT: Final = "taskclf bundle directory"

TRUSTED_TYPES: Final = (
    "collections.OrderedDict",
    "collections.defaultdict",
    "lightgbm.basic.Booster",
    "sklearn.frozen._frozen.FrozenEstimator",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._label.LabelEncoder",
)
"""Types a ``pipeline.skops`` may hold beyond those skops trusts itself (Python's
built-in containers and scalars, numpy arrays and scalars, scikit-learn's
estimators), and beyond the classes defined in taskclf itself."""


def _skops_io() -> Any:
    try:
        import skops.io
    except ImportError:
        raise BundleError(
            "pickle-free bundle directories need skops: pip install 'taskclf[safe]'"
        ) from None
    return skops.io


def _is_taskclf_class(name: str) -> bool:
    """Whether ``name`` is a class defined in taskclf (its stages, value classes and helpers).

    Exceptions are not trusted: no pipeline holds one.
    """
    module_name, _, class_name = name.rpartition(".")
    parts = module_name.split(".")
    if parts[0] != "taskclf" or "__main__" in parts:  # importing __main__ would run the CLI
        return False
    try:
        cls = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        return False
    return (
        isinstance(cls, type)
        and cls.__module__ == module_name
        and not issubclass(cls, BaseException)
    )


def _untrusted_types(data: bytes) -> list[str]:
    """The types named in skops ``data`` that it would create without being told to trust them."""
    return sorted(_skops_io().get_untrusted_types(data=data))


def _check_types(names: list[str], where: str) -> None:
    refused = [n for n in names if n not in TRUSTED_TYPES and not _is_taskclf_class(n)]
    if refused:
        raise BundleError(f"{where}: holds types taskclf does not trust: {refused}")


def is_bundle_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a taskclf bundle directory and nothing else."""
    try:
        manifest = read_json(directory / MANIFEST, MAX_HEADER_BYTES)
        listed = set(manifest["files"]) | {MANIFEST}
        return manifest["format"] == DIR_FORMAT and {p.name for p in directory.iterdir()} <= listed
    except (BundleError, TypeError, KeyError):
        return False


def export_bundle_dir(
    pipeline: Pipeline,
    directory: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a fitted pipeline as a pickle-free bundle directory.

    The directory is assembled beside its destination and renamed into
    place, so a reader never sees half of it. It may replace an empty
    directory or a bundle directory taskclf wrote (a ``bundle.json`` of
    taskclf listing every file there); any other directory is left alone.

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
        If a stage holds a value skops cannot write (fitted state must be
        plain values, numpy arrays and the types :func:`load_bundle_dir`
        trusts), or skops is not installed.
    NotOursError
        If ``directory`` exists and is neither empty nor a taskclf bundle
        directory.

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
    ['bundle.json', 'pipeline.skops']
    >>> (load_bundle_dir(target).predict(frame) == pipe.predict(frame)).all()
    np.True_
    """
    meta = make_metadata(pipeline, metadata, "export_bundle_dir")
    check_replaceable(directory, is_bundle_dir, _WHAT)
    where = f"cannot export to {str(directory)!r}"
    try:
        data = _skops_io().dumps(pipeline)
    except (TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{where}: skops cannot write the pipeline: {exc}") from None
    _check_types(_untrusted_types(data), where)
    manifest = {
        "format": DIR_FORMAT,
        "format_version": DIR_FORMAT_VERSION,
        "metadata": meta.to_dict(),
        "files": {PIPELINE_FILE: hashlib.sha256(data).hexdigest()},
    }
    with atomic_directory(directory, is_bundle_dir, _WHAT) as staging:
        (staging / PIPELINE_FILE).write_bytes(data)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Path(directory)


def _read_manifest(directory: Path) -> tuple[BundleMetadata, dict[str, str]]:
    """The metadata and file digests of a bundle directory, or raise BundleError."""
    path = directory / MANIFEST
    where = f"bundle file {str(path)!r}"
    data = read_json(path, MAX_HEADER_BYTES)
    if not isinstance(data, dict) or data.get("format") != DIR_FORMAT:
        raise BundleError(f"{where}: not a taskclf bundle directory manifest")
    if data.get("format_version") == 1:
        raise BundleError(
            f"bundle directory {str(directory)!r} is in the JSON format of taskclf 0.5.0, "
            "which this taskclf does not read: load it with taskclf 0.5.0 and save it with "
            "save_bundle, then load that file here (load_bundle) and export_bundle_dir it"
        )
    if data.get("format_version") != DIR_FORMAT_VERSION:
        raise BundleError(
            f"{where}: format version {data.get('format_version')!r}; this taskclf reads "
            f"version {DIR_FORMAT_VERSION} (a newer taskclf wrote it, or the file is corrupt)"
        )
    files = data.get("files")
    if not isinstance(files, dict) or set(files) != {PIPELINE_FILE}:
        raise BundleError(f"{where}: 'files' must give the SHA-256 of {PIPELINE_FILE} alone")
    try:
        return BundleMetadata.from_dict(data.get("metadata")), files
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None


def _read_pipeline_file(directory: Path, digest: object) -> bytes:
    """The bytes of ``pipeline.skops``, its SHA-256 and unpacked size checked."""
    path = directory / PIPELINE_FILE
    where = f"bundle file {str(path)!r}"
    data = read_file(path, MAX_BUNDLE_BYTES)
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{where} is corrupt or tampered with: SHA-256 mismatch")
    try:
        unpacked = sum(item.file_size for item in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{where} is not a skops file: {exc}") from None
    if unpacked > MAX_BUNDLE_BYTES:
        raise BundleError(f"{where} unpacks to an absurd {unpacked} bytes")
    return data


def _load_current(directory: Path) -> Pipeline:
    meta, files = _read_manifest(directory)
    check_schema_and_labels(meta, f"bundle directory {str(directory)!r}")
    data = _read_pipeline_file(directory, files[PIPELINE_FILE])
    where = f"bundle file {str(directory / PIPELINE_FILE)!r}"
    try:
        names = _untrusted_types(data)
        _check_types(names, where)
        pipeline = _skops_io().loads(data, trusted=names)
    except BundleError:
        raise
    except Exception as exc:  # skops raises many kinds on a malformed file
        raise BundleError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
    return check_runs(pipeline, meta, where)


def load_bundle_dir(directory: str | os.PathLike[str]) -> Pipeline:
    """Rebuild a pipeline from a bundle directory, without unpickling anything.

    Reads directories written by :func:`export_bundle_dir`: before
    anything is parsed, ``pipeline.skops``'s SHA-256 is checked against
    ``bundle.json``, the recorded schema hash and label set against this
    taskclf, and every type the file names against the trusted ones. Also
    reads the model directories of taskclf 0.4 (``model.txt``,
    ``metadata.json``, optional ``categorical_encoders.json``), which
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
        mismatch, a schema or label-set mismatch, an untrusted type, a
        directory in the format of taskclf 0.5.0 (the message says how to
        re-export it), or skops not installed.

    Warns
    -----
    TaskclfWarning
        For a taskclf 0.4 directory without ``categorical_encoders.json``.
    """
    path = Path(directory)
    if not path.is_dir():
        state = (
            "is a file; load bundle files with load_bundle" if path.exists() else "does not exist"
        )
        raise BundleError(f"bundle directory {str(path)!r} {state}")
    if (path / MANIFEST).exists():
        return _load_current(path)
    if _legacy.is_model_dir(path):
        return _legacy.load(path)
    raise BundleError(
        f"bundle directory {str(path)!r} is not a taskclf bundle: it has neither "
        f"{MANIFEST} nor a taskclf 0.4 model"
    )


@attrs.frozen
class BundleDirInfo:
    """What a bundle directory says about itself.

    Attributes
    ----------
    path : Path
    metadata : BundleMetadata
        For a taskclf 0.4 directory, ``params["reject__threshold"]`` is the
        threshold the loaded pipeline uses and ``extra["reject_threshold_source"]``
        says where it came from.
    files : dict of str to str
        File name → SHA-256 (verified; for a 0.4 directory as found).
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
        meta, files = _read_manifest(path)
        _read_pipeline_file(path, files[PIPELINE_FILE])
        return BundleDirInfo(path, meta, dict(files))
    if _legacy.is_model_dir(path):
        return BundleDirInfo(path, _legacy.read_metadata(path), _legacy.digests(path), True)
    raise BundleError(f"bundle directory {str(path)!r} is not a taskclf bundle")


__all__ = [
    "TRUSTED_TYPES",
    "BundleDirInfo",
    "export_bundle_dir",
    "load_bundle_dir",
    "read_bundle_dir_info",
]
