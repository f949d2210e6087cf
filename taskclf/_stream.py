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

    ``per_user``: ``last_ns``, ``next_id`` (id of the joined segment of ``head``),
    ``head``, the open merged segment (label, the count rule (v) compares, joined count,
    first and last bucket, whether its last run may still grow; zeros for none) and
    ``score`` (Viterbi). ``rows``, the pending rows (output of the per-row stages in
    ``frame``), with ``smooth`` -1 while not final and ``done`` once handed back (kept as
    context). An open timeline keeps its last rows, so a user has pending rows iff its
    timeline is open.
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
    emitted, label, segment_id, segments = _merge(per_user, rules, ts, smooth, rows["done"], units)

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
        segments=segments,
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


def _merge(
    per_user: dict[str, np.ndarray],
    rules: Rules,
    ts: np.ndarray,
    smooth: np.ndarray,
    done: np.ndarray,
    units: _Units,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The hysteresis rule as far as it is final: the rows it decides, their labels and ids,
    and the segments it finishes; sets ``per_user``'s ``head`` and ``next_id``.

    Each unit's runs, after its open merged segment (``head``), go through the batch kernel
    twice: as they are, and with the last run grown without end. After a long segment the
    rule is one pass, in which a run's fate depends on the next run's count only through a
    threshold, so what both give is final (docs/streaming.md); a timeline that starts short
    is final only up to its last pair of long neighbours.
    """
    head = per_user["head"] = per_user["head"].copy()
    next_id = per_user["next_id"] = per_user["next_id"].copy()
    rows = np.flatnonzero((smooth >= 0) & ~done)
    unit_of, n_units = units.of_row[rows], len(units.user)
    inner = np.unique(np.searchsorted(unit_of, np.arange(n_units)))
    lo = run_starts(smooth[rows], np.append(inner[inner < len(rows)], len(rows)))
    hi = np.append(lo, len(rows))[1:]
    bounds = np.searchsorted(unit_of[lo], np.arange(n_units + 1))
    runs = {"label": smooth[rows[lo]], "count": hi - lo, "first": ts[rows[lo]]}
    runs |= {"last": ts[rows[hi - 1]], "run": np.arange(len(lo)), "unit": unit_of[lo]}
    # Each open merged segment (label, rule, count, first, last, growing) leads its unit
    # and takes the unit's first run if that continues its last run.
    old = head[units.user]
    unit = np.flatnonzero(units.continues & (old[:, 2] > 0))
    first = np.append(runs["label"], -1)[bounds[unit]]
    takes = (old[unit, 5] == 1) & (bounds[unit + 1] > bounds[unit]) & (first == old[unit, 0])
    took = bounds[unit][takes]
    extra = np.zeros(len(unit), np.int64)
    extra[takes] = runs["count"][took]
    last = old[unit, 4]
    last[takes] = runs["last"][took]
    run = np.full(len(unit), -1)
    run[takes] = took
    heads = {"label": old[unit, 0], "count": old[unit, 2] + extra, "first": old[unit, 3]}
    heads |= {"last": last, "run": run, "unit": unit, "rule": old[unit, 1] + extra}
    runs["rule"] = runs["count"]
    keep = np.ones(len(lo), bool)
    keep[took] = False
    e = {name: np.concatenate([heads[name], values[keep]]) for name, values in runs.items()}
    e = {name: values[np.lexsort((e["run"], e["unit"]))] for name, values in e.items()}
    n, unit = len(e["run"]), e["unit"]
    at = np.arange(n)
    e_bounds = np.searchsorted(unit, np.arange(n_units + 1))
    sizes, is_open = np.diff(e_bounds), ~units.closed
    kernel_bounds = np.append(e_bounds[:-1][sizes > 0], n)
    grown = e["rule"].copy()
    grown[e_bounds[1:][is_open & (sizes > 0)] - 1] = 1 << 62
    group, labels = merge_segment_codes(e["label"], e["rule"], kernel_bounds, rules.min_buckets)
    if_grown = merge_segment_codes(e["label"], grown, kernel_bounds, rules.min_buckets)[0]
    unit_first = e_bounds[unit]
    agree = group - group[unit_first] == if_grown - if_grown[unit_first]
    final_end = e_bounds[1:].copy()
    np.minimum.at(final_end, unit[~agree], at[~agree])
    long = e["rule"] >= rules.min_buckets
    pairs = np.bincount(unit[1:][long[1:] & long[:-1] & (unit[1:] == unit[:-1])], minlength=n_units)
    waits = is_open & (sizes > 0) & ~np.append(long, True)[e_bounds[:-1]] & (pairs == 0)
    waits[heads["unit"]] = False
    final_end[waits] = e_bounds[:-1][waits]
    final = at < final_end[unit]

    label = labels[group]
    joins = rules.join_equal & (label == np.append(-1, label[:-1]))
    joined = np.cumsum((at == unit_first) | ((np.diff(group, prepend=-1) != 0) & ~joins)) - 1
    user = units.user[unit]
    user_first = np.maximum.accumulate(np.where(np.diff(user, prepend=-1) != 0, joined, 0))
    segment_id = next_id[user] + joined - user_first
    taken = final & (e["run"] >= 0)
    size = runs["count"][e["run"][taken]]
    start = lo[e["run"][taken]]
    emitted = np.repeat(start - np.cumsum(size) + size, size) + np.arange(size.sum())

    last_final = np.full(n_units, -1)
    np.maximum.at(last_final, unit[final], at[final])
    finished = final & (units.closed[unit] | (joined < joined[last_final[unit]]))
    f = {name: values[finished] for name, values in e.items()}
    starts = np.flatnonzero(np.diff(joined[finished], prepend=-1))
    ends = np.flatnonzero(np.diff(joined[finished], append=n))
    total = np.add.reduceat(f["count"], starts)
    segments = np.stack(
        [
            user[finished][starts],
            f["first"][starts],
            f["last"][ends],
            label[finished][starts],
            total,
        ],
        axis=1,
    )
    np.add.at(next_id, user[finished][starts], 1)

    last_of_user = np.append(units.user[1:] != units.user[:-1], True)
    head[units.user[last_of_user]] = 0
    open_at = np.flatnonzero(last_of_user & is_open & (last_final >= 0))
    end = last_final[open_at]
    j_start, g_start = np.searchsorted(joined, joined[end]), np.searchsorted(group, group[end])
    counts, rule = np.cumsum(e["count"]), np.cumsum(e["rule"])
    growing = np.where(bounds[1:] > bounds[:-1], final_end == e_bounds[1:], old[:, 5])
    new_head = [
        label[end],
        rule[end] - rule[g_start] + e["rule"][g_start],
        counts[end] - counts[j_start] + e["count"][j_start],
        e["first"][j_start],
        e["last"][end],
        growing[open_at],
    ]
    head[units.user[open_at]] = np.stack(new_head, axis=1)
    row_label = np.repeat(label[taken], size).astype(np.int8)
    return rows[emitted], row_label, np.repeat(segment_id[taken], size), segments
