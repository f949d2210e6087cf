"""One loaded pipeline used from many threads at once gives the serial results."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from taskclf import (
    CalibratorStore,
    TemperatureCalibrator,
    build_pipeline,
    frame_to_segments,
    load_bundle,
    save_bundle,
)
from taskclf._readers import read_features, write_features
from taskclf.infer.batch import read_segments_json, run_batch_inference
from taskclf.stages.viterbi import ViterbiSmoother

THREADS = 4


def _frozen(booster, encoders):
    store = CalibratorStore(TemperatureCalibrator(1.3), {"user1": TemperatureCalibrator(0.7)})
    return build_pipeline(
        booster, encoders, reject_threshold=0.45, smooth_window=5, calibrator_store=store
    )


def _trained(frame):
    """Trained here: encoder, booster, per-user isotonic calibration, Viterbi."""
    pipeline = build_pipeline(
        num_boost_round=10,
        num_threads=1,
        n_folds=2,
        calibration="isotonic",
        per_user_calibration=True,
        reject_threshold=0.4,
    )
    pipeline.set_params(smooth=ViterbiSmoother(switch_prob=0.05))
    pipeline.set_params(calibrate__min_user_rows=50, calibrate__min_user_days=1)
    return pipeline.fit(frame.drop(columns="label"), frame["label"])


@pytest.fixture(scope="module", params=["frozen booster", "trained pipeline"])
def loaded(request, booster_v1, encoders_v1, frame_v1, tmp_path_factory):
    """A pipeline saved with joblib and loaded back, as a service would."""
    if request.param == "frozen booster":
        pipeline = _frozen(booster_v1, encoders_v1)
    else:
        pipeline = _trained(frame_v1)
    path = tmp_path_factory.mktemp("bundle") / "pipeline.joblib"
    joblib.dump(pipeline, path)
    return joblib.load(path)


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    """Different frames (sizes, users, orders), one per task."""
    out = []
    for seed in range(THREADS):
        frame = make_frame(n_users=1 + seed % 3, minutes=60 + 25 * seed, seed=100 + seed)
        frame = frame.drop(columns="label")
        out.append(frame.iloc[np.random.default_rng(seed).permutation(len(frame))])
    return out


def run_together(function, items):
    """Call ``function`` on every item from its own thread, all starting at once."""
    barrier = threading.Barrier(len(items))

    def task(item):
        barrier.wait()
        return function(item)

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(task, items))


def test_threads_predict_the_serial_labels(loaded, frames):
    serial = [loaded.predict(frame) for frame in frames]
    together = run_together(loaded.predict, frames)
    for expected, got in zip(serial, together, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_threads_on_one_frame_transform_identically(loaded, frames):
    frame = frames[-1]
    before = frame.copy(deep=True)
    serial = loaded.transform(frame)
    together = run_together(lambda f: loaded.transform(f), [frame] * THREADS)
    for got in together:
        pd.testing.assert_frame_equal(got, serial, check_exact=True)
    pd.testing.assert_frame_equal(frame, before, check_exact=True)


def test_threads_get_the_serial_segments(loaded, frames):
    serial = [frame_to_segments(loaded.transform(frame)) for frame in frames]
    together = run_together(lambda f: frame_to_segments(loaded.transform(f)), frames)
    assert together == serial


def test_threads_through_the_functional_api(booster_v1, encoders_v1, frames):
    def infer(frame):
        return run_batch_inference(
            booster_v1, frame, cat_encoders=encoders_v1, reject_threshold=0.5, smooth_window=3
        )

    serial = [infer(frame) for frame in frames]
    together = run_together(infer, frames)
    for expected, got in zip(serial, together, strict=True):
        assert got.raw_labels == expected.raw_labels
        assert got.smoothed_labels == expected.smoothed_labels
        assert got.segments == expected.segments
        np.testing.assert_array_equal(got.core_probs, expected.core_probs)


@pytest.mark.slow
def test_concurrent_cli_runs_do_not_interfere(booster_v1, encoders_v1, frame_v1, tmp_path):
    """Four ``python -m taskclf infer`` processes at once, one output directory each."""
    bundle = save_bundle(
        build_pipeline(booster_v1, encoders_v1, reject_threshold=0.45), tmp_path / "m.taskclf"
    )
    inputs = []
    for k in range(3):  # different inputs, so that a mix-up would show
        frame = frame_v1.drop(columns="label").iloc[k * 40 :]
        inputs.append(write_features(frame, tmp_path / f"features-{k}.csv"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "taskclf", "infer", str(path), "--bundle", str(bundle),
             "--out", str(tmp_path / f"out-{k}"), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k, path in enumerate(inputs)
    ]  # fmt: skip
    for process in runs:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err

    pipeline = load_bundle(bundle)
    for k, path in enumerate(inputs):
        out = tmp_path / f"out-{k}"
        assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "segments.json"]
        written = pd.read_csv(out / "predictions.csv")
        expected = pipeline.predict(read_features(path))
        np.testing.assert_array_equal(written["predicted_label"].to_numpy(), expected)
        segments = read_segments_json(out / "segments.json")
        assert sum(s.bucket_count for s in segments) == len(expected)
