"""The model stage: LightGBM class probabilities for each bucket."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from taskclf._base import add_columns, check_frame, require_columns
from taskclf._columns import ENCODED_USER_ID, PROBA_COLUMNS, USER_ID
from taskclf.core.schema import (
    FeatureSchema,
    check_frame_schema,
    get_schema,
    schema_for_n_features,
)
from taskclf.core.types import N_CLASSES
from taskclf.exceptions import (
    ColumnTypeError,
    InvalidParameterError,
    NotFittedError,
    ProbabilityShapeError,
    SchemaMismatchError,
)

_FILL_ROWS = 8192
"""Rows filled at a time: a block of this many rows stays in cache while the
columns are written into it (writing whole strided columns is 10x slower)."""

PREDICT_ROWS = 131_072
"""Rows handed to ``booster.predict`` at a time, bounding the memory of the
feature matrix."""

_NUMBER_KINDS = frozenset({"boolean", "integer", "floating", "mixed-integer-float", "empty"})


def _holds_numbers(column: pd.Series) -> bool:
    """An object column of numbers or booleans with gaps (e.g. ``[True, None]``)."""
    kind = pd.api.types.infer_dtype(column, skipna=True)
    return column.dtype == object and kind in _NUMBER_KINDS


def feature_columns(X: pd.DataFrame, schema: FeatureSchema) -> list[np.ndarray]:
    """The schema's feature columns of ``X`` as 1-D numeric arrays, in order.

    Categorical columns (pandas ``category`` dtype, as the encoder writes
    them) become their codes, booleans stay booleans and numbers numbers;
    numpy-backed columns are not copied. The ``user_id`` feature is read
    from ``user_id_encoded`` when present.

    Raises
    ------
    MissingColumnsError
        Listing every absent feature column.
    ColumnTypeError
        Naming a column of text values, or a categorical column that was
        not encoded.
    """
    columns = schema.feature_columns
    require_columns(X, columns, "feature matrix")
    categorical = set(schema.categorical_columns)
    arrays = []
    for name in columns:
        column = X[ENCODED_USER_ID if name == USER_ID and ENCODED_USER_ID in X else name]
        dtype = column.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            arrays.append(column.cat.codes.to_numpy())
            continue
        if name in categorical:
            raise ColumnTypeError(
                f"categorical column {name!r} is not encoded ({dtype}); put a "
                "CategoricalEncoder before the model stage"
            )
        if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
            arrays.append(column.to_numpy())
        elif (
            pd.api.types.is_numeric_dtype(dtype)
            or pd.api.types.is_bool_dtype(dtype)
            or _holds_numbers(column)
        ):
            arrays.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            sample = column.dropna().head(3).tolist()
            raise ColumnTypeError(
                f"column {name!r} must hold numbers, found {dtype} values such as {sample!r}"
            )
    return arrays


def fill_matrix(arrays: list[np.ndarray], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the float64 feature matrix, missing values as 0."""
    matrix = np.empty((stop - start, len(arrays)), dtype=np.float64)
    for lo in range(start, stop, _FILL_ROWS):
        hi = min(lo + _FILL_ROWS, stop)
        block = matrix[lo - start : hi - start]
        for j, values in enumerate(arrays):
            block[:, j] = values[lo:hi]
    matrix[np.isnan(matrix)] = 0.0
    return matrix


def feature_matrix(X: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """The booster's input: the schema's feature columns as a float64 matrix.

    Categorical columns become their codes, booleans 0/1 and missing values
    0 (see :func:`feature_columns`).
    """
    return fill_matrix(feature_columns(X, schema), 0, len(X))


def booster_schema(booster: Any, schema_version: str | None) -> FeatureSchema:
    """The feature schema of ``booster``: the given version, or guessed from its width."""
    n_features = int(booster.num_feature())
    if schema_version is not None:
        schema = get_schema(schema_version)
        if schema.n_features != n_features:
            raise SchemaMismatchError(
                f"schema {schema.version} has {schema.n_features} feature columns but "
                f"the booster expects {n_features}"
            )
        return schema
    guessed = schema_for_n_features(n_features)
    if guessed is None:
        raise SchemaMismatchError(
            f"the booster expects {n_features} features, which matches no schema "
            "(v1: 39, v2: 38, v3: 299)"
        )
    return guessed


def predict_matrix(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """``booster.predict`` checked to give one probability column per class."""
    if len(matrix) == 0:
        return np.zeros((0, N_CLASSES))
    proba = np.asarray(booster.predict(matrix), dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
        raise ProbabilityShapeError(
            f"the booster returned probabilities of shape {proba.shape}; "
            f"expected (n, {N_CLASSES}): one column per class"
        )
    return proba


def predict_frame(booster: Any, X: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """Probabilities of the rows of ``X``, predicted in blocks of rows."""
    arrays = feature_columns(X, schema)
    n = len(X)
    if n <= PREDICT_ROWS:
        return predict_matrix(booster, fill_matrix(arrays, 0, n))
    proba = np.empty((n, N_CLASSES), dtype=np.float64)
    for start in range(0, n, PREDICT_ROWS):
        stop = min(start + PREDICT_ROWS, n)
        proba[start:stop] = predict_matrix(booster, fill_matrix(arrays, start, stop))
    return proba


class BoosterPredictor(TransformerMixin, BaseEstimator):
    """Pipeline stage: class probabilities from a LightGBM booster.

    Adds one column per class, ``proba_<Label>``, in class order
    (BreakIdle, Build, Communicate, Debug, Meet, ReadResearch, Review,
    Write). A booster passed in is pre-trained and frozen: ``fit`` leaves
    it alone and ``clone`` returns the stage itself, so grid searches never
    copy or retrain it.

    Parameters
    ----------
    booster : lightgbm.Booster
        A trained multiclass booster over the eight classes in class order.
    schema_version : str, optional
        Feature schema of the booster; guessed from its number of features
        when omitted.

    See Also
    --------
    taskclf.CategoricalEncoder : the stage before, which encodes categories.
    """

    def __init__(self, booster: Any = None, schema_version: str | None = None) -> None:
        self.booster = booster
        self.schema_version = schema_version

    def __sklearn_is_fitted__(self) -> bool:
        return self.booster is not None or hasattr(self, "booster_")

    def __sklearn_clone__(self) -> BoosterPredictor:
        return self

    def _model(self) -> Any:
        model = getattr(self, "booster_", None) or self.booster
        if model is None:
            raise NotFittedError("BoosterPredictor has no booster: pass booster= or call fit first")
        if not hasattr(model, "predict") or not hasattr(model, "num_feature"):
            raise InvalidParameterError(
                f"booster must be a lightgbm.Booster, got {type(model).__name__}"
            )
        return model

    @property
    def schema_(self) -> FeatureSchema:
        """The feature schema the booster was trained on."""
        return booster_schema(self._model(), self.schema_version)

    def fit(self, X: pd.DataFrame, y: object = None) -> BoosterPredictor:
        """Keep the pre-trained booster as it is.

        Returns
        -------
        self
        """
        check_frame(X, type(self).__name__)
        self._model()
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """The (n, 8) probability matrix of the rows of ``X``."""
        check_frame(X, type(self).__name__)
        model = self._model()
        schema = booster_schema(model, self.schema_version)
        check_frame_schema(X, schema)
        return predict_frame(model, X, schema)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with the probability columns added."""
        proba = self.predict_proba(X)
        return add_columns(X, pd.DataFrame(proba, columns=list(PROBA_COLUMNS)))
