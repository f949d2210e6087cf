"""taskclf 0.4 users' files, names and results (fixtures made with taskclf 0.4.15)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taskclf.exceptions import InvalidParameterError, MissingFileError, NotOursError
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


@pytest.fixture(scope="module")
def store_results() -> dict:
    return json.loads((V04 / "calibrator_store_results.json").read_text())


def _tree(directory: Path) -> dict[str, object]:
    return {
        str(f.relative_to(directory)): json.loads(f.read_text())
        for f in sorted(directory.rglob("*.json"))
    }


def test_a_04_store_loads_and_calibrates_as_04_did(store_results):
    store = load_calibrator_store(V04 / "calibrator_store")
    assert store.user_ids == ["alice", "bob", "carol"]
    assert store.model_bundle_id == "run_20250106_120000"
    assert store.model_schema_hash == "4077fe0dba70"
    assert isinstance(store.get_calibrator("alice"), IsotonicCalibrator)
    assert store.get_calibrator("alice").n_classes == 8
    proba = np.asarray(store_results["proba"])
    calibrated = store.calibrate_batch(proba, store_results["user_ids"])
    np.testing.assert_array_equal(calibrated, np.asarray(store_results["calibrated"]))


def test_a_store_saved_again_is_the_04_layout_with_the_same_content(tmp_path):
    store = load_calibrator_store(V04 / "calibrator_store")
    out = save_calibrator_store(store, tmp_path / "store")
    assert _tree(out) == _tree(V04 / "calibrator_store")
    again = load_calibrator_store(out)
    proba = np.random.default_rng(0).dirichlet(np.ones(8), size=20)
    users = ["alice", "bob", "carol", "eve"] * 5
    np.testing.assert_array_equal(
        again.calibrate_batch(proba, users), store.calibrate_batch(proba, users)
    )


@pytest.mark.parametrize("calibrator", [TemperatureCalibrator(0.7), TemperatureCalibrator(1.0)])
def test_single_calibrators_round_trip(calibrator, tmp_path):
    path = save_calibrator(calibrator, tmp_path / "cal.json")
    assert load_calibrator(path) == calibrator


def test_isotonic_calibrators_work_for_any_number_of_classes(tmp_path):
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, 50)
    regs = [IsotonicRegression(out_of_bounds="clip").fit(proba[:, k], y == k) for k in range(3)]
    calibrator = IsotonicCalibrator(regs)
    assert calibrator.n_classes == 3
    loaded = load_calibrator(save_calibrator(calibrator, tmp_path / "iso.json"))
    np.testing.assert_allclose(loaded.calibrate(proba), calibrator.calibrate(proba))
    with pytest.raises(InvalidParameterError, match="must not be empty"):
        IsotonicCalibrator([])


def test_store_files_refuse_clearly(tmp_path):
    with pytest.raises(MissingFileError) as missing:
        load_calibrator_store(tmp_path / "nowhere")
    assert isinstance(missing.value, FileNotFoundError)
    (tmp_path / "bad.json").write_text('{"type": "quantum"}')
    with pytest.raises(InvalidParameterError, match="unknown calibrator type"):
        load_calibrator(tmp_path / "bad.json")
    hostile = CalibratorStore(TemperatureCalibrator(1.2), {"../../etc/x": TemperatureCalibrator(2)})
    with pytest.raises(InvalidParameterError, match="cannot name a calibrator file"):
        save_calibrator_store(hostile, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_store_is_never_written_over_someone_elses_directory(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(NotOursError, match="theirs"):
        save_calibrator_store(CalibratorStore(TemperatureCalibrator(1.5)), theirs)
    assert (theirs / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def batch04():
    """0.4.15's run_batch_inference on two users, interleaved, one with a gap."""
    import lightgbm as lgb
    import pandas as pd

    booster = lgb.Booster(model_file=str(V04 / "booster.txt"))
    encoders = json.loads((V04 / "encoders.json").read_text())
    features = pd.read_csv(V04 / "features.csv")
    expected = json.loads((V04 / "batch_results.json").read_text())
    return booster, encoders, features, expected


def _segments(result) -> list[dict]:
    return [{k: v for k, v in s.to_dict().items() if k != "user_id"} for s in result.segments]


def test_as_given_timelines_reproduce_04_on_a_frame_of_users_and_gaps(batch04):
    from taskclf.infer.batch import run_batch_inference

    booster, encoders, features, expected = batch04
    result = run_batch_inference(
        booster, features, cat_encoders=encoders, reject_threshold=0.55, timelines="as_given"
    )
    assert result.raw_labels == expected["raw_labels"]
    assert result.smoothed_labels == expected["smoothed_labels"]
    assert result.is_rejected.tolist() == expected["is_rejected"]
    np.testing.assert_array_equal(result.confidences, expected["confidences"])
    assert _segments(result) == expected["segments"]


def test_per_user_timelines_differ_from_04_on_purpose(batch04):
    from taskclf.infer.batch import run_batch_inference

    booster, encoders, features, expected = batch04
    result = run_batch_inference(booster, features, cat_encoders=encoders, reject_threshold=0.55)
    assert result.raw_labels == expected["raw_labels"]  # per-row stages agree
    assert _segments(result) != expected["segments"]  # users and gaps are split
    assert {s.user_id for s in result.segments} == {"user0", "newcomer"}


def test_segments_written_by_04_are_read(batch04):
    from taskclf.infer.batch import read_segments_json

    *_, expected = batch04
    segments = read_segments_json(V04 / "segments_04.json")
    assert [{k: v for k, v in s.to_dict().items() if k != "user_id"} for s in segments] == (
        expected["segments"]
    )
