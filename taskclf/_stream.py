"""One step of a stream: which rows and segments have become final.

:func:`advance` takes the state (the rows not yet handed back and a few
arrays per user) and new rows, runs the batch stages' kernels on them and
returns what no later row can change, with the new state; the caller
commits it. Why each row is final when it is: docs/streaming.md.
"""

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

N_CODES = MIXED_CODE + 1
"""Label codes: the eight classes, then ``Mixed/Unknown``."""

HEAD = ("head_label", "head_rule", "head_count", "head_first", "head_last", "head_growing")


@attrs.frozen
class Rules:
    """The time stages' parameters a stream follows."""

    window: int | None  # rolling majority; None with Viterbi
    log_transition: np.ndarray | None  # Viterbi; None with the rolling majority
    gap_ns: int
    min_buckets: int
    width_ns: int
    join_equal: bool

    @property
    def kept(self) -> int:
        """Rows an open timeline keeps after they are final: the majority's context, or 1."""
        return max(1, 2 * (self.window // 2)) if self.window is not None else 1


@attrs.frozen
class State:
    """Everything a stream remembers, as arrays (never changed in place).

    ``per_user`` (position ``u`` of ``users``): ``last_ns`` (latest bucket
    seen), ``next_id`` (id of the joined segment holding the open merged
    segment, or of the next one), ``score`` (Viterbi scores at the last
    row) and the open merged segment of the hysteresis pass (``head_*``:
    label; ``rule``, its buckets as the rule counts them; ``count``,
    ``first``, ``last`` of the joined segment; ``growing``, whether its
    last run may still grow; a count of 0 means none).

    ``rows``, the pending rows in arrival order with ``frame`` (their
    per-row stages' output): ``user``, ``ts``, ``serial`` (arrival
    number), ``raw``, ``rejected``, ``smooth`` (-1 while not final),
    ``done`` (handed back already, kept for context) and ``back`` (Viterbi
    back-pointers). An open timeline always keeps its last rows
    (:attr:`Rules.kept`), so a user has pending rows iff it is open.
    """

    users: pd.Index
    per_user: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    frame: pd.DataFrame | None
    n_seen: int

    @classmethod
    def empty(cls, rules: Rules) -> State:
        """The state of a stream that has seen nothing."""
        k = 0 if rules.log_transition is None else N_CODES - 1
        per_user: dict[str, Any] = {name: np.zeros(0, np.int64) for name in HEAD}
        per_user |= {"last_ns": np.zeros(0, np.int64), "next_id": np.zeros(0, np.int64)}
        per_user |= {"head_growing": np.zeros(0, bool), "score": np.zeros((0, k))}
        rows: dict[str, Any] = {name: np.zeros(0, np.int64) for name in ("user", "ts", "serial")}
        rows |= {"raw": np.zeros(0, np.int8), "smooth": np.zeros(0, np.int8)}
        rows |= {"rejected": np.zeros(0, bool), "done": np.zeros(0, bool)}
        rows["back"] = np.zeros((0, k), np.int8)
        return cls(pd.Index([], dtype=object), per_user, rows, None, 0)

    @property
    def is_open(self) -> np.ndarray:
        """Whether each user's timeline is open."""
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
    """What one call of :func:`advance` finalized, and the state after it.

    ``rows`` are positions into ``frame`` (pending then new rows) in
    user-then-time order, with their ``serial``, ``smooth``, ``label`` and
    ``segment_id``; ``segments`` are arrays ``(user, first_ns, last_ns,
    label, count)``.
    """

    state: State
    frame: pd.DataFrame | None
    rows: np.ndarray
    serial: np.ndarray
    smooth: np.ndarray
    label: np.ndarray
    segment_id: np.ndarray
    segments: tuple[np.ndarray, ...]


@attrs.frozen
class _Units:
    """The timelines of one step over the sorted rows."""

    of_row: np.ndarray  # unit of each sorted row
    bounds: np.ndarray  # first sorted row of each unit, then n
    user: np.ndarray
    continues: np.ndarray  # carries on the user's open timeline
    closed: np.ndarray  # ends in this step


def advance(
    state: State,
    new: dict[str, Any] | None,
    closing: np.ndarray,
    rules: Rules,
) -> Step:
    """Add ``new`` rows, then end the timelines of the users in ``closing``.

    ``new`` holds ``frame`` and the per-row arrays of :class:`State` but
    ``smooth``, ``done`` and ``back`` (plus ``log_emission`` with Viterbi),
    each user's rows in time order after its ``last_ns`` (the caller
    checks); ``closing`` is a mask over ``state.users``.
    """
    rows, frame = _combine(state, new)
    log_emission = rows.pop("log_emission", None)
    order = np.lexsort((rows["ts"], rows["user"]))
    user, ts = rows["user"][order], rows["ts"][order]
    n = len(order)
    first_of_user = np.ones(n, bool)
    first_of_user[1:] = user[1:] != user[:-1]
    starts = first_of_user.copy()
    starts[1:] |= ts[1:] - ts[:-1] > rules.gap_ns
    start = np.flatnonzero(starts)
    last_of_user = np.append(first_of_user[start[1:]], True)
    n_pending = len(state.rows["user"])
    units = _Units(
        of_row=np.cumsum(starts) - 1,
        bounds=np.append(start, n),
        user=user[start],
        continues=order[start] < n_pending,
        closed=~last_of_user | closing[user[start]],
    )
    sorted_rows = {name: values[order] for name, values in rows.items()}
    per_user = dict(state.per_user)
    if log_emission is not None:
        smooth, per_user["score"] = _viterbi(state, sorted_rows, log_emission[order], units, rules)
    else:
        smooth = _majority(sorted_rows, units, rules)
    merged = _Merged(per_user, rules)
    emitted, label, segment_id = merged.run(ts, smooth, sorted_rows["done"], units)

    per_user["last_ns"] = per_user["last_ns"].copy()
    np.maximum.at(per_user["last_ns"], user, ts)
    done = sorted_rows["done"].copy()
    done[emitted] = True
    position = np.arange(n) - units.bounds[units.of_row]
    length = np.diff(units.bounds)[units.of_row]
    keep = ~done | (~units.closed[units.of_row] & (position >= length - rules.kept))
    kept = order[keep]
    pending = {name: values[keep] for name, values in sorted_rows.items()}
    pending |= {"smooth": smooth[keep], "done": done[keep]}
    n_new = 0 if new is None else len(new["user"])
    new_state = State(
        users=state.users,
        per_user=per_user,
        rows=pending,
        frame=None if frame is None else frame.iloc[kept].reset_index(drop=True),
        n_seen=state.n_seen + n_new,
    )
    return Step(
        state=new_state,
        frame=frame,
        rows=order[emitted],
        serial=sorted_rows["serial"][emitted],
        smooth=smooth[emitted],
        label=label,
        segment_id=segment_id,
        segments=tuple(np.array(merged.finished, np.int64).reshape(-1, 5).T),
    )


def _combine(state: State, new: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
    """Pending rows then new rows, arrival order, and their frame."""
    k = state.rows["back"].shape[1]
    n_old, n_new = len(state.rows["user"]), 0 if new is None else len(new["user"])
    new = new or {}
    fresh = {"smooth": -1, "done": False, "back": 0, "log_emission": 0.0}
    old = {**state.rows, "log_emission": np.zeros((n_old, k))} if k else state.rows
    rows = {
        name: np.concatenate(
            [
                values,
                np.full((n_new, *values.shape[1:]), new.get(name, fresh.get(name)), values.dtype),
            ]
        )
        for name, values in old.items()
    }
    frames = [f for f in (state.frame, new.get("frame")) if f is not None and len(f)]
    return rows, pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[
        0
    ] if frames else None


def _majority(rows: dict[str, np.ndarray], units: _Units, rules: Rules) -> np.ndarray:
    """The smoothed labels that are final: ``window // 2`` later rows exist or the unit ended.

    A continuing unit starts with rows kept as context, so every row not
    yet final sees its whole window.
    """
    assert rules.window is not None
    smoothed = rolling_majority_codes(rows["raw"], units.bounds, rules.window, N_CODES)
    position = np.arange(len(smoothed)) - units.bounds[units.of_row]
    length = np.diff(units.bounds)[units.of_row]
    final = units.closed[units.of_row] | (position + rules.window // 2 < length)
    return np.where((rows["smooth"] < 0) & final, smoothed, rows["smooth"]).astype(np.int8)


def _viterbi(
    state: State,
    rows: dict[str, np.ndarray],
    log_emission: np.ndarray,
    units: _Units,
    rules: Rules,
) -> tuple[np.ndarray, np.ndarray]:
    """Viterbi labels of the rows where every surviving path agrees, and the scores to keep.

    The forward steps run over the new rows (the end of each unit) from
    the saved scores, or from the first row's emission in a new timeline;
    the back-pointer chains of every state at each unit's last row are
    followed over the rows not yet final (only the best state's in a
    closed unit, as batch does).
    """
    transition = rules.log_transition
    assert transition is not None
    new = rows["serial"] >= state.n_seen
    per_unit = np.bincount(units.of_row[new], minlength=len(units.user))
    first = units.bounds[1:] - per_unit
    fresh = ~units.continues
    score = state.per_user["score"][units.user]
    score[fresh] = log_emission[first[fresh]]
    back = rows["back"]
    score = viterbi_forward(log_emission, first + fresh, per_unit - fresh, transition, score, back)
    undecided = np.bincount(units.of_row[rows["smooth"] < 0], minlength=len(units.user))
    k = transition.shape[0]
    states = np.tile(np.arange(k), (len(units.user), 1))
    states[units.closed] = score[units.closed].argmax(axis=1)[:, None]
    chains = viterbi_backtrace(back, units.bounds[1:], undecided, states)
    decided = (rows["smooth"] < 0) & (chains == chains[:, :1]).all(axis=1)
    path = np.where(rows["rejected"], MIXED_CODE, chains[:, 0])
    smooth = np.where(decided, path, rows["smooth"]).astype(np.int8)
    saved = state.per_user["score"].copy()
    still_open = ~units.closed
    saved[units.user[still_open]] = score[still_open]
    return smooth, saved


@attrs.define
class _Head:
    """The pass's last merged segment, inside the joined segment ``id``."""

    label: int
    rule: int  # buckets of the pass's last merged segment: what rule (v) compares
    count: int  # buckets of the joined segment
    first: int
    last: int
    growing: bool  # its last run may still grow


class _Merged:
    """The hysteresis rule over one step's segments, as far as it is final.

    From a long segment on, the rule is one left-to-right pass of
    :func:`taskclf.stages.merge.merge_runs`; a timeline that starts short
    is merged by the batch kernel up to its last pair of long neighbours,
    where the rule splits in two (docs/streaming.md).
    """

    def __init__(self, per_user: dict[str, np.ndarray], rules: Rules) -> None:
        for name in ("next_id", *HEAD):
            per_user[name] = per_user[name].copy()
        self.per_user = per_user
        self.m = rules.min_buckets
        self.join = rules.join_equal
        self.finished: list[tuple[int, int, int, int, int]] = []

    def run(
        self, ts: np.ndarray, smooth: np.ndarray, done: np.ndarray, units: _Units
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows whose merged segment is known (sorted positions), their labels and ids."""
        rows = np.flatnonzero((smooth >= 0) & ~done)
        unit_of = units.of_row[rows]
        inner = np.unique(np.searchsorted(unit_of, np.arange(len(units.user))))
        lo = run_starts(smooth[rows], np.append(inner[inner < len(rows)], len(rows)))
        hi = np.append(lo, len(rows))[1:]
        labels, counts = smooth[rows[lo]].tolist(), (hi - lo).tolist()
        first, last = ts[rows[lo]].tolist(), ts[rows[hi - 1]].tolist()
        bounds = np.searchsorted(unit_of[lo], np.arange(len(units.user) + 1)).tolist()
        decided: list[tuple[int, int, int]] = []  # segment, label, id
        for unit, user in enumerate(units.user.tolist()):
            a, b = bounds[unit], bounds[unit + 1]
            segments = (labels[a:b], counts[a:b], first[a:b], last[a:b])
            head = self._head(user) if units.continues[unit] else None
            got = self._unit(user, head, segments, bool(units.closed[unit]))
            decided += [(a + j, label, id_) for j, (label, id_) in enumerate(got)]
        segment, label, segment_id = np.array(decided, np.int64).reshape(-1, 3).T
        sizes = hi[segment] - lo[segment]
        emitted = np.repeat(lo[segment] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        return rows[emitted], np.repeat(label, sizes).astype(np.int8), np.repeat(segment_id, sizes)

    def _head(self, user: int) -> _Head | None:
        values = [self.per_user[name][user] for name in HEAD]
        return _Head(*map(int, values[:5]), bool(values[5])) if values[2] else None

    def _unit(
        self, user: int, head: _Head | None, segments: tuple[list, ...], closed: bool
    ) -> list[tuple[int, int]]:
        """Merge one unit's segments after ``head``; the label and id of those decided."""
        labels, counts, first, last = segments
        n, i, out = len(labels), 0, []
        next_id = self.per_user["next_id"]
        if head is not None and head.growing and n and labels[0] == head.label:
            head.rule, head.count, head.last = (
                head.rule + counts[0],
                head.count + counts[0],
                last[0],
            )
            out.append((head.label, int(next_id[user])))
            i = 1
        if head is None and n and counts[0] < self.m:
            i = self._short_start(user, segments, closed, out)
            if i == 0:
                return out  # the timeline still starts short: nothing is final
        while i < n:
            growing = i == n - 1 and not closed
            if head is None or counts[i] >= self.m:
                head = self._start(user, head, labels[i], counts[i], counts[i], first[i], last[i])
            elif growing:
                break
            elif labels[i] == head.label or i == n - 1:  # (i), (iv)
                head.rule, head.count, head.last = (
                    head.rule + counts[i],
                    head.count + counts[i],
                    last[i],
                )
            elif counts[i + 1] > head.rule:  # (v): pairs with the next one
                c = counts[i] + counts[i + 1]
                head = self._start(user, head, labels[i + 1], c, c, first[i], last[i + 1])
                out.append((head.label, int(next_id[user])))
                i += 1
            elif i + 1 < n - 1 or closed:  # (v): the previous one absorbs it
                head.rule, head.count, head.last = (
                    head.rule + counts[i],
                    head.count + counts[i],
                    last[i],
                )
            else:
                break  # the next run may still outgrow the previous merged segment
            out.append((head.label, int(next_id[user])))
            i += 1
        if head is not None and n:
            head.growing = i == n and not closed
        if closed and head is not None:
            self._finish(user, head)
            head = None
        for name, value in zip(HEAD, attrs.astuple(head) if head else (0,) * 6):
            self.per_user[name][user] = value
        return out

    def _start(
        self,
        user: int,
        head: _Head | None,
        label: int,
        rule: int,
        count: int,
        first: int,
        last: int,
    ) -> _Head:
        """A merged segment of the pass begins: it joins ``head`` or follows it."""
        if head is not None and self.join and head.label == label:
            head.rule, head.count, head.last = rule, head.count + count, last
            return head
        if head is not None:
            self._finish(user, head)
        return _Head(label, rule, count, first, last, False)

    def _finish(self, user: int, head: _Head) -> None:
        self.finished.append((user, head.first, head.last, head.label, head.count))
        self.per_user["next_id"][user] += 1

    def _short_start(
        self, user: int, segments: tuple[list, ...], closed: bool, out: list[tuple[int, int]]
    ) -> int:
        """Merge a timeline that starts short up to its last pair of long neighbours.

        Returns the first segment not merged (0 when nothing is final).
        """
        labels, counts, first, last = (np.array(s, np.int64) for s in segments)
        long = counts >= self.m
        pairs = np.flatnonzero(long[1:] & long[:-1]) + 1
        end = len(labels) if closed else int(pairs[-1]) if len(pairs) else 0
        if end == 0:
            return 0
        merged_id, merged_labels = merge_segment_codes(
            labels[:end], counts[:end], np.array([0, end]), self.m, join_equal=self.join
        )
        base = int(self.per_user["next_id"][user])
        out += zip(merged_labels[merged_id].tolist(), (base + merged_id).tolist())
        starts = np.flatnonzero(np.diff(merged_id, prepend=-1))
        ends = np.append(starts[1:], end) - 1
        totals = np.add.reduceat(counts[:end], starts)
        for row in zip(first[starts], last[ends], merged_labels, totals):
            self.finished.append((user, *map(int, row)))
        self.per_user["next_id"][user] = base + len(merged_labels)
        return end
