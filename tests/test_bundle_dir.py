"""Pickle-free bundle directories: identical rebuilds, hostile JSON, taskclf 0.4 dirs."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import (
    refused,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import taskclf.bundle_dir as bundle_dir_module
from taskclf import (
    CalibratorStore,
    TemperatureCalibrator,
    build_pipeline,
    export_bundle_dir,
    load_bundle_dir,
)
from taskclf.bundle_dir import read_bundle_dir_info
from taskclf.calibration import IdentityCalibrator, IsotonicCalibrator
from taskclf.core.schema import SCHEMA_V1, SCHEMA_V2
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import (
    BundleError,
    TaskclfWarning,
)
from taskclf.infer.batch import (
    predict_proba,
    run_batch_inference,
)
from taskclf.taxonomy import taxonomy_from_dict


@pytest.fixture(scope="module")
def isotonic(booster_v1, encoders_v1, frame_v1):
    """Isotonic maps fitted on the booster's own probabilities."""
    proba = predict_proba(booster_v1, frame_v1.drop(columns="label"), encoders_v1)
    truth = np.array([CLASS_ORDER.index(v) for v in frame_v1["label"]])
    regressors = [
        IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
            proba[:, k], (truth == k).astype(float)
        )
        for k in range(len(CLASS_ORDER))
    ]
    return IsotonicCalibrator(regressors)


@pytest.fixture(scope="module")
def pipeline(booster_v1, encoders_v1, isotonic):
    store = CalibratorStore(
        TemperatureCalibrator(1.7),
        {"user0": isotonic, "user1": TemperatureCalibrator(0.6), "user2": IdentityCalibrator()},
        method="mixed",
    )
    return build_pipeline(
        booster_v1,
        encoders_v1,
        reject_threshold=0.4,
        smooth_window=5,
        min_block_seconds=240,
        calibrator_store=store,
    )


@pytest.fixture(scope="module")
def exported(pipeline, tmp_path_factory):
    return export_bundle_dir(
        pipeline, tmp_path_factory.mktemp("export") / "model", metadata={"who": "test"}
    )


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pickle-free bundle must not unpickle anything")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(joblib, "load", refuse)


def copy_dir(source, target):
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


class Replace:
    """Returned by a change that replaces a whole JSON document."""

    def __init__(self, value):
        self.value = value


def edit_json(directory, name, change, *, redigest=True):
    """Edit a JSON file of a bundle directory, keeping the manifest's digest valid."""
    path = directory / name
    data = json.loads(path.read_text())
    result = change(data)
    path.write_text(json.dumps(result.value if isinstance(result, Replace) else data))
    if redigest and name != "bundle.json":
        manifest = json.loads((directory / "bundle.json").read_text())
        manifest["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
        (directory / "bundle.json").write_text(json.dumps(manifest))


def test_round_trip_is_identical_without_unpickling(pipeline, exported, features_v1, no_unpickling):
    loaded = load_bundle_dir(exported)
    assert isinstance(loaded, Pipeline)
    assert [n for n, _ in loaded.steps] == [n for n, _ in pipeline.steps]
    expected = pipeline.transform(features_v1)
    got = loaded.transform(features_v1)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert (loaded.predict(features_v1) == pipeline.predict(features_v1)).all()
    params = loaded.get_params()
    assert params["reject__threshold"] == 0.4
    assert params["smooth__window"] == 5
    assert params["merge__min_block_seconds"] == 240


def test_isotonic_thresholds_survive_exactly(pipeline, exported, isotonic):
    loaded = load_bundle_dir(exported)
    store = loaded.named_steps["calibrate"].calibrator_store
    assert store.method == "mixed"
    assert isinstance(store.user_calibrators["user1"], TemperatureCalibrator)
    for original, rebuilt in zip(isotonic.regressors, store.user_calibrators["user0"].regressors):
        assert np.array_equal(original.X_thresholds_, rebuilt.X_thresholds_)
        assert np.array_equal(original.y_thresholds_, rebuilt.y_thresholds_)
        grid = np.linspace(-0.5, 1.5, 101)
        assert np.array_equal(original.predict(grid), rebuilt.predict(grid))


def test_directory_layout_and_manifest(exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "bundle.json",
        "model.txt",
        "pipeline.json",
    ]
    manifest = json.loads((exported / "bundle.json").read_text())
    assert manifest["format"] == "taskclf-bundle-dir"
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == digest
    info = read_bundle_dir_info(exported)
    assert not info.legacy
    assert info.metadata.schema_hash == SCHEMA_V1.schema_hash
    assert info.metadata.extra == {"who": "test"}
    steps = json.loads((exported / "pipeline.json").read_text())["steps"]
    assert [s["class"] for s in steps] == [
        "CategoricalEncoder",
        "BoosterPredictor",
        "Calibrator",
        "Rejector",
        "MajoritySmoother",
        "Segmenter",
        "HysteresisMerger",
    ]
    assert (exported / "model.txt").read_text().startswith("tree")


def test_export_replaces_a_bundle_dir_and_refuses_other_dirs(pipeline, tmp_path):
    target = export_bundle_dir(pipeline, tmp_path / "model", metadata={"n": 1})
    export_bundle_dir(pipeline, target, metadata={"n": 2})
    assert read_bundle_dir_info(target).metadata.extra == {"n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(BundleError, match="not a taskclf bundle directory"):
        export_bundle_dir(pipeline, other)
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        export_bundle_dir(pipeline, tmp_path / "file")


def test_export_refuses_foreign_stages(pipeline, tmp_path):
    foreign = Pipeline([*pipeline.steps[:2], ("scale", StandardScaler()), *pipeline.steps[2:]])
    with pytest.raises(BundleError, match="'scale'.*not a taskclf stage"):
        export_bundle_dir(foreign, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_values_without_json_form(booster_v1, encoders_v1, tmp_path):
    class Odd:
        def calibrate(self, proba):
            return proba

    odd = build_pipeline(booster_v1, encoders_v1, calibrator=Odd())
    with pytest.raises(BundleError, match="calibrate__calibrator"):
        export_bundle_dir(odd, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def _set_step_param(step, key, value):
    def change(data):
        for s in data["steps"]:
            if s["name"] == step:
                s["params"][key] = value

    return change


def _isotonic_body(data):
    store = next(s for s in data["steps"] if s["name"] == "calibrate")["params"]
    return store["calibrator_store"]["$calibrator_store"]["users"]["user0"]


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("pipeline.json", _set_step_param("smooth", "window", "three"), "window"),
        ("pipeline.json", _set_step_param("smooth", "window", 0), "window must be >= 1"),
        ("pipeline.json", _set_step_param("reject", "threshold", 7), r"\[0, 1\]"),
        ("pipeline.json", _set_step_param("smooth", "speed", 3), "unknown parameter"),
        (
            "pipeline.json",
            _set_step_param("predict", "booster", {"$booster": "../model.txt"}),
            "not allowed",
        ),
        (
            "pipeline.json",
            _set_step_param("predict", "booster", {"$booster": "/etc/passwd"}),
            "not allowed",
        ),
        (
            "pipeline.json",
            _set_step_param("predict", "booster", {"$pickle": "gASV"}),
            "unknown tag",
        ),
        (
            "pipeline.json",
            _set_step_param(
                "reject",
                "threshold",
                {"$ndarray": {"dtype": "float64", "shape": [10**12], "data": [1]}},
            ),
            "does not hold",
        ),
        (
            "pipeline.json",
            _set_step_param(
                "reject", "threshold", {"$ndarray": {"dtype": "object", "shape": [1], "data": [1]}}
            ),
            "dtype",
        ),
        ("pipeline.json", lambda d: d["steps"][0].update({"class": "os.system"}), "not one of"),
        ("pipeline.json", lambda d: d["steps"][0].update({"class": "Pipeline"}), "not one of"),
        (
            "pipeline.json",
            lambda d: d["steps"][0].update({"name": "../../etc"}),
            "not a plain identifier",
        ),
        ("pipeline.json", lambda d: d["steps"][0].update({"name": "a/b"}), "plain identifier"),
        ("pipeline.json", lambda d: d["steps"][0].pop("params"), "needs exactly the keys"),
        (
            "pipeline.json",
            lambda d: d["steps"][1].update({"state": {"__class__": 1}}),
            "not allowed",
        ),
        ("pipeline.json", lambda d: d["steps"].append(d["steps"][-1]), "repeat"),
        ("pipeline.json", lambda d: d.update(steps="all of them"), "non-empty list"),
        ("pipeline.json", lambda d: d.update(steps=[]), "non-empty list"),
        ("pipeline.json", lambda d: Replace([1, 2, 3]), "needs exactly the keys"),
        ("pipeline.json", lambda d: _isotonic_body(d)["regressors"].pop(), "8 regressors"),
        (
            "pipeline.json",
            lambda d: _isotonic_body(d)["regressors"][0].update({"X_thresholds_": [3.0, 1.0]}),
            "differ in length|not sorted",
        ),
        (
            "pipeline.json",
            lambda d: _isotonic_body(d)["regressors"][0]["params"].update(out_of_bounds="exec"),
            "out_of_bounds",
        ),
        (
            "pipeline.json",
            lambda d: _isotonic_body(d).update(kind="neural"),
            "unknown calibration kind",
        ),
        (
            "pipeline.json",
            lambda d: next(s for s in d["steps"] if s["name"] == "calibrate")["params"][
                "calibrator_store"
            ]["$calibrator_store"]["global"].update(temperature=-1),
            "temperature",
        ),
        ("bundle.json", lambda d: d["files"].update({"../evil.txt": "0" * 64}), "path separator"),
        ("bundle.json", lambda d: d["files"].update({"notes.json": "0" * 64}), "not allowed"),
        ("bundle.json", lambda d: d["files"].update({"model.txt": "abc"}), "not a SHA-256"),
        ("bundle.json", lambda d: d.update(format_version=99), "format version 99"),
        ("bundle.json", lambda d: d.update(format="zip"), "format 'zip'"),
        ("bundle.json", lambda d: d.pop("files"), "needs exactly the keys"),
        (
            "bundle.json",
            lambda d: d["metadata"].update(schema_hash="ffffffffffff"),
            "schema hash mismatch",
        ),
        (
            "bundle.json",
            lambda d: d["metadata"].update(label_set=["Build"] * 8),
            "label set mismatch",
        ),
        (
            "bundle.json",
            lambda d: d["metadata"].update(schema_version="v2", schema_hash=SCHEMA_V2.schema_hash),
            "metadata says schema v2",
        ),
        ("bundle.json", lambda d: d["metadata"].update(steps=5), "list of strings"),
    ],
)
def test_hostile_json_is_refused_naming_the_file(
    exported, tmp_path, file, change, message, no_unpickling
):
    directory = copy_dir(exported, tmp_path / "hostile")
    edit_json(directory, file, change)
    with pytest.raises(BundleError, match=message) as error:
        load_bundle_dir(directory)
    assert "hostile" in str(error.value)


def test_edited_file_without_new_digest_is_refused(exported, tmp_path):
    directory = copy_dir(exported, tmp_path / "edited")
    edit_json(
        directory, "pipeline.json", _set_step_param("reject", "threshold", 0.9), redigest=False
    )
    with pytest.raises(BundleError, match=r"pipeline\.json.*SHA-256 mismatch"):
        load_bundle_dir(directory)


def test_damaged_files_are_refused(exported, tmp_path, monkeypatch):
    directory = copy_dir(exported, tmp_path / "nomodel")
    (directory / "model.txt").unlink()
    with pytest.raises(BundleError, match=r"model\.txt' is missing"):
        load_bundle_dir(directory)

    directory = copy_dir(exported, tmp_path / "badmodel")
    (directory / "model.txt").write_text("this is not a model\n")
    manifest = json.loads((directory / "bundle.json").read_text())
    manifest["files"]["model.txt"] = hashlib.sha256(b"this is not a model\n").hexdigest()
    (directory / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"model\.txt' is not a LightGBM model"):
        load_bundle_dir(directory)

    directory = copy_dir(exported, tmp_path / "notjson")
    (directory / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"bundle\.json' is not valid JSON"):
        load_bundle_dir(directory)

    directory = copy_dir(exported, tmp_path / "huge")
    monkeypatch.setattr(bundle_dir_module, "MAX_JSON_BYTES", 100)
    with pytest.raises(BundleError, match="absurdly large"):
        load_bundle_dir(directory)


def test_not_a_bundle_directory(tmp_path, exported):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not a taskclf bundle"):
        load_bundle_dir(tmp_path / "empty")
    with pytest.raises(BundleError, match="is a file"):
        load_bundle_dir(exported / "model.txt")


# ---------------------------------------------------------------------------
# taskclf 0.4 model directories
# ---------------------------------------------------------------------------


def write_v04_dir(directory, booster, encoders, *, threshold=0.45, **metadata_changes):
    """A model directory as taskclf 0.4 wrote it."""
    directory.mkdir()
    booster.save_model(str(directory / "model.txt"))
    metadata = {
        "schema_version": "v1",
        "schema_hash": SCHEMA_V1.schema_hash,
        "label_set": sorted(CLASS_ORDER),
        "train_date_from": "2025-01-01",
        "train_date_to": "2025-01-31",
        "params": {"num_leaves": 15},
        "git_commit": "unknown",
        "dataset_hash": "abc",
        "reject_threshold": threshold,
        "data_provenance": "synthetic",
        "created_at": "2025-02-01T00:00:00+00:00",
    }
    metadata.update(metadata_changes)
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (directory / "metrics.json").write_text(json.dumps({"macro_f1": 0.5}))
    if encoders is not None:
        vocabulary = {c: list(map(str, e.classes_)) for c, e in encoders.items()}
        (directory / "categorical_encoders.json").write_text(json.dumps(vocabulary))
    return directory


def test_reads_a_taskclf_04_model_directory(
    booster_v1, encoders_v1, features_v1, tmp_path, no_unpickling
):
    directory = write_v04_dir(tmp_path / "run-0001", booster_v1, encoders_v1)
    pipeline = load_bundle_dir(directory)
    expected = run_batch_inference(
        booster_v1, features_v1, cat_encoders=encoders_v1, reject_threshold=0.45
    )
    out = pipeline.transform(features_v1)
    assert out["raw_label"].astype(object).tolist() == expected.raw_labels
    assert out["smoothed_label"].astype(object).tolist() == expected.smoothed_labels
    np.testing.assert_array_equal(out["confidence"].to_numpy(), expected.confidences)
    assert pipeline.get_params()["reject__threshold"] == 0.45
    info = read_bundle_dir_info(directory)
    assert info.legacy
    assert info.metadata.schema_version == "v1"
    assert info.metadata.extra["dataset_hash"] == "abc"
    assert "model.txt" in info.files


def test_04_directory_without_encoders_warns(booster_v1, features_v1, tmp_path):
    directory = write_v04_dir(tmp_path / "run", booster_v1, None)
    with pytest.warns(TaskclfWarning, match="categorical_encoders.json"):
        pipeline = load_bundle_dir(directory)
    assert len(pipeline.predict(features_v1)) == len(features_v1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_hash": "0123456789ab"}, "schema hash mismatch"),
        ({"schema_version": "v7"}, "unknown schema version"),
        ({"label_set": sorted(CLASS_ORDER)[:-1]}, "label set mismatch"),
        ({"label_set": "Build,Debug"}, "list of strings"),
        ({"schema_hash": 12}, "must be strings"),
        ({"reject_threshold": 3}, "reject_threshold"),
        ({"reject_threshold": "high"}, "reject_threshold"),
    ],
)
def test_04_directory_mismatches_are_refused(booster_v1, encoders_v1, tmp_path, changes, message):
    directory = write_v04_dir(tmp_path / "run", booster_v1, encoders_v1, **changes)
    with pytest.raises(BundleError, match=message) as error:
        load_bundle_dir(directory)
    assert "metadata.json" in str(error.value)


def test_04_directory_refusals_of_other_files(booster_v1, encoders_v1, tmp_path):
    directory = write_v04_dir(tmp_path / "run", booster_v1, encoders_v1)
    (directory / "categorical_encoders.json").write_text(json.dumps({"../../x": ["a"]}))
    with pytest.raises(BundleError, match="not a categorical column"):
        load_bundle_dir(directory)
    (directory / "categorical_encoders.json").write_text(json.dumps({"app_id": "vscode"}))
    with pytest.raises(BundleError, match="must be a list"):
        load_bundle_dir(directory)
    (directory / "categorical_encoders.json").write_text(json.dumps({"app_id": [{"x": 1}]}))
    with pytest.raises(BundleError, match="must hold strings"):
        load_bundle_dir(directory)
    (directory / "categorical_encoders.json").unlink()
    (directory / "metadata.json").write_text(
        json.dumps(
            {
                "schema_version": "v2",
                "schema_hash": SCHEMA_V2.schema_hash,
                "label_set": sorted(CLASS_ORDER),
            }
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TaskclfWarning)
        with pytest.raises(BundleError, match="39 features, schema v2 has 38"):
            load_bundle_dir(directory)


# ---------------------------------------------------------------------------
# Taxonomies
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taxonomy_config():

    return taxonomy_from_dict(
        {
            "buckets": [
                {"name": "Deep work", "core_labels": ["Build", "Debug"], "color": "#112233"},
                {"name": "Talk", "core_labels": ["Meet", "Communicate"], "color": "#445566"},
            ],
            "reject": {"mixed_label_name": "Unsure"},
            "advanced": {"probability_aggregation": "max"},
        }
    )


@pytest.mark.parametrize("given", [True, False])
def test_taxonomy_round_trip(pipeline, taxonomy_config, features_v1, tmp_path, given):
    from taskclf.taxonomy import TaxonomyMapper

    mapper = TaxonomyMapper(taxonomy_config if given else None)
    mapped = Pipeline([*pipeline.steps, ("taxonomy", mapper)]).fit(features_v1)
    expected = mapped.transform(features_v1)
    assert "mapped_label" in expected
    loaded = load_bundle_dir(export_bundle_dir(mapped, tmp_path / "model"))
    pd.testing.assert_frame_equal(loaded.transform(features_v1), expected, check_exact=True)


def test_hostile_taxonomy_is_refused(pipeline, taxonomy_config, tmp_path):
    from taskclf.taxonomy import TaxonomyMapper

    mapped = Pipeline([*pipeline.steps, ("taxonomy", TaxonomyMapper(taxonomy_config))])
    directory = export_bundle_dir(mapped, tmp_path / "model")

    def unknown_label(data):
        body = data["steps"][-1]["params"]["taxonomy"]["$taxonomy"]
        body["buckets"][0]["core_labels"] = ["Build", "Nap"]

    edit_json(directory, "pipeline.json", unknown_label)
    with pytest.raises(BundleError, match="bad taxonomy.*Nap"):
        load_bundle_dir(directory)

    def forged_resolver(data):
        data["steps"][-1]["state"]["resolver_"] = 1

    edit_json(directory, "pipeline.json", forged_resolver)
    with pytest.raises(BundleError, match="pipeline.json"):
        load_bundle_dir(directory)


def test_fitted_pipeline_with_viterbi_smoothing_round_trips(frame_v1, tmp_path, no_unpickling):
    """A pipeline fitted by taskclf (learned vocabulary, booster, isotonic
    calibration per user) with the Viterbi smoother in the smooth step."""
    from taskclf.stages.viterbi import ViterbiSmoother

    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    fitted = build_pipeline(
        num_boost_round=6,
        calibration="isotonic",
        per_user_calibration=True,
        reject_threshold=0.35,
        num_threads=1,
    )
    fitted.set_params(smooth=ViterbiSmoother(switch_prob=0.05))
    fitted.set_params(calibrate__min_user_rows=50, calibrate__min_user_days=1)
    fitted.fit(X, y)
    assert fitted.named_steps["calibrate"].store_ is not None
    loaded = load_bundle_dir(export_bundle_dir(fitted, tmp_path / "model"))
    pd.testing.assert_frame_equal(loaded.transform(X), fitted.transform(X), check_exact=True)
    assert isinstance(loaded.named_steps["smooth"], ViterbiSmoother)
    metrics = read_bundle_dir_info(tmp_path / "model").metadata.training_metrics
    assert metrics is not None and metrics["oof_log_loss_after"] > 0


# Bad input (contract: a specific error naming the problem)

# --------------------------------------------------------------------------
# Pickle-free bundle directories: hostile JSON and model text
# --------------------------------------------------------------------------


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite(directory: Path, name: str, text: str | bytes) -> None:
    """Replace one file and record its new digest, as a forger would."""
    data = text.encode() if isinstance(text, str) else text
    (directory / name).write_bytes(data)
    manifest = json.loads((directory / "bundle.json").read_text())
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    (directory / "bundle.json").write_text(json.dumps(manifest))


def _edit_manifest(change):
    def apply(directory: Path) -> str:
        manifest = json.loads((directory / "bundle.json").read_text())
        change(manifest)
        (directory / "bundle.json").write_text(json.dumps(manifest))
        return "bundle.json"

    return apply


def _raw_manifest(text: str):
    def apply(directory: Path) -> str:
        (directory / "bundle.json").write_text(text)
        return "bundle.json"

    return apply


def _edit_pipeline(change):
    def apply(directory: Path) -> str:
        document = json.loads((directory / "pipeline.json").read_text())
        change(document)
        _rewrite(directory, "pipeline.json", json.dumps(document))
        return "pipeline.json"

    return apply


def _raw_pipeline(transform):
    """Rewrite pipeline.json's text with ``transform`` (digest recomputed)."""

    def apply(directory: Path) -> str:
        _rewrite(directory, "pipeline.json", transform((directory / "pipeline.json").read_text()))
        return "pipeline.json"

    return apply


def _window(token: str):
    return _raw_pipeline(lambda text: re.sub(r'"window":\s*3', f'"window": {token}', text))


def _edit_model(change):
    def apply(directory: Path) -> str:
        _rewrite(directory, "model.txt", change((directory / "model.txt").read_text()))
        return "model.txt"

    return apply


def _step(document: dict, name: str) -> dict:
    return next(s for s in document["steps"] if s["name"] == name)


def _set(key: str, value):
    def change(document: dict) -> None:
        document[key] = value

    return change


def _delete(key: str):
    def change(document: dict) -> None:
        del document[key]

    return change


def _first_tree_line(key: str, new: str):
    """Replace the value of ``key`` in the first tree, keeping ``tree_sizes`` right
    (so that only the value is wrong, not the layout)."""

    def change(text: str) -> str:
        start = text.index("\nTree=0\n")
        line_start = text.index(f"\n{key}=", start) + 1
        line_end = text.index("\n", line_start)
        line = f"{key}={new}"
        grown = len(line) - (line_end - line_start)
        sizes = re.search(r"^tree_sizes=(\d+)", text, flags=re.M)
        assert sizes is not None
        text = text[:line_start] + line + text[line_end:]
        first = str(int(sizes.group(1)) + grown)
        return text[: sizes.start(1)] + first + text[sizes.end(1) :]

    return change


def _cut(fraction: float):
    return lambda text: text[: int(len(text) * fraction)]


BIG = "1" + "0" * 5000
DIR_DAMAGE = {
    # bundle.json: wrong types, missing keys, names with path separators, absurd values
    "format version as text": _edit_manifest(_set("format_version", "1")),
    "files as a list": _edit_manifest(_set("files", ["pipeline.json"])),
    "metadata null": _edit_manifest(_set("metadata", None)),
    "no files key": _edit_manifest(_delete("files")),
    "no metadata key": _edit_manifest(_delete("metadata")),
    "a file name climbing out": _edit_manifest(
        lambda m: m["files"].update({"../model.txt": m["files"]["model.txt"]})
    ),
    "a file name in a subdirectory": _edit_manifest(
        lambda m: m["files"].update({"sub/model.txt": m["files"]["model.txt"]})
    ),
    "a file name with a backslash": _edit_manifest(
        lambda m: m["files"].update({"..\\model.txt": m["files"]["model.txt"]})
    ),
    "a digest that is no SHA-256": _edit_manifest(
        lambda m: m["files"].update({"model.txt": "cafe"})
    ),
    "a listed file missing": _edit_manifest(lambda m: m["files"].update({"model_1.txt": "0" * 64})),
    "labels of another set": _edit_manifest(
        lambda m: m["metadata"].update({"label_set": ["Build", "Coding"]})
    ),
    "a 5000-digit number": _raw_manifest('{"format_version": ' + BIG + "}"),
    "a nesting bomb": _raw_manifest("[" * 200_000 + "]" * 200_000),
    "not JSON": _raw_manifest("{'format': 'taskclf-bundle-dir'"),
    "empty": _raw_manifest(""),
    # pipeline.json (digest recomputed): wrong types, missing keys, absurd values
    "steps as a mapping": _edit_pipeline(_set("steps", {"encode": {}})),
    "no steps": _edit_pipeline(_set("steps", [])),
    "a step without a class": _edit_pipeline(lambda d: d["steps"][3].pop("class")),
    "a class that is no stage": _edit_pipeline(
        lambda d: d["steps"][3].update({"class": "os.system"})
    ),
    "params as a list": _edit_pipeline(lambda d: d["steps"][3].update({"params": [0.5]})),
    "a threshold as text": _edit_pipeline(
        lambda d: _step(d, "reject")["params"].update({"threshold": "0.5"})
    ),
    "a threshold of 7": _edit_pipeline(
        lambda d: _step(d, "reject")["params"].update({"threshold": 7})
    ),
    "a fractional window": _edit_pipeline(
        lambda d: _step(d, "smooth")["params"].update({"window": 3.5})
    ),
    "an infinite window": _window("1e400"),
    "a 5000-digit window": _window(BIG),
    "a bucket width of 0": _edit_pipeline(
        lambda d: _step(d, "segment")["params"].update({"bucket_seconds": 0})
    ),
    "an unknown parameter": _edit_pipeline(
        lambda d: _step(d, "merge")["params"].update({"exec": "rm -rf /"})
    ),
    "a model file outside the directory": _edit_pipeline(
        lambda d: _step(d, "predict")["params"].update({"booster": {"$booster": "../model.txt"}})
    ),
    "a model file name that is a number": _edit_pipeline(
        lambda d: _step(d, "predict")["params"].update({"booster": {"$booster": 5}})
    ),
    "an unknown tag": _edit_pipeline(
        lambda d: _step(d, "predict")["params"].update({"booster": {"$pickle": "gASV"}})
    ),
    "an array of absurd shape": _edit_pipeline(
        lambda d: _step(d, "encode")["params"].update(
            {"categories": {"$ndarray": {"dtype": "float64", "shape": [10**12], "data": [1.0]}}}
        )
    ),
    "a vocabulary that cannot be sorted": _edit_pipeline(
        lambda d: _step(d, "encode")["params"]["categories"]["app_id"].append(7)
    ),
    "an encoder without the model's app_id": _edit_pipeline(
        lambda d: _step(d, "encode")["params"]["categories"].pop("app_id")
    ),
    "the segment step left out": _edit_pipeline(lambda d: d["steps"].remove(_step(d, "segment"))),
    "steps out of order": _edit_pipeline(lambda d: d["steps"].reverse()),
    "a step name repeated": _edit_pipeline(
        lambda d: _step(d, "segment").update({"name": "smooth"})
    ),
    "a store map of another kind": _edit_pipeline(
        lambda d: _step(d, "calibrate")["params"]["calibrator_store"]["$calibrator_store"][
            "users"
        ].update({"user0": {"kind": "pickle", "temperature": 0.5}})
    ),
    "a negative temperature": _edit_pipeline(
        lambda d: _step(d, "calibrate")["params"]["calibrator_store"]["$calibrator_store"][
            "global"
        ].update({"temperature": -1.0})
    ),
    "a nesting bomb (pipeline)": _raw_pipeline(lambda text: "[" * 200_000 + "]" * 200_000),
    # model.txt (digest recomputed): what would abort or mislead LightGBM
    "model truncated in the header": _edit_model(_cut(0.001)),
    "model truncated in the first tree": _edit_model(lambda t: t[: t.index("\nTree=0\n") + 60]),
    "model truncated half-way": _edit_model(_cut(0.5)),
    "model without 'end of trees'": _edit_model(lambda t: t.replace("end of trees", "")),
    "a child pointing at itself": _edit_model(_first_tree_line("left_child", "0 3 -3 -1")),
    "a child out of range": _edit_model(_first_tree_line("right_child", "-2 2 -4 -99")),
    "a categorical split without categories": _edit_model(
        _first_tree_line("decision_type", "1 2 2 2")
    ),
    "a split on a feature that does not exist": _edit_model(
        _first_tree_line("split_feature", "0 0 17 4000")
    ),
    "a leaf value that is not a number": _edit_model(
        _first_tree_line("leaf_value", "-2.2 nan -0.69 -2.13 -2.24")
    ),
    "a model of three classes": _edit_model(lambda t: t.replace("num_class=8", "num_class=3", 1)),
    "non-ASCII bytes in the model": _edit_model(lambda t: t.replace("Tree=1\n", "Tree=1\u00e9\n")),
    "an empty model file": _edit_model(lambda t: ""),
}


@pytest.mark.parametrize("damage", DIR_DAMAGE.values(), ids=DIR_DAMAGE.keys())
def test_hostile_bundle_directory_is_refused_naming_the_file(damage, bundle_dir, tmp_path):
    directory = _copy(bundle_dir, tmp_path / "hostile bundle")
    damage(directory)
    refused(lambda: load_bundle_dir(directory), BundleError, str(directory))


def _json_paths(node, prefix=()):
    """Every path into a JSON document (keys and list positions)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _json_paths(value, (*prefix, index))


HOSTILE_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(
            ["", "..", "../model.txt", "/etc/passwd", "a/b", "model.txt", "nan", "Build", "v2"]
        ),
        st.text(max_size=12),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["$booster", "$ndarray", "$float", "$calibration", "$calibrator_store",
                     "$label_encoder", "$taxonomy", "dtype", "shape", "data", "kind"]
                ),
                st.text(max_size=8),
            ),
            children,
            max_size=3,
        ),
    ),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), target=st.sampled_from(["pipeline.json", "bundle.json"]))
def test_any_json_edit_is_refused_naming_the_file_or_loads_a_working_pipeline(
    data, target, bundle_dir, frame, tmp_path_factory
):
    directory = _copy(bundle_dir, tmp_path_factory.mktemp("fuzz") / "bundle")
    document = json.loads((directory / target).read_text())
    path = data.draw(st.sampled_from(list(_json_paths(document))[1:]), label="path")
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "insert"]), label="action")
    if action == "replace":
        parent[path[-1]] = data.draw(HOSTILE_JSON, label="value")
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8), label="key")] = data.draw(HOSTILE_JSON)
    else:
        parent.insert(path[-1], data.draw(HOSTILE_JSON, label="value"))
    text = json.dumps(document)
    if target == "pipeline.json":
        _rewrite(directory, target, text)  # digest recomputed: the checks inside must hold
    else:
        (directory / target).write_text(text)
    try:
        pipeline = load_bundle_dir(directory)
    except BundleError as error:
        assert str(directory) in str(error)
        return
    # an edit the loader accepts (a changed parameter, a renamed user) gives a
    # pipeline that works
    labels = pipeline.predict(frame)
    assert len(labels) == len(frame)
    assert set(map(str, labels)) <= set(CLASS_ORDER) | {MIXED_UNKNOWN}
