"""Training helpers shared by the stages that learn: label codes and group-aware folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from taskclf._columns import BUCKET_START_TS, USER_ID
from taskclf.core.time import NS_PER_DAY, timestamps_ns
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InputError
from taskclf.stages._base import check_value, integer


def check_labels(y: object, n_rows: int, where: str) -> np.ndarray:
    """Class codes (int64, class order) of the core labels ``y``; InputError naming a bad one.

    >>> check_labels(["Build", "BreakIdle"], 2, "fit").tolist()
    [1, 0]
    """
    if y is None:
        raise InputError(f"{where} learns from labels: pass y, one core label per row")
    values = pd.Series(np.asarray(y, dtype=object).ravel())
    if len(values) != n_rows:
        raise InputError(f"{where}: y has {len(values)} labels but X has {n_rows} rows")
    codes = pd.Index(CLASS_ORDER).get_indexer(pd.Index(values))
    if len(codes) and codes.min() < 0:
        bad = values[codes < 0]
        raise InputError(
            f"{where}: y holds {bad.iloc[0]!r} (row {int(bad.index[0])}), which is not "
            f"one of the core labels {list(CLASS_ORDER)}"
        )
    return codes.astype(np.int64, copy=False)


def fold_groups(X: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Each row's fold group and its kind: "user" (several users), else "day" (several UTC
    days), else "row" (its rank in time, or position without timestamps)."""
    if USER_ID in X.columns:
        codes, users = pd.factorize(X[USER_ID])
        if len(users) > 1:
            return codes.astype(np.int64, copy=False), "user"
    if BUCKET_START_TS not in X.columns:
        return np.arange(len(X), dtype=np.int64), "row"
    ts = timestamps_ns(X, BUCKET_START_TS)
    days = ts // NS_PER_DAY
    if len(np.unique(days)) > 1:
        return days.astype(np.int64, copy=False), "day"
    return np.argsort(np.argsort(ts, kind="stable")).astype(np.int64, copy=False), "row"


def group_folds(X: pd.DataFrame, n_folds: int) -> np.ndarray:
    """The held-out fold (int8, from 0) of each row: ``min(n_folds, groups)`` GroupKFold folds
    over :func:`fold_groups` (contiguous blocks of time with a group per row); InputError for
    fewer than two rows."""
    n_folds = int(check_value(n_folds, integer(2, 100), "n_folds", "group_folds"))
    groups, kind = fold_groups(X)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError(f"out-of-fold predictions need at least 2 rows to split, got {len(X)}")
    splits = min(n_folds, n_groups)
    if kind == "row":
        return (groups * splits // len(X)).astype(np.int8)
    fold = np.empty(len(X), dtype=np.int8)
    for k, (_, test) in enumerate(GroupKFold(splits).split(groups, groups=groups)):
        fold[test] = k
    return fold
