"""Invariants of the whole pipeline on random frames (hypothesis).

Frames are drawn by :func:`activity_frames`: several users (seen and
unseen by the model), gaps in time, no duplicate buckets, NaNs in numeric
features, unseen category values, rows in shuffled order. The model is the
real session booster of ``conftest.py``; the reject threshold, smoothing
window, minimum block duration and calibration are drawn too.

Each invariant is checked against a plain-Python statement of the rule
(timelines, segments), never against the code under test.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression

from taskclf import (
    CalibratorStore,
    IdentityCalibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
    build_pipeline,
    frame_to_segments,
)
from taskclf._columns import (
    CONFIDENCE,
    IS_REJECTED,
    LABEL,
    MAPPED_LABEL,
    PROBA_COLUMNS,
    RAW_LABEL,
    SEGMENT_ID,
    SMOOTHED_LABEL,
)
from taskclf.core.schema import get_schema
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.stages.model import feature_matrix
from taskclf.stages.viterbi import ViterbiSmoother
from taskclf.taxonomy import TaxonomyBucket, TaxonomyConfig, TaxonomyMapper

SCHEMA = get_schema("v1")
NUMERIC = [c for c in SCHEMA.feature_columns if c not in SCHEMA.categorical_columns]
FLAGS = ("is_browser", "is_editor", "is_terminal", "idle_return_indicator")
FLOATS = [c for c in NUMERIC if c not in FLAGS]
PER_ROW = [*PROBA_COLUMNS, CONFIDENCE, IS_REJECTED, RAW_LABEL, SMOOTHED_LABEL, LABEL]
"""Columns that depend on the row only (and its timeline), not on row numbering."""

BUCKET = dt.timedelta(seconds=60)
MAX_GAP_SECONDS = 300
USER_POOL = ("user0", "user1", "user2", "stranger", "ünïcödé user", "user 1/2")
"""Seen users (user0..2) and users the model never saw, odd characters included."""

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------
# Fixtures: calibration maps fitted on the real model's probabilities
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def isotonic(booster_v1, encoders_v1, frame_v1) -> IsotonicCalibrator:
    """One isotonic regression per class on the training frame's probabilities."""
    encoded = build_pipeline(booster_v1, encoders_v1)[:1].transform(frame_v1)
    proba = booster_v1.predict(feature_matrix(encoded, SCHEMA))
    truth = frame_v1["label"].to_numpy()
    regressors = [
        IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
            proba[:, k], (truth == name).astype(float)
        )
        for k, name in enumerate(CLASS_ORDER)
    ]
    return IsotonicCalibrator(regressors)


@pytest.fixture(scope="module")
def calibrations(isotonic) -> dict[str, dict]:
    """build_pipeline keyword arguments of each calibration drawn by the tests."""
    store = CalibratorStore(
        TemperatureCalibrator(1.7),
        {"user0": isotonic, "stranger": TemperatureCalibrator(0.4), "user2": IdentityCalibrator()},
    )
    return {
        "none": {},
        "identity": {"calibrator": IdentityCalibrator()},
        "temperature-soft": {"calibrator": TemperatureCalibrator(3.0)},
        "temperature-sharp": {"calibrator": TemperatureCalibrator(0.3)},
        "isotonic": {"calibrator": isotonic},
        "store": {"calibrator_store": store},
        "store-and-global": {"calibrator": isotonic, "calibrator_store": store},
    }


# --------------------------------------------------------------------------
# The frame strategy
# --------------------------------------------------------------------------


@st.composite
def activity_frames(draw: st.DrawFn, source: pd.DataFrame) -> pd.DataFrame:
    """A feature frame of 1-4 users, with gaps, NaNs and unseen categories.

    Rows are chunks of ``source`` (so that labels come in runs, as real
    activity does) given new users and timestamps. Consecutive buckets of
    a user are 1-12 minutes apart (more than 5 is a gap); no two rows of a
    user share a bucket. The returned frame has a RangeIndex and its rows
    in a drawn order (users interleaved).
    """
    users = draw(st.lists(st.sampled_from(USER_POOL), min_size=1, max_size=4, unique=True))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2025-03-03 08:00", tz="UTC")
    parts = []
    for user in users:
        n = draw(st.integers(0 if len(users) > 1 else 1, 36))
        steps = draw(
            st.lists(st.sampled_from([1, 1, 1, 1, 1, 2, 3, 6, 12]), min_size=n, max_size=n)
        )
        start = int(rng.integers(0, len(source) - n)) if n else 0
        part = source.iloc[start : start + n].copy()
        offset = draw(st.integers(0, 30))
        minutes = offset + np.cumsum(steps, dtype=np.int64)
        part["bucket_start_ts"] = base + pd.to_timedelta(minutes, unit="min")
        part["user_id"] = user
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    n = len(frame)

    nan_rate = draw(st.sampled_from([0.0, 0.05, 0.3]))
    if nan_rate and n:
        for column in FLOATS:
            values = frame[column].to_numpy(dtype=float, copy=True)
            values[rng.random(n) < nan_rate] = np.nan
            frame[column] = values
    unseen_rate = draw(st.sampled_from([0.0, 0.1, 0.5]))
    if unseen_rate and n:
        for column, unseen in (
            ("app_id", "never-seen-app"),
            ("app_category", "brand-new-category"),
            ("domain_category", None),
        ):
            values = frame[column].to_numpy(dtype=object, copy=True)
            values[rng.random(n) < unseen_rate] = unseen
            frame[column] = values
    user_dtype = draw(st.sampled_from(["str", "object", "category"]))
    frame["user_id"] = frame["user_id"].astype(user_dtype)
    return frame.iloc[rng.permutation(n)].reset_index(drop=True)


@st.composite
def pipeline_params(draw: st.DrawFn) -> dict:
    """Random reject threshold, smoother, minimum block and calibration name."""
    return {
        "viterbi_switch_prob": draw(
            st.one_of(st.none(), st.floats(0.001, 0.875), st.sampled_from([0.5, 0.875]))
        ),
        "reject_threshold": draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
        "smooth_window": draw(st.integers(1, 7)),
        "min_block_seconds": draw(st.sampled_from([0, 60, 120, 180, 300, 600])),
        "calibration": draw(
            st.sampled_from(
                [
                    "none",
                    "identity",
                    "temperature-soft",
                    "temperature-sharp",
                    "isotonic",
                    "store",
                    "store-and-global",
                ]
            )
        ),
    }


@pytest.fixture(scope="module")
def source(frame_v1) -> pd.DataFrame:
    return frame_v1.drop(columns=["label", "user_id", "bucket_start_ts"])


@pytest.fixture(scope="module")
def make_pipeline(booster_v1, encoders_v1, calibrations):
    def make(params: dict):
        kwargs = dict(params)
        calibration = calibrations[kwargs.pop("calibration")]
        switch_prob = kwargs.pop("viterbi_switch_prob")
        pipeline = build_pipeline(
            booster_v1, encoders_v1, max_gap_seconds=MAX_GAP_SECONDS, **kwargs, **calibration
        )
        if switch_prob is not None:  # the Viterbi smoother instead of the rolling majority
            pipeline.set_params(smooth=ViterbiSmoother(switch_prob, MAX_GAP_SECONDS))
        return pipeline

    return make


# --------------------------------------------------------------------------
# Plain-Python statements of timelines and segments
# --------------------------------------------------------------------------


def reference_timelines(frame: pd.DataFrame) -> list[list[int]]:
    """Row positions of each timeline, in time order (a row loop, on purpose)."""
    users = frame["user_id"].astype(object).tolist()
    stamps = frame["bucket_start_ts"].tolist()
    order = sorted(range(len(frame)), key=lambda i: (str(users[i]), stamps[i]))
    timelines: list[list[int]] = []
    for i in order:
        last = timelines[-1][-1] if timelines else None
        if (
            last is not None
            and users[last] == users[i]
            and (stamps[i] - stamps[last]).total_seconds() <= MAX_GAP_SECONDS
        ):
            timelines[-1].append(i)
        else:
            timelines.append([i])
    return timelines


def segment_key(segment) -> tuple:
    return (str(segment.user_id), segment.start_ts, segment.end_ts, segment.label)


def assert_same_rows(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Per-row results equal (labels compared as strings, floats exactly)."""
    for column in PER_ROW:
        a, b = left[column].to_numpy(), right[column].to_numpy()
        if column in (RAW_LABEL, SMOOTHED_LABEL, LABEL):
            a, b = a.astype(str), b.astype(str)
        np.testing.assert_array_equal(a, b, err_msg=column)


# --------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_shuffled_input_gives_the_sorted_results(data, source, make_pipeline):
    frame = data.draw(activity_frames(source))
    pipeline = make_pipeline(data.draw(pipeline_params()))
    ordered = frame.sort_values(["user_id", "bucket_start_ts"], kind="stable")
    shuffled = frame.iloc[np.random.default_rng(len(frame)).permutation(len(frame))]

    out_ordered = pipeline.transform(ordered)
    out_shuffled = pipeline.transform(shuffled)

    # rows come back in input order, under the caller's index
    pd.testing.assert_index_equal(out_shuffled.index, shuffled.index)
    pd.testing.assert_index_equal(out_ordered.index, ordered.index)
    assert_same_rows(out_shuffled.loc[frame.index], out_ordered.loc[frame.index])
    np.testing.assert_array_equal(
        pipeline.predict(shuffled), out_ordered.loc[shuffled.index, LABEL].astype(str)
    )
    segments_shuffled = sorted(map(segment_key, frame_to_segments(out_shuffled)))
    segments_ordered = sorted(map(segment_key, frame_to_segments(out_ordered)))
    assert segments_shuffled == segments_ordered


@SETTINGS
@given(data=st.data())
def test_many_users_equal_each_user_alone(data, source, make_pipeline):
    frame = data.draw(activity_frames(source))
    pipeline = make_pipeline(data.draw(pipeline_params()))
    together = pipeline.transform(frame)
    segments = frame_to_segments(together)

    for user in pd.unique(frame["user_id"].astype(object)):
        rows = (frame["user_id"].astype(object) == user).to_numpy()
        alone = pipeline.transform(frame[rows])
        assert_same_rows(alone, together[rows])
        mine = [segment_key(s) for s in segments if s.user_id == user]
        assert [segment_key(s) for s in frame_to_segments(alone)] == mine


@SETTINGS
@given(data=st.data())
def test_segments_partition_each_timeline(data, source, make_pipeline):
    frame = data.draw(activity_frames(source))
    params = data.draw(pipeline_params())
    out = make_pipeline(params).transform(frame)
    segments = frame_to_segments(out)

    assert sum(s.bucket_count for s in segments) == len(frame)
    timeline_of = {}
    position_in = {}
    for t, rows in enumerate(reference_timelines(frame)):
        for k, row in enumerate(rows):
            timeline_of[row], position_in[row] = t, k

    segment_ids = out[SEGMENT_ID].to_numpy()
    stamps = frame["bucket_start_ts"]
    users = frame["user_id"].astype(object).to_numpy()
    labels = out[LABEL].astype(str).to_numpy()
    by_start = {(str(s.user_id), s.start_ts): s for s in segments}
    assert len(by_start) == len(segments)
    # segment ids: each user's numbered from 0 in time order, no number skipped
    for user in pd.unique(users):
        mine = np.flatnonzero(users == user)
        in_time = segment_ids[mine[np.argsort(stamps.iloc[mine].to_numpy(), kind="stable")]]
        assert in_time[0] == 0 and set(np.diff(in_time)) <= {0, 1}
    keys = pd.factorize(pd.MultiIndex.from_arrays([users, segment_ids]))[0]
    covered = 0
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        # one user, one timeline, consecutive buckets of it
        assert len({timeline_of[r] for r in rows}) == 1
        positions = sorted(position_in[r] for r in rows)
        assert positions == list(range(positions[0], positions[0] + len(rows)))
        # the Segment value of these rows
        first = stamps.iloc[rows].min().to_pydatetime()
        last = stamps.iloc[rows].max().to_pydatetime()
        segment = by_start[(str(users[rows[0]]), first)]
        assert segment.bucket_count == len(rows)
        assert segment.end_ts == last + BUCKET
        assert segment.user_id == users[rows[0]]
        # each row's final label is its segment's label
        assert set(labels[rows]) == {segment.label}
        covered += len(rows)
    assert covered == len(frame)

    # ordered and non-overlapping along each user's time
    per_user: dict[str, list] = {}
    for s in segments:
        per_user.setdefault(str(s.user_id), []).append(s)
    for user_segments in per_user.values():
        starts = [s.start_ts for s in user_segments]
        assert starts == sorted(starts)
        for before, after in itertools.pairwise(user_segments):
            assert before.end_ts <= after.start_ts


@SETTINGS
@given(data=st.data())
def test_probabilities_sum_to_one_and_confidence_is_their_max(data, source, make_pipeline):
    frame = data.draw(activity_frames(source))
    params = data.draw(pipeline_params())
    out = make_pipeline(params).transform(frame)

    proba = out[list(PROBA_COLUMNS)].to_numpy()
    assert np.all(np.abs(proba.sum(axis=1) - 1.0) <= 1e-9)
    assert np.all(proba >= 0.0)
    confidence = out[CONFIDENCE].to_numpy()
    assert np.all((confidence >= 0.0) & (confidence <= 1.0))
    np.testing.assert_array_equal(confidence, proba.max(axis=1) if len(proba) else confidence)
    threshold = params["reject_threshold"]
    rejected = out[IS_REJECTED].to_numpy()
    expected = np.zeros(len(out), bool) if threshold is None else confidence < threshold
    np.testing.assert_array_equal(rejected, expected)
    best = np.asarray(CLASS_ORDER, dtype=object)[proba.argmax(axis=1)] if len(proba) else []
    raw = np.where(rejected, MIXED_UNKNOWN, best)
    np.testing.assert_array_equal(out[RAW_LABEL].astype(str).to_numpy(), raw.astype(str))


INDEXES = {
    "range": lambda n, rng: pd.RangeIndex(n),
    "shuffled-int": lambda n, rng: pd.Index(rng.permutation(n) * 7 + 3),
    "string": lambda n, rng: pd.Index([f"row-{i}" for i in rng.permutation(n)]),
    "duplicate": lambda n, rng: pd.Index(rng.integers(0, max(n // 3, 1), n)),
    "datetime": lambda n, rng: pd.date_range("1999-01-01", periods=n, freq="h"),
}


@SETTINGS
@given(
    data=st.data(),
    index_kind=st.sampled_from(sorted(INDEXES)),
    reverse_columns=st.booleans(),
)
def test_results_do_not_depend_on_index_or_column_order(
    data, index_kind, reverse_columns, source, make_pipeline
):
    frame = data.draw(activity_frames(source))
    pipeline = make_pipeline(data.draw(pipeline_params()))
    reference = pipeline.transform(frame)

    rng = np.random.default_rng(len(frame))
    other = frame.copy()
    other.index = INDEXES[index_kind](len(frame), rng)
    columns = list(frame.columns)
    other = other[columns[::-1] if reverse_columns else list(rng.permutation(columns))]
    out = pipeline.transform(other)

    pd.testing.assert_index_equal(out.index, other.index)
    assert list(out.columns[: len(columns)]) == list(other.columns)
    assert_same_rows(out.reset_index(drop=True), reference.reset_index(drop=True))
    np.testing.assert_array_equal(out[SEGMENT_ID].to_numpy(), reference[SEGMENT_ID].to_numpy())
    np.testing.assert_array_equal(pipeline.predict(other), reference[LABEL].astype(str).to_numpy())
    assert [segment_key(s) for s in frame_to_segments(out)] == [
        segment_key(s) for s in frame_to_segments(reference)
    ]


TAXONOMY = TaxonomyConfig(
    [
        TaxonomyBucket("Making", ["Build", "Debug", "Write"]),
        TaxonomyBucket("People", ["Meet", "Communicate", "Review"]),
    ]
)


@SETTINGS
@given(data=st.data())
def test_taxonomy_maps_every_row_and_changes_no_core_result(data, source, make_pipeline):
    frame = data.draw(activity_frames(source))
    params = data.draw(pipeline_params())
    plain = make_pipeline(params)
    mapped = clone(plain).set_params(steps=[*plain.steps, ("taxonomy", TaxonomyMapper(TAXONOMY))])
    out = mapped.transform(frame)
    reference = plain.transform(frame)

    pd.testing.assert_frame_equal(out[reference.columns], reference, check_exact=True)
    np.testing.assert_array_equal(mapped.predict(frame), plain.predict(frame))
    buckets = [f"mapped_proba_{name}" for name in ("Making", "People", "Other")]
    probs = out[buckets].to_numpy()
    rejected = out[IS_REJECTED].to_numpy()
    assert np.isnan(probs[rejected]).all()
    kept = probs[~rejected]
    assert np.all(np.abs(kept.sum(axis=1) - 1.0) <= len(buckets) * 5e-7)  # rounded to 6 digits
    assert np.all((kept >= 0.0) & (kept <= 1.0))
    labels = out[MAPPED_LABEL].astype(str).to_numpy()
    assert set(labels[rejected]) <= {MIXED_UNKNOWN}
    # the mapped label is a bucket of highest probability (compared after
    # rounding, which may tie buckets the mapping told apart)
    chosen = pd.Index(["Making", "People", "Other"]).get_indexer(labels[~rejected])
    assert (chosen >= 0).all()
    np.testing.assert_array_equal(kept[np.arange(len(kept)), chosen], kept.max(axis=1))


TIMESTAMP_FORMS = {
    "naive UTC": lambda ts: ts.dt.tz_convert("UTC").dt.tz_localize(None),
    "New York": lambda ts: ts.dt.tz_convert("America/New_York"),
    "Kolkata": lambda ts: ts.dt.tz_convert("Asia/Kolkata"),
    "ISO text with offsets": lambda ts: ts.dt.tz_convert("Asia/Kolkata").map(
        lambda t: t.isoformat()
    ),
    "ISO text, Z": lambda ts: ts.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    "microseconds": lambda ts: ts.dt.as_unit("us"),
}


@SETTINGS
@given(data=st.data(), form=st.sampled_from(sorted(TIMESTAMP_FORMS)))
def test_timestamps_in_any_zone_or_form_give_the_same_results(data, form, source, make_pipeline):
    frame = data.draw(activity_frames(source))
    pipeline = make_pipeline(data.draw(pipeline_params()))
    reference = pipeline.transform(frame)
    other = frame.assign(bucket_start_ts=TIMESTAMP_FORMS[form](frame["bucket_start_ts"]))
    out = pipeline.transform(other)
    assert_same_rows(out, reference)
    np.testing.assert_array_equal(out[SEGMENT_ID].to_numpy(), reference[SEGMENT_ID].to_numpy())
    segments = frame_to_segments(out)
    assert segments == frame_to_segments(reference)
    assert all(s.start_ts.utcoffset() == dt.timedelta(0) for s in segments)
