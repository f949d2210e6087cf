"""Timelines: one user's rows in time order, split at long gaps.

Smoothing windows and segments never cross a timeline boundary. Every
stage that works along time asks :func:`find_timelines` for the order of
the rows and where each timeline starts; the kernels then run on the
sorted, concatenated timelines with those boundaries.
"""

from __future__ import annotations

import attrs
import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, USER_ID
from taskclf._frame import check_integer
from taskclf.core.time import ns_to_datetime, timestamps_ns
from taskclf.exceptions import ColumnTypeError, DuplicateRowsError


@attrs.frozen(eq=False)
class Timelines:
    """How the rows of a frame fall into timelines.

    Attributes
    ----------
    order : ndarray of int64, shape (n,)
        Row positions in timeline order (by user, then time), or ``None``
        when the frame is already in that order.
    bounds : ndarray of int64, shape (n_timelines + 1,)
        Positions, in timeline order, where each timeline starts, followed
        by ``n``.
    ts_ns : ndarray of int64, shape (n,)
        Bucket start times in timeline order, ns since the epoch (UTC).
    user_codes : ndarray of int64, shape (n,), or None
        User of each row in timeline order, as codes into ``users``.
    users : ndarray or None
        The distinct user ids, in order of first appearance.
    """

    order: np.ndarray | None
    bounds: np.ndarray
    ts_ns: np.ndarray
    user_codes: np.ndarray | None
    users: np.ndarray | None

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.bounds[-1])

    def to_sorted(self, values: np.ndarray) -> np.ndarray:
        """Reorder per-row ``values`` (input order) into timeline order."""
        return values if self.order is None else values[self.order]

    def to_input(self, values: np.ndarray) -> np.ndarray:
        """Reorder per-row ``values`` (timeline order) back into input order."""
        if self.order is None:
            return values
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def timeline_of_rows(self) -> np.ndarray:
        """Timeline index of each row, in timeline order."""
        return np.repeat(np.arange(len(self.bounds) - 1), np.diff(self.bounds))


def check_positive_seconds(value: object, name: str) -> int:
    """Validate a duration in whole seconds that must be > 0."""
    return check_integer(value, name, 1, "> 0")


def user_codes_of(df: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Factorize the ``user_id`` column (codes in order of first appearance)."""
    if USER_ID not in df.columns:
        return None, None
    column = df[USER_ID]
    codes, users = pd.factorize(column, sort=False)
    if (codes < 0).any():
        position = int(np.flatnonzero(codes < 0)[0])
        raise ColumnTypeError(
            f"column 'user_id' has {int((codes < 0).sum())} missing value(s); "
            f"first at row {position}"
        )
    return codes.astype(np.int64, copy=False), np.asarray(users)


def find_timelines(df: pd.DataFrame, max_gap_seconds: int) -> Timelines:
    """Split the rows of ``df`` into timelines.

    A timeline is one user's rows (the whole frame without ``user_id``),
    ordered by ``bucket_start_ts`` and split where two consecutive buckets
    start more than ``max_gap_seconds`` apart.

    Raises
    ------
    MissingColumnsError
        Without a ``bucket_start_ts`` column.
    TimestampError
        On missing or unparseable timestamps.
    DuplicateRowsError
        When two rows share ``(user_id, bucket_start_ts)``.
    """
    gap_ns = check_positive_seconds(max_gap_seconds, "max_gap_seconds") * 1_000_000_000
    ts = timestamps_ns(df, BUCKET_START_TS)
    codes, users = user_codes_of(df)
    n = len(ts)
    if n == 0:
        return Timelines(None, np.zeros(1, np.int64), ts, codes, users)

    step = np.diff(ts)
    same_user = np.ones(n - 1, dtype=bool) if codes is None else codes[1:] == codes[:-1]
    in_order = bool(
        np.all(step[same_user] > 0) and (codes is None or np.all(codes[1:] >= codes[:-1]))
    )
    order: np.ndarray | None = None
    if not in_order:
        order = np.lexsort((ts,) if codes is None else (ts, codes))
        ts = ts[order]
        if codes is not None:
            codes = codes[order]
            same_user = codes[1:] == codes[:-1]
        step = np.diff(ts)

    duplicate = same_user & (step == 0)
    if duplicate.any():
        first = int(np.flatnonzero(duplicate)[0])
        who = "" if codes is None else f"user_id {users[codes[first]]!r}, "  # type: ignore[index]
        raise DuplicateRowsError(
            f"{int(duplicate.sum())} duplicate (user_id, bucket_start_ts) row(s); "
            f"first: {who}bucket_start_ts {ns_to_datetime(ts[first]).isoformat()}"
        )

    breaks = ~same_user | (step > gap_ns)
    bounds = np.concatenate(([0], np.flatnonzero(breaks) + 1, [n])).astype(np.int64)
    return Timelines(order, bounds, ts, codes, users)
