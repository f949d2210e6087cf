"""Shared fixtures: small real feature frames and real LightGBM boosters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import pandas as pd
import pytest

import taskclf
from taskclf._columns import PROBA_COLUMNS
from taskclf.core.schema import get_schema
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    ColumnTypeError,
    DuplicateRowsError,
    MissingColumnsError,
    SchemaMismatchError,
    TaskclfError,
    TimestampError,
)

# Heavy libraries (scikit-learn, LightGBM, Dask) are imported where they are
# used: pytest-xdist's controller imports this file too, and runs no test.


SLOWEST_FIRST = (
    "test_cli.py",
    "test_distributed.py",
    "test_tune.py",
    "test_stream.py",
    "test_compiled.py",
    "test_estimator_checks.py",
    "test_report.py",
)
"""The files that take longest, in that order: pytest-xdist starts them first."""


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each file runs on one worker (its module fixtures are
    computed once), unless ``--dist`` says otherwise. Shared machines run the suite
    under load: hypothesis examples are judged by their results, never by how long
    one took."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        if not any(arg.startswith("--dist") for arg in config.invocation_params.args):
            config.option.dist = "loadfile"
            config.option.loadscopereorder = False  # keep SLOWEST_FIRST's order
        return  # pytest-xdist's controller: it runs no test
    from hypothesis import settings

    settings.register_profile("taskclf", deadline=None)
    settings.load_profile("taskclf")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


APPS = {
    "BreakIdle": ["lockscreen", "music"],
    "Build": ["vscode", "terminal"],
    "Communicate": ["slack", "mail"],
    "Debug": ["vscode", "gdb"],
    "Meet": ["zoom", "teams"],
    "ReadResearch": ["chrome", "pdf"],
    "Review": ["chrome", "vscode"],
    "Write": ["docs", "word"],
}


def make_frame(
    n_users: int = 3,
    minutes: int = 240,
    *,
    schema_version: str = "v1",
    seed: int = 0,
    start: str = "2025-01-06 09:00",
) -> pd.DataFrame:
    """A labelled feature frame: runs of 5-40 minutes of one task per user."""
    rng = np.random.default_rng(seed)
    schema = get_schema(schema_version)
    parts = []
    for u in range(n_users):
        labels: list[str] = []
        while len(labels) < minutes:
            labels += [CLASS_ORDER[rng.integers(8)]] * int(rng.integers(5, 40))
        label = np.array(labels[:minutes], dtype=object)
        ts = pd.date_range(start, periods=minutes, freq="min", tz="UTC")
        # a lunch gap of 40 minutes after two hours
        ts = ts.where(np.arange(minutes) < 120, ts + pd.Timedelta(minutes=40))
        k = np.array([CLASS_ORDER.index(v) for v in label])
        frame = {"user_id": f"user{u}", "bucket_start_ts": ts, "label": label}
        for j, name in enumerate(schema.feature_columns):
            if name in ("app_id", "app_category", "domain_category", "user_id"):
                continue
            frame[name] = rng.normal(loc=(k * (j % 5 + 1)) % 7, scale=2.0, size=minutes)
        apps = np.array([APPS[v][rng.integers(2)] for v in label], dtype=object)
        frame["app_id"] = apps
        frame["app_category"] = np.where(
            np.isin(apps, ["vscode", "terminal", "gdb"]), "dev", "other"
        )
        frame["domain_category"] = np.where(k % 2 == 0, "work", "misc")
        for flag in ("is_browser", "is_editor", "is_terminal", "idle_return_indicator"):
            frame[flag] = rng.random(minutes) < 0.3
        parts.append(pd.DataFrame(frame))
    return pd.concat(parts, ignore_index=True)


def train_booster(df: pd.DataFrame, schema_version: str = "v1", rounds: int = 25):
    import lightgbm as lgb
    from sklearn.preprocessing import LabelEncoder

    schema = get_schema(schema_version)
    encoders = {}
    X = df[list(schema.feature_columns)].copy()
    for c in schema.categorical_columns:
        encoders[c] = LabelEncoder().fit(X[c].astype(str))
        X[c] = encoders[c].transform(X[c].astype(str))
    y = np.array([CLASS_ORDER.index(v) for v in df["label"]])
    params = {
        "objective": "multiclass",
        "num_class": 8,
        "num_leaves": 15,
        "learning_rate": 0.2,
        "verbose": -1,
        "seed": 0,
        "num_threads": 1,
    }
    booster = lgb.train(params, lgb.Dataset(X.to_numpy(dtype=float), y), rounds)
    return booster, encoders


@pytest.fixture(scope="session")
def frame_v1() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="session")
def trained_v1(frame_v1):
    return train_booster(frame_v1)


@pytest.fixture(scope="session")
def booster_v1(trained_v1):
    return trained_v1[0]


@pytest.fixture(scope="session")
def encoders_v1(trained_v1):
    return trained_v1[1]


@pytest.fixture
def features_v1(frame_v1) -> pd.DataFrame:
    """A fresh copy of the v1 frame without the label column."""
    return frame_v1.drop(columns="label").copy()


@pytest.fixture(scope="session")
def booster_3_classes(frame_v1, encoders_v1):
    """A real booster over the v1 feature width, trained on only 3 classes."""
    import lightgbm as lgb

    X = frame_v1[list(get_schema("v1").feature_columns)].copy()
    for c in get_schema("v1").categorical_columns:
        X[c] = encoders_v1[c].transform(X[c])
    y = np.array([CLASS_ORDER.index(v) % 3 for v in frame_v1["label"]])
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X.to_numpy(dtype=float), y), 3)


SMALL_TREES = {"num_leaves": 7, "max_bin": 31}
FAST = {"num_boost_round": 10, "num_threads": 1}
"""Small and quick models: tests check behaviour, not accuracy."""


@pytest.fixture(scope="session")
def labelled() -> tuple[pd.DataFrame, pd.Series]:
    """Four users, 480 minutes each, every user doing all eight tasks."""
    frame = make_frame(n_users=4, minutes=480, seed=2)
    return frame.drop(columns="label"), frame["label"]


@pytest.fixture(scope="session")
def fitted(labelled):
    """A pipeline trained here (encoder, booster, temperature calibration)."""
    X, y = labelled
    return taskclf.build_pipeline(booster_params=SMALL_TREES, **FAST).fit(X, y)


# --------------------------------------------------------------------------
# Small frames along time, for the stages after the model
# --------------------------------------------------------------------------

T0 = pd.Timestamp("2025-01-06 09:00", tz="UTC")


def timeline_frame(users, minutes, index=None, **columns) -> pd.DataFrame:
    """Rows starting at ``T0 + minutes`` (no ``user_id`` column when ``users`` is None)."""
    data = {} if users is None else {"user_id": users}
    data["bucket_start_ts"] = [T0 + pd.Timedelta(minutes=m) for m in minutes]
    return pd.DataFrame({**data, **columns}, index=index)


def proba_frame(proba, index=None, **columns) -> pd.DataFrame:
    """The probability columns of ``proba`` (n, 8), then ``columns``."""
    frame = pd.DataFrame(np.asarray(proba, dtype=float), columns=list(PROBA_COLUMNS), index=index)
    return frame.assign(**columns)


def join_equal_neighbours(segments: list, bucket_seconds: int = 60, max_gap: int = 300) -> list:
    """Neighbouring segments of one timeline with the same label as one segment
    (what ``HysteresisMerger(join_equal=True)`` does after the hysteresis rule)."""
    out: list = []
    for segment in segments:
        last = out[-1] if out else None
        gap = None if last is None else segment.start_ts - last.end_ts
        if (
            last is not None
            and (last.label, last.user_id) == (segment.label, segment.user_id)
            and gap.total_seconds() + bucket_seconds <= max_gap
        ):
            count = last.bucket_count + segment.bucket_count
            out[-1] = attrs.evolve(last, end_ts=segment.end_ts, bucket_count=count)
        else:
            out.append(segment)
    return out


# Shared by the bad-input tests of every module

SCHEMA = get_schema("v1")


def refused(call: Callable[[], object], error: type[Exception], *words: str) -> Exception:
    """Run ``call``; it must raise exactly ``error`` with every word in its message."""
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error, f"{type(caught.value).__name__} is not {error.__name__}"
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert isinstance(caught.value, TaskclfError)
    return caught.value


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Two users, 30 minutes each, without the label column."""
    return make_frame(n_users=2, minutes=30, seed=3).drop(columns="label")


# --------------------------------------------------------------------------
# Entry points: the same frame through each way in
# --------------------------------------------------------------------------


def via_predict(booster, encoders, frame, **params):
    return taskclf.build_pipeline(booster, encoders, **params).predict(frame)


def via_transform(booster, encoders, frame, **params):
    return taskclf.build_pipeline(booster, encoders, **params).transform(frame)


def via_fit(booster, encoders, frame, **params):
    return taskclf.build_pipeline(booster, encoders, **params).fit(frame).predict(frame)


def via_batch(booster, encoders, frame, **params):
    from taskclf.infer.batch import run_batch_inference

    return run_batch_inference(booster, frame, cat_encoders=encoders, **params)


def _on_dask(frame):
    """A two-partition Dask frame of ``frame`` (anything else as it is)."""
    import dask.dataframe as dd

    if isinstance(frame, pd.DataFrame):
        return dd.from_pandas(frame, npartitions=2, sort=False)
    return frame


def via_dask_predict(booster, encoders, frame, **params):
    import dask

    from taskclf import distributed

    pipeline = taskclf.build_pipeline(booster, encoders, **params)
    with dask.config.set(scheduler="synchronous"):
        return distributed.predict(pipeline, _on_dask(frame)).compute()


def via_dask_transform(booster, encoders, frame, **params):
    import dask

    from taskclf import distributed

    pipeline = taskclf.build_pipeline(booster, encoders, **params)
    with dask.config.set(scheduler="synchronous"):
        return distributed.transform(pipeline, _on_dask(frame)).compute()


ENTRY_POINTS = {
    "pipeline.predict": via_predict,
    "pipeline.transform": via_transform,
    "pipeline.fit": via_fit,
    "run_batch_inference": via_batch,
    "distributed.predict": via_dask_predict,
    "distributed.transform": via_dask_transform,
}


def via_predict_proba(booster, encoders, frame, **params):
    from taskclf.infer.batch import predict_proba

    return predict_proba(booster, frame, encoders)


def via_predict_labels(booster, encoders, frame, **params):
    from sklearn.preprocessing import LabelEncoder

    from taskclf.infer.batch import predict_labels

    return predict_labels(booster, frame, LabelEncoder().fit(list(CLASS_ORDER)), encoders)


FEATURE_ENTRY_POINTS = {
    **ENTRY_POINTS,
    "predict_proba": via_predict_proba,
    "predict_labels": via_predict_labels,
}
"""Entry points that read feature columns only (no timestamps)."""


# --------------------------------------------------------------------------
# Bad frames
# --------------------------------------------------------------------------


def _nat_at(frame, row):
    ts = frame["bucket_start_ts"].copy()
    ts.iloc[row] = pd.NaT
    return frame.assign(bucket_start_ts=ts)


def _text_ts(frame, row, text):
    ts = frame["bucket_start_ts"].map(lambda t: t.isoformat()).astype(object)
    ts.iloc[row] = text
    return frame.assign(bucket_start_ts=ts)


def _duplicate(frame, row):
    return pd.concat([frame, frame.iloc[[row]]], ignore_index=True)


class VALUE(str):
    """A word of the message naming a value: Dask refuses a column by its dtype
    while building the graph on an empty frame, before any value is read."""


FEATURE_CASES = {
    "missing feature columns": (
        lambda f: f.drop(columns=["keys_per_min", "app_id", "hour_of_day"]),
        MissingColumnsError,
        ("3 required column(s)", "'keys_per_min'", "'app_id'", "'hour_of_day'"),
    ),
    "text in a numeric column": (
        lambda f: f.assign(keys_per_min="fast"),
        ColumnTypeError,
        ("'keys_per_min'", VALUE("'fast'")),
    ),
    "words in a boolean column": (
        lambda f: f.assign(is_browser=np.where(f["is_browser"], "yes", "no")),
        ColumnTypeError,
        ("'is_browser'", VALUE("'no'")),
    ),
    "timestamps in a numeric column": (
        lambda f: f.assign(hour_of_day=f["bucket_start_ts"]),
        ColumnTypeError,
        ("'hour_of_day'", "datetime64"),
    ),
    "complex numbers": (
        lambda f: f.assign(mouse_distance=f["mouse_distance"] + 1j),
        ColumnTypeError,
        ("'mouse_distance'", "complex"),
    ),
    "lists in a numeric column": (
        lambda f: f.assign(clicks_per_min=[[1, 2]] * len(f)),
        ColumnTypeError,
        ("'clicks_per_min'", VALUE("[1, 2]")),
    ),
    "another schema version": (
        lambda f: f.assign(schema_version="v2"),
        SchemaMismatchError,
        ("v2",),
    ),
    "an unknown schema version": (
        lambda f: f.assign(schema_version="v9"),
        SchemaMismatchError,
        ("'v9'",),
    ),
    "another schema hash": (
        lambda f: f.assign(schema_version="v1", schema_hash="a15f4751a947"),
        SchemaMismatchError,
        ("schema_hash", "'a15f4751a947'", "4077fe0dba70"),
    ),
}

TIMELINE_CASES = {
    "no bucket_start_ts": (
        lambda f: f.drop(columns="bucket_start_ts"),
        MissingColumnsError,
        ("'bucket_start_ts'",),
    ),
    "a missing timestamp": (
        lambda f: _nat_at(f, 7),
        TimestampError,
        ("'bucket_start_ts'", "1 missing", "row 7"),
    ),
    "an unparseable timestamp": (
        lambda f: _text_ts(f, 4, "half past nine"),
        TimestampError,
        ("'bucket_start_ts'", "'half past nine'", "row 4"),
    ),
    "numbers as timestamps": (
        lambda f: f.assign(bucket_start_ts=np.arange(len(f)) * 60),
        TimestampError,
        ("'bucket_start_ts'", "int64"),
    ),
    "a duplicate (user_id, bucket_start_ts) row": (
        lambda f: _duplicate(f, 35),
        DuplicateRowsError,
        ("1 duplicate", "'user1'", "2025-01-06T09:05:00+00:00"),
    ),
    "a missing user_id": (
        lambda f: f.assign(user_id=f["user_id"].where(f.index != 12)),
        ColumnTypeError,
        ("'user_id'", "1 missing", "row 12"),
    ),
}


def _cases(cases, entry_points):
    return [
        pytest.param(entry, *case, id=f"{name} @ {entry}")
        for name, case in cases.items()
        for entry in entry_points
    ]


@pytest.fixture(scope="module")
def labelled_frame(frame) -> pd.DataFrame:
    """``frame`` with its true labels in a ``label`` column."""
    source = make_frame(n_users=2, minutes=30, seed=3)
    return frame.assign(label=source["label"].to_numpy())


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory, booster_v1, encoders_v1) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "model.taskclf"
    taskclf.save_bundle(taskclf.build_pipeline(booster_v1, encoders_v1, reject_threshold=0.5), path)
    return path


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, booster_v1, encoders_v1) -> Path:
    calibrator = taskclf.TemperatureCalibrator
    store = taskclf.CalibratorStore(calibrator(1.4), {"user0": calibrator(0.6)})
    pipeline = taskclf.build_pipeline(
        booster_v1, encoders_v1, reject_threshold=0.5, calibrator_store=store
    )
    return taskclf.export_bundle_dir(pipeline, tmp_path_factory.mktemp("bundles") / "model")


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, frame, labelled_frame, bundle_file, bundle_dir) -> dict[str, Path]:
    """Real input files for the taskclf command."""
    from taskclf._readers import write_features

    root = tmp_path_factory.mktemp("cli")
    files = {"bundle": bundle_file, "bundle_dir": bundle_dir, "root": root}

    def csv(name: str, table: pd.DataFrame) -> None:
        files[name] = write_features(table, root / f"{name}.csv")

    csv("features", frame)
    csv("labelled_frame", labelled_frame)
    csv("empty", frame.iloc[:0])
    csv("labelled_empty", labelled_frame.iloc[:0])
    csv("labelled_missing", labelled_frame.drop(columns=["keys_per_min", "app_id"]))
    csv("unseen", frame.assign(app_id="app-never-seen", user_id=frame["user_id"] + "-new"))
    csv("missing", frame.drop(columns=["keys_per_min", "app_id"]))
    csv("duplicates", pd.concat([frame, frame.iloc[[4]]], ignore_index=True))
    csv("v2_declared", frame.assign(schema_version="v2"))
    csv(
        "unlabelled_known",
        labelled_frame.assign(label=labelled_frame["label"].where(frame.index != 2, "Coding")),
    )
    bad_ts = frame["bucket_start_ts"].map(lambda t: t.isoformat()).astype(object)
    bad_ts.iloc[5] = "half past nine"
    csv("bad_timestamps", frame.assign(bucket_start_ts=bad_ts))
    garbage = root / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 8)
    files["garbage"] = garbage
    flipped = bytearray(bundle_file.read_bytes())
    flipped[len(flipped) // 2] ^= 0x10
    files["flipped"] = root / "flipped.taskclf"
    files["flipped"].write_bytes(bytes(flipped))
    taxonomy = root / "taxonomy.yaml"
    taxonomy.write_text("buckets:\n  - name: Coding\n    core_labels: [Build, Programming]\n")
    files["taxonomy"] = taxonomy
    return files
