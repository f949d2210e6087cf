"""Honest tuning: rows a model was trained on are recognised by their user and day."""

from __future__ import annotations

import pandas as pd
from conftest import make_frame

from taskclf._readers import write_features
from taskclf.tune import day_fingerprints, training_overlap
from taskclf.workflows import read_labelled


def test_training_days_are_recognised_in_rows_read_back_from_files(tmp_path):
    # Two days of three users trained on; a tuning file repeats user1's first
    # day (rows shuffled, columns reordered), changes one row of user2's, and
    # adds a day nobody trained on.
    day1 = make_frame(n_users=3, minutes=90)
    day2 = make_frame(n_users=3, minutes=90, seed=1, start="2025-01-07 09:00")
    train, _ = read_labelled(write_features(pd.concat([day1, day2]), tmp_path / "train.csv"))
    recorded = sorted(day_fingerprints(train))
    assert len(recorded) == 6

    changed = day1[day1.user_id == "user2"].copy()
    changed.iloc[3, changed.columns.get_loc("keys_per_min")] += 1
    new = make_frame(n_users=1, minutes=90, seed=9, start="2025-01-08 09:00")
    repeated = day1[day1.user_id == "user1"].sample(frac=1, random_state=0)
    tuning = pd.concat([new, changed, repeated[repeated.columns[::-1]]])
    path = write_features(tuning, tmp_path / "tuning.parquet")
    X, _ = read_labelled(path)
    assert training_overlap(recorded, X) == [("user1", "2025-01-06")]
    assert len(training_overlap(recorded, train.sample(frac=1, random_state=1))) == 6
    assert training_overlap(None, X) == training_overlap(recorded, X.iloc[:0]) == []


def test_rows_without_user_id_are_one_user_per_day():
    rows = make_frame(n_users=1, minutes=60, schema_version="v2").drop(columns="user_id")
    digests = day_fingerprints(rows)
    assert list(digests.values()) == [("", "2025-01-06")]
    assert training_overlap(digests, rows.drop(columns="label")) == [("", "2025-01-06")]
