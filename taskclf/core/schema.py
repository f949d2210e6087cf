"""Feature schemas v1, v2 and v3: model columns, row registries, hashes.

A schema fixes two lists. The *model feature columns* are the booster's
matrix columns, in order. The *row registry* lists every column of a full
feature row with its type name; its hash identifies the schema in saved
bundles and in the ``schema_hash`` column of feature frames.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final

import attrs
import numpy as np
import pandas as pd

from taskclf.core.time import timestamps_ns
from taskclf.exceptions import DuplicateRowsError, SchemaMismatchError, TaskclfError

# Every column in registry order (v1's registry, then what v3 adds), with
# its meaning and unit for docs/schema.md and `taskclf schema`. A sketch
# group stands for its 128 columns.
_MEANINGS: Final[dict[str, tuple[str, str]]] = {
    "user_id": ("who the row belongs to: an opaque id, never a name", "text"),
    "device_id": ("the machine the row was recorded on (optional)", "text"),
    "session_id": ("the activity session holding the bucket", "text"),
    "bucket_start_ts": ("start of the bucket", "UTC timestamp"),
    "bucket_end_ts": ("end of the bucket (exclusive)", "UTC timestamp"),
    "schema_version": ("the schema the row follows", "v1, v2 or v3"),
    "schema_hash": ("hash of the schema's column list, checked against the model's", "text"),
    "source_ids": ("the collectors that contributed to the row", "list of text"),
    "app_id": ("the foreground application", "text, e.g. com.apple.Terminal"),
    "app_category": ("kind of the foreground application", "text, e.g. editor, chat"),
    "window_title_hash": ("hash of the window title (the title itself is never stored)", "text"),
    "is_browser": ("the foreground application is a web browser", "bool"),
    "is_editor": ("the foreground application is a code editor", "bool"),
    "is_terminal": ("the foreground application is a terminal", "bool"),
    "app_switch_count_last_5m": ("distinct application switches in the last 5 minutes", "count"),
    "app_foreground_time_ratio": ("share of the bucket the main application was in front", "0-1"),
    "app_change_count": ("application changes inside the bucket", "count"),
    "app_dwell_time_seconds": ("how long the main application has been in front", "seconds"),
    "app_entropy_5m": ("Shannon entropy of time per application, last 5 minutes", "nats"),
    "app_entropy_15m": ("Shannon entropy of time per application, last 15 minutes", "nats"),
    "top2_app_concentration_15m": ("share of the last 15 minutes in the two main apps", "0-1"),
    "idle_return_indicator": ("the bucket is the first after an idle gap", "bool"),
    "keys_per_min": ("key presses", "per minute"),
    "backspace_ratio": ("share of key presses that are backspace", "0-1"),
    "shortcut_rate": ("keyboard shortcuts", "per minute"),
    "clicks_per_min": ("mouse clicks", "per minute"),
    "scroll_events_per_min": ("scroll events", "per minute"),
    "mouse_distance": ("distance the pointer moved", "pixels"),
    "active_seconds_keyboard": ("seconds of the bucket with keyboard input", "seconds"),
    "active_seconds_mouse": ("seconds of the bucket with mouse input", "seconds"),
    "active_seconds_any": ("seconds of the bucket with any input", "seconds"),
    "max_idle_run_seconds": ("longest stretch without input inside the bucket", "seconds"),
    "event_density": ("input events per active second", "per second"),
    "domain_category": ("kind of web site in a browser; non_browser otherwise", "text"),
    "window_title_bucket": ("window title hash folded into 256 buckets", "0-255"),
    "title_repeat_count_session": ("times this window title was seen in the session", "count"),
    "keys_per_min_rolling_5": ("mean of keys_per_min over the last 5 buckets", "per minute"),
    "keys_per_min_rolling_15": ("mean of keys_per_min over the last 15 buckets", "per minute"),
    "mouse_distance_rolling_5": ("mean of mouse_distance over the last 5 buckets", "pixels"),
    "mouse_distance_rolling_15": ("mean of mouse_distance over the last 15 buckets", "pixels"),
    "keys_per_min_delta": ("keys_per_min minus the previous bucket's", "per minute"),
    "clicks_per_min_delta": ("clicks_per_min minus the previous bucket's", "per minute"),
    "mouse_distance_delta": ("mouse_distance minus the previous bucket's", "pixels"),
    "app_switch_count_last_15m": ("distinct application switches in the last 15 minutes", "count"),
    "hour_of_day": ("hour of bucket_start_ts", "0-23"),
    "day_of_week": ("weekday of bucket_start_ts, Monday first", "0-6"),
    "session_length_so_far": ("time since the session started", "minutes"),
    "title_token_sketch": ("hashed counts of window title words (one of 128)", "float"),
    "title_char3_sketch": ("hashed counts of window title 3-letter pieces (one of 128)", "float"),
    "title_char_count": ("characters in the window title", "count"),
    "title_token_count": ("words in the window title", "count"),
    "title_unique_token_ratio": ("share of distinct words in the window title", "0-1"),
    "title_digit_ratio": ("share of digits in the window title", "0-1"),
    "title_separator_count": ("separators (- | : / and the like) in the window title", "count"),
}
_KINDS: Final[dict[str, str]] = {  # the columns of each type but float
    "str": "user_id device_id session_id schema_version schema_hash app_id app_category "
    "window_title_hash domain_category",
    "datetime": "bucket_start_ts bucket_end_ts",
    "list": "source_ids",
    "bool": "is_browser is_editor is_terminal idle_return_indicator",
    "int": "app_switch_count_last_5m app_change_count window_title_bucket hour_of_day "
    "title_repeat_count_session app_switch_count_last_15m day_of_week title_char_count "
    "title_token_count title_separator_count",
}
_KIND_OF: Final = {name: kind for kind, names in _KINDS.items() for name in names.split()}
_METADATA: Final = frozenset(list(_MEANINGS)[:8]) | {"window_title_hash"}
_SKETCH_GROUPS: Final = ("title_token_sketch", "title_char3_sketch")

SKETCH_COLUMNS: Final[tuple[str, ...]] = tuple(
    f"{group}_{i:03d}" for group in _SKETCH_GROUPS for i in range(128)
)
"""The 256 title sketch columns of schema v3."""


def _registry(names: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, _KIND_OF.get(name, "float")) for name in names)


_V1_REGISTRY: Final = _registry(list(_MEANINGS)[: list(_MEANINGS).index(_SKETCH_GROUPS[0])])
_V3_EXTRA: Final = _registry([*SKETCH_COLUMNS, *list(_MEANINGS)[len(_V1_REGISTRY) + 2 :]])
_V2_FEATURES: Final = tuple(name for name, _ in _V1_REGISTRY if name not in _METADATA)
_TYPES: Final[dict[str, type]] = {
    "str": str,
    "datetime": dt.datetime,
    "list": list,
    "bool": bool,
    "int": int,
    "float": float,
}


def _build_schema_hash(columns: Mapping[str, type]) -> str:
    """First 12 hex digits of SHA-256 over the compact JSON ``[[column, type_name], ...]``.

    Examples
    --------
    >>> _build_schema_hash(SCHEMA_V1.columns)
    '4077fe0dba70'
    """
    payload = json.dumps(
        [[name, kind.__name__] for name, kind in columns.items()], separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


@attrs.frozen
class FeatureSchema:
    """One version of the feature row layout.

    Attributes
    ----------
    version : str
        ``"v1"``, ``"v2"`` or ``"v3"``.
    feature_columns : tuple of str
        The booster's matrix columns, in order.
    categorical_columns : tuple of str
        The feature columns encoded as categories.
    registry : tuple of (str, str)
        Every column of a full feature row with its type name.
    """

    version: str
    feature_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]
    registry: tuple[tuple[str, str], ...]

    @property
    def columns(self) -> dict[str, type]:
        """The row registry as column → Python type (taskclf 0.4's ``COLUMNS``)."""
        return {name: _TYPES[kind] for name, kind in self.registry}

    @property
    def schema_hash(self) -> str:
        """First 12 hex digits of SHA-256 over the compact JSON registry."""
        return _build_schema_hash(self.columns)

    @property
    def n_features(self) -> int:
        """Number of model feature columns."""
        return len(self.feature_columns)


SCHEMA_V1: Final = FeatureSchema(
    version="v1",
    feature_columns=(*_V2_FEATURES, "user_id"),
    categorical_columns=("app_id", "app_category", "domain_category", "user_id"),
    registry=_V1_REGISTRY,
)
SCHEMA_V2: Final = FeatureSchema(
    version="v2",
    feature_columns=_V2_FEATURES,
    categorical_columns=("app_id", "app_category", "domain_category"),
    registry=tuple(item for item in _V1_REGISTRY if item[0] != "user_id"),
)
SCHEMA_V3: Final = FeatureSchema(
    version="v3",
    feature_columns=_V2_FEATURES + tuple(name for name, _ in _V3_EXTRA),
    categorical_columns=SCHEMA_V2.categorical_columns,
    registry=_V1_REGISTRY + _V3_EXTRA,
)
SCHEMAS: Final[dict[str, FeatureSchema]] = {s.version: s for s in (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3)}
SCHEMA_VERSIONS: Final[tuple[str, ...]] = tuple(SCHEMAS)


def _schema_class(schema: FeatureSchema) -> type:
    """taskclf 0.4's class form of a schema: ``VERSION``, ``COLUMNS``, ``SCHEMA_HASH``."""
    return type(
        f"FeatureSchema{schema.version.upper()}",
        (),
        {
            "__doc__": f"Feature schema {schema.version} under taskclf 0.4's names.",
            "__module__": __name__,
            "VERSION": schema.version,
            "COLUMNS": schema.columns,
            "SCHEMA_HASH": schema.schema_hash,
        },
    )


FeatureSchemaV1: Final = _schema_class(SCHEMA_V1)
FeatureSchemaV2: Final = _schema_class(SCHEMA_V2)
FeatureSchemaV3: Final = _schema_class(SCHEMA_V3)


def get_schema(version: str) -> FeatureSchema:
    """Return the :class:`FeatureSchema` of ``version`` (``"v1"``, ``"v2"``, ``"v3"``).

    Raises
    ------
    SchemaMismatchError
        If the version is not one taskclf knows.
    """
    try:
        return SCHEMAS[str(version)]
    except KeyError:
        raise SchemaMismatchError(
            f"unknown schema version {version!r}; expected one of {list(SCHEMAS)}"
        ) from None


def get_feature_columns(version: str) -> list[str]:
    """Model feature columns of a schema version, in the booster's order."""
    return list(get_schema(version).feature_columns)


def schema_for_n_features(n_features: int) -> FeatureSchema | None:
    """The schema whose model has ``n_features`` columns, if exactly one has."""
    matches = [s for s in SCHEMAS.values() if s.n_features == n_features]
    return matches[0] if len(matches) == 1 else None


def resolve_schema_version(df: pd.DataFrame, schema_version: str | None = None) -> str:
    """Decide which schema a feature frame follows.

    The caller's ``schema_version`` wins. Otherwise: the first value of the
    frame's ``schema_version`` column; else ``"v3"`` if every sketch column
    is present; else ``"v1"`` if the frame has ``user_id``; else ``"v2"``.

    Examples
    --------
    >>> import pandas as pd
    >>> resolve_schema_version(pd.DataFrame({"user_id": ["a"]}))
    'v1'
    >>> resolve_schema_version(pd.DataFrame({"x": [1]}))
    'v2'
    """
    if schema_version is not None:
        return get_schema(schema_version).version
    if "schema_version" in df.columns and len(df) > 0:
        return get_schema(df["schema_version"].iloc[0]).version
    if all(c in df.columns for c in SKETCH_COLUMNS):
        return "v3"
    return "v1" if "user_id" in df.columns else "v2"


def check_frame_schema(df: pd.DataFrame, schema: FeatureSchema) -> None:
    """Refuse a frame whose ``schema_version`` or ``schema_hash`` column declares another schema.

    Raises
    ------
    SchemaMismatchError
        If a declared version or hash differs from ``schema``'s.
    """
    for column, expected in (
        ("schema_version", schema.version),
        ("schema_hash", schema.schema_hash),
    ):
        if column not in df.columns:
            continue
        wrong = [v for v in pd.unique(df[column].astype("object")) if v != expected]
        if wrong:
            raise SchemaMismatchError(
                f"the frame's {column} column holds {wrong[:5]!r} but the model "
                f"expects {expected!r} (schema {schema.version}, hash "
                f"{schema.schema_hash})"
            )


def describe_schema(version: str) -> pd.DataFrame:
    """One row per column of a schema: name, type, meaning, unit, and its role.

    The 256 title sketch columns of v3 are listed as two rows
    (``title_token_sketch_000 … _127``, ``title_char3_sketch_000 … _127``).

    Examples
    --------
    >>> describe_schema("v2").loc[lambda t: t.column == "keys_per_min", "unit"].item()
    'per minute'
    """
    schema = get_schema(version)
    rows = []
    for name, kind in schema.registry:
        group = name.rsplit("_", 1)[0] if name in SKETCH_COLUMNS else name
        if group != name and not name.endswith("_000"):
            continue
        role = (
            "model feature, categorical"
            if name in schema.categorical_columns
            else "model feature"
            if name in schema.feature_columns
            else "row metadata"
        )
        meaning, unit = _MEANINGS[group]
        label = f"{group}_000 … {group}_127" if group != name else name
        rows.append({"column": label, "type": kind, "role": role, "meaning": meaning, "unit": unit})
    return pd.DataFrame(rows)


def schema_markdown() -> str:
    """The docs page listing every column of every schema (docs/schema.md)."""
    parts = [
        "# The input: feature rows",
        "",
        "One row per user per minute (a bucket of `bucket_seconds`, 60 by default).",
        "The model reads the *model features* in a fixed order; the other columns",
        "identify and check the row. Missing feature values are read as 0;",
        "categorical values the model never saw are not errors. This page is",
        "generated from `taskclf.core.schema` (`taskclf schema v1` prints the same).",
    ]
    for schema in SCHEMAS.values():
        parts += [
            "",
            f"## Schema {schema.version}",
            "",
            f"Hash `{schema.schema_hash}`; {schema.n_features} model features, "
            f"{len(schema.registry)} columns in all.",
            "",
            "| column | type | role | meaning | unit |",
            "|---|---|---|---|---|",
        ]
        parts += [
            f"| `{r.column}` | {r.type} | {r.role} | {r.meaning} | {r.unit} |"
            for r in describe_schema(schema.version).itertuples()
        ]
    return "\n".join(parts) + "\n"


def validate_features(df: pd.DataFrame, schema_version: str | None = None) -> list[str]:
    """Every problem that keeps ``df`` from being predicted, at once, without a model.

    Checks what the pipeline would refuse: missing feature columns and a
    missing ``bucket_start_ts``, columns of the wrong type, missing or
    unparseable timestamps, duplicate ``(user_id, bucket_start_ts)`` rows,
    and ``schema_version``/``schema_hash`` values of another schema.

    Parameters
    ----------
    df : DataFrame
        Feature rows.
    schema_version : str, optional
        The schema to check against; resolved from the frame when omitted.

    Returns
    -------
    list of str
        One sentence per problem; empty when the frame is fine.

    Examples
    --------
    >>> validate_features(pd.DataFrame({"user_id": ["a"]}), "v2")[0][:40]
    "missing 38 model feature column(s): 'app"
    """
    from taskclf.stages.model import feature_columns

    schema = get_schema(resolve_schema_version(df, schema_version))
    problems = []
    missing = [c for c in schema.feature_columns if c not in df.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        problems.append(f"missing {len(missing)} model feature column(s): {shown}{more}")
    checks: list[Callable[[], object]] = [
        partial(feature_columns, df[[c]], _single(schema, c))
        for c in schema.feature_columns
        if c in df.columns and c not in schema.categorical_columns
    ]
    checks += [partial(check_frame_schema, df, schema), partial(_duplicates, df)]
    for check in checks:
        try:
            check()
        except TaskclfError as exc:
            problems.append(str(exc))
    return problems


def _single(schema: FeatureSchema, column: str) -> FeatureSchema:
    """A one-column schema, to check a column as the model stage reads it."""
    return attrs.evolve(schema, feature_columns=(column,), categorical_columns=())


def _duplicates(df: pd.DataFrame) -> None:
    """Refuse two rows of one ``(user_id, bucket_start_ts)``."""
    users = df["user_id"] if "user_id" in df.columns else 0
    twice = pd.DataFrame({"ts": timestamps_ns(df), "user": users}).duplicated().to_numpy()
    if twice.any():
        raise DuplicateRowsError(
            f"{int(twice.sum())} duplicate (user_id, bucket_start_ts) row(s); first at row "
            f"{int(np.flatnonzero(twice)[0])}"
        )
