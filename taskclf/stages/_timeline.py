"""Timelines: one user's rows in time order, split at long gaps (docs/contract.md); the time
stages run their kernels on them, sorted and concatenated, found once per pipeline call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import attrs
import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, USER_ID
from taskclf._frame import refuse_missing
from taskclf.core.time import ns_to_datetime, timestamps_ns
from taskclf.exceptions import DuplicateRowsError
from taskclf.stages._base import GAP, one_of


@attrs.frozen(eq=False)
class Timelines:
    """How the rows of a frame fall into timelines: ``order``, the row positions in timeline
    order (by user, then time), or ``None`` when the frame is in that order; ``bounds``, where
    each timeline starts, then ``n``; ``ts_ns`` (ns, UTC) and ``user_codes`` (into ``users``)
    in timeline order."""

    order: np.ndarray | None
    bounds: np.ndarray
    ts_ns: np.ndarray
    user_codes: np.ndarray | None
    users: np.ndarray | None

    def to_sorted(self, values: np.ndarray) -> np.ndarray:
        """Reorder per-row ``values`` from input order into timeline order."""
        return values if self.order is None else values[self.order]

    def to_input(self, values: np.ndarray) -> np.ndarray:
        """Reorder per-row ``values`` from timeline order back into input order."""
        if self.order is None:
            return values
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def number_per_user(self, starts: np.ndarray) -> np.ndarray:
        """Ids of the runs starting at sorted ``starts`` (timeline order), from 0 per user."""
        n = len(self.ts_ns)
        new = np.zeros(n, dtype=np.int64)
        new[starts] = 1
        ids = np.cumsum(new) - 1
        if self.user_codes is not None and n:
            first = np.flatnonzero(np.diff(self.user_codes, prepend=-1) != 0)
            ids -= np.repeat(ids[first], np.diff(np.append(first, n)))
        return ids


TIMELINE_MODES = ("per_user", "as_given")
TIMELINE_RULES = {"max_gap_seconds": GAP, "timelines": one_of(*TIMELINE_MODES)}

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
    """Factorize ``user_id`` (codes in order of first appearance); (None, None) without it."""
    if USER_ID not in df.columns:
        return None, None
    codes, users = pd.factorize(df[USER_ID], sort=False)
    refuse_missing(codes < 0, USER_ID)
    return codes.astype(np.int64, copy=False), np.asarray(users)


def find_timelines(df: pd.DataFrame, max_gap_seconds: float, mode: str = "per_user") -> Timelines:
    """Split the rows of ``df`` into timelines (``"as_given"``: one, in the order given); a
    ``DuplicateRowsError`` when two rows share ``(user_id, bucket_start_ts)``."""
    shared = _shared.get()
    key = (len(df), float(max_gap_seconds), mode)
    if shared is not None and key in shared:
        return shared[key]
    ts = timestamps_ns(df, BUCKET_START_TS)
    if mode == "as_given":
        timelines = Timelines(None, np.array([0, len(ts)], np.int64), ts, None, None)
    else:
        timelines = _find(ts, *user_codes_of(df), round(max_gap_seconds * 1_000_000_000))
    if shared is not None:
        shared[key] = timelines
    return timelines


def _find(
    ts: np.ndarray, codes: np.ndarray | None, users: np.ndarray | None, gap_ns: int
) -> Timelines:
    """The per-user timelines of rows with timestamps ``ts`` and user codes ``codes``."""
    n = len(ts)
    if n == 0:
        return Timelines(None, np.zeros(1, np.int64), ts, codes, users)
    order: np.ndarray | None = None
    same_user = np.ones(n - 1, dtype=bool) if codes is None else codes[1:] == codes[:-1]
    users_sorted = codes is None or bool(np.all(codes[1:] >= codes[:-1]))
    if not (users_sorted and np.all(np.diff(ts)[same_user] > 0)):
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
