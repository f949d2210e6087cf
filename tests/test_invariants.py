"""Invariants of the whole pipeline on random frames (hypothesis).

Frames (:func:`activity_frames`) hold users seen and unseen by the model,
gaps in time, NaNs, unseen category values and shuffled rows; the model is
the real session booster of ``conftest.py``; threshold, smoother, window,
minimum block and calibration are drawn too. Timelines and segments are
checked against plain-Python statements of the rules.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
from taskclf.taxonomy import TaxonomyBucket, TaxonomyConfig

SCHEMA = get_schema("v1")
FLOATS = [
    c
    for c in SCHEMA.feature_columns
    if c not in SCHEMA.categorical_columns
    and c not in ("is_browser", "is_editor", "is_terminal", "idle_return_indicator")
]
PER_ROW = [*PROBA_COLUMNS, CONFIDENCE, IS_REJECTED, RAW_LABEL, SMOOTHED_LABEL, LABEL]
MAX_GAP_SECONDS = 300
USER_POOL = ("user0", "user1", "user2", "stranger", "ünïcödé user", "user 1/2")
"""Seen users (user0..2) and users the model never saw, odd characters included."""
TAXONOMY = TaxonomyConfig(
    [
        TaxonomyBucket("Making", ["Build", "Debug", "Write"]),
        TaxonomyBucket("People", ["Meet", "Communicate", "Review"]),
    ]
)
BUCKETS = ["Making", "People", "Other"]
SETTINGS = settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def calibrations(booster_v1, encoders_v1, frame_v1) -> dict[str, dict]:
    """build_pipeline arguments of each calibration drawn, fitted on the real model."""
    encoded = build_pipeline(booster_v1, encoders_v1)[:1].transform(frame_v1)
    proba = booster_v1.predict(feature_matrix(encoded, SCHEMA, encoders_v1["user_id"].classes_))
    truth = frame_v1["label"].to_numpy()
    isotonic = IsotonicCalibrator(
        [
            IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
                proba[:, k], (truth == name).astype(float)
            )
            for k, name in enumerate(CLASS_ORDER)
        ]
    )
    store = CalibratorStore(
        TemperatureCalibrator(1.7),
        {"user0": isotonic, "stranger": TemperatureCalibrator(0.4), "user2": IdentityCalibrator()},
    )
    return {
        "none": {},
        "temperature-soft": {"calibrator": TemperatureCalibrator(3.0)},
        "temperature-sharp": {"calibrator": TemperatureCalibrator(0.3)},
        "isotonic": {"calibrator": isotonic},
        "store-and-global": {"calibrator": isotonic, "calibrator_store": store},
    }


@pytest.fixture(scope="module")
def source(frame_v1) -> pd.DataFrame:
    return frame_v1.drop(columns=["label", "user_id", "bucket_start_ts"])


@st.composite
def activity_frames(draw: st.DrawFn, source: pd.DataFrame) -> pd.DataFrame:
    """A feature frame of 1-4 users, with gaps, NaNs and unseen categories.

    Rows are chunks of ``source`` (labels come in runs) given new users and
    times 1-12 minutes apart (more than 5 is a gap), no two rows of a user
    in one bucket; the rows come in a drawn order under a RangeIndex.
    """
    users = draw(st.lists(st.sampled_from(USER_POOL), min_size=1, max_size=4, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = pd.Timestamp("2025-03-03 08:00", tz="UTC")
    parts = []
    for user in users:
        n = draw(st.integers(0 if len(users) > 1 else 1, 36))
        steps = draw(st.lists(st.sampled_from([1, 1, 1, 1, 2, 3, 6, 12]), min_size=n, max_size=n))
        start = int(rng.integers(0, len(source) - n)) if n else 0
        part = source.iloc[start : start + n].copy()
        minutes = draw(st.integers(0, 30)) + np.cumsum(steps, dtype=np.int64)
        part["bucket_start_ts"] = base + pd.to_timedelta(minutes, unit="min")
        part["user_id"] = user
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    n = len(frame)
    nan_rate = draw(st.sampled_from([0.0, 0.05, 0.3]))
    for column in FLOATS if nan_rate else []:
        frame[column] = frame[column].mask(rng.random(n) < nan_rate)
    unseen_rate = draw(st.sampled_from([0.0, 0.1, 0.5]))
    for column, unseen in (
        ("app_id", "never-seen"),
        ("app_category", "new"),
        ("domain_category", None),
    ):
        values = frame[column].to_numpy(dtype=object, copy=True)
        values[rng.random(n) < unseen_rate] = unseen
        frame[column] = values
    frame["user_id"] = frame["user_id"].astype(draw(st.sampled_from(["str", "object", "category"])))
    return frame.iloc[rng.permutation(n)].reset_index(drop=True)


@pytest.fixture(scope="module")
def pipelines(booster_v1, encoders_v1, calibrations):
    """A strategy of pipelines: drawn threshold, smoother, minimum block and calibration."""

    def make(threshold, window, switch_prob, min_block, calibration, taxonomy):
        pipeline = build_pipeline(
            booster_v1,
            encoders_v1,
            reject_threshold=threshold,
            smooth_window=window,
            min_block_seconds=min_block,
            max_gap_seconds=MAX_GAP_SECONDS,
            taxonomy=TAXONOMY if taxonomy else None,
            **calibrations[calibration],
        )
        if switch_prob is not None:
            pipeline.set_params(smooth=ViterbiSmoother(switch_prob, MAX_GAP_SECONDS))
        return pipeline

    return st.builds(
        make,
        st.one_of(st.none(), st.floats(0.0, 1.0)),
        st.integers(1, 7),
        st.one_of(st.none(), st.floats(0.001, 0.875)),
        st.sampled_from([0, 60, 120, 180, 300, 600]),
        st.sampled_from(sorted(calibrations)),
        st.booleans(),
    )


def reference_timelines(frame: pd.DataFrame) -> list[list[int]]:
    """Row positions of each timeline, in time order (a row loop, on purpose)."""
    users = frame["user_id"].astype(object).tolist()
    stamps = frame["bucket_start_ts"].tolist()
    timelines: list[list[int]] = []
    for i in sorted(range(len(frame)), key=lambda i: (str(users[i]), stamps[i])):
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


def segment_keys(frame: pd.DataFrame) -> list[tuple]:
    return [(str(s.user_id), s.start_ts, s.end_ts, s.label) for s in frame_to_segments(frame)]


def assert_same_rows(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Per-row results equal (labels compared as strings, floats exactly)."""
    for column in PER_ROW:
        a, b = left[column].to_numpy(), right[column].to_numpy()
        if column in (RAW_LABEL, SMOOTHED_LABEL, LABEL):
            a, b = a.astype(str), b.astype(str)
        np.testing.assert_array_equal(a, b, err_msg=column)


INDEXES = {
    "shuffled-int": lambda n, rng: pd.Index(rng.permutation(n) * 7 + 3),
    "string": lambda n, rng: pd.Index([f"row-{i}" for i in rng.permutation(n)]),
    "duplicate": lambda n, rng: pd.Index(rng.integers(0, max(n // 3, 1), n)),
    "datetime": lambda n, rng: pd.date_range("1999-01-01", periods=n, freq="h"),
}
TIMESTAMP_FORMS = {
    "aware UTC": lambda ts: ts,
    "naive UTC": lambda ts: ts.dt.tz_convert("UTC").dt.tz_localize(None),
    "New York": lambda ts: ts.dt.tz_convert("America/New_York"),
    "ISO text with offsets": lambda ts: ts.dt.tz_convert("Asia/Kolkata").map(
        lambda t: t.isoformat()
    ),
    "ISO text, Z": lambda ts: ts.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    "microseconds": lambda ts: ts.dt.as_unit("us"),
}


@SETTINGS
@given(
    data=st.data(),
    index=st.sampled_from(sorted(INDEXES)),
    form=st.sampled_from(sorted(TIMESTAMP_FORMS)),
)
def test_row_order_index_column_order_and_time_zone_do_not_matter(
    data, index, form, source, pipelines
):
    frame = data.draw(activity_frames(source))
    pipeline = data.draw(pipelines)
    reference = pipeline.transform(frame.sort_values(["user_id", "bucket_start_ts"])).loc[
        frame.index
    ]
    rng = np.random.default_rng(len(frame))
    other = frame.iloc[rng.permutation(len(frame))]
    other = other.assign(bucket_start_ts=TIMESTAMP_FORMS[form](other["bucket_start_ts"]))
    other = other[list(rng.permutation(other.columns))]
    positions = other.index.to_numpy()
    other.index = INDEXES[index](len(frame), rng)

    out = pipeline.transform(other)
    pd.testing.assert_index_equal(out.index, other.index)  # rows in input order
    assert list(out.columns[: other.shape[1]]) == list(other.columns)
    expected = reference.iloc[positions]
    assert_same_rows(out, expected)
    np.testing.assert_array_equal(out[SEGMENT_ID].to_numpy(), expected[SEGMENT_ID].to_numpy())
    assert sorted(segment_keys(out)) == sorted(segment_keys(reference))
    assert all(s.start_ts.utcoffset() == dt.timedelta(0) for s in frame_to_segments(out))


@SETTINGS
@given(data=st.data())
def test_segments_partition_each_timeline_and_users_do_not_interact(data, source, pipelines):
    frame = data.draw(activity_frames(source))
    pipeline = data.draw(pipelines)
    out = pipeline.transform(frame)
    segments = frame_to_segments(out)
    users = frame["user_id"].astype(object).to_numpy()

    user = data.draw(st.sampled_from(list(pd.unique(users))))  # alone, the same rows
    alone = pipeline.transform(frame[users == user])
    assert_same_rows(alone, out[users == user])
    assert segment_keys(alone) == [k for k in segment_keys(out) if k[0] == str(user)]

    timeline_of, position_in = {}, {}
    for t, rows in enumerate(reference_timelines(frame)):
        for k, row in enumerate(rows):
            timeline_of[row], position_in[row] = t, k
    stamps = frame["bucket_start_ts"]
    ids = out[SEGMENT_ID].to_numpy()
    labels = out[LABEL].astype(str).to_numpy()
    by_start = {(str(s.user_id), s.start_ts): s for s in segments}
    assert len(by_start) == len(segments)
    assert sum(s.bucket_count for s in segments) == len(frame)
    for user in pd.unique(users):  # numbered from 0 per user in time order, none skipped
        mine = np.flatnonzero(users == user)
        in_time = ids[mine[np.argsort(stamps.iloc[mine].to_numpy(), kind="stable")]]
        assert in_time[0] == 0 and set(np.diff(in_time)) <= {0, 1}
    keys = pd.factorize(pd.MultiIndex.from_arrays([users, ids]))[0]
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        assert len({timeline_of[r] for r in rows}) == 1  # one timeline, consecutive rows
        positions = sorted(position_in[r] for r in rows)
        assert positions == list(range(positions[0], positions[0] + len(rows)))
        segment = by_start[(str(users[rows[0]]), stamps.iloc[rows].min().to_pydatetime())]
        assert segment.bucket_count == len(rows)
        assert segment.end_ts == stamps.iloc[rows].max().to_pydatetime() + dt.timedelta(minutes=1)
        assert segment.user_id == users[rows[0]]
        assert set(labels[rows]) == {segment.label}
    for user in pd.unique(users):  # ordered and non-overlapping along each user's time
        mine = [s for s in segments if s.user_id == user]
        for before, after in itertools.pairwise(mine):
            assert before.end_ts <= after.start_ts


@SETTINGS
@given(data=st.data())
def test_probabilities_rejection_and_taxonomy_follow_the_rules(data, source, pipelines):
    frame = data.draw(activity_frames(source))
    pipeline = data.draw(pipelines)
    out = pipeline.transform(frame)

    proba = out[list(PROBA_COLUMNS)].to_numpy()
    assert np.all(np.abs(proba.sum(axis=1) - 1.0) <= 1e-9) and np.all(proba >= 0.0)
    confidence = out[CONFIDENCE].to_numpy()
    np.testing.assert_array_equal(confidence, proba.max(axis=1, initial=0.0))
    threshold = pipeline.get_params()["reject__threshold"]
    rejected = out[IS_REJECTED].to_numpy()
    np.testing.assert_array_equal(rejected, threshold is not None and confidence < threshold)
    best = np.asarray(CLASS_ORDER, dtype=object)[proba.argmax(axis=1)] if len(proba) else []
    raw = np.where(rejected, MIXED_UNKNOWN, best).astype(str)
    np.testing.assert_array_equal(out[RAW_LABEL].astype(str).to_numpy(), raw)
    if "taxonomy" not in pipeline.named_steps:
        return
    plain = pipeline[:-1].transform(frame)
    pd.testing.assert_frame_equal(out[plain.columns], plain, check_exact=True)
    probs = out[[f"mapped_proba_{b}" for b in BUCKETS]].to_numpy()
    assert np.isnan(probs[rejected]).all()
    kept = probs[~rejected]
    assert np.all(np.abs(kept.sum(axis=1) - 1.0) <= 3 * 5e-7)  # rounded to 6 digits
    assert np.all((kept >= 0.0) & (kept <= 1.0))
    labels = out[MAPPED_LABEL].astype(str).to_numpy()
    assert set(labels[rejected]) <= {MIXED_UNKNOWN}
    # a bucket of highest probability (after rounding, which may tie buckets)
    chosen = pd.Index(BUCKETS).get_indexer(labels[~rejected])
    assert (chosen >= 0).all()
    np.testing.assert_array_equal(kept[np.arange(len(kept)), chosen], kept.max(axis=1))
