"""The compiled backend of the model stage: LightGBM's results, faster, cached on disk."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

import taskclf
from taskclf._columns import LABEL, PROBA_COLUMNS, SEGMENT_ID
from taskclf.core.schema import get_schema
from taskclf.stages import _compiled
from taskclf.stages._compiled import CompiledBackendWarning, CompiledBooster, compiled_model
from taskclf.stages.encode import CategoricalEncoder
from taskclf.stages.model import BoosterPredictor, feature_matrix

ROOT = Path(__file__).resolve().parents[1]

needs_lleaves = pytest.mark.skipif(
    importlib.util.find_spec("lleaves") is None,
    reason="the 'fast' extra (lleaves) is not installed: pip install '.[fast]'",
)


@pytest.fixture(autouse=True)
def fresh_caches(tmp_path_factory, monkeypatch):
    """Empty in-process caches and a disk cache of this module's own."""
    monkeypatch.setattr(_compiled, "_by_booster", _compiled.weakref.WeakKeyDictionary())
    monkeypatch.setattr(_compiled, "_by_digest", _compiled.collections.OrderedDict())
    root = tmp_path_factory.getbasetemp() / "taskclf-cache"
    monkeypatch.setenv("TASKCLF_CACHE_DIR", str(root))


def fit_tiny(schema_version: str):
    """A 2-round booster of the model stage (16 trees, categorical splits) and its vocabulary."""
    frame = make_frame(schema_version=schema_version, minutes=120)
    encoder = CategoricalEncoder(min_category_freq=1, unknown_mask_rate=0.0).fit(frame)
    stage = BoosterPredictor(schema_version, num_boost_round=2, num_threads=1, class_weight=None)
    stage.fit(encoder.transform(frame), frame["label"])
    assert "num_cat=1" in stage.booster_.model_to_string()  # categorical splits
    return stage.booster_, encoder.vocabulary_


@pytest.fixture(scope="module", params=["v1", "v2", pytest.param("v3", marks=pytest.mark.slow)])
def tiny(request):
    return request.param, *fit_tiny(request.param)


@pytest.fixture(scope="module")
def tiny_v1():
    return fit_tiny("v1")


def unusual_matrix(schema_version: str, booster) -> np.ndarray:
    """Feature rows with categorical codes -1, 0.. and beyond the vocabulary, and zeros.

    (The stage turns missing values into 0 before the model sees them.)
    """
    schema = get_schema(schema_version)
    rng = np.random.default_rng(3)
    matrix = rng.normal(2.0, 3.0, size=(2000, schema.n_features))
    matrix[rng.random(matrix.shape) < 0.1] = 0.0
    for name in schema.categorical_columns:
        j = schema.feature_columns.index(name)
        matrix[:, j] = rng.integers(-1, 40, size=len(matrix))
    return matrix


def test_cache_directory_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("TASKCLF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compiled.cache_directory() == tmp_path / "xdg" / "taskclf" / "compiled"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _compiled.cache_directory() == tmp_path / "home" / ".cache" / "taskclf" / "compiled"
    monkeypatch.setenv("TASKCLF_CACHE_DIR", str(tmp_path / "mine"))
    assert _compiled.cache_directory() == tmp_path / "mine" / "compiled"


def predict_warned(stage, frame) -> tuple[np.ndarray, list[str]]:
    """Two predicts of ``stage``; the taskclf warnings they raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stage.predict_proba(frame)
        proba = stage.predict_proba(frame)
    return proba, [str(w.message) for w in caught if issubclass(w.category, CompiledBackendWarning)]


def test_without_the_extra_lightgbm_predicts_after_one_warning(
    monkeypatch, booster_v1, encoders_v1, frame_v1
):
    monkeypatch.setitem(sys.modules, "lleaves", None)  # import lleaves fails
    encoded = taskclf.build_pipeline(booster_v1, encoders_v1)[:1].transform(frame_v1)
    stage = BoosterPredictor.from_booster(booster_v1, backend="compiled")
    proba, messages = predict_warned(stage, encoded)
    assert len(messages) == 1
    assert "pip install 'taskclf[fast]'" in messages[0]
    assert np.array_equal(proba, BoosterPredictor.from_booster(booster_v1).predict_proba(encoded))


def test_a_failing_compiler_falls_back_with_one_warning(
    monkeypatch, booster_v1, encoders_v1, frame_v1
):
    def fail(model_text, code):
        raise RuntimeError("LLVM ERROR: no target")

    monkeypatch.setattr(_compiled, "_toolchain", lambda: {"format": "test"})
    monkeypatch.setattr(_compiled, "_lleaves_model", fail)
    encoded = taskclf.build_pipeline(booster_v1, encoders_v1)[:1].transform(frame_v1)
    stage = BoosterPredictor.from_booster(booster_v1, backend="compiled")
    proba, messages = predict_warned(stage, encoded)
    assert messages == [
        "the compiled backend is not available: compiling failed on "
        f"{_compiled.platform.machine()} (RuntimeError: LLVM ERROR: no target); LightGBM predicts"
    ]
    assert np.array_equal(proba, booster_v1.predict(feature_matrix(encoded, stage.schema_)))


@needs_lleaves
def test_same_probabilities_on_unusual_codes_and_zeros(tiny):
    schema_version, booster, _ = tiny
    matrix = unusual_matrix(schema_version, booster)
    compiled = compiled_model(booster)
    assert isinstance(compiled, CompiledBooster)
    got = compiled.predict(matrix)
    expected = booster.predict(matrix)
    assert got.shape == expected.shape == (len(matrix), 8)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


@needs_lleaves
def test_pipeline_gives_lightgbm_labels_and_segments(tiny):
    schema_version, booster, vocabulary = tiny
    frame = make_frame(schema_version=schema_version, n_users=2, minutes=300, seed=5)
    frame = frame.drop(columns="label")
    frame.loc[::7, "app_id"] = "never_seen_app"  # outside the vocabulary
    frame.loc[::5, "app_category"] = None
    numeric = get_schema(schema_version).feature_columns[5]
    frame.loc[::3, numeric] = np.nan  # missing: 0 for both backends
    lightgbm = taskclf.build_pipeline(booster, vocabulary, reject_threshold=0.3)
    compiled = taskclf.build_pipeline(booster, vocabulary, reject_threshold=0.3, backend="compiled")
    expected, got = lightgbm.transform(frame), compiled.transform(frame)
    probabilities = list(PROBA_COLUMNS)
    np.testing.assert_allclose(got[probabilities], expected[probabilities], rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(
        got.drop(columns=probabilities), expected.drop(columns=probabilities)
    )
    assert {LABEL, SEGMENT_ID} <= set(got.columns)  # labels and segments are equal


@needs_lleaves
def test_compiled_once_then_kept_in_the_process(monkeypatch, tiny_v1):
    booster, _ = tiny_v1
    first = compiled_model(booster)
    monkeypatch.setattr(_compiled, "_compile_cached", None)  # any further build would fail
    assert compiled_model(booster) is first
    twin = type(booster)(model_str=booster.model_to_string())
    assert compiled_model(twin) is first  # same model digest


@pytest.fixture
def own_cache(monkeypatch, tmp_path) -> Path:
    """An empty disk cache for this test alone."""
    monkeypatch.setenv("TASKCLF_CACHE_DIR", str(tmp_path))
    return tmp_path / "compiled"


def cache_entry(directory: Path) -> Path:
    (entry,) = directory.glob("*.bin")
    return entry


def load_without_compiling(monkeypatch, booster) -> CompiledBooster:
    """The compiled booster from the disk cache; compiling would raise."""
    import lleaves.compiler

    monkeypatch.setattr(_compiled, "_by_booster", _compiled.weakref.WeakKeyDictionary())
    monkeypatch.setattr(_compiled, "_by_digest", _compiled.collections.OrderedDict())
    with monkeypatch.context() as patch:
        patch.setattr(lleaves.compiler, "compile_to_module", None)
        return compiled_model(booster)


@needs_lleaves
def test_a_new_process_loads_the_cache_without_compiling(monkeypatch, own_cache, tiny_v1):
    booster, _ = tiny_v1
    matrix = unusual_matrix("v1", booster)
    expected = compiled_model(booster).predict(matrix)
    header = json.loads(cache_entry(own_cache).read_bytes().partition(b"\n")[0])
    assert (
        header["model_sha256"]
        == _compiled.hashlib.sha256(booster.model_to_string().encode()).hexdigest()
    )
    assert header["machine"] == _compiled.platform.machine()
    loaded = load_without_compiling(monkeypatch, booster)
    assert isinstance(loaded, CompiledBooster)
    assert np.array_equal(loaded.predict(matrix), expected)


@needs_lleaves
@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:-100] + b"\0" * 100, id="code-changed"),
        pytest.param(lambda data: b"not json\n" + data.partition(b"\n")[2], id="no-header"),
        pytest.param(
            lambda data: data.replace(b'"model_sha256": "', b'"model_sha256": "0', 1),
            id="other-model",
        ),
    ],
)
def test_a_spoiled_cache_entry_is_rebuilt_not_loaded(monkeypatch, own_cache, tiny_v1, spoil):
    booster, _ = tiny_v1
    compiled_model(booster)
    entry = cache_entry(own_cache)
    good = entry.read_bytes()
    entry.write_bytes(spoil(good))
    monkeypatch.setattr(_compiled, "_by_booster", _compiled.weakref.WeakKeyDictionary())
    monkeypatch.setattr(_compiled, "_by_digest", _compiled.collections.OrderedDict())
    matrix = unusual_matrix("v1", booster)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompiledBackendWarning)
        rebuilt = compiled_model(booster)
    np.testing.assert_allclose(rebuilt.predict(matrix), booster.predict(matrix), atol=1e-12)
    assert _compiled._read_entry(entry, json.loads(good.partition(b"\n")[0])) is not None


@needs_lleaves
@pytest.mark.slow
def test_processes_compiling_at_once_share_one_entry(tmp_path, tiny_v1):
    booster, _ = tiny_v1
    model_file = tmp_path / "model.txt"
    booster.save_model(model_file)
    script = (
        "import sys, lightgbm, numpy as np\n"
        "from taskclf.stages._compiled import compiled_model, CompiledBooster\n"
        "b = lightgbm.Booster(model_file=sys.argv[1])\n"
        "m = compiled_model(b)\n"
        "assert isinstance(m, CompiledBooster)\n"
        "x = np.random.default_rng(0).normal(size=(500, b.num_feature()))\n"
        "print(np.abs(m.predict(x) - b.predict(x)).max())\n"
    )
    env = {**os.environ, "TASKCLF_CACHE_DIR": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), *sys.path])
    runs = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", script, str(model_file)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert float(out) <= 1e-12
    entries = sorted(p.name for p in (tmp_path / "cache" / "compiled").iterdir())
    assert len(entries) == 2  # one entry and its lock file, no temporary leftovers
    assert entries[0].endswith(".bin") and entries[1].endswith(".lock")


@needs_lleaves
def test_bundles_hold_no_compiled_code(tiny_v1):
    booster, vocabulary = tiny_v1
    pipeline = taskclf.build_pipeline(booster, vocabulary, backend="compiled")
    before = len(pickle.dumps(pipeline))
    pipeline.predict(make_frame(n_users=1, minutes=60).drop(columns="label"))
    assert isinstance(compiled_model(booster), CompiledBooster)
    assert len(pickle.dumps(pipeline)) == before


@needs_lleaves
@pytest.mark.slow
def test_dask_workers_predict_compiled_from_the_shared_cache(own_cache, tiny_v1):
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from taskclf import distributed as tdd

    booster, vocabulary = tiny_v1
    ddf = dd.from_pandas(make_frame(n_users=4, minutes=150, seed=2).drop(columns="label"), 4)
    expected = taskclf.build_pipeline(booster, vocabulary).transform(ddf.compute())
    pipeline = taskclf.build_pipeline(booster, vocabulary, backend="compiled")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        got = tdd.transform(pipeline, ddf).compute()
        used = client.run(lambda: [type(m).__name__ for m in _compiled._by_digest.values()])
    assert ["CompiledBooster"] in used.values()
    assert all(kinds in ([], ["CompiledBooster"]) for kinds in used.values())
    assert len(list(own_cache.glob("*.bin"))) == 1  # compiled once, read by the workers
    got = got.loc[expected.index]
    probabilities = list(PROBA_COLUMNS)
    np.testing.assert_allclose(got[probabilities], expected[probabilities], rtol=0, atol=1e-12)
    others = [*probabilities, SEGMENT_ID]  # Dask numbers segments its own way: compare groups
    pd.testing.assert_frame_equal(got.drop(columns=others), expected.drop(columns=others))
    assert np.array_equal(segment_groups(got), segment_groups(expected))


def segment_groups(frame: pd.DataFrame) -> np.ndarray:
    """Each row's segment as a number in order of first appearance."""
    return pd.factorize(pd.MultiIndex.from_frame(frame[["user_id", SEGMENT_ID]]))[0]


@needs_lleaves
def test_an_unwritable_cache_still_compiles_with_one_warning(monkeypatch, tmp_path, tiny_v1):
    booster, _ = tiny_v1
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("TASKCLF_CACHE_DIR", str(tmp_path / "a-file"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = compiled_model(booster)
        compiled_model(booster)
    assert [w.category for w in caught] == [CompiledBackendWarning]
    assert "cannot be cached" in str(caught[0].message)
    matrix = unusual_matrix("v1", booster)
    np.testing.assert_allclose(compiled.predict(matrix), booster.predict(matrix), atol=1e-12)
    assert (tmp_path / "a-file").read_text() == "not a directory"
