"""The seven stages chained by build_pipeline: timelines, input order and the
scikit-learn conventions (clone, params, joblib, no input mutation)."""

from __future__ import annotations

import copy
import datetime as dt

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from taskclf import build_pipeline
from taskclf._columns import PROBA_COLUMNS
from taskclf._frame import LABEL_DTYPE
from taskclf.core.schema import SCHEMA_V1
from taskclf.core.types import MIXED_UNKNOWN
from taskclf.exceptions import InvalidParameterError
from taskclf.infer.smooth import merge_short_segments, rolling_majority, segmentize
from taskclf.pipeline import STEP_NAMES
from taskclf.stages.segment import frame_to_segments

GAP = pd.Timedelta(seconds=300)
PER_ROW = [
    *PROBA_COLUMNS,
    "confidence",
    "is_rejected",
    "raw_label",
    "smoothed_label",
    "label",
]


@pytest.fixture(scope="module")
def unseen():
    """Feature rows the booster was not trained on, a quarter with another row's
    features, so that raw labels flap and smoothing and merging have work."""
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
    ordered = df.sort_values(["user_id", "bucket_start_ts"], kind="stable")
    out = []
    for _, rows in ordered.groupby("user_id", sort=False):
        ts = rows["bucket_start_ts"]
        piece = (ts.diff() > GAP).cumsum()
        out += [group.index for _, group in rows.groupby(piece.to_numpy())]
    return out


def test_steps_in_order(pipeline):
    assert isinstance(pipeline, Pipeline)
    assert tuple(name for name, _ in pipeline.steps) == STEP_NAMES
    assert STEP_NAMES == ("encode", "predict", "calibrate", "reject", "smooth", "segment", "merge")


def test_transform_annotates_every_row(annotated, unseen):
    added = ["user_id_encoded", *PER_ROW[:-1], "segment_id", "label"]
    assert list(annotated.columns) == [*unseen.columns, *added]
    for column in ("raw_label", "smoothed_label", "label"):
        assert annotated[column].dtype == LABEL_DTYPE
    assert (annotated["raw_label"] == MIXED_UNKNOWN).any()
    assert (annotated["smoothed_label"] != annotated["raw_label"]).any()
    assert (annotated["label"] != annotated["smoothed_label"]).any()


def test_shuffled_users_give_what_each_user_gives_alone(pipeline, unseen):
    shuffled = unseen.sample(frac=1.0, random_state=3)
    out = pipeline.transform(shuffled)
    assert out.index.equals(shuffled.index)
    for user, rows in unseen.groupby("user_id"):
        alone = pipeline.transform(rows.sort_values("bucket_start_ts"))
        together = out.loc[alone.index]
        pd.testing.assert_frame_equal(together[PER_ROW], alone[PER_ROW], obj=user)
        # the same rows share segments (ids are numbered over the whole frame)
        a = pd.factorize(alone["segment_id"])[0]
        b = pd.factorize(together["segment_id"])[0]
        assert (a == b).all(), user


def test_no_window_or_segment_crosses_a_gap_or_a_user(annotated, unseen):
    timelines = timelines_of(unseen)
    assert len(timelines) == 6  # three users, each with a lunch gap
    seen_segments = set()
    for rows in timelines:
        part = annotated.loc[rows]
        raw = part["raw_label"].astype(object).tolist()
        smoothed = part["smoothed_label"].astype(object).tolist()
        assert smoothed == rolling_majority(raw, window=3)
        starts = part["bucket_start_ts"].tolist()
        expected = merge_short_segments(segmentize(starts, smoothed))
        got = frame_to_segments(part)
        assert [(s.start_ts, s.end_ts, s.label, s.bucket_count) for s in got] == [
            (s.start_ts, s.end_ts, s.label, s.bucket_count) for s in expected
        ]
        ids = set(part["segment_id"])
        assert not ids & seen_segments
        seen_segments |= ids


def test_one_gapless_timeline_equals_the_list_forms(pipeline, unseen):
    one = unseen[unseen["user_id"] == "user1"].iloc[:120]
    assert (one["bucket_start_ts"].diff().dropna() == pd.Timedelta(minutes=1)).all()
    out = pipeline.transform(one)
    raw = out["raw_label"].astype(object).tolist()
    smoothed = rolling_majority(raw, window=3)
    assert out["smoothed_label"].astype(object).tolist() == smoothed
    segments = merge_short_segments(segmentize(one["bucket_start_ts"].tolist(), smoothed))
    assert frame_to_segments(out) == [
        type(s)(s.start_ts, s.end_ts, s.label, s.bucket_count, "user1") for s in segments
    ]
    expanded = [s.label for s in segments for _ in range(s.bucket_count)]
    assert pipeline.predict(one).tolist() == expanded


def test_predict_returns_final_labels_in_input_order(pipeline, unseen, annotated):
    order = np.random.default_rng(5).permutation(len(unseen))
    shuffled = unseen.iloc[order]
    shuffled = shuffled.set_axis([f"row{i}" for i in order])
    predicted = pipeline.predict(shuffled)
    assert isinstance(predicted, np.ndarray)
    assert predicted.tolist() == annotated["label"].astype(object).iloc[order].tolist()
    out = pipeline.transform(shuffled)
    assert out.index.tolist() == [f"row{i}" for i in order]
    # the caller's columns are kept: categoricals as categories of the same values
    encoded = list(SCHEMA_V1.categorical_columns[:-1])
    kept = [c for c in unseen.columns if c not in encoded]
    pd.testing.assert_frame_equal(out[kept], shuffled[kept])
    for column in encoded:
        assert out[column].astype(object).tolist() == shuffled[column].astype(object).tolist()


def test_new_users_keep_their_own_timelines(pipeline, unseen):
    # users the encoders never saw: their rows must not merge into one timeline
    renamed = unseen.assign(user_id=unseen["user_id"].map({"user0": "ann", "user1": "bob"}))
    renamed = renamed[renamed["user_id"].notna()]
    out = pipeline.transform(renamed)
    assert out["user_id"].tolist() == renamed["user_id"].tolist()
    segments = frame_to_segments(out)
    assert [s.user_id for s in segments][:1] == ["ann"]
    assert {s.user_id for s in segments} == {"ann", "bob"}
    for user in ("ann", "bob"):
        mine = out[out["user_id"] == user]
        assert sum(s.bucket_count for s in segments if s.user_id == user) == len(mine)


def test_no_stage_mutates_its_input(pipeline, unseen):
    X = unseen.iloc[:200]
    original = copy.deepcopy(X)
    for name, step in pipeline.steps:
        before = copy.deepcopy(X)
        step.fit(X)
        after_fit = step.transform(X)
        pd.testing.assert_frame_equal(X, before, obj=f"{name} input")
        X = after_fit
    pipeline.predict(unseen.iloc[:200])
    pipeline.fit(unseen.iloc[:200])
    pd.testing.assert_frame_equal(unseen.iloc[:200], original)


def test_clone_and_params_round_trip(pipeline, unseen):
    params = pipeline.get_params()
    assert params["reject__threshold"] == 0.8
    assert params["smooth__window"] == 3
    assert params["merge__min_block_seconds"] == 180
    cloned = clone(pipeline)
    assert cloned is not pipeline
    assert cloned.named_steps["predict"].booster is pipeline.named_steps["predict"].booster
    shallow = {k: v for k, v in params.items() if "__" in k and not hasattr(v, "get_params")}
    assert {k: cloned.get_params()[k] for k in shallow} == shallow
    np.testing.assert_array_equal(cloned.predict(unseen), pipeline.predict(unseen))
    cloned.set_params(**shallow)
    assert {k: cloned.get_params()[k] for k in shallow} == shallow


def test_set_params_changes_predictions_as_expected(pipeline, unseen, annotated):
    tuned = clone(pipeline).set_params(reject__threshold=0.95, smooth__window=5)
    assert tuned.get_params()["reject__threshold"] == 0.95
    assert pipeline.get_params()["reject__threshold"] == 0.8  # the clone only
    out = tuned.transform(unseen)
    confidence = annotated["confidence"].to_numpy()
    np.testing.assert_array_equal(out["is_rejected"].to_numpy(), confidence < 0.95)
    expected_raw = np.where(
        confidence < 0.95, MIXED_UNKNOWN, annotated["raw_label"].astype(object).to_numpy()
    )
    # rows rejected at 0.8 are Mixed/Unknown at 0.95 too
    assert out["raw_label"].astype(object).tolist() == expected_raw.tolist()
    for rows in timelines_of(unseen):
        raw = out.loc[rows, "raw_label"].astype(object).tolist()
        assert out.loc[rows, "smoothed_label"].astype(object).tolist() == rolling_majority(raw, 5)
    assert (out["is_rejected"] != annotated["is_rejected"]).any()
    assert tuned.predict(unseen).tolist() != pipeline.predict(unseen).tolist()
    everything = clone(pipeline).set_params(reject__threshold=1.0, smooth__window=1)
    assert set(everything.predict(unseen)) == {MIXED_UNKNOWN}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"reject__threshold": 2.0}, r"threshold must lie in \[0, 1\], got 2.0"),
        ({"smooth__window": 0}, "window must be >= 1, got 0"),
        ({"segment__bucket_seconds": 0}, "bucket_seconds must be > 0, got 0"),
        ({"merge__bucket_seconds": 0}, "bucket_seconds must be > 0, got 0"),
        ({"smooth__max_gap_seconds": -1}, "max_gap_seconds must be > 0"),
    ],
)
def test_refused_set_params_leaves_params_unchanged(pipeline, params, words):
    p = clone(pipeline)
    before = p.get_params(deep=True)
    with pytest.raises(InvalidParameterError, match=words):
        p.set_params(**params)
    after = p.get_params(deep=True)
    assert {k: v for k, v in after.items() if "__" in k} == {
        k: v for k, v in before.items() if "__" in k
    }


def test_bad_build_pipeline_arguments_are_refused(booster_v1, encoders_v1, unseen):
    for kwargs, words in (
        ({"reject_threshold": -0.5}, r"threshold must lie in \[0, 1\]"),
        ({"smooth_window": 0}, "window must be >= 1"),
        ({"bucket_seconds": 0}, "bucket_seconds must be > 0"),
    ):
        with pytest.raises(InvalidParameterError, match=words):
            build_pipeline(booster_v1, encoders_v1, **kwargs).predict(unseen.iloc[:5])


def test_joblib_round_trip(pipeline, unseen, tmp_path):
    path = tmp_path / "pipeline.joblib"
    joblib.dump(pipeline, path)
    assert path.stat().st_size > 0
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict(unseen), pipeline.predict(unseen))
    pd.testing.assert_frame_equal(loaded.transform(unseen), pipeline.transform(unseen))
    assert loaded.get_params()["reject__threshold"] == 0.8


def test_fit_keeps_the_booster_and_changes_nothing(pipeline, unseen):
    fitted = clone(pipeline).fit(unseen)
    assert fitted.named_steps["predict"].booster is pipeline.named_steps["predict"].booster
    np.testing.assert_array_equal(fitted.predict(unseen), pipeline.predict(unseen))


def test_empty_frame_gives_empty_predictions(pipeline, unseen):
    empty = unseen.iloc[:0]
    assert pipeline.predict(empty).tolist() == []
    out = pipeline.transform(empty)
    assert len(out) == 0
    assert "label" in out.columns


def test_naive_and_aware_timestamps_agree(pipeline, unseen):
    part = unseen.iloc[:60]
    naive = part.assign(bucket_start_ts=part["bucket_start_ts"].dt.tz_localize(None))
    paris = part.assign(bucket_start_ts=part["bucket_start_ts"].dt.tz_convert("Europe/Paris"))
    expected = pipeline.predict(part)
    np.testing.assert_array_equal(pipeline.predict(naive), expected)
    np.testing.assert_array_equal(pipeline.predict(paris), expected)
    (first, *_) = frame_to_segments(pipeline.transform(paris))
    assert first.start_ts.tzinfo == dt.UTC
