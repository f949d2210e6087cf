"""Synthetic v1 frames for the benchmarks (fast, vectorized)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskclf.core.schema import SCHEMA_V1
from taskclf.core.types import CLASS_ORDER


def make_v1_rows(n_rows: int, n_users: int = 200, seed: int = 0) -> pd.DataFrame:
    """``n_rows`` v1 feature rows: runs of 5-60 minute tasks, users of equal size."""
    rng = np.random.default_rng(seed)
    per_user = n_rows // n_users
    n = per_user * n_users
    # Task runs: a new task starts with probability 1/20 each minute.
    switch = rng.random(n) < 0.05
    label = rng.integers(0, 8, size=n)
    run = np.cumsum(switch)
    label = rng.integers(0, 8, size=run[-1] + 1)[run]
    minute = np.tile(np.arange(per_user), n_users)
    # A 40-minute gap every 4 hours splits timelines.
    minute = minute + (minute // 240) * 40
    ts = pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(minute, unit="min")
    frame: dict[str, object] = {
        "user_id": np.repeat([f"user{u:04d}" for u in range(n_users)], per_user),
        "bucket_start_ts": ts,
    }
    apps = np.array([f"app{i:02d}" for i in range(40)], dtype=object)
    frame["app_id"] = apps[(label * 5 + rng.integers(0, 5, size=n)) % 40]
    frame["app_category"] = np.array(["dev", "chat", "web", "docs"], dtype=object)[label % 4]
    frame["domain_category"] = np.array(["work", "misc", "news"], dtype=object)[label % 3]
    for j, name in enumerate(SCHEMA_V1.feature_columns):
        if name in frame:
            continue
        if name in ("is_browser", "is_editor", "is_terminal", "idle_return_indicator"):
            frame[name] = rng.random(n) < 0.2 + 0.05 * (label % 3)
        else:
            frame[name] = rng.normal((label * (j % 5 + 1)) % 7, 3.0, size=n)
    df = pd.DataFrame(frame)
    df["label"] = np.asarray(CLASS_ORDER, dtype=object)[label]
    return df
