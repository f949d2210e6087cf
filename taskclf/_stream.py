"""One step of a stream: the batch kernels over the rows not yet final and the new
ones, and what no later row can change (why: docs/streaming.md)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pandas as pd

from taskclf.stages.merge import merge_segment_codes
from taskclf.stages.reject import MIXED_CODE
from taskclf.stages.segment import run_starts
from taskclf.stages.smooth import rolling_majority_codes
from taskclf.stages.viterbi import viterbi_backtrace, viterbi_forward


@attrs.frozen
class Rules:
    """The time stages' parameters a stream follows."""

    window: int | None  # rolling majority; None with Viterbi
    log_transition: np.ndarray | None  # Viterbi; None with the rolling majority
    gap_ns: int
    min_buckets: int
    width_ns: int
    join_equal: bool


@attrs.frozen
class State:
    """Everything a stream remembers, as arrays (never changed in place).

    ``per_user``: ``last_ns``, ``next_id`` (id of the joined segment of
    ``head``, the open merged segment as a :class:`_Head`, zeros for none)
    and ``score`` (Viterbi). ``rows``, the pending rows (output of the
    per-row stages in ``frame``), with ``smooth`` -1 while not final and
    ``done`` once handed back (kept as context). An open timeline keeps
    its last rows, so a user has pending rows iff its timeline is open.
    """

    users: pd.Index
    per_user: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    frame: pd.DataFrame
    n_seen: int

    @classmethod
    def empty(cls, rules: Rules) -> State:
        """The state of a stream that has seen nothing."""
        k = 0 if rules.log_transition is None else MIXED_CODE
        per_user: dict[str, Any] = {name: np.zeros(0, np.int64) for name in ("last_ns", "next_id")}
        per_user |= {"head": np.zeros((0, 6), np.int64), "score": np.zeros((0, k))}
        rows: dict[str, Any] = {name: np.zeros(0, np.int64) for name in ("user", "ts", "serial")}
        rows |= {"raw": np.zeros(0, np.int8), "rejected": np.zeros(0, bool)}
        rows |= {"smooth": np.zeros(0, np.int8), "done": np.zeros(0, bool)}
        rows["back"] = np.zeros((0, k), np.int8)
        return cls(pd.Index([], dtype=object), per_user, rows, pd.DataFrame(), 0)

    @property
    def is_open(self) -> np.ndarray:
        """Whether each user's timeline is open (a new array)."""
        return np.bincount(self.rows["user"], minlength=len(self.users)) > 0

    def with_users(self, users: pd.Index) -> State:
        """The state with ``users`` (a superset, known ones first) tracked."""
        extra = len(users) - len(self.users)
        grown = {
            name: np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)])
            for name, a in self.per_user.items()
        }
        return attrs.evolve(self, users=users, per_user=grown)


@attrs.frozen
class Step:
    """What :func:`advance` finalized (``rows`` index ``frame``), and the state after it."""

    state: State
    frame: pd.DataFrame
    rows: np.ndarray
    serial: np.ndarray
    smooth: np.ndarray
    label: np.ndarray
    segment_id: np.ndarray
    segments: np.ndarray  # (n, 5): user, first_ns, last_ns, label, count


@attrs.frozen
class _Units:
    """The timelines of one step over the rows sorted by user and time."""

    of_row: np.ndarray
    bounds: np.ndarray  # first row of each unit, then n
    user: np.ndarray
    continues: np.ndarray  # carries on the user's open timeline
    closed: np.ndarray  # ends in this step


def advance(state: State, new: dict[str, Any] | None, closing: np.ndarray, rules: Rules) -> Step:
    """Add ``new`` rows (``frame`` and arrays as ``State.rows``, checked by the caller),
    then end the timelines of the users in ``closing``."""
    rows, frame = _combine(state, new)
    order = np.lexsort((rows["ts"], rows["user"]))
    rows = {name: values[order] for name, values in rows.items()}
    user, ts, n = rows["user"], rows["ts"], len(order)
    first_of_user = np.append(True, user[1:] != user[:-1])
    start = np.flatnonzero(first_of_user | np.append(True, np.diff(ts) > rules.gap_ns))
    units = _Units(
        of_row=np.repeat(np.arange(len(start)), np.diff(np.append(start, n))),
        bounds=np.append(start, n),
        user=user[start],
        continues=order[start] < len(state.rows["user"]),
        closed=~np.append(first_of_user[start[1:]], True) | closing[user[start]],
    )
    per_user = {**state.per_user, "last_ns": state.per_user["last_ns"].copy()}
    np.maximum.at(per_user["last_ns"], user, ts)
    if rules.window is None:
        smooth, per_user["score"] = _viterbi(state, rows, units, rules)
    else:
        smooth = _majority(rows, units, rules.window)
    merged = _Merged(per_user, rules)
    emitted, label, segment_id = merged.run(ts, smooth, rows["done"], units)

    # Keep what is not final, and an open unit's last rows (context, or one row).
    done = rows["done"].copy()
    done[emitted] = True
    to_end = units.bounds[units.of_row + 1] - np.arange(n)
    kept = 1 if rules.window is None else max(1, rules.window // 2 * 2)
    keep = ~done | (~units.closed[units.of_row] & (to_end <= kept))
    pending = {**rows, "smooth": smooth, "done": done}
    pending = {name: values[keep] for name, values in pending.items() if name != "log_emission"}
    return Step(
        state=State(
            users=state.users,
            per_user=per_user,
            rows=pending,
            frame=frame.iloc[order[keep]].reset_index(drop=True),
            n_seen=state.n_seen + (0 if new is None else len(new["user"])),
        ),
        frame=frame,
        rows=order[emitted],
        serial=rows["serial"][emitted],
        smooth=smooth[emitted],
        label=label,
        segment_id=segment_id,
        segments=np.array(merged.finished, np.int64).reshape(-1, 5),
    )


def _combine(state: State, new: dict[str, Any] | None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Pending rows then new rows (with ``log_emission`` for Viterbi), and their frame."""
    new = new or {"user": [], "frame": state.frame}
    n_old, n_new = len(state.rows["user"]), len(new["user"])
    k = state.rows["back"].shape[1]
    old = {**state.rows, "log_emission": np.zeros((n_old, k))} if k else state.rows
    fill = {"smooth": -1, "done": False, "back": 0, **new}
    rows = {
        name: np.concatenate([a, np.full((n_new, *a.shape[1:]), fill.get(name, 0), a.dtype)])
        for name, a in old.items()
    }
    if not n_old:
        return rows, new["frame"]
    return rows, pd.concat([state.frame, new["frame"]], ignore_index=True) if n_new else state.frame


def _majority(rows: dict[str, np.ndarray], units: _Units, window: int) -> np.ndarray:
    """The smoothed labels that are final (``window // 2`` later rows, or the unit ended)."""
    smoothed = rolling_majority_codes(rows["raw"], units.bounds, window, MIXED_CODE + 1)
    to_end = units.bounds[units.of_row + 1] - np.arange(len(smoothed))
    final = (rows["smooth"] < 0) & (units.closed[units.of_row] | (to_end > window // 2))
    return np.where(final, smoothed, rows["smooth"]).astype(np.int8)


def _viterbi(
    state: State, rows: dict[str, np.ndarray], units: _Units, rules: Rules
) -> tuple[np.ndarray, np.ndarray]:
    """The Viterbi labels where every surviving path agrees, and the scores to keep."""
    transition = rules.log_transition
    assert transition is not None
    emission, back = rows["log_emission"], rows["back"]
    per_unit = np.bincount(units.of_row[rows["serial"] >= state.n_seen], minlength=len(units.user))
    first = units.bounds[1:] - per_unit
    fresh = ~units.continues
    score = state.per_user["score"][units.user]
    score[fresh] = emission[first[fresh]]
    score = viterbi_forward(emission, first + fresh, per_unit - fresh, transition, score, back)
    undecided = np.bincount(units.of_row[rows["smooth"] < 0], minlength=len(units.user))
    states = np.tile(np.arange(len(transition)), (len(units.user), 1))
    states[units.closed] = score[units.closed].argmax(axis=1)[:, None]
    chains = viterbi_backtrace(back, units.bounds[1:], undecided, states)
    decided = (rows["smooth"] < 0) & (chains == chains[:, :1]).all(axis=1)
    path = np.where(rows["rejected"], MIXED_CODE, chains[:, 0])
    saved = state.per_user["score"].copy()
    saved[units.user[~units.closed]] = score[~units.closed]
    return np.where(decided, path, rows["smooth"]).astype(np.int8), saved


@attrs.define
class _Head:
    """The pass's last merged segment (``rule`` buckets, what rule (v) compares),
    inside a joined segment of ``count`` buckets from ``first`` to ``last``."""

    label: int
    rule: int
    count: int
    first: int
    last: int
    growing: int  # its last run may still grow

    def absorb(self, count: int, last: int) -> None:
        self.rule, self.count, self.last = self.rule + count, self.count + count, last


class _Merged:
    """The hysteresis rule over one step's segments, as far as it is final (one pass of
    ``merge_runs`` from a long segment on; the batch kernel for a short start)."""

    def __init__(self, per_user: dict[str, np.ndarray], rules: Rules) -> None:
        for name in ("next_id", "head"):
            per_user[name] = per_user[name].copy()
        self.next_id, self.heads = per_user["next_id"], per_user["head"]
        self.m, self.join = rules.min_buckets, rules.join_equal
        self.finished: list[tuple[int, ...]] = []

    def run(
        self, ts: np.ndarray, smooth: np.ndarray, done: np.ndarray, units: _Units
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows whose merged segment is known, their labels and ids."""
        rows = np.flatnonzero((smooth >= 0) & ~done)
        unit_of = units.of_row[rows]
        inner = np.unique(np.searchsorted(unit_of, np.arange(len(units.user))))
        lo = run_starts(smooth[rows], np.append(inner[inner < len(rows)], len(rows)))
        hi = np.append(lo, len(rows))[1:]
        segments = np.stack([smooth[rows[lo]], hi - lo, ts[rows[lo]], ts[rows[hi - 1]]], axis=1)
        bounds = np.searchsorted(unit_of[lo], np.arange(len(units.user) + 1))
        # Most units only grow the last run of a growing head: at once, for all of them.
        head, first = self.heads[units.user], bounds[:-1]
        grows = units.continues & ~units.closed & (np.diff(bounds) == 1) & (head[:, 5] == 1)
        grows &= segments[np.minimum(first, len(lo) - 1), 0] == head[:, 0] if len(lo) else False
        g_user, g_segment = units.user[grows], first[grows]
        self.heads[g_user, 1:3] += segments[g_segment, 1:2]
        self.heads[g_user, 4] = segments[g_segment, 3]
        decided = [np.stack([g_segment, head[grows, 0], self.next_id[g_user]], axis=1)]
        for unit in np.flatnonzero(~grows).tolist():
            user, a, b = int(units.user[unit]), int(bounds[unit]), int(bounds[unit + 1])
            start = _Head(*self.heads[user].tolist()) if units.continues[unit] else None
            got = self._unit(user, start if start and start.count else None,
                             segments[a:b].tolist(), bool(units.closed[unit]))  # fmt: skip
            decided.append(np.array([(a + j, *pair) for j, pair in enumerate(got)]).reshape(-1, 3))
        segment, label, segment_id = np.concatenate(decided).astype(np.int64).T
        sizes = hi[segment] - lo[segment]
        emitted = np.repeat(lo[segment] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        return rows[emitted], np.repeat(label, sizes).astype(np.int8), np.repeat(segment_id, sizes)

    def _unit(
        self, user: int, head: _Head | None, segments: list[list[int]], closed: bool
    ) -> list[tuple[int, int]]:
        """Merge one unit's segments (label, count, first, last) after ``head``;
        the label and id of each segment decided."""
        n, i, out = len(segments), 0, []
        if head is not None and head.growing and n and segments[0][0] == head.label:
            head.absorb(segments[0][1], segments[0][3])  # its last run, grown
            out.append((head.label, int(self.next_id[user])))
            i = 1
        if head is None and n and segments[0][1] < self.m:
            i = self._short_start(user, np.array(segments), closed, out)
            if i == 0:
                return out  # the timeline still starts short: nothing is final
        while i < n:
            label, count, first, last = segments[i]
            if head is None or count >= self.m:
                head = self._start(user, head, label, count, first, last)
            elif i == n - 1 and not closed:
                break  # a short run still growing
            elif label == head.label or i == n - 1:  # (i), (iv)
                head.absorb(count, last)
            elif segments[i + 1][1] > head.rule:  # (v): pairs with the next one
                i += 1
                pair = count + segments[i][1]
                head = self._start(user, head, segments[i][0], pair, first, segments[i][3])
                out.append((head.label, int(self.next_id[user])))
            elif i + 1 < n - 1 or closed:  # (v): the previous one absorbs it
                head.absorb(count, last)
            else:
                break  # the next run may still outgrow the previous merged segment
            out.append((head.label, int(self.next_id[user])))
            i += 1
        if head is not None and n:
            head.growing = int(i == n and not closed)
        if closed and head is not None:
            self._finish(user, head)
            head = None
        self.heads[user] = attrs.astuple(head) if head else 0
        return out

    def _start(
        self, user: int, head: _Head | None, label: int, count: int, first: int, last: int
    ) -> _Head:
        """A merged segment of the pass begins: it joins ``head`` or follows it."""
        if head is not None and self.join and head.label == label:
            head.rule, head.count, head.last = count, head.count + count, last
            return head
        if head is not None:
            self._finish(user, head)
        return _Head(label, count, count, first, last, 0)

    def _finish(self, user: int, head: _Head) -> None:
        self.finished.append((user, head.first, head.last, head.label, head.count))
        self.next_id[user] += 1

    def _short_start(
        self, user: int, segments: np.ndarray, closed: bool, out: list[tuple[int, int]]
    ) -> int:
        """Merge a timeline that starts short up to its last pair of long neighbours;
        the first segment not merged (0 when nothing is final)."""
        labels, counts, first, last = segments.T
        long = counts >= self.m
        pairs = np.flatnonzero(long[1:] & long[:-1]) + 1
        end = len(labels) if closed else int(pairs[-1]) if len(pairs) else 0
        if end == 0:
            return 0
        merged_id, merged_labels = merge_segment_codes(
            labels[:end], counts[:end], np.array([0, end]), self.m, join_equal=self.join
        )
        base = int(self.next_id[user])
        out += zip(merged_labels[merged_id].tolist(), (base + merged_id).tolist())
        starts = np.flatnonzero(np.diff(merged_id, prepend=-1))
        ends = np.append(starts[1:], end) - 1
        totals = np.add.reduceat(counts[:end], starts)
        for row in zip(first[starts], last[ends], merged_labels, totals):
            self.finished.append((user, *map(int, row)))
        self.next_id[user] = base + len(merged_labels)
        return end
