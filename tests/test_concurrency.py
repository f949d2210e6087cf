"""One loaded pipeline used from many threads at once gives the serial results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import FAST, make_frame

from taskclf import CalibratorStore, TemperatureCalibrator, build_pipeline
from taskclf.infer.batch import run_batch_inference
from taskclf.stages.viterbi import ViterbiSmoother


@pytest.fixture(scope="module", params=["frozen booster", "trained pipeline"])
def loaded(request, booster_v1, encoders_v1, frame_v1, tmp_path_factory):
    """A pipeline saved with joblib and loaded back, as a service would."""
    if request.param == "frozen booster":
        store = CalibratorStore(TemperatureCalibrator(1.3), {"user1": TemperatureCalibrator(0.7)})
        pipeline = build_pipeline(
            booster_v1, encoders_v1, reject_threshold=0.45, smooth_window=5, calibrator_store=store
        )
    else:  # trained here: encoder, booster, per-user isotonic calibration, Viterbi
        isotonic = {"calibration": "isotonic", "per_user_calibration": True}
        pipeline = build_pipeline(**FAST, **isotonic, n_folds=2, reject_threshold=0.4)
        pipeline.set_params(smooth=ViterbiSmoother(switch_prob=0.05), calibrate__min_user_days=1)
        pipeline.set_params(calibrate__min_user_rows=50)
        pipeline.fit(frame_v1.drop(columns="label"), frame_v1["label"])
    path = tmp_path_factory.mktemp("bundle") / "pipeline.joblib"
    joblib.dump(pipeline, path)
    return joblib.load(path)


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    """Different frames (sizes, users, row orders), one per thread."""
    return [
        make_frame(n_users=1 + k % 3, minutes=40 + 20 * k, seed=100 + k)
        .drop(columns="label")
        .sample(frac=1, random_state=k)
        for k in range(4)
    ]


def run_together(function, items):
    """Call ``function`` on every item from its own thread, all starting at once."""
    barrier = threading.Barrier(len(items))

    def task(item):
        barrier.wait()
        return function(item)

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(task, items))


def test_threads_transform_as_one_thread_does(loaded, frames):
    items = [*frames, frames[-1], frames[-1]]  # the same frame from three threads too
    before = frames[-1].copy(deep=True)
    serial = [loaded.transform(frame) for frame in items]
    for expected, got in zip(serial, run_together(loaded.transform, items), strict=True):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
    pd.testing.assert_frame_equal(frames[-1], before, check_exact=True)


def test_threads_through_the_functional_api(booster_v1, encoders_v1, frames):
    def infer(frame):
        return run_batch_inference(
            booster_v1, frame, cat_encoders=encoders_v1, reject_threshold=0.5, smooth_window=3
        )

    serial = [infer(frame) for frame in frames]
    for expected, got in zip(serial, run_together(infer, frames), strict=True):
        assert got.smoothed_labels == expected.smoothed_labels
        assert got.segments == expected.segments
        np.testing.assert_array_equal(got.core_probs, expected.core_probs)
