"""The compiled model stage against LightGBM itself.

Trains a 100-round, 8-class v1 booster with categorical splits (800 trees,
the model stage's own training), then on synthetic rows of unseen users
times, best of ``--repeat`` interleaved runs:

- ``booster.predict`` (LightGBM) on the rows' feature matrix;
- lleaves (the ``compiled`` backend, through ``compiled_model``) on the
  same matrix;
- tl2cgen (C through the system compiler), when installed;
- ``pipeline.predict`` with each backend.

It prints the first-use compile time, the time to load the compiled model
from the cache in a fresh process, the largest probability difference and
whether labels agree.

Run: ``python benchmarks/bench_compiled.py [--rows 200000 1000000]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import synthetic_rows

from taskclf import build_pipeline
from taskclf.core.schema import SCHEMA_V1
from taskclf.stages import _compiled
from taskclf.stages.encode import CategoricalEncoder
from taskclf.stages.model import BoosterPredictor, feature_matrix
from taskclf.synth import make_activity_frame

_COMPILE_IN_FRESH_PROCESS = """
import sys, time, lightgbm as lgb
from taskclf.stages._compiled import CompiledBooster, compiled_model
booster = lgb.Booster(model_file=sys.argv[1])
wall, cpu = time.perf_counter(), time.process_time()
assert isinstance(compiled_model(booster), CompiledBooster), "not compiled"
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def train(rows: int = 50_000, rounds: int = 100):
    """A v1 booster trained by the model stage (categorical splits declared)."""
    df = make_activity_frame(20, 6, random_state=1).head(rows)
    encoder = CategoricalEncoder(min_category_freq=1, unknown_mask_rate=0.0).fit(df)
    stage = BoosterPredictor("v1", num_boost_round=rounds, class_weight=None)
    stage.set_params(min_category_freq=1, unknown_mask_rate=0.0)
    stage.fit(encoder.transform(df), df["label"])
    return stage.booster_, {**encoder.vocabulary_, "user_id": stage.user_vocabulary_}


def tl2cgen_predictor(booster, scratch: str):
    """tl2cgen's compiled booster (C through gcc) and its compile seconds, or None."""
    try:
        import tl2cgen
        import treelite
    except ImportError:
        return None, None
    start = time.perf_counter()
    model = treelite.frontend.from_lightgbm(booster)
    library = os.path.join(scratch, "model.so")
    tl2cgen.export_lib(model, toolchain="gcc", libpath=library, params={"parallel_comp": 2})
    predictor = tl2cgen.Predictor(library)
    seconds = time.perf_counter() - start

    def predict(matrix):
        return predictor.predict(tl2cgen.DMatrix(matrix)).reshape(len(matrix), -1)

    return predict, seconds


def fresh_process_compile(model_file: str) -> tuple[float, float]:
    """Wall and CPU seconds of ``compiled_model`` in a new Python process."""
    run = subprocess.run(
        [sys.executable, "-c", _COMPILE_IN_FRESH_PROCESS, model_file],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    wall, cpu = run.stdout.split()
    return float(wall), float(cpu)


def best_of(repeat: int, runs: dict) -> tuple[dict, dict]:
    """Best seconds and last result of each callable, run interleaved ``repeat`` times."""
    best = dict.fromkeys(runs, float("inf"))
    results = {}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    parser.add_argument("--cache-dir", help="TASKCLF_CACHE_DIR to use (default: a new, empty one)")
    parser.add_argument("--no-tl2cgen", action="store_true", help="leave tl2cgen out")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-compiled-")
    os.environ["TASKCLF_CACHE_DIR"] = args.cache_dir or scratch
    booster, vocabulary = train()
    print(f"booster: {booster.num_trees()} trees, {booster.num_feature()} features")
    model_file = os.path.join(scratch, "model.txt")
    booster.save_model(model_file)
    # The trained booster is deterministic: a given --cache-dir may hold it already.
    for what in ("first use (compile unless cached)", "cached load"):
        wall, cpu = fresh_process_compile(model_file)
        print(f"lleaves {what}: {wall:.2f} s wall, {cpu:.2f} s CPU (fresh process)")
    compiled = _compiled.compiled_model(booster)
    tl2cgen_predict, tl2cgen_seconds = (
        (None, None) if args.no_tl2cgen else tl2cgen_predictor(booster, scratch)
    )
    if tl2cgen_seconds is not None:
        print(f"tl2cgen compile {tl2cgen_seconds:.2f} s wall")

    lightgbm = build_pipeline(booster, vocabulary, reject_threshold=0.55)
    fast = build_pipeline(booster, vocabulary, reject_threshold=0.55, backend="compiled")
    for n_rows in args.rows:
        df = synthetic_rows(n_rows)
        matrix = feature_matrix(lightgbm[:1].transform(df), SCHEMA_V1, vocabulary["user_id"])
        runs = {
            "LightGBM booster.predict": lambda m=matrix: booster.predict(m),
            "lleaves (compiled backend)": lambda m=matrix: compiled.predict(m),
        }
        if tl2cgen_predict is not None:
            runs["tl2cgen 1.0 (gcc)"] = lambda m=matrix: tl2cgen_predict(m)
        runs["pipeline.predict, lightgbm"] = lambda d=df: lightgbm.predict(d)
        runs["pipeline.predict, compiled"] = lambda d=df: fast.predict(d)
        best, results = best_of(args.repeat, runs)

        expected = results["LightGBM booster.predict"]
        got = results["lleaves (compiled backend)"]
        labels = results["pipeline.predict, lightgbm"] == results["pipeline.predict, compiled"]
        base = best["LightGBM booster.predict"]
        print(f"\nrows={n_rows:,} (best of {args.repeat} interleaved runs)")
        print("| predictor | seconds | x booster.predict |\n|---|---|---|")
        for name, seconds in best.items():
            print(f"| {name} | {seconds:.2f} | {seconds / base:.3f} |")
        print(f"lleaves max abs difference {np.abs(got - expected).max():.1e}")
        if tl2cgen_predict is not None:
            diff = np.abs(results["tl2cgen 1.0 (gcc)"] - expected).max()
            print(f"tl2cgen max abs difference {diff:.1e}")
        print(f"pipeline labels identical: {bool(np.all(labels))}", flush=True)


if __name__ == "__main__":
    main()
