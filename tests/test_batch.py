"""The seed's functional API (taskclf.infer.batch): names, signatures, results and
errors users rely on, checked against the pipeline stages and real files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from conftest import join_equal_neighbours, make_frame, refused, train_booster
from sklearn.preprocessing import LabelEncoder

from taskclf import CalibratorStore, TemperatureCalibrator, build_pipeline, frame_to_segments
from taskclf._columns import MAPPED_LABEL, PROBA_COLUMNS
from taskclf.core.schema import SCHEMA_V1
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import (
    InputError,
    InvalidParameterError,
    ProbabilityShapeError,
    ReaderError,
    SchemaMismatchError,
    TimestampError,
)
from taskclf.infer.batch import (
    BatchInferenceResult,
    predict_labels,
    predict_proba,
    read_segments_json,
    run_batch_inference,
    write_predictions_csv,
    write_segments_json,
)
from taskclf.infer.calibration import IdentityCalibrator
from taskclf.infer.smooth import Segment, merge_short_segments, rolling_majority, segmentize
from taskclf.taxonomy import default_taxonomy

CSV_COLUMNS = "bucket_start_ts predicted_label confidence is_rejected mapped_label core_probs"
LABELS = LabelEncoder().fit(list(CLASS_ORDER))


@pytest.fixture(scope="module")
def features():
    """Two users the booster was not trained on, 150 minutes each with a gap;
    a fifth of the rows carry another row's features so that labels flap."""
    df = make_frame(n_users=2, minutes=150, seed=7).drop(columns="label")
    rng = np.random.default_rng(1)
    columns = [c for c in SCHEMA_V1.feature_columns if c != "user_id"]
    rows = rng.choice(len(df), len(df) // 5, replace=False)
    df.loc[rows, columns] = df.loc[rng.permutation(rows), columns].to_numpy()
    return df


def encoded_matrix(df, encoders):
    """The booster's input by hand: LabelEncoder codes, numbers, missing -> 0."""
    return np.column_stack(
        [
            encoders[name].transform(df[name]).astype(float)
            if name in SCHEMA_V1.categorical_columns
            else df[name].astype(float).fillna(0.0).to_numpy()
            for name in SCHEMA_V1.feature_columns
        ]
    )


def test_predict_proba_is_booster_predict_on_the_encoded_matrix(features, booster_v1, encoders_v1):
    proba = predict_proba(booster_v1, features, encoders_v1)
    assert proba.shape == (len(features), 8)
    np.testing.assert_array_equal(proba, booster_v1.predict(encoded_matrix(features, encoders_v1)))
    explicit = predict_proba(booster_v1, features, encoders_v1, schema_version="v1")
    np.testing.assert_array_equal(explicit, proba)
    # without encoders each categorical column is coded over its own values
    own = {c: LabelEncoder().fit(features[c]) for c in SCHEMA_V1.categorical_columns}
    expected = booster_v1.predict(encoded_matrix(features, own))
    np.testing.assert_array_equal(predict_proba(booster_v1, features), expected)


def test_predict_labels_without_and_with_threshold(features, booster_v1, encoders_v1):
    proba = predict_proba(booster_v1, features, encoders_v1)
    plain = predict_labels(booster_v1, features, LABELS, encoders_v1)
    assert plain == [CLASS_ORDER[k] for k in proba.argmax(axis=1)]
    assert all(type(v) is str for v in plain)
    threshold = float(np.quantile(proba.max(axis=1), 0.2, method="lower"))
    rejected = predict_labels(booster_v1, features, LABELS, encoders_v1, reject_threshold=threshold)
    expected = [MIXED_UNKNOWN if p.max() < threshold else label for p, label in zip(proba, plain)]
    assert rejected == expected
    at = int(np.flatnonzero(proba.max(axis=1) == threshold)[0])
    assert rejected[at] == plain[at]  # a confidence equal to the threshold is kept
    assert 0 < rejected.count(MIXED_UNKNOWN) < len(rejected)


def test_result_is_a_frozen_slotted_dataclass(features, booster_v1, encoders_v1):
    result = run_batch_inference(booster_v1, features.iloc[:30], cat_encoders=encoders_v1)
    assert "__slots__" in vars(BatchInferenceResult) and not hasattr(result, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.raw_labels = []  # type: ignore[misc]
    fields = "raw_labels smoothed_labels segments confidences is_rejected core_probs"
    assert [f.name for f in dataclasses.fields(result)] == [
        *fields.split(),
        "mapped_labels",
        "mapped_probs",
    ]


def test_every_field_agrees_with_the_pipeline(features, booster_v1, encoders_v1):
    params = {"reject_threshold": 0.9, "smooth_window": 5}
    result = run_batch_inference(booster_v1, features, cat_encoders=encoders_v1, **params)
    pipeline = build_pipeline(booster_v1, encoders_v1, **params)
    frame = pipeline.transform(features)
    assert all(type(v) is str for v in result.raw_labels + result.smoothed_labels)
    assert result.raw_labels == frame["raw_label"].astype(object).tolist()
    assert result.smoothed_labels == frame["smoothed_label"].astype(object).tolist()
    assert result.confidences.dtype == np.float64 and result.is_rejected.dtype == bool
    # without calibration, the booster's probabilities
    np.testing.assert_array_equal(result.core_probs, frame[list(PROBA_COLUMNS)].to_numpy())
    np.testing.assert_array_equal(
        result.core_probs, predict_proba(booster_v1, features, encoders_v1)
    )
    np.testing.assert_array_equal(result.confidences, result.core_probs.max(axis=1))
    np.testing.assert_array_equal(result.is_rejected, result.confidences < 0.9)
    assert result.is_rejected.any() and not result.is_rejected.all()
    raw = np.asarray(result.raw_labels, dtype=object)
    assert (raw[result.is_rejected] == MIXED_UNKNOWN).all()
    assert MIXED_UNKNOWN not in raw[~result.is_rejected]
    assert result.mapped_labels is None and result.mapped_probs is None
    # taskclf 0.4's segments: the hysteresis rule's, neighbours of one label not joined
    unjoined = pipeline.set_params(merge__join_equal=False).transform(features)
    assert result.segments == frame_to_segments(unjoined)
    assert all(isinstance(s, Segment) for s in result.segments)
    assert sum(s.bucket_count for s in result.segments) == len(features)
    assert {s.user_id for s in result.segments} == {"user0", "user1"}
    assert frame_to_segments(frame) == join_equal_neighbours(result.segments) != result.segments
    assert frame["label"].tolist() == unjoined["label"].tolist()  # the same labels
    # a taxonomy maps each row as the pipeline's taxonomy step does
    taxonomy = default_taxonomy()
    mapped = run_batch_inference(
        booster_v1, features, cat_encoders=encoders_v1, taxonomy=taxonomy, **params
    )
    step = build_pipeline(booster_v1, encoders_v1, taxonomy=taxonomy, **params).transform(features)
    assert mapped.mapped_labels == step[MAPPED_LABEL].astype(str).tolist()
    assert len(mapped.mapped_probs) == len(features)
    assert all(probs == {} for probs in np.asarray(mapped.mapped_probs)[mapped.is_rejected])


def test_a_bad_taxonomy_is_refused_before_the_model_runs(features, booster_v1, monkeypatch):
    import taskclf.infer.batch as batch

    def no_work(*args, **kwargs):
        raise AssertionError("the pipeline was built before the taxonomy was checked")

    monkeypatch.setattr(batch, "build_pipeline", no_work)
    with pytest.raises(InvalidParameterError, match="TaxonomyConfig, got str"):
        run_batch_inference(booster_v1, features, taxonomy="buckets.yaml")


def test_rows_come_back_in_input_order(features, booster_v1, encoders_v1):
    base = run_batch_inference(booster_v1, features, cat_encoders=encoders_v1)
    order = np.random.default_rng(2).permutation(len(features))
    shuffled = run_batch_inference(booster_v1, features.iloc[order], cat_encoders=encoders_v1)
    assert shuffled.smoothed_labels == [base.smoothed_labels[i] for i in order]
    np.testing.assert_array_equal(shuffled.core_probs, base.core_probs[order])
    assert shuffled.segments == base.segments


def test_calibration_before_rejection_per_user_when_there_are_users(
    features, booster_v1, encoders_v1
):
    raw = predict_proba(booster_v1, features, encoders_v1)
    store = CalibratorStore(TemperatureCalibrator(2.0), {"user0": TemperatureCalibrator(4.0)})
    one = {"calibrator": TemperatureCalibrator(3.0), "reject_threshold": 0.6}
    result = run_batch_inference(booster_v1, features, cat_encoders=encoders_v1, **one)
    calibrated = TemperatureCalibrator(3.0).calibrate(raw)
    np.testing.assert_allclose(result.core_probs, calibrated)
    np.testing.assert_array_equal(result.is_rejected, calibrated.max(axis=1) < 0.6)
    assert result.is_rejected.sum() > (raw.max(axis=1) < 0.6).sum()  # softer: more rejected
    both = {"calibrator": TemperatureCalibrator(0.5), "calibrator_store": store}
    result = run_batch_inference(booster_v1, features, cat_encoders=encoders_v1, **both)
    expected = store.calibrate_batch(raw, features["user_id"].tolist())  # 4.0 for user0, else 2.0
    np.testing.assert_allclose(result.core_probs, expected)
    # without user_id (one timeline) the store is not used
    frame = make_frame(n_users=1, minutes=120, schema_version="v2", seed=3)
    booster, encoders = train_booster(frame, schema_version="v2", rounds=3)
    frame = frame.drop(columns=["label", "user_id"])
    raw = predict_proba(booster, frame, encoders)
    result = run_batch_inference(booster, frame, cat_encoders=encoders, **both)
    np.testing.assert_allclose(result.core_probs, TemperatureCalibrator(0.5).calibrate(raw))
    assert {s.user_id for s in result.segments} == {None}
    identity = run_batch_inference(
        booster, frame, cat_encoders=encoders, calibrator=IdentityCalibrator()
    )
    np.testing.assert_array_equal(identity.core_probs, raw)


def test_empty_frame_gives_an_empty_result(features, booster_v1, encoders_v1, tmp_path):
    empty = features.iloc[:0]
    result = run_batch_inference(booster_v1, empty, cat_encoders=encoders_v1, reject_threshold=0.5)
    assert result.raw_labels == result.smoothed_labels == result.segments == []
    assert result.confidences.shape == result.is_rejected.shape == (0,)
    assert result.core_probs.shape == predict_proba(booster_v1, empty, encoders_v1).shape == (0, 8)
    assert predict_labels(booster_v1, empty, LABELS, encoders_v1) == []
    csv = write_predictions_csv(empty, result.raw_labels, tmp_path / "p.csv")
    assert pd.read_csv(csv).shape == (0, 2)
    assert read_segments_json(write_segments_json([], tmp_path / "s.json")) == []


def test_arguments_are_checked(features, booster_v1, encoders_v1):
    refused(
        lambda: run_batch_inference(booster_v1, features, schema_version="v7"),
        SchemaMismatchError,
        "unknown schema version 'v7'",
    )
    refused(
        lambda: predict_labels(booster_v1, features, LABELS, encoders_v1, reject_threshold=2),
        InvalidParameterError,
        "threshold must be None or a number in [0.0, 1.0], got 2",
    )


# -- files ----------------------------------------------------------------------


def read_csv(path):
    return pd.read_csv(path, keep_default_na=False)


def test_predictions_csv_has_the_columns_of_the_arguments_given(
    features, booster_v1, encoders_v1, tmp_path
):
    part = features.iloc[:40]
    result = run_batch_inference(booster_v1, part, cat_encoders=encoders_v1, reject_threshold=0.9)
    mapped = ["Focus" if lab != MIXED_UNKNOWN else "Other" for lab in result.raw_labels]
    path = tmp_path / "out" / "predictions.csv"
    returned = write_predictions_csv(
        part,
        result.smoothed_labels,
        path,
        confidences=result.confidences,
        is_rejected=result.is_rejected,
        mapped_labels=mapped,
        core_probs=result.core_probs,
    )
    assert returned == path and not list(path.parent.glob(".*"))  # no temporary file left
    out = read_csv(path)
    assert list(out.columns) == CSV_COLUMNS.split()
    assert out["predicted_label"].tolist() == result.smoothed_labels
    np.testing.assert_allclose(out["confidence"], np.round(result.confidences, 4))
    assert out["is_rejected"].tolist() == result.is_rejected.tolist()
    assert out["mapped_label"].tolist() == mapped
    probs = np.array([json.loads(v) for v in out["core_probs"]])
    np.testing.assert_allclose(probs, np.round(result.core_probs, 4))
    assert out["bucket_start_ts"].tolist() == [t.isoformat() for t in part["bucket_start_ts"]]

    times = ["2025-01-06 09:00", "2025-01-06T10:01:00+01:00", "2025-01-06T09:02:30.5Z"]
    rows = pd.DataFrame({"bucket_start_ts": times, "user_id": ["a", "b", "c"]})
    write_predictions_csv(rows, ["Build"] * 3, tmp_path / "a.csv")
    out = read_csv(tmp_path / "a.csv")
    assert list(out.columns) == ["bucket_start_ts", "predicted_label"]
    assert out["bucket_start_ts"].tolist() == [  # ISO 8601 in UTC
        "2025-01-06T09:00:00+00:00",
        "2025-01-06T09:01:00+00:00",
        "2025-01-06T09:02:30.500000+00:00",
    ]
    write_predictions_csv(
        rows, ["Build"] * 3, tmp_path / "b.csv", include_user_id=True, confidences=[1, 1, 1]
    )
    out = read_csv(tmp_path / "b.csv")
    assert list(out.columns) == ["bucket_start_ts", "user_id", "predicted_label", "confidence"]
    assert out["user_id"].tolist() == ["a", "b", "c"]


def test_segments_json_round_trip_and_files_without_user_id(
    features, booster_v1, encoders_v1, tmp_path
):
    result = run_batch_inference(booster_v1, features, cat_encoders=encoders_v1)
    path = tmp_path / "deep" / "segments.json"
    assert write_segments_json(result.segments, path) == path
    assert read_segments_json(path) == result.segments
    records = json.loads(path.read_text())
    assert set(records[0]) == {"start_ts", "end_ts", "label", "bucket_count", "user_id"}
    assert records[0]["start_ts"].endswith("+00:00")

    old = [
        {"start_ts": T0 + "+00:00", "end_ts": T1 + "+00:00", "label": "Build", "bucket_count": 1},
        {"start_ts": T0, "end_ts": "2025-01-06T10:07:00+01:00", "label": "Meet", "bucket_count": 2},
    ]
    (tmp_path / "old.json").write_text(json.dumps(old, indent=2))
    segments = read_segments_json(tmp_path / "old.json")
    assert [(s.label, s.bucket_count, s.user_id) for s in segments] == [
        ("Build", 1, None),
        ("Meet", 2, None),
    ]
    assert segments[1].to_dict()["start_ts"] == "2025-01-06T09:00:00+00:00"
    assert segments[1].to_dict()["end_ts"] == "2025-01-06T09:07:00+00:00"


@pytest.mark.parametrize(
    ("argument", "value", "words"),
    [
        ("labels", ["Build"], ("labels has 1 values", "60 rows")),
        ("confidences", np.ones(5), ("confidences has 5 values",)),
        ("is_rejected", np.zeros(61, bool), ("is_rejected has 61 values",)),
        ("core_probs", np.full((60, 3), 1 / 3), ("core_probs", "(60, 3)")),
    ],
)
def test_prediction_writer_refuses_and_keeps_what_was_there(
    argument, value, words, frame, tmp_path
):
    target = tmp_path / "predictions.csv"
    write_predictions_csv(frame, ["Build"] * len(frame), target)
    before = target.read_bytes()
    kwargs = {"labels": ["Build"] * len(frame), argument: value}
    error = ProbabilityShapeError if argument == "core_probs" else InputError
    refused(lambda: write_predictions_csv(frame, path=target, **kwargs), error, *words)
    refused(lambda: write_predictions_csv(frame, path=tmp_path / "new" / "p.csv", **kwargs), error)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["predictions.csv"]


T0, T1 = "2025-01-06T09:00:00", "2025-01-06T09:01:00"


def records(*changes: dict) -> bytes:
    """Segment records as JSON: a good one changed by each of ``changes``."""
    good = {"start_ts": T0, "end_ts": T1, "label": "Build", "bucket_count": 1}
    return json.dumps([{**good, **change} for change in changes]).encode()


SEGMENT_FILES = {
    "not JSON": (b"[{'start_ts': 1}", "cannot read segments file"),
    "binary garbage": (bytes(range(256)) * 4, "cannot read segments file"),
    "empty": (b"", "cannot read segments file"),
    "a truncated record": (records({})[:40], "cannot read"),
    "an object, not a list": (b'{"start_ts": "2025-01-06T09:00:00"}', "must hold a JSON list"),
    "a record without a label": (b'[{"start_ts": "2025-01-06T09:00:00"}]', "record 0"),
    "a bad timestamp": (records({}, {"start_ts": "soon", "end_ts": "later"}), "record 1"),
    "a zero bucket count": (records({"bucket_count": 0}), "record 0"),
    "a record that is a list": (b"[[1, 2, 3]]", "record 0"),
    "a record of numbers": (b"[1, 2]", "record 0 is not a segment"),
}


@pytest.mark.parametrize(("content", "words"), SEGMENT_FILES.values(), ids=SEGMENT_FILES.keys())
def test_segment_reader_names_the_file(content, words, tmp_path):
    path = tmp_path / "odd segments.json"
    path.write_bytes(content)
    refused(lambda: read_segments_json(path), ReaderError, str(path), words)


def test_a_missing_segments_file_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as caught:  # as in 0.4
        read_segments_json(tmp_path / "absent.json")
    assert isinstance(caught.value, ReaderError) and "absent.json" in str(caught.value)


# -- the list forms ---------------------------------------------------------------

STARTS = [dt.datetime(2025, 1, 6, 9, m) for m in range(4)]
LIST_CASES = {
    "rolling_majority a missing label": (
        lambda: rolling_majority(["Build", None, "Build"]),
        InputError,
        ("missing", "position 1"),
    ),
    "segmentize lengths differ": (
        lambda: segmentize(STARTS, ["Build", "Debug"]),
        InputError,
        ("bucket_starts (4) and labels (2)",),
    ),
    "segmentize a bad timestamp": (
        lambda: segmentize(["2025-01-06T09:00", "teatime"], ["Build", "Build"]),
        TimestampError,
        ("'teatime'",),
    ),
}


@pytest.mark.parametrize(("call", "error", "words"), LIST_CASES.values(), ids=LIST_CASES.keys())
def test_list_forms_refuse_bad_input(call, error, words):
    refused(call, error, *words)


def test_list_forms_of_nothing_are_nothing():
    assert rolling_majority([]) == segmentize([], []) == merge_short_segments([]) == []
    empty = pd.DataFrame({"bucket_start_ts": [], "label": [], "segment_id": []})
    assert frame_to_segments(empty) == []
