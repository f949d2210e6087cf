"""Pickle-free bundle directories: identical rebuilds, trusted types only, taskclf 0.4 dirs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, refused
from sklearn.frozen import FrozenEstimator
from test_bundle import finishes

from taskclf import CalibratorStore, TemperatureCalibrator, build_pipeline
from taskclf.bundle_dir import export_bundle_dir, load_bundle_dir, read_bundle_dir_info
from taskclf.calibration import IdentityCalibrator
from taskclf.core.schema import SCHEMA_V1
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import BundleError, NotFittedError, NotOursError, TaskclfWarning
from taskclf.infer.batch import run_batch_inference
from taskclf.stages.calibrate import fit_isotonic
from taskclf.taxonomy import default_taxonomy

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pipeline(booster_v1, encoders_v1):
    """Frozen stages around a booster, with a store of every kind of map."""
    rng = np.random.default_rng(0)
    isotonic = fit_isotonic(rng.dirichlet(np.ones(8), 200), rng.integers(0, 8, 200))
    maps = {"user0": isotonic, "user1": TemperatureCalibrator(0.6), "user2": IdentityCalibrator()}
    store = CalibratorStore(TemperatureCalibrator(1.7), maps, method="mixed")
    return build_pipeline(
        booster_v1, encoders_v1, reject_threshold=0.4, smooth_window=5, calibrator_store=store
    )


@pytest.fixture(scope="module")
def exported(pipeline, tmp_path_factory):
    target = tmp_path_factory.mktemp("export") / "model"
    return export_bundle_dir(pipeline, target, metadata={"who": "test"})


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pickle-free bundle must not unpickle anything")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def with_pipeline_file(directory: Path, data: bytes) -> Path:
    """Put ``data`` as ``pipeline.skops`` into ``directory``, its digest recomputed."""
    (directory / "pipeline.skops").write_bytes(data)
    manifest = json.loads((directory / "bundle.json").read_text())
    manifest["files"]["pipeline.skops"] = hashlib.sha256(data).hexdigest()
    (directory / "bundle.json").write_text(json.dumps(manifest))
    return directory


def test_round_trip_is_identical_without_unpickling(pipeline, exported, features_v1, no_unpickling):
    loaded = load_bundle_dir(exported)
    pd.testing.assert_frame_equal(loaded.transform(features_v1), pipeline.transform(features_v1))
    assert loaded.get_params()["reject__threshold"] == 0.4
    info = read_bundle_dir_info(exported)
    assert info.metadata.extra == {"who": "test"} and not info.legacy
    digest = hashlib.sha256((exported / "pipeline.skops").read_bytes()).hexdigest()
    assert info.files == {"pipeline.skops": digest}


def test_fitted_and_frozen_stages_round_trip(tmp_path):
    """Fitted isotonic maps, Viterbi smoothing, a taxonomy and a FrozenEstimator."""
    frame = make_frame(n_users=2, minutes=150, seed=4)
    X, y = frame.drop(columns="label"), frame["label"]
    params = {"calibration": "isotonic", "smoother": "viterbi", "taxonomy": default_taxonomy()}
    fitted = build_pipeline(num_boost_round=2, num_threads=1, n_folds=2, **params).fit(X, y)
    fitted.steps[1] = ("predict", FrozenEstimator(fitted.steps[1][1]))
    (tmp_path / "m").mkdir()  # an empty directory is replaced
    loaded = load_bundle_dir(export_bundle_dir(fitted, tmp_path / "m"))
    pd.testing.assert_frame_equal(loaded.transform(X), fitted.transform(X))


def test_export_replaces_its_own_and_refuses_everything_else(pipeline, exported, tmp_path):
    own = shutil.copytree(exported, tmp_path / "own")
    old = shutil.copytree(DATA / "v050-dir", tmp_path / "old")
    for target in (own, old):
        export_bundle_dir(pipeline, target)
        assert sorted(p.name for p in target.iterdir()) == ["bundle.json", "pipeline.skops"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "bundle.json").write_text('{"name": "a bundler of another tool"}')
    crowded = shutil.copytree(exported, tmp_path / "crowded")
    (crowded / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    for target in (foreign, crowded, tmp_path / "file"):
        files = [target] if target.is_file() else sorted(target.iterdir())
        before = [p.read_bytes() for p in files]
        refused(lambda t=target: export_bundle_dir(pipeline, t), NotOursError, str(target))
        assert [p.read_bytes() for p in files] == before
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["crowded", "file", "foreign", "old", "own"]


class Stranger:
    """A type that taskclf does not trust."""

    def __init__(self) -> None:
        self.value = 1


def test_untrusted_types_are_refused_at_export_and_before_loading(pipeline, exported, tmp_path):
    strange = build_pipeline(pipeline.named_steps["predict"].booster_, {})
    strange.named_steps["reject"].index_ = pd.Index(["a"])
    refused(lambda: export_bundle_dir(strange, tmp_path / "m"), BundleError, "skops cannot write")
    strange.named_steps["reject"].index_ = Stranger()
    refused(lambda: export_bundle_dir(strange, tmp_path / "m"), BundleError, "Stranger")
    refused(lambda: export_bundle_dir({"a": 1}, tmp_path / "m"), BundleError, "taskclf pipeline")
    refused(lambda: export_bundle_dir(build_pipeline(), tmp_path / "m"), NotFittedError, "fit")
    assert list(tmp_path.iterdir()) == []
    import skops.io  # here: it imports every scikit-learn estimator, slow to collect

    directory = with_pipeline_file(
        shutil.copytree(exported, tmp_path / "d"), skops.io.dumps(strange)
    )
    constructed = []
    Stranger.__setstate__ = lambda self, state: constructed.append(state)  # type: ignore[attr-defined]
    try:
        refused(lambda: load_bundle_dir(directory), BundleError, "pipeline.skops", "Stranger")
    finally:
        del Stranger.__setstate__
    assert constructed == []


def test_skops_is_named_when_missing(pipeline, exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skops.io", None)
    refused(lambda: export_bundle_dir(pipeline, tmp_path / "m"), BundleError, "taskclf[safe]")
    refused(lambda: load_bundle_dir(exported), BundleError, "taskclf[safe]")


def test_what_is_not_a_bundle_directory_of_this_taskclf(tmp_path, exported):
    words = ("v050-dir", "taskclf 0.5.0", "save_bundle", "export_bundle_dir")
    refused(lambda: load_bundle_dir(DATA / "v050-dir"), BundleError, *words)
    refused(lambda: load_bundle_dir(tmp_path / "absent"), BundleError, "does not exist")
    refused(lambda: load_bundle_dir(exported / "bundle.json"), BundleError, "load_bundle")
    refused(lambda: load_bundle_dir(tmp_path), BundleError, "not a taskclf bundle")
    refused(lambda: read_bundle_dir_info(tmp_path), BundleError, "not a taskclf bundle")


def _flip_last_byte(directory: Path) -> None:
    path = directory / "pipeline.skops"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def _manifest(part: str | None = None, **changes):
    """Damage: ``changes`` made to ``bundle.json`` (or to its ``part``)."""

    def edit(directory: Path) -> None:
        manifest = json.loads((directory / "bundle.json").read_text())
        (manifest if part is None else manifest[part]).update(changes)
        (directory / "bundle.json").write_text(json.dumps(manifest))

    return edit


def _replace(name: str, make):
    """Damage: the file ``name`` replaced by what ``make(path)`` makes."""

    def replace(directory: Path) -> None:
        (directory / name).unlink()
        make(directory / name)

    return replace


def _zip_bomb(directory: Path) -> None:
    """A zip whose central directory says its one file unpacks to 4 GB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", b"{}")
    data = bytearray(buffer.getvalue())
    entry = data.index(b"PK\x01\x02")  # the uncompressed size is at offset 24
    data[entry + 24 : entry + 28] = (4_000_000_000).to_bytes(4, "little")
    with_pipeline_file(directory, bytes(data))


SKOPS, MANIFEST = "pipeline.skops", "bundle.json"
DIR_DAMAGE = {
    "a changed byte in pipeline.skops": (_flip_last_byte, "SHA-256 mismatch"),
    "pipeline.skops missing": (lambda d: (d / SKOPS).unlink(), "does not exist"),
    "garbage with a valid digest": (lambda d: with_pipeline_file(d, b"PK junk"), "not a skops"),
    "a zip unpacking beyond the limit": (_zip_bomb, "4000000000 bytes"),
    "bundle.json not JSON": (_replace(MANIFEST, lambda p: p.write_text("{")), "not valid JSON"),
    "bundle.json of another tool": (_manifest(format="x"), "not a taskclf bundle directory"),
    "a newer format": (_manifest(format_version=3), "format version 3"),
    "another file listed": (_manifest("files", **{"../../etc/passwd": "0" * 64}), "'files'"),
    "metadata of the wrong type": (_manifest("metadata", created_at=[1]), "created_at"),
    "a FIFO named bundle.json": (_replace(MANIFEST, os.mkfifo), "not a regular file"),
    "pipeline.skops a link to /dev/zero": (
        _replace(SKOPS, lambda p: p.symlink_to("/dev/zero")),
        "not a regular file",
    ),
    "pipeline.skops a directory": (_replace(SKOPS, Path.mkdir), "not a regular file"),
}
INCOMPATIBLE = {
    "an unknown schema hash": (_manifest("metadata", schema_hash="01234"), "schema hash mismatch"),
    "a label missing": (_manifest("metadata", label_set=["Build"]), "label set mismatch"),
}
"""Well-formed directories this taskclf does not load (read_bundle_dir_info reports them)."""


@pytest.mark.parametrize(
    ("entry", "damage", "words"),
    [
        pytest.param(entry, damage, words, id=f"{name} @ {entry.__name__}")
        for entries, cases in (
            ((load_bundle_dir, read_bundle_dir_info), DIR_DAMAGE),
            ((load_bundle_dir,), INCOMPATIBLE),
        )
        for name, (damage, words) in cases.items()
        for entry in entries
    ],
)
def test_damaged_bundle_directory_is_refused_naming_the_file(
    entry, damage, words, exported, tmp_path
):
    directory = shutil.copytree(exported, tmp_path / "damaged model")
    damage(directory)
    error = finishes(lambda: entry(directory))
    assert isinstance(error, BundleError), repr(error)
    assert str(directory) in str(error) and words in str(error), str(error)


# taskclf 0.4 model directories


def write_v04_dir(directory, booster, encoders, **metadata_changes):
    """A model directory as taskclf 0.4 wrote it."""
    directory.mkdir(parents=True)
    booster.save_model(str(directory / "model.txt"))
    metadata = {
        "schema_version": "v1",
        "schema_hash": SCHEMA_V1.schema_hash,
        "label_set": sorted(CLASS_ORDER),
        "dataset_hash": "abc",
        "reject_threshold": 0.45,
        "created_at": "2025-02-01T00:00:00+00:00",
    }
    (directory / "metadata.json").write_text(json.dumps({**metadata, **metadata_changes}))
    if encoders is not None:
        vocabulary = {c: list(map(str, e.classes_)) for c, e in encoders.items()}
        (directory / "categorical_encoders.json").write_text(json.dumps(vocabulary))
    return directory


def test_reads_a_taskclf_04_model_directory(
    booster_v1, encoders_v1, features_v1, tmp_path, no_unpickling
):
    directory = write_v04_dir(tmp_path / "models" / "run-0001", booster_v1, encoders_v1)
    pipeline = load_bundle_dir(directory)
    expected = run_batch_inference(
        booster_v1, features_v1, cat_encoders=encoders_v1, reject_threshold=0.45
    )
    out = pipeline.transform(features_v1)
    assert out["smoothed_label"].astype(object).tolist() == expected.smoothed_labels
    np.testing.assert_array_equal(out["confidence"].to_numpy(), expected.confidences)
    info = read_bundle_dir_info(directory)
    assert info.legacy and info.metadata.extra["dataset_hash"] == "abc"
    assert set(info.files) == {"model.txt", "metadata.json", "categorical_encoders.json"}
    refused(lambda: export_bundle_dir(pipeline, directory), NotOursError, str(directory))
    (directory / "categorical_encoders.json").unlink()
    with pytest.warns(TaskclfWarning, match="categorical_encoders.json"):
        assert len(load_bundle_dir(directory).predict(features_v1)) == len(features_v1)


def _policy(models: Path, model_dir: str, threshold: object) -> None:
    policy = {"policy_version": "v1", "model_dir": model_dir, "reject_threshold": threshold}
    (models / "inference_policy.json").write_text(json.dumps(policy))


@pytest.mark.parametrize(
    ("recorded", "policy", "threshold", "source"),
    [
        (None, None, 0.55, "taskclf 0.4's default"),
        (0.45, None, 0.45, "metadata.json"),
        (None, ("models/run", 0.35), 0.35, "inference_policy.json"),
        (0.45, ("models/run", 0.35), 0.35, "inference_policy.json"),
        (None, ("models/other-run", 0.35), 0.55, "taskclf 0.4's default"),
    ],
)
def test_04_reject_threshold_and_where_it_comes_from(
    booster_v1, encoders_v1, tmp_path, monkeypatch, recorded, policy, threshold, source
):
    directory = write_v04_dir(
        tmp_path / "models" / "run", booster_v1, encoders_v1, reject_threshold=recorded
    )
    if policy is not None:
        _policy(tmp_path / "models", *policy)
    monkeypatch.chdir(tmp_path / "models")
    assert load_bundle_dir("run").get_params()["reject__threshold"] == threshold
    meta = read_bundle_dir_info(directory).metadata
    assert meta.params == {"reject__threshold": threshold}
    assert source in meta.extra["reject_threshold_source"]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"schema_hash": "0123456789ab"}, "schema hash mismatch"),
        ({"label_set": sorted(CLASS_ORDER)[:-1]}, "label set mismatch"),
        ({"label_set": "Build,Debug"}, "label_set"),
        ({"reject_threshold": 3}, "reject_threshold 3"),
        ({"reject_threshold": "high"}, "reject_threshold 'high'"),
    ],
)
def test_04_metadata_mismatches_are_refused(booster_v1, encoders_v1, tmp_path, changes, words):
    directory = write_v04_dir(tmp_path / "run", booster_v1, encoders_v1, **changes)
    refused(lambda: load_bundle_dir(directory), BundleError, "metadata.json", words)


def test_04_refusals_of_other_files(booster_v1, encoders_v1, tmp_path):
    directory = write_v04_dir(tmp_path / "models" / "run", booster_v1, encoders_v1)
    encoders = directory / "categorical_encoders.json"
    for vocabulary, words in (
        ({"../../x": ["a"]}, "not a categorical column"),
        ({"app_id": "vscode"}, "must list strings"),
        ({"app_id": [{"x": 1}]}, "must list strings"),
    ):
        encoders.write_text(json.dumps(vocabulary))
        refused(lambda: load_bundle_dir(directory), BundleError, str(encoders), words)
    _policy(tmp_path / "models", "models/run", 1.5)
    refused(lambda: load_bundle_dir(directory), BundleError, "inference_policy.json", "1.5")
    (tmp_path / "models" / "inference_policy.json").unlink()
    (directory / "model.txt").write_bytes(b"\xff\xfe not a model")
    refused(lambda: load_bundle_dir(directory), BundleError, "model.txt", "not a LightGBM model")
