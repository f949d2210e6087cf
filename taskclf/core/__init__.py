"""Core vocabulary: labels, defaults, feature schemas and UTC time."""

from taskclf.core.defaults import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_IDLE_GAP_SECONDS,
    DEFAULT_REJECT_THRESHOLD,
    DEFAULT_SMOOTH_WINDOW,
    MIN_BLOCK_DURATION_SECONDS,
)
from taskclf.core.schema import (
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    FeatureSchema,
    get_feature_columns,
    get_schema,
    resolve_schema_version,
)
from taskclf.core.types import CLASS_ORDER, LABEL_SET_V1, MIXED_UNKNOWN, CoreLabel

__all__ = [
    "CLASS_ORDER",
    "DEFAULT_BUCKET_SECONDS",
    "DEFAULT_IDLE_GAP_SECONDS",
    "DEFAULT_REJECT_THRESHOLD",
    "DEFAULT_SMOOTH_WINDOW",
    "LABEL_SET_V1",
    "MIN_BLOCK_DURATION_SECONDS",
    "MIXED_UNKNOWN",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "SCHEMA_V3",
    "CoreLabel",
    "FeatureSchema",
    "get_feature_columns",
    "get_schema",
    "resolve_schema_version",
]
