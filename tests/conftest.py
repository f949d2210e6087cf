"""Shared fixtures: small real feature frames and real LightGBM boosters."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import LabelEncoder

from taskclf.core.schema import get_schema
from taskclf.core.types import CLASS_ORDER

APPS = {
    "BreakIdle": ["lockscreen", "music"],
    "Build": ["vscode", "terminal"],
    "Communicate": ["slack", "mail"],
    "Debug": ["vscode", "gdb"],
    "Meet": ["zoom", "teams"],
    "ReadResearch": ["chrome", "pdf"],
    "Review": ["chrome", "vscode"],
    "Write": ["docs", "word"],
}


def make_frame(
    n_users: int = 3,
    minutes: int = 240,
    *,
    schema_version: str = "v1",
    seed: int = 0,
    start: str = "2025-01-06 09:00",
) -> pd.DataFrame:
    """A labelled feature frame: runs of 5-40 minutes of one task per user."""
    rng = np.random.default_rng(seed)
    schema = get_schema(schema_version)
    parts = []
    for u in range(n_users):
        labels: list[str] = []
        while len(labels) < minutes:
            labels += [CLASS_ORDER[rng.integers(8)]] * int(rng.integers(5, 40))
        label = np.array(labels[:minutes], dtype=object)
        ts = pd.date_range(start, periods=minutes, freq="min", tz="UTC")
        # a lunch gap of 40 minutes after two hours
        ts = ts.where(np.arange(minutes) < 120, ts + pd.Timedelta(minutes=40))
        k = np.array([CLASS_ORDER.index(v) for v in label])
        frame = {"user_id": f"user{u}", "bucket_start_ts": ts, "label": label}
        for j, name in enumerate(schema.feature_columns):
            if name in ("app_id", "app_category", "domain_category", "user_id"):
                continue
            frame[name] = rng.normal(loc=(k * (j % 5 + 1)) % 7, scale=2.0, size=minutes)
        apps = np.array([APPS[v][rng.integers(2)] for v in label], dtype=object)
        frame["app_id"] = apps
        frame["app_category"] = np.where(
            np.isin(apps, ["vscode", "terminal", "gdb"]), "dev", "other"
        )
        frame["domain_category"] = np.where(k % 2 == 0, "work", "misc")
        for flag in ("is_browser", "is_editor", "is_terminal", "idle_return_indicator"):
            frame[flag] = rng.random(minutes) < 0.3
        parts.append(pd.DataFrame(frame))
    return pd.concat(parts, ignore_index=True)


def train_booster(df: pd.DataFrame, schema_version: str = "v1", rounds: int = 25):
    schema = get_schema(schema_version)
    encoders = {}
    X = df[list(schema.feature_columns)].copy()
    for c in schema.categorical_columns:
        encoders[c] = LabelEncoder().fit(X[c].astype(str))
        X[c] = encoders[c].transform(X[c].astype(str))
    y = np.array([CLASS_ORDER.index(v) for v in df["label"]])
    params = {
        "objective": "multiclass",
        "num_class": 8,
        "num_leaves": 15,
        "learning_rate": 0.2,
        "verbose": -1,
        "seed": 0,
        "num_threads": 1,
    }
    booster = lgb.train(params, lgb.Dataset(X.to_numpy(dtype=float), y), rounds)
    return booster, encoders


@pytest.fixture(scope="session")
def frame_v1() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="session")
def trained_v1(frame_v1):
    return train_booster(frame_v1)


@pytest.fixture(scope="session")
def booster_v1(trained_v1):
    return trained_v1[0]


@pytest.fixture(scope="session")
def encoders_v1(trained_v1):
    return trained_v1[1]


@pytest.fixture
def features_v1(frame_v1) -> pd.DataFrame:
    """A fresh copy of the v1 frame without the label column."""
    return frame_v1.drop(columns="label").copy()


@pytest.fixture(scope="session")
def booster_3_classes(frame_v1, encoders_v1):
    """A real booster over the v1 feature width, trained on only 3 classes."""
    X = frame_v1[list(get_schema("v1").feature_columns)].copy()
    for c in get_schema("v1").categorical_columns:
        X[c] = encoders_v1[c].transform(X[c])
    y = np.array([CLASS_ORDER.index(v) % 3 for v in frame_v1["label"]])
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X.to_numpy(dtype=float), y), 3)
