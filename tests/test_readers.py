"""Feature file readers: CSV, Parquet and directories, with clear refusals."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import (
    refused,
)
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


@pytest.fixture(scope="module")
def synth_frame() -> pd.DataFrame:
    return make_activity_frame(n_users=2, n_days=1, random_state=3)


@pytest.mark.parametrize("name", ["features.csv", "features.parquet"])
def test_round_trip_is_exact(tmp_path, synth_frame, name):
    path = write_features(synth_frame, tmp_path / name)
    back = read_features(path)
    assert list(back.columns) == list(synth_frame.columns)
    for column in synth_frame.columns:
        if column == "source_ids":
            assert [list(v) for v in back[column]] == [list(v) for v in synth_frame[column]]
            continue
        pd.testing.assert_series_equal(
            back[column], synth_frame[column], check_dtype=False, check_exact=True
        )
    assert str(back["bucket_start_ts"].dtype) == "datetime64[ns, UTC]"


def test_text_columns_stay_text_and_timestamps_become_utc(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(
        "user_id,app_id,bucket_start_ts,keys_per_min,is_browser\n"
        "007,42,2025-01-06 09:00,1.5,True\n"
        "007,42,2025-01-06T10:01:00+01:00,2,False\n"
    )
    frame = read_features(path)
    assert frame["user_id"].tolist() == ["007", "007"]
    assert frame["app_id"].tolist() == ["42", "42"]
    assert frame["bucket_start_ts"].tolist() == [
        pd.Timestamp("2025-01-06 09:00", tz="UTC"),
        pd.Timestamp("2025-01-06 09:01", tz="UTC"),
    ]
    assert frame["is_browser"].tolist() == [True, False]


def test_boolean_columns_accept_missing_and_numbers(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(
        "bucket_start_ts,is_browser,is_editor\n2025-01-06 09:00,,1\n2025-01-06 09:01,true,0\n"
    )
    frame = read_features(path)
    assert frame["is_browser"].isna().tolist() == [True, False]
    assert bool(frame["is_browser"].iloc[1]) is True
    assert frame["is_editor"].astype(bool).tolist() == [True, False]


def test_header_only_gives_an_empty_frame(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("user_id,bucket_start_ts,keys_per_min\n")
    frame = read_features(path)
    assert len(frame) == 0
    assert list(frame.columns) == ["user_id", "bucket_start_ts", "keys_per_min"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"user0,2025-01-06 09:00,1.5\nuser0,2025-01-06 09:01,2.0\n", "no header row"),
        (b"user_id,bucket_start_ts,keys_per_min\nu,2025-01-06 09:00,fast\n", "'keys_per_min'"),
        (b"user_id,bucket_start_ts,is_browser\nu,2025-01-06 09:00,maybe\n", "'is_browser'"),
        (b"user_id,bucket_start_ts\nu,yesterday-ish\n", "'bucket_start_ts'"),
        (b"user_id,bucket_start_ts\nu,\n", "missing timestamp"),
        (b'user_id,bucket_start_ts\n"u,2025\n', "cannot be read as CSV"),
    ],
)
def test_malformed_csv_is_refused_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ReaderError) as info:
        read_features(path)
    assert "bad.csv" in str(info.value)
    assert problem in str(info.value)


def test_wrong_type_names_row_and_value(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(
        "user_id,bucket_start_ts,keys_per_min\nu,2025-01-06 09:00,1\nu,2025-01-06 09:01,abc\n"
    )
    with pytest.raises(ReaderError, match=r"row 1 holds 'abc'"):
        read_features(path)


def test_parquet_with_text_in_a_numeric_column_is_refused(tmp_path):
    frame = pd.DataFrame(
        {
            "bucket_start_ts": pd.date_range("2025-01-06", periods=2, freq="min", tz="UTC"),
            "keys_per_min": ["1.0", "lots"],
        }
    )
    frame.to_parquet(tmp_path / "f.parquet")
    with pytest.raises(ReaderError, match=r"f\.parquet.*'keys_per_min'.*'lots'"):
        read_features(tmp_path / "f.parquet")


@pytest.mark.parametrize(
    "content", [b"PAR1 not really parquet", b"hello world, this is text", b"\x00" * 64]
)
def test_garbage_parquet_is_refused(tmp_path, content):
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(ReaderError, match=r"bad\.parquet"):
        read_features(path)


def test_truncated_parquet_is_refused(tmp_path, synth_frame):
    path = write_features(synth_frame, tmp_path / "full.parquet")
    data = path.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2] + b"PAR1")
    with pytest.raises(ReaderError, match=r"cut\.parquet"):
        read_features(cut)


def test_directory_concatenates_files_in_order_skipping_hidden(tmp_path, synth_frame):
    half = len(synth_frame) // 2
    write_features(synth_frame.iloc[:half], tmp_path / "a.parquet")
    (tmp_path / "sub").mkdir()
    write_features(synth_frame.iloc[half:], tmp_path / "sub" / "b.csv")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".partial.csv").write_text("garbage")
    (tmp_path / "notes.txt").write_text("not features")
    assert [p.name for p in feature_files(tmp_path)] == ["a.parquet", "b.csv"]
    frame = read_features(tmp_path)
    assert len(frame) == len(synth_frame)
    assert frame["bucket_start_ts"].tolist() == synth_frame["bucket_start_ts"].tolist()
    assert frame.index.tolist() == list(range(len(synth_frame)))


def test_directory_without_feature_files_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ReaderError, match="holds no feature files"):
        read_features(tmp_path)


def test_directory_with_mismatched_columns_is_refused(tmp_path, synth_frame):
    write_features(synth_frame.iloc[:10], tmp_path / "a.csv")
    write_features(synth_frame.iloc[10:20].drop(columns="keys_per_min"), tmp_path / "b.csv")
    with pytest.raises(ReaderError, match=r"b\.csv.*missing \['keys_per_min'\]"):
        read_features(tmp_path)


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(ReaderError, match="does not exist"):
        read_features(tmp_path / "nope.csv")
    (tmp_path / "f.txt").write_text("user_id\nu\n")
    with pytest.raises(ReaderError, match="neither CSV nor Parquet"):
        read_features(tmp_path / "f.txt")
    with pytest.raises(ReaderError, match="must end in"):
        write_features(pd.DataFrame({"a": [1]}), tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=20
    )
)
def test_csv_round_trip_keeps_every_float_bit(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    frame = pd.DataFrame(
        {
            "bucket_start_ts": pd.date_range(
                "2025-01-06", periods=len(values), freq="min", tz="UTC"
            ),
            "keys_per_min": np.array(values, dtype=np.float64),
        }
    )
    write_features(frame, path)
    back = read_features(path)
    assert back["keys_per_min"].to_numpy().tobytes() == frame["keys_per_min"].to_numpy().tobytes()


def test_list_cells_written_by_pandas_stay_text(tmp_path, synth_frame):
    path = tmp_path / "by-pandas.csv"
    synth_frame.to_csv(path, index=False)  # tuples as Python reprs, not JSON
    frame = read_features(path)
    assert frame["source_ids"].iloc[0] == "('taskclf.synth',)"
    assert len(frame) == len(synth_frame)


# Bad input (contract: a specific error naming the problem)

# --------------------------------------------------------------------------
# Readers: malformed CSV and Parquet feature files name the file
# --------------------------------------------------------------------------


def _csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


READER_CASES = {
    "a CSV without header": (
        "features.csv",
        lambda f: f.to_csv(index=False, header=False).encode(),
        ("no header row",),
    ),
    "text in a numeric CSV column": (
        "features.csv",
        lambda f: _csv_text(f.assign(keys_per_min=["fast"] + [1.0] * (len(f) - 1))).encode(),
        ("keys_per_min", "'fast'"),
    ),
    "words in a boolean CSV column": (
        "features.csv",
        lambda f: _csv_text(f.assign(is_editor=["maybe"] * len(f))).encode(),
        ("is_editor", "'maybe'"),
    ),
    "a ragged CSV row": (
        "features.csv",
        lambda f: (_csv_text(f.iloc[:3]) + "1,2,3," * 60 + "\n").encode(),
        ("cannot be read as CSV",),
    ),
    "an empty CSV file": ("features.csv", lambda f: b"", ("is empty",)),
    "binary garbage as CSV": (
        "features.csv",
        lambda f: bytes(range(256)) * 16,
        ("binary",),
    ),
    "Latin-1 bytes in a CSV": (
        "features.csv",
        lambda f: _csv_text(f.assign(app_id="caf\u00e9")).encode("latin-1"),
        ("not UTF-8",),
    ),
    "an unnamed CSV column": (
        "features.csv",
        lambda f: _csv_text(f.rename(columns={"mouse_distance": ""})).encode(),
        ("empty column name",),
    ),
    "binary garbage as Parquet": (
        "features.parquet",
        lambda f: b"PAR1" + bytes(range(256)) * 16 + b"PAR1",
        ("cannot be read as Parquet",),
    ),
    "a CSV named .parquet": (
        "features.parquet",
        lambda f: _csv_text(f).encode(),
        ("not a Parquet file",),
    ),
    "a truncated Parquet file": (
        "features.parquet",
        lambda f: _parquet_bytes(f)[:-300],
        ("not a Parquet file",),
    ),
    "text in a numeric Parquet column": (
        "features.parquet",
        lambda f: _parquet_bytes(f.assign(keys_per_min=["fast"] * len(f))),
        ("keys_per_min", "'fast'"),
    ),
    "an unknown suffix": ("features.json", lambda f: b"[]", ("neither CSV nor Parquet",)),
    "a repeated column name": (
        "features.csv",
        lambda f: _csv_text(f.rename(columns={"clicks_per_min": "keys_per_min"})).encode(),
        ("'keys_per_min' twice",),
    ),
    "a CSV timestamp in 2520": (
        "features.csv",
        lambda f: _csv_text(f).replace("2025-", "2520-", 1).encode(),
        ("'bucket_start_ts'", "1677-2262"),
    ),
    "a Parquet timestamp in 2520": (
        "features.parquet",
        lambda f: _parquet_bytes(
            f.assign(bucket_start_ts=pd.Timestamp("2520-01-06", tz="UTC").as_unit("us"))
        ),
        ("'bucket_start_ts'", "1677-2262"),
    ),
}


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "words"), READER_CASES.values(), ids=READER_CASES.keys()
)
def test_malformed_feature_file_is_refused_naming_it(name, content, words, frame, tmp_path):
    path = tmp_path / "my data" / name
    path.parent.mkdir()
    path.write_bytes(content(frame))
    refused(lambda: read_features(path), ReaderError, str(path), *words)


def test_header_only_feature_file_is_an_empty_frame(frame, tmp_path):
    path = tmp_path / "features.csv"
    path.write_text(_csv_text(frame.iloc[:0]))
    read = read_features(path)
    assert len(read) == 0 and list(read.columns) == list(frame.columns)


def test_feature_directories_refuse_naming_the_directory_or_file(frame, tmp_path):
    empty = tmp_path / "nothing here"
    empty.mkdir()
    (empty / "notes.txt").write_text("no features")
    refused(lambda: read_features(empty), ReaderError, str(empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_features(frame, mixed / "a.csv")
    write_features(frame.drop(columns="mouse_distance"), mixed / "b.csv")
    refused(lambda: read_features(mixed), ReaderError, "b.csv", "mouse_distance")
    refused(lambda: read_features(tmp_path / "absent.csv"), ReaderError, "absent.csv")


def test_a_row_in_two_files_names_both(frame, tmp_path):
    write_features(frame, tmp_path / "a.csv")
    write_features(frame.iloc[7:9], tmp_path / "b.parquet")
    refused(lambda: read_features(tmp_path), DuplicateRowsError, "a.csv", "b.parquet", "2 dup")


def test_a_fifo_is_refused_without_reading_it(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    refused(lambda: read_features(tmp_path / "pipe.csv"), ReaderError, "not a regular file")


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


def test_numpy_user_ids_are_written_as_numbers(tmp_path):
    start = pd.Timestamp("2025-01-06 09:00", tz="UTC")
    segment = Segment(start, start + pd.Timedelta(minutes=1), "Build", 1, np.int64(7))
    path = write_segments_json([segment], tmp_path / "segments.json")
    assert read_segments_json(path)[0].user_id == 7
