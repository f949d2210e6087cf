"""User taxonomies: map the eight core labels onto user-defined buckets.

A taxonomy groups core labels (Build, Debug, ...) into buckets a user cares
about ("Coding", "Meetings", ...). This module holds

* the configuration as immutable values (:class:`TaxonomyConfig` and its
  parts), read from and written to YAML (:func:`load_taxonomy`,
  :func:`save_taxonomy`) or plain dicts (:func:`taxonomy_to_dict`,
  :func:`taxonomy_from_dict`);
* the mapping itself, :class:`TaxonomyResolver`, whose vectorized kernel
  :meth:`TaxonomyResolver.resolve_matrix` maps a whole probability matrix
  at once;
* the optional last pipeline stage, :class:`TaxonomyMapper`, which adds the
  mapped label and the mapped probabilities to a frame.

The mapping rules are the contract of DESIGN section 3 ("Taxonomy").
"""

from __future__ import annotations

import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from functools import reduce
from pathlib import Path
from typing import Any, Final, NamedTuple

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from taskclf._columns import (
    IS_REJECTED,
    LABEL,
    MAPPED_LABEL,
    MAPPED_PROBA_PREFIX,
    PROBA_COLUMNS,
)
from taskclf._frame import frame_tags, label_accuracy
from taskclf.core.types import (
    CLASS_INDEX,
    CLASS_ORDER,
    LABEL_COLORS,
    LABEL_SET_V1,
    MIXED_UNKNOWN,
    N_CLASSES,
)
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    ProbabilityShapeError,
    ReaderError,
    TaxonomyError,
)

FALLBACK_BUCKET: Final = "Other"
"""Name of the bucket appended last for core labels that no bucket lists."""

DEFAULT_BUCKET_COLOR: Final = "#808080"
"""Colour of a bucket that does not set one (also the fallback bucket's)."""

LABEL_SCHEMA_VERSIONS: Final[tuple[str, ...]] = ("labels_v1",)
"""Label schema versions a taxonomy may declare."""

AGGREGATIONS: Final[tuple[str, ...]] = ("sum", "max")
"""How a bucket combines its core labels' probabilities."""

DEFAULT_VIEWS: Final[tuple[str, ...]] = ("mapped", "core")
"""Which labels a report shows first."""

_COLOR_RE: Final = re.compile(r"#[0-9A-Fa-f]{6}")
_CORE_LABELS_TEXT: Final = ", ".join(CLASS_ORDER)


# ---------------------------------------------------------------------------
# Validation helpers shared by the value objects
# ---------------------------------------------------------------------------


def _describe(value: object) -> str:
    """Return ``"<type> <repr>"`` for error messages."""
    return f"{type(value).__name__} {value!r}"


def _as_tuple(value: Any) -> Any:
    """Turn a list (as read from YAML) into a tuple; leave anything else as is.

    Anything that is not a list or tuple is passed through unchanged so that
    the field's validator can report it with its context.
    """
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


def _as_float(value: Any) -> Any:
    """Turn an int (not a bool) into a float; leave anything else as is."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _check_text(where: str, field: str, value: object, *, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise TaxonomyError(f"{where}: {field} must be a string, got {_describe(value)}")
    if not allow_empty and not value.strip():
        raise TaxonomyError(f"{where}: {field} must not be empty, got {value!r}")


def _check_bool(where: str, field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TaxonomyError(f"{where}: {field} must be true or false, got {_describe(value)}")


def _check_choice(where: str, field: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        shown = " or ".join(repr(c) for c in choices)
        raise TaxonomyError(f"{where}: {field} must be {shown}, got {_describe(value)}")


# ---------------------------------------------------------------------------
# Value objects
# ---------------------------------------------------------------------------


def _bucket_where(instance: TaxonomyBucket) -> str:
    name = getattr(instance, "name", None)
    return f"bucket {name!r}" if isinstance(name, str) else "bucket"


def _check_bucket_name(instance: TaxonomyBucket, attribute: attrs.Attribute, value: object) -> None:
    _check_text("bucket", "name", value, allow_empty=False)


def _check_core_labels(instance: TaxonomyBucket, attribute: attrs.Attribute, value: object) -> None:
    where = _bucket_where(instance)
    if not isinstance(value, tuple):
        raise TaxonomyError(
            f"{where}: core_labels must be a list of core label names, got {_describe(value)}"
        )
    if not value:
        raise TaxonomyError(
            f"{where}: core_labels is empty; list at least one of {_CORE_LABELS_TEXT}"
        )
    seen: set[str] = set()
    for label in value:
        if not isinstance(label, str):
            raise TaxonomyError(
                f"{where}: core_labels entries must be strings, got {_describe(label)}"
            )
        if label not in LABEL_SET_V1:
            raise TaxonomyError(
                f"{where}: unknown core label {label!r} in core_labels; "
                f"expected one of {_CORE_LABELS_TEXT}"
            )
        if label in seen:
            raise TaxonomyError(f"{where}: core label {label!r} is listed more than once")
        seen.add(label)


def _check_color(instance: TaxonomyBucket, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, str) or _COLOR_RE.fullmatch(value) is None:
        raise TaxonomyError(
            f"{_bucket_where(instance)}: color must be a #RRGGBB hex colour "
            f"such as '#1F77B4', got {_describe(value)}"
        )


def _check_description(instance: TaxonomyBucket, attribute: attrs.Attribute, value: object) -> None:
    _check_text(_bucket_where(instance), "description", value, allow_empty=True)


@attrs.frozen
class TaxonomyBucket:
    """One user-defined bucket: a name and the core labels it gathers.

    Parameters
    ----------
    name : str
        Bucket name, unique within a taxonomy; the mapped label.
    core_labels : sequence of str
        The core labels the bucket holds (at least one, no repeats), in any
        order. A list is stored as a tuple.
    color : str, default "#808080"
        Display colour as ``#RRGGBB``.
    description : str, default ""
        Free text for reports.

    Raises
    ------
    TaxonomyError
        If a field is invalid; the message names the bucket, the field and
        the bad value.

    Examples
    --------
    >>> TaxonomyBucket("Coding", ["Build", "Debug"], color="#1F77B4").core_labels
    ('Build', 'Debug')
    >>> TaxonomyBucket("Coding", ["Build", "Coding"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    taskclf.exceptions.TaxonomyError: bucket 'Coding': unknown core label 'Coding' ...
    """

    name: str = attrs.field(validator=_check_bucket_name)
    core_labels: tuple[str, ...] = attrs.field(converter=_as_tuple, validator=_check_core_labels)
    color: str = attrs.field(default=DEFAULT_BUCKET_COLOR, validator=_check_color)
    description: str = attrs.field(default="", validator=_check_description)


def _check_display(instance: TaxonomyDisplay, attribute: attrs.Attribute, value: Any) -> None:
    where = "display"
    if attribute.name == "show_core_labels":
        _check_bool(where, attribute.name, value)
    elif attribute.name == "default_view":
        _check_choice(where, attribute.name, value, DEFAULT_VIEWS)
    else:
        _check_text(where, attribute.name, value, allow_empty=False)


@attrs.frozen
class TaxonomyDisplay:
    """How reports present a taxonomy.

    Parameters
    ----------
    show_core_labels : bool, default False
        Also show the core label next to the mapped one.
    default_view : {"mapped", "core"}, default "mapped"
        Which labels a report shows first.
    color_theme : str, default "default"
        Name of the colour theme.
    """

    show_core_labels: bool = attrs.field(default=False, validator=_check_display)
    default_view: str = attrs.field(default="mapped", validator=_check_display)
    color_theme: str = attrs.field(default="default", validator=_check_display)


def _check_reject(instance: TaxonomyReject, attribute: attrs.Attribute, value: Any) -> None:
    if attribute.name == "mixed_label_name":
        _check_text("reject", attribute.name, value, allow_empty=False)
    else:
        _check_bool("reject", attribute.name, value)


@attrs.frozen
class TaxonomyReject:
    """How rejected buckets are labelled.

    Parameters
    ----------
    mixed_label_name : str, default "Mixed/Unknown"
        The mapped label of a rejected bucket. It must differ from every
        bucket name.
    include_rejected_in_reports : bool, default False
        Whether reports list rejected buckets.
    """

    mixed_label_name: str = attrs.field(default=MIXED_UNKNOWN, validator=_check_reject)
    include_rejected_in_reports: bool = attrs.field(default=False, validator=_check_reject)


def _as_weight_pairs(value: Any) -> tuple[tuple[str, float], ...]:
    """Validate core-label weights and store them as sorted ``(label, weight)`` pairs.

    Accepts a mapping (as read from YAML) or a sequence of pairs. Pairs are
    sorted in class-index order so that equal weights compare equal however
    they were written.
    """
    where = "advanced.reweight_core_labels"
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple):
        pairs = list(value)
    else:
        raise TaxonomyError(f"{where} must map core labels to weights, got {_describe(value)}")
    weights: dict[str, float] = {}
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise TaxonomyError(
                f"{where}: expected (core label, weight) pairs, got {_describe(pair)}"
            )
        label, weight = pair
        if not isinstance(label, str) or label not in LABEL_SET_V1:
            raise TaxonomyError(
                f"{where}: unknown core label {label!r}; expected one of {_CORE_LABELS_TEXT}"
            )
        if label in weights:
            raise TaxonomyError(f"{where}: core label {label!r} is weighted more than once")
        if not isinstance(weight, numbers.Real) or isinstance(weight, bool):
            raise TaxonomyError(
                f"{where}: weight of {label!r} must be a number, got {_describe(weight)}"
            )
        as_float = float(weight)
        if not (math.isfinite(as_float) and as_float > 0.0):
            raise TaxonomyError(
                f"{where}: weight of {label!r} must be finite and > 0, got {weight!r}"
            )
        weights[label] = as_float
    return tuple(sorted(weights.items(), key=lambda item: CLASS_INDEX[item[0]]))


def _check_advanced(instance: TaxonomyAdvanced, attribute: attrs.Attribute, value: Any) -> None:
    where = "advanced"
    if attribute.name == "probability_aggregation":
        _check_choice(where, attribute.name, value, AGGREGATIONS)
    elif not isinstance(value, float) or not 0.0 <= value <= 1.0:
        raise TaxonomyError(
            f"{where}: min_confidence_for_mapping must be a number in [0, 1], "
            f"got {_describe(value)}"
        )


@attrs.frozen
class TaxonomyAdvanced:
    """Tuning knobs of the mapping.

    Parameters
    ----------
    probability_aggregation : {"sum", "max"}, default "sum"
        How a bucket combines its core labels' probabilities.
    min_confidence_for_mapping : float, default 0.55
        Kept for compatibility with existing configuration files and
        validated to lie in [0, 1]. The resolver does not use it (neither
        did earlier taskclf versions): rejection is decided upstream by the
        reject threshold.
    reweight_core_labels : mapping of str to float, optional
        Per-core-label multipliers (> 0) applied to the probabilities before
        aggregation; labels not listed keep weight 1. Stored as a tuple of
        ``(label, weight)`` pairs in class-index order; :attr:`weights`
        gives a dict.

    Examples
    --------
    >>> adv = TaxonomyAdvanced(reweight_core_labels={"Write": 2, "Build": 0.5})
    >>> adv.reweight_core_labels
    (('Build', 0.5), ('Write', 2.0))
    >>> adv.weights
    {'Build': 0.5, 'Write': 2.0}
    """

    probability_aggregation: str = attrs.field(default="sum", validator=_check_advanced)
    min_confidence_for_mapping: float = attrs.field(
        default=0.55, converter=_as_float, validator=_check_advanced
    )
    reweight_core_labels: tuple[tuple[str, float], ...] = attrs.field(
        default=(), converter=_as_weight_pairs
    )

    @property
    def weights(self) -> dict[str, float]:
        """The reweighted core labels as a new ``{label: weight}`` dict."""
        return dict(self.reweight_core_labels)


def _check_buckets(instance: TaxonomyConfig, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, tuple):
        raise TaxonomyError(f"buckets must be a list of buckets, got {_describe(value)}")
    if not value:
        raise TaxonomyError("buckets is empty; a taxonomy needs at least one bucket")
    for i, bucket in enumerate(value):
        if not isinstance(bucket, TaxonomyBucket):
            raise TaxonomyError(
                f"buckets[{i}] must be a TaxonomyBucket, got {type(bucket).__name__} "
                "(use taxonomy_from_dict to build a taxonomy from plain data)"
            )
    names = [bucket.name for bucket in value]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        shown = ", ".join(repr(name) for name in duplicates)
        raise TaxonomyError(f"buckets: bucket names must be unique; repeated: {shown}")


def _check_config_field(instance: TaxonomyConfig, attribute: attrs.Attribute, value: Any) -> None:
    name = attribute.name
    if name == "version":
        _check_text("taxonomy", name, value, allow_empty=False)
    elif name == "label_schema_version":
        _check_choice("taxonomy", name, value, LABEL_SCHEMA_VERSIONS)
    elif name == "user_id":
        if value is not None:
            _check_text("taxonomy", name, value, allow_empty=False)
    else:
        expected = {
            "display": TaxonomyDisplay,
            "reject": TaxonomyReject,
            "advanced": TaxonomyAdvanced,
        }[name]
        if not isinstance(value, expected):
            raise TaxonomyError(
                f"taxonomy: {name} must be a {expected.__name__}, got {_describe(value)}"
            )


def _uncovered_labels(buckets: Sequence[TaxonomyBucket]) -> tuple[str, ...]:
    """Core labels that no bucket lists, in class-index order."""
    covered = {label for bucket in buckets for label in bucket.core_labels}
    return tuple(label for label in CLASS_ORDER if label not in covered)


@attrs.frozen
class TaxonomyConfig:
    """A user taxonomy: buckets of core labels plus display and mapping options.

    Parameters
    ----------
    buckets : sequence of TaxonomyBucket
        At least one bucket, names unique. Core labels that no bucket lists
        go to an extra bucket named ``"Other"`` appended last (see
        :attr:`resolved_buckets`). A core label may appear in several
        buckets.
    version : str, default "1.0"
        Version of the user's taxonomy file.
    label_schema_version : str, default "labels_v1"
        The core label set the buckets refer to; only ``"labels_v1"``.
    user_id : str or None, default None
        The user the taxonomy belongs to, if any.
    display : TaxonomyDisplay, optional
    reject : TaxonomyReject, optional
    advanced : TaxonomyAdvanced, optional

    Raises
    ------
    TaxonomyError
        If a field is invalid, bucket names repeat, the rejected label
        equals a bucket name, or a bucket named ``"Other"`` coexists with
        uncovered core labels (which would need the fallback bucket).

    See Also
    --------
    load_taxonomy, taxonomy_from_dict, default_taxonomy, TaxonomyResolver

    Examples
    --------
    >>> config = TaxonomyConfig(
    ...     [
    ...         TaxonomyBucket("Coding", ["Build", "Debug", "Review"]),
    ...         TaxonomyBucket("Talking", ["Communicate", "Meet"]),
    ...     ]
    ... )
    >>> [bucket.name for bucket in config.resolved_buckets]
    ['Coding', 'Talking', 'Other']
    >>> config.resolved_buckets[-1].core_labels
    ('BreakIdle', 'ReadResearch', 'Write')
    >>> attrs.evolve(config, user_id="alice").user_id
    'alice'
    """

    buckets: tuple[TaxonomyBucket, ...] = attrs.field(converter=_as_tuple, validator=_check_buckets)
    version: str = attrs.field(default="1.0", validator=_check_config_field)
    label_schema_version: str = attrs.field(default="labels_v1", validator=_check_config_field)
    user_id: str | None = attrs.field(default=None, validator=_check_config_field)
    display: TaxonomyDisplay = attrs.field(factory=TaxonomyDisplay, validator=_check_config_field)
    reject: TaxonomyReject = attrs.field(factory=TaxonomyReject, validator=_check_config_field)
    advanced: TaxonomyAdvanced = attrs.field(
        factory=TaxonomyAdvanced, validator=_check_config_field
    )

    def __attrs_post_init__(self) -> None:
        uncovered = _uncovered_labels(self.buckets)
        names = {bucket.name for bucket in self.buckets}
        if uncovered and FALLBACK_BUCKET in names:
            raise TaxonomyError(
                f"buckets: the name {FALLBACK_BUCKET!r} is reserved for core labels no "
                f"bucket lists ({', '.join(uncovered)}); list them in a bucket or "
                f"rename bucket {FALLBACK_BUCKET!r}"
            )
        if uncovered:
            names.add(FALLBACK_BUCKET)
        mixed = self.reject.mixed_label_name
        if mixed in names:
            raise TaxonomyError(
                f"reject: mixed_label_name {mixed!r} is also a bucket name; rejected "
                "rows would be indistinguishable from that bucket"
            )

    @property
    def resolved_buckets(self) -> tuple[TaxonomyBucket, ...]:
        """The buckets a prediction maps to, in order.

        The configured buckets, followed by a bucket named ``"Other"``
        holding the core labels no bucket lists (in class-index order) when
        there are any.
        """
        uncovered = _uncovered_labels(self.buckets)
        if not uncovered:
            return self.buckets
        fallback = TaxonomyBucket(
            FALLBACK_BUCKET,
            uncovered,
            color=DEFAULT_BUCKET_COLOR,
            description="Core labels that no bucket lists",
        )
        return (*self.buckets, fallback)

    @property
    def bucket_names(self) -> tuple[str, ...]:
        """Names of :attr:`resolved_buckets`, in order."""
        return tuple(bucket.name for bucket in self.resolved_buckets)


def default_taxonomy() -> TaxonomyConfig:
    """Return the identity taxonomy: one bucket per core label, in class order.

    Returns
    -------
    TaxonomyConfig
        Eight buckets, each named after and holding one core label.

    Examples
    --------
    >>> default_taxonomy().bucket_names[:3]
    ('BreakIdle', 'Build', 'Communicate')
    """
    return TaxonomyConfig(
        tuple(TaxonomyBucket(label, (label,), color=LABEL_COLORS[label]) for label in CLASS_ORDER)
    )


# ---------------------------------------------------------------------------
# Plain data (dict / YAML) <-> TaxonomyConfig
# ---------------------------------------------------------------------------

_TOP_KEYS: Final = (
    "version",
    "label_schema_version",
    "user_id",
    "display",
    "reject",
    "buckets",
    "advanced",
)
_DISPLAY_KEYS: Final = ("show_core_labels", "default_view", "color_theme")
_REJECT_KEYS: Final = ("mixed_label_name", "include_rejected_in_reports")
_BUCKET_KEYS: Final = ("name", "description", "core_labels", "color")
_ADVANCED_KEYS: Final = (
    "probability_aggregation",
    "min_confidence_for_mapping",
    "reweight_core_labels",
)


def _section(value: object, where: str, allowed: Sequence[str]) -> dict[str, Any]:
    """Check that *value* is a mapping with only *allowed* keys; drop null values.

    A key whose value is null (an empty YAML entry) counts as absent, so the
    field keeps its default.
    """
    if not isinstance(value, Mapping):
        raise TaxonomyError(f"{where} must be a mapping, got {_describe(value)}")
    unknown = [key for key in value if key not in allowed]
    if unknown:
        shown = ", ".join(repr(key) for key in unknown)
        raise TaxonomyError(f"{where}: unknown key(s) {shown}; allowed keys: {', '.join(allowed)}")
    return {key: item for key, item in value.items() if item is not None}


def _bucket_from_dict(value: object, index: int) -> TaxonomyBucket:
    where = f"buckets[{index}]"
    fields = _section(value, where, _BUCKET_KEYS)
    missing = [key for key in ("name", "core_labels") if key not in fields]
    if missing:
        raise TaxonomyError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return TaxonomyBucket(**fields)
    except TaxonomyError as exc:
        raise TaxonomyError(f"{where}: {exc}") from None


def taxonomy_from_dict(data: Mapping[str, Any]) -> TaxonomyConfig:
    """Build a :class:`TaxonomyConfig` from plain data (parsed YAML or JSON).

    The layout is the YAML file's: ``version``, ``label_schema_version``,
    ``user_id``, ``display``, ``reject``, ``buckets`` (required) and
    ``advanced``. Unknown keys are refused. A null value means "use the
    default". A numeric ``version`` is turned into a string.

    Parameters
    ----------
    data : mapping
        The taxonomy as plain dicts, lists and scalars.

    Returns
    -------
    TaxonomyConfig

    Raises
    ------
    TaxonomyError
        If the structure or a value is invalid; the message says where.

    See Also
    --------
    taxonomy_to_dict : The inverse.

    Examples
    --------
    >>> config = taxonomy_from_dict(
    ...     {"version": 2, "buckets": [{"name": "Focus", "core_labels": ["Build"]}]}
    ... )
    >>> config.version, config.bucket_names
    ('2', ('Focus', 'Other'))
    """
    fields = _section(data, "taxonomy", _TOP_KEYS)
    if "buckets" not in fields:
        raise TaxonomyError("taxonomy: missing required key 'buckets'")
    raw_buckets = fields.pop("buckets")
    if not isinstance(raw_buckets, list | tuple):
        raise TaxonomyError(
            f"buckets must be a list of bucket mappings, got {_describe(raw_buckets)}"
        )
    buckets = tuple(_bucket_from_dict(item, i) for i, item in enumerate(raw_buckets))
    version = fields.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        fields["version"] = str(version)
    sections: tuple[tuple[str, type, tuple[str, ...]], ...] = (
        ("display", TaxonomyDisplay, _DISPLAY_KEYS),
        ("reject", TaxonomyReject, _REJECT_KEYS),
        ("advanced", TaxonomyAdvanced, _ADVANCED_KEYS),
    )
    for key, cls, allowed in sections:
        if key in fields:
            fields[key] = cls(**_section(fields[key], key, allowed))
    return TaxonomyConfig(buckets=buckets, **fields)


def taxonomy_to_dict(config: TaxonomyConfig) -> dict[str, Any]:
    """Return *config* as plain dicts, lists and scalars (YAML/JSON ready).

    Parameters
    ----------
    config : TaxonomyConfig

    Returns
    -------
    dict
        The YAML layout; ``taxonomy_from_dict(taxonomy_to_dict(c)) == c``.
        The fallback bucket is not included (it is derived).

    Examples
    --------
    >>> d = taxonomy_to_dict(default_taxonomy())
    >>> list(d)  # doctest: +NORMALIZE_WHITESPACE
    ['version', 'label_schema_version', 'user_id', 'display', 'reject',
     'buckets', 'advanced']
    >>> d["buckets"][1]
    {'name': 'Build', 'description': '', 'core_labels': ['Build'], 'color': '#1F77B4'}
    """
    if not isinstance(config, TaxonomyConfig):
        raise TaxonomyError(f"expected a TaxonomyConfig, got {_describe(config)}")
    return {
        "version": config.version,
        "label_schema_version": config.label_schema_version,
        "user_id": config.user_id,
        "display": {
            "show_core_labels": config.display.show_core_labels,
            "default_view": config.display.default_view,
            "color_theme": config.display.color_theme,
        },
        "reject": {
            "mixed_label_name": config.reject.mixed_label_name,
            "include_rejected_in_reports": config.reject.include_rejected_in_reports,
        },
        "buckets": [
            {
                "name": bucket.name,
                "description": bucket.description,
                "core_labels": list(bucket.core_labels),
                "color": bucket.color,
            }
            for bucket in config.buckets
        ],
        "advanced": {
            "probability_aggregation": config.advanced.probability_aggregation,
            "min_confidence_for_mapping": config.advanced.min_confidence_for_mapping,
            "reweight_core_labels": config.advanced.weights,
        },
    }


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Describe a YAML parse error by its position and problem."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


def load_taxonomy(path: str | os.PathLike[str]) -> TaxonomyConfig:
    """Read a taxonomy YAML file.

    Parameters
    ----------
    path : str or path-like
        The YAML file (layout as in :func:`taxonomy_from_dict`).

    Returns
    -------
    TaxonomyConfig

    Raises
    ------
    ReaderError
        If the file is missing, unreadable, not UTF-8 or not valid YAML.
    TaxonomyError
        If the content is not a valid taxonomy (not a mapping, unknown
        keys, wrong types, unknown core labels, ...).

    Both messages start with the file's path.

    See Also
    --------
    save_taxonomy : The inverse.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReaderError(f"taxonomy file {file}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ReaderError(f"taxonomy file {file}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ReaderError(f"taxonomy file {file}: cannot be read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ReaderError(f"taxonomy file {file}: not valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, a nesting bomb
        raise ReaderError(f"taxonomy file {file}: unusable YAML: {exc}") from None
    if data is None:
        raise TaxonomyError(
            f"taxonomy file {file}: the file is empty; expected a mapping with "
            "at least a 'buckets' list"
        )
    if not isinstance(data, dict):
        raise TaxonomyError(
            f"taxonomy file {file}: the top level must be a mapping of taxonomy "
            f"keys, got a {type(data).__name__}"
        )
    try:
        return taxonomy_from_dict(data)
    except TaxonomyError as exc:
        raise TaxonomyError(f"taxonomy file {file}: {exc}") from None


def save_taxonomy(config: TaxonomyConfig, path: str | os.PathLike[str]) -> Path:
    """Write *config* as YAML, atomically.

    The YAML goes to a temporary file in the destination directory, which
    is flushed, synced and then renamed over *path*, so readers never see a
    partial file and a failure leaves no file behind.

    Parameters
    ----------
    config : TaxonomyConfig
    path : str or path-like
        Destination; missing parent directories are created.

    Returns
    -------
    Path
        The path written.

    See Also
    --------
    load_taxonomy : The inverse.
    """
    text = yaml.safe_dump(taxonomy_to_dict(config), sort_keys=False, allow_unicode=True, indent=2)
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, destination)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return destination


# ---------------------------------------------------------------------------
# Numeric kernels: sums in numpy's order, rounding as Python rounds
# ---------------------------------------------------------------------------

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

_PAIRWISE_BLOCK: Final = 128  # numpy's PW_BLOCKSIZE
_PAIRWISE_UNROLL: Final = 8  # numpy's 8 partial accumulators


def _pairwise_columns(columns: Sequence[FloatArray], n_rows: int) -> FloatArray:
    """Sum *columns* element-wise in the order numpy's pairwise summation uses."""
    n = len(columns)
    if n < _PAIRWISE_UNROLL:
        total = np.zeros(n_rows, dtype=np.float64)
        for column in columns:
            total += column
        return total
    if n <= _PAIRWISE_BLOCK:
        partial = [columns[j].astype(np.float64, copy=True) for j in range(_PAIRWISE_UNROLL)]
        end_of_blocks = n - n % _PAIRWISE_UNROLL
        for start in range(_PAIRWISE_UNROLL, end_of_blocks, _PAIRWISE_UNROLL):
            for j in range(_PAIRWISE_UNROLL):
                partial[j] += columns[start + j]
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
            (partial[4] + partial[5]) + (partial[6] + partial[7])
        )
        for column in columns[end_of_blocks:]:
            total += column
        return total
    half = n // 2
    half -= half % _PAIRWISE_UNROLL
    return _pairwise_columns(columns[:half], n_rows) + _pairwise_columns(columns[half:], n_rows)


def _sum_like_numpy(columns: Sequence[FloatArray], n_rows: int) -> FloatArray:
    """Row sums of *columns* that equal numpy's 1-D ``.sum()`` of each row, bit for bit.

    ``row.sum()`` on a contiguous 1-D float64 array of length n adds the
    elements in numpy's pairwise order: fewer than 8 elements one after the
    other starting from 0.0; up to 128 elements in 8 interleaved partial
    sums (element j, j+8, j+16, ... into accumulator j) combined as
    ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, then the leftover tail one by
    one; more than 128 by splitting at half the length rounded down to a
    multiple of 8 and adding the two halves' sums. The reduction starts
    from 0.0, which turns a total of -0.0 into 0.0. Doing the same
    additions column-wise gives every row the same bits as the per-row sum.
    (A 2-D ``.sum(axis=1)`` matches only while each row is contiguous in
    memory; on a column-major array numpy adds the columns one after the
    other, which differs in the last bit.)

    Parameters
    ----------
    columns : sequence of ndarray of shape (n_rows,)
        The summands, in the order the per-row array holds them.
    n_rows : int
        Number of rows (needed when *columns* is empty).

    Returns
    -------
    ndarray of shape (n_rows,)
    """
    return _pairwise_columns(columns, n_rows) + 0.0


_TIE_TOLERANCE: Final = 1e-6
_FAST_ROUND_LIMIT: Final = float(2**30)


def round_like_python(values: npt.ArrayLike, ndigits: int = 6) -> FloatArray:
    """Round element-wise exactly as Python's ``round(float(v), ndigits)`` does.

    Python rounds the exact binary value half-to-even at *ndigits* decimals
    and returns the double nearest that decimal. ``np.round`` scales,
    rounds and divides with intermediate rounding errors, so it can differ
    in the last bit. Here ``k = rint(v * 10**ndigits)`` gives the right
    integer whenever ``v * 10**ndigits`` is not within 1e-6 of a .5 tie,
    and ``k / 10**ndigits`` (one correctly rounded IEEE division of exact
    operands) is then the double Python returns. Values near a tie, very
    large values and non-finite values (rare) are rounded by Python itself.

    Parameters
    ----------
    values : array_like of float
    ndigits : int, default 6
        Decimal places, 0 to 15.

    Returns
    -------
    ndarray of float64
        Same shape as *values*.

    Examples
    --------
    >>> float(round_like_python(0.0078125)), round(0.0078125, 6)  # exact binary tie
    (0.007812, 0.007812)
    >>> round_like_python([0.1234565, 2.675], 2).tolist() == [round(0.1234565, 2), 2.67]
    True
    """
    if not 0 <= ndigits <= 15:
        raise InvalidParameterError(f"ndigits must be in [0, 15], got {ndigits!r}")
    x = np.asarray(values, dtype=np.float64)
    flat = x.reshape(-1)  # C order, whatever the input's memory layout
    scale = 10.0**ndigits
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = flat * scale
        rounded = np.rint(scaled) / scale
        distance_to_tie = np.abs(scaled - np.floor(scaled) - 0.5)
        exact = (np.abs(scaled) < _FAST_ROUND_LIMIT) & (distance_to_tie > _TIE_TOLERANCE)
    for i in np.flatnonzero(~exact).tolist():
        rounded[i] = round(float(flat[i]), ndigits)
    return rounded.reshape(x.shape)


# ---------------------------------------------------------------------------
# The resolver
# ---------------------------------------------------------------------------


@attrs.frozen
class TaxonomyResult:
    """The mapping of one row.

    Parameters
    ----------
    mapped_label : str
        The bucket name, or the configured mixed label for a rejected row.
    mapped_probs : dict of str to float
        Bucket name to probability rounded to 6 decimals, in bucket order;
        empty for a rejected row.
    """

    mapped_label: str
    mapped_probs: dict[str, float]


class MappedMatrix(NamedTuple):
    """What :meth:`TaxonomyResolver.resolve_matrix` returns."""

    bucket_index: IntArray
    """Shape (n,): index into ``bucket_names``; -1 for a rejected row."""
    mapped_proba: FloatArray
    """Shape (n, n_buckets): rounded bucket probabilities; NaN for a rejected row."""


def _as_rejected(is_rejected: npt.ArrayLike | None, n_rows: int, where: str) -> np.ndarray:
    if is_rejected is None:
        return np.zeros(n_rows, dtype=bool)
    flags = np.asarray(is_rejected)
    if flags.shape != (n_rows,):
        raise InputError(
            f"{where}: is_rejected must have one flag per row, shape ({n_rows},), "
            f"got shape {flags.shape}"
        )
    if flags.dtype != np.bool_:
        raise InputError(f"{where}: is_rejected must be booleans, got dtype {flags.dtype}")
    return flags


class TaxonomyResolver:
    """Map core-label probabilities to a taxonomy's buckets.

    Construction precomputes everything the mapping needs: the bucket
    names (the configured buckets, then ``"Other"`` for uncovered core
    labels), each bucket's member class indices, an (8, n_buckets)
    membership matrix and the per-class weights.

    The rules (DESIGN section 3): each row's probabilities are multiplied
    by the per-core-label weights (1 for labels not reweighted) and
    renormalized when the row total is positive; a bucket's probability
    is the sum (or, by config, the max) of its core labels' probabilities
    taken in class-index order; bucket probabilities are renormalized to
    sum 1 when their total is positive; the mapped label is the first
    bucket with the highest probability; mapped probabilities are rounded
    as ``round(value, 6)``. Every sum is done in numpy's 1-D order, so the
    results equal a per-row computation with ``ndarray.sum()`` bit for bit.
    ``advanced.min_confidence_for_mapping`` is not used: rejection comes
    from the caller's ``is_rejected``.

    Parameters
    ----------
    config : TaxonomyConfig

    Attributes
    ----------
    config : TaxonomyConfig
    bucket_names : tuple of str
    membership : ndarray of bool, shape (8, n_buckets)
        ``membership[c, b]`` is True when class ``c`` belongs to bucket ``b``.
    weights : ndarray of float, shape (8,)
        Per-class weights in class order.

    See Also
    --------
    TaxonomyMapper : The pipeline stage built on this resolver.

    Examples
    --------
    >>> config = TaxonomyConfig(
    ...     [TaxonomyBucket("Coding", ["Build", "Debug"]), TaxonomyBucket("Talk", ["Meet"])]
    ... )
    >>> resolver = TaxonomyResolver(config)
    >>> resolver.bucket_names
    ('Coding', 'Talk', 'Other')
    >>> # class order: BreakIdle Build Communicate Debug Meet ReadResearch Review Write
    >>> proba = np.array([[0.0, 0.3, 0.0, 0.2, 0.4, 0.0, 0.1, 0.0]])
    >>> result = resolver.resolve(4, proba[0])
    >>> result.mapped_label, result.mapped_probs
    ('Coding', {'Coding': 0.5, 'Talk': 0.4, 'Other': 0.1})
    >>> resolver.resolve(4, proba[0], is_rejected=True)
    TaxonomyResult(mapped_label='Mixed/Unknown', mapped_probs={})
    """

    def __init__(self, config: TaxonomyConfig) -> None:
        if not isinstance(config, TaxonomyConfig):
            raise InvalidParameterError(
                f"TaxonomyResolver needs a TaxonomyConfig, got {type(config).__name__}"
            )
        self._config = config
        buckets = config.resolved_buckets
        self._bucket_names = tuple(bucket.name for bucket in buckets)
        self._members = tuple(
            tuple(sorted(CLASS_INDEX[label] for label in bucket.core_labels)) for bucket in buckets
        )
        membership = np.zeros((N_CLASSES, len(buckets)), dtype=bool)
        for b, members in enumerate(self._members):
            membership[list(members), b] = True
        membership.flags.writeable = False
        self._membership = membership
        weights = np.ones(N_CLASSES, dtype=np.float64)
        for label, weight in config.advanced.reweight_core_labels:
            weights[CLASS_INDEX[label]] = weight
        weights.flags.writeable = False
        self._weights = weights
        self._use_max = config.advanced.probability_aggregation == "max"
        self._mixed_label = config.reject.mixed_label_name

    def __repr__(self) -> str:
        return f"TaxonomyResolver(buckets={list(self._bucket_names)!r})"

    @property
    def config(self) -> TaxonomyConfig:
        """The taxonomy this resolver maps to."""
        return self._config

    @property
    def bucket_names(self) -> tuple[str, ...]:
        """Bucket names in output order, ``"Other"`` last when present."""
        return self._bucket_names

    @property
    def mixed_label(self) -> str:
        """The mapped label of a rejected row."""
        return self._mixed_label

    @property
    def membership(self) -> np.ndarray:
        """Read-only (8, n_buckets) boolean membership of classes in buckets."""
        return self._membership

    @property
    def weights(self) -> FloatArray:
        """Read-only per-class weights in class order."""
        return self._weights

    def _check_proba(self, proba: npt.ArrayLike) -> FloatArray:
        matrix = np.asarray(proba, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != N_CLASSES:
            raise ProbabilityShapeError(
                f"TaxonomyResolver: expected a probability matrix of shape (n, "
                f"{N_CLASSES}) with columns in class order ({', '.join(CLASS_ORDER)}), "
                f"got shape {matrix.shape}"
            )
        return matrix

    def _bucket_proba(self, proba: FloatArray) -> FloatArray:
        """Unrounded, renormalized bucket probabilities of every row."""
        n_rows = proba.shape[0]
        # Class-major layout: row c holds class c for every input row.
        weighted = np.ascontiguousarray((proba * self._weights).T)
        total = _sum_like_numpy(list(weighted), n_rows)
        np.divide(weighted, total, out=weighted, where=total > 0)
        buckets = np.empty((len(self._members), n_rows), dtype=np.float64)
        for b, members in enumerate(self._members):
            columns = [weighted[c] for c in members]
            if self._use_max:
                buckets[b] = reduce(np.maximum, columns)
            else:
                buckets[b] = _sum_like_numpy(columns, n_rows)
        bucket_total = _sum_like_numpy(list(buckets), n_rows)
        np.divide(buckets, bucket_total, out=buckets, where=bucket_total > 0)
        return np.ascontiguousarray(buckets.T)

    def resolve_matrix(
        self, proba: npt.ArrayLike, is_rejected: npt.ArrayLike | None = None
    ) -> MappedMatrix:
        """Map every row of a probability matrix at once (the vectorized kernel).

        Parameters
        ----------
        proba : array_like of shape (n, 8)
            Core-label probabilities, columns in class order. Rows that are
            not rejected must be finite.
        is_rejected : array_like of bool, shape (n,), optional
            Rows to map to the mixed label. None rejects nothing.

        Returns
        -------
        MappedMatrix
            ``bucket_index`` (n,) into :attr:`bucket_names`, -1 for
            rejected rows; ``mapped_proba`` (n, n_buckets) rounded as
            ``round(value, 6)``, NaN on rejected rows.

        Raises
        ------
        ProbabilityShapeError
            If *proba* is not (n, 8).
        InputError
            If *is_rejected* has the wrong shape or type, or a row that is
            not rejected holds NaN or infinity.
        """
        matrix = self._check_proba(proba)
        n_rows = matrix.shape[0]
        rejected = _as_rejected(is_rejected, n_rows, "TaxonomyResolver")
        bad = ~np.isfinite(matrix).all(axis=1) & ~rejected
        if bad.any():
            rows = np.flatnonzero(bad)
            column = PROBA_COLUMNS[int(np.flatnonzero(~np.isfinite(matrix[rows[0]]))[0])]
            raise InputError(
                f"TaxonomyResolver: {rows.size} row(s) have NaN or infinite "
                f"probabilities (first at row {int(rows[0])}, column {column!r})"
            )
        if rejected.any():
            matrix = np.where(rejected[:, None], 0.0, matrix)
        bucket_proba = self._bucket_proba(matrix)
        bucket_index = np.argmax(bucket_proba, axis=1).astype(np.intp)
        mapped = round_like_python(bucket_proba, 6)
        bucket_index[rejected] = -1
        mapped[rejected] = np.nan
        return MappedMatrix(bucket_index, mapped)

    def resolve_batch(
        self,
        core_label_ids: npt.ArrayLike,
        core_probs: npt.ArrayLike,
        *,
        is_rejected: npt.ArrayLike | None = None,
    ) -> list[TaxonomyResult]:
        """Map a batch of rows and return one :class:`TaxonomyResult` per row.

        Parameters
        ----------
        core_label_ids : array_like of int, shape (n,)
            The core class index of each row (checked, but the bucket follows
            from the probabilities).
        core_probs : array_like of shape (n, 8)
            Core-label probabilities in class order.
        is_rejected : array_like of bool, shape (n,), optional

        Returns
        -------
        list of TaxonomyResult
        """
        matrix = self._check_proba(core_probs)
        ids = np.asarray(core_label_ids)
        if ids.shape != (matrix.shape[0],):
            raise InputError(
                f"TaxonomyResolver: core_label_ids must have one id per row, shape "
                f"({matrix.shape[0]},), got shape {ids.shape}"
            )
        if ids.size and (
            not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= N_CLASSES
        ):
            raise InputError(
                f"TaxonomyResolver: core_label_ids must be class indices in "
                f"[0, {N_CLASSES - 1}], got dtype {ids.dtype} with values {ids[:5]!r}..."
            )
        bucket_index, mapped = self.resolve_matrix(matrix, is_rejected)
        names = self._bucket_names
        return [
            TaxonomyResult(names[b], dict(zip(names, row, strict=True)))
            if b >= 0
            else TaxonomyResult(self._mixed_label, {})
            for b, row in zip(bucket_index.tolist(), mapped.tolist(), strict=True)
        ]

    def resolve(
        self, core_label_id: int, core_probs: npt.ArrayLike, *, is_rejected: bool = False
    ) -> TaxonomyResult:
        """Map one row.

        Parameters
        ----------
        core_label_id : int
            The row's core class index.
        core_probs : array_like of shape (8,)
            Its probabilities in class order.
        is_rejected : bool, default False

        Returns
        -------
        TaxonomyResult
        """
        probs = np.asarray(core_probs, dtype=np.float64)
        if probs.shape != (N_CLASSES,):
            raise ProbabilityShapeError(
                f"TaxonomyResolver: expected {N_CLASSES} probabilities in class order, "
                f"got shape {probs.shape}"
            )
        return self.resolve_batch(
            [core_label_id], probs[None, :], is_rejected=np.array([bool(is_rejected)])
        )[0]


# ---------------------------------------------------------------------------
# The pipeline stage
# ---------------------------------------------------------------------------


def mapped_proba_column(bucket_name: str) -> str:
    """Name of the column holding *bucket_name*'s mapped probability.

    Examples
    --------
    >>> mapped_proba_column("Coding")
    'mapped_proba_Coding'
    """
    return f"{MAPPED_PROBA_PREFIX}{bucket_name}"


def _proba_matrix(frame: pd.DataFrame, where: str) -> FloatArray:
    """The (n, 8) calibrated probability matrix of *frame*, columns in class order."""
    missing = [column for column in PROBA_COLUMNS if column not in frame.columns]
    if missing:
        raise MissingColumnsError(missing, where=where)
    for column in PROBA_COLUMNS:
        dtype = frame[column].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise ColumnTypeError(
                f"{where}: column {column!r} must hold probabilities (numbers), got dtype {dtype}"
            )
    return frame[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan)


def _rejected_flags(frame: pd.DataFrame, where: str) -> np.ndarray | None:
    """The ``is_rejected`` column as a bool array, or None when absent."""
    if IS_REJECTED not in frame.columns:
        return None
    flags = frame[IS_REJECTED]
    if not pd.api.types.is_bool_dtype(flags.dtype):
        raise ColumnTypeError(
            f"{where}: column {IS_REJECTED!r} must hold booleans, got dtype {flags.dtype}"
        )
    if flags.isna().any():
        raise ColumnTypeError(
            f"{where}: column {IS_REJECTED!r} has {int(flags.isna().sum())} missing value(s)"
        )
    return flags.to_numpy(dtype=bool)


class TaxonomyMapper(TransformerMixin, BaseEstimator):
    """Pipeline stage: map each row's core-label probabilities to taxonomy buckets.

    The optional step after the hysteresis merger. It reads the calibrated
    probability columns ``proba_<Class>`` and ``is_rejected`` (absent means
    nothing is rejected) and returns a new frame, rows in input order,
    with the caller's columns followed by

    * ``mapped_label``: the bucket name, or the configured mixed label for
      a rejected row (categorical over the bucket names, then the mixed
      label);
    * ``mapped_proba_<bucket>``: one float column per bucket, in bucket
      order (``Other`` last when present), rounded as ``round(v, 6)``;
      NaN on rejected rows.

    ``mapped_*`` columns already in the input (from an earlier mapping) are
    replaced. :meth:`predict` returns the core ``label`` column, so a
    pipeline predicts the same core labels with or without this step. The
    stage learns nothing: given a taxonomy it is ready without ``fit``.

    Parameters
    ----------
    taxonomy : TaxonomyConfig or None, default None
        The taxonomy to map to. None maps to :func:`default_taxonomy`
        (one bucket per core label) once fitted.

    Attributes
    ----------
    resolver_ : TaxonomyResolver
        The resolver built by :meth:`fit`.
    bucket_names_ : tuple of str
        The output buckets, in column order.

    See Also
    --------
    TaxonomyResolver : The mapping rules.
    load_taxonomy : Read a taxonomy from YAML.

    Examples
    --------
    >>> import pandas as pd
    >>> from taskclf._columns import PROBA_COLUMNS
    >>> config = TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug"])])
    >>> # class order: BreakIdle Build Communicate Debug Meet ReadResearch Review Write
    >>> proba = [[0.1, 0.5, 0, 0.2, 0.1, 0, 0.1, 0], [0.6, 0.1, 0, 0, 0.3, 0, 0, 0]]
    >>> frame = pd.DataFrame(proba, columns=list(PROBA_COLUMNS))
    >>> frame = frame.assign(is_rejected=[False, True], label=["Build", "BreakIdle"])
    >>> mapper = TaxonomyMapper(config).fit(frame)
    >>> out = mapper.transform(frame)
    >>> out["mapped_label"].tolist()
    ['Coding', 'Mixed/Unknown']
    >>> out[["mapped_proba_Coding", "mapped_proba_Other"]]
       mapped_proba_Coding  mapped_proba_Other
    0                  0.7                 0.3
    1                  NaN                 NaN
    >>> mapper.predict(out).tolist()
    ['Build', 'BreakIdle']
    """

    def __init__(self, taxonomy: TaxonomyConfig | None = None) -> None:
        self.taxonomy = taxonomy

    def _taxonomy(self) -> TaxonomyConfig:
        if self.taxonomy is None:
            return default_taxonomy()
        if not isinstance(self.taxonomy, TaxonomyConfig):
            raise InvalidParameterError(
                "TaxonomyMapper: taxonomy must be a TaxonomyConfig (see load_taxonomy) "
                f"or None, got {type(self.taxonomy).__name__}"
            )
        return self.taxonomy

    def _resolver(self) -> TaxonomyResolver:
        config = self._taxonomy()
        resolver = getattr(self, "resolver_", None)
        if isinstance(resolver, TaxonomyResolver) and resolver.config == config:
            return resolver
        return TaxonomyResolver(config)

    def fit(self, X: Any = None, y: Any = None) -> TaxonomyMapper:
        """Check the taxonomy and build the resolver; *X* and *y* are not used.

        Parameters
        ----------
        X : ignored
        y : ignored

        Returns
        -------
        TaxonomyMapper
            self.
        """
        self.resolver_ = TaxonomyResolver(self._taxonomy())
        self.bucket_names_ = self.resolver_.bucket_names
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return self.taxonomy is not None or hasattr(self, "resolver_")

    def __sklearn_tags__(self) -> Any:
        # Probability columns by name (a DataFrame, not an array); NaN
        # probabilities on a row that is not rejected are refused.
        return frame_tags(
            super().__sklearn_tags__(), string=True, requires_fit=self.taxonomy is None
        )

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add ``mapped_label`` and ``mapped_proba_<bucket>`` columns.

        Parameters
        ----------
        X : DataFrame
            With the columns ``proba_<Class>`` for the eight classes and,
            optionally, ``is_rejected``.

        Returns
        -------
        DataFrame
            A new frame: *X*'s rows and columns, then the mapped columns.
            *X* is not modified.

        Raises
        ------
        MissingColumnsError
            If probability columns are missing (all are listed).
        ColumnTypeError
            If a probability column is not numeric or ``is_rejected`` is
            not boolean.
        InputError
            If a row that is not rejected has NaN or infinite probabilities.
        """
        check_is_fitted(self)
        where = "TaxonomyMapper"
        if not isinstance(X, pd.DataFrame):
            raise InputError(f"{where}: expected a pandas DataFrame, got {type(X).__name__}")
        resolver = self._resolver()
        proba = _proba_matrix(X, where)
        rejected = _rejected_flags(X, where)
        bucket_index, mapped = resolver.resolve_matrix(proba, rejected)
        names = resolver.bucket_names
        codes = np.where(bucket_index >= 0, bucket_index, len(names)).astype(np.intp)
        categories = pd.Index([*names, resolver.mixed_label])
        new_columns: dict[str, Any] = {
            MAPPED_LABEL: pd.Categorical.from_codes(codes, categories=categories)
        }
        for name, column in zip(names, mapped.T.copy(), strict=True):
            new_columns[mapped_proba_column(name)] = column
        stale = [c for c in X.columns if isinstance(c, str) and c.startswith(MAPPED_PROBA_PREFIX)]
        base = X.drop(columns=stale) if stale else X
        return base.assign(**new_columns)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Return the final core label of each row (the ``label`` column).

        The taxonomy does not change what a pipeline predicts: the mapped
        labels are in :meth:`transform`'s output.

        Parameters
        ----------
        X : DataFrame
            With a ``label`` column (added by the hysteresis merger).

        Returns
        -------
        ndarray of shape (n,)
        """
        if not isinstance(X, pd.DataFrame):
            raise InputError(
                f"TaxonomyMapper.predict: expected a pandas DataFrame, got {type(X).__name__}"
            )
        if LABEL not in X.columns:
            raise MissingColumnsError([LABEL], where="TaxonomyMapper.predict")
        self._taxonomy()  # a pipeline with an invalid taxonomy predicts nothing either
        return X[LABEL].to_numpy()

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of the final core labels against ``y`` (the pipeline's default score)."""
        return label_accuracy(y, np.asarray(self.predict(X), dtype=object), sample_weight)


__all__ = [
    "AGGREGATIONS",
    "DEFAULT_BUCKET_COLOR",
    "DEFAULT_VIEWS",
    "FALLBACK_BUCKET",
    "LABEL_SCHEMA_VERSIONS",
    "MappedMatrix",
    "TaxonomyAdvanced",
    "TaxonomyBucket",
    "TaxonomyConfig",
    "TaxonomyDisplay",
    "TaxonomyMapper",
    "TaxonomyReject",
    "TaxonomyResolver",
    "TaxonomyResult",
    "default_taxonomy",
    "load_taxonomy",
    "mapped_proba_column",
    "round_like_python",
    "save_taxonomy",
    "taxonomy_from_dict",
    "taxonomy_to_dict",
]
