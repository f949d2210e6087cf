"""taskclf.distributed: equal to the in-memory pipeline, row for row, on any layout.

Most tests run Dask's synchronous scheduler; the last ones share one real
LocalCluster of worker processes. Segment ids are compared through the
segments they name, ``(user_id, segment_id)``: a partition numbers its own.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import dask
import dask.dataframe as dd
import distributed
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, refused, train_booster
from hypothesis import given, settings
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


@pytest.fixture(scope="module")
def pipeline(booster_v1, encoders_v1):
    return taskclf.build_pipeline(booster_v1, encoders_v1, reject_threshold=0.55)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """Three users, 150 rows each with a gap, shuffled, under an index that is not 0..n-1."""
    frame = make_frame(n_users=3, minutes=150, seed=4).drop(columns="label")
    frame = frame.sample(frac=1.0, random_state=7)
    frame.index = pd.Index(frame.index.to_numpy() * 10 + 3, name="row")
    return frame


USERS = ["user0", "user1", "user2"]
SYNC = {"scheduler": "synchronous", "dataframe.shuffle.method": "tasks"}


@pytest.fixture
def sync():
    with dask.config.set(SYNC):
        yield


def segments_of(frame: pd.DataFrame) -> list:
    return sorted(frame_to_segments(frame), key=lambda s: (str(s.user_id), s.start_ts))


def assert_same_transform(pipeline, ddf: dd.DataFrame) -> pd.DataFrame:
    """transform on Dask equals the in-memory run on the frame Dask holds, row for row."""
    result = tdd.transform(pipeline, ddf).compute()
    expected = pipeline.transform(ddf.compute())
    assert len(result) == len(expected) and result.index.is_unique
    aligned = result.loc[expected.index]
    drop = {"columns": SEGMENT_ID}
    pd.testing.assert_frame_equal(aligned.drop(**drop), expected.drop(**drop))
    assert segments_of(aligned) == segments_of(expected)
    return result


@settings(max_examples=4, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    npartitions=st.integers(1, 7),
    keep=st.sets(st.sampled_from(USERS), min_size=1),
)
def test_any_layout_gives_the_in_memory_result(pipeline, features, seed, npartitions, keep):
    rows = features[features["user_id"].isin(sorted(keep))]
    rows = rows.iloc[np.random.default_rng(seed).permutation(len(rows))]
    with dask.config.set(SYNC):
        assert_same_transform(pipeline, dd.from_pandas(rows, npartitions=npartitions, sort=False))


@pytest.mark.parametrize(
    ("npartitions", "drop", "moved"),
    [(3, [], False), (2, [], True), (3, ["user1"], False), (6, ["user1"], True), (2, USERS, False)],
    ids=["one user each", "user1 straddles", "an empty partition", "empty and straddling", "empty"],
)
def test_rows_move_only_when_a_user_spans_partitions(
    sync, pipeline, features, npartitions, drop, moved
):
    ddf = dd.from_pandas(features, npartitions)  # sorted by the index: users one after another
    if drop:
        ddf = ddf[~ddf["user_id"].isin(drop)]
        assert 0 in ddf.map_partitions(len).compute().tolist()
    parts = tdd.partition_by_user(ddf)
    assert parts.shuffled == moved
    assert parts.users.tolist() == [u for u in USERS if u not in drop]
    result = assert_same_transform(pipeline, ddf)
    if not moved:  # same partitions, same order
        assert tdd.transform(pipeline, ddf).divisions == ddf.divisions
        assert result.index.equals(ddf.index.compute())
    else:  # labels come back under the index of their rows
        labels = tdd.predict(pipeline, ddf).compute()
        assert labels.name == LABEL and labels.dtype == LABEL_DTYPE
        pd.testing.assert_series_equal(labels.loc[result.index], result[LABEL])


def test_frame_without_user_id_runs_as_one_timeline(sync):
    frame = make_frame(n_users=1, minutes=200, seed=3)
    booster, encoders = train_booster(frame, schema_version="v2", rounds=3)
    v2 = taskclf.build_pipeline(booster, encoders, schema_version="v2")
    rows = frame.drop(columns=["label", "user_id"]).sample(frac=1.0, random_state=1)
    ddf = dd.from_pandas(rows, npartitions=3, sort=False)
    parts = tdd.partition_by_user(ddf)
    assert parts.users is None and parts.shuffled and parts.frame.npartitions == 1
    out = tdd.transform(v2, ddf)
    assert out.npartitions == 1
    pd.testing.assert_frame_equal(out.compute(), v2.transform(ddf.compute()))  # order kept
    labels = tdd.predict(v2, ddf).compute()
    assert labels.name == LABEL and labels.dtype == LABEL_DTYPE
    np.testing.assert_array_equal(labels.astype(object), v2.predict(rows))


def test_pipeline_is_one_piece_of_data_in_the_graph(pipeline, features):
    ddf = dd.from_pandas(features, npartitions=4, sort=False)
    for collection in (tdd.transform(pipeline, ddf), tdd.predict(pipeline, ddf)):
        graph = dict(collection.__dask_graph__())
        names = {k: k[0] if isinstance(k, tuple) else k for k in graph}
        (key,) = [k for k, name in names.items() if str(name).startswith("taskclf-pipeline-")]
        users_of_it = [k for k, task in graph.items() if key in getattr(task, "dependencies", ())]
        assert len(users_of_it) == collection.npartitions


def test_bad_arguments_are_refused_before_any_task(pipeline, features):
    refused(lambda: tdd.transform(pipeline, features), InputError, "dask.dataframe.DataFrame")
    ddf = dd.from_pandas(features, npartitions=1)
    refused(lambda: tdd.predict(object(), ddf), InvalidParameterError, "fitted taskclf pipeline")
    no_labels = pipeline[:3]  # encode, predict, calibrate: no label column
    refused(lambda: tdd.predict(no_labels, ddf), InvalidParameterError, "'label'")
    missing = dd.from_pandas(features.drop(columns=["keys_per_min"]), npartitions=2)
    refused(lambda: tdd.transform(pipeline, missing), MissingColumnsError, "keys_per_min")


def test_import_error_names_the_extra(monkeypatch):
    for module in ("dask", "dask.dataframe"):  # as if Dask were not installed
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r'pip install "\.\[dask\]"'):
        tdd.transform(None, None)


# --- infer_parquet_dir; the real cluster ------------------------------------------


def write_parquet_dir(frame: pd.DataFrame, directory: Path, n_files: int) -> Path:
    directory.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        frame.iloc[part].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory


def test_infer_parquet_dir_bad_input(pipeline, features, tmp_path):
    bad = {
        "missing": (tmp_path / "missing", tmp_path / "out", None, ReaderError, "does not exist"),
        "empty": (tmp_path / "empty", tmp_path / "out", None, ReaderError, "no .parquet files"),
        "address": (tmp_path / "empty", tmp_path / "out", "", InvalidParameterError, "address"),
        "not ours": (tmp_path / "missing", tmp_path, None, NotOursError, "not a taskclf"),
        "no scheduler": (
            write_parquet_dir(features, tmp_path / "f", n_files=1),
            tmp_path / "out",
            "tcp://127.0.0.1:9",
            InvalidParameterError,
            "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'",
        ),
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        for source, out, address, error, words in bad.values():
            call = functools.partial(tdd.infer_parquet_dir, pipeline, source, out, address=address)
            refused(call, error, words)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def cluster():
    """The cluster ``address="local"`` starts, here with one worker process."""
    quiet = {"distributed.worker.profile.enabled": False}  # no sampling profiler: less CPU
    with dask.config.set(quiet), tdd._scheduler("local", n_workers=1):
        yield distributed.get_client()


def segments_of_run(directory: Path) -> list:
    return sorted(
        read_segments_json(directory / "segments.json"), key=lambda s: (s.user_id, s.start_ts)
    )


def test_a_local_cluster_equals_in_memory(cluster, pipeline, features, tmp_path):
    # Users span the files: rows are shuffled between the worker processes.
    source = write_parquet_dir(features, tmp_path / "features", n_files=3)
    assert tdd.partition_by_user(dd.read_parquet(source)).shuffled
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("bucket_start_ts,predicted_label\n")  # an earlier run
    run = tdd.infer_parquet_dir(pipeline, source, out, address=cluster.scheduler.address)
    memory = infer_to_directory(pipeline, features.reset_index(drop=True), tmp_path / "memory")
    assert run.rows == memory.rows == len(features) and run.segments == memory.segments
    runs = (out, tmp_path / "memory")
    key = ["user_id", "bucket_start_ts"]
    rows = [pd.read_csv(d / "predictions.csv").sort_values(key, ignore_index=True) for d in runs]
    pd.testing.assert_frame_equal(*rows)
    assert segments_of_run(out) == segments_of_run(tmp_path / "memory")
    assert sorted(os.listdir(out)) == ["predictions.csv", "segments.json"]


def test_the_infer_command_on_a_cluster_equals_in_memory(cluster, pipeline, features, tmp_path):
    """`taskclf infer DIR --dask ADDRESS` writes what the command writes without Dask."""
    from taskclf import save_bundle
    from taskclf.cli import main

    bundle = str(save_bundle(pipeline, tmp_path / "model.taskclf"))
    source = str(write_parquet_dir(features, tmp_path / "features", n_files=3))
    on_dask, in_memory = tmp_path / "dask", tmp_path / "memory"
    address = cluster.scheduler.address
    assert (
        main(["infer", source, "--bundle", bundle, "--out", str(on_dask), "--dask", address]) == 0
    )
    assert main(["infer", source, "--bundle", bundle, "--out", str(in_memory)]) == 0
    key = ["user_id", "bucket_start_ts"]
    rows = [
        pd.read_csv(d / "predictions.csv").sort_values(key, ignore_index=True)
        for d in (on_dask, in_memory)
    ]
    pd.testing.assert_frame_equal(*rows)
    assert segments_of_run(on_dask) == segments_of_run(in_memory)


def test_worker_errors_reach_the_caller_and_leave_outputs_alone(
    cluster, pipeline, features, tmp_path
):
    doubled = pd.concat([features, features.iloc[[5]]], ignore_index=True)
    source = write_parquet_dir(doubled, tmp_path / "features", n_files=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "segments.json").write_text("[]")
    with pytest.raises(DuplicateRowsError, match=features["user_id"].iloc[5]):
        tdd.infer_parquet_dir(pipeline, source, out, address=None)
    assert sorted(os.listdir(tmp_path)) == ["features", "out"]  # no staging directory left
    assert os.listdir(out) == ["segments.json"] and (out / "segments.json").read_text() == "[]"
    # Errors that carry data (the missing columns) survive the trip back.
    future = cluster.submit(pipeline.transform, features.drop(columns=["clicks_per_min"]))
    with pytest.raises(MissingColumnsError) as caught:
        future.result()
    assert caught.value.columns == ["clicks_per_min"]
