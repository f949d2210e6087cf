"""Time :func:`taskclf.synth.make_activity_frame` on about a million v1 rows.

Run: ``PYTHONPATH=. python benchmarks/bench_synth.py [repeats]``. Prints one
line per run (fresh process memory makes the first run the slowest) and the
best time, for v1 at 50 users x 40 days and v3 at 10 users x 20 days.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from taskclf.synth import make_activity_frame


def bench(label: str, repeats: int, **kwargs: Any) -> None:
    """Generate the frame ``repeats`` times and print each time and the best."""
    times = []
    for seed in range(repeats):
        t0 = time.perf_counter()
        df = make_activity_frame(random_state=seed, **kwargs)
        times.append(time.perf_counter() - t0)
        rows, cols = df.shape
        del df
        print(f"{label}: {rows:,} rows x {cols} columns in {times[-1]:.2f} s")
    print(f"{label}: best {min(times):.2f} s ({rows / min(times) / 1e6:.2f} M rows/s)")


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    make_activity_frame(n_users=1, n_days=1)  # warm up imports
    bench("v1 50x40", repeats, n_users=50, n_days=40)
    bench("v3 10x20", repeats, n_users=10, n_days=20, schema_version="v3")


if __name__ == "__main__":
    main()
