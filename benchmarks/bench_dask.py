"""Rows per second of taskclf on Dask against the in-memory pipeline.

Builds synthetic v1 feature rows (``tests/conftest.make_frame``), trains a
LightGBM booster, writes the rows to Parquet twice (one layout with each
user in one file, one with users spread over every file) and times:

- in memory: ``pipeline.predict`` alone, and ``pd.read_parquet`` +
  ``pipeline.predict``, with LightGBM on every core and on one thread
  (a Dask worker here has one);
- on a LocalCluster with 1 and with 2 worker processes (one thread each):
  ``taskclf.distributed.predict(pipeline, dd.read_parquet(...)).compute()``
  for both layouts (the second needs a shuffle), and
  ``taskclf.distributed.infer_parquet_dir`` (predictions and segments
  written to disk).

Each figure is the best of ``--repeats`` runs after one warm-up run (the
first run on a fresh cluster also pays for importing taskclf on the
workers). Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_dask.py --rows 200000 --rounds 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import LabelEncoder
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conftest import make_frame, train_booster  # noqa: E402

import taskclf  # noqa: E402
from taskclf import distributed as tdd  # noqa: E402


def best_of(repeats: int, run: Callable[[], object]) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def write_files(frame: pd.DataFrame, directory: Path, n_files: int, *, by_user: bool) -> Path:
    """Parquet files of ``frame``: whole users per file, or every user in every file."""
    directory.mkdir(parents=True)
    if by_user:
        users = pd.unique(frame["user_id"])
        groups = np.array_split(np.arange(len(users)), n_files)
        for i, group in enumerate(groups):
            part = frame[frame["user_id"].isin(users[group])]
            part.to_parquet(directory / f"part-{i:03d}.parquet", index=False)
    else:
        order = np.random.default_rng(0).permutation(len(frame))
        for i, rows in enumerate(np.array_split(order, n_files)):
            frame.iloc[np.sort(rows)].to_parquet(directory / f"part-{i:03d}.parquet", index=False)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    minutes = 1000
    n_users = max(1, args.rows // minutes)
    frame = make_frame(n_users=n_users, minutes=minutes, seed=1).drop(columns="label")
    booster, encoders = train_booster(make_frame(), rounds=args.rounds)
    # The booster was trained on three users; give the encoder every user of
    # the benchmark, as the encoder maps unseen user ids to a missing value
    # that the smoother refuses (a known limitation of the encode stage).
    encoders["user_id"] = LabelEncoder().fit(frame["user_id"].astype(str))
    pipeline = taskclf.build_pipeline(booster, encoders, reject_threshold=0.55)
    n = len(frame)
    print(f"{n} rows, {n_users} users, {args.rounds}-round booster, {args.files} Parquet files")
    print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")

    scratch = Path(tempfile.mkdtemp(prefix="taskclf-bench-"))
    try:
        by_user = write_files(frame, scratch / "by_user", args.files, by_user=True)
        mixed = write_files(frame, scratch / "mixed", args.files, by_user=False)

        def report(name: str, seconds: float) -> None:
            print(f"{name:<52} {n / seconds:>10,.0f} rows/s  ({seconds:6.2f} s)")

        # LightGBM predicts on every core through OpenMP; a Dask worker
        # process gets one thread (distributed sets OMP_NUM_THREADS=1).
        cores = f"{os.cpu_count()} OpenMP threads"
        for threads, label in ((None, cores), (1, "1 thread")):
            with threadpool_limits(threads):
                report(
                    f"in memory, {label}: predict",
                    best_of(args.repeats, lambda: pipeline.predict(frame)),
                )
                report(
                    f"in memory, {label}: read Parquet + predict",
                    best_of(args.repeats, lambda: pipeline.predict(pd.read_parquet(by_user))),
                )
        for workers in args.workers:
            with (
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",
                ) as cluster,
                Client(cluster),
            ):
                for layout, source in (("users per file", by_user), ("users mixed", mixed)):
                    seconds = best_of(
                        args.repeats,
                        lambda source=source: tdd.predict(
                            pipeline, dd.read_parquet(str(source))
                        ).compute(),
                    )
                    report(f"dask, {workers} worker(s): predict, {layout}", seconds)
                out = scratch / f"out-{workers}"
                seconds = best_of(
                    args.repeats,
                    lambda out=out: tdd.infer_parquet_dir(pipeline, mixed, out, address=None),
                )
                report(f"dask, {workers} worker(s): infer_parquet_dir, mixed", seconds)
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
