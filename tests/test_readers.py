"""Feature file readers: CSV, Parquet and directories, with clear refusals."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import refused
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf._readers import (
    feature_files,
    read_features,
    read_segments_json,
    write_features,
    write_segments_json,
)
from taskclf.exceptions import DuplicateRowsError, ReaderError
from taskclf.stages.segment import Segment
from taskclf.synth import make_activity_frame

HEAD = b"user_id,bucket_start_ts,keys_per_min,is_browser\n"
TS = pd.Timestamp("2520-01-06", tz="UTC").as_unit("us")


@pytest.fixture(scope="module")
def synth_frame() -> pd.DataFrame:
    return make_activity_frame(n_users=2, n_days=1, minutes_per_day=60, random_state=3)


def parquet(**columns) -> bytes:
    buffer = io.BytesIO()
    ts = pd.date_range("2025-01-06", periods=2, freq="min", tz="UTC")
    pd.DataFrame({"bucket_start_ts": ts, **columns}).to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["features.csv", "features.parquet"])
def test_round_trip_is_exact(tmp_path, synth_frame, name):
    back = read_features(write_features(synth_frame, tmp_path / name))
    assert list(back.columns) == list(synth_frame.columns)
    assert [list(v) for v in back.pop("source_ids")] == [list(v) for v in synth_frame.source_ids]
    expected = synth_frame.drop(columns="source_ids")
    pd.testing.assert_frame_equal(back, expected, check_dtype=False, check_exact=True)
    assert str(back["bucket_start_ts"].dtype) == "datetime64[ns, UTC]"


def test_known_columns_get_their_types(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(
        "user_id,app_id,bucket_start_ts,keys_per_min,is_browser,is_editor\n"
        "007,42,2025-01-06 09:00,1.5,,1\n"
        "007,42,2025-01-06T10:01:00+01:00,2,true,0\n"
    )
    frame = read_features(path)
    assert frame["user_id"].tolist() == ["007", "007"] and frame["app_id"].tolist() == ["42"] * 2
    expected = pd.to_datetime(["2025-01-06 09:00", "2025-01-06 09:01"], utc=True)
    assert frame["bucket_start_ts"].tolist() == expected.tolist()
    assert frame["is_browser"].isna().tolist() == [True, False] and frame["is_browser"].iloc[1]
    assert frame["is_editor"].astype(bool).tolist() == [True, False]
    path.write_text("user_id,bucket_start_ts,keys_per_min\n")  # the header alone
    assert read_features(path).columns.tolist() == ["user_id", "bucket_start_ts", "keys_per_min"]


BAD_FILES = {
    "no header": ("f.csv", b"u0,2025-01-06 09:00,1.5\nu0,2025-01-06 09:01,2\n", "no header row"),
    "text as a number": ("f.csv", HEAD + b"u,2025-01-06 09:00,1,1\nu,2025-01-06 09:01,abc,1\n",
                         "'keys_per_min' must hold numbers but row 1 holds 'abc'"),
    "a word as a boolean": ("f.csv", HEAD + b"u,2025-01-06 09:00,1,maybe\n", "'maybe'"),
    "no timestamp": ("f.csv", HEAD + b"u,,1,1\n", "missing timestamp"),
    "a bad timestamp": ("f.csv", HEAD + b"u,yesterday-ish,1,1\n", "'yesterday-ish'"),
    "a timestamp in 2520": ("f.csv", HEAD + b"u,2520-01-06 09:00,1,1\n", "1677-2262"),
    "an open quote": ("f.csv", HEAD + b'"u,2025\n', "cannot be read as CSV"),
    "a ragged row": ("f.csv", HEAD + b"u,2025-01-06 09:00,1,1\n" + b"1,2,3," * 60 + b"\n",
                     "cannot be read as CSV"),
    "an empty file": ("f.csv", b"", "is empty"),
    "binary data": ("f.csv", bytes(range(256)) * 16, "binary"),
    "Latin-1 text": ("f.csv", HEAD + "caf\u00e9,2025-01-06,1,1\n".encode("latin-1"), "not UTF-8"),
    "an unnamed column": ("f.csv", b"user_id,,bucket_start_ts\nu,1,2025-01-06\n", "empty column"),
    "a name twice": ("f.csv", b"user_id,user_id\nu,v\n", "'user_id' twice"),
    "a CSV named .parquet": ("f.parquet", HEAD, "not a Parquet file"),
    "garbage Parquet": ("f.parquet", b"PAR1" + bytes(range(256)) + b"PAR1", "as Parquet"),
    "truncated Parquet": ("f.parquet", parquet(keys_per_min=[1.0, 2.0])[:-300], "not a Parquet"),
    "text in a Parquet number": ("f.parquet", parquet(keys_per_min=["1", "lots"]), "'lots'"),
    "a Parquet timestamp in 2520": ("f.parquet", parquet(bucket_end_ts=[TS, TS]), "1677-2262"),
    "an unknown suffix": ("f.json", b"[]", "neither CSV nor Parquet"),
}  # fmt: skip


@pytest.mark.parametrize(("name", "content", "words"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_feature_file_is_refused_naming_it(tmp_path, name, content, words):
    path = tmp_path / "my data" / name
    path.parent.mkdir()
    path.write_bytes(content)
    refused(lambda: read_features(path), ReaderError, str(path), words)


def test_what_is_not_a_feature_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")  # never opened: reading it would hang
    refused(lambda: read_features(tmp_path / "pipe.csv"), ReaderError, "not a regular file")
    refused(lambda: read_features(tmp_path / "absent.csv"), ReaderError, "does not exist")
    refused(lambda: write_features(pd.DataFrame(), tmp_path / "o.json"), ReaderError, "end in")
    assert not (tmp_path / "o.json").exists()


def test_a_directory_is_read_file_by_file_skipping_hidden_ones(tmp_path, synth_frame):
    half = len(synth_frame) // 2
    write_features(synth_frame.iloc[:half], tmp_path / "a.parquet")
    write_features(synth_frame.iloc[half:], tmp_path / "sub" / "b.csv")
    for hidden in ("_SUCCESS", ".partial.csv", "notes.txt", "_tmp/c.csv"):
        (tmp_path / hidden).parent.mkdir(exist_ok=True)
        (tmp_path / hidden).write_text("garbage")
    assert [p.name for p in feature_files(tmp_path)] == ["a.parquet", "b.csv"]
    frame = read_features(tmp_path)
    assert frame["bucket_start_ts"].tolist() == synth_frame["bucket_start_ts"].tolist()
    assert frame.index.tolist() == list(range(len(synth_frame)))


def test_a_bad_directory_is_refused_naming_it_or_its_file(tmp_path, synth_frame):
    empty = tmp_path / "nothing here"
    empty.mkdir()
    (empty / "notes.txt").write_text("no features")
    refused(lambda: read_features(empty), ReaderError, str(empty), "holds no feature files")
    mixed = tmp_path / "mixed"
    write_features(synth_frame, mixed / "a.csv")
    write_features(synth_frame.drop(columns="mouse_distance"), mixed / "b.csv")
    refused(lambda: read_features(mixed), ReaderError, "b.csv", "missing ['mouse_distance']")
    twice = tmp_path / "twice"
    write_features(synth_frame, twice / "a.csv")
    write_features(synth_frame.iloc[7:9], twice / "b.parquet")
    refused(lambda: read_features(twice), DuplicateRowsError, "a.csv", "b.parquet", "2 dup")


@settings(max_examples=15)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_csv_round_trip_keeps_every_float_bit(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    ts = pd.date_range("2025-01-06", periods=len(values), freq="min", tz="UTC")
    frame = pd.DataFrame({"bucket_start_ts": ts, "keys_per_min": np.array(values)})
    back = read_features(write_features(frame, path))
    assert back["keys_per_min"].to_numpy().tobytes() == frame["keys_per_min"].to_numpy().tobytes()


def test_list_cells_written_by_pandas_stay_text(tmp_path, synth_frame):
    synth_frame.to_csv(tmp_path / "by-pandas.csv", index=False)  # tuples as Python reprs
    frame = read_features(tmp_path / "by-pandas.csv")
    assert frame["source_ids"].iloc[0] == "('taskclf.synth',)" and len(frame) == len(synth_frame)


GOOD = {"start_ts": "2025-01-06T09:00:00+00:00", "end_ts": "2025-01-06T09:01:00+00:00",
        "label": "Build", "bucket_count": 1}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [("start_ts", None), ("end_ts", "NaT"), ("start_ts", 1736150400), ("label", None),
     ("bucket_count", 2.7), ("bucket_count", True), ("bucket_count", 1e999),
     ("start_ts", "2520-01-06T09:00:00"), ("user_id", ["u"])],
)  # fmt: skip
def test_segment_records_are_checked_field_by_field(tmp_path, field, value):
    path = tmp_path / "segments.json"
    path.write_text(json.dumps([GOOD, {**GOOD, field: value}]).replace("Infinity", "1e999"))
    refused(lambda: read_segments_json(path), ReaderError, str(path), "record 1", repr(field))


def test_segments_round_trip_with_numpy_user_ids_as_numbers(tmp_path):
    start = pd.Timestamp("2025-01-06 09:00", tz="UTC")
    segment = Segment(start, start + pd.Timedelta(minutes=1), "Build", 1, np.int64(7))
    (back,) = read_segments_json(write_segments_json([segment], tmp_path / "segments.json"))
    assert back == segment and type(back.user_id) is int
