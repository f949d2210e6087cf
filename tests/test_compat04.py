"""taskclf 0.4 users' files, names and results (fixtures made with taskclf 0.4.15)."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from conftest import refused
from sklearn.isotonic import IsotonicRegression

from taskclf.exceptions import InvalidParameterError, MissingFileError, NotOursError
from taskclf.infer.batch import read_segments_json, run_batch_inference
from taskclf.infer.calibration import (
    CalibratorStore,
    IsotonicCalibrator,
    TemperatureCalibrator,
    load_calibrator,
    load_calibrator_store,
    save_calibrator,
    save_calibrator_store,
)

V04 = Path(__file__).parent / "data" / "v04"


def _tree(directory: Path) -> dict[str, object]:
    files = directory.rglob("*.json")
    return {str(f.relative_to(directory)): json.loads(f.read_text()) for f in files}


def test_a_04_store_loads_calibrates_and_saves_as_04_did(tmp_path):
    results = json.loads((V04 / "calibrator_store_results.json").read_text())
    store = load_calibrator_store(V04 / "calibrator_store")
    assert store.user_ids == ["alice", "bob", "carol"]
    assert (store.model_bundle_id, store.model_schema_hash) == (
        "run_20250106_120000",
        "4077fe0dba70",
    )
    assert store.get_calibrator("alice").n_classes == 8
    calibrated = store.calibrate_batch(np.asarray(results["proba"]), results["user_ids"])
    np.testing.assert_array_equal(calibrated, np.asarray(results["calibrated"]))
    out = save_calibrator_store(store, tmp_path / "store")
    assert _tree(out) == _tree(V04 / "calibrator_store")
    proba = np.random.default_rng(0).dirichlet(np.ones(8), size=20)
    users = ["alice", "bob", "carol", "eve"] * 5
    again = load_calibrator_store(save_calibrator_store(load_calibrator_store(out), out))
    np.testing.assert_array_equal(
        again.calibrate_batch(proba, users), store.calibrate_batch(proba, users)
    )


def test_single_calibrators_round_trip_for_any_number_of_classes(tmp_path):
    for calibrator in (TemperatureCalibrator(0.7), TemperatureCalibrator(1.0)):
        assert load_calibrator(save_calibrator(calibrator, tmp_path / "t.json")) == calibrator
    rng = np.random.default_rng(1)
    proba, y = rng.dirichlet(np.ones(3), size=50), rng.integers(0, 3, 50)
    regs = [IsotonicRegression(out_of_bounds="clip").fit(proba[:, k], y == k) for k in range(3)]
    loaded = load_calibrator(save_calibrator(IsotonicCalibrator(regs), tmp_path / "iso.json"))
    assert loaded.n_classes == 3
    np.testing.assert_allclose(loaded.calibrate(proba), IsotonicCalibrator(regs).calibrate(proba))


def test_store_files_refuse_clearly(tmp_path):
    missing = refused(lambda: load_calibrator_store(tmp_path / "nowhere"), MissingFileError)
    assert isinstance(missing, FileNotFoundError)
    (tmp_path / "bad.json").write_text('{"type": "quantum"}')
    refused(lambda: load_calibrator(tmp_path / "bad.json"), InvalidParameterError, "quantum")
    hostile = CalibratorStore(TemperatureCalibrator(1.2), {"../../etc/x": TemperatureCalibrator(2)})
    refused(
        lambda: save_calibrator_store(hostile, tmp_path / "store"),
        InvalidParameterError,
        "cannot name a calibrator file",
    )
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    store = CalibratorStore(TemperatureCalibrator(1.5))
    refused(lambda: save_calibrator_store(store, theirs), NotOursError, "theirs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "theirs"]
    assert (theirs / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def batch04():
    """0.4.15's run_batch_inference on two users, interleaved, one with a gap."""
    booster = lgb.Booster(model_file=str(V04 / "booster.txt"))
    encoders = json.loads((V04 / "encoders.json").read_text())
    features = pd.read_csv(V04 / "features.csv")
    expected = json.loads((V04 / "batch_results.json").read_text())
    return booster, encoders, features, expected


def _segments(segments) -> list[dict]:
    return [{k: v for k, v in s.to_dict().items() if k != "user_id"} for s in segments]


def test_as_given_timelines_reproduce_04_and_per_user_ones_differ_on_purpose(batch04):
    booster, encoders, features, expected = batch04
    args = {"cat_encoders": encoders, "reject_threshold": 0.55}
    result = run_batch_inference(booster, features, timelines="as_given", **args)
    assert result.raw_labels == expected["raw_labels"]
    assert result.smoothed_labels == expected["smoothed_labels"]
    assert result.is_rejected.tolist() == expected["is_rejected"]
    np.testing.assert_array_equal(result.confidences, expected["confidences"])
    assert _segments(result.segments) == expected["segments"]
    per_user = run_batch_inference(booster, features, **args)
    assert per_user.raw_labels == expected["raw_labels"]  # per-row stages agree
    assert _segments(per_user.segments) != expected["segments"]  # users and gaps are split
    assert {s.user_id for s in per_user.segments} == {"user0", "newcomer"}
    assert _segments(read_segments_json(V04 / "segments_04.json")) == expected["segments"]
