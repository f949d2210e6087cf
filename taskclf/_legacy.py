"""The model directories of taskclf 0.4, read as standard pipelines.

A 0.4 model directory (``models/<run>/``) holds ``model.txt`` (the
LightGBM model), ``metadata.json`` (``schema_version``, ``schema_hash``,
``label_set``, ``reject_threshold`` and provenance) and optionally
``categorical_encoders.json`` (column → vocabulary list). The ``models/``
directory above it may hold ``inference_policy.json``, whose
``reject_threshold`` 0.4 used for the model its ``model_dir`` names.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Final

from sklearn.pipeline import Pipeline

from taskclf.bundle import (
    MAX_BUNDLE_BYTES,
    MAX_HEADER_BYTES,
    BundleMetadata,
    check_runs,
    check_schema_and_labels,
    read_file,
    read_json,
)
from taskclf.core.defaults import DEFAULT_REJECT_THRESHOLD
from taskclf.core.schema import SCHEMAS
from taskclf.exceptions import BundleError, TaskclfError, TaskclfWarning

METADATA: Final = "metadata.json"
MODEL: Final = "model.txt"
ENCODERS: Final = "categorical_encoders.json"
POLICY: Final = "inference_policy.json"


def is_model_dir(directory: Path) -> bool:
    """Whether ``directory`` looks like a taskclf 0.4 model directory."""
    return (directory / METADATA).exists() and (directory / MODEL).exists()


def _where(path: Path) -> str:
    return f"bundle file {str(path)!r}"


def _checked_threshold(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
        raise BundleError(f"{where}: reject_threshold {value!r} is not a number in [0, 1]")
    return float(value)


def _threshold(directory: Path, recorded: Any) -> tuple[float, str]:
    """The reject threshold taskclf 0.4 used for this model, and where it comes from.

    The ``inference_policy.json`` beside the model directories, when its
    ``model_dir`` names this one; else the threshold ``metadata.json``
    records; else 0.4's default of 0.55.
    """
    here = directory.resolve()
    policy_path = here.parent / POLICY
    if policy_path.exists():
        policy = read_json(policy_path, MAX_HEADER_BYTES)
        named = policy.get("model_dir") if isinstance(policy, dict) else None
        if isinstance(named, str) and (here.parent.parent / named).resolve() == here:
            threshold = _checked_threshold(policy.get("reject_threshold"), _where(policy_path))
            return threshold, str(policy_path)
    if recorded is not None:
        return _checked_threshold(recorded, _where(directory / METADATA)), str(directory / METADATA)
    return DEFAULT_REJECT_THRESHOLD, f"taskclf 0.4's default ({METADATA} records none)"


def read_metadata(directory: Path) -> BundleMetadata:
    """The metadata of a 0.4 model directory, with the reject threshold the model uses.

    ``params["reject__threshold"]`` is that threshold and
    ``extra["reject_threshold_source"]`` says where it comes from.
    """
    path = directory / METADATA
    data = read_json(path, MAX_HEADER_BYTES)
    if not isinstance(data, dict):
        raise BundleError(f"{_where(path)}: must hold a JSON object")
    threshold, source = _threshold(directory, data.get("reject_threshold"))
    known = ("schema_version", "schema_hash", "label_set", "created_at")
    try:
        meta = BundleMetadata(
            schema_version=data.get("schema_version", ""),
            schema_hash=data.get("schema_hash", ""),
            label_set=data.get("label_set"),
            created_at=str(data.get("created_at", "")),
            versions={"taskclf": "0.4"},
            steps=(),
            params={"reject__threshold": threshold},
            extra={
                **{k: v for k, v in data.items() if k not in known},
                "reject_threshold_source": source,
            },
        )
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{_where(path)}: {exc}") from None
    check_schema_and_labels(meta, _where(path))
    return meta


def _vocabulary(path: Path, categorical: tuple[str, ...]) -> dict[str, list[Any]]:
    data = read_json(path, MAX_BUNDLE_BYTES)
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


def load(directory: Path) -> Pipeline:
    """The standard pipeline around a 0.4 model directory's booster and vocabulary."""
    import lightgbm as lgb

    from taskclf.pipeline import build_pipeline

    meta = read_metadata(directory)
    schema = SCHEMAS[meta.schema_version]
    try:
        text = read_file(directory / MODEL, MAX_BUNDLE_BYTES).decode("utf-8")
        booster = lgb.Booster(model_str=text)
    except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
        raise BundleError(f"{_where(directory / MODEL)} is not a LightGBM model: {exc}") from None
    if (directory / ENCODERS).exists():
        vocabulary = _vocabulary(directory / ENCODERS, schema.categorical_columns)
    else:
        warnings.warn(
            f"bundle directory {str(directory)!r} has no {ENCODERS}: the categorical "
            f"columns {list(schema.categorical_columns)} are treated as unseen values",
            TaskclfWarning,
            stacklevel=3,
        )
        vocabulary = {c: [] for c in schema.categorical_columns}
    where = f"bundle directory {str(directory)!r}"
    try:
        pipeline = build_pipeline(
            booster,
            vocabulary,
            reject_threshold=meta.params["reject__threshold"],
            schema_version=schema.version,
        )
    except TaskclfError as exc:
        raise BundleError(f"{where}: {exc}") from None
    return check_runs(pipeline, meta, where)


def digests(directory: Path) -> dict[str, str]:
    """SHA-256 of the model and JSON files of a 0.4 model directory."""
    return {
        p.name: hashlib.sha256(read_file(p, MAX_BUNDLE_BYTES)).hexdigest()
        for p in sorted(directory.iterdir())
        if p.suffix in (".txt", ".json")
    }


__all__ = ["is_model_dir", "load", "read_metadata"]
