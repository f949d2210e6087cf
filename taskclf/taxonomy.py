"""User taxonomies: map the eight core labels onto buckets of the user's by the rules of
docs/contract.md, with taskclf 0.4's results, names and error phrases."""

from __future__ import annotations

import collections
import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from attrs import validators as v
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from taskclf._columns import IS_REJECTED, LABEL, MAPPED_LABEL, MAPPED_PROBA_PREFIX, PROBA_COLUMNS
from taskclf._frame import (
    check_finite_columns,
    check_frame,
    frame_tags,
    label_accuracy,
    require_columns,
)
from taskclf._io import atomic_write_text, read_regular_file
from taskclf.calibration import check_proba
from taskclf.core.types import CLASS_ORDER, LABEL_COLORS, MIXED_UNKNOWN, N_CLASSES, CoreLabel
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    ReaderError,
    TaxonomyError,
)

FALLBACK_BUCKET_NAME: Final = "Other"
"""Name of the bucket appended last for core labels that no bucket lists."""

MAX_BUCKETS: Final = 1000
"""Most buckets a taxonomy may hold."""

MAX_TAXONOMY_BYTES: Final = 1 << 20
"""Largest taxonomy file :func:`load_taxonomy` reads (1 MiB)."""

_MAX_YAML_DEPTH: Final = 20
_ONE_OF_LABELS: Final = "; must be one of " + ", ".join(CLASS_ORDER)
FloatArray = npt.NDArray[np.float64]
Array = npt.ArrayLike
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _rule(message: str, *checks: Validator) -> Validator:
    """attrs' *checks* as one validator raising ``TaxonomyError(message.format(...))``."""
    check = v.and_(*checks)

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(instance, attribute, value)
        except (TypeError, ValueError) as exc:
            refused = exc.args[3] if len(exc.args) == 4 else value  # attrs passes it last
            where = getattr(instance, "_section", "taxonomy")
            if isinstance(name := getattr(instance, "name", None), str):
                where += f" {reprlib.repr(name)}"
            shown, kind = reprlib.repr(refused), type(refused).__name__
            text = message.format(where=where, field=attribute.name, value=shown, type=kind)
            raise TaxonomyError(text) from None

    return validate


def _choice(*options: str) -> Validator:
    shown = " or ".join(map(repr, options))
    return _rule("{where}: {field} must be " + shown + ", got {type} {value}", v.in_(options))


def _is_a(cls: type) -> Validator:
    return _rule("{where}: {field} must be a " + cls.__name__ + ", got {type}", v.instance_of(cls))


_TEXT = _rule(
    "{where}: {field} must not be empty (text with a non-space character), got {type} {value}",
    v.instance_of(str),
    v.matches_re(r"\S", func=re.search),
)
_FLAG = _rule("{where}: {field} must be true or false, got {type} {value}", v.instance_of(bool))


def _repeated(values: Any) -> str:
    """The values that occur more than once, as text ("" when none does)."""
    repeated = [value for value, n in collections.Counter(values).items() if n > 1]
    return ", ".join(map(reprlib.repr, repeated[:5]))


def _distinct(bucket: Any, attribute: attrs.Attribute[Any], labels: Any) -> None:
    if repeated := _repeated(labels):
        where = f"bucket {reprlib.repr(bucket.name)}"
        raise TaxonomyError(f"{where}: core_labels lists {repeated} more than once")


def _positive(instance: Any, attribute: attrs.Attribute[Any], weights: Any) -> None:
    for label, weight in weights.items():
        if not (isinstance(weight, float) and 0.0 < weight < math.inf):
            raise TaxonomyError(
                f"Reweight for {label!r} must be > 0 (a finite number) in "
                f"reweight_core_labels (advanced), got {reprlib.repr(weight)}"
            )


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _as_float(value: Any) -> Any:
    """An int (not a bool) that a float can hold as a float."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1000:
        return float(value)
    return value


def _as_weights(value: Any) -> Any:
    """A mapping as a new dict of floats, None as {}."""
    if isinstance(value, Mapping):
        return {label: _as_float(weight) for label, weight in value.items()}
    return {} if value is None else value


@attrs.frozen
class TaxonomyBucket:
    """One bucket: a ``name`` (the mapped label), one or more distinct ``core_labels``
    (stored as a tuple) and a ``color`` (``#RRGGBB``)."""

    _section: ClassVar[str] = "bucket"

    name: str = attrs.field(validator=_TEXT)
    core_labels: tuple[str, ...] = attrs.field(
        converter=_as_tuple,
        validator=[
            _rule(
                "{where}: core_labels must list one or more core labels, got {type} {value}",
                v.instance_of(tuple),
                v.min_len(1),
            ),
            _rule(
                "Unknown core label {value} in {where} (core_labels)" + _ONE_OF_LABELS,
                v.deep_iterable(v.in_(CLASS_ORDER)),
            ),
            _distinct,
        ],
    )
    color: str = attrs.field(
        default="#808080",
        validator=_rule(
            "Invalid hex color {value} in {where} (color); expected format #RRGGBB",
            v.instance_of(str),
            v.matches_re(r"#[0-9A-Fa-f]{6}"),
        ),
    )
    description: str = attrs.field(
        default="",
        validator=_rule("{where}: description must be text, got {type}", v.instance_of(str)),
    )


@attrs.frozen
class TaxonomyDisplay:
    """How reports show a taxonomy: ``show_core_labels`` (default False),
    ``default_view`` ("mapped" or "core") and ``color_theme`` (default "default")."""

    _section: ClassVar[str] = "display"

    show_core_labels: bool = attrs.field(default=False, validator=_FLAG)
    default_view: str = attrs.field(default="mapped", validator=_choice("mapped", "core"))
    color_theme: str = attrs.field(default="default", validator=_TEXT)


@attrs.frozen
class TaxonomyReject:
    """How rejected rows are labelled: ``mixed_label_name`` (default "Mixed/Unknown",
    no bucket's name) and ``include_rejected_in_reports`` (default False)."""

    _section: ClassVar[str] = "reject"

    mixed_label_name: str = attrs.field(default=MIXED_UNKNOWN, validator=_TEXT)
    include_rejected_in_reports: bool = attrs.field(default=False, validator=_FLAG)


@attrs.frozen
class TaxonomyAdvanced:
    """How a bucket combines its core labels' probabilities (``"sum"`` or ``"max"``),
    ``min_confidence_for_mapping`` (unused, as in 0.4) and multipliers (finite, > 0)
    of core labels' probabilities, ``reweight_core_labels`` (left out of the hash)."""

    _section: ClassVar[str] = "advanced"

    probability_aggregation: str = attrs.field(default="sum", validator=_choice("sum", "max"))
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
        factory=dict,
        converter=_as_weights,
        hash=False,
        validator=[
            _rule(
                "{where}: {field} must map core labels to weights, got {type}", v.instance_of(dict)
            ),
            _rule(
                "Unknown core label {value} in reweight_core_labels (advanced)" + _ONE_OF_LABELS,
                v.deep_iterable(v.in_(CLASS_ORDER)),  # the keys
            ),
            _positive,
        ],
    )


@attrs.frozen
class TaxonomyConfig:
    """A user taxonomy: buckets of core labels plus display and mapping options, by the
    rules of docs/predict.md (core labels no bucket lists go to a bucket ``"Other"``).

    >>> config = TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug", "Review"])])
    >>> config.bucket_names, config.resolved_buckets[-1].core_labels[:2]
    (('Coding', 'Other'), ('BreakIdle', 'Communicate'))
    """

    buckets: tuple[TaxonomyBucket, ...] = attrs.field(
        converter=_as_tuple,
        validator=_rule(
            f"taxonomy: buckets must be 1 to {MAX_BUCKETS} TaxonomyBucket values "
            "(taxonomy_from_dict builds them from plain data), got {type} {value}",
            v.instance_of(tuple),
            v.min_len(1),
            v.max_len(MAX_BUCKETS),
            v.deep_iterable(v.instance_of(TaxonomyBucket)),
        ),
    )
    version: str = attrs.field(default="1.0", validator=_TEXT)
    label_schema_version: str = attrs.field(default="labels_v1", validator=_choice("labels_v1"))
    user_id: str | None = attrs.field(default=None, validator=v.optional(_TEXT))
    display: TaxonomyDisplay = attrs.field(
        factory=TaxonomyDisplay, validator=_is_a(TaxonomyDisplay)
    )
    reject: TaxonomyReject = attrs.field(factory=TaxonomyReject, validator=_is_a(TaxonomyReject))
    advanced: TaxonomyAdvanced = attrs.field(
        factory=TaxonomyAdvanced, validator=_is_a(TaxonomyAdvanced)
    )

    def __attrs_post_init__(self) -> None:
        names = [bucket.name for bucket in self.buckets]
        if repeated := _repeated(names):
            raise TaxonomyError(f"Duplicate bucket names: {repeated} (bucket names must be unique)")
        if FALLBACK_BUCKET_NAME in names and (uncovered := self._uncovered()):
            raise TaxonomyError(
                f"taxonomy: the bucket name {FALLBACK_BUCKET_NAME!r} is reserved for core "
                f"labels no bucket lists ({', '.join(uncovered)}); list them in a bucket or "
                f"rename bucket {FALLBACK_BUCKET_NAME!r}"
            )
        if (mixed := self.reject.mixed_label_name) in self.bucket_names:
            raise TaxonomyError(
                f"reject: mixed_label_name {reprlib.repr(mixed)} is also a bucket name; "
                "rejected rows would be indistinguishable from that bucket"
            )

    def _uncovered(self) -> tuple[str, ...]:
        covered = {label for bucket in self.buckets for label in bucket.core_labels}
        return tuple(label for label in CLASS_ORDER if label not in covered)

    @property
    def resolved_buckets(self) -> tuple[TaxonomyBucket, ...]:
        """The buckets, then ``"Other"`` with the core labels no bucket lists (if any)."""
        if not (uncovered := self._uncovered()):
            return self.buckets
        other = TaxonomyBucket(
            FALLBACK_BUCKET_NAME, uncovered, description="Core labels that no bucket lists"
        )
        return (*self.buckets, other)

    @property
    def bucket_names(self) -> tuple[str, ...]:
        """Names of :attr:`resolved_buckets`, in order."""
        return tuple(bucket.name for bucket in self.resolved_buckets)


def default_taxonomy() -> TaxonomyConfig:
    """Return one bucket per core label, in ``CoreLabel`` order, as taskclf 0.4 does."""
    labels = map(str, CoreLabel)
    return TaxonomyConfig(
        [TaxonomyBucket(x, [x], LABEL_COLORS[x], f"Core label: {x}") for x in labels]
    )


def _fields(value: object, where: str, cls: type) -> dict[str, Any]:
    """*value* as keyword arguments of *cls*, nulls dropped; unknown or missing keys refused."""
    if not isinstance(value, Mapping):
        got = f"{type(value).__name__} {reprlib.repr(value)}"
        raise TaxonomyError(f"{where} must be a mapping, got {got}")
    allowed = attrs.fields_dict(cls)
    if unknown := [key for key in value if key not in allowed]:
        shown = ", ".join(map(reprlib.repr, unknown[:5]))
        raise TaxonomyError(f"{where}: unknown key(s) {shown}; allowed keys: {', '.join(allowed)}")
    given = {key: item for key, item in value.items() if item is not None}
    required = [key for key, field in allowed.items() if field.default is attrs.NOTHING]
    if missing := [key for key in required if key not in given]:
        raise TaxonomyError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    return given


def taxonomy_from_dict(data: Mapping[str, Any]) -> TaxonomyConfig:
    """Build a :class:`TaxonomyConfig` from plain data (parsed YAML or JSON) in the layout
    of :func:`taxonomy_to_dict`: null means the default, a numeric ``version`` becomes text.

    Raises :class:`TaxonomyError` saying where.
    """
    fields = _fields(data, "taxonomy", TaxonomyConfig)
    if not isinstance(buckets := fields["buckets"], list | tuple):
        kind = type(buckets).__name__
        raise TaxonomyError(f"taxonomy: buckets must be a list of mappings, got {kind}")
    if (n := len(buckets)) > MAX_BUCKETS:  # before building any
        raise TaxonomyError(f"taxonomy: a taxonomy holds at most {MAX_BUCKETS} buckets, got {n}")
    built = []
    for i, item in enumerate(buckets):
        given = _fields(item, f"buckets[{i}]", TaxonomyBucket)
        try:
            built.append(TaxonomyBucket(**given))
        except TaxonomyError as exc:
            raise TaxonomyError(f"buckets[{i}]: {exc}") from None
    fields["buckets"] = built
    if isinstance(version := fields.get("version"), int | float) and not isinstance(version, bool):
        fields["version"] = str(version)
    for cls in (TaxonomyDisplay, TaxonomyReject, TaxonomyAdvanced):
        if (key := cls._section) in fields:
            fields[key] = cls(**_fields(fields[key], key, cls))
    return TaxonomyConfig(**fields)


def taxonomy_to_dict(config: TaxonomyConfig) -> dict[str, Any]:
    """Return *config* as plain dicts, lists and scalars, in taskclf 0.4's key order.

    The inverse of :func:`taxonomy_from_dict`; ``"Other"`` is left out.

    Examples
    --------
    >>> data = taxonomy_to_dict(default_taxonomy())
    >>> list(data), list(data["buckets"][0])  # doctest: +NORMALIZE_WHITESPACE
    (['version', 'label_schema_version', 'user_id', 'display', 'reject', 'buckets', 'advanced'],
     ['name', 'description', 'core_labels', 'color'])
    """
    if not isinstance(config, TaxonomyConfig):
        raise TaxonomyError(f"expected a TaxonomyConfig, got {type(config).__name__}")
    data = attrs.asdict(  # tuples as YAML lists
        config,
        value_serializer=lambda _, __, value: list(value) if isinstance(value, tuple) else value,
    )
    keys = ("name", "description", "core_labels", "color")
    buckets = [{key: bucket[key] for key in keys} for bucket in data.pop("buckets")]
    advanced = data.pop("advanced")
    return {**data, "buckets": buckets, "advanced": advanced}


def _read_yaml(data: bytes, where: str) -> Any:
    """The YAML document in *data*, read safely once aliases (a few hundred bytes can stand
    for billions of values) and deep nesting (it exhausts the stack) are ruled out."""
    try:
        depth = 0
        for event in yaml.parse(data, Loader=yaml.SafeLoader):  # pyyaml decodes UTF-8/16
            depth += isinstance(event, yaml.CollectionStartEvent)
            depth -= isinstance(event, yaml.CollectionEndEvent)
            if isinstance(event, yaml.AliasEvent):
                problem = f"aliases (*{reprlib.repr(event.anchor)[1:-1]}) are not allowed"
            elif depth > _MAX_YAML_DEPTH:
                problem = f"nested deeper than {_MAX_YAML_DEPTH} levels"
            else:
                continue
            raise yaml.MarkedYAMLError(problem=problem, problem_mark=event.start_mark)  # type: ignore[arg-type]
        return yaml.safe_load(data)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a 5000-digit number
        mark = getattr(exc, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0][:100]
        raise ReaderError(f"{where}: not valid YAML: {place}{problem}") from None


def load_taxonomy(path: str | os.PathLike[str]) -> TaxonomyConfig:
    """Read a taxonomy YAML file (a regular file of at most 1 MiB, no aliases, nesting
    at most 20 levels) in the layout of :func:`taxonomy_from_dict`.

    Raises MissingFileError (also a ``FileNotFoundError``), ReaderError or
    TaxonomyError, naming the file.
    """
    where = f"taxonomy file {os.fspath(path)}"
    data = _read_yaml(read_regular_file(path, MAX_TAXONOMY_BYTES, "taxonomy file"), where)
    try:
        return taxonomy_from_dict({} if data is None else data)  # an empty file: no buckets
    except TaxonomyError as exc:
        raise TaxonomyError(f"{where}: {exc}") from None


def save_taxonomy(config: TaxonomyConfig, path: str | os.PathLike[str]) -> Path:
    """Write *config* as YAML atomically (creating parent directories); return the path."""
    text = yaml.safe_dump(taxonomy_to_dict(config), sort_keys=False, allow_unicode=True)
    return atomic_write_text(path, text)


def round_like_python(values: Array, ndigits: int = 6) -> FloatArray:
    """Round element-wise exactly as Python's ``round(float(v), ndigits)`` (0 to 15) does.

    ``rint`` is exact below 2**30 away from a .5 tie; Python rounds the other values.
    """
    if not 0 <= ndigits <= 15:
        raise InvalidParameterError(f"ndigits must be in [0, 15], got {ndigits!r}")
    x = np.asarray(values, dtype=np.float64)
    flat = x.reshape(-1)  # C order, whatever the input's memory layout
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = flat * 10.0**ndigits
        rounded = np.rint(scaled) / 10.0**ndigits
        exact = (np.abs(scaled) < 2.0**30) & (np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6)
    for i in np.flatnonzero(~exact).tolist():
        rounded[i] = round(float(flat[i]), ndigits)
    return rounded.reshape(x.shape)


@attrs.frozen
class TaxonomyResult:
    """One row's bucket (or mixed label) and bucket probabilities (empty if rejected)."""

    mapped_label: str
    mapped_probs: dict[str, float]


def _renormalize(matrix: FloatArray) -> None:
    """Divide each row of a C-ordered *matrix* by its (pairwise, as 0.4's) sum > 0, in place."""
    total = matrix.sum(axis=1, keepdims=True)
    np.divide(matrix, total, out=matrix, where=total > 0)


def _one_per_row(values: Array, n_rows: int, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (n_rows,):
        raise InputError(
            f"TaxonomyResolver: length mismatch: {what} must have shape ({n_rows},), one per "
            f"probability row, got shape {array.shape}"
        )
    return array


class TaxonomyResolver:
    """Map core-label probabilities to a taxonomy's buckets (docs/contract.md), bit for bit
    as taskclf 0.4's per-row computation.

    >>> resolver = TaxonomyResolver(TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug"])]))
    >>> # class order: BreakIdle Build Communicate Debug Meet ReadResearch Review Write
    >>> resolver.resolve(4, [0.0, 0.3, 0.0, 0.2, 0.4, 0.0, 0.1, 0.0])
    TaxonomyResult(mapped_label='Coding', mapped_probs={'Coding': 0.5, 'Other': 0.5})
    """

    def __init__(self, config: TaxonomyConfig) -> None:
        if not isinstance(config, TaxonomyConfig):
            kind = type(config).__name__
            raise InvalidParameterError(
                f"taxonomy must be a TaxonomyConfig, got {kind} (load_taxonomy reads one)"
            )
        self.config = config
        self._names = list(config.bucket_names)
        buckets = config.resolved_buckets
        members = [tuple(sorted(map(CLASS_ORDER.index, b.core_labels))) for b in buckets]
        self._member_sets = sorted(set(members))  # at most 255, however many buckets
        self._set_of_bucket = [self._member_sets.index(m) for m in members]
        weights = config.advanced.reweight_core_labels
        self._weights = np.array([weights.get(label, 1.0) for label in CLASS_ORDER])
        self._by_max = config.advanced.probability_aggregation == "max"

    @property
    def bucket_names(self) -> list[str]:
        """Bucket names in output order, ``"Other"`` last when present (a new list)."""
        return list(self._names)

    def _bucket_proba(self, proba: FloatArray) -> FloatArray:
        """Unrounded, renormalized bucket probabilities of every row."""
        weighted = np.array(proba, dtype=np.float64, order="C")
        if self.config.advanced.reweight_core_labels:
            weighted *= self._weights
            _renormalize(weighted)
        per_set = np.empty((len(weighted), len(self._member_sets)))
        for j, classes in enumerate(self._member_sets):
            # Fancy indexing returns column-major memory: make each row contiguous.
            block = np.ascontiguousarray(weighted[:, classes])
            per_set[:, j] = block.max(axis=1) if self._by_max else block.sum(axis=1)
        buckets = np.ascontiguousarray(per_set[:, self._set_of_bucket])
        _renormalize(buckets)
        return buckets

    def resolve_matrix(
        self, proba: Array, is_rejected: Array | None = None
    ) -> tuple[np.ndarray, FloatArray]:
        """Map every row of *proba* (n, 8), finite where *is_rejected* (n booleans) is not.

        Returns each row's index into :attr:`bucket_names` (-1 when rejected) and its
        rounded bucket probabilities (NaN when rejected).
        """
        matrix = check_proba(proba, "TaxonomyResolver")
        rejected = np.zeros(len(matrix), dtype=bool)
        if is_rejected is not None:
            rejected = _one_per_row(is_rejected, len(matrix), "is_rejected")
            if rejected.dtype != np.bool_:
                raise InputError(
                    f"TaxonomyResolver: is_rejected must be booleans, got dtype {rejected.dtype}"
                )
            matrix = np.where(rejected[:, None], 0.0, matrix)
        check_finite_columns(matrix, PROBA_COLUMNS)
        buckets = self._bucket_proba(matrix)
        mapped = round_like_python(buckets, 6)
        mapped[rejected] = np.nan
        return np.where(rejected, -1, np.argmax(buckets, axis=1)), mapped

    def resolve_batch(
        self, core_label_ids: Array, core_probs: Array, *, is_rejected: Array | None = None
    ) -> list[TaxonomyResult]:
        """Map rows as :meth:`resolve_matrix` does, one :class:`TaxonomyResult` each
        (*core_label_ids* are checked but unused)."""
        matrix = check_proba(core_probs, "TaxonomyResolver")
        ids = _one_per_row(core_label_ids, len(matrix), "core_label_ids")
        integers = np.issubdtype(ids.dtype, np.integer)
        if ids.size and not (integers and 0 <= ids.min() <= ids.max() < N_CLASSES):
            raise InputError(
                f"TaxonomyResolver: core_label_ids must be class indices in [0, {N_CLASSES - 1}]"
                f", got dtype {ids.dtype} with values {reprlib.repr(ids)}"
            )
        bucket_index, mapped = self.resolve_matrix(matrix, is_rejected)
        names, mixed = self._names, self.config.reject.mixed_label_name
        return [
            TaxonomyResult(names[b], dict(zip(names, row, strict=True)))
            if b >= 0
            else TaxonomyResult(mixed, {})
            for b, row in zip(bucket_index.tolist(), mapped.tolist(), strict=True)
        ]

    def resolve(
        self, core_label_id: int, core_probs: Array, *, is_rejected: bool = False
    ) -> TaxonomyResult:
        """Map one row (*core_probs* of shape (8,)) as :meth:`resolve_batch` does."""
        row = np.reshape(np.asarray(core_probs, dtype=np.float64), (1, -1))
        return self.resolve_batch([core_label_id], row, is_rejected=[bool(is_rejected)])[0]


class TaxonomyMapper(TransformerMixin, BaseEstimator):
    """Pipeline stage: map each row's core-label probabilities to taxonomy buckets.

    The optional step after the merger adds ``mapped_label`` (categorical: the
    buckets, then the mixed label) and ``mapped_proba_<bucket>`` (NaN when
    rejected), replacing an earlier mapping's; :meth:`predict` returns the core
    ``label``. Given a ``taxonomy``, the stage is ready without ``fit``; None maps
    to :func:`default_taxonomy` once fitted (``resolver_``, ``bucket_names_``).

    >>> config = TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug"])])
    >>> # class order: BreakIdle Build Communicate Debug Meet ReadResearch Review Write
    >>> proba = [[0.1, 0.5, 0, 0.2, 0.1, 0, 0.1, 0], [0.6, 0.1, 0, 0, 0.3, 0, 0, 0]]
    >>> frame = pd.DataFrame(proba, columns=PROBA_COLUMNS).assign(is_rejected=[False, True])
    >>> TaxonomyMapper(config).transform(frame).iloc[:, -3:]
        mapped_label  mapped_proba_Coding  mapped_proba_Other
    0         Coding                  0.7                 0.3
    1  Mixed/Unknown                  NaN                 NaN
    """

    def __init__(self, taxonomy: TaxonomyConfig | None = None) -> None:
        self.taxonomy = taxonomy

    def _resolver(self) -> TaxonomyResolver:
        return TaxonomyResolver(default_taxonomy() if self.taxonomy is None else self.taxonomy)

    def fit(self, X: Any = None, y: Any = None) -> TaxonomyMapper:
        """Check the taxonomy and build the resolver; *X* and *y* are not used."""
        self.resolver_ = self._resolver()
        self.bucket_names_ = tuple(self.resolver_.bucket_names)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return self.taxonomy is not None or hasattr(self, "resolver_")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        return frame_tags(tags, string=True, requires_fit=self.taxonomy is None)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Map *X*'s ``proba_<Class>`` and ``is_rejected`` (absent: nothing rejected)."""
        check_is_fitted(self)
        check_frame(X, "TaxonomyMapper")
        require_columns(X, PROBA_COLUMNS, "TaxonomyMapper")
        for name, dtype in X[list(PROBA_COLUMNS)].dtypes.items():
            if not is_numeric_dtype(dtype) or is_bool_dtype(dtype):
                raise ColumnTypeError(
                    f"TaxonomyMapper: column {name!r} must hold probabilities (numbers), "
                    f"got dtype {dtype}"
                )
        rejected = X.get(IS_REJECTED)
        if rejected is not None and (not is_bool_dtype(rejected) or rejected.hasnans):
            raise ColumnTypeError(
                f"TaxonomyMapper: column {IS_REJECTED!r} must hold booleans, got dtype "
                f"{rejected.dtype} with {int(rejected.isna().sum())} missing value(s)"
            )
        resolver = self._resolver()  # cheap; follows set_params
        index, mapped = resolver.resolve_matrix(
            X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan),
            None if rejected is None else rejected.to_numpy(dtype=bool),
        )
        names = resolver.bucket_names
        categories = pd.Index([*names, resolver.config.reject.mixed_label_name])
        labels = pd.Categorical.from_codes(np.where(index < 0, len(names), index), categories)
        probs = {MAPPED_PROBA_PREFIX + name: mapped[:, j].copy() for j, name in enumerate(names)}
        stale = [c for c in X.columns if isinstance(c, str) and c.startswith(MAPPED_PROBA_PREFIX)]
        return X.drop(columns=stale).assign(**{MAPPED_LABEL: labels}, **probs)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Return the final core label of each row (the ``label`` column)."""
        check_frame(X, "TaxonomyMapper.predict")
        require_columns(X, [LABEL], "TaxonomyMapper.predict")
        self._resolver()  # a pipeline with an invalid taxonomy predicts nothing either
        return X[LABEL].to_numpy()

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of the final core labels against ``y`` (the pipeline's default score)."""
        return label_accuracy(y, np.asarray(self.predict(X), dtype=object), sample_weight)
