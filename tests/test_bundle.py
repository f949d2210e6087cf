"""Bundle files: round trips, metadata, and every refusal before unpickling."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import threading
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, refused

import taskclf.bundle as bundle_module
from taskclf import TemperatureCalibrator, build_pipeline, load_bundle, save_bundle
from taskclf.bundle import (
    _PREFIX,
    FORMAT_VERSION,
    MAGIC,
    decode_bundle,
    encode_bundle,
    library_versions,
    read_bundle_info,
    record_training,
    training_fingerprint,
)
from taskclf.bundle_dir import export_bundle_dir, load_bundle_dir, read_bundle_dir_info
from taskclf.core.schema import SCHEMA_V1, SCHEMA_V2
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    BundleError,
    BundleVersionWarning,
    InvalidParameterError,
    NotFittedError,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pipeline(booster_v1, encoders_v1):
    calibrator = TemperatureCalibrator(1.5)
    return build_pipeline(
        booster_v1, encoders_v1, reject_threshold=0.45, smooth_window=5, calibrator=calibrator
    )


@pytest.fixture(scope="module")
def saved(pipeline, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "model.taskclf"
    return save_bundle(pipeline, path, metadata={"team": "data", "notes": ["a", np.int64(1)]})


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickled although the file should have been refused")

    monkeypatch.setattr(bundle_module.joblib, "load", refuse)


def edited(saved, tmp_path, change=None, payload=None) -> Path:
    """A copy of ``saved`` whose header ``change`` edits or whose payload is ``payload``
    pickled, with valid digests."""
    header, data = decode_bundle(saved.read_bytes(), "test")
    if payload is not None:
        buffer = io.BytesIO()
        joblib.dump(payload, buffer)
        data = buffer.getvalue()
        header["payload"].update(sha256=hashlib.sha256(data).hexdigest(), length=len(data))
    if change is not None:
        change(header)
    target = tmp_path / "edited.taskclf"
    target.write_bytes(encode_bundle(header, data))
    return target


def test_round_trip_records_the_metadata(pipeline, saved, features_v1):
    loaded = load_bundle(saved)
    pd.testing.assert_frame_equal(loaded.transform(features_v1), pipeline.transform(features_v1))
    assert loaded.get_params()["smooth__window"] == 5
    meta = read_bundle_info(saved).metadata
    assert meta.versions == library_versions()
    assert (meta.schema_hash, meta.label_set) == (SCHEMA_V1.schema_hash, CLASS_ORDER)
    assert meta.steps[:2] == ("encode", "predict")
    assert meta.params["reject__threshold"] == 0.45 and "predict__booster" not in meta.params
    assert meta.extra == {"team": "data", "notes": ["a", 1]}
    assert meta.training_fingerprint is None and "training_fingerprint" not in meta.to_dict()
    assert type(meta).from_dict(json.loads(json.dumps(meta.to_dict()))) == meta


def test_info_digests_and_pinned_digest(saved):
    info = read_bundle_info(saved)
    data = saved.read_bytes()
    assert info.file_sha256 == hashlib.sha256(data).hexdigest()
    assert info.payload_sha256 == hashlib.sha256(data[-info.payload_bytes :]).hexdigest()
    load_bundle(saved, sha256=info.file_sha256.upper())
    refused(lambda: load_bundle(saved, sha256="0" * 64), BundleError, "SHA-256 mismatch")
    refused(lambda: load_bundle(saved, sha256="abc"), InvalidParameterError, "'abc'")


def test_versions_major_refused_minor_warned(saved, tmp_path, features_v1):
    def versions(**changes):
        return edited(saved, tmp_path, lambda h: h["metadata"]["versions"].update(changes))

    current = library_versions()
    major = str(int(current["numpy"].split(".")[0]) + 1) + ".0.0"
    refused(lambda: load_bundle(versions(numpy=major)), BundleError, f"numpy {major}")
    refused(lambda: load_bundle(versions(taskclf="0.99.0")), BundleError, "taskclf 0.99.0")
    minor = current["pandas"].rsplit(".", 1)[0] + ".999"
    with pytest.warns(BundleVersionWarning, match=f"pandas {minor}"):
        assert len(load_bundle(versions(pandas=minor)).predict(features_v1)) == len(features_v1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_bundle(saved)


def test_training_fingerprint_tracks_content_and_order():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})
    labels = ["Build", "Debug", "Review"]
    base = training_fingerprint(frame, labels)
    assert base == training_fingerprint(frame.set_axis([7, 8, 9]), list(labels))
    assert base != training_fingerprint(frame.iloc[::-1], labels)
    assert base != training_fingerprint(frame.assign(a=[1.0, 2.0, 3.5]), labels)
    assert base != training_fingerprint(frame, ["Build", "Debug", "Write"])
    assert base != training_fingerprint(frame.rename(columns={"a": "c"}), labels)


def test_a_pipeline_fitted_by_taskclf_records_its_training(tmp_path):
    frame = make_frame(n_users=2, minutes=150, seed=3)
    X, y = frame.drop(columns="label"), frame["label"]
    fitted = build_pipeline(num_boost_round=2, num_threads=1, n_folds=2, calibration="temperature")
    record_training(fitted.fit(X, y), X, y)
    meta = read_bundle_info(save_bundle(fitted, tmp_path / "m.taskclf")).metadata
    assert meta.training_fingerprint == training_fingerprint(X, y)
    assert {"oof_brier_before", "oof_log_loss_after"} <= set(meta.training_metrics)
    in_dir = read_bundle_dir_info(export_bundle_dir(fitted, tmp_path / "m")).metadata
    assert (in_dir.training_fingerprint, in_dir.training_metrics) == (
        meta.training_fingerprint,
        meta.training_metrics,
    )


def test_a_bundle_of_taskclf_050_loads_or_says_how_to_refit():
    """tests/data holds a bundle file saved by taskclf 0.5.0, and its output on features.csv."""
    features = pd.read_csv(DATA / "features.csv", parse_dates=["bucket_start_ts"])
    expected = pd.read_csv(DATA / "expected.csv")
    try:
        pipeline = load_bundle(DATA / "v050.taskclf")
    except BundleError as exc:
        assert "fit it again" in str(exc)
        return
    out = pipeline.transform(features)
    np.testing.assert_allclose(out[expected.columns[:-1]], expected.iloc[:, :-1], rtol=1e-9)
    assert out["label"].tolist() == expected["label"].tolist()


def old_layout(pipeline):
    """A copy of ``pipeline`` as taskclf wrote it before its model stage encoded user_id."""
    old = copy.deepcopy(pipeline)
    encoder, predictor = (getattr(step, "estimator", step) for _, step in old.steps[:2])
    encoder.vocabulary_["user_id"] = predictor.user_vocabulary_
    for name in ("user_vocabulary_", "min_category_freq", "unknown_mask_rate"):
        delattr(predictor, name)
    return old


@pytest.mark.parametrize("trained", [False, True], ids=["frozen stages", "fitted stages"])
def test_bundles_of_the_earlier_layout_load_and_predict_alike(
    trained, pipeline, fitted, tmp_path, features_v1
):
    new = fitted if trained else pipeline
    old = old_layout(new)
    path = edited(save_bundle(new, tmp_path / "m.taskclf"), tmp_path, payload=old)
    import skops.io  # here: it imports every scikit-learn estimator, slow to collect

    directory = export_bundle_dir(new, tmp_path / "m")
    data = skops.io.dumps(old)
    (directory / "pipeline.skops").write_bytes(data)
    manifest = json.loads((directory / "bundle.json").read_text())
    manifest["files"]["pipeline.skops"] = hashlib.sha256(data).hexdigest()
    (directory / "bundle.json").write_text(json.dumps(manifest))
    expected = new.transform(features_v1)
    for loaded in (load_bundle(path), load_bundle_dir(directory)):
        pd.testing.assert_frame_equal(loaded.transform(features_v1), expected)
        assert loaded.get_params(deep=True).keys() == new.get_params(deep=True).keys()
        assert "user_id" not in loaded.named_steps["encode"].vocabulary_


# Bad input (contract: a specific error naming the problem)


def _flip(offset):
    """Damage: one byte flipped at ``offset`` (a function of the bytes, or from the end)."""

    def flip(path: Path, data: bytes) -> None:
        damaged = bytearray(data)
        damaged[offset(data) if callable(offset) else offset] ^= 0x5A
        path.write_bytes(bytes(damaged))

    return flip


def _bytes(make):
    """Damage: the file's bytes replaced by ``make(bytes)``."""
    return lambda path, data: path.write_bytes(make(data))


def _raw(header_text: bytes):
    """Damage: a bundle around a header text of our own (its digest recomputed)."""
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_text))
    return _bytes(lambda data: prefix + header_text + hashlib.sha256(header_text).digest())


def _joblib_bytes(data: bytes) -> bytes:
    buffer = io.BytesIO()
    joblib.dump({"not": "a bundle"}, buffer)
    return buffer.getvalue()


HEADER = _PREFIX.size
BUNDLE_DAMAGE = {
    "a flipped magic byte": (_flip(3), "not a taskclf bundle"),
    "a flipped format version": (_flip(len(MAGIC) + 1), "format version"),
    "an absurd header length": (_flip(len(MAGIC) + 2), "absurd"),
    "a flipped header byte": (_flip(HEADER + 5), "header digest"),
    "a flipped header digest": (_flip(lambda d: HEADER + _PREFIX.unpack_from(d)[2]), "digest"),
    "a flipped payload byte": (_flip(-10), "payload SHA-256"),
    "empty": (_bytes(lambda d: b""), "is empty"),
    "truncated inside the magic": (_bytes(lambda d: d[:6]), "truncated"),
    "truncated inside the header": (_bytes(lambda d: d[: HEADER + 40]), "truncated"),
    "truncated inside the payload": (_bytes(lambda d: d[:-100]), "truncated"),
    "bytes appended": (_bytes(lambda d: d + b"\x00extra"), "corrupt"),
    "a CSV file": (_bytes(lambda d: b"user_id,bucket_start_ts\nu1,2025\n"), "not a taskclf"),
    "a plain joblib pickle": (_bytes(_joblib_bytes), "not a taskclf"),
    "a 5000-digit number in the header": (_raw(b"1" * 5000), "not JSON"),
    "a nesting bomb as the header": (_raw(b"[" * 100_000 + b"]" * 100_000), "not JSON"),
    "a header without payload facts": (_raw(b'{"metadata": {}}'), "payload descr"),
    "a FIFO": (lambda path, data: os.mkfifo(path), "not a regular file"),
    "a link to /dev/zero": (lambda path, data: path.symlink_to("/dev/zero"), "not a regular"),
    "absent": (lambda path, data: None, "does not exist"),
    "a directory": (lambda path, data: path.mkdir(), "load_bundle_dir"),
}


def finishes(call) -> BaseException | None:
    """What ``call`` raised, run in a thread that must end within a minute (no hanging)."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(60)
    assert outcome, "the reader hung"
    return outcome[0]


@pytest.mark.parametrize("entry", [load_bundle, read_bundle_info])
@pytest.mark.parametrize(("damage", "words"), BUNDLE_DAMAGE.values(), ids=BUNDLE_DAMAGE.keys())
def test_damaged_bundle_file_is_refused_naming_it(
    entry, damage, words, bundle_file, tmp_path, no_unpickling
):
    path = tmp_path / "damaged model.taskclf"
    damage(path, bundle_file.read_bytes())
    error = finishes(lambda: entry(path))
    assert isinstance(error, BundleError), repr(error)
    assert str(path) in str(error) and words in str(error), str(error)


METADATA_DAMAGE = {
    "another schema's hash": ({"schema_hash": "0123456789ab"}, "schema hash mismatch"),
    "an unknown schema": ({"schema_version": "v9"}, "unknown schema version"),
    "a label missing": ({"label_set": list(CLASS_ORDER[:-1])}, "label set mismatch"),
    "a number for a name": ({"schema_hash": 12}, "schema_hash"),
    "a fingerprint that is no SHA-256": ({"training_fingerprint": "abc"}, "training_fingerprint"),
    "an unknown field": ({"colour": "red"}, "'colour'"),
    "no versions": ({"versions": {}}, "no readable taskclf version"),
    "an unreadable version": ({"versions": {"taskclf": "x"}}, "no readable taskclf version"),
}


@pytest.mark.parametrize(("change", "words"), METADATA_DAMAGE.values(), ids=METADATA_DAMAGE.keys())
def test_metadata_mismatch_is_refused_before_unpickling(
    saved, tmp_path, change, words, no_unpickling
):
    path = edited(saved, tmp_path, lambda h: h["metadata"].update(change))
    refused(lambda: load_bundle(path), BundleError, "edited.taskclf", words)


def test_a_payload_that_is_not_a_runnable_taskclf_pipeline_is_refused(saved, pipeline, tmp_path):
    path = edited(saved, tmp_path, payload={"a": 1})
    refused(lambda: load_bundle(path), BundleError, "expected a taskclf pipeline", "dict")
    v2 = {"schema_version": "v2", "schema_hash": SCHEMA_V2.schema_hash}
    path = edited(saved, tmp_path, lambda h: h["metadata"].update(v2))
    refused(lambda: load_bundle(path), BundleError, "metadata says schema v2", "v1 model")
    broken = build_pipeline(pipeline.named_steps["predict"].booster_, {})
    broken.named_steps["reject"].threshold = "high"  # as if a stage changed since it was saved
    path = edited(saved, tmp_path, payload=broken)
    refused(lambda: load_bundle(path), BundleError, "edited.taskclf", "cannot run", "fit it again")


class _Trap:
    """Unpickling this object creates a marker file: proof that a loader unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_inside_a_forged_bundle_is_refused_by_its_digest(bundle_file, tmp_path):
    marker = tmp_path / "pwned"
    header, _ = decode_bundle(bundle_file.read_bytes(), "test")
    path = tmp_path / "forged.taskclf"
    path.write_bytes(encode_bundle(header, pickle.dumps(_Trap(marker))))
    refused(lambda: load_bundle(path), BundleError, "forged.taskclf")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("what", "metadata", "error", "words"),
    [
        ({"a": 1}, None, BundleError, "expected a taskclf pipeline"),
        (build_pipeline(), None, NotFittedError, "not fitted"),
        (None, {"when": object()}, InvalidParameterError, "JSON-ready"),
        (None, {"x": float("nan")}, InvalidParameterError, "JSON-ready"),
    ],
)
def test_save_refusals_leave_no_file(pipeline, tmp_path, what, metadata, error, words):
    target = tmp_path / "model.taskclf"
    what = pipeline if what is None else what
    refused(lambda: save_bundle(what, target, metadata=metadata), error, words)
    assert list(tmp_path.iterdir()) == []
