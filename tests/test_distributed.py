"""taskclf.distributed on a real LocalCluster: equal to the in-memory pipeline, row for row.

Segment ids are compared through the segments they name, ``(user_id, segment_id)``:
a partition numbers its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, train_booster
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskclf
from taskclf import distributed as tdd
from taskclf._columns import LABEL, SEGMENT_ID
from taskclf._frame import LABEL_DTYPE
from taskclf._readers import read_segments_json
from taskclf.exceptions import (
    DuplicateRowsError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    NotOursError,
    ReaderError,
)
from taskclf.stages.segment import frame_to_segments
from taskclf.workflows import infer_to_directory

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    """Two worker processes with one thread each, shared by the whole module."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def pipeline(booster_v1, encoders_v1):
    return taskclf.build_pipeline(booster_v1, encoders_v1, reject_threshold=0.55)


@pytest.fixture(scope="module")
def unsorted(frame_v1) -> pd.DataFrame:
    """The v1 rows shuffled, under an index that is not 0..n-1."""
    frame = frame_v1.drop(columns="label").sample(frac=1.0, random_state=7)
    frame.index = pd.Index(frame.index.to_numpy() * 10 + 3, name="row")
    return frame


def expected_transform(pipeline, ddf) -> pd.DataFrame:
    return pipeline.transform(ddf.compute())


def segments_of(frame: pd.DataFrame) -> list:
    return sorted(
        frame_to_segments(frame, bucket_seconds=60), key=lambda s: (str(s.user_id), s.start_ts)
    )


def assert_same_rows(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal row for row once aligned on the index; the same segments."""
    assert len(result) == len(expected)
    assert result.index.is_unique
    aligned = result.loc[expected.index]
    pd.testing.assert_frame_equal(
        aligned.drop(columns=SEGMENT_ID), expected.drop(columns=SEGMENT_ID)
    )
    assert segments_of(aligned) == segments_of(expected)


def test_unsorted_frame_across_partitions_equals_in_memory(client, pipeline, unsorted):
    ddf = dd.from_pandas(unsorted, npartitions=4, sort=False)
    parts = tdd.partition_by_user(ddf)
    assert parts.shuffled
    assert parts.users.tolist() == list(pd.unique(unsorted["user_id"]))

    result = tdd.transform(pipeline, ddf).compute()
    expected = expected_transform(pipeline, ddf)
    assert_same_rows(result, expected)
    # The rows did move: output order is not the input order.
    assert not result.index.equals(expected.index)


def test_user_split_over_two_partitions(client, pipeline, frame_v1):
    frame = frame_v1.drop(columns="label")
    ddf = dd.from_pandas(frame, npartitions=2)  # 360 rows each: user1 straddles
    firsts = [set(ddf.partitions[i].compute()["user_id"]) for i in range(2)]
    assert "user1" in firsts[0] & firsts[1]
    assert tdd.partition_by_user(ddf).shuffled

    assert_same_rows(tdd.transform(pipeline, ddf).compute(), expected_transform(pipeline, ddf))
    labels = tdd.predict(pipeline, ddf).compute()
    np.testing.assert_array_equal(
        labels.loc[frame.index].astype(object).to_numpy(), pipeline.predict(ddf.compute())
    )


def test_users_already_local_are_not_moved(client, pipeline, frame_v1):
    frame = frame_v1.drop(columns="label")
    ddf = dd.from_pandas(frame, npartitions=3)  # exactly one user per partition
    assert not tdd.partition_by_user(ddf).shuffled

    out = tdd.transform(pipeline, ddf)
    assert out.npartitions == 3
    assert out.divisions == ddf.divisions
    result = out.compute()
    expected = expected_transform(pipeline, ddf)
    assert result.index.equals(expected.index)  # same order too: nothing moved
    assert_same_rows(result, expected)


def test_frame_without_user_id_runs_as_one_timeline(client):
    frame = make_frame(n_users=1, minutes=300, seed=3)
    booster, encoders = train_booster(frame, schema_version="v2")
    v2 = taskclf.build_pipeline(booster, encoders, schema_version="v2")
    rows = frame.drop(columns=["label", "user_id"]).sample(frac=1.0, random_state=1)
    ddf = dd.from_pandas(rows, npartitions=3, sort=False)

    parts = tdd.partition_by_user(ddf)
    assert parts.users is None and parts.shuffled and parts.frame.npartitions == 1
    out = tdd.transform(v2, ddf)
    assert out.npartitions == 1
    result = out.compute()
    expected = expected_transform(v2, ddf)
    pd.testing.assert_frame_equal(result, expected)  # one partition: input order kept
    labels = tdd.predict(v2, ddf).compute()
    np.testing.assert_array_equal(labels.astype(object).to_numpy(), v2.predict(rows))


@pytest.mark.parametrize("npartitions", [3, 6])
def test_empty_partitions(client, pipeline, frame_v1, npartitions):
    # With 3 partitions (one per user) dropping user1 empties the middle one and
    # nothing is shuffled; with 6 users span partitions and the shuffle runs too.
    frame = frame_v1.drop(columns="label")
    ddf = dd.from_pandas(frame, npartitions=npartitions)
    ddf = ddf[ddf["user_id"] != "user1"]
    sizes = ddf.map_partitions(len).compute().tolist()
    assert 0 in sizes
    assert tdd.partition_by_user(ddf).shuffled == (npartitions == 6)

    assert_same_rows(tdd.transform(pipeline, ddf).compute(), expected_transform(pipeline, ddf))


def test_empty_frame_gives_empty_result(client, pipeline, frame_v1):
    ddf = dd.from_pandas(frame_v1.drop(columns="label"), npartitions=2)
    ddf = ddf[ddf["user_id"] == "nobody"]
    result = tdd.transform(pipeline, ddf).compute()
    expected = expected_transform(pipeline, ddf)
    assert len(result) == 0
    pd.testing.assert_frame_equal(result, expected)
    assert len(tdd.predict(pipeline, ddf).compute()) == 0


def test_predict_is_the_label_series(client, pipeline, unsorted):
    ddf = dd.from_pandas(unsorted, npartitions=3, sort=False)
    labels = tdd.predict(pipeline, ddf)
    assert labels.name == LABEL
    assert labels.dtype == LABEL_DTYPE
    computed = labels.compute()
    assert computed.index.sort_values().equals(unsorted.index.sort_values())
    np.testing.assert_array_equal(
        computed.loc[unsorted.index].astype(object).to_numpy(), pipeline.predict(unsorted)
    )


def test_pipeline_is_one_piece_of_data_in_the_graph(client, pipeline, unsorted):
    ddf = dd.from_pandas(unsorted, npartitions=4, sort=False)
    for collection in (tdd.transform(pipeline, ddf), tdd.predict(pipeline, ddf)):
        graph = dict(collection.__dask_graph__())
        names = {k: k[0] if isinstance(k, tuple) else k for k in graph}
        shipped = [k for k, name in names.items() if str(name).startswith("taskclf-pipeline-")]
        assert len(shipped) == 1
        key = shipped[0]
        users_of_it = [k for k, task in graph.items() if key in getattr(task, "dependencies", ())]
        assert len(users_of_it) == collection.npartitions


def test_errors_reach_the_caller(client, pipeline, frame_v1):
    with pytest.raises(InputError, match="dask.dataframe.DataFrame"):
        tdd.transform(pipeline, frame_v1)
    with pytest.raises(InvalidParameterError, match="fitted taskclf pipeline"):
        tdd.predict(object(), dd.from_pandas(frame_v1, npartitions=1))

    # A missing column is found on the client, before any task runs.
    ddf = dd.from_pandas(frame_v1.drop(columns=["label", "keys_per_min"]), npartitions=2)
    with pytest.raises(MissingColumnsError, match="keys_per_min"):
        tdd.transform(pipeline, ddf)

    # A bad row is found on a worker, and arrives as the taskclf error it is.
    frame = frame_v1.drop(columns="label")
    doubled = pd.concat([frame, frame.iloc[[5]]], ignore_index=True)
    with pytest.raises(DuplicateRowsError, match="user0"):
        tdd.predict(pipeline, dd.from_pandas(doubled, npartitions=2)).compute()

    # Errors that carry data (the missing columns) survive the trip back.
    future = client.submit(pipeline.transform, frame.drop(columns=["clicks_per_min"]))
    with pytest.raises(MissingColumnsError) as caught:
        future.result()
    assert caught.value.columns == ["clicks_per_min"]


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**16),
    npartitions=st.integers(1, 7),
    keep=st.sets(st.sampled_from(["user0", "user1", "user2"]), min_size=1),
)
def test_any_layout_gives_the_in_memory_result(client, pipeline, frame_v1, seed, npartitions, keep):
    rng = np.random.default_rng(seed)
    frame = frame_v1.drop(columns="label")
    frame = frame[frame["user_id"].isin(sorted(keep))]
    frame = frame.iloc[rng.permutation(len(frame))]
    ddf = dd.from_pandas(frame, npartitions=npartitions, sort=False)
    result, labels = dask.compute(tdd.transform(pipeline, ddf), tdd.predict(pipeline, ddf))
    # Dask turns the str columns into its own string dtype: compare with the
    # in-memory run on the very frame Dask holds.
    expected = pipeline.transform(ddf.compute())
    assert_same_rows(result, expected)
    pd.testing.assert_series_equal(labels.loc[expected.index], expected[LABEL])


def test_import_error_names_the_extra():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["dask"] = None  # as if Dask were not installed
        import taskclf.distributed as tdd
        try:
            tdd.transform(None, None)
        except ImportError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert 'pip install ".[dask]"' in done.stdout


# --- infer_parquet_dir ----------------------------------------------------------


def write_parquet_dir(frame: pd.DataFrame, directory: Path, n_files: int) -> Path:
    directory.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        frame.iloc[part].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory


def assert_same_run(got: Path, want: Path) -> None:
    """The files of two runs hold the same rows and segments, in any order."""
    key = ["user_id", "bucket_start_ts"]
    rows = [
        pd.read_csv(d / "predictions.csv").sort_values(key, ignore_index=True) for d in (got, want)
    ]
    pd.testing.assert_frame_equal(*rows)
    order = lambda s: (s.user_id, s.start_ts)  # noqa: E731
    segments = [sorted(read_segments_json(d / "segments.json"), key=order) for d in (got, want)]
    assert segments[0] == segments[1]
    assert sorted(os.listdir(got)) == ["predictions.csv", "segments.json"]


def test_infer_parquet_dir_on_a_running_cluster(client, pipeline, unsorted, tmp_path):
    source = write_parquet_dir(unsorted, tmp_path / "features", n_files=3)
    run = tdd.infer_parquet_dir(
        pipeline, source, tmp_path / "out", address=client.scheduler.address
    )
    frame = pd.concat([pd.read_parquet(p) for p in sorted(source.glob("*.parquet"))])
    in_memory = infer_to_directory(pipeline, frame.reset_index(drop=True), tmp_path / "memory")
    assert run.rows == in_memory.rows == len(frame)
    assert run.segments == in_memory.segments
    assert_same_run(tmp_path / "out", tmp_path / "memory")


def test_infer_parquet_dir_on_its_own_local_cluster(pipeline, frame_v1, tmp_path):
    # Users already one per file: no shuffle. An earlier run's output is replaced whole.
    frame = frame_v1.drop(columns="label")
    source = write_parquet_dir(frame, tmp_path / "features", n_files=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("bucket_start_ts,predicted_label\n")
    tdd.infer_parquet_dir(pipeline, source, out, address="local", n_workers=1)
    infer_to_directory(pipeline, frame, tmp_path / "memory")
    assert_same_run(out, tmp_path / "memory")


def test_infer_parquet_dir_failure_leaves_outputs_alone(client, pipeline, frame_v1, tmp_path):
    frame = frame_v1.drop(columns="label")
    doubled = pd.concat([frame, frame.iloc[[10]]], ignore_index=True)
    source = write_parquet_dir(doubled, tmp_path / "features", n_files=2)
    # user0's duplicate sits in the second file: the rows must be brought together.
    assert tdd.partition_by_user(dd.read_parquet(source)).shuffled
    out = tmp_path / "out"
    out.mkdir()
    (out / "segments.json").write_text("[]")
    with pytest.raises(DuplicateRowsError):
        tdd.infer_parquet_dir(pipeline, source, out, address=None)
    assert sorted(os.listdir(tmp_path)) == ["features", "out"]  # no staging directory left
    assert os.listdir(out) == ["segments.json"]
    assert (out / "segments.json").read_text() == "[]"


def test_infer_parquet_dir_bad_input(pipeline, tmp_path):
    with pytest.raises(ReaderError, match="does not exist"):
        tdd.infer_parquet_dir(pipeline, tmp_path / "missing", tmp_path / "out", address=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="no .parquet files"):
        tdd.infer_parquet_dir(pipeline, tmp_path / "empty", tmp_path / "out", address=None)
    with pytest.raises(InvalidParameterError, match="address"):
        tdd.infer_parquet_dir(pipeline, tmp_path / "empty", tmp_path / "out", address="")
    with pytest.raises(NotOursError, match="not a taskclf inference output"):
        tdd.infer_parquet_dir(pipeline, tmp_path / "missing", tmp_path, address=None)
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler(pipeline, frame_v1, tmp_path):
    source = write_parquet_dir(frame_v1.drop(columns="label"), tmp_path / "f", n_files=1)
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(InvalidParameterError, match="127.0.0.1:9"),
    ):
        tdd.infer_parquet_dir(pipeline, source, tmp_path / "out", address="tcp://127.0.0.1:9")
    assert not (tmp_path / "out").exists()
