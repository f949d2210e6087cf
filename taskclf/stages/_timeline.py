"""Timelines: one user's rows in time order, split at long gaps.

Smoothing windows and segments never cross a timeline boundary. Every
stage that works along time asks :func:`find_timelines` for the order of
the rows and where each timeline starts; the kernels then run on the
sorted, concatenated timelines with those boundaries.

Within :func:`shared_timelines` (a pipeline call opens it), the timelines of
a frame are found once and reused by every later stage: stages keep the
rows and their order, so the first stage's answer holds for all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import attrs
import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, USER_ID
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

    def number_per_user(self, starts: np.ndarray) -> np.ndarray:
        """Ids of runs, numbered from 0 for each user (the whole frame without users).

        Parameters
        ----------
        starts : ndarray of int
            Sorted start positions (timeline order) of the runs; every
            timeline start is among them.

        Returns
        -------
        ndarray of int64, shape (n,)
            The run of each row, in timeline order.
        """
        new = np.zeros(self.n_rows, dtype=np.int64)
        new[starts] = 1
        ids = np.cumsum(new) - 1
        if self.user_codes is not None and self.n_rows:
            first = np.flatnonzero(np.diff(self.user_codes, prepend=-1) != 0)
            ids -= np.repeat(ids[first], np.diff(np.append(first, self.n_rows)))
        return ids

    def timeline_of_rows(self) -> np.ndarray:
        """Timeline index of each row, in timeline order."""
        return np.repeat(np.arange(len(self.bounds) - 1), np.diff(self.bounds))


TIMELINE_MODES = ("per_user", "as_given")
"""How rows form timelines: per user, in time order, split at gaps (the
rule of the contract); or the whole frame as one sequence in the order given
(taskclf 0.4's batch inference)."""

_shared: ContextVar[dict[tuple[int, float, str], Timelines] | None] = ContextVar(
    "taskclf_timelines", default=None
)


@contextlib.contextmanager
def shared_timelines() -> Iterator[None]:
    """Inside the block, :func:`find_timelines` answers once per frame length and gap."""
    token = _shared.set({})
    try:
        yield
    finally:
        _shared.reset(token)


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


def find_timelines(df: pd.DataFrame, max_gap_seconds: float, mode: str = "per_user") -> Timelines:
    """Split the rows of ``df`` into timelines.

    A timeline is one user's rows (the whole frame without ``user_id``),
    ordered by ``bucket_start_ts`` and split where two consecutive buckets
    start more than ``max_gap_seconds`` apart. With ``mode="as_given"``
    the whole frame is one timeline in the order given, as taskclf 0.4
    treats it (timestamps are still parsed, for the segments' times).

    Raises
    ------
    MissingColumnsError
        Without a ``bucket_start_ts`` column.
    TimestampError
        On missing or unparseable timestamps.
    DuplicateRowsError
        When two rows share ``(user_id, bucket_start_ts)``.
    """
    shared = _shared.get()
    key = (len(df), float(max_gap_seconds), mode)
    if shared is not None and key in shared:
        return shared[key]
    if mode == "as_given":
        ts = timestamps_ns(df, BUCKET_START_TS)
        timelines = Timelines(None, np.array([0, len(ts)], np.int64), ts, None, None)
    else:
        timelines = _find(df, round(max_gap_seconds * 1_000_000_000))
    if shared is not None:
        shared[key] = timelines
    return timelines


def _find(df: pd.DataFrame, gap_ns: int) -> Timelines:
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
