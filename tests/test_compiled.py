"""The compiled backend of the model stage: LightGBM's results, faster, cached on disk."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

import taskclf
from taskclf._columns import PROBA_COLUMNS
from taskclf.core.schema import get_schema
from taskclf.stages import _compiled
from taskclf.stages._compiled import CompiledBackendWarning, CompiledBooster, compiled_model
from taskclf.stages.encode import CategoricalEncoder
from taskclf.stages.model import BoosterPredictor

ROOT = Path(__file__).resolve().parents[1]

needs_lleaves = pytest.mark.skipif(
    importlib.util.find_spec("lleaves") is None,
    reason="the 'fast' extra (lleaves) is not installed: pip install '.[fast]'",
)


def forget_compiled(monkeypatch) -> None:
    """Empty the in-process caches, as in a new process."""
    monkeypatch.setattr(_compiled, "_by_booster", weakref.WeakKeyDictionary())
    monkeypatch.setattr(_compiled, "_by_digest", collections.OrderedDict())


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Empty caches: in the process, and on disk for this test alone."""
    forget_compiled(monkeypatch)
    monkeypatch.setenv("TASKCLF_CACHE_DIR", str(tmp_path))
    return tmp_path / "compiled"


def fit_tiny(schema_version: str):
    """A 1-round booster of the model stage (8 trees, categorical splits) and its vocabulary."""
    frame = make_frame(schema_version=schema_version, n_users=2, minutes=120)
    encoder = CategoricalEncoder(min_category_freq=1, unknown_mask_rate=0.0).fit(frame)
    stage = BoosterPredictor(schema_version, num_boost_round=1, num_threads=1, class_weight=None)
    stage.set_params(min_category_freq=1, unknown_mask_rate=0.0)
    stage.fit(encoder.transform(frame), frame["label"])
    assert "num_cat=1" in stage.booster_.model_to_string()  # categorical splits
    return stage.booster_, {**encoder.vocabulary_, "user_id": stage.user_vocabulary_}


@pytest.fixture(scope="module")
def tiny_v1():
    return fit_tiny("v1")


def unusual_matrix(schema_version: str) -> np.ndarray:
    """Rows with categorical codes -1, 0.. and beyond the vocabulary, and zeros (missing)."""
    schema = get_schema(schema_version)
    rng = np.random.default_rng(3)
    matrix = rng.normal(2.0, 3.0, size=(500, schema.n_features))
    matrix[rng.random(matrix.shape) < 0.1] = 0.0
    for name in schema.categorical_columns:
        matrix[:, schema.feature_columns.index(name)] = rng.integers(-1, 40, size=len(matrix))
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


def no_lleaves(monkeypatch):
    monkeypatch.setitem(sys.modules, "lleaves", None)  # import lleaves fails
    return "pip install 'taskclf[fast]'"


def failing_compiler(monkeypatch):
    def fail(model_text, code):
        raise RuntimeError("LLVM ERROR: no target")

    monkeypatch.setattr(_compiled, "_header", lambda model_text: {"format": "test"})
    monkeypatch.setattr(_compiled, "_lleaves_model", fail)
    return f"compiling failed on {_compiled.platform.machine()} (RuntimeError: LLVM ERROR"


@pytest.mark.parametrize("break_it", [no_lleaves, failing_compiler])
def test_lightgbm_predicts_after_one_warning(
    monkeypatch, break_it, booster_v1, encoders_v1, frame_v1
):
    words = break_it(monkeypatch)
    encoded = taskclf.build_pipeline(booster_v1, encoders_v1)[:1].transform(frame_v1)
    encoded["user_id"] = encoded["user_id"].astype("category")  # the stages have no vocabulary
    lightgbm = BoosterPredictor.from_booster(booster_v1)
    compiled = BoosterPredictor.from_booster(booster_v1, backend="compiled")
    copy = type(booster_v1)(model_str=booster_v1.model_to_string())
    twin = BoosterPredictor.from_booster(copy, backend="compiled")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            proba = compiled.predict_proba(encoded)
        twin.predict_proba(encoded)  # the same model: no second warning
    assert [w.category for w in caught] == [CompiledBackendWarning]
    assert words in str(caught[0].message) and "LightGBM predicts" in str(caught[0].message)
    assert np.array_equal(proba, lightgbm.predict_proba(encoded))


@needs_lleaves
@pytest.mark.parametrize("schema_version", ["v1", "v2", pytest.param("v3", marks=pytest.mark.slow)])
def test_same_probabilities_labels_and_segments_as_lightgbm(schema_version):
    booster, vocabulary = fit_tiny(schema_version)
    matrix = unusual_matrix(schema_version)
    compiled = compiled_model(booster)
    assert isinstance(compiled, CompiledBooster)
    got, expected = compiled.predict(matrix), booster.predict(matrix)
    assert got.dtype == np.float64 and got.shape == expected.shape == (len(matrix), 8)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)

    frame = make_frame(schema_version=schema_version, n_users=2, minutes=150, seed=5)
    frame = frame.drop(columns="label")
    frame.loc[::7, "app_id"] = "never_seen_app"  # outside the vocabulary
    frame.loc[::5, "app_category"] = None
    frame.loc[::3, get_schema(schema_version).feature_columns[5]] = np.nan  # 0 for both
    lightgbm = taskclf.build_pipeline(booster, vocabulary, reject_threshold=0.3)
    fast = taskclf.build_pipeline(booster, vocabulary, reject_threshold=0.3, backend="compiled")
    expected, got = lightgbm.transform(frame), fast.transform(frame)
    proba = list(PROBA_COLUMNS)
    np.testing.assert_allclose(got[proba], expected[proba], rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(got.drop(columns=proba), expected.drop(columns=proba))


@needs_lleaves
def test_compiled_once_kept_in_the_process_and_loaded_by_the_next(monkeypatch, cache, tiny_v1):
    booster, vocabulary = tiny_v1
    pipeline = taskclf.build_pipeline(booster, vocabulary, backend="compiled")
    saved = pickle.dumps(pipeline)
    pipeline.predict(make_frame(n_users=1, minutes=60).drop(columns="label"))
    assert pickle.dumps(pipeline) == saved  # bundles hold no compiled code
    first = compiled_model(booster)
    twin = type(booster)(model_str=booster.model_to_string())
    with monkeypatch.context() as patch:
        patch.setattr(_compiled, "_compile_cached", None)  # any further build would fail
        assert compiled_model(booster) is first
        assert compiled_model(twin) is first  # same model digest

    (entry,) = cache.glob("*.bin")
    header = json.loads(entry.read_bytes().partition(b"\n")[0])
    digest = hashlib.sha256(booster.model_to_string().encode()).hexdigest()
    assert header["model_sha256"] == digest
    assert header["machine"] == _compiled.platform.machine()
    assert {"cpu", "cpu_features", "lleaves", "llvmlite", "llvm", "code_sha256"} <= set(header)

    import lleaves.compiler

    forget_compiled(monkeypatch)  # as in a new process; compiling would now fail
    monkeypatch.setattr(lleaves.compiler, "compile_to_module", None)
    loaded = compiled_model(booster)
    assert loaded is not first and isinstance(loaded, CompiledBooster)
    matrix = unusual_matrix("v1")
    assert np.array_equal(loaded.predict(matrix), first.predict(matrix))


SPOILERS = {
    "truncated": lambda data: data[: len(data) // 2],
    "code changed": lambda data: data[:-100] + b"\0" * 100,
    "no header": lambda data: b"not json\n" + data.partition(b"\n")[2],
    "another model": lambda data: data.replace(b'"model_sha256": "', b'"model_sha256": "0', 1),
    "empty": lambda data: b"",
}


@needs_lleaves
def test_a_spoiled_cache_entry_is_rebuilt_not_loaded(monkeypatch, cache, tiny_v1):
    booster, _ = tiny_v1
    compiled_model(booster)
    (entry,) = cache.glob("*.bin")
    good = entry.read_bytes()
    header = json.loads(good.partition(b"\n")[0])
    header.pop("code_sha256")
    assert _compiled._read_entry(entry, header) is not None
    for name, spoil in SPOILERS.items():
        entry.write_bytes(spoil(good))
        assert _compiled._read_entry(entry, header) is None, name
    forget_compiled(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompiledBackendWarning)
        rebuilt = compiled_model(booster)
    matrix = unusual_matrix("v1")
    np.testing.assert_allclose(rebuilt.predict(matrix), booster.predict(matrix), atol=1e-12)
    assert entry.read_bytes() == good


@needs_lleaves
def test_processes_compiling_at_once_share_one_entry(monkeypatch, tmp_path, tiny_v1):
    # Another process and this one compile the same model at the same time.
    booster, _ = tiny_v1
    model_file = tmp_path / "model.txt"
    booster.save_model(model_file)
    script = (
        "import sys, lightgbm, numpy as np\n"
        "from taskclf.stages._compiled import compiled_model, CompiledBooster\n"
        "b = lightgbm.Booster(model_file=sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "m = compiled_model(b)\n"
        "assert isinstance(m, CompiledBooster)\n"
        "x = np.random.default_rng(0).normal(size=(500, b.num_feature()))\n"
        "print(np.abs(m.predict(x) - b.predict(x)).max())\n"
    )
    monkeypatch.setenv("TASKCLF_CACHE_DIR", str(tmp_path / "cache"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-W", "error", "-c", script, str(model_file)]
    other = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert other.stdout.readline() == "ready\n"  # imported: both compile from here on
    other.stdin.write("go\n")
    other.stdin.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompiledBackendWarning)
        mine = compiled_model(type(booster)(model_file=model_file))
    out = other.communicate(timeout=600)[0]
    assert other.returncode == 0 and float(out) <= 1e-12
    matrix = unusual_matrix("v1")
    np.testing.assert_allclose(mine.predict(matrix), booster.predict(matrix), atol=1e-12)
    entries = sorted(p.name for p in (tmp_path / "cache" / "compiled").iterdir())
    assert len(entries) == 2  # one entry and its lock file, no temporary leftovers
    assert entries[0].endswith(".bin") and entries[1].endswith(".lock")


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
    matrix = unusual_matrix("v1")
    np.testing.assert_allclose(compiled.predict(matrix), booster.predict(matrix), atol=1e-12)
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_inspect_says_whether_the_compiled_model_is_cached(tiny_v1, tmp_path, monkeypatch):
    from taskclf.workflows import bundle_facts, save_model

    booster, vocabulary = tiny_v1
    pipeline = taskclf.build_pipeline(booster, vocabulary)
    save_model(pipeline, tmp_path / "model.taskclf")
    save_model(pipeline, tmp_path / "model", pickle_free=True)
    for bundle in ("model.taskclf", "model"):
        assert bundle_facts(tmp_path / bundle)["compiled_model"].startswith("not cached")
    _compiled.compiled_model(booster)
    for bundle in ("model.taskclf", "model"):
        assert bundle_facts(tmp_path / bundle)["compiled_model"].startswith("cached")
    no_lleaves(monkeypatch)
    assert bundle_facts(tmp_path / "model")["compiled_model"].startswith("unknown")
