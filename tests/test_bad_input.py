"""Bad input at every entry point (DESIGN §5): a specific error naming the problem.

Each case is run through every entry point it applies to, and asserts the
exact exception class from :mod:`taskclf.exceptions` and the words of its
message (the column, value or file). An empty frame gives an empty result
and unseen category values are not errors. Writers leave no output file
when they refuse.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dask
import dask.dataframe as dd
import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, train_booster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GroupKFold

from taskclf import (
    CalibratorStore,
    TemperatureCalibrator,
    build_pipeline,
    distributed,
    export_bundle_dir,
    frame_to_segments,
    load_bundle,
    load_bundle_dir,
    read_bundle_info,
    save_bundle,
)
from taskclf._columns import LABEL, PROBA_COLUMNS
from taskclf._readers import read_features, write_features
from taskclf.bundle import _PREFIX, FORMAT_VERSION, MAGIC, decode_bundle, encode_bundle
from taskclf.cli import main
from taskclf.core.schema import get_schema
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import (
    BundleError,
    ColumnTypeError,
    DuplicateRowsError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    ProbabilityShapeError,
    ReaderError,
    SchemaMismatchError,
    TaskclfError,
    TaxonomyError,
    TimestampError,
)
from taskclf.infer.batch import (
    predict_labels,
    predict_proba,
    read_segments_json,
    run_batch_inference,
    write_predictions_csv,
    write_segments_json,
)
from taskclf.infer.smooth import merge_short_segments, rolling_majority, segmentize
from taskclf.taxonomy import TaxonomyBucket, TaxonomyConfig, load_taxonomy, taxonomy_from_dict
from taskclf.tune import PostprocessingSearchCV

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
    return build_pipeline(booster, encoders, **params).predict(frame)


def via_transform(booster, encoders, frame, **params):
    return build_pipeline(booster, encoders, **params).transform(frame)


def via_fit(booster, encoders, frame, **params):
    return build_pipeline(booster, encoders, **params).fit(frame).predict(frame)


def via_batch(booster, encoders, frame, **params):
    return run_batch_inference(booster, frame, cat_encoders=encoders, **params)


def _on_dask(frame):
    """A two-partition Dask frame of ``frame`` (anything else as it is)."""
    if isinstance(frame, pd.DataFrame):
        return dd.from_pandas(frame, npartitions=2, sort=False)
    return frame


def via_dask_predict(booster, encoders, frame, **params):
    pipeline = build_pipeline(booster, encoders, **params)
    with dask.config.set(scheduler="synchronous"):
        return distributed.predict(pipeline, _on_dask(frame)).compute()


def via_dask_transform(booster, encoders, frame, **params):
    pipeline = build_pipeline(booster, encoders, **params)
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
    return predict_proba(booster, frame, encoders)


def via_predict_labels(booster, encoders, frame, **params):
    from sklearn.preprocessing import LabelEncoder

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


@pytest.mark.parametrize(
    ("entry", "mutate", "error", "words"),
    _cases(FEATURE_CASES, FEATURE_ENTRY_POINTS) + _cases(TIMELINE_CASES, ENTRY_POINTS),
)
def test_bad_frame_is_refused(entry, mutate, error, words, frame, booster_v1, encoders_v1):
    bad = mutate(frame)
    before = bad.copy(deep=True)
    if entry.startswith("distributed."):
        words = [w for w in words if not isinstance(w, VALUE)]
    refused(lambda: FEATURE_ENTRY_POINTS[entry](booster_v1, encoders_v1, bad), error, *words)
    pd.testing.assert_frame_equal(bad, before)


def test_missing_columns_error_lists_them(frame, booster_v1, encoders_v1):
    lacking = frame.drop(columns=["app_id", "mouse_distance"])
    error = refused(lambda: via_predict(booster_v1, encoders_v1, lacking), MissingColumnsError)
    assert sorted(error.columns) == ["app_id", "mouse_distance"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("value", [np.zeros((3, 4)), [[1, 2]], None, {"app_id": ["x"]}])
def test_not_a_frame_is_refused(entry, value, booster_v1, encoders_v1):
    where = {
        "run_batch_inference": "run_batch_inference",
        "distributed.predict": "taskclf.distributed.predict",
        "distributed.transform": "taskclf.distributed.transform",
    }.get(entry, "CategoricalEncoder")
    refused(
        lambda: ENTRY_POINTS[entry](booster_v1, encoders_v1, value),
        InputError,
        where,
        "DataFrame",
        type(value).__name__,
    )


# --------------------------------------------------------------------------
# Models that do not fit
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def booster_10_features() -> lgb.Booster:
    rng = np.random.default_rng(0)
    params = {"objective": "multiclass", "num_class": 8, "verbose": -1, "num_threads": 1}
    data = lgb.Dataset(rng.normal(size=(200, 10)), np.arange(200) % 8)
    return lgb.train(params, data, 2)


@pytest.mark.parametrize("entry", FEATURE_ENTRY_POINTS)
def test_probability_matrix_of_wrong_width(entry, frame, booster_3_classes, encoders_v1):
    refused(
        lambda: FEATURE_ENTRY_POINTS[entry](booster_3_classes, encoders_v1, frame),
        ProbabilityShapeError,
        ", 3)",  # (rows, 3): all rows, or one Dask partition's
        "(n, 8)",
    )


@pytest.mark.parametrize("entry", ["pipeline.predict", "pipeline.transform", "pipeline.fit"])
def test_booster_of_no_known_schema(entry, frame, booster_10_features, encoders_v1):
    refused(
        lambda: ENTRY_POINTS[entry](booster_10_features, encoders_v1, frame),
        SchemaMismatchError,
        "10 features",
    )


def test_schema_version_against_the_booster(frame, booster_v1, encoders_v1):
    refused(
        lambda: build_pipeline(booster_v1, encoders_v1, schema_version="v3").predict(frame),
        SchemaMismatchError,
        "v3",
        "299",
        "39",
    )


@pytest.mark.parametrize("column", PROBA_COLUMNS[:1] + PROBA_COLUMNS[-1:])
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("stage", ["calibrate", "reject"])
def test_missing_probabilities_are_refused(column, value, stage, frame, booster_v1, encoders_v1):
    pipeline = build_pipeline(booster_v1, encoders_v1, calibrator=None)
    position = [name for name, _ in pipeline.steps].index(stage)
    upstream = pipeline[:position].transform(frame)
    proba = upstream[column].to_numpy(copy=True)
    proba[9] = value
    bad = upstream.assign(**{column: proba})
    if stage == "calibrate":
        from taskclf import TemperatureCalibrator

        pipeline.set_params(calibrate__calibrator=TemperatureCalibrator(2.0))
    refused(lambda: pipeline[position:].transform(bad), InputError, repr(column), "row 9")


# --------------------------------------------------------------------------
# Parameters: at build time, set_params and the functional API
# --------------------------------------------------------------------------

BAD_PARAMETERS = [
    # (build_pipeline / run_batch_inference name, set_params name, value, words)
    ("reject_threshold", "reject__threshold", 1.5, ("threshold", "1.5")),
    ("reject_threshold", "reject__threshold", -0.01, ("threshold", "-0.01")),
    ("reject_threshold", "reject__threshold", float("nan"), ("threshold", "nan")),
    ("reject_threshold", "reject__threshold", "0.5", ("threshold", "'0.5'")),
    ("reject_threshold", "reject__threshold", True, ("threshold", "True")),
    ("smooth_window", "smooth__window", 0, ("window", "0")),
    ("smooth_window", "smooth__window", -3, ("window", "-3")),
    ("smooth_window", "smooth__window", 2.5, ("window", "2.5")),
    ("smooth_window", "smooth__window", None, ("window", "None")),
    ("bucket_seconds", "segment__bucket_seconds", 0, ("bucket_seconds", "0")),
    ("bucket_seconds", "merge__bucket_seconds", -60, ("bucket_seconds", "-60")),
    ("bucket_seconds", "segment__bucket_seconds", 60.0, ("bucket_seconds", "60.0")),
    ("max_gap_seconds", "smooth__max_gap_seconds", 0, ("max_gap_seconds", "0")),
    ("min_block_seconds", "merge__min_block_seconds", -1, ("min_block_seconds", "-1")),
]


@pytest.mark.parametrize(
    ("entry", "name", "value", "words"),
    [
        pytest.param(entry, name, value, words, id=f"{name}={value!r} @ {entry}")
        for name, _, value, words in BAD_PARAMETERS
        for entry in ("pipeline.predict", "pipeline.fit", "run_batch_inference")
        # the seed API has no gap or minimum-block parameter
        if entry != "run_batch_inference" or name not in ("max_gap_seconds", "min_block_seconds")
    ],
)
def test_bad_parameter_is_refused(entry, name, value, words, frame, booster_v1, encoders_v1):
    refused(
        lambda: ENTRY_POINTS[entry](booster_v1, encoders_v1, frame, **{name: value}),
        InvalidParameterError,
        *words,
    )


@pytest.mark.parametrize(("_", "param", "value", "words"), BAD_PARAMETERS)
def test_set_params_refuses_and_keeps_the_old_value(
    _, param, value, words, frame, booster_v1, encoders_v1
):
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.4)
    before = pipeline.get_params()[param]
    expected = pipeline.predict(frame)
    refused(lambda: pipeline.set_params(**{param: value}), InvalidParameterError, *words)
    assert pipeline.get_params()[param] == before
    np.testing.assert_array_equal(pipeline.predict(frame), expected)


@pytest.mark.parametrize("threshold", [0.0, 1.0, None])
@pytest.mark.parametrize("window", [1, 2])
def test_parameters_on_the_boundary_are_accepted(threshold, window, frame, booster_v1, encoders_v1):
    pipeline = build_pipeline(booster_v1, encoders_v1)
    pipeline.set_params(reject__threshold=threshold, smooth__window=window)
    labels = pipeline.predict(frame)
    assert len(labels) == len(frame)
    if threshold == 1.0:  # nothing is certain: every bucket is rejected
        assert set(labels) == {MIXED_UNKNOWN}
    if threshold == 0.0:
        assert MIXED_UNKNOWN not in set(labels)


# --------------------------------------------------------------------------
# Not errors: empty frames, unseen values
# --------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_empty_frame_gives_an_empty_result(entry, frame, booster_v1, encoders_v1):
    empty = frame.iloc[:0]
    result = ENTRY_POINTS[entry](booster_v1, encoders_v1, empty)
    if entry == "run_batch_inference":
        assert result.raw_labels == [] and result.smoothed_labels == [] and result.segments == []
        assert result.core_probs.shape == (0, 8)
        assert result.confidences.shape == (0,) and result.is_rejected.shape == (0,)
    elif entry == "pipeline.transform":
        assert len(result) == 0
        assert set(PROBA_COLUMNS) | {LABEL} <= set(result.columns)
        assert list(result.columns[: empty.shape[1]]) == list(empty.columns)
    else:
        assert len(result) == 0


def test_empty_frame_through_the_functional_api(frame, booster_v1, encoders_v1, tmp_path):
    empty = frame.iloc[:0]
    assert predict_proba(booster_v1, empty, encoders_v1).shape == (0, 8)
    result = run_batch_inference(booster_v1, empty, cat_encoders=encoders_v1)
    csv = write_predictions_csv(empty, result.raw_labels, tmp_path / "p.csv")
    assert pd.read_csv(csv).shape == (0, 2)
    segments = write_segments_json(result.segments, tmp_path / "s.json")
    assert read_segments_json(segments) == []


UNSEEN = {
    "an unseen app": lambda f: f.assign(app_id="app-never-seen"),
    "unseen users": lambda f: f.assign(user_id=f["user_id"].map({"user0": "zed", "user1": "ann"})),
    "a missing category": lambda f: f.assign(domain_category=None),
    "categories with unused values": lambda f: f.assign(
        app_category=pd.Categorical(f["app_category"], categories=["other", "dev", "zzz"])
    ),
    "integer user ids": lambda f: f.assign(user_id=f["user_id"].str[-1].astype(int)),
    "numbers as app ids": lambda f: f.assign(app_id=np.arange(len(f))),
}


@pytest.mark.parametrize("mutate", UNSEEN.values(), ids=UNSEEN.keys())
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_unseen_category_values_are_not_errors(entry, mutate, frame, booster_v1, encoders_v1):
    odd = mutate(frame)
    result = ENTRY_POINTS[entry](booster_v1, encoders_v1, odd)
    if entry == "run_batch_inference":
        assert len(result.raw_labels) == len(frame)
        assert np.allclose(result.core_probs.sum(axis=1), 1.0)
    else:
        assert len(result) == len(frame)


def test_numbers_in_object_columns_are_numbers(frame, booster_v1, encoders_v1):
    # concatenation with missing values, or JSON, leaves numbers in object columns
    as_object = frame.assign(
        keys_per_min=frame["keys_per_min"].astype(object).where(frame.index != 3, None),
        hour_of_day=frame["hour_of_day"].astype(object),
    )
    reference = frame.assign(keys_per_min=frame["keys_per_min"].where(frame.index != 3))
    np.testing.assert_array_equal(
        via_predict(booster_v1, encoders_v1, as_object),
        via_predict(booster_v1, encoders_v1, reference),
    )
    refused(
        lambda: via_predict(
            booster_v1, encoders_v1, as_object.assign(hour_of_day=["9"] + [9] * (len(frame) - 1))
        ),
        ColumnTypeError,
        "'hour_of_day'",
        "'9'",
    )


# --------------------------------------------------------------------------
# Writers and readers of the functional API
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value", "words"),
    [
        ("labels", ["Build"], ("labels has 1 values", "60 rows")),
        ("confidences", np.ones(5), ("confidences has 5 values",)),
        ("is_rejected", np.zeros(61, bool), ("is_rejected has 61 values",)),
        ("core_probs", np.full((60, 3), 1 / 3), ("core_probs", "(60, 3)")),
    ],
)
def test_prediction_writer_refuses_and_writes_nothing(argument, value, words, frame, tmp_path):
    target = tmp_path / "out" / "predictions.csv"
    kwargs = {"labels": ["Build"] * len(frame), argument: value}
    error = ProbabilityShapeError if argument == "core_probs" else InputError
    refused(lambda: write_predictions_csv(frame, path=target, **kwargs), error, *words)
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_prediction_writer_keeps_the_old_file_when_refusing(frame, tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old,content\n")
    refused(
        lambda: write_predictions_csv(frame, ["Build"], target),
        InputError,
        "labels has 1 values",
    )
    assert target.read_text() == "old,content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


T0, T1 = "2025-01-06T09:00:00", "2025-01-06T09:01:00"
SEGMENT_FILES = {
    "not JSON": (b"[{'start_ts': 1}", "cannot read segments file"),
    "binary garbage": (bytes(range(256)) * 4, "cannot read segments file"),
    "empty": (b"", "cannot read segments file"),
    "an object, not a list": (b'{"start_ts": "2025-01-06T09:00:00"}', "must hold a JSON list"),
    "a record without a label": (
        json.dumps([{"start_ts": T0, "end_ts": T1, "bucket_count": 1}]).encode(),
        "record 0",
    ),
    "a bad timestamp": (
        json.dumps(
            [
                {
                    "start_ts": "2025-01-06T09:00:00",
                    "end_ts": "2025-01-06T09:01:00",
                    "label": "Build",
                    "bucket_count": 1,
                },
                {"start_ts": "soon", "end_ts": "later", "label": "Build", "bucket_count": 1},
            ]
        ).encode(),
        "record 1",
    ),
    "a zero bucket count": (
        json.dumps(
            [
                {
                    "start_ts": "2025-01-06T09:00:00",
                    "end_ts": "2025-01-06T09:01:00",
                    "label": "Build",
                    "bucket_count": 0,
                }
            ]
        ).encode(),
        "record 0",
    ),
    "a record that is a list": (b"[[1, 2, 3]]", "record 0"),
}


@pytest.mark.parametrize(("content", "words"), SEGMENT_FILES.values(), ids=SEGMENT_FILES.keys())
def test_segment_reader_names_the_file(content, words, tmp_path):
    path = tmp_path / "odd segments.json"
    path.write_bytes(content)
    refused(lambda: read_segments_json(path), ReaderError, str(path), words)


def test_segment_reader_names_a_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "segments.json"
    refused(lambda: read_segments_json(path), ReaderError, str(path))


# --------------------------------------------------------------------------
# Taxonomies: files, configurations and the taxonomy argument
# --------------------------------------------------------------------------

GOOD_BUCKET = "  - name: Coding\n    core_labels: [Build, Debug]\n"
TAXONOMY_FILES = {
    "an unknown core label": (
        "buckets:\n  - name: Coding\n    core_labels: [Build, Coding]\n",
        TaxonomyError,
        ("unknown core label", "'Coding'"),
    ),
    "a lower-case core label": (
        "buckets:\n  - name: Coding\n    core_labels: [build]\n",
        TaxonomyError,
        ("'build'",),
    ),
    "Mixed/Unknown as a core label": (
        "buckets:\n  - name: Odd\n    core_labels: [Mixed/Unknown]\n",
        TaxonomyError,
        ("'Mixed/Unknown'",),
    ),
    "a bad colour": (
        "buckets:\n  - name: Coding\n    core_labels: [Build]\n    color: red\n",
        TaxonomyError,
        ("color", "'red'"),
    ),
    "two buckets of one name": (
        "buckets:\n" + GOOD_BUCKET + GOOD_BUCKET.replace("Build, Debug", "Review"),
        TaxonomyError,
        ("unique", "Coding"),
    ),
    "no buckets": ("version: 1\n", TaxonomyError, ("'buckets'",)),
    "an unknown key": (
        "buckets:\n" + GOOD_BUCKET + "colour_theme: dark\n",
        TaxonomyError,
        ("'colour_theme'",),
    ),
    "a list at the top": ("- Build\n- Debug\n", TaxonomyError, ("mapping", "list")),
    "an empty file": ("", TaxonomyError, ("empty",)),
    "invalid YAML": ("buckets: [\n  - name: {\n", ReaderError, ("not valid YAML", "line")),
    "a negative weight": (
        "buckets:\n" + GOOD_BUCKET + "advanced:\n  reweight_core_labels: {Build: -1}\n",
        TaxonomyError,
        ("'Build'", "-1"),
    ),
}


@pytest.mark.parametrize(
    ("text", "error", "words"), TAXONOMY_FILES.values(), ids=TAXONOMY_FILES.keys()
)
def test_taxonomy_file_is_refused_naming_the_file(text, error, words, tmp_path):
    path = tmp_path / "my taxonomy.yaml"
    path.write_text(text, encoding="utf-8")
    refused(lambda: load_taxonomy(path), error, str(path), *words)


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"\xff\xfe\x00garbage\x80", "not UTF-8"), (None, "no such file")],
    ids=["binary garbage", "a missing file"],
)
def test_unreadable_taxonomy_file_is_refused_naming_the_file(content, words, tmp_path):
    path = tmp_path / "taxonomy.yaml"
    if content is not None:
        path.write_bytes(content)
    refused(lambda: load_taxonomy(path), ReaderError, str(path), words)


def test_unknown_label_in_a_taxonomy_built_in_python():
    refused(
        lambda: TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Programming"])]),
        TaxonomyError,
        "'Programming'",
        "Coding",
    )
    refused(
        lambda: taxonomy_from_dict({"buckets": [{"name": "X", "core_labels": ["Slack"]}]}),
        TaxonomyError,
        "'Slack'",
    )


@pytest.mark.parametrize("value", ["taxonomy.yaml", {"buckets": []}, 3])
@pytest.mark.parametrize("entry", ["pipeline.predict", "pipeline.transform", "pipeline.fit"])
def test_taxonomy_argument_of_the_wrong_type(entry, value, frame, booster_v1, encoders_v1):
    refused(
        lambda: ENTRY_POINTS[entry](booster_v1, encoders_v1, frame, taxonomy=value),
        InvalidParameterError,
        "TaxonomyConfig",
        type(value).__name__,
    )


def test_taxonomy_argument_of_the_wrong_type_in_run_batch_inference(frame, booster_v1, encoders_v1):
    refused(
        lambda: via_batch(booster_v1, encoders_v1, frame, taxonomy="taxonomy.yaml"),
        InvalidParameterError,
        "TaxonomyConfig",
        "str",
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_taxonomy_changes_no_core_label(entry, frame, booster_v1, encoders_v1):
    config = TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug"])])
    plain = ENTRY_POINTS[entry](booster_v1, encoders_v1, frame, reject_threshold=0.5)
    mapped = ENTRY_POINTS[entry](
        booster_v1, encoders_v1, frame, reject_threshold=0.5, taxonomy=config
    )
    if entry == "run_batch_inference":
        assert mapped.raw_labels == plain.raw_labels and mapped.segments == plain.segments
        assert len(mapped.mapped_labels) == len(frame)
    elif entry.endswith(".transform"):
        pd.testing.assert_frame_equal(mapped[plain.columns], plain)
        assert set(mapped["mapped_label"].astype(str)) <= {"Coding", "Other", MIXED_UNKNOWN}
    else:
        np.testing.assert_array_equal(mapped, plain)


# --------------------------------------------------------------------------
# The list forms of the functional API and frame_to_segments
# --------------------------------------------------------------------------

STARTS = [dt.datetime(2025, 1, 6, 9, m) for m in range(4)]
LABELS = ["Build", "Build", "Debug", "Build"]


def _segments():
    return segmentize(STARTS, LABELS)


LIST_CASES = {
    "rolling_majority window 0": (
        lambda: rolling_majority(LABELS, window=0),
        InvalidParameterError,
        ("window", "0"),
    ),
    "rolling_majority window 1.5": (
        lambda: rolling_majority(LABELS, window=1.5),
        InvalidParameterError,
        ("window", "1.5"),
    ),
    "rolling_majority a missing label": (
        lambda: rolling_majority(["Build", None, "Build"]),
        InputError,
        ("missing", "position 1"),
    ),
    "segmentize bucket width 0": (
        lambda: segmentize(STARTS, LABELS, bucket_seconds=0),
        InvalidParameterError,
        ("bucket_seconds", "0"),
    ),
    "segmentize lengths differ": (
        lambda: segmentize(STARTS, LABELS[:2]),
        InputError,
        ("4 values", "2"),
    ),
    "segmentize a bad timestamp": (
        lambda: segmentize(["2025-01-06T09:00", "teatime"], ["Build", "Build"]),
        TimestampError,
        ("'teatime'",),
    ),
    "merge_short_segments negative bucket width": (
        lambda: merge_short_segments(_segments(), bucket_seconds=-60),
        InvalidParameterError,
        ("bucket_seconds", "-60"),
    ),
    "merge_short_segments negative duration": (
        lambda: merge_short_segments(_segments(), min_duration_seconds=-1),
        InvalidParameterError,
        ("min_block_seconds", "-1"),
    ),
    "frame_to_segments without segment_id": (
        lambda: frame_to_segments(pd.DataFrame({"bucket_start_ts": STARTS, "label": LABELS})),
        MissingColumnsError,
        ("'segment_id'",),
    ),
    "frame_to_segments bucket width 0": (
        lambda: frame_to_segments(
            pd.DataFrame({"bucket_start_ts": STARTS, "label": LABELS, "segment_id": [0] * 4}),
            bucket_seconds=0,
        ),
        InvalidParameterError,
        ("bucket_seconds", "0"),
    ),
}


@pytest.mark.parametrize(("call", "error", "words"), LIST_CASES.values(), ids=LIST_CASES.keys())
def test_list_forms_refuse_bad_input(call, error, words):
    refused(call, error, *words)


def test_list_forms_of_nothing_are_nothing():
    assert rolling_majority([]) == []
    assert segmentize([], []) == []
    assert merge_short_segments([]) == []
    empty = pd.DataFrame({"bucket_start_ts": [], "label": [], "segment_id": []})
    assert frame_to_segments(empty) == []


# --------------------------------------------------------------------------
# Training: build_pipeline(booster=None).fit(frame, y), and tuning
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(frame) -> pd.DataFrame:
    """``frame`` with its true labels in a ``label`` column."""
    source = make_frame(n_users=2, minutes=30, seed=3)
    return frame.assign(label=source["label"].to_numpy())


def train(frame: pd.DataFrame, y=None, **params):
    """Fit a fresh pipeline (small, single-threaded) on ``frame`` and ``y``."""
    defaults = {"num_boost_round": 3, "num_threads": 1, "n_folds": 2}
    return build_pipeline(**{**defaults, **params}).fit(frame, y)


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        pytest.param(*case, id=name)
        for name, case in {**FEATURE_CASES, **TIMELINE_CASES}.items()
        # a frame saying "v2" is trained as v2 (v1's features less user_id): no model to differ
        if name != "another schema version"
    ],
)
def test_bad_frame_is_refused_in_training(mutate, error, words, labelled):
    bad = mutate(labelled)
    y = bad.pop("label")
    refused(lambda: train(bad, y), error, *words)


LABEL_CASES = {
    "no labels": (lambda y: None, ("pass y",)),
    "too few labels": (lambda y: y[:5], ("y has 5 labels", "60 rows")),
    "an unknown label": (lambda y: y.where(y.index != 3, "Coding"), ("'Coding'", "row 3")),
    "a missing label": (lambda y: y.where(y.index != 8), ("nan", "row 8")),
    "Mixed/Unknown as a label": (
        lambda y: y.where(y.index != 0, MIXED_UNKNOWN),
        ("'Mixed/Unknown'", "row 0"),
    ),
    "labels as numbers": (lambda y: np.arange(len(y)) % 8, ("row 0",)),
}


@pytest.mark.parametrize(("change", "words"), LABEL_CASES.values(), ids=LABEL_CASES.keys())
def test_bad_labels_are_refused(change, words, labelled):
    frame = labelled.drop(columns="label")
    refused(lambda: train(frame, change(labelled["label"])), InputError, *words)


TRAINING_PARAMETERS = {
    "an unknown calibration": ({"calibration": "platt"}, ("method", "'platt'")),
    "no boosting rounds": ({"num_boost_round": 0}, ("num_boost_round", "0")),
    "one fold": ({"n_folds": 1}, ("n_folds", "1")),
    "a weight for an unknown label": ({"class_weight": {"Coding": 2.0}}, ("'Coding'",)),
    "a negative weight": ({"class_weight": {"Build": -1.0}}, ("class_weight", "-1.0")),
    "negative threads": ({"num_threads": -2}, ("num_threads", "-2")),
    "LightGBM refuses its parameters": (
        {"booster_params": {"num_leaves": -5}},
        ("LightGBM", "num_leaves"),
    ),
    "another number of classes": ({"booster_params": {"num_class": 3}}, ("num_class",)),
}


@pytest.mark.parametrize(
    ("params", "words"), TRAINING_PARAMETERS.values(), ids=TRAINING_PARAMETERS.keys()
)
def test_bad_training_parameter_is_refused(params, words, labelled):
    frame = labelled.drop(columns="label")
    refused(lambda: train(frame, labelled["label"], **params), InvalidParameterError, *words)


def test_training_on_nothing_is_refused_but_predicting_nothing_is_empty(labelled):
    frame, y = labelled.drop(columns="label"), labelled["label"]
    refused(lambda: train(frame.iloc[:0], y.iloc[:0]), InputError, "empty")
    fitted = train(frame, y)
    assert fitted.predict(frame.iloc[:0]).shape == (0,)
    assert len(fitted.transform(frame.iloc[:0])) == 0


def test_an_untrained_pipeline_refuses_to_predict(frame):
    with pytest.raises(SklearnNotFittedError) as caught:
        build_pipeline().predict(frame)
    assert "fit" in str(caught.value)


def test_unseen_values_after_training_are_not_errors(labelled):
    frame, y = labelled.drop(columns="label"), labelled["label"]
    fitted = train(frame, y)
    strangers = frame["user_id"].map({"user0": "zed", "user1": "ann"})
    odd = frame.assign(app_id="app-never-seen", user_id=strangers, domain_category=None)
    assert len(fitted.predict(odd)) == len(frame)


def _search(**kwargs):
    params = {
        "param_grid": {"reject__threshold": [0.3, 0.6]},
        "scoring": "accuracy",
        "cv": GroupKFold(2),
        **kwargs,
    }
    pipeline = build_pipeline(num_boost_round=2, num_threads=1, n_folds=2)
    return PostprocessingSearchCV(pipeline, **params)


TUNING_CASES = {
    "a threshold above 1": (
        {"param_grid": {"reject__threshold": [0.5, 1.5]}},
        InvalidParameterError,
        ("threshold", "1.5"),
    ),
    "a window of 0": (
        {"param_grid": {"smooth__window": [3, 0]}},
        InvalidParameterError,
        ("window", "0"),
    ),
    "a step that does not exist": (
        {"param_grid": {"rejekt__threshold": [0.5]}},
        InvalidParameterError,
        ("'rejekt__threshold'", "steps are"),
    ),
    "an empty grid": (
        {"param_grid": {"reject__threshold": []}},
        InvalidParameterError,
        ("param_grid", "reject__threshold"),
    ),
    "an unknown scorer": (
        {"scoring": "segmental_f1@99"},
        InvalidParameterError,
        ("'segmental_f1@99'", "segmental_f1@50"),
    ),
}


@pytest.mark.parametrize(("kwargs", "error", "words"), TUNING_CASES.values(), ids=TUNING_CASES)
def test_tuning_refuses_bad_searches_before_any_work(kwargs, error, words, labelled):
    frame, y = labelled.drop(columns="label"), labelled["label"]
    refused(lambda: _search(**kwargs).fit(frame, y, groups=frame["user_id"]), error, *words)


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        pytest.param(*TIMELINE_CASES["a duplicate (user_id, bucket_start_ts) row"], id="dup"),
        pytest.param(*FEATURE_CASES["missing feature columns"], id="missing"),
    ],
)
def test_tuning_refuses_bad_frames(mutate, error, words, labelled):
    bad = mutate(labelled)
    y = bad.pop("label")
    refused(lambda: _search().fit(bad, y, groups=bad["user_id"]), error, *words)


# --------------------------------------------------------------------------
# Bundle files (save_bundle / load_bundle): damaged anywhere, a clear refusal
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory, booster_v1, encoders_v1) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "model.taskclf"
    save_bundle(build_pipeline(booster_v1, encoders_v1, reject_threshold=0.5), path)
    return path


def _regions(data: bytes) -> dict[str, int]:
    """Offsets of the parts of a bundle file: magic, version, header length,
    the JSON header (and its metadata), the header digest, the payload."""
    header_start = _PREFIX.size
    header_length = _PREFIX.unpack_from(data)[2]
    digest_start = header_start + header_length
    payload_start = digest_start + 32
    return {
        "magic": 3,
        "format version": len(MAGIC) + 1,
        "header length": len(MAGIC) + 4,
        "header start": header_start,
        "metadata (schema hash)": data.index(b"4077fe0dba70"),
        "header end": digest_start - 1,
        "header digest": digest_start + 7,
        "payload start": payload_start,
        "payload middle": (payload_start + len(data)) // 2,
        "payload end": len(data) - 1,
    }


def _flipped(data: bytes, region: str) -> bytes:
    damaged = bytearray(data)
    damaged[_regions(data)[region]] ^= 0x5A
    return bytes(damaged)


def _truncated(data: bytes, where: str) -> bytes:
    regions = _regions(data)
    keep = {
        "to nothing": 0,
        "inside the magic": 6,
        "after the prefix": _PREFIX.size,
        "inside the header": regions["header start"] + 40,
        "before the payload": regions["payload start"],
        "inside the payload": regions["payload middle"],
        "by one byte": len(data) - 1,
    }[where]
    return data[:keep]


def _other_schema(data: bytes) -> bytes:
    """A well-formed bundle (digests recomputed) whose metadata names another schema."""
    header, payload = decode_bundle(data, "bundle")
    header["metadata"]["schema_version"] = "v2"
    header["metadata"]["schema_hash"] = "a15f4751a947"
    return encode_bundle(header, payload)


def _unknown_schema(data: bytes) -> bytes:
    header, payload = decode_bundle(data, "bundle")
    header["metadata"]["schema_hash"] = "0123456789ab"
    return encode_bundle(header, payload)


def _raw_bundle(header_text: bytes, payload: bytes) -> bytes:
    """A bundle file around a header text of our own (its digest recomputed)."""
    return b"".join(
        (
            _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_text)),
            header_text,
            hashlib.sha256(header_text).digest(),
            payload,
        )
    )


def _huge_number_in_header(data: bytes) -> bytes:
    header, payload = decode_bundle(data, "bundle")
    text = json.dumps(header).replace('"metadata"', '"x": 1' + "0" * 5000 + ', "metadata"', 1)
    return _raw_bundle(text.encode(), payload)


def _nesting_bomb_header(data: bytes) -> bytes:
    _, payload = decode_bundle(data, "bundle")
    return _raw_bundle(b"[" * 200_000 + b"]" * 200_000, payload)


_REGION_NAMES = (
    "magic",
    "format version",
    "header length",
    "header start",
    "metadata (schema hash)",
    "header end",
    "header digest",
    "payload start",
    "payload middle",
    "payload end",
)
BUNDLE_DAMAGE = {
    **{
        f"a flipped byte: {region}": (lambda d, r=region: _flipped(d, r), ())
        for region in _REGION_NAMES
    },
    **{
        f"truncated {where}": (lambda d, w=where: _truncated(d, w), ())
        for where in (
            "to nothing",
            "inside the magic",
            "after the prefix",
            "inside the header",
            "before the payload",
            "inside the payload",
            "by one byte",
        )
    },
    "bytes appended": (lambda d: d + b"\x00extra", ()),
    "a CSV file": (
        lambda d: b"user_id,bucket_start_ts\nu1,2025-01-06T09:00:00\n",
        ("not a taskclf",),
    ),
    "binary garbage": (lambda d: bytes(range(256)) * 64, ("not a taskclf",)),
    "a plain joblib pickle": (lambda d: _joblib_bytes(), ("not a taskclf",)),
    "a 5000-digit number in the header": (_huge_number_in_header, ("not JSON",)),
    "a nesting bomb as the header": (_nesting_bomb_header, ("not JSON",)),
}
SCHEMA_DAMAGE = {
    "another schema's metadata": (_other_schema, ("v2",)),
    "an unknown schema hash": (_unknown_schema, ("0123456789ab",)),
}
"""Well-formed files whose metadata this taskclf refuses to load (read_bundle_info
reads them: it reports what a file says)."""


def _joblib_bytes() -> bytes:
    buffer = io.BytesIO()
    joblib.dump({"not": "a bundle"}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("entry", "damage", "words"),
    [
        pytest.param(entry, damage, words, id=f"{name} @ {entry}")
        for entries, cases in (
            (("load_bundle", "read_bundle_info"), BUNDLE_DAMAGE),
            (("load_bundle",), SCHEMA_DAMAGE),
        )
        for name, (damage, words) in cases.items()
        for entry in entries
    ],
)
def test_damaged_bundle_file_is_refused_naming_it(entry, damage, words, bundle_file, tmp_path):
    path = tmp_path / "damaged model.taskclf"
    path.write_bytes(damage(bundle_file.read_bytes()))
    loader = load_bundle if entry == "load_bundle" else read_bundle_info
    refused(lambda: loader(path), BundleError, str(path), *words)


class _Trap:
    """Unpickling this object creates a marker file: proof that a loader unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_is_never_unpickled_unverified(tmp_path):
    marker = tmp_path / "unpickled"
    for name, data in {
        "trap.taskclf": pickle.dumps(_Trap(marker)),
        "trap.joblib": _dump_joblib(_Trap(marker)),
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        refused(lambda p=path: load_bundle(p), BundleError, str(path), "not a taskclf bundle")
    assert not marker.exists()


def _dump_joblib(value) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer)
    return buffer.getvalue()


def test_a_pickle_inside_a_forged_bundle_is_refused_by_its_digest(bundle_file, tmp_path):
    # same header, payload swapped for a trap: the recorded payload digest differs
    marker = tmp_path / "unpickled"
    header, _ = decode_bundle(bundle_file.read_bytes(), "bundle")
    trap = _dump_joblib(_Trap(marker))
    data = bundle_file.read_bytes()
    forged = data[: _regions(data)["payload start"]] + trap
    path = tmp_path / "forged.taskclf"
    path.write_bytes(forged)
    refused(lambda: load_bundle(path), BundleError, str(path))
    assert not marker.exists()
    assert header["payload"]["sha256"] != hashlib.sha256(trap).hexdigest()


def test_bundle_refusals_for_a_missing_file_and_a_directory(tmp_path):
    refused(lambda: load_bundle(tmp_path / "absent.taskclf"), BundleError, "absent.taskclf")
    refused(lambda: load_bundle(tmp_path), BundleError, str(tmp_path), "directory")


def test_pinned_digest_mismatch_is_refused(bundle_file):
    refused(
        lambda: load_bundle(bundle_file, sha256="0" * 64),
        BundleError,
        str(bundle_file),
        "SHA-256",
    )


def test_a_v2_bundle_refuses_a_frame_of_schema_v1(frame, tmp_path):
    v2 = make_frame(n_users=2, minutes=60, schema_version="v2", seed=8)
    booster, encoders = train_booster(v2, schema_version="v2", rounds=3)
    path = tmp_path / "v2.taskclf"
    save_bundle(build_pipeline(booster, encoders), path)
    pipeline = load_bundle(path)
    assert pipeline.predict(v2.drop(columns="label")).shape == (len(v2),)
    refused(
        lambda: pipeline.predict(frame.assign(schema_version="v1")),
        SchemaMismatchError,
        "'v1'",
        "v2",
    )


# --------------------------------------------------------------------------
# Pickle-free bundle directories: hostile JSON and model text
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, booster_v1, encoders_v1) -> Path:
    store = CalibratorStore(TemperatureCalibrator(1.4), {"user0": TemperatureCalibrator(0.6)})
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.5, calibrator_store=store)
    return export_bundle_dir(pipeline, tmp_path_factory.mktemp("bundles") / "model")


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite(directory: Path, name: str, text: str | bytes) -> None:
    """Replace one file and record its new digest, as a forger would."""
    data = text.encode() if isinstance(text, str) else text
    (directory / name).write_bytes(data)
    manifest = json.loads((directory / "bundle.json").read_text())
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    (directory / "bundle.json").write_text(json.dumps(manifest))


def _edit_manifest(change):
    def apply(directory: Path) -> str:
        manifest = json.loads((directory / "bundle.json").read_text())
        change(manifest)
        (directory / "bundle.json").write_text(json.dumps(manifest))
        return "bundle.json"

    return apply


def _raw_manifest(text: str):
    def apply(directory: Path) -> str:
        (directory / "bundle.json").write_text(text)
        return "bundle.json"

    return apply


def _edit_pipeline(change):
    def apply(directory: Path) -> str:
        document = json.loads((directory / "pipeline.json").read_text())
        change(document)
        _rewrite(directory, "pipeline.json", json.dumps(document))
        return "pipeline.json"

    return apply


def _raw_pipeline(transform):
    """Rewrite pipeline.json's text with ``transform`` (digest recomputed)."""

    def apply(directory: Path) -> str:
        _rewrite(directory, "pipeline.json", transform((directory / "pipeline.json").read_text()))
        return "pipeline.json"

    return apply


def _window(token: str):
    return _raw_pipeline(lambda text: re.sub(r'"window":\s*3', f'"window": {token}', text))


def _edit_model(change):
    def apply(directory: Path) -> str:
        _rewrite(directory, "model.txt", change((directory / "model.txt").read_text()))
        return "model.txt"

    return apply


def _step(document: dict, name: str) -> dict:
    return next(s for s in document["steps"] if s["name"] == name)


def _set(key: str, value):
    def change(document: dict) -> None:
        document[key] = value

    return change


def _delete(key: str):
    def change(document: dict) -> None:
        del document[key]

    return change


def _first_tree_line(key: str, new: str):
    """Replace the value of ``key`` in the first tree, keeping ``tree_sizes`` right
    (so that only the value is wrong, not the layout)."""

    def change(text: str) -> str:
        start = text.index("\nTree=0\n")
        line_start = text.index(f"\n{key}=", start) + 1
        line_end = text.index("\n", line_start)
        line = f"{key}={new}"
        grown = len(line) - (line_end - line_start)
        sizes = re.search(r"^tree_sizes=(\d+)", text, flags=re.M)
        assert sizes is not None
        text = text[:line_start] + line + text[line_end:]
        first = str(int(sizes.group(1)) + grown)
        return text[: sizes.start(1)] + first + text[sizes.end(1) :]

    return change


def _cut(fraction: float):
    return lambda text: text[: int(len(text) * fraction)]


BIG = "1" + "0" * 5000
DIR_DAMAGE = {
    # bundle.json: wrong types, missing keys, names with path separators, absurd values
    "format version as text": _edit_manifest(_set("format_version", "1")),
    "files as a list": _edit_manifest(_set("files", ["pipeline.json"])),
    "metadata null": _edit_manifest(_set("metadata", None)),
    "no files key": _edit_manifest(_delete("files")),
    "no metadata key": _edit_manifest(_delete("metadata")),
    "a file name climbing out": _edit_manifest(
        lambda m: m["files"].update({"../model.txt": m["files"]["model.txt"]})
    ),
    "a file name in a subdirectory": _edit_manifest(
        lambda m: m["files"].update({"sub/model.txt": m["files"]["model.txt"]})
    ),
    "a file name with a backslash": _edit_manifest(
        lambda m: m["files"].update({"..\\model.txt": m["files"]["model.txt"]})
    ),
    "a digest that is no SHA-256": _edit_manifest(
        lambda m: m["files"].update({"model.txt": "cafe"})
    ),
    "a listed file missing": _edit_manifest(lambda m: m["files"].update({"model_1.txt": "0" * 64})),
    "labels of another set": _edit_manifest(
        lambda m: m["metadata"].update({"label_set": ["Build", "Coding"]})
    ),
    "a 5000-digit number": _raw_manifest('{"format_version": ' + BIG + "}"),
    "a nesting bomb": _raw_manifest("[" * 200_000 + "]" * 200_000),
    "not JSON": _raw_manifest("{'format': 'taskclf-bundle-dir'"),
    "empty": _raw_manifest(""),
    # pipeline.json (digest recomputed): wrong types, missing keys, absurd values
    "steps as a mapping": _edit_pipeline(_set("steps", {"encode": {}})),
    "no steps": _edit_pipeline(_set("steps", [])),
    "a step without a class": _edit_pipeline(lambda d: d["steps"][3].pop("class")),
    "a class that is no stage": _edit_pipeline(
        lambda d: d["steps"][3].update({"class": "os.system"})
    ),
    "params as a list": _edit_pipeline(lambda d: d["steps"][3].update({"params": [0.5]})),
    "a threshold as text": _edit_pipeline(
        lambda d: _step(d, "reject")["params"].update({"threshold": "0.5"})
    ),
    "a threshold of 7": _edit_pipeline(
        lambda d: _step(d, "reject")["params"].update({"threshold": 7})
    ),
    "a fractional window": _edit_pipeline(
        lambda d: _step(d, "smooth")["params"].update({"window": 3.5})
    ),
    "an infinite window": _window("1e400"),
    "a 5000-digit window": _window(BIG),
    "a bucket width of 0": _edit_pipeline(
        lambda d: _step(d, "segment")["params"].update({"bucket_seconds": 0})
    ),
    "an unknown parameter": _edit_pipeline(
        lambda d: _step(d, "merge")["params"].update({"exec": "rm -rf /"})
    ),
    "a model file outside the directory": _edit_pipeline(
        lambda d: _step(d, "predict")["params"].update({"booster": {"$booster": "../model.txt"}})
    ),
    "a model file name that is a number": _edit_pipeline(
        lambda d: _step(d, "predict")["params"].update({"booster": {"$booster": 5}})
    ),
    "an unknown tag": _edit_pipeline(
        lambda d: _step(d, "predict")["params"].update({"booster": {"$pickle": "gASV"}})
    ),
    "an array of absurd shape": _edit_pipeline(
        lambda d: _step(d, "encode")["params"].update(
            {"categories": {"$ndarray": {"dtype": "float64", "shape": [10**12], "data": [1.0]}}}
        )
    ),
    "a vocabulary that cannot be sorted": _edit_pipeline(
        lambda d: _step(d, "encode")["params"]["categories"]["app_id"].append(7)
    ),
    "an encoder without the model's app_id": _edit_pipeline(
        lambda d: _step(d, "encode")["params"]["categories"].pop("app_id")
    ),
    "the segment step left out": _edit_pipeline(lambda d: d["steps"].remove(_step(d, "segment"))),
    "steps out of order": _edit_pipeline(lambda d: d["steps"].reverse()),
    "a step name repeated": _edit_pipeline(
        lambda d: _step(d, "segment").update({"name": "smooth"})
    ),
    "a store map of another kind": _edit_pipeline(
        lambda d: _step(d, "calibrate")["params"]["calibrator_store"]["$calibrator_store"][
            "users"
        ].update({"user0": {"kind": "pickle", "temperature": 0.5}})
    ),
    "a negative temperature": _edit_pipeline(
        lambda d: _step(d, "calibrate")["params"]["calibrator_store"]["$calibrator_store"][
            "global"
        ].update({"temperature": -1.0})
    ),
    "a nesting bomb (pipeline)": _raw_pipeline(lambda text: "[" * 200_000 + "]" * 200_000),
    # model.txt (digest recomputed): what would abort or mislead LightGBM
    "model truncated in the header": _edit_model(_cut(0.001)),
    "model truncated in the first tree": _edit_model(lambda t: t[: t.index("\nTree=0\n") + 60]),
    "model truncated half-way": _edit_model(_cut(0.5)),
    "model without 'end of trees'": _edit_model(lambda t: t.replace("end of trees", "")),
    "a child pointing at itself": _edit_model(_first_tree_line("left_child", "0 3 -3 -1")),
    "a child out of range": _edit_model(_first_tree_line("right_child", "-2 2 -4 -99")),
    "a categorical split without categories": _edit_model(
        _first_tree_line("decision_type", "1 2 2 2")
    ),
    "a split on a feature that does not exist": _edit_model(
        _first_tree_line("split_feature", "0 0 17 4000")
    ),
    "a leaf value that is not a number": _edit_model(
        _first_tree_line("leaf_value", "-2.2 nan -0.69 -2.13 -2.24")
    ),
    "a model of three classes": _edit_model(lambda t: t.replace("num_class=8", "num_class=3", 1)),
    "non-ASCII bytes in the model": _edit_model(lambda t: t.replace("Tree=1\n", "Tree=1\u00e9\n")),
    "an empty model file": _edit_model(lambda t: ""),
}


@pytest.mark.parametrize("damage", DIR_DAMAGE.values(), ids=DIR_DAMAGE.keys())
def test_hostile_bundle_directory_is_refused_naming_the_file(damage, bundle_dir, tmp_path):
    directory = _copy(bundle_dir, tmp_path / "hostile bundle")
    damage(directory)
    refused(lambda: load_bundle_dir(directory), BundleError, str(directory))


def _json_paths(node, prefix=()):
    """Every path into a JSON document (keys and list positions)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _json_paths(value, (*prefix, index))


HOSTILE_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(
            ["", "..", "../model.txt", "/etc/passwd", "a/b", "model.txt", "nan", "Build", "v2"]
        ),
        st.text(max_size=12),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["$booster", "$ndarray", "$float", "$calibration", "$calibrator_store",
                     "$label_encoder", "$taxonomy", "dtype", "shape", "data", "kind"]
                ),
                st.text(max_size=8),
            ),
            children,
            max_size=3,
        ),
    ),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), target=st.sampled_from(["pipeline.json", "bundle.json"]))
def test_any_json_edit_is_refused_naming_the_file_or_loads_a_working_pipeline(
    data, target, bundle_dir, frame, tmp_path_factory
):
    directory = _copy(bundle_dir, tmp_path_factory.mktemp("fuzz") / "bundle")
    document = json.loads((directory / target).read_text())
    path = data.draw(st.sampled_from(list(_json_paths(document))[1:]), label="path")
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "insert"]), label="action")
    if action == "replace":
        parent[path[-1]] = data.draw(HOSTILE_JSON, label="value")
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8), label="key")] = data.draw(HOSTILE_JSON)
    else:
        parent.insert(path[-1], data.draw(HOSTILE_JSON, label="value"))
    text = json.dumps(document)
    if target == "pipeline.json":
        _rewrite(directory, target, text)  # digest recomputed: the checks inside must hold
    else:
        (directory / target).write_text(text)
    try:
        pipeline = load_bundle_dir(directory)
    except BundleError as error:
        assert str(directory) in str(error)
        return
    # an edit the loader accepts (a changed parameter, a renamed user) gives a
    # pipeline that works
    labels = pipeline.predict(frame)
    assert len(labels) == len(frame)
    assert set(map(str, labels)) <= set(CLASS_ORDER) | {MIXED_UNKNOWN}


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


# --------------------------------------------------------------------------
# The command line: exit code 2, a message, no traceback, no output
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, frame, labelled, bundle_file, bundle_dir) -> dict[str, Path]:
    """Real input files for the taskclf command."""
    root = tmp_path_factory.mktemp("cli")
    files = {"bundle": bundle_file, "bundle_dir": bundle_dir, "root": root}

    def csv(name: str, table: pd.DataFrame) -> None:
        files[name] = write_features(table, root / f"{name}.csv")

    csv("features", frame)
    csv("labelled", labelled)
    csv("empty", frame.iloc[:0])
    csv("labelled_empty", labelled.iloc[:0])
    csv("labelled_missing", labelled.drop(columns=["keys_per_min", "app_id"]))
    csv("unseen", frame.assign(app_id="app-never-seen", user_id=frame["user_id"] + "-new"))
    csv("missing", frame.drop(columns=["keys_per_min", "app_id"]))
    csv("duplicates", pd.concat([frame, frame.iloc[[4]]], ignore_index=True))
    csv("v2_declared", frame.assign(schema_version="v2"))
    csv(
        "unlabelled_known",
        labelled.assign(label=labelled["label"].where(frame.index != 2, "Coding")),
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


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``taskclf ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse refuses its arguments this way
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


CLI_CASES = {
    "infer: features that do not exist": (
        ["infer", "{root}/absent.csv", "--bundle", "{bundle}"],
        ("absent.csv", "does not exist"),
    ),
    "infer: garbage features": (["infer", "{garbage}", "--bundle", "{bundle}"], ("garbage.csv",)),
    "infer: missing columns": (
        ["infer", "{missing}", "--bundle", "{bundle}"],
        ("'keys_per_min'", "'app_id'"),
    ),
    "infer: a duplicate row": (
        ["infer", "{duplicates}", "--bundle", "{bundle}"],
        ("duplicate", "'user0'"),
    ),
    "infer: an unparseable timestamp": (
        ["infer", "{bad_timestamps}", "--bundle", "{bundle}"],
        ("'half past nine'",),
    ),
    "infer: another schema": (
        ["infer", "{v2_declared}", "--bundle", "{bundle}"],
        ("'v2'", "v1"),
    ),
    "infer: a damaged bundle": (
        ["infer", "{features}", "--bundle", "{flipped}"],
        ("flipped.taskclf", "corrupt"),
    ),
    "infer: a bundle that does not exist": (
        ["infer", "{features}", "--bundle", "{root}/absent.taskclf"],
        ("absent.taskclf",),
    ),
    "infer: a wrong pinned digest": (
        ["infer", "{features}", "--bundle", "{bundle}", "--sha256", "0" * 64],
        ("SHA-256",),
    ),
    "infer: a digest pinned on a directory": (
        ["infer", "{features}", "--bundle", "{bundle_dir}", "--sha256", "0" * 64],
        ("--sha256",),
    ),
    "infer: a threshold above 1": (
        ["infer", "{features}", "--bundle", "{bundle}", "--reject-threshold", "1.5"],
        ("--reject-threshold", "1.5"),
    ),
    "infer: a threshold that is no number": (
        ["infer", "{features}", "--bundle", "{bundle}", "--reject-threshold", "high"],
        ("--reject-threshold", "'high'"),
    ),
    "infer: a window of 0": (
        ["infer", "{features}", "--bundle", "{bundle}", "--smooth-window", "0"],
        ("--smooth-window", "0"),
    ),
    "infer: an unknown taxonomy label": (
        ["infer", "{features}", "--bundle", "{bundle}", "--taxonomy", "{taxonomy}"],
        ("taxonomy.yaml", "'Programming'"),
    ),
    "infer: a taxonomy that does not exist": (
        ["infer", "{features}", "--bundle", "{bundle}", "--taxonomy", "{root}/absent.yaml"],
        ("absent.yaml",),
    ),
    "train: no label column": (["train", "{features}"], ("'label'",)),
    "train: an unknown label": (["train", "{unlabelled_known}"], ("'Coding'",)),
    "train: missing columns": (["train", "{labelled_missing}"], ("'keys_per_min'", "'app_id'")),
    "train: no leaves": (["train", "{labelled}", "--num-leaves", "0"], ("--num-leaves",)),
    "train: empty features": (["train", "{labelled_empty}"], ("no rows",)),
    "inspect: a damaged bundle": (["inspect", "{flipped}"], ("flipped.taskclf",)),
    "inspect: a feature file": (["inspect", "{features}"], ("not a taskclf bundle",)),
    "report: no predictions": (["report", "{root}"], ("segments.json",)),
}


@pytest.mark.parametrize(("args", "words"), CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_refuses_with_exit_2_and_leaves_nothing(args, words, cli_files, capsys, tmp_path):
    out = tmp_path / "out"
    command = [a.format(**cli_files) for a in args]
    if command[0] == "train":
        command += ["--out", str(out / "model.taskclf"), "--rounds", "2", "--threads", "1"]
    elif command[0] in ("infer", "report"):
        command += ["--out", str(out)]
    code, _, err = run_cli(capsys, *command)
    assert code == 2, err
    assert "Traceback" not in err
    assert "error" in err
    for word in words:
        assert word in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_cli_empty_features_give_empty_outputs(cli_files, capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        capsys, "infer", cli_files["empty"], "--bundle", cli_files["bundle"], "--out", out
    )
    assert code == 0, err
    assert "0 rows" in stdout
    assert len(pd.read_csv(out / "predictions.csv")) == 0
    assert json.loads((out / "segments.json").read_text()) == []


@pytest.mark.parametrize("bundle", ["bundle", "bundle_dir"])
def test_cli_unseen_values_are_not_errors(bundle, cli_files, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "infer", cli_files["unseen"], "--bundle", cli_files[bundle], "--out", out
    )
    assert code == 0, err
    assert len(pd.read_csv(out / "predictions.csv")) == len(read_features(cli_files["unseen"]))


def _subprocess_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "taskclf", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "case",
    ["infer: missing columns", "infer: a damaged bundle", "infer: a threshold above 1"],
)
def test_the_real_command_refuses_the_same_way(case, cli_files, tmp_path):
    args, words = CLI_CASES[case]
    out = tmp_path / "out"
    result = _subprocess_cli(*[a.format(**cli_files) for a in args], "--out", out)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    assert not out.exists()
