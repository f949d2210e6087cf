"""DataFrame helpers the pipeline stages share: checks, label codes, new columns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import Tags

from taskclf.core.types import OUTPUT_LABELS
from taskclf.exceptions import ColumnTypeError, InputError, MissingColumnsError

LABEL_DTYPE = pd.CategoricalDtype(list(OUTPUT_LABELS))  # of every label column a stage writes


def check_frame(X: object, where: str) -> pd.DataFrame:
    """Refuse anything but a pandas DataFrame with unique column names."""
    if not isinstance(X, pd.DataFrame):
        raise InputError(f"{where} expects a pandas DataFrame, got {type(X).__name__}")
    if not X.columns.is_unique:
        twice = X.columns[X.columns.duplicated()].unique().tolist()
        raise ColumnTypeError(f"{where}: the frame has columns named twice: {twice[:10]!r}")
    return X


def require_columns(X: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise :class:`MissingColumnsError` listing every absent column."""
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise MissingColumnsError(missing, where=where)


def label_codes(column: pd.Series, name: str) -> np.ndarray:
    """Codes of a label column over :data:`LABEL_DTYPE` (int8), refusing other values."""
    if isinstance(column.dtype, pd.CategoricalDtype) and column.dtype == LABEL_DTYPE:
        codes = column.cat.codes.to_numpy()
    else:
        # -1 for foreign values (pd.Categorical(..., dtype=) deprecates them)
        codes = LABEL_DTYPE.categories.get_indexer(pd.Index(column))
    if len(codes) and codes.min() < 0:
        position = int(np.flatnonzero(codes < 0)[0])
        raise ColumnTypeError(
            f"column {name!r} holds {column.iloc[position]!r} (row {position}), "
            f"which is not one of {list(OUTPUT_LABELS)}"
        )
    return np.asarray(codes, dtype=np.int8)


def add_columns(X: pd.DataFrame, columns: Mapping[str, Any] | pd.DataFrame) -> pd.DataFrame:
    """A new frame, ``X``'s data uncopied: its columns (same-named ones replaced), then others."""
    new = columns if isinstance(columns, pd.DataFrame) else pd.DataFrame(dict(columns))
    new.index = X.index
    replaced = [c for c in new.columns if c in X.columns]
    base = X.copy(deep=False)
    for column in replaced:
        base[column] = new[column]
    appended = new.drop(columns=replaced) if replaced else new
    return pd.concat([base, appended], axis=1) if appended.shape[1] else base


def refuse_missing(missing: np.ndarray, name: str) -> None:
    """Refuse the rows flagged ``missing`` in column ``name``, naming the first."""
    if missing.any():
        raise ColumnTypeError(
            f"column {name!r} has {int(missing.sum())} missing value(s); "
            f"first at row {int(np.flatnonzero(missing)[0])}"
        )


def factorize_labels(
    labels: Iterable[object], name: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Codes (in order of first appearance) and distinct values; a missing label is refused."""
    codes, uniques = pd.factorize(pd.Series(list(labels), dtype=object))
    if len(codes) and codes.min() < 0:
        position = int(np.flatnonzero(codes < 0)[0])
        raise InputError(f"{name} hold a missing value at position {position}")
    return codes, np.asarray(uniques, dtype=object)


def frame_tags(
    tags: Tags,
    *,
    allow_nan: bool = False,
    string: bool = False,
    categorical: bool = False,
    requires_fit: bool = False,
) -> Tags:
    """Tags of a stage that takes a DataFrame (no bare 2-D array) and preserves no dtype."""
    tags.input_tags.two_d_array = False
    tags.input_tags.allow_nan = allow_nan
    tags.input_tags.string = string
    tags.input_tags.categorical = categorical
    tags.requires_fit = requires_fit
    if tags.transformer_tags is not None:
        tags.transformer_tags.preserves_dtype = []
    return tags


def check_finite_columns(values: np.ndarray, columns: Sequence[str]) -> None:
    """Refuse a missing or infinite value in a matrix of ``columns``, naming column and row."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        row, col = int(rows[0]), int(cols[0])
        raise InputError(
            f"column {columns[col]!r} holds {float(values[row, col])!r} at row {row} "
            f"({int(bad.sum())} missing or infinite value(s)); probabilities must be finite"
        )


def label_accuracy(y_true: Any, y_pred: np.ndarray, sample_weight: Any = None) -> float:
    """Share of rows whose final label equals ``y_true`` (the default score)."""
    from sklearn.metrics import accuracy_score

    truth = np.asarray(y_true, dtype=object)
    if len(truth) != len(y_pred):
        raise InputError(f"y has {len(truth)} labels but X has {len(y_pred)} rows")
    return float(accuracy_score(truth, y_pred, sample_weight=sample_weight))


def labels_from_codes(codes: np.ndarray) -> pd.Categorical:
    """A label column from codes over :data:`LABEL_DTYPE`."""
    return pd.Categorical.from_codes(codes, dtype=LABEL_DTYPE)
