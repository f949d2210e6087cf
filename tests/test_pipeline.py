"""The seven stages chained by build_pipeline: timelines, input order, the
scikit-learn conventions (clone, params, joblib, no input mutation) and bad
input through every entry point."""

from __future__ import annotations

import attrs
import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from conftest import (
    ENTRY_POINTS,
    FEATURE_CASES,
    FEATURE_ENTRY_POINTS,
    TIMELINE_CASES,
    VALUE,
    join_equal_neighbours,
    make_frame,
    refused,
    via_predict,
)
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from taskclf import (
    Calibrator,
    TemperatureCalibrator,
    ViterbiSmoother,
    build_pipeline,
    frame_to_segments,
)
from taskclf._columns import LABEL, PROBA_COLUMNS
from taskclf._frame import LABEL_DTYPE
from taskclf.core.schema import SCHEMA_V1
from taskclf.core.types import MIXED_UNKNOWN
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    ProbabilityShapeError,
    SchemaMismatchError,
)
from taskclf.infer.smooth import merge_short_segments, rolling_majority, segmentize
from taskclf.pipeline import TaskPipeline

PER_ROW = [*PROBA_COLUMNS, "confidence", "is_rejected", "raw_label", "smoothed_label", "label"]


@pytest.fixture(scope="module")
def unseen():
    """Rows the booster was not trained on, a quarter with another row's features,
    so that raw labels flap and smoothing and merging have work."""
    df = make_frame(n_users=3, minutes=150, seed=4).drop(columns="label")
    rng = np.random.default_rng(0)
    columns = [c for c in SCHEMA_V1.feature_columns if c != "user_id"]
    rows = rng.choice(len(df), len(df) // 4, replace=False)
    df.loc[rows, columns] = df.loc[rng.permutation(rows), columns].to_numpy()
    return df


@pytest.fixture(scope="module")
def pipeline(booster_v1, encoders_v1):
    return build_pipeline(booster_v1, encoders_v1, reject_threshold=0.8)


@pytest.fixture(scope="module")
def annotated(pipeline, unseen):
    return pipeline.transform(unseen)


def timelines_of(df):
    """Row labels of each timeline: per user, by time, split at gaps > 300 s."""
    out = []
    for _, rows in df.sort_values(["user_id", "bucket_start_ts"]).groupby("user_id"):
        piece = (rows["bucket_start_ts"].diff() > pd.Timedelta(seconds=300)).cumsum()
        out += [group.index for _, group in rows.groupby(piece.to_numpy())]
    return out


def test_transform_annotates_every_row_in_steps_order(pipeline, annotated, unseen):
    assert isinstance(pipeline, Pipeline)
    names = ("encode", "predict", "calibrate", "reject", "smooth", "segment", "merge")
    assert tuple(name for name, _ in pipeline.steps) == names
    added = [*PER_ROW[:-1], "segment_id", "label"]
    assert list(annotated.columns) == [*unseen.columns, *added]
    for column in ("raw_label", "smoothed_label", "label"):
        assert annotated[column].dtype == LABEL_DTYPE
    assert (annotated["raw_label"] == MIXED_UNKNOWN).any()
    assert (annotated["smoothed_label"] != annotated["raw_label"]).any()
    assert (annotated["label"] != annotated["smoothed_label"]).any()


def test_each_timeline_follows_the_list_forms(annotated, unseen):
    timelines = timelines_of(unseen)
    assert len(timelines) == 6  # three users, each with a lunch gap
    seen_segments, rule_count = set(), 0
    for rows in timelines:
        part = annotated.loc[rows]
        raw = part["raw_label"].astype(object).tolist()
        smoothed = part["smoothed_label"].astype(object).tolist()
        assert smoothed == rolling_majority(raw, window=3)
        segments = merge_short_segments(segmentize(part["bucket_start_ts"].tolist(), smoothed))
        rule_count += len(segments)
        user = part["user_id"].iloc[0]
        expected = [attrs.evolve(s, user_id=user) for s in join_equal_neighbours(segments)]
        assert frame_to_segments(part) == expected
        assert part["label"].astype(object).tolist() == [
            s.label for s in expected for _ in range(s.bucket_count)
        ]
        ids = {(user, i) for i in part["segment_id"]}  # numbered per user
        assert not ids & seen_segments
        seen_segments |= ids
    assert len(seen_segments) < rule_count  # equal neighbours were joined here


def test_predict_gives_final_labels_and_the_callers_columns_are_kept(pipeline, unseen, annotated):
    predicted = pipeline.predict(unseen)
    assert isinstance(predicted, np.ndarray)
    assert predicted.tolist() == annotated["label"].astype(object).tolist()
    # categoricals are categories of the same values
    encoded = list(SCHEMA_V1.categorical_columns[:-1])
    kept = [c for c in unseen.columns if c not in encoded]
    pd.testing.assert_frame_equal(annotated[kept], unseen[kept])
    for column in encoded:
        assert annotated[column].astype(object).tolist() == unseen[column].astype(object).tolist()


def test_clone_params_set_params_and_joblib(pipeline, unseen, annotated, tmp_path):
    params = pipeline.get_params()
    assert (params["reject__threshold"], params["smooth__window"]) == (0.8, 3)
    assert params["merge__min_block_seconds"] == 180
    cloned = clone(pipeline)
    assert isinstance(cloned, TaskPipeline) and cloned is not pipeline
    for name in ("encode", "predict"):  # the given booster and vocabulary are shared
        assert cloned.named_steps[name] is pipeline.named_steps[name]
    shallow = {k: v for k, v in params.items() if "__" in k and not hasattr(v, "get_params")}
    assert {k: cloned.get_params()[k] for k in shallow} == shallow
    expected = annotated["label"].to_numpy(dtype=object)
    original = unseen.copy(deep=True)
    np.testing.assert_array_equal(cloned.fit(unseen).predict(unseen), expected)
    pd.testing.assert_frame_equal(unseen, original)  # no step changed the caller's frame
    joblib.dump(pipeline, tmp_path / "pipeline.joblib")
    loaded = joblib.load(tmp_path / "pipeline.joblib")
    pd.testing.assert_frame_equal(loaded.transform(unseen), annotated)

    tuned = cloned.set_params(reject__threshold=0.95, smooth__window=5)
    assert pipeline.get_params()["reject__threshold"] == 0.8  # the clone only
    out = tuned.transform(unseen)
    confidence = annotated["confidence"].to_numpy()
    np.testing.assert_array_equal(out["is_rejected"].to_numpy(), confidence < 0.95)
    raw = np.where(confidence < 0.95, MIXED_UNKNOWN, annotated["raw_label"].astype(object))
    assert out["raw_label"].astype(object).tolist() == raw.tolist()
    for rows in timelines_of(unseen):
        smoothed = rolling_majority(out.loc[rows, "raw_label"].astype(object).tolist(), 5)
        assert out.loc[rows, "smoothed_label"].astype(object).tolist() == smoothed
    assert out["label"].tolist() != expected.tolist()


def test_the_viterbi_smoother_is_a_choice(booster_v1, encoders_v1, unseen):
    pipeline = build_pipeline(booster_v1, encoders_v1, smoother="viterbi", max_gap_seconds=240)
    smooth = pipeline.named_steps["smooth"]
    assert isinstance(smooth, ViterbiSmoother) and smooth.max_gap_seconds == 240
    assert len(pipeline.predict(unseen)) == len(unseen)
    refused(
        lambda: build_pipeline(booster_v1, encoders_v1, smoother="hmm"),
        InvalidParameterError,
        "smoother must be one of ['majority', 'viterbi'], got 'hmm'",
    )


def test_timelines_are_found_once_per_call(pipeline, unseen, monkeypatch):
    import taskclf.stages._timeline as timeline

    calls = []
    find = timeline._find
    monkeypatch.setattr(timeline, "_find", lambda *a: calls.append(1) or find(*a))
    pipeline.transform(unseen)
    assert len(calls) == 1  # smooth, segment and merge share one answer
    pipeline.predict(unseen)
    assert len(calls) == 2


# --------------------------------------------------------------------------
# Bad input (contract: a specific error naming the problem), every entry point
# --------------------------------------------------------------------------

BAD_FRAMES = {**FEATURE_CASES, **TIMELINE_CASES}


@pytest.mark.parametrize(
    ("entry", "case"),
    [
        *[("pipeline.predict", case) for case in BAD_FRAMES],
        *[
            (entry, case)
            for entry in FEATURE_ENTRY_POINTS
            if entry not in ("pipeline.predict", "distributed.transform")
            for case in ("missing feature columns", "text in a numeric column")
            if entry != "distributed.predict" or case != "missing feature columns"
        ],
        *[
            (entry, "a duplicate (user_id, bucket_start_ts) row")
            for entry in ENTRY_POINTS
            if entry not in ("pipeline.predict", "distributed.transform")
        ],
    ],
)
def test_bad_frame_is_refused(entry, case, frame, booster_v1, encoders_v1):
    mutate, error, words = BAD_FRAMES[case]
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


NOT_FRAMES = [np.zeros((3, 4)), [[1, 2]], None, {"app_id": ["x"]}]


@pytest.mark.parametrize(
    ("entry", "value"),
    [("pipeline.predict", v) for v in NOT_FRAMES] + [(e, None) for e in list(ENTRY_POINTS)[1:]],
)
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


@pytest.mark.parametrize("entry", [e for e in FEATURE_ENTRY_POINTS if e != "distributed.transform"])
def test_probability_matrix_of_wrong_width(entry, frame, booster_3_classes, encoders_v1):
    refused(
        lambda: FEATURE_ENTRY_POINTS[entry](booster_3_classes, encoders_v1, frame),
        ProbabilityShapeError,
        ", 3)",  # (rows, 3): all rows, or one Dask partition's
        "(n, 8)",
    )


def test_booster_of_another_schema(frame, booster_v1, encoders_v1):
    rng = np.random.default_rng(0)
    params = {"objective": "multiclass", "num_class": 8, "verbose": -1, "num_threads": 1}
    data = lgb.Dataset(rng.normal(size=(200, 10)), np.arange(200) % 8)
    booster_10_features = lgb.train(params, data, 1)
    for call in (via_predict, ENTRY_POINTS["pipeline.fit"]):
        refused(
            lambda: call(booster_10_features, encoders_v1, frame),  # noqa: B023
            SchemaMismatchError,
            "10 features",
        )
    refused(
        lambda: build_pipeline(booster_v1, encoders_v1, schema_version="v3").predict(frame),
        SchemaMismatchError,
        "v3",
        "299",
        "39",
    )


@pytest.mark.parametrize(("stage", "value"), [("calibrate", np.nan), ("reject", np.inf)])
def test_missing_probabilities_are_refused(stage, value, frame, booster_v1, encoders_v1):
    pipeline = build_pipeline(booster_v1, encoders_v1)
    position = [name for name, _ in pipeline.steps].index(stage)
    upstream = pipeline[:position].transform(frame)
    for column in (PROBA_COLUMNS[0], PROBA_COLUMNS[-1]):
        proba = upstream[column].to_numpy(copy=True)
        proba[9] = value
        bad = upstream.assign(**{column: proba})
        if stage == "calibrate":
            maps = Calibrator.from_maps(TemperatureCalibrator(2.0))
            pipeline.set_params(calibrate=FrozenEstimator(maps))
        refused(lambda: pipeline[position:].transform(bad), InputError, repr(column), "row 9")  # noqa: B023


# --------------------------------------------------------------------------
# Parameters: at build time, set_params and the functional API
# --------------------------------------------------------------------------

BAD_PARAMETERS = [
    # (build_pipeline / run_batch_inference name, set_params name, value, words)
    ("reject_threshold", "reject__threshold", 1.5, ("threshold", "1.5")),
    ("reject_threshold", "reject__threshold", float("nan"), ("threshold", "nan")),
    ("reject_threshold", "reject__threshold", "0.5", ("threshold", "'0.5'")),
    ("reject_threshold", "reject__threshold", True, ("threshold", "True")),
    ("smooth_window", "smooth__window", 0, ("window", "0")),
    ("smooth_window", "smooth__window", 2.5, ("window", "2.5")),
    ("smooth_window", "smooth__window", None, ("window", "None")),
    ("smooth_window", "smooth__window", 2**64, ("window", str(2**64))),
    ("bucket_seconds", "merge__bucket_seconds", -60, ("bucket_seconds", "-60")),
    ("bucket_seconds", "merge__bucket_seconds", 60.0, ("bucket_seconds", "60.0")),
    ("bucket_seconds", "merge__bucket_seconds", 10**10, ("bucket_seconds", "10000000000")),
    ("max_gap_seconds", "smooth__max_gap_seconds", 0, ("max_gap_seconds", "0")),
    ("max_gap_seconds", "segment__max_gap_seconds", 10**10, ("max_gap_seconds", "1000")),
    ("min_block_seconds", "merge__min_block_seconds", -1, ("min_block_seconds", "-1")),
]


@pytest.mark.parametrize(
    ("entry", "name", "value", "words"),
    [
        pytest.param(entry, name, value, words, id=f"{name}={value!r} @ {entry}")
        for name, _, value, words in BAD_PARAMETERS
        for entry in ("pipeline.predict", "run_batch_inference")
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


def test_set_params_stores_and_every_call_refuses_before_the_model_runs(
    frame, booster_v1, encoders_v1, monkeypatch
):
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.4)
    expected = pipeline.predict(frame)
    calls = []
    predict = lgb.Booster.predict
    monkeypatch.setattr(lgb.Booster, "predict", lambda *a, **k: calls.append(1) or predict(*a, **k))
    for _, param, value, words in BAD_PARAMETERS:
        before = pipeline.get_params()[param]
        pipeline.set_params(**{param: value})
        assert pipeline.get_params()[param] is value
        for call in (pipeline.predict, pipeline.transform, pipeline.fit):
            refused(lambda: call(frame), InvalidParameterError, *words)  # noqa: B023
        pipeline.set_params(**{param: before})
    assert calls == []
    np.testing.assert_array_equal(pipeline.predict(frame), expected)


@pytest.mark.parametrize(("threshold", "window"), [(0.0, 1), (1.0, 2), (None, 2)])
def test_parameters_on_the_boundary_are_accepted(threshold, window, frame, booster_v1, encoders_v1):
    pipeline = build_pipeline(booster_v1, encoders_v1)
    labels = pipeline.set_params(reject__threshold=threshold, smooth__window=window).predict(frame)
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


@pytest.mark.parametrize(
    ("entry", "change"),
    [("pipeline.predict", change) for change in UNSEEN]
    + [(entry, "unseen users") for entry in list(ENTRY_POINTS)[1:-1]],
)
def test_unseen_category_values_are_not_errors(entry, change, frame, booster_v1, encoders_v1):
    odd = UNSEEN[change](frame)
    if change == "unseen users":  # and every other unseen value
        odd = odd.assign(app_id="app-never-seen", domain_category=None)
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
    text = as_object.assign(hour_of_day=["9"] + [9] * (len(frame) - 1))
    refused(
        lambda: via_predict(booster_v1, encoders_v1, text), ColumnTypeError, "'hour_of_day'", "'9'"
    )


@pytest.mark.parametrize("first, then", [("majority", "viterbi"), ("viterbi", "majority")])
def test_a_swapped_smoother_keeps_the_pipelines_timelines(first, then):
    from taskclf.workflows import configure

    pipeline = configure(build_pipeline(smoother=first, timelines="as_given"), smoother=then)
    params = pipeline.get_params()
    assert (
        type(pipeline.named_steps["smooth"]).__name__
        != type(build_pipeline(smoother=first).named_steps["smooth"]).__name__
    )
    assert params["smooth__timelines"] == params["segment__timelines"] == "as_given"
