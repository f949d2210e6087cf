"""Streaming inference: the final rows and segments equal batch inference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskclf import build_pipeline, frame_to_segments, save_bundle
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InputError, ReaderError, SchemaMismatchError
from taskclf.stages.merge import merge_runs
from taskclf.stream import StreamingPipeline, run_stream
from taskclf.taxonomy import TaxonomyBucket, TaxonomyConfig

KEY = ["user_id", "bucket_start_ts"]
START = pd.Timestamp("2025-01-06 09:00", tz="UTC")


# --------------------------------------------------------------------------
# The lemma behind the hysteresis condition
# --------------------------------------------------------------------------


@st.composite
def runs(draw):
    labels = [draw(st.integers(0, 2))]
    for _ in range(draw(st.integers(0, 14))):
        labels.append(draw(st.sampled_from([v for v in range(3) if v != labels[-1]])))
    counts = draw(st.lists(st.integers(1, 6), min_size=len(labels), max_size=len(labels)))
    return labels, counts, draw(st.integers(1, 6))


@settings(max_examples=300, deadline=None)
@given(runs())
def test_hysteresis_splits_between_two_long_neighbours(case):
    labels, counts, m = case
    whole = merge_runs(labels, counts, m)
    for j in range(len(labels) - 1):
        if counts[j] >= m and counts[j + 1] >= m:
            left = merge_runs(labels[: j + 1], counts[: j + 1], m)
            right = merge_runs(labels[j + 1 :], counts[j + 1 :], m)
            firsts = left[0] + [f + j + 1 for f in right[0]]
            assert whole == (firsts, left[1] + right[1], left[2] + right[2])
            assert left[1][-1] != right[1][0]  # so the join of equal labels stops there too


# --------------------------------------------------------------------------
# Streams against batch
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(frame_v1):
    """Feature rows by true label, to build streams of any label sequence."""
    return {label: rows.drop(columns="label") for label, rows in frame_v1.groupby("label")}


def make_rows(pool, plan, seed: int) -> pd.DataFrame:
    """A frame of users, each a list of (label, steps in seconds) runs."""
    rng = np.random.default_rng(seed)
    parts = []
    for user, (labels, steps) in enumerate(plan):
        picked = [
            pool[CLASS_ORDER[k]].iloc[[rng.integers(len(pool[CLASS_ORDER[k]]))]] for k in labels
        ]
        rows = pd.concat(picked, ignore_index=True)
        rows["user_id"] = f"u{user}"
        rows["bucket_start_ts"] = START + pd.to_timedelta(np.cumsum(steps), unit="s")
        parts.append(rows)
    return pd.concat(parts, ignore_index=True).sort_values("bucket_start_ts", kind="stable")


@st.composite
def plans(draw):
    users = []
    for _ in range(draw(st.integers(1, 3))):
        runs_ = draw(
            st.lists(st.tuples(st.integers(0, 7), st.integers(1, 6)), min_size=1, max_size=10)
        )
        labels = [k for k, n in runs_ for _ in range(n)]
        steps = draw(
            st.lists(
                st.sampled_from([60, 60, 60, 60, 120, 300, 301, 900]),
                min_size=len(labels),
                max_size=len(labels),
            )
        )
        users.append((labels, steps))
    return users


PARAMS = st.fixed_dictionaries(
    {
        "smoother": st.sampled_from(["majority", "viterbi"]),
        "smooth_window": st.sampled_from([1, 2, 3, 5]),
        "min_block_seconds": st.sampled_from([0, 60, 120, 180, 300]),
        "reject_threshold": st.sampled_from([None, 0.4, 0.7]),
    }
)

TAXONOMY = TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug"])])


def stream_all(pipeline, rows, sizes, *, use_now=False, save_at=None, directory=None):
    """Stream ``rows`` in chunks of ``sizes``; the union of what became final."""
    stream = StreamingPipeline(pipeline)
    finals, segments = [], []
    at = 0
    for i, size in enumerate([*sizes, len(rows)]):
        chunk = rows.iloc[at : at + size]
        at += len(chunk)
        now = rows["bucket_start_ts"].iloc[at] if use_now and at < len(rows) else None
        result = stream.update(chunk, now=now)
        finals.append(result.final)
        segments += result.segments
        if i == save_at:
            stream.save(Path(directory) / "state.npz")
            stream = StreamingPipeline.load(Path(directory) / "state.npz", pipeline)
        if at == len(rows):
            break
    result = stream.close()
    finals.append(result.final)
    segments += result.segments
    return pd.concat(finals, ignore_index=True), segments


def assert_batch_equal(pipeline, rows, final, segments):
    batch = pipeline.transform(rows)
    expected = batch.sort_values(KEY).reset_index(drop=True)
    got = final.sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    width = pipeline.named_steps["merge"].bucket_seconds
    order = lambda s: (s.user_id, s.start_ts)  # noqa: E731
    assert sorted(segments, key=order) == sorted(
        frame_to_segments(batch, bucket_seconds=width), key=order
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    plan=plans(),
    params=PARAMS,
    sizes=st.lists(st.integers(1, 25), max_size=12),
    seed=st.integers(0, 1000),
    use_now=st.booleans(),
    save_at=st.none() | st.integers(0, 5),
    extra=st.sampled_from(["none", "taxonomy", "no_join", "viterbi_switchy"]),
)
@pytest.mark.slow
def test_final_rows_and_segments_equal_batch(
    booster_v1, encoders_v1, pool, plan, params, sizes, seed, use_now, save_at, extra
):
    pipeline = build_pipeline(
        booster_v1, encoders_v1, taxonomy=TAXONOMY if extra == "taxonomy" else None, **params
    )
    if extra == "no_join":
        pipeline.set_params(merge__join_equal=False)
    if extra == "viterbi_switchy" and params["smoother"] == "viterbi":
        pipeline.set_params(smooth__switch_prob=0.4)
    rows = make_rows(pool, plan, seed)
    with tempfile.TemporaryDirectory() as directory:
        final, segments = stream_all(
            pipeline, rows, sizes, use_now=use_now, save_at=save_at, directory=directory
        )
    assert_batch_equal(pipeline, rows, final, segments)


@pytest.mark.parametrize("smoother", ["majority", "viterbi"])
def test_one_row_at_a_time_over_two_users(booster_v1, encoders_v1, pool, smoother):
    labels = [1] * 6 + [3] + [1] * 3 + [5] * 2 + [6] * 6
    steps = [60] * 9 + [400] + [60] * 8
    rows = make_rows(pool, [(labels, steps), (labels[::-1], steps)], seed=5)
    pipeline = build_pipeline(booster_v1, encoders_v1, smoother=smoother, reject_threshold=0.5)
    final, segments = stream_all(pipeline, rows, [1] * len(rows))
    assert_batch_equal(pipeline, rows, final, segments)


def test_rows_are_final_soon_in_a_steady_task(booster_v1, encoders_v1, pool):
    # One long task: with window 3 each row is final one row later.
    rows = make_rows(pool, [([1] * 12, [60] * 12)], seed=0)
    stream = StreamingPipeline(build_pipeline(booster_v1, encoders_v1))
    done = [len(stream.update(rows.iloc[[i]]).final) for i in range(len(rows))]
    assert sum(done) == len(rows) - 1 and done[-1] == 1


def test_provisional_labels_are_those_of_batch_so_far(booster_v1, encoders_v1, pool):
    rows = make_rows(pool, [([1] * 5 + [3] * 2 + [1] * 4, [60] * 11)] * 2, seed=1)
    pipeline = build_pipeline(booster_v1, encoders_v1, min_block_seconds=180)
    stream = StreamingPipeline(pipeline)
    for end in (3, 6, 9, len(rows)):
        start = end - 3 if end != len(rows) else 9
        result = stream.update(rows.iloc[start:end])
        expected = pipeline.predict(rows.iloc[:end])[start:end]
        assert result.provisional["label"].tolist() == list(expected)
        assert result.provisional.index.equals(rows.index[start:end])


# --------------------------------------------------------------------------
# Bad input and state files
# --------------------------------------------------------------------------


@pytest.fixture
def stream(booster_v1, encoders_v1):
    return StreamingPipeline(build_pipeline(booster_v1, encoders_v1))


@pytest.fixture
def rows(pool):
    return make_rows(pool, [([1] * 6 + [4] * 6, [60] * 12)], seed=2)


def saved_bytes(stream, directory) -> bytes:
    stream.save(Path(directory) / "s.npz")
    return (Path(directory) / "s.npz").read_bytes()


@pytest.mark.parametrize("back", [0, 60])
def test_a_row_not_after_the_last_of_its_user_is_refused(stream, rows, tmp_path, back):
    stream.update(rows.iloc[:5])
    before = saved_bytes(stream, tmp_path)
    late = rows.iloc[[4]].copy()
    late["bucket_start_ts"] -= pd.Timedelta(seconds=back)
    refused(lambda: stream.update(late), InputError, "'u0'", "not after")
    assert saved_bytes(stream, tmp_path) == before


def test_rows_of_one_user_out_of_order_in_one_call_are_refused(stream, rows):
    refused(lambda: stream.update(rows.iloc[[1, 0]]), InputError, "'u0'", "09:01:00")


def test_rows_with_another_schema_are_refused(stream, rows, tmp_path):
    stream.update(rows.iloc[:3])
    before = saved_bytes(stream, tmp_path)
    refused(
        lambda: stream.update(rows.iloc[3:5].drop(columns="app_id")),
        SchemaMismatchError,
        "'u0'",
        "app_id",
    )
    other = rows.iloc[3:5].assign(schema_version="v2")
    refused(lambda: stream.update(other), SchemaMismatchError, "'u0'", "schema_version")
    assert saved_bytes(stream, tmp_path) == before


def test_a_row_joining_a_closed_timeline_is_refused(stream, rows):
    stream.update(rows.iloc[:3])
    assert len(stream.close("u0").final) == 3
    refused(lambda: stream.update(rows.iloc[3:4]), InputError, "'u0'", "closed")
    refused(lambda: stream.close("nobody"), InputError, "'nobody'")


def test_a_state_of_another_pipeline_is_refused(booster_v1, encoders_v1, stream, rows, tmp_path):
    stream.update(rows.iloc[:3])
    stream.save(tmp_path / "s.npz")
    other = build_pipeline(booster_v1, encoders_v1, smooth_window=5)
    refused(
        lambda: StreamingPipeline.load(tmp_path / "s.npz", other), ReaderError, "another pipeline"
    )
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a state")
    refused(
        lambda: StreamingPipeline.load(tmp_path / "bad.npz", stream.pipeline), ReaderError, "bad"
    )


def test_pipelines_that_cannot_stream_are_refused(booster_v1, encoders_v1):
    from taskclf.exceptions import InvalidParameterError

    as_given = build_pipeline(booster_v1, encoders_v1, timelines="as_given")
    refused(lambda: StreamingPipeline(as_given), InvalidParameterError, "as_given")
    mixed = build_pipeline(booster_v1, encoders_v1).set_params(merge__max_gap_seconds=600)
    refused(lambda: StreamingPipeline(mixed), InvalidParameterError, "max_gap_seconds")


# --------------------------------------------------------------------------
# JSON lines, in a real process
# --------------------------------------------------------------------------


def json_lines(rows: pd.DataFrame) -> list[str]:
    out = rows.assign(bucket_start_ts=rows["bucket_start_ts"].map(pd.Timestamp.isoformat))
    return [json.dumps(r) for r in out.to_dict(orient="records")]


def test_run_stream_writes_what_batch_gives(booster_v1, encoders_v1, pool):
    rows = make_rows(pool, [([1] * 6 + [4] * 2 + [1] * 5, [60] * 13)] * 2, seed=3)
    pipeline = build_pipeline(booster_v1, encoders_v1)
    out: list[str] = []
    assert run_stream(pipeline, json_lines(rows), out.append, provisional=True)
    records = [json.loads(line) for line in out]
    check_records(pipeline, rows, records)
    assert sum(r["kind"] == "provisional" for r in records) == len(rows)


def check_records(pipeline, rows, records):
    batch = pipeline.transform(rows).sort_values(KEY)
    final = pd.DataFrame([r for r in records if r["kind"] == "row"]).sort_values(KEY)
    assert final["label"].tolist() == batch["label"].tolist()
    assert final["segment_id"].tolist() == batch["segment_id"].tolist()
    np.testing.assert_allclose(final["confidence"], batch["confidence"])
    segments = [
        {k: v for k, v in r.items() if k != "kind"} for r in records if r["kind"] == "segment"
    ]
    expected = [s.to_dict() for s in frame_to_segments(batch)]
    key = lambda s: (s["user_id"], s["start_ts"])  # noqa: E731
    assert sorted(segments, key=key) == sorted(expected, key=key)


SCRIPT = """
import sys
from taskclf import load_bundle
from taskclf.stream import run_stream
def write(line):
    print(line, flush=True)
done = run_stream(load_bundle(sys.argv[1]), sys.stdin, write, state_path=sys.argv[2],
                  provisional=True)
print("done" if done else "stopped", flush=True)
"""


def start(bundle: Path, state: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(bundle), str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_batch_result(booster_v1, encoders_v1, pool, tmp_path):
    rows = make_rows(pool, [([1] * 5 + [4] * 2 + [6] * 5, [60] * 12)] * 2, seed=4)
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.4)
    save_bundle(pipeline, tmp_path / "model.taskclf")
    lines = json_lines(rows)
    half = len(lines) // 2

    first = start(tmp_path / "model.taskclf", tmp_path / "state.npz")
    assert first.stdin is not None and first.stdout is not None
    first.stdin.write("\n".join(lines[:half]) + "\n")
    first.stdin.flush()
    records, seen = [], 0
    while seen < half:  # every row read: one provisional line each
        record = json.loads(first.stdout.readline())
        records.append(record)
        seen += record["kind"] == "provisional"
    first.send_signal(signal.SIGTERM)
    tail = first.stdout.read()  # not communicate(): it skips what readline buffered
    first.stdin.close()
    assert first.wait(timeout=600) == 0
    assert tail.splitlines()[-1] == "stopped"
    records += [json.loads(line) for line in tail.splitlines()[:-1]]
    assert (tmp_path / "state.npz").exists()

    second = start(tmp_path / "model.taskclf", tmp_path / "state.npz")
    output, _ = second.communicate("\n".join(lines[half:]) + "\n", timeout=600)
    assert output.splitlines()[-1] == "done"
    records += [json.loads(line) for line in output.splitlines()[:-1]]
    check_records(pipeline, rows, records)
