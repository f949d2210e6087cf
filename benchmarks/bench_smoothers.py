"""Rolling majority vs Viterbi smoothing, both followed by hysteresis.

Run: ``PYTHONPATH=. python benchmarks/bench_smoothers.py [n_users] [seeds]``.

A pipeline is trained on synthetic users (:mod:`taskclf.synth`, tasks
lasting tens of minutes); each smoother's parameter is chosen on other
users (validation), and both are scored on a third set of users (test):
accuracy and segmental F1@50 of the final label (after segmenting and
hysteresis merging), for the default and the tuned parameter, plus the
unsmoothed argmax, for each of ``seeds`` synthetic data sets. Then it
times both smoothers and the Viterbi kernel on about a million rows.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from taskclf import MajoritySmoother, ViterbiSmoother, build_pipeline
from taskclf._columns import PROBA_COLUMNS
from taskclf.metrics import summarize
from taskclf.stages._timeline import find_timelines
from taskclf.stages.viterbi import sticky_log_transitions, viterbi_codes
from taskclf.synth import make_activity_frame

WINDOWS = (1, 3, 5, 9, 15, 25)
SWITCH_PROBS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)


def split_users(frame: pd.DataFrame, n_train: int, n_valid: int) -> list[pd.DataFrame]:
    users = frame["user_id"].unique()
    parts = (users[:n_train], users[n_train : n_train + n_valid], users[n_train + n_valid :])
    return [frame[frame["user_id"].isin(p)].reset_index(drop=True) for p in parts]


def score(post: Pipeline, calibrated: pd.DataFrame, y: pd.Series) -> tuple[float, float]:
    """Accuracy and segmental F1@50 of the final labels."""
    figures = summarize(calibrated, y, post.predict(calibrated))
    return figures["accuracy"], figures["segmental_f1@50"]


def with_smoother(pipeline: Pipeline, smoother: object) -> Pipeline:
    """The post-processing steps (reject onwards) with ``smoother`` in ``smooth``."""
    post = Pipeline([(name, clone(step)) for name, step in pipeline.steps[3:]])
    return post.set_params(smooth=smoother)


def quality(n_users: int, seed: int) -> None:
    print(f"\n--- synthetic data, seed {seed}")
    frame = make_activity_frame(n_users=n_users, n_days=3, random_state=seed)
    n_train = n_users // 2
    train, valid, test = split_users(frame, n_train, (n_users - n_train) // 2)
    print(f"rows: train {len(train):,} ({n_train} users), valid {len(valid):,}, test {len(test):,}")
    run_length = frame.groupby((frame["label"] != frame["label"].shift()).cumsum()).size()
    print(f"mean true run: {run_length.mean():.1f} buckets")

    pipeline = build_pipeline(num_boost_round=100, num_threads=1)
    started = time.perf_counter()
    pipeline.fit(train.drop(columns="label"), train["label"])
    print(f"fit: {time.perf_counter() - started:.1f} s")
    calibrate = pipeline.named_steps["calibrate"]
    print(
        f"calibration (T = {calibrate.calibrator_.temperature:.3f}): log loss "
        f"{calibrate.log_loss_before_:.3f} -> {calibrate.log_loss_after_:.3f}, Brier "
        f"{calibrate.brier_before_:.3f} -> {calibrate.brier_after_:.3f}"
    )
    head = pipeline[:3]  # encode, predict, calibrate: computed once per set
    valid_cal = head.transform(valid.drop(columns="label"))
    test_cal = head.transform(test.drop(columns="label"))

    def tuned(make: type, name: str, values: tuple[float, ...]) -> object:
        scores = {
            v: score(with_smoother(pipeline, make(**{name: v})), valid_cal, valid["label"])[1]
            for v in values
        }
        return make(**{name: max(scores, key=scores.__getitem__)})

    rows = [
        ("argmax (window 1)", MajoritySmoother(window=1)),
        ("majority, default window 3", MajoritySmoother()),
        ("majority, tuned", tuned(MajoritySmoother, "window", WINDOWS)),
        ("viterbi, default switch_prob", ViterbiSmoother()),
        ("viterbi, tuned", tuned(ViterbiSmoother, "switch_prob", SWITCH_PROBS)),
    ]
    print(f"{'smoother (then hysteresis 180 s)':40s} {'accuracy':>9s} {'segF1@50':>9s}")
    for label, smoother in rows:
        accuracy, f1 = score(with_smoother(pipeline, smoother), test_cal, test["label"])
        shown = {k: v for k, v in smoother.get_params().items() if k != "max_gap_seconds"}
        print(f"{label + ' ' + str(shown):40s} {accuracy:9.4f} {f1:9.4f}")


def speed() -> None:
    frame = make_activity_frame(n_users=50, n_days=40, random_state=2)
    rows = frame[["user_id", "bucket_start_ts"]].copy()
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(8, 0.5), size=len(rows))
    rows[list(PROBA_COLUMNS)] = proba
    rows["is_rejected"] = False
    rows["raw_label"] = pd.Categorical(
        np.asarray(sorted(set(frame["label"])))[proba.argmax(axis=1)]
    )
    timelines = find_timelines(rows, 300)
    lengths = np.diff(timelines.bounds)
    print(
        f"\n{len(rows):,} rows, {len(lengths):,} timelines "
        f"(longest {lengths.max()}, mean {lengths.mean():.0f})"
    )
    for label, stage in (
        ("ViterbiSmoother.transform", ViterbiSmoother()),
        ("MajoritySmoother.transform", MajoritySmoother()),
    ):
        best = min(_timed(stage.transform, rows) for _ in range(3))
        print(f"{label:28s} {best:6.2f} s")
    log_e = np.log(np.clip(timelines.to_sorted(proba), 1e-12, None))
    transitions = sticky_log_transitions(0.01)
    best = min(_timed(viterbi_codes, log_e, timelines.bounds, transitions) for _ in range(3))
    print(f"{'viterbi_codes (kernel)':28s} {best:6.2f} s")


def _timed(function: object, *args: object) -> float:
    started = time.perf_counter()
    function(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    n_users = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for seed in range(1, seeds + 1):
        quality(n_users, seed)
    speed()


if __name__ == "__main__":
    main()
