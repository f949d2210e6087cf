"""taskclf.distributed on a real LocalCluster: equal to the in-memory pipeline, row for row."""

from __future__ import annotations

import json
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
from taskclf._columns import LABEL, PROBA_COLUMNS, SEGMENT_ID
from taskclf._frame import LABEL_DTYPE
from taskclf.exceptions import (
    DuplicateRowsError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    ReaderError,
)
from taskclf.infer.batch import read_segments_json

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


def assert_same_rows(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(result) == len(expected)
    assert result.index.is_unique
    pd.testing.assert_frame_equal(result.loc[expected.index], expected)


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
    pd.testing.assert_frame_equal(result, expected)  # same order too: nothing moved
    # Each partition alone numbers its segments from 0; the result numbers them globally.
    assert out.partitions[2].compute()[SEGMENT_ID].min() > 0


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


def test_partition_local_segment_ids(client, pipeline, unsorted):
    ddf = dd.from_pandas(unsorted, npartitions=4, sort=False)
    local = tdd.transform(pipeline, ddf, global_segment_ids=False).compute()
    expected = expected_transform(pipeline, ddf)
    local = local.loc[expected.index]
    pd.testing.assert_frame_equal(local.drop(columns=SEGMENT_ID), expected.drop(columns=SEGMENT_ID))
    # (user_id, local id) and the global id name the same segments.
    pairs = pd.DataFrame(
        {
            "user": local["user_id"].astype(object),
            "local": local[SEGMENT_ID],
            "global": expected[SEGMENT_ID],
        }
    )
    assert (pairs.groupby(["user", "local"])["global"].nunique() == 1).all()
    assert (pairs.groupby("global")[["user", "local"]].nunique() == 1).all().all()


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
    assert 'pip install "taskclf[dask]"' in done.stdout


# --- infer_parquet_dir ----------------------------------------------------------


def write_parquet_dir(frame: pd.DataFrame, directory: Path, n_files: int) -> Path:
    directory.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        frame.iloc[part].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory


def expected_outputs(pipeline, frame: pd.DataFrame):
    annotated = pipeline.transform(frame)
    segments = taskclf.frame_to_segments(annotated, bucket_seconds=60)
    return annotated, segments


def test_infer_parquet_dir_on_a_running_cluster(client, pipeline, unsorted, tmp_path):
    source = write_parquet_dir(unsorted, tmp_path / "features", n_files=3)
    summary = tdd.infer_parquet_dir(
        pipeline, source, tmp_path / "out", address=client.scheduler.address
    )
    frame = pd.concat([pd.read_parquet(p) for p in sorted(source.glob("*.parquet"))])
    annotated, segments = expected_outputs(pipeline, frame.reset_index(drop=True))

    assert summary["rows"] == len(frame)
    assert summary["users"] == 3
    assert summary["shuffled"] is True
    assert summary["segments"] == len(segments)
    assert read_segments_json(tmp_path / "out" / "segments.json") == segments
    stored = json.loads((tmp_path / "out" / "segments.json").read_text())
    assert [r["user_id"] for r in stored] == [s.user_id for s in segments]

    predictions = pd.read_parquet(tmp_path / "out" / "predictions")
    assert list(predictions.columns) == [
        "bucket_start_ts",
        "user_id",
        "predicted_label",
        "confidence",
        "is_rejected",
        *PROBA_COLUMNS,
    ]
    key = ["user_id", "bucket_start_ts"]
    got = predictions.sort_values(key).reset_index(drop=True)
    want = annotated.assign(user_id=frame["user_id"].to_numpy()).sort_values(key)
    want = want.reset_index(drop=True)
    assert got["user_id"].tolist() == want["user_id"].tolist()
    np.testing.assert_array_equal(
        got["bucket_start_ts"].to_numpy(), want["bucket_start_ts"].to_numpy()
    )
    np.testing.assert_array_equal(
        got["predicted_label"].to_numpy(dtype=object), want[LABEL].to_numpy(dtype=object)
    )
    np.testing.assert_array_equal(got["is_rejected"].to_numpy(), want["is_rejected"].to_numpy())
    np.testing.assert_allclose(
        got[["confidence", *PROBA_COLUMNS]].to_numpy(),
        want[["confidence", *PROBA_COLUMNS]].to_numpy(),
        rtol=0,
        atol=0,
    )
    assert sorted(os.listdir(tmp_path / "out")) == ["predictions", "segments.json"]


def test_infer_parquet_dir_on_its_own_local_cluster(pipeline, frame_v1, tmp_path):
    # Users already one per file: no shuffle. An old output is replaced whole.
    frame = frame_v1.drop(columns="label")
    source = write_parquet_dir(frame, tmp_path / "features", n_files=3)
    out = tmp_path / "out"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "stale.parquet").write_bytes(b"old")
    (out / "segments.json").write_text("[]")

    summary = tdd.infer_parquet_dir(pipeline, source, out, address="local", n_workers=1)
    assert summary["shuffled"] is False and summary["rows"] == len(frame)
    assert summary["address"].startswith("tcp://")
    assert "stale.parquet" not in os.listdir(out / "predictions")
    _, segments = expected_outputs(pipeline, frame)
    assert read_segments_json(out / "segments.json") == segments
    assert len(pd.read_parquet(out / "predictions")) == len(frame)
    assert sorted(os.listdir(out)) == ["predictions", "segments.json"]


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
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler(pipeline, frame_v1, tmp_path):
    source = write_parquet_dir(frame_v1.drop(columns="label"), tmp_path / "f", n_files=1)
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(InvalidParameterError, match="127.0.0.1:9"),
    ):
        tdd.infer_parquet_dir(pipeline, source, tmp_path / "out", address="tcp://127.0.0.1:9")
    assert not (tmp_path / "out").exists()
