"""Streaming inference: finalization delay, cost per row, memory.

Run: ``PYTHONPATH=. python benchmarks/bench_stream.py [delay_users] [cost_users] [days]``
(defaults 30, 10000, 30: modest sizes for a shared machine).

A pipeline is trained on synthetic users (:mod:`taskclf.synth`). Then:

1. Finalization delay. Other synthetic users are streamed live: one
   ``update`` per minute with that minute's rows of every user and
   ``now`` set to it (so timelines end five minutes into an idle gap).
   A row's delay is the minute at which it became final minus its own
   bucket, in buckets: median and 99th percentile, for the defaults
   (rolling majority, window 3, minimum block 180 s) and for Viterbi.
2. Cost per row. ``cost_users`` users, one row each per ``update`` (the
   model runs once per call, on every user's row), against
   ``pipeline.transform`` of the same rows at once.
3. Memory. The state's size per user after step 2, and the state of one
   user streamed for ``days`` working days, an hour per ``update``: its
   largest size along the way.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from taskclf import ViterbiSmoother, build_pipeline
from taskclf.stream import StreamingPipeline
from taskclf.synth import make_activity_frame


def train(seed: int = 0):
    frame = make_activity_frame(n_users=6, n_days=2, random_state=seed)
    pipeline = build_pipeline(num_boost_round=30, num_threads=1)
    return pipeline.fit(frame.drop(columns="label"), frame["label"])


def state_bytes(stream: StreamingPipeline) -> int:
    """Bytes of the state's arrays and pending rows."""
    state = stream._state
    total = sum(a.nbytes for a in (*state.per_user.values(), *state.rows.values()))
    total += int(state.users.memory_usage(deep=True))
    if state.frame is not None:
        total += int(state.frame.memory_usage(deep=True).sum())
    return total


def delays(pipeline, rows: pd.DataFrame) -> np.ndarray:
    """Minutes between each row's bucket and the update that made it final."""
    stream = StreamingPipeline(pipeline)
    found: list[np.ndarray] = []

    def record(result, now: pd.Timestamp) -> None:
        if len(result.final):
            waited = (now - result.final["bucket_start_ts"]).dt.total_seconds() / 60
            found.append(waited.to_numpy())

    for now, minute in rows.groupby("bucket_start_ts", sort=True):
        record(stream.update(minute, now=now), now)
    end = rows["bucket_start_ts"].max() + pd.Timedelta(minutes=6)
    record(stream.update(rows.iloc[:0], now=end), end)
    out = np.concatenate(found)
    assert len(out) == len(rows)
    return out


def report_delay(label: str, values: np.ndarray) -> None:
    print(
        f"{label:<34} median {np.median(values):5.1f}  p99 {np.percentile(values, 99):6.1f}"
        f"  max {values.max():6.0f} buckets"
    )


def cost(pipeline, n_users: int, minutes: int = 8) -> None:
    base = make_activity_frame(n_users=50, n_days=1, random_state=3).drop(columns="label")
    first = base.groupby("user_id", sort=False).head(minutes).copy()
    first["step"] = first.groupby("user_id").cumcount()
    copies = []
    for k in range(n_users // 50):
        part = first.copy()
        part["user_id"] = part["user_id"] + f"_{k}"
        copies.append(part)
    rows = pd.concat(copies, ignore_index=True)
    by_step = [g.drop(columns="step") for _, g in rows.groupby("step", sort=True)]
    rows = pd.concat(by_step, ignore_index=True)

    stream = StreamingPipeline(pipeline)
    times = []
    for chunk in by_step:
        started = time.perf_counter()
        stream.update(chunk)
        times.append(time.perf_counter() - started)
    steady = np.array(times[2:]) / len(by_step[0])
    started = time.perf_counter()
    pipeline.transform(rows)
    batch = (time.perf_counter() - started) / len(rows)
    print(
        f"update, {len(by_step[0]):,} users x 1 row: {np.median(steady) * 1e6:6.1f} us/row "
        f"(median of {len(steady)} calls); batch transform of the same {len(rows):,} rows: "
        f"{batch * 1e6:6.1f} us/row; ratio {np.median(steady) / batch:.2f}"
    )
    size = state_bytes(stream)
    print(
        f"state after {len(by_step)} minutes: {len(stream._state.rows['user']):,} pending rows, "
        f"{size / 1e6:.1f} MB, {size / len(stream._state.users):,.0f} bytes per user"
    )


def one_user(pipeline, days: int) -> None:
    rows = make_activity_frame(n_users=1, n_days=days, random_state=5).drop(columns="label")
    stream = StreamingPipeline(pipeline)
    largest = pending = 0
    hours = rows["bucket_start_ts"].dt.floor("h")
    for _, chunk in rows.groupby(hours, sort=True):
        stream.update(chunk)
        largest = max(largest, state_bytes(stream))
        pending = max(pending, len(stream._state.rows["user"]))
    print(
        f"one user, {days} days ({len(rows):,} rows, an hour per update): "
        f"largest state {largest / 1e3:.1f} kB, most pending rows {pending}"
    )


def main() -> None:
    delay_users = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    cost_users = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    days = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    started = time.perf_counter()
    pipeline = train()
    print(f"trained in {time.perf_counter() - started:.0f} s")

    live = make_activity_frame(n_users=delay_users, n_days=1, random_state=1)
    live = live.drop(columns="label")
    print(f"\nfinalization delay, {delay_users} users x 1 day ({len(live):,} rows):")
    report_delay("rolling majority (window 3, 180 s)", delays(pipeline, live))
    steps = [(n, ViterbiSmoother() if n == "smooth" else s) for n, s in pipeline.steps]
    viterbi = type(pipeline)(steps)
    report_delay("Viterbi (switch_prob 0.02, 180 s)", delays(viterbi, live))

    print("\ncost per row:")
    cost(pipeline, cost_users)
    print("\nmemory of one user:")
    one_user(pipeline, days)


if __name__ == "__main__":
    main()
