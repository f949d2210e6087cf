"""Streaming inference: the final rows and segments equal batch inference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskclf import build_pipeline, frame_to_segments, save_bundle
from taskclf._columns import PROBA_COLUMNS
from taskclf.exceptions import InputError, InvalidParameterError, ReaderError, SchemaMismatchError
from taskclf.pipeline import TaskPipeline
from taskclf.stages.merge import HysteresisMerger, merge_runs
from taskclf.stages.reject import Rejector
from taskclf.stages.segment import Segmenter
from taskclf.stages.smooth import MajoritySmoother
from taskclf.stages.viterbi import ViterbiSmoother
from taskclf.stream import StreamingPipeline, run_stream
from taskclf.taxonomy import TaxonomyBucket, TaxonomyConfig, TaxonomyMapper

KEY = ["user_id", "bucket_start_ts"]
START = pd.Timestamp("2025-01-06 09:00", tz="UTC")
TAXONOMY = TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug"])])


@settings(max_examples=100)
@given(segments=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 6)), min_size=1, max_size=15),
       m=st.integers(1, 6))  # fmt: skip
def test_hysteresis_splits_between_two_long_neighbours(segments, m):
    labels = (np.cumsum([step for step, _ in segments]) % 3).tolist()  # neighbours differ
    counts = [count for _, count in segments]
    whole = merge_runs(labels, counts, m)
    for j in range(len(labels) - 1):
        if counts[j] >= m and counts[j + 1] >= m:
            left = merge_runs(labels[: j + 1], counts[: j + 1], m)
            right = merge_runs(labels[j + 1 :], counts[j + 1 :], m)
            firsts = left[0] + [f + j + 1 for f in right[0]]
            assert whole == (firsts, left[1] + right[1], left[2] + right[2])
            assert left[1][-1] != right[1][0]  # so the join of equal labels stops there too


def time_pipeline(window=3, switch_prob=None, min_block=180, threshold=None, join=True,
                  taxonomy=False):  # fmt: skip
    """The stages after the model, from calibrated probabilities on (Viterbi with a switch_prob)."""
    smooth = MajoritySmoother(window) if switch_prob is None else ViterbiSmoother(switch_prob)
    merge = HysteresisMerger(min_block, join_equal=join)
    steps = [("reject", Rejector(threshold)), ("smooth", smooth), ("segment", Segmenter())]
    taxonomy_step = [("taxonomy", TaxonomyMapper(TAXONOMY))] if taxonomy else []
    return TaskPipeline([*steps, ("merge", merge), *taxonomy_step])


def exactly(n, elements):
    return st.lists(elements, min_size=n, max_size=n)


@st.composite
def streams(draw):
    """Probability rows of 1-3 users: runs of a likely label, steps of 60 s … 900 s."""
    parts = []
    for user in range(draw(st.integers(1, 3))):
        runs_ = draw(
            st.lists(st.tuples(st.integers(0, 7), st.integers(1, 5)), min_size=1, max_size=8)
        )
        labels = [k for k, n in runs_ for _ in range(n)]
        steps = draw(exactly(len(labels), st.sampled_from([60] * 4 + [120, 300, 301, 900])))
        sure = np.array(draw(exactly(len(labels), st.sampled_from([0.3, 0.6, 0.9]))))
        proba = np.repeat(((1 - sure) / 7)[:, None], 8, axis=1)
        proba[np.arange(len(labels)), labels] = sure
        part = pd.DataFrame(proba, columns=list(PROBA_COLUMNS)).assign(user_id=f"u{user}")
        parts.append(part.assign(bucket_start_ts=START + pd.to_timedelta(np.cumsum(steps), "s")))
    rows = pd.concat(parts, ignore_index=True)
    return rows.sort_values("bucket_start_ts", kind="stable", ignore_index=True)


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
    return pd.concat([*finals, result.final], ignore_index=True), segments + result.segments


def assert_batch_equal(pipeline, rows, final, segments):
    batch = pipeline.transform(rows)
    expected = batch.sort_values(KEY).reset_index(drop=True)
    got = final.sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    order = lambda s: (s.user_id, s.start_ts)  # noqa: E731
    assert sorted(segments, key=order) == sorted(frame_to_segments(batch), key=order)


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=streams(),
    params=st.fixed_dictionaries({
        "window": st.sampled_from([1, 2, 3, 5]),
        "switch_prob": st.sampled_from([None, 0.02, 0.4]),  # None: rolling majority
        "min_block": st.sampled_from([0, 60, 120, 180, 300]),
        "threshold": st.sampled_from([None, 0.5]),
        "join": st.booleans(),
        "taxonomy": st.booleans(),
    }),
    sizes=st.lists(st.integers(1, 25), max_size=5),
    use_now=st.booleans(),
    save_at=st.none() | st.integers(0, 5),
)  # fmt: skip
def test_final_rows_and_segments_equal_batch(tmp_path_factory, rows, params, sizes, use_now,
                                             save_at):  # fmt: skip
    pipeline = time_pipeline(**params)
    directory = tmp_path_factory.mktemp("state")
    final, segments = stream_all(
        pipeline, rows, sizes, use_now=use_now, save_at=save_at, directory=directory
    )
    assert_batch_equal(pipeline, rows, final, segments)


@pytest.fixture(scope="module")
def features(frame_v1):
    """Two users, 8 minutes each, a gap of 400 s in the first user's rows."""
    rows = frame_v1[frame_v1["user_id"] != "user2"].drop(columns="label")
    rows = rows.groupby("user_id").head(8)
    rows.loc[rows.index[5:8], "bucket_start_ts"] += pd.Timedelta(seconds=400)
    return rows.sort_values("bucket_start_ts", kind="stable")


def test_the_whole_pipeline_one_row_at_a_time(booster_v1, encoders_v1, features):
    # Viterbi here; the rolling majority runs row by row in the SIGTERM test
    pipeline = build_pipeline(booster_v1, encoders_v1, smoother="viterbi", reject_threshold=0.5)
    final, segments = stream_all(pipeline, features, [1] * len(features))
    assert_batch_equal(pipeline, features, final, segments)


def test_rows_are_final_soon_in_a_steady_task():
    # One long task: with window 3 each row is final one row later, once long.
    rows = pd.DataFrame(np.tile([0.02, 0.86] + [0.02] * 6, (12, 1)), columns=list(PROBA_COLUMNS))
    rows = rows.assign(user_id="u", bucket_start_ts=pd.date_range(START, periods=12, freq="min"))
    stream = StreamingPipeline(time_pipeline())
    done = [len(stream.update(rows.iloc[[i]]).final) for i in range(len(rows))]
    assert done == [0, 0, 0, 3] + [1] * 8  # the first segment is short until its third row


def test_provisional_labels_are_those_of_batch_so_far(booster_v1, encoders_v1, features):
    pipeline = build_pipeline(booster_v1, encoders_v1, min_block_seconds=180)
    stream = StreamingPipeline(pipeline)
    for start, end in [(0, 5), (5, 12), (12, 16)]:
        result = stream.update(features.iloc[start:end])
        expected = pipeline.predict(features.iloc[:end])[start:end]
        assert result.provisional["label"].tolist() == list(expected)
        assert result.provisional.index.equals(features.index[start:end])


@pytest.fixture
def stream(booster_v1, encoders_v1):
    return StreamingPipeline(build_pipeline(booster_v1, encoders_v1))


@pytest.fixture
def rows(features):  # rows 0-4, then a gap of 400 s, then rows 5-7
    return features[features["user_id"] == "user0"]


def saved_bytes(stream, directory) -> bytes:
    stream.save(directory / "s.npz")
    return (directory / "s.npz").read_bytes()


def test_rows_out_of_order_or_of_another_schema_are_refused(stream, rows, tmp_path):
    refused(lambda: stream.update(rows.iloc[[1, 0]]), InputError, "'user0'", "09:01:00")
    stream.update(rows.iloc[:5])
    before = saved_bytes(stream, tmp_path)
    for back in (0, 60):
        late = rows.iloc[[4]].copy()
        late["bucket_start_ts"] -= pd.Timedelta(seconds=back)
        refused(lambda: stream.update(late), InputError, "'user0'", "not after")  # noqa: B023
    lacking = rows.iloc[5:7].drop(columns="app_id")
    refused(lambda: stream.update(lacking), SchemaMismatchError, "'user0'", "app_id")
    other = rows.iloc[5:7].assign(schema_version="v2")
    refused(lambda: stream.update(other), SchemaMismatchError, "'user0'", "schema_version")
    assert saved_bytes(stream, tmp_path) == before


def test_a_row_joining_a_closed_timeline_is_refused(stream, rows):
    stream.update(rows.iloc[:3])
    assert len(stream.close("user0").final) == 3
    refused(lambda: stream.update(rows.iloc[3:4]), InputError, "'user0'", "closed")
    refused(lambda: stream.close("nobody"), InputError, "'nobody'")
    assert len(stream.update(rows.iloc[5:6]).provisional) == 1  # after the gap: a new timeline


def test_a_state_of_another_pipeline_is_refused(booster_v1, encoders_v1, stream, rows, tmp_path):
    stream.update(rows.iloc[:3])
    stream.save(tmp_path / "s.npz")
    other = build_pipeline(booster_v1, encoders_v1, smooth_window=5)
    load = StreamingPipeline.load
    refused(lambda: load(tmp_path / "s.npz", other), ReaderError, "another pipeline")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a state")
    refused(lambda: load(tmp_path / "bad.npz", stream.pipeline), ReaderError, "bad.npz")


def test_pipelines_that_cannot_stream_are_refused(booster_v1, encoders_v1):
    as_given = build_pipeline(booster_v1, encoders_v1, timelines="as_given")
    refused(lambda: StreamingPipeline(as_given), InvalidParameterError, "as_given")
    mixed = build_pipeline(booster_v1, encoders_v1).set_params(merge__max_gap_seconds=600)
    refused(lambda: StreamingPipeline(mixed), InvalidParameterError, "max_gap_seconds")


def json_lines(rows: pd.DataFrame) -> list[str]:
    out = rows.assign(bucket_start_ts=rows["bucket_start_ts"].map(pd.Timestamp.isoformat))
    return [json.dumps(r) for r in out.to_dict(orient="records")]


def check_records(pipeline, rows, records):
    batch = pipeline.transform(rows).sort_values(KEY)
    final = pd.DataFrame([r for r in records if r["kind"] == "row"]).sort_values(KEY)
    assert final["label"].tolist() == batch["label"].tolist()
    assert final["segment_id"].tolist() == batch["segment_id"].tolist()
    np.testing.assert_allclose(final["confidence"], batch["confidence"])
    key = lambda s: (s["user_id"], s["start_ts"])  # noqa: E731
    segments = sorted(({**r, "kind": 0} for r in records if r["kind"] == "segment"), key=key)
    assert segments == sorted(
        ({**s.to_dict(), "kind": 0} for s in frame_to_segments(batch)), key=key
    )
    assert sum(r["kind"] == "provisional" for r in records) == len(rows)


SCRIPT = """import sys; from taskclf import load_bundle; from taskclf.stream import run_stream
done = run_stream(load_bundle(sys.argv[1]), sys.stdin, lambda line: print(line, flush=True),
                  state_path=sys.argv[2], provisional=True)
print("done" if done else "stopped", flush=True)"""


def test_sigterm_then_resume_gives_the_batch_result(booster_v1, encoders_v1, features, tmp_path):
    rows = features
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.4)
    save_bundle(pipeline, tmp_path / "model.taskclf")
    lines = json_lines(rows)
    half = len(lines) // 2

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-c", SCRIPT, tmp_path / "model.taskclf", tmp_path / "state.npz"]
    first = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)  # fmt: skip
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

    out: list[str] = []  # resumed here, from the state the other process saved
    assert run_stream(pipeline, lines[half:], out.append, state_path=tmp_path / "state.npz",
                      provisional=True)  # fmt: skip
    records += [json.loads(line) for line in out]
    check_records(pipeline, rows, records)
