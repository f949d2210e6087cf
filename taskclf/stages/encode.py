"""Categorical encoding: string columns to pandas categories over a vocabulary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted

from taskclf._columns import ENCODED_USER_ID, USER_ID
from taskclf._frame import add_columns, check_frame, frame_tags
from taskclf.core.defaults import (
    DEFAULT_MIN_CATEGORY_FREQ,
    DEFAULT_UNKNOWN_MASK_RATE,
    UNKNOWN_CATEGORY,
)
from taskclf.core.schema import get_schema, resolve_schema_version
from taskclf.exceptions import InvalidParameterError, MissingColumnsError


def vocabulary_of(encoder: Any) -> list[Any]:
    """The sorted vocabulary of a fitted LabelEncoder, or of a list of values."""
    classes = getattr(encoder, "classes_", encoder)
    values = list(np.asarray(classes, dtype=object).tolist())
    try:
        return sorted(values)
    except TypeError:
        raise InvalidParameterError(
            f"a vocabulary must hold values of one sortable type, got {values[:5]!r}"
        ) from None


def encode_column(column: pd.Series, vocabulary: pd.Index) -> np.ndarray:
    """Codes of ``column`` over ``vocabulary`` (positions in it).

    A value outside the vocabulary (or missing) gets the code of
    ``__unknown__`` when the vocabulary has it, else -1.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Encode the few categories, then gather by the column's codes.
        # A trailing -1 lets a missing value (code -1) index it, even when
        # the column has no categories at all.
        per_category = np.append(vocabulary.get_indexer(column.cat.categories), -1)
        codes = per_category[column.cat.codes.to_numpy()]
    else:
        codes = vocabulary.get_indexer(pd.Index(column))
    unknown = vocabulary.get_indexer(pd.Index([UNKNOWN_CATEGORY]))[0]
    if unknown >= 0:
        codes[codes < 0] = unknown
    return codes.astype(np.int32, copy=False)


class CategoricalEncoder(TransformerMixin, BaseEstimator):
    """Pipeline stage: categorical feature columns as pandas ``category`` dtype.

    Vocabulary codes are positions in the sorted vocabulary (as
    scikit-learn's ``LabelEncoder`` gives). At ``transform`` a value outside
    the vocabulary maps to ``__unknown__`` when the vocabulary has it,
    else to code -1 (a missing category).

    Each categorical column is replaced by its encoding, except ``user_id``
    (a feature of schema v1): it identifies timelines and per-user
    calibration, so it keeps the caller's values and its encoding is added
    as ``user_id_encoded``, which the model stage reads.

    Parameters
    ----------
    categories : dict, optional
        A ready vocabulary: column name → fitted ``LabelEncoder`` (the seed
        API's ``cat_encoders``) or list of values. When given, ``fit``
        learns nothing and the stage works without fitting.
    schema_version : str, optional
        Feature schema (``"v1"``, ``"v2"``, ``"v3"``) whose categorical
        columns ``fit`` learns; inferred from the frame when omitted.
    min_category_freq : int, default 5
        At fit, values seen fewer times become ``__unknown__``.
    unknown_mask_rate : float, default 0.05
        At ``fit_transform``, this fraction of known values (seeded by
        ``random_state``) is masked to ``__unknown__`` so that the model
        learns what to do with unseen values.
    random_state : int, default 0
        Seed of the masking.

    Attributes
    ----------
    vocabulary_ : dict of str to list
        Sorted vocabulary of each categorical column.

    Examples
    --------
    >>> import pandas as pd
    >>> enc = CategoricalEncoder(categories={"app_id": ["code", "slack"]})
    >>> enc.transform(pd.DataFrame({"app_id": ["slack", "zoom"]}))["app_id"].cat.codes.tolist()
    [1, -1]
    """

    def __init__(
        self,
        categories: Mapping[str, Any] | None = None,
        *,
        schema_version: str | None = None,
        min_category_freq: int = DEFAULT_MIN_CATEGORY_FREQ,
        unknown_mask_rate: float = DEFAULT_UNKNOWN_MASK_RATE,
        random_state: int | None = 0,
    ) -> None:
        self.categories = categories
        self.schema_version = schema_version
        self.min_category_freq = min_category_freq
        self.unknown_mask_rate = unknown_mask_rate
        self.random_state = random_state

    def __sklearn_is_fitted__(self) -> bool:
        return self.categories is not None or hasattr(self, "vocabulary_")

    def __sklearn_tags__(self) -> Tags:
        # Columns by name, as strings or categories; a missing value is an
        # unseen one. A given vocabulary needs no fitting.
        return frame_tags(
            super().__sklearn_tags__(),
            allow_nan=True,
            string=True,
            categorical=True,
            requires_fit=self.categories is None,
        )

    def __sklearn_clone__(self) -> CategoricalEncoder:
        # A given vocabulary is data, not an estimator to refit: share it
        # (scikit-learn's clone would reset fitted LabelEncoders inside it).
        if self.categories is None:
            return super().__sklearn_clone__()
        return type(self)(**self.get_params(deep=False))

    def _validate_params(self) -> None:
        if not isinstance(self.min_category_freq, (int, np.integer)) or (
            self.min_category_freq < 1
        ):
            raise InvalidParameterError(
                f"min_category_freq must be an integer >= 1, got {self.min_category_freq!r}"
            )
        rate = self.unknown_mask_rate
        if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise InvalidParameterError(f"unknown_mask_rate must lie in [0, 1), got {rate!r}")
        if self.categories is not None and not isinstance(self.categories, Mapping):
            raise InvalidParameterError(
                "categories must map column names to LabelEncoders or value lists, "
                f"got {type(self.categories).__name__}"
            )

    def _given_vocabulary(self) -> dict[str, list[Any]]:
        assert self.categories is not None
        vocabulary = {}
        for column, values in self.categories.items():
            try:
                vocabulary[column] = vocabulary_of(values)
            except InvalidParameterError as exc:  # say which column
                raise InvalidParameterError(f"categories[{column!r}]: {exc}") from None
        return vocabulary

    def _learn(self, X: pd.DataFrame) -> dict[str, list[Any]]:
        if self.categories is not None:
            return self._given_vocabulary()
        schema = get_schema(resolve_schema_version(X, self.schema_version))
        columns = list(schema.categorical_columns)
        missing = [c for c in columns if c not in X.columns]
        if missing:  # name the schema's other absent features too: all fixed at once
            also = [c for c in schema.feature_columns if c not in X.columns and c not in missing]
            raise MissingColumnsError([*missing, *also], where=type(self).__name__)
        vocabulary = {}
        for column in columns:
            counts = X[column].value_counts(dropna=True)
            frequent = counts.index[counts.to_numpy() >= self.min_category_freq]
            values = [v for v in frequent.tolist() if v != UNKNOWN_CATEGORY]
            vocabulary[column] = vocabulary_of([*values, UNKNOWN_CATEGORY])
        return vocabulary

    def fit(self, X: pd.DataFrame, y: object = None) -> CategoricalEncoder:
        """Learn the vocabulary of each categorical column (or adopt ``categories``).

        Returns
        -------
        self
        """
        self._validate_params()
        check_frame(X, type(self).__name__)
        self.vocabulary_ = self._learn(X)
        return self

    def fit_transform(self, X: pd.DataFrame, y: object = None, **_: Any) -> pd.DataFrame:
        """Fit, then encode ``X`` masking a seeded fraction of known values.

        Masking teaches a model being trained what ``__unknown__`` means; a
        given vocabulary belongs to a model already trained, so then nothing
        is masked and the result equals ``transform``.
        """
        self.fit(X, y)
        out = self.transform(X)
        if self.categories is None and self.unknown_mask_rate > 0 and len(out):
            rng = np.random.default_rng(self.random_state)
            for column, vocabulary in self.vocabulary_.items():
                if UNKNOWN_CATEGORY not in vocabulary:
                    continue
                unknown = vocabulary.index(UNKNOWN_CATEGORY)
                target = ENCODED_USER_ID if column == USER_ID else column
                codes = out[target].cat.codes.to_numpy().copy()
                mask = (rng.random(len(codes)) < self.unknown_mask_rate) & (codes >= 0)
                codes[mask] = unknown
                out[target] = pd.Categorical.from_codes(codes, categories=pd.Index(vocabulary))
        # A fresh, consolidated copy: its joblib hash survives a pickle round
        # trip, so Pipeline(memory=...) finds the later steps in its cache
        # whether this output was computed or loaded from the cache.
        return out.copy(deep=True)

    def _vocabulary(self) -> dict[str, list[Any]]:
        check_is_fitted(self)
        if hasattr(self, "vocabulary_"):
            return self.vocabulary_
        assert self.categories is not None
        return self._given_vocabulary()

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with each vocabulary column as ``category`` dtype.

        Columns of the vocabulary that ``X`` lacks are left out (the model
        stage reports them if it needs them).
        """
        self._validate_params()
        check_frame(X, type(self).__name__)
        new = {}
        for column, values in self._vocabulary().items():
            if column not in X.columns:
                continue
            vocabulary = pd.Index(values, dtype=object)
            codes = encode_column(X[column], vocabulary)
            target = ENCODED_USER_ID if column == USER_ID else column
            new[target] = pd.Categorical.from_codes(codes, categories=vocabulary)
        return add_columns(X, new) if new else X.copy(deep=False)

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> Any:
        """Columns are kept as they are."""
        return np.asarray(input_features if input_features is not None else [], dtype=object)
