"""Shared plumbing of the pipeline stages.

Every stage is a scikit-learn transformer that takes a pandas DataFrame and
returns a new one: the caller's columns are kept, the stage's columns are
added (replacing same-named ones), rows stay in input order and the input
is never modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from taskclf.core.types import OUTPUT_LABELS
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
)

LABEL_DTYPE = pd.CategoricalDtype(list(OUTPUT_LABELS))
"""Dtype of every label column a stage writes: the eight classes in class
order, then ``Mixed/Unknown``."""


def check_integer(value: object, name: str, minimum: int, bound: str | None = None) -> int:
    """Validate an integer parameter ``>= minimum``; ``bound`` words the limit."""
    bound = bound or f">= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(f"{name} must be an integer {bound}, got {value!r}")
    if value < minimum:
        raise InvalidParameterError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def check_frame(X: object, where: str) -> pd.DataFrame:
    """Refuse anything but a pandas DataFrame."""
    if not isinstance(X, pd.DataFrame):
        raise InputError(f"{where} expects a pandas DataFrame, got {type(X).__name__}")
    return X


def require_columns(X: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise :class:`MissingColumnsError` listing every absent column."""
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise MissingColumnsError(missing, where=where)


def label_codes(column: pd.Series, name: str) -> np.ndarray:
    """Codes of a label column over :data:`LABEL_DTYPE` (int8; -1 never occurs).

    Raises
    ------
    ColumnTypeError
        If the column holds a value that is neither a core label nor
        ``Mixed/Unknown``, or a missing value.
    """
    if isinstance(column.dtype, pd.CategoricalDtype) and column.dtype == LABEL_DTYPE:
        codes = column.cat.codes.to_numpy()
    else:
        # get_indexer gives -1 for foreign values; pd.Categorical(..., dtype=)
        # is deprecated for them (and will raise in pandas 4).
        codes = LABEL_DTYPE.categories.get_indexer(pd.Index(column))
    if len(codes) and codes.min() < 0:
        position = int(np.flatnonzero(codes < 0)[0])
        raise ColumnTypeError(
            f"column {name!r} holds {column.iloc[position]!r} (row {position}), "
            f"which is not one of {list(OUTPUT_LABELS)}"
        )
    return np.asarray(codes, dtype=np.int8)


def add_columns(X: pd.DataFrame, columns: Mapping[str, Any] | pd.DataFrame) -> pd.DataFrame:
    """A new frame: ``X``'s columns, same-named ones replaced in place, then
    the other ``columns`` appended.

    Neither ``X`` nor its data is copied (pandas copy-on-write keeps the
    caller's frame safe); appended columns form one block per dtype, so
    later stages read them without gathering.
    """
    new = columns if isinstance(columns, pd.DataFrame) else pd.DataFrame(dict(columns))
    new.index = X.index
    replaced = [c for c in new.columns if c in X.columns]
    base = X.copy(deep=False)
    for column in replaced:
        base[column] = new[column]
    appended = new.drop(columns=replaced) if replaced else new
    if appended.shape[1] == 0:
        return base
    return pd.concat([base, appended], axis=1)


def factorize_labels(
    labels: Iterable[object], name: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Codes (in order of first appearance) and distinct values of a label sequence.

    Raises
    ------
    InputError
        If a label is missing (None or NaN): it would otherwise get code -1
        and be read as another label.
    """
    codes, uniques = pd.factorize(pd.Series(list(labels), dtype=object))
    if len(codes) and codes.min() < 0:
        position = int(np.flatnonzero(codes < 0)[0])
        raise InputError(f"{name} hold a missing value at position {position}")
    return codes, np.asarray(uniques, dtype=object)


def labels_from_codes(codes: np.ndarray) -> pd.Categorical:
    """A label column from codes over :data:`LABEL_DTYPE`."""
    return pd.Categorical.from_codes(codes, dtype=LABEL_DTYPE)


class FrameTransformer(TransformerMixin, BaseEstimator):
    """Base of the stateless stages: DataFrame in, annotated DataFrame out.

    Subclasses implement ``_validate_params`` (raise on a bad parameter) and
    ``_transform`` (compute the new columns). Parameters are checked in
    ``fit``, ``transform`` and ``set_params``; a refused ``set_params``
    leaves the stage unchanged.
    """

    def _validate_params(self) -> None:
        """Raise :class:`~taskclf.exceptions.InvalidParameterError` on bad values."""

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def set_params(self, **params: Any) -> FrameTransformer:
        """Set parameters; refuse invalid values and keep the old ones then."""
        old = {name: getattr(self, name) for name in params if hasattr(self, name)}
        super().set_params(**params)
        try:
            self._validate_params()
        except Exception:
            super().set_params(**old)
            raise
        return self

    def fit(self, X: pd.DataFrame, y: object = None) -> FrameTransformer:
        """Check the parameters; the stage learns nothing.

        Parameters
        ----------
        X : DataFrame
            Ignored apart from its type.
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        check_frame(X, type(self).__name__)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return a copy of ``X`` with this stage's columns added."""
        self._validate_params()
        check_frame(X, type(self).__name__)
        return self._transform(X)

    def __sklearn_is_fitted__(self) -> bool:
        return True
