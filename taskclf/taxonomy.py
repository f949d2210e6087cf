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

The mapping rules are those of docs/contract.md ("Taxonomy"); they give
the results of taskclf 0.4, whose names and error phrases this module keeps.
"""

from __future__ import annotations

import collections
import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from attrs import validators as v
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from taskclf._columns import (
    IS_REJECTED,
    LABEL,
    MAPPED_LABEL,
    MAPPED_PROBA_PREFIX,
    PROBA_COLUMNS,
)
from taskclf._frame import (
    check_finite_columns,
    check_frame,
    frame_tags,
    label_accuracy,
    require_columns,
)
from taskclf._io import atomic_write_text, read_regular_file
from taskclf.calibration import check_proba
from taskclf.core.types import (
    CLASS_INDEX,
    CLASS_ORDER,
    LABEL_COLORS,
    LABEL_SET_V1,
    MIXED_UNKNOWN,
    N_CLASSES,
    CoreLabel,
)
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    ReaderError,
    TaxonomyError,
)

FALLBACK_BUCKET_NAME: Final = "Other"
"""Name of the bucket appended last for core labels that no bucket lists."""

DEFAULT_BUCKET_COLOR: Final = "#808080"
"""Colour of a bucket that does not set one (also the fallback bucket's)."""

LABEL_SCHEMA_VERSIONS: Final[tuple[str, ...]] = ("labels_v1",)
"""Label schema versions a taxonomy may declare."""

AGGREGATIONS: Final[tuple[str, ...]] = ("sum", "max")
"""How a bucket combines its core labels' probabilities."""

DEFAULT_VIEWS: Final[tuple[str, ...]] = ("mapped", "core")
"""Which labels a report shows first."""

MAX_BUCKETS: Final = 1000
"""Most buckets a taxonomy may hold."""

MAX_TAXONOMY_BYTES: Final = 1 << 20
"""Largest taxonomy file :func:`load_taxonomy` reads (1 MiB)."""

_MAX_YAML_DEPTH: Final = 20
_LABELS_TEXT: Final = ", ".join(CLASS_ORDER)
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 6


# ---------------------------------------------------------------------------
# Validation: attrs validators whose failure raises a TaxonomyError
# ---------------------------------------------------------------------------

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _where(instance: object) -> str:
    """``"bucket 'Coding'"``, ``"display"``, ...: where a failing value sits."""
    where: str = getattr(type(instance), "_section", "taxonomy")
    name = getattr(instance, "name", None)
    return f"{where} {_SHORT.repr(name)}" if isinstance(name, str) else where


def _rule(message: str, *checks: Validator) -> Validator:
    """An attrs validator running attrs' *checks* that raises ``TaxonomyError(message)``.

    *message* may use ``{where}`` (as :func:`_where`), ``{field}``,
    ``{value}`` (a short repr of the refused value: the member that
    ``in_`` refused inside ``deep_iterable``, else the field's value) and
    ``{type}`` (its type name).
    """
    check = v.and_(*checks)

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(instance, attribute, value)
        except (TypeError, ValueError) as exc:
            # attrs' in_ passes the refused value as its last argument.
            refused = exc.args[3] if len(exc.args) == 4 else value
            raise TaxonomyError(
                message.format(
                    where=_where(instance),
                    field=attribute.name,
                    value=_SHORT.repr(refused),
                    type=type(refused).__name__,
                )
            ) from None

    return validate


def _unique(message: str) -> Validator:
    """An attrs validator refusing a sequence that repeats a value (``{value}`` lists them)."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        repeated = [item for item, count in collections.Counter(value).items() if count > 1]
        if repeated:
            shown = ", ".join(_SHORT.repr(item) for item in repeated[:5])
            raise TaxonomyError(message.format(where=_where(instance), value=shown))

    return validate


def _text() -> Validator:
    return _rule(
        "{where}: {field} must not be empty (text with a non-space character), got {type} {value}",
        v.instance_of(str),
        v.matches_re(r"\S", func=re.search),
    )


def _flag() -> Validator:
    return _rule("{where}: {field} must be true or false, got {type} {value}", v.instance_of(bool))


def _choice(options: tuple[str, ...]) -> Validator:
    shown = " or ".join(repr(option) for option in options)
    return _rule(
        "{where}: {field} must be " + shown + ", got {type} {value}",
        v.instance_of(str),
        v.in_(options),
    )


def _is(cls: type) -> Validator:
    return _rule("{where}: {field} must be a " + cls.__name__ + ", got {type}", v.instance_of(cls))


def _as_tuple(value: Any) -> Any:
    """A list (as read from YAML) as a tuple; anything else unchanged for the validator."""
    return tuple(value) if isinstance(value, list) else value


def _as_float(value: Any) -> Any:
    """An int (not a bool) as a float; anything else unchanged for the validator."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1000:
        return float(value)
    return value


def _as_weights(value: Any) -> Any:
    """Weights as a new dict with float values (None: no weights)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {label: _as_float(weight) for label, weight in value.items()}
    return value


# ---------------------------------------------------------------------------
# Value objects
# ---------------------------------------------------------------------------


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
    taskclf.exceptions.TaxonomyError: Unknown core label 'Coding' in bucket 'Coding' ...
    """

    _section: ClassVar[str] = "bucket"

    name: str = attrs.field(validator=_text())
    core_labels: tuple[str, ...] = attrs.field(
        converter=_as_tuple,
        validator=[
            _rule(
                "{where}: core_labels must be a list of core labels, got {type} {value}",
                v.instance_of(tuple),
            ),
            _rule(
                "{where}: core_labels must not be empty; list at least one of " + _LABELS_TEXT,
                v.min_len(1),
            ),
            _rule(
                "Unknown core label {value} in {where} (core_labels); must be one of "
                + _LABELS_TEXT,
                v.deep_iterable(v.in_(LABEL_SET_V1)),
            ),
            _unique("{where}: core_labels lists {value} more than once"),
        ],
    )
    color: str = attrs.field(
        default=DEFAULT_BUCKET_COLOR,
        validator=_rule(
            "Invalid hex color {value} in {where} (color); expected format #RRGGBB "
            "such as '#1F77B4'",
            v.instance_of(str),
            v.matches_re(r"#[0-9A-Fa-f]{6}"),
        ),
    )
    description: str = attrs.field(
        default="",
        validator=_rule(
            "{where}: description must be text, got {type} {value}", v.instance_of(str)
        ),
    )


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

    _section: ClassVar[str] = "display"

    show_core_labels: bool = attrs.field(default=False, validator=_flag())
    default_view: str = attrs.field(default="mapped", validator=_choice(DEFAULT_VIEWS))
    color_theme: str = attrs.field(default="default", validator=_text())


@attrs.frozen
class TaxonomyReject:
    """How rejected rows are labelled.

    Parameters
    ----------
    mixed_label_name : str, default "Mixed/Unknown"
        The mapped label of a rejected row. It must differ from every
        bucket name.
    include_rejected_in_reports : bool, default False
        Whether reports list rejected rows.
    """

    _section: ClassVar[str] = "reject"

    mixed_label_name: str = attrs.field(default=MIXED_UNKNOWN, validator=_text())
    include_rejected_in_reports: bool = attrs.field(default=False, validator=_flag())


_weight_label = _rule(
    "Unknown core label {value} in reweight_core_labels (advanced); must be one of " + _LABELS_TEXT,
    v.in_(LABEL_SET_V1),
)
_weight_value = v.and_(v.instance_of(float), v.gt(0.0), v.lt(math.inf))


def _check_weights(instance: Any, attribute: attrs.Attribute[Any], weights: Any) -> None:
    """Each key a core label, each weight a finite number > 0 (named in the message)."""
    if not isinstance(weights, dict):
        raise TaxonomyError(
            "advanced: reweight_core_labels must map core labels to weights, "
            f"got {type(weights).__name__} {_SHORT.repr(weights)}"
        )
    for label, weight in weights.items():
        _weight_label(instance, attribute, label)
        try:
            _weight_value(instance, attribute, weight)
        except (TypeError, ValueError):
            raise TaxonomyError(
                f"Reweight for {label!r} must be > 0 (a finite number) in "
                f"reweight_core_labels (advanced), got {_SHORT.repr(weight)}"
            ) from None


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
        did taskclf 0.4): rejection is decided upstream by the reject
        threshold.
    reweight_core_labels : mapping of str to float, optional
        Per-core-label multipliers (finite, > 0) applied to the
        probabilities before aggregation; labels not listed keep weight 1.
        Stored as a new dict, as in taskclf 0.4; it is not part of the
        hash.

    Examples
    --------
    >>> TaxonomyAdvanced(reweight_core_labels={"Write": 2, "Build": 0.5}).reweight_core_labels
    {'Write': 2.0, 'Build': 0.5}
    """

    _section: ClassVar[str] = "advanced"

    probability_aggregation: str = attrs.field(default="sum", validator=_choice(AGGREGATIONS))
    min_confidence_for_mapping: float = attrs.field(
        default=0.55,
        converter=_as_float,
        validator=_rule(
            "{where}: {field} must be a number in [0, 1], got {type} {value}",
            v.instance_of(float),
            v.ge(0.0),
            v.le(1.0),
        ),
    )
    reweight_core_labels: dict[str, float] = attrs.field(
        factory=dict, converter=_as_weights, validator=_check_weights, hash=False
    )


def _uncovered_labels(buckets: tuple[TaxonomyBucket, ...]) -> tuple[str, ...]:
    """Core labels that no bucket lists, in class-index order."""
    covered = {label for bucket in buckets for label in bucket.core_labels}
    return tuple(label for label in CLASS_ORDER if label not in covered)


def _names(buckets: tuple[TaxonomyBucket, ...]) -> list[str]:
    return [bucket.name for bucket in buckets]


@attrs.frozen
class TaxonomyConfig:
    """A user taxonomy: buckets of core labels plus display and mapping options.

    Parameters
    ----------
    buckets : sequence of TaxonomyBucket
        One to :data:`MAX_BUCKETS` buckets, names unique. Core labels that
        no bucket lists go to an extra bucket named ``"Other"`` appended
        last (see :attr:`resolved_buckets`). A core label may appear in
        several buckets.
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
    >>> config.bucket_names
    ('Coding', 'Talking', 'Other')
    >>> config.resolved_buckets[-1].core_labels
    ('BreakIdle', 'ReadResearch', 'Write')
    >>> attrs.evolve(config, user_id="alice").user_id
    'alice'
    """

    buckets: tuple[TaxonomyBucket, ...] = attrs.field(
        converter=_as_tuple,
        validator=[
            _rule(
                "taxonomy: buckets must be a list of buckets, got {type} {value}",
                v.instance_of(tuple),
            ),
            _rule(
                "taxonomy: buckets must not be empty; a taxonomy needs at least one bucket",
                v.min_len(1),
            ),
            _rule(
                f"taxonomy: a taxonomy holds at most {MAX_BUCKETS} buckets", v.max_len(MAX_BUCKETS)
            ),
            _rule(
                "taxonomy: buckets must be TaxonomyBucket values (taxonomy_from_dict builds "
                "them from plain data), got {type} {value}",
                v.deep_iterable(v.instance_of(TaxonomyBucket)),
            ),
        ],
    )
    version: str = attrs.field(default="1.0", validator=_text())
    label_schema_version: str = attrs.field(
        default="labels_v1", validator=_choice(LABEL_SCHEMA_VERSIONS)
    )
    user_id: str | None = attrs.field(default=None, validator=v.optional(_text()))
    display: TaxonomyDisplay = attrs.field(
        factory=TaxonomyDisplay,
        validator=_is(TaxonomyDisplay),
    )
    reject: TaxonomyReject = attrs.field(
        factory=TaxonomyReject,
        validator=_is(TaxonomyReject),
    )
    advanced: TaxonomyAdvanced = attrs.field(
        factory=TaxonomyAdvanced,
        validator=_is(TaxonomyAdvanced),
    )

    def __attrs_post_init__(self) -> None:
        _unique("Duplicate bucket names: {value} (bucket names must be unique)")(
            self, attrs.fields(TaxonomyConfig).buckets, _names(self.buckets)
        )
        names = set(self.bucket_names)
        uncovered = _uncovered_labels(self.buckets)
        if uncovered and FALLBACK_BUCKET_NAME in _names(self.buckets):
            raise TaxonomyError(
                f"taxonomy: the bucket name {FALLBACK_BUCKET_NAME!r} is reserved for core "
                f"labels no bucket lists ({', '.join(uncovered)}); list them in a bucket or "
                f"rename bucket {FALLBACK_BUCKET_NAME!r}"
            )
        mixed = self.reject.mixed_label_name
        if mixed in names:
            raise TaxonomyError(
                f"reject: mixed_label_name {_SHORT.repr(mixed)} is also a bucket name; "
                "rejected rows would be indistinguishable from that bucket"
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
            FALLBACK_BUCKET_NAME, uncovered, description="Core labels that no bucket lists"
        )
        return (*self.buckets, fallback)

    @property
    def bucket_names(self) -> tuple[str, ...]:
        """Names of :attr:`resolved_buckets`, in order."""
        return tuple(_names(self.resolved_buckets))


def default_taxonomy() -> TaxonomyConfig:
    """Return the identity taxonomy: one bucket per core label, in ``CoreLabel`` order.

    As in taskclf 0.4: Build, Debug, Review, Write, ReadResearch,
    Communicate, Meet, BreakIdle, each described as ``"Core label: <label>"``
    (the colours are taskclf's label colours).

    Examples
    --------
    >>> default_taxonomy().bucket_names[:3]
    ('Build', 'Debug', 'Review')
    """
    return TaxonomyConfig(
        tuple(
            TaxonomyBucket(
                label, (label,), color=LABEL_COLORS[label], description=f"Core label: {label}"
            )
            for label in (core.value for core in CoreLabel)
        )
    )


# ---------------------------------------------------------------------------
# Plain data (dict / YAML) <-> TaxonomyConfig
# ---------------------------------------------------------------------------

_SECTIONS: Final[dict[str, type]] = {
    "display": TaxonomyDisplay,
    "reject": TaxonomyReject,
    "advanced": TaxonomyAdvanced,
}


def _fields(value: object, where: str, cls: type) -> dict[str, Any]:
    """*value*'s keys as keyword arguments of *cls*; unknown keys refused, nulls dropped.

    A key whose value is null (an empty YAML entry) counts as absent, so the
    field keeps its default.
    """
    allowed = tuple(attrs.fields_dict(cls))
    if not isinstance(value, Mapping):
        raise TaxonomyError(
            f"{where} must be a mapping, got {type(value).__name__} {_SHORT.repr(value)}"
        )
    unknown = [key for key in value if key not in allowed]
    if unknown:
        shown = ", ".join(_SHORT.repr(key) for key in unknown[:5])
        raise TaxonomyError(f"{where}: unknown key(s) {shown}; allowed keys: {', '.join(allowed)}")
    return {key: item for key, item in value.items() if item is not None}


def _bucket_from_dict(value: object, index: int) -> TaxonomyBucket:
    where = f"buckets[{index}]"
    fields = _fields(value, where, TaxonomyBucket)
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
    fields = _fields(data, "taxonomy", TaxonomyConfig)
    if "buckets" not in fields:
        raise TaxonomyError("taxonomy: missing required key 'buckets'")
    buckets = fields.pop("buckets")
    if not isinstance(buckets, list | tuple):
        raise TaxonomyError(
            f"taxonomy: buckets must be a list of bucket mappings, got {type(buckets).__name__}"
        )
    if len(buckets) > MAX_BUCKETS:  # before building any
        raise TaxonomyError(
            f"taxonomy: a taxonomy holds at most {MAX_BUCKETS} buckets, got {len(buckets)}"
        )
    version = fields.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        fields["version"] = str(version)
    for key, cls in _SECTIONS.items():
        if key in fields:
            fields[key] = cls(**_fields(fields[key], key, cls))
    return TaxonomyConfig(
        tuple(_bucket_from_dict(item, i) for i, item in enumerate(buckets)), **fields
    )


def taxonomy_to_dict(config: TaxonomyConfig) -> dict[str, Any]:
    """Return *config* as plain dicts, lists and scalars (YAML/JSON ready).

    Parameters
    ----------
    config : TaxonomyConfig

    Returns
    -------
    dict
        The YAML layout, keys in taskclf 0.4's order;
        ``taxonomy_from_dict(taxonomy_to_dict(c)) == c``. The fallback
        bucket is not included (it is derived).

    Examples
    --------
    >>> d = taxonomy_to_dict(default_taxonomy())
    >>> list(d)  # doctest: +NORMALIZE_WHITESPACE
    ['version', 'label_schema_version', 'user_id', 'display', 'reject',
     'buckets', 'advanced']
    >>> d["buckets"][0]["description"], d["buckets"][0]["core_labels"]
    ('Core label: Build', ['Build'])
    """
    if not isinstance(config, TaxonomyConfig):
        raise TaxonomyError(f"expected a TaxonomyConfig, got {type(config).__name__}")
    data = attrs.asdict(config)
    data["buckets"] = [  # taskclf 0.4's key order
        {
            "name": bucket.name,
            "description": bucket.description,
            "core_labels": list(bucket.core_labels),
            "color": bucket.color,
        }
        for bucket in config.buckets
    ]
    order = ("version", "label_schema_version", "user_id", "display", "reject")
    return {key: data[key] for key in (*order, "buckets", "advanced")}


class _TaxonomyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses aliases (``*name``) and deep nesting.

    Nested aliases let a file of a few hundred bytes stand for billions of
    values, and deep nesting exhausts the stack; a taxonomy needs neither.
    """

    _depth = 0

    def _refuse(self, problem: str) -> None:
        mark = self.peek_event().start_mark
        raise yaml.composer.ComposerError(None, None, problem, mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            anchor = _SHORT.repr(self.peek_event().anchor)[1:-1]
            self._refuse(f"aliases (*{anchor}) are not allowed in a taxonomy file")
        if self._depth >= _MAX_YAML_DEPTH:
            self._refuse(f"nested deeper than {_MAX_YAML_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _parse_yaml(data: bytes, where: str) -> Any:
    """The YAML document in *data*; a :class:`ReaderError` naming *where* if unusable."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReaderError(f"{where}: not UTF-8 text ({exc.reason})") from None
    try:
        return yaml.load(text, Loader=_TaxonomyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "unreadable"
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ReaderError(f"{where}: not valid YAML: {place}{problem}") from None
    except ValueError as exc:  # a 5000-digit number
        raise ReaderError(f"{where}: unusable YAML: {_SHORT.repr(str(exc))}") from None


def load_taxonomy(path: str | os.PathLike[str]) -> TaxonomyConfig:
    """Read a taxonomy YAML file.

    Parameters
    ----------
    path : str or path-like
        A regular file of at most :data:`MAX_TAXONOMY_BYTES` (1 MiB) in the
        layout of :func:`taxonomy_from_dict`. YAML aliases and nesting
        deeper than 20 levels are refused.

    Returns
    -------
    TaxonomyConfig

    Raises
    ------
    MissingFileError
        If the file does not exist (also a ``FileNotFoundError``, as
        taskclf 0.4 raised).
    ReaderError
        If the file is not a regular file, too large, unreadable, not UTF-8
        or not valid YAML.
    TaxonomyError
        If the content is not a valid taxonomy (not a mapping, unknown
        keys, wrong types, unknown core labels, ...).

    All messages name the file.

    See Also
    --------
    save_taxonomy : The inverse.
    """
    where = f"taxonomy file {os.fspath(path)}"
    if os.path.isdir(path):  # read_regular_file's os.fdopen raises IsADirectoryError
        raise ReaderError(f"{where} is a directory, not a regular file")
    data = _parse_yaml(read_regular_file(path, MAX_TAXONOMY_BYTES, "taxonomy file"), where)
    if data is None:
        raise TaxonomyError(
            f"{where}: the file is empty; expected a mapping with at least a 'buckets' list"
        )
    if not isinstance(data, dict):
        raise TaxonomyError(
            f"{where}: the top level must be a mapping of taxonomy keys, "
            f"got a {type(data).__name__}"
        )
    try:
        return taxonomy_from_dict(data)
    except TaxonomyError as exc:
        raise TaxonomyError(f"{where}: {exc}") from None


def save_taxonomy(config: TaxonomyConfig, path: str | os.PathLike[str]) -> Path:
    """Write *config* as YAML, atomically (a failure leaves no file behind).

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
    return atomic_write_text(path, text)


# ---------------------------------------------------------------------------
# Rounding as Python rounds
# ---------------------------------------------------------------------------

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

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


def _renormalize(matrix: FloatArray) -> None:
    """Divide each row of a C-ordered *matrix* by its sum, in place, where the sum is > 0.

    ``sum(axis=1)`` of a C-ordered float64 matrix adds each row in the
    order of that row's own ``ndarray.sum()`` (numpy's pairwise
    summation over contiguous memory), so the result equals the per-row
    computation bit for bit.
    """
    total = matrix.sum(axis=1, keepdims=True)
    np.divide(matrix, total, out=matrix, where=total > 0)


def _length(values: npt.ArrayLike, n_rows: int, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (n_rows,):
        raise InputError(
            f"TaxonomyResolver: length mismatch: {what} must have shape ({n_rows},), one per "
            f"probability row, got shape {array.shape}"
        )
    return array


class TaxonomyResolver:
    """Map core-label probabilities to a taxonomy's buckets.

    The rules (docs/contract.md, as taskclf 0.4): when weights are
    configured, each row's probabilities are multiplied by the
    per-core-label weights (1 for labels not listed) and renormalized when
    the row total is positive; a bucket's probability is the sum (or, by
    config, the max) of its core labels' probabilities taken in
    class-index order; bucket probabilities are renormalized to sum 1 when
    their total is positive; the mapped label is the first bucket with the
    highest probability; mapped probabilities are rounded as
    ``round(value, 6)``. Sums are numpy's per-row sums, so the results
    equal taskclf 0.4's per-row computation bit for bit.
    ``advanced.min_confidence_for_mapping`` is not used: rejection comes
    from the caller's ``is_rejected``.

    Parameters
    ----------
    config : TaxonomyConfig

    Attributes
    ----------
    config : TaxonomyConfig
    weights : ndarray of float, shape (8,) or None
        Per-class weights in class order; None without weights.

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
    ['Coding', 'Talk', 'Other']
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
        self.config = config
        buckets = config.resolved_buckets
        self._bucket_names = _names(buckets)
        members = [tuple(sorted(CLASS_INDEX[label] for label in b.core_labels)) for b in buckets]
        # At most 255 distinct member sets, however many buckets.
        self._member_sets = sorted(set(members))
        position = {m: i for i, m in enumerate(self._member_sets)}
        self._set_of_bucket = np.array([position[m] for m in members], dtype=np.intp)
        weights = config.advanced.reweight_core_labels
        self.weights: FloatArray | None = None
        if weights:
            self.weights = np.ones(N_CLASSES, dtype=np.float64)
            self.weights[[CLASS_INDEX[label] for label in weights]] = list(weights.values())
            self.weights.flags.writeable = False
        self._by_max = config.advanced.probability_aggregation == "max"

    def __repr__(self) -> str:
        return f"TaxonomyResolver(buckets={self._bucket_names!r})"

    @property
    def bucket_names(self) -> list[str]:
        """Bucket names in output order, ``"Other"`` last when present (a new list)."""
        return list(self._bucket_names)

    @property
    def mixed_label(self) -> str:
        """The mapped label of a rejected row."""
        return self.config.reject.mixed_label_name

    def _bucket_proba(self, proba: FloatArray) -> FloatArray:
        """Unrounded, renormalized bucket probabilities of every row."""
        weighted = np.array(proba, dtype=np.float64, order="C")
        if self.weights is not None:
            weighted *= self.weights
            _renormalize(weighted)
        per_set = np.empty((len(weighted), len(self._member_sets)), dtype=np.float64)
        for j, classes in enumerate(self._member_sets):
            # Fancy indexing returns column-major memory: make each row contiguous.
            block = np.ascontiguousarray(weighted[:, classes])
            per_set[:, j] = block.max(axis=1) if self._by_max else block.sum(axis=1)
        buckets = np.ascontiguousarray(per_set[:, self._set_of_bucket])
        _renormalize(buckets)
        return buckets

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
            If *is_rejected* has the wrong length or type, or a row that is
            not rejected holds NaN or infinity.
        """
        matrix = check_proba(proba, "TaxonomyResolver")
        rejected = np.zeros(len(matrix), dtype=bool)
        if is_rejected is not None:
            rejected = _length(is_rejected, len(matrix), "is_rejected")
            if rejected.dtype != np.bool_:
                raise InputError(
                    f"TaxonomyResolver: is_rejected must be booleans, got dtype {rejected.dtype}"
                )
            matrix = np.where(rejected[:, None], 0.0, matrix)
        check_finite_columns(matrix, PROBA_COLUMNS)
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
        matrix = check_proba(core_probs, "TaxonomyResolver")
        ids = _length(core_label_ids, len(matrix), "core_label_ids")
        if ids.size and (
            not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= N_CLASSES
        ):
            raise InputError(
                f"TaxonomyResolver: core_label_ids must be class indices in "
                f"[0, {N_CLASSES - 1}], got dtype {ids.dtype} with values {_SHORT.repr(ids)}"
            )
        bucket_index, mapped = self.resolve_matrix(matrix, is_rejected)
        names = self._bucket_names
        return [
            TaxonomyResult(names[b], dict(zip(names, row, strict=True)))
            if b >= 0
            else TaxonomyResult(self.mixed_label, {})
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
        row = check_proba(probs.reshape(1, -1) if probs.ndim == 1 else probs, "TaxonomyResolver")
        return self.resolve_batch([core_label_id], row, is_rejected=np.array([bool(is_rejected)]))[
            0
        ]


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
    require_columns(frame, PROBA_COLUMNS, where)
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
        self.bucket_names_ = tuple(self.resolver_.bucket_names)
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
        check_frame(X, where)
        resolver = TaxonomyResolver(self._taxonomy())  # cheap; follows set_params
        bucket_index, mapped = resolver.resolve_matrix(
            _proba_matrix(X, where), _rejected_flags(X, where)
        )
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
        check_frame(X, "TaxonomyMapper.predict")
        require_columns(X, [LABEL], "TaxonomyMapper.predict")
        self._taxonomy()  # a pipeline with an invalid taxonomy predicts nothing either
        return X[LABEL].to_numpy()

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of the final core labels against ``y`` (the pipeline's default score)."""
        return label_accuracy(y, np.asarray(self.predict(X), dtype=object), sample_weight)


__all__ = [
    "AGGREGATIONS",
    "DEFAULT_BUCKET_COLOR",
    "DEFAULT_VIEWS",
    "FALLBACK_BUCKET_NAME",
    "LABEL_SCHEMA_VERSIONS",
    "MAX_BUCKETS",
    "MAX_TAXONOMY_BYTES",
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
