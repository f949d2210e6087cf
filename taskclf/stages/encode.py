"""Categorical encoding: string columns to pandas categories over a vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted

from taskclf._columns import USER_ID
from taskclf._frame import add_columns, check_frame, frame_tags, require_columns
from taskclf.core.defaults import (
    DEFAULT_MIN_CATEGORY_FREQ,
    DEFAULT_UNKNOWN_MASK_RATE,
    UNKNOWN_CATEGORY,
)
from taskclf.core.schema import SCHEMA_VERSIONS, get_schema, resolve_schema_version
from taskclf.exceptions import InvalidParameterError
from taskclf.stages._base import check_params, integer, one_of, optional, real


def vocabulary_of(encoder: Any, what: str = "a vocabulary") -> list[Any]:
    """The sorted vocabulary of a fitted LabelEncoder, or of a list of values."""
    classes = getattr(encoder, "classes_", encoder)
    values = list(np.asarray(classes, dtype=object).tolist())
    try:
        return sorted(values)
    except TypeError:
        raise InvalidParameterError(
            f"{what} must hold values of one sortable type, got {values[:5]!r}"
        ) from None


def encode_column(column: pd.Series, vocabulary: pd.Index) -> np.ndarray:
    """Positions of ``column``'s values in ``vocabulary``; others get ``__unknown__``'s, or -1."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Encode the few categories, then gather by the column's codes; the
        # trailing -1 is what a missing value (code -1) gathers.
        per_category = np.append(vocabulary.get_indexer(column.cat.categories), -1)
        codes = per_category[column.cat.codes.to_numpy()]
    else:
        codes = vocabulary.get_indexer(pd.Index(column))
    unknown = vocabulary.get_indexer(pd.Index([UNKNOWN_CATEGORY]))[0]
    if unknown >= 0:
        codes[codes < 0] = unknown
    return codes.astype(np.int32, copy=False)


def learn_vocabulary(column: pd.Series, min_count: int) -> list[Any]:
    """The sorted values of ``column`` seen at least ``min_count`` times, and ``__unknown__``."""
    counts = column.value_counts(dropna=True)
    frequent = counts.index[counts.to_numpy() >= min_count]
    values = [v for v in frequent.tolist() if v != UNKNOWN_CATEGORY]
    return vocabulary_of([*values, UNKNOWN_CATEGORY])


def mask_known(
    codes: np.ndarray, vocabulary: list[Any], rate: float, rng: np.random.Generator
) -> np.ndarray:
    """A copy of ``codes``, a random fraction ``rate`` of known ones (>= 0) as ``__unknown__``."""
    mask = (rng.random(len(codes)) < rate) & (codes >= 0)
    out = codes.copy()
    out[mask] = vocabulary.index(UNKNOWN_CATEGORY)
    return out


class CategoricalEncoder(TransformerMixin, BaseEstimator):
    """Pipeline stage: categorical feature columns as pandas ``category`` dtype.

    The rule is in docs/contract.md. ``user_id`` (a feature of schema v1) is
    not encoded here: it keeps the caller's ids, and the model stage encodes it.

    Parameters
    ----------
    schema_version : str, optional
        Feature schema whose categorical columns ``fit`` learns (else inferred).
    min_category_freq, unknown_mask_rate, random_state
        At fit, rarer values become ``__unknown__``; ``fit_transform`` masks
        this seeded fraction of known values to it.

    Attributes
    ----------
    vocabulary_ : dict of str to list
        Sorted vocabulary of each categorical column.

    Examples
    --------
    >>> import pandas as pd
    >>> enc = CategoricalEncoder.from_vocabulary({"app_id": ["code", "slack"]})
    >>> enc.transform(pd.DataFrame({"app_id": ["slack", "zoom"]}))["app_id"].cat.codes.tolist()
    [1, -1]
    """

    _parameter_rules: ClassVar = {
        "schema_version": optional(one_of(*SCHEMA_VERSIONS)),
        "min_category_freq": integer(1, 2**31),
        "unknown_mask_rate": real(0.0, 1.0, open_high=True),
        "random_state": optional(integer(0, 2**32 - 1)),
    }

    def __init__(
        self,
        schema_version: str | None = None,
        *,
        min_category_freq: int = DEFAULT_MIN_CATEGORY_FREQ,
        unknown_mask_rate: float = DEFAULT_UNKNOWN_MASK_RATE,
        random_state: int | None = 0,
    ) -> None:
        self.schema_version = schema_version
        self.min_category_freq = min_category_freq
        self.unknown_mask_rate = unknown_mask_rate
        self.random_state = random_state

    @classmethod
    def from_vocabulary(
        cls, vocabulary: Mapping[str, Any], schema_version: str | None = None
    ) -> CategoricalEncoder:
        """A fitted encoder over ``vocabulary`` (column → LabelEncoder or values), but user_id."""
        if not isinstance(vocabulary, Mapping):
            raise InvalidParameterError(
                "a vocabulary maps column names to LabelEncoders or value lists, "
                f"got {type(vocabulary).__name__}"
            )
        encoder = cls(schema_version)
        check_params(encoder)
        encoder.vocabulary_ = {
            column: vocabulary_of(values, f"vocabulary[{column!r}]")
            for column, values in vocabulary.items()
            if column != USER_ID
        }
        return encoder

    def __sklearn_tags__(self) -> Tags:
        # Columns by name, as strings or categories; a missing value is an unseen one.
        return frame_tags(
            super().__sklearn_tags__(),
            allow_nan=True,
            string=True,
            categorical=True,
            requires_fit=True,
        )

    def fit(self, X: pd.DataFrame, y: object = None) -> CategoricalEncoder:
        """Learn the sorted vocabulary (frequent values and ``__unknown__``) of each column."""
        check_params(self)
        check_frame(X, type(self).__name__)
        schema = get_schema(resolve_schema_version(X, self.schema_version))
        columns = [c for c in schema.categorical_columns if c != USER_ID]
        if not set(columns) <= set(X.columns):  # name the other absent features too: fixed at once
            require_columns(
                X, dict.fromkeys([*columns, *schema.feature_columns]), type(self).__name__
            )
        self.vocabulary_ = {c: learn_vocabulary(X[c], self.min_category_freq) for c in columns}
        return self

    def fit_transform(self, X: pd.DataFrame, y: object = None, **_: Any) -> pd.DataFrame:
        """Fit, then encode ``X`` masking a seeded fraction of known values."""
        out = self.fit(X, y).transform(X)
        if self.unknown_mask_rate > 0 and len(out):
            rng = np.random.default_rng(self.random_state)
            for column, vocabulary in self.vocabulary_.items():
                codes = out[column].cat.codes.to_numpy()
                codes = mask_known(codes, vocabulary, self.unknown_mask_rate, rng)
                out[column] = pd.Categorical.from_codes(codes, categories=pd.Index(vocabulary))
        # A consolidated copy: its joblib hash survives pickling (Pipeline(memory=...) cache).
        return out.copy(deep=True)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with each vocabulary column it has as ``category`` dtype."""
        check_is_fitted(self)
        check_frame(X, type(self).__name__)
        new = {}
        for column, values in self.vocabulary_.items():
            if column not in X.columns:
                continue
            vocabulary = pd.Index(values, dtype=object)
            codes = encode_column(X[column], vocabulary)
            new[column] = pd.Categorical.from_codes(codes, categories=vocabulary)
        return add_columns(X, new) if new else X.copy(deep=False)
