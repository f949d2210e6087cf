"""Pickle-free bundle directories (docs/bundles.md), and the model directories of taskclf 0.4.

Needs the ``safe`` extra: ``pip install 'taskclf[safe]'``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
from sklearn.pipeline import Pipeline

from taskclf import bundle
from taskclf._io import atomic_directory, check_replaceable
from taskclf.core.defaults import DEFAULT_REJECT_THRESHOLD
from taskclf.core.schema import SCHEMAS
from taskclf.exceptions import BundleError, TaskclfError, TaskclfWarning

DIR_FORMAT: Final = "taskclf-bundle-dir"
DIR_FORMAT_VERSION: Final = 2
MANIFEST: Final = "bundle.json"
PIPELINE_FILE: Final = "pipeline.skops"
TRUSTED_TYPES: Final = (
    "collections.OrderedDict",
    "collections.defaultdict",
    "lightgbm.basic.Booster",
    "sklearn.frozen._frozen.FrozenEstimator",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._label.LabelEncoder",
)
"""Types a ``pipeline.skops`` may hold beyond those skops trusts and taskclf's own classes."""


def _where(path: Path) -> str:
    return f"bundle file {str(path)!r}"


def _skops_io() -> Any:
    try:
        import skops.io
    except ImportError:
        raise BundleError(
            "pickle-free bundle directories need skops: pip install 'taskclf[safe]'"
        ) from None
    return skops.io


def _is_taskclf_class(name: str) -> bool:
    """Whether ``name`` is a class defined in taskclf, not an exception."""
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


def _trusted_names(data: bytes, where: str) -> list[str]:
    """The types skops ``data`` names beyond its own trusted ones, all trusted by taskclf."""
    names = sorted(_skops_io().get_untrusted_types(data=data))
    refused = [n for n in names if n not in TRUSTED_TYPES and not _is_taskclf_class(n)]
    if refused:
        raise BundleError(f"{where}: holds types taskclf does not trust: {refused}")
    return names


def is_bundle_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a taskclf bundle directory and nothing else."""
    try:
        manifest = bundle.read_json(directory / MANIFEST, bundle.MAX_HEADER_BYTES)
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
    """Write a fitted pipeline as a pickle-free bundle directory, atomically; return it.

    Only an empty directory or a bundle directory taskclf wrote is replaced (else
    NotOursError); ``metadata`` (your own JSON-ready entries) is stored as ``extra``.
    Raises BundleError if a stage holds a value skops cannot write or taskclf does
    not trust.

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
    meta = bundle.make_metadata(pipeline, metadata, "export_bundle_dir")
    check_replaceable(directory, is_bundle_dir, "taskclf bundle directory")
    where = f"cannot export to {str(directory)!r}"
    try:
        data = _skops_io().dumps(pipeline)
    except (TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{where}: skops cannot write the pipeline: {exc}") from None
    _trusted_names(data, where)
    manifest = {
        "format": DIR_FORMAT,
        "format_version": DIR_FORMAT_VERSION,
        "metadata": meta.to_dict(),
        "files": {PIPELINE_FILE: hashlib.sha256(data).hexdigest()},
    }
    with atomic_directory(directory, is_bundle_dir, "taskclf bundle directory") as staging:
        (staging / PIPELINE_FILE).write_bytes(data)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Path(directory)


def _read_manifest(directory: Path) -> tuple[bundle.BundleMetadata, bytes, str]:
    """The metadata, the verified ``pipeline.skops`` bytes and their SHA-256."""
    where = _where(directory / MANIFEST)
    data = bundle.read_json(directory / MANIFEST, bundle.MAX_HEADER_BYTES)
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
    meta = bundle.BundleMetadata.from_dict(data.get("metadata"), where)
    where = _where(directory / PIPELINE_FILE)
    pipeline = bundle.read_file(directory / PIPELINE_FILE, bundle.MAX_BUNDLE_BYTES)
    if hashlib.sha256(pipeline).hexdigest() != files[PIPELINE_FILE]:
        raise BundleError(f"{where} is corrupt or tampered with: SHA-256 mismatch")
    try:
        unpacked = sum(item.file_size for item in zipfile.ZipFile(io.BytesIO(pipeline)).infolist())
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{where} is not a skops file: {exc}") from None
    if unpacked > bundle.MAX_BUNDLE_BYTES:
        raise BundleError(f"{where} unpacks to an absurd {unpacked} bytes")
    return meta, pipeline, files[PIPELINE_FILE]


def _is_04_dir(path: Path) -> bool:
    """Whether bundle directory ``path`` is taskclf 0.4's (raise BundleError if it is neither)."""
    if not path.is_dir():
        state = (
            "is a file; load bundle files with load_bundle" if path.exists() else "does not exist"
        )
        raise BundleError(f"bundle directory {str(path)!r} {state}")
    if (path / MANIFEST).exists():
        return False
    if (path / "metadata.json").exists() and (path / "model.txt").exists():
        return True
    raise BundleError(
        f"bundle directory {str(path)!r} is not a taskclf bundle: it has neither "
        f"{MANIFEST} nor a taskclf 0.4 model"
    )


def load_bundle_dir(directory: str | os.PathLike[str]) -> Pipeline:
    """Rebuild a pipeline from a bundle directory (or taskclf 0.4's), without unpickling.

    Checks everything docs/bundles.md lists before skops builds anything. Raises
    BundleError naming the file and the cause; warns (TaskclfWarning) for a taskclf
    0.4 directory without ``categorical_encoders.json``.
    """
    path = Path(directory)
    if _is_04_dir(path):
        return _load_04(path)
    meta, data, _ = _read_manifest(path)
    bundle.check_compatibility(meta, f"bundle directory {str(path)!r}", versions=False)
    where = _where(path / PIPELINE_FILE)
    trusted = _trusted_names(data, where)
    try:
        pipeline = _skops_io().loads(data, trusted=trusted)
    except Exception as exc:  # skops raises many kinds on a malformed file
        raise BundleError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
    return bundle.check_runs(pipeline, meta, where)


@attrs.frozen
class BundleDirInfo:
    """What a bundle directory says about itself (docs/bundles.md).

    ``files`` maps file name to SHA-256 (verified; for taskclf 0.4 as found);
    ``legacy`` is True for a taskclf 0.4 model directory.
    """

    path: Path
    metadata: bundle.BundleMetadata
    files: dict[str, str]
    legacy: bool = False


def read_bundle_dir_info(directory: str | os.PathLike[str]) -> BundleDirInfo:
    """Read a bundle directory's metadata and verify its files' digests, or raise BundleError."""
    path = Path(directory)
    if _is_04_dir(path):
        files = {
            p.name: hashlib.sha256(bundle.read_file(p, bundle.MAX_BUNDLE_BYTES)).hexdigest()
            for p in sorted(path.iterdir())
            if p.suffix in (".txt", ".json")
        }
        return BundleDirInfo(path, _read_04_metadata(path), files, legacy=True)
    meta, _, digest = _read_manifest(path)
    return BundleDirInfo(path, meta, {PIPELINE_FILE: digest})


# The model directories of taskclf 0.4 (their files: docs/bundles.md).


def _04_threshold(directory: Path, recorded: Any) -> tuple[float, str]:
    """The reject threshold taskclf 0.4 used for this model, and where it comes from."""
    here = directory.resolve()
    value, source = recorded, directory / "metadata.json"
    policy_path = here.parent / "inference_policy.json"
    if policy_path.exists():
        policy = bundle.read_json(policy_path, bundle.MAX_HEADER_BYTES)
        named = policy.get("model_dir") if isinstance(policy, dict) else None
        if isinstance(named, str) and (here.parent.parent / named).resolve() == here:
            value, source = policy.get("reject_threshold"), policy_path
    if value is None and source != policy_path:
        return DEFAULT_REJECT_THRESHOLD, "taskclf 0.4's default (metadata.json records none)"
    if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
        raise BundleError(f"{_where(source)}: reject_threshold {value!r} is not a number in [0, 1]")
    return float(value), str(source)


def _read_04_metadata(directory: Path) -> bundle.BundleMetadata:
    path = directory / "metadata.json"
    data = bundle.read_json(path, bundle.MAX_HEADER_BYTES)
    if not isinstance(data, dict):
        raise BundleError(f"{_where(path)}: must hold a JSON object")
    threshold, source = _04_threshold(directory, data.get("reject_threshold"))
    known = ("schema_version", "schema_hash", "label_set", "created_at")
    fields = {
        "schema_version": data.get("schema_version", ""),
        "schema_hash": data.get("schema_hash", ""),
        "label_set": data.get("label_set"),
        "created_at": str(data.get("created_at", "")),
        "versions": {"taskclf": "0.4"},
        "steps": (),
        "params": {"reject__threshold": threshold},
        "extra": {k: v for k, v in data.items() if k not in known},
    }
    fields["extra"]["reject_threshold_source"] = source
    meta = bundle.BundleMetadata.from_dict(fields, _where(path))
    bundle.check_compatibility(meta, _where(path), versions=False)
    return meta


def _04_vocabulary(directory: Path, categorical: tuple[str, ...]) -> dict[str, list[Any]]:
    path = directory / "categorical_encoders.json"
    if not path.exists():
        warnings.warn(
            f"bundle directory {str(directory)!r} has no {path.name}: the categorical "
            f"columns {list(categorical)} are treated as unseen values",
            TaskclfWarning,
            stacklevel=4,
        )
        return {c: [] for c in categorical}
    data = bundle.read_json(path, bundle.MAX_BUNDLE_BYTES)
    if not isinstance(data, dict):
        raise BundleError(f"{_where(path)}: must map column names to vocabulary lists")
    for column, values in data.items():
        if column not in categorical:
            raise BundleError(
                f"{_where(path)}: {column!r} is not a categorical column of the model "
                f"({list(categorical)})"
            )
        kinds = {type(v) for v in values} if isinstance(values, list) else {dict}
        if not (kinds <= {str} or kinds <= {int, float}):
            raise BundleError(f"{_where(path)}: the vocabulary of {column!r} must list strings")
    return {column: sorted(set(values)) for column, values in data.items()}


def _load_04(directory: Path) -> Pipeline:
    """The standard pipeline around a 0.4 model directory's booster and vocabulary."""
    import lightgbm as lgb

    from taskclf.pipeline import build_pipeline

    meta = _read_04_metadata(directory)
    schema = SCHEMAS[meta.schema_version]
    try:
        text = bundle.read_file(directory / "model.txt", bundle.MAX_BUNDLE_BYTES).decode("utf-8")
        booster = lgb.Booster(model_str=text)
    except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
        where = _where(directory / "model.txt")
        raise BundleError(f"{where} is not a LightGBM model: {exc}") from None
    vocabulary = _04_vocabulary(directory, schema.categorical_columns)
    where = f"bundle directory {str(directory)!r}"
    try:
        threshold = meta.params["reject__threshold"]
        pipeline = build_pipeline(
            booster, vocabulary, reject_threshold=threshold, schema_version=schema.version
        )
    except TaskclfError as exc:
        raise BundleError(f"{where}: {exc}") from None
    return bundle.check_runs(pipeline, meta, where)
