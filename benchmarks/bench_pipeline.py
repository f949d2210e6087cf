"""Pipeline cost against the LightGBM model alone.

For 100k and 1M synthetic v1 rows and a 100-round, 8-class booster, prints
``booster.predict`` seconds (on the same rows' feature matrix),
``pipeline.predict`` seconds (best of ``--repeat`` interleaved runs), their
ratio, the time of each stage, and the
peak memory ``pipeline.predict`` adds over the input frame's
``memory_usage(deep=True)``.

Run: ``python benchmarks/bench_pipeline.py [--rows 100000 1000000]``
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import lightgbm as lgb
import numpy as np
import pandas as pd

from taskclf import build_pipeline
from taskclf.core.schema import SCHEMA_V1
from taskclf.core.types import CLASS_ORDER
from taskclf.stages.encode import CategoricalEncoder, learn_vocabulary
from taskclf.stages.model import feature_matrix
from taskclf.synth import make_activity_frame


def train(rows: int = 50_000, rounds: int = 100):
    df = make_activity_frame(20, 6, random_state=1).head(rows)
    encoder = CategoricalEncoder(min_category_freq=1, unknown_mask_rate=0.0).fit(df)
    vocabulary = {**encoder.vocabulary_, "user_id": learn_vocabulary(df["user_id"], 1)}
    X = feature_matrix(encoder.transform(df), SCHEMA_V1, vocabulary["user_id"])
    y = np.searchsorted(CLASS_ORDER, df["label"].to_numpy())
    params = {
        "objective": "multiclass",
        "num_class": 8,
        "num_leaves": 31,
        "verbose": -1,
        "seed": 0,
    }
    booster = lgb.train(params, lgb.Dataset(X, y), rounds)
    return booster, vocabulary


def synthetic_rows(n_rows: int) -> pd.DataFrame:
    """About ``n_rows`` unlabelled v1 rows of users the model never saw."""
    n_users = max(2, round(n_rows / 20_000))
    n_days = max(1, round(n_rows / n_users / 490))
    df = make_activity_frame(n_users, n_days, random_state=2)
    df["user_id"] = "new_" + df["user_id"]
    return df.head(n_rows).drop(columns="label")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, best kept")
    args = parser.parse_args()
    booster, vocabulary = train()
    pipeline = build_pipeline(booster, vocabulary, reject_threshold=0.55)
    for n_rows in args.rows:
        df = synthetic_rows(n_rows)
        frame_mb = df.memory_usage(deep=True).sum() / 2**20
        matrix = feature_matrix(pipeline[:1].transform(df), SCHEMA_V1, vocabulary["user_id"])
        pipeline.predict(df.head(1000))  # warm up

        # Interleaved repeats, best of each: a busy machine slows single runs.
        t_booster = t_pipeline = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            booster.predict(matrix)
            t_booster = min(t_booster, time.perf_counter() - start)
            start = time.perf_counter()
            pipeline.predict(df)
            t_pipeline = min(t_pipeline, time.perf_counter() - start)

        stages = []
        current = df
        for name, step in pipeline.steps:
            start = time.perf_counter()
            current = step.transform(current)
            stages.append((name, time.perf_counter() - start))

        del matrix
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        pipeline.predict(df)
        peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()

        print(f"rows={n_rows:,}  frame={frame_mb:.0f} MiB")
        print(f"  booster.predict   {t_booster:8.2f} s")
        print(f"  pipeline.predict  {t_pipeline:8.2f} s")
        print(f"  ratio             {t_pipeline / t_booster:8.3f}")
        print(f"  peak added memory {peak:8.0f} MiB = {peak / frame_mb:.2f} x frame")
        print(
            "  stages (transform one by one): "
            + ", ".join(f"{name} {seconds:.3f}s" for name, seconds in stages)
        )


if __name__ == "__main__":
    main()
