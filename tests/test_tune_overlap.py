"""Honest tuning: rows a model was trained on are recognised by their user and day."""

from __future__ import annotations

from conftest import make_frame

from taskclf.tune import day_fingerprints, training_overlap


def test_training_rows_are_recognised_in_any_order_and_new_rows_are_not():
    train = make_frame(n_users=3, minutes=60)
    recorded = list(day_fingerprints(train))
    assert len(recorded) == 3
    shuffled = train.sample(frac=1, random_state=0).drop(columns="label")
    assert training_overlap(recorded, shuffled) == [
        ("user0", "2025-01-06"),
        ("user1", "2025-01-06"),
        ("user2", "2025-01-06"),
    ]
    held_out = make_frame(n_users=3, minutes=60, seed=5)
    assert training_overlap(recorded, held_out) == []
    one_day_changed = train.assign(keys_per_min=train["keys_per_min"] + (train.user_id == "user1"))
    assert [user for user, _ in training_overlap(recorded, one_day_changed)] == ["user0", "user2"]
