"""The state of a stream and one step of it: which rows have become final.

:func:`advance` takes the state of every open timeline and new rows, runs
the time stages' rules on what is not yet final and returns the rows and
segments that no later row can change, with the new state. It is a pure
function: the caller commits the new state only when the step succeeds.

Why a row is final (docs/streaming.md has the proofs):

* the per-row stages (encode … reject, taxonomy) are final at once;
* a rolling-majority label is final once ``window // 2`` later rows of its
  timeline exist; the state keeps the raw labels of the ``window // 2``
  rows before the first label not yet final;
* a Viterbi label is final once the back-pointer chains of every state at
  the last row pass through one state at that row; the state keeps the
  scores of the last row and the back-pointers of the rows not yet final;
* hysteresis: from a long segment on, the rule is one left-to-right pass,
  and a short segment's fate is known once its next neighbour is complete
  or already larger than the previous merged segment; a timeline that
  starts short is merged up to its first pair of long neighbours, where
  the rule splits in two. The state keeps the open merged segment.
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

N_CODES = MIXED_CODE + 1
"""Label codes: the eight classes, then ``Mixed/Unknown``."""


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
    def half(self) -> int:
        """Rows of context on each side of a rolling-majority window."""
        return 0 if self.window is None else self.window // 2


@attrs.frozen
class State:
    """Everything a stream remembers, as arrays (never changed in place).

    Per known user (index ``u``): ``last_ns`` (latest bucket seen),
    ``is_open`` (an open timeline), ``next_id`` (next segment id),
    ``context`` (rolling majority: raw codes of the rows before the first
    label not yet final, right-aligned, ``context_len`` of them),
    ``score`` (Viterbi scores of the last row) and the open merged
    segment (``head_*``: label; ``rule``, the buckets of the rule's last
    merged segment; ``count``, ``first``, ``last`` of the joined segment
    holding it, whose id is ``next_id``; ``growing``, whether its last run
    may still grow; a count of 0 means none).

    Per pending row (arrival order): ``frame`` (the per-row stages'
    output), ``user``, ``ts``, ``serial`` (arrival number), ``raw``,
    ``rejected``, ``smooth`` (-1 while not final) and ``back`` (Viterbi
    back-pointers).
    """

    users: pd.Index
    last_ns: np.ndarray
    is_open: np.ndarray
    next_id: np.ndarray
    context: np.ndarray
    context_len: np.ndarray
    score: np.ndarray
    head_label: np.ndarray
    head_rule: np.ndarray
    head_count: np.ndarray
    head_first: np.ndarray
    head_last: np.ndarray
    head_growing: np.ndarray
    frame: pd.DataFrame | None
    user: np.ndarray
    ts: np.ndarray
    serial: np.ndarray
    raw: np.ndarray
    rejected: np.ndarray
    smooth: np.ndarray
    back: np.ndarray
    n_seen: int

    PER_USER = (
        "last_ns",
        "is_open",
        "next_id",
        "context",
        "context_len",
        "score",
        "head_label",
        "head_rule",
        "head_count",
        "head_first",
        "head_last",
        "head_growing",
    )
    PER_ROW = ("user", "ts", "serial", "raw", "rejected", "smooth", "back")

    @classmethod
    def empty(cls, rules: Rules) -> State:
        """The state of a stream that has seen nothing."""
        k = N_CODES - 1 if rules.log_transition is not None else 0
        return cls(
            users=pd.Index([], dtype=object),
            last_ns=np.zeros(0, np.int64),
            is_open=np.zeros(0, bool),
            next_id=np.zeros(0, np.int64),
            context=np.zeros((0, rules.half), np.int8),
            context_len=np.zeros(0, np.int64),
            score=np.zeros((0, k)),
            head_label=np.zeros(0, np.int8),
            head_rule=np.zeros(0, np.int64),
            head_count=np.zeros(0, np.int64),
            head_first=np.zeros(0, np.int64),
            head_last=np.zeros(0, np.int64),
            head_growing=np.zeros(0, bool),
            frame=None,
            user=np.zeros(0, np.int64),
            ts=np.zeros(0, np.int64),
            serial=np.zeros(0, np.int64),
            raw=np.zeros(0, np.int8),
            rejected=np.zeros(0, bool),
            smooth=np.zeros(0, np.int8),
            back=np.zeros((0, k), np.int8),
            n_seen=0,
        )

    def with_users(self, users: pd.Index) -> State:
        """The state with ``users`` (a superset, known ones first) tracked."""
        extra = len(users) - len(self.users)
        if extra == 0:
            return self
        grown: dict[str, Any] = {
            name: np.concatenate(
                [getattr(self, name), np.zeros((extra, *getattr(self, name).shape[1:]), dtype)]
            )
            for name in self.PER_USER
            for dtype in [getattr(self, name).dtype]
        }
        return attrs.evolve(self, users=users, **grown)


@attrs.frozen
class Rows:
    """New rows, with the per-row stages' output (all arrays aligned with ``frame``)."""

    frame: pd.DataFrame
    user: np.ndarray
    ts: np.ndarray
    serial: np.ndarray
    raw: np.ndarray
    rejected: np.ndarray
    log_emission: np.ndarray | None


@attrs.frozen
class Step:
    """What one call of :func:`advance` finalized, and the state after it.

    ``rows`` are positions into ``frame`` (pending then new rows, arrival
    order) in user-then-time order, with their ``smooth``, ``label`` and
    ``segment_id``; ``segments`` are tuples ``(user, first_ns, last_ns,
    label, count)`` in user-then-time order.
    """

    state: State
    frame: pd.DataFrame | None
    rows: np.ndarray
    serial: np.ndarray
    smooth: np.ndarray
    label: np.ndarray
    segment_id: np.ndarray
    segments: tuple[np.ndarray, ...]


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Positions where a run of equal ``keys`` starts."""
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))


def _bounds(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Start of each group ``0 … n_groups - 1`` in sorted ``group``, then its length."""
    return np.searchsorted(group, np.arange(n_groups + 1)).astype(np.int64)


def _close_empty(state: State, users: np.ndarray, rules: Rules) -> tuple[State, tuple]:
    """Close the open timelines of ``users`` that have no pending row.

    All their rows are emitted; what remains is the open merged segment,
    which becomes final.
    """
    if len(users) == 0:
        return state, _no_segments()
    count = state.head_count[users]
    segments = (
        users,
        state.head_first[users],
        state.head_last[users],
        state.head_label[users].astype(np.int64),
        count,
    )
    next_id = state.next_id.copy()
    next_id[users] += count > 0
    is_open = state.is_open.copy()
    is_open[users] = False
    head_count = state.head_count.copy()
    head_count[users] = 0
    context_len = state.context_len.copy()
    context_len[users] = 0
    state = attrs.evolve(
        state, next_id=next_id, is_open=is_open, head_count=head_count, context_len=context_len
    )
    return state, segments


def _no_segments() -> tuple[np.ndarray, ...]:
    empty = np.zeros(0, np.int64)
    return (empty, empty, empty, empty, empty)


def _concat_segments(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(5))


def advance(state: State, new: Rows | None, closing: np.ndarray, rules: Rules) -> Step:
    """Add ``new`` rows, close the timelines of the users in ``closing`` after them.

    Parameters
    ----------
    state : State
        Tracks every user of ``new`` already.
    new : Rows or None
        Rows, each user's in time order and after the user's ``last_ns``
        (checked by the caller).
    closing : ndarray of bool, shape (n_users,)
        Users whose timeline ends after these rows.
    rules : Rules
        The pipeline's time stages.

    Returns
    -------
    Step
    """
    n_users = len(state.users)
    # Open timelines without a pending row that end now: before the new
    # rows when the user's first new row starts a timeline, or at the end.
    pending_users = np.zeros(n_users, bool)
    pending_users[state.user] = True
    breaks = np.zeros(n_users, bool)
    if new is not None and len(new.user):
        first = np.unique(new.user, return_index=True)[1]
        u_first = new.user[first]
        breaks[u_first] = new.ts[first] - state.last_ns[u_first] > rules.gap_ns
        has_new = np.zeros(n_users, bool)
        has_new[new.user] = True
    else:
        has_new = np.zeros(n_users, bool)
    empty_close = state.is_open & ~pending_users & (breaks | (closing & ~has_new))
    state, closed_segments = _close_empty(state, np.flatnonzero(empty_close), rules)

    rows = _combine(state, new)
    order = np.lexsort((rows["ts"], rows["user"]))
    user, ts = rows["user"][order], rows["ts"][order]
    smooth = rows["smooth"][order]
    n = len(order)

    # Units: the timelines of this step (a user's rows split at gaps).
    new_user = np.ones(n, bool)
    new_user[1:] = user[1:] != user[:-1]
    unit_break = new_user.copy()
    unit_break[1:] |= (ts[1:] - ts[:-1]) > rules.gap_ns
    unit = np.cumsum(unit_break) - 1
    unit_start = np.flatnonzero(unit_break)
    n_units = len(unit_start)
    unit_user = user[unit_start]
    continues = new_user[unit_start] & state.is_open[unit_user]
    last_of_user = np.ones(n_units, bool)
    last_of_user[:-1] = unit_user[1:] != unit_user[:-1]
    closed = ~last_of_user | closing[unit_user]
    units = _Units(unit, unit_start, unit_user, continues, closed, n)

    if rules.window is not None:
        smooth, context = _majority(state, rows["raw"][order], smooth, units, rules)
        score, back = state.score, rows["back"]
    else:
        smooth, score, back = _viterbi(state, rows, order, smooth, units, rules)
        context = (state.context, state.context_len)

    merged = _merge(state, ts, smooth, units, rules)
    emitted = merged.emitted
    sorted_rows = order[emitted]
    keep = np.ones(n, bool)
    keep[sorted_rows] = False
    kept = np.flatnonzero(keep)
    smooth_arrival = np.empty(n, np.int8)
    smooth_arrival[order] = smooth

    open_last = unit_user[last_of_user & ~closed]
    closed_last = unit_user[last_of_user & closed]
    is_open = state.is_open.copy()
    is_open[open_last] = True
    is_open[closed_last] = False
    last_ns = state.last_ns.copy()
    if new is not None and len(new.user):
        np.maximum.at(last_ns, new.user, new.ts)
    context_arr, context_len = context
    context_len = context_len.copy()
    context_len[closed_last] = 0
    new_state = attrs.evolve(
        state,
        last_ns=last_ns,
        is_open=is_open,
        context=context_arr,
        context_len=context_len,
        score=score,
        **merged.heads,
        frame=None if rows["frame"] is None else rows["frame"].iloc[kept].reset_index(drop=True),
        user=rows["user"][kept],
        ts=rows["ts"][kept],
        serial=rows["serial"][kept],
        raw=rows["raw"][kept],
        rejected=rows["rejected"][kept],
        smooth=smooth_arrival[kept],
        back=back[kept],
        n_seen=state.n_seen if new is None else state.n_seen + len(new.user),
    )
    return Step(
        state=new_state,
        frame=rows["frame"],
        rows=sorted_rows,
        serial=rows["serial"][sorted_rows],
        smooth=smooth[emitted],
        label=merged.label,
        segment_id=merged.segment_id,
        segments=_concat_segments([closed_segments, merged.segments]),
    )


def _combine(state: State, new: Rows | None) -> dict[str, Any]:
    """Pending rows then new rows, arrival order."""
    out: dict[str, Any] = {name: getattr(state, name) for name in State.PER_ROW}
    out["frame"] = state.frame
    if new is None or len(new.user) == 0:
        return out
    k = state.back.shape[1]
    extra = {
        "user": new.user,
        "ts": new.ts,
        "serial": new.serial,
        "raw": new.raw,
        "rejected": new.rejected,
        "smooth": np.full(len(new.user), -1, np.int8),
        "back": np.zeros((len(new.user), k), np.int8),
    }
    for name, values in extra.items():
        out[name] = np.concatenate([out[name], values])
    out["frame"] = (
        new.frame
        if state.frame is None or len(state.frame) == 0
        else pd.concat([state.frame, new.frame], ignore_index=True)
    )
    out["log_emission"] = new.log_emission
    out["n_pending"] = len(state.user)
    return out


@attrs.frozen
class _Units:
    """The timelines of one step over the sorted rows."""

    of_row: np.ndarray  # unit of each sorted row
    start: np.ndarray  # first sorted row of each unit
    user: np.ndarray
    continues: np.ndarray  # carries on the user's open timeline (and its state)
    closed: np.ndarray  # ends in this step
    n_rows: int

    @property
    def bounds(self) -> np.ndarray:
        return np.append(self.start, self.n_rows)


def _majority(
    state: State, raw: np.ndarray, smooth: np.ndarray, units: _Units, rules: Rules
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Final rolling-majority labels of the rows that can have one now.

    The rows without a final label (a suffix of each unit) are smoothed
    with the raw labels of the ``half`` rows before them as context.
    """
    half = rules.half
    todo = np.flatnonzero(smooth < 0)
    todo_unit = units.of_row[todo]
    # Context entries of the continuing units, placed before their rows.
    ctx_units = np.flatnonzero(units.continues)
    ctx_len = state.context_len[units.user[ctx_units]]
    ctx_unit = np.repeat(ctx_units, ctx_len)
    within = np.arange(len(ctx_unit)) - np.repeat(np.cumsum(ctx_len) - ctx_len, ctx_len)
    ctx_codes = state.context[
        np.repeat(units.user[ctx_units], ctx_len), within + np.repeat(half - ctx_len, ctx_len)
    ]
    ext_unit = np.concatenate([ctx_unit, todo_unit])
    ext_codes = np.concatenate([ctx_codes, raw[todo]]).astype(np.int8)
    ext_row = np.concatenate([np.full(len(ctx_unit), -1), todo])
    ext_order = np.lexsort((np.concatenate([within - half, todo]), ext_unit))
    ext_unit, ext_codes, ext_row = ext_unit[ext_order], ext_codes[ext_order], ext_row[ext_order]
    n_units = len(units.start)
    bounds = _bounds(ext_unit, n_units)
    assert rules.window is not None
    smoothed = rolling_majority_codes(ext_codes, bounds, rules.window, N_CODES)
    position = np.arange(len(ext_unit)) - bounds[ext_unit]
    length = np.diff(bounds)[ext_unit]
    final = (ext_row >= 0) & (units.closed[ext_unit] | (position + half < length))
    smooth = smooth.copy()
    smooth[ext_row[final]] = smoothed[final]

    # New context: the raw codes of the `half` entries before the first
    # entry not final (the not-final entries end each unit), for every
    # unit that stays open.
    context, context_len = state.context.copy(), state.context_len.copy()
    open_units = np.flatnonzero(~units.closed)
    if half and len(open_units):
        not_final = np.bincount(ext_unit[(ext_row >= 0) & ~final], minlength=n_units)
        first_open = (bounds[1:] - not_final)[open_units]
        take = first_open[:, None] - half + np.arange(half)
        valid = take >= bounds[open_units][:, None]
        values = np.where(valid, ext_codes[np.maximum(take, 0) % max(len(ext_codes), 1)], 0)
        user = units.user[open_units]
        context[user] = values.astype(np.int8)
        context_len[user] = valid.sum(axis=1)
    return smooth, (context, context_len)


def _viterbi(
    state: State,
    rows: dict[str, Any],
    order: np.ndarray,
    smooth: np.ndarray,
    units: _Units,
    rules: Rules,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Viterbi labels of the rows whose every surviving path agrees.

    The forward pass runs over the new rows only, from each continuing
    unit's saved scores, with the operations of
    :func:`taskclf.stages.viterbi.viterbi_codes` (so the scores are the
    batch's, bit for bit). Then the back-pointer chains of all states at
    each unit's last row are followed back over the rows not yet final:
    where they have met, the label is final (a closed unit follows only
    the chain of its best last state, as the batch does).
    """
    transition = rules.log_transition
    assert transition is not None
    n_units = len(units.start)
    n_pending = len(state.user)
    back = rows["back"][order].copy()
    score = state.score[units.user].copy()
    is_new = order >= n_pending
    new_rows = np.flatnonzero(is_new)
    if len(new_rows):
        emission = rows["log_emission"][order[new_rows] - n_pending]
        per_unit = np.bincount(units.of_row[new_rows], minlength=n_units)
        first = units.bounds[1:] - per_unit  # new rows end each unit
        offset = np.zeros(len(is_new), np.int64)
        offset[new_rows] = np.arange(len(new_rows))
        for j in range(int(per_unit.max())):
            active = np.flatnonzero(per_unit > j)
            at = first[active] + j
            e = emission[offset[at]]
            fresh = (j == 0) & ~units.continues[active]
            score[active[fresh]] = e[fresh]
            go = ~fresh
            a, at, e = active[go], at[go], e[go]
            candidates = score[a][:, :, None] + transition
            back[at] = candidates.argmax(axis=1)
            score[a] = candidates.max(axis=1)
            score[a] += e

    undecided = np.flatnonzero(smooth < 0)
    count = np.bincount(units.of_row[undecided], minlength=n_units)
    end = units.bounds[1:]
    k = transition.shape[0]
    chains = np.tile(np.arange(k, dtype=np.int8), (n_units, 1))
    best = score.argmax(axis=1).astype(np.int8)
    chains[units.closed] = best[units.closed, None]
    decided = np.zeros(len(smooth), bool)
    path = np.zeros(len(smooth), np.int8)
    for s in range(int(count.max()) if len(count) else 0):
        active = np.flatnonzero(count > s)
        at = end[active] - 1 - s
        states = chains[active]
        path[at] = states[:, 0]
        decided[at] = (states == states[:, :1]).all(axis=1)
        chains[active] = np.take_along_axis(back[at], states.astype(np.intp), axis=1)
    smooth = smooth.copy()
    rejected = rows["rejected"][order]
    smooth[decided] = np.where(rejected[decided], MIXED_CODE, path[decided])

    saved = state.score.copy()
    open_units = np.flatnonzero(~units.closed)
    saved[units.user[open_units]] = score[open_units]
    back_arrival = np.empty_like(back)
    back_arrival[order] = back
    return smooth, saved, back_arrival


@attrs.frozen
class _Merged:
    emitted: np.ndarray  # sorted-row positions, user-then-time order
    label: np.ndarray
    segment_id: np.ndarray
    segments: tuple[np.ndarray, ...]
    heads: dict[str, Any]  # next_id and head_* of every user


def _ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All positions ``lo[i] … hi[i] - 1``, and the ``i`` of each."""
    n = hi - lo
    owner = np.repeat(np.arange(len(lo)), n)
    return np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n), owner


@attrs.define
class _Open:
    """The hysteresis rule's last merged segment and the (joined) segment holding it."""

    label: int
    rule: int  # buckets of the rule's last merged segment: what rule (v) compares
    count: int  # buckets of the joined segment
    first: int
    last: int
    growing: bool  # its last run may still grow


class _Merger:
    """The hysteresis rule over one step's segments, unit by unit.

    A block of segments that begins with a long one is merged by one
    left-to-right pass of :func:`taskclf.stages.merge.merge_runs` (every
    segment the pass emits is long, so the next pass changes nothing):
    a short segment joins the previous merged segment when it has its
    label, else the next segment when that one has more buckets than the
    previous merged segment, else the previous one. Each short segment's
    fate is therefore known once the next segment is complete or already
    larger. A timeline whose first segment is short is merged as a block
    up to the first pair of neighbouring long segments (the rule splits
    there), after which the pass above goes on.
    """

    def __init__(self, state: State, segs: dict[str, list], rules: Rules) -> None:
        self.segs = segs
        self.m = rules.min_buckets
        self.join = rules.join_equal
        self.heads: dict[str, Any] = {
            name: getattr(state, name).copy()
            for name in ("next_id", *(n for n in State.PER_USER if n.startswith("head_")))
        }
        self.assigned: list[tuple[int, int, int]] = []  # segment, label, id
        self.segments: list[tuple[int, int, int, int, int]] = []

    def head(self, user: int) -> _Open | None:
        h = self.heads
        if h["head_count"][user] == 0:
            return None
        return _Open(
            int(h["head_label"][user]),
            int(h["head_rule"][user]),
            int(h["head_count"][user]),
            int(h["head_first"][user]),
            int(h["head_last"][user]),
            bool(h["head_growing"][user]),
        )

    def keep(self, user: int, head: _Open | None) -> None:
        h = self.heads
        if head is None:
            h["head_count"][user] = 0
            return
        h["head_label"][user], h["head_rule"][user] = head.label, head.rule
        h["head_count"][user], h["head_growing"][user] = head.count, head.growing
        h["head_first"][user], h["head_last"][user] = head.first, head.last

    def finish(self, user: int, head: _Open) -> None:
        self.segments.append((user, head.first, head.last, head.label, head.count))
        self.heads["next_id"][user] += 1

    def open_rule_segment(
        self, user: int, head: _Open | None, label: int, count: int, first: int, last: int
    ) -> _Open:
        if head is not None and self.join and head.label == label:
            head.rule, head.count, head.last = count, head.count + count, last
            return head
        if head is not None:
            self.finish(user, head)
        return _Open(label, count, count, first, last, False)

    def absorb(self, head: _Open, i: int) -> None:
        head.rule += self.segs["count"][i]
        head.count += self.segs["count"][i]
        head.last = self.segs["last"][i]

    def unit(self, user: int, lo: int, hi: int, head: _Open | None, closed: bool) -> None:
        """Merge segments ``lo … hi - 1`` of one unit after ``head``."""
        label, count, first = self.segs["label"], self.segs["count"], self.segs["first"]
        nid = lambda: int(self.heads["next_id"][user])  # noqa: E731
        i = lo
        if head is not None and head.growing and i < hi:
            head.growing = label[i] == head.label
            if head.growing:  # the same run, grown
                self.absorb(head, i)
                self.assigned.append((i, head.label, nid()))
                head.growing = i == hi - 1 and not closed
                i += 1
        elif head is None and i < hi and count[i] < self.m:
            i = self.short_start(user, lo, hi, closed)
            if i < 0:
                return
        if head is None and i < hi:
            last = self.segs["last"][i]
            head = self.open_rule_segment(user, None, label[i], count[i], first[i], last)
            self.assigned.append((i, head.label, nid()))
            head.growing = i == hi - 1 and not closed
            i += 1
        while head is not None and i < hi:
            c, last_seg = count[i], i == hi - 1
            if c >= self.m:
                head = self.open_rule_segment(
                    user, head, label[i], c, first[i], self.segs["last"][i]
                )
            elif label[i] == head.label or (last_seg and closed):  # (i), (iv)
                self.absorb(head, i)
            elif last_seg:
                break  # a short run still growing
            elif count[i + 1] > head.rule:  # (v), the next one: pair it with this one
                j = i + 1
                head = self.open_rule_segment(
                    user, head, label[j], c + count[j], first[i], self.segs["last"][j]
                )
                self.assigned.append((i, head.label, nid()))
                i = j
            elif closed or i + 1 < hi - 1:  # (v), the previous one
                self.absorb(head, i)
            else:
                break  # the next run may still outgrow the previous segment
            self.assigned.append((i, head.label, nid()))
            head.growing = i == hi - 1 and not closed
            i += 1
        if closed:
            if head is not None:
                self.finish(user, head)
            head = None
        self.keep(user, head)

    def short_start(self, user: int, lo: int, hi: int, closed: bool) -> int:
        """Merge a block that starts short, up to the last pair of long neighbours.

        Returns where the rest starts, or -1 when nothing is final.
        """
        count = np.asarray(self.segs["count"][lo:hi])
        long = count >= self.m
        pairs = np.flatnonzero(long[1:] & long[:-1]) + 1
        end = hi - lo if closed else (int(pairs[-1]) if len(pairs) else 0)
        if end == 0:
            return -1
        labels = np.asarray(self.segs["label"][lo : lo + end])
        merged_id, merged_labels = merge_segment_codes(
            labels, count[:end], np.array([0, end]), self.m, join_equal=self.join
        )
        base = int(self.heads["next_id"][user])
        for k in range(end):
            self.assigned.append(
                (lo + k, int(merged_labels[merged_id[k]]), base + int(merged_id[k]))
            )
        starts = _group_starts(merged_id)
        ends = np.append(starts[1:], end)
        for a, b in zip(starts.tolist(), ends.tolist()):
            first, last = self.segs["first"][lo + a], self.segs["last"][lo + b - 1]
            total = int(count[a:b].sum())
            self.segments.append((user, first, last, int(merged_labels[merged_id[a]]), total))
        self.heads["next_id"][user] = base + len(merged_labels)
        return lo + end


def _merge(
    state: State, ts: np.ndarray, smooth: np.ndarray, units: _Units, rules: Rules
) -> _Merged:
    """Segments of the final smoothed labels; the rows whose merged segment is known.

    The rows with a final smoothed label begin each unit; their runs are
    the unit's segments, after the open merged segment kept in the state
    (``head_*``). :class:`_Merger` applies the hysteresis rule as far as
    it is final.
    """
    n_units = len(units.start)
    b = np.flatnonzero(smooth >= 0)
    b_unit = units.of_row[b]
    b_bounds = _bounds(b_unit, n_units)
    inner = np.unique(b_bounds[:-1][b_bounds[:-1] < len(b)])
    lo = run_starts(smooth[b], np.append(inner, len(b)))
    hi = np.append(lo[1:], len(b))
    segs = {
        "label": smooth[b][lo].tolist(),
        "count": (hi - lo).tolist(),
        "first": ts[b[lo]].tolist() if len(b) else [],
        "last": ts[b[hi - 1]].tolist() if len(b) else [],
    }
    sb = _bounds(b_unit[lo], n_units)
    merger = _Merger(state, segs, rules)

    # Most units just grow their open segment by one run of its label.
    user = units.user
    label_at = smooth[b][lo][np.minimum(sb[:-1], max(len(lo) - 1, 0))] if len(lo) else 0
    grows = (
        units.continues
        & ~units.closed
        & (np.diff(sb) == 1)
        & (state.head_count[user] > 0)
        & state.head_growing[user]
        & (label_at == state.head_label[user])
    )
    g_user, g_seg = user[grows], sb[:-1][grows]
    heads = merger.heads
    for name in ("head_rule", "head_count"):
        heads[name][g_user] += hi[g_seg] - lo[g_seg]
    heads["head_last"][g_user] = ts[b[hi[g_seg] - 1]]
    fast = np.stack([g_seg, state.head_label[g_user], state.next_id[g_user]], axis=1)

    sb_list = sb.tolist()
    for unit in np.flatnonzero(~grows).tolist():
        u = int(user[unit])
        continues = bool(units.continues[unit])
        head = merger.head(u) if continues else None
        if not continues:
            merger.keep(u, None)
        merger.unit(u, sb_list[unit], sb_list[unit + 1], head, bool(units.closed[unit]))

    done = np.concatenate([fast, np.array(merger.assigned, dtype=np.int64).reshape(-1, 3)])
    rows, owner = _ranges(lo[done[:, 0]], hi[done[:, 0]])
    emitted = b[rows]
    by_row = np.argsort(emitted, kind="stable")
    found = np.array(merger.segments, dtype=np.int64).reshape(-1, 5)
    return _Merged(
        emitted=emitted[by_row],
        label=done[owner, 1][by_row].astype(np.int8),
        segment_id=done[owner, 2][by_row],
        segments=tuple(found[:, k] for k in range(5)),
        heads=merger.heads,
    )
