"""Reports: time per label, per user and per day, and timeline pictures."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import taskclf.report as report_module
from taskclf import build_pipeline
from taskclf._readers import read_segments_json
from taskclf.exceptions import InputError, NotOursError, ReaderError
from taskclf.report import read_predictions, segments_frame, split_by_day, write_report
from taskclf.stages.segment import Segment, frame_to_segments
from taskclf.workflows import evaluate_to_directory, infer_to_directory

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = pd.Timestamp("2025-01-06 23:57", tz="UTC")


def write_minutes(directory, rows):
    """A predictions.csv of (user, minute offset from T0, label, rejected[, truth]) rows."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "bucket_start_ts": [(T0 + pd.Timedelta(minutes=m)).isoformat() for _, m, *_ in rows],
            "user_id": [r[0] for r in rows],
            "predicted_label": [r[2] for r in rows],
            "confidence": [0.3 if r[3] else 0.9 for r in rows],
            "is_rejected": [r[3] for r in rows],
        }
    )
    if all(len(r) == 5 for r in rows):
        frame["true_label"] = [r[4] for r in rows]
    frame["mapped_label"] = frame["predicted_label"].map(
        {"Build": "Focus", "Debug": "Focus", "Meet": "Talk", "Mixed/Unknown": "Mixed/Unknown"}
    )
    frame.to_csv(directory / "predictions.csv", index=False)
    return directory


# u1 crosses midnight: Build 23:57-23:59 (the last minute rejected), then on
# the next day Debug, a gap of 10 minutes, Build, Meet. u2: two Meet minutes.
ROWS = [
    ("u1", 0, "Build", False, "Build"),
    ("u1", 1, "Build", False, "Debug"),
    ("u1", 2, "Build", True, "Build"),
    ("u1", 3, "Debug", False, "Debug"),
    ("u1", 4, "Debug", False, "Debug"),
    ("u1", 15, "Build", False, "Build"),
    ("u1", 16, "Meet", True, "Meet"),
    ("u2", 0, "Meet", False, "Meet"),
    ("u2", 1, "Meet", False, "Write"),
]


def test_tables_per_user_and_day(tmp_path):
    import matplotlib  # here: collecting the tests needs no matplotlib

    before = matplotlib.get_backend()
    report = write_report(write_minutes(tmp_path / "in", ROWS), tmp_path / "out")
    assert matplotlib.get_backend() == before  # drawn on the Agg canvas, no pyplot
    day = report.per_day.set_index(["user_id", report.per_day["day"].astype(str)])
    first, second = day.loc[("u1", "2025-01-06")], day.loc[("u1", "2025-01-07")]
    assert (first["minutes"], first["segments"], first["switches_per_hour"]) == (3.0, 1, 0.0)
    assert first["reject_rate"] == round(1 / 3, 4)
    assert first["accuracy"] == round(2 / 3, 4)
    # Debug, Build (after the gap) and Meet: two switches in four minutes.
    assert (second["minutes"], second["segments"], second["switches_per_hour"]) == (4.0, 3, 30.0)
    assert second[["minutes_Debug", "minutes_Build", "minutes_Meet"]].tolist() == [2.0, 1.0, 1.0]
    assert second[["share_Debug", "share_Build"]].tolist() == [50.0, 25.0]
    assert day.loc[("u2", "2025-01-06"), "accuracy"] == 0.5
    user = report.per_user.set_index("user_id").loc["u1"]
    assert (user["minutes"], user["segments"], user["reject_rate"]) == (7.0, 4, 0.2857)
    assert report.summary.set_index("label")["minutes"].to_dict() == {
        "Build": 4.0, "Meet": 3.0, "Debug": 2.0
    }  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["per_day.csv", "per_user.csv", "summary.csv", "timeline.png"]
    written = pd.read_csv(tmp_path / "out" / "per_day.csv")
    assert written["segments"].tolist() == report.per_day["segments"].tolist()


def test_mapped_view_counts_buckets(tmp_path):
    source = write_minutes(tmp_path / "in", ROWS)
    report = write_report(source, tmp_path / "out", view="mapped")
    assert report.summary.set_index("label")["minutes"].to_dict() == {"Focus": 6.0, "Talk": 3.0}
    assert "accuracy" not in report.per_day  # the true labels are core labels
    pd.read_csv(source / "predictions.csv").drop(columns="mapped_label").to_csv(
        source / "predictions.csv", index=False
    )
    with pytest.raises(InputError, match="--taxonomy"):
        write_report(source, tmp_path / "out", view="mapped")
    with pytest.raises(InputError, match="view"):
        read_predictions(source / "predictions.csv", "buckets")


def test_report_of_a_real_run_has_the_runs_segments(booster_v1, encoders_v1, frame_v1, tmp_path):
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.5)
    run = infer_to_directory(pipeline, frame_v1.drop(columns="label"), tmp_path / "run")
    report = write_report(run.directory, tmp_path / "report")
    segments = read_segments_json(run.directory / "segments.json")
    expected = segments_frame(segments).groupby("label")["minutes"].sum()
    assert report.summary.set_index("label")["minutes"].sort_index().to_dict() == pytest.approx(
        expected.sort_index().to_dict()
    )
    assert report.summary["segments"].sum() == len(segments) == run.segments
    predictions = pd.read_csv(run.directory / "predictions.csv")
    assert report.per_user["minutes"].sum() == len(predictions)
    rates = predictions.groupby("user_id")["is_rejected"].mean().round(4)
    assert report.per_user.set_index("user_id")["reject_rate"].to_dict() == rates.to_dict()
    data = (tmp_path / "report" / "timeline.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert int.from_bytes(data[16:20], "big") == 1200
    # The evaluation's pictures are drawn the same way, on the Agg canvas.
    import matplotlib  # here: collecting the tests needs no matplotlib

    before = matplotlib.get_backend()
    evaluate_to_directory(
        pipeline, frame_v1.drop(columns="label"), frame_v1["label"], tmp_path / "e"
    )
    for name in ("confusion.png", "reliability.png", "coverage.png"):
        assert (tmp_path / "e" / name).read_bytes().startswith(PNG_MAGIC)
    assert matplotlib.get_backend() == before


def test_segments_crossing_midnight_are_split_per_day():
    start = dt.datetime(2025, 1, 6, 23, 30, tzinfo=dt.UTC)
    late = Segment(start, start + dt.timedelta(hours=25), "Debug", 25 * 60, "u1")
    rows = split_by_day(segments_frame([late]))
    assert [str(d) for d in rows["day"]] == ["2025-01-06", "2025-01-07", "2025-01-08"]
    assert rows["start_h"].tolist() == [23.5, 0.0, 0.0]
    assert rows["minutes"].tolist() == [30.0, 1440.0, 30.0]


def test_many_user_days_go_on_several_pictures_and_replace_only_a_report(monkeypatch, tmp_path):
    monkeypatch.setattr(report_module, "ROWS_PER_PICTURE", 2)
    rows = [(f"u{i}", 10, "Build", False) for i in range(3)]
    report = write_report(write_minutes(tmp_path / "in", rows), tmp_path / "out")
    pictures = [p for p in report.files if p.suffix == ".png"]
    assert [p.name for p in pictures] == ["timeline-01.png", "timeline-02.png"]
    write_report(write_minutes(tmp_path / "in", rows[:1]), tmp_path / "out")
    assert "timeline.png" in {p.name for p in (tmp_path / "out").iterdir()}
    assert "timeline-01.png" not in {p.name for p in (tmp_path / "out").iterdir()}
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(NotOursError, match="not a taskclf report"):
        write_report(tmp_path / "in", tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_missing_or_malformed_input_is_refused(tmp_path):
    with pytest.raises(ReaderError, match="does not exist"):
        write_report(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "predictions.csv").write_text("bucket_start_ts,user_id\n2025-01-06,u\n")
    with pytest.raises(ReaderError, match="lacks the columns"):
        write_report(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_ends_segments_one_pipeline_bucket_after_their_last_start(
    booster_v1, encoders_v1, frame_v1, tmp_path
):
    # The bucket width comes from the pipeline's merge step (here 5 minutes), not a default.
    pipeline = build_pipeline(booster_v1, encoders_v1, bucket_seconds=300)
    run = infer_to_directory(pipeline, frame_v1.drop(columns="label"), tmp_path / "run")
    segments = segments_frame(read_segments_json(run.directory / "segments.json"))
    out = pipeline.transform(frame_v1.drop(columns="label"))
    last = pd.to_datetime(out.groupby(["user_id", "segment_id"])["bucket_start_ts"].max(), utc=True)
    ends = pd.to_datetime(segments["end"]).sort_values().reset_index(drop=True)
    expected = (last + pd.Timedelta(seconds=300)).sort_values().reset_index(drop=True)
    assert ends.equals(expected)


def test_a_run_reads_its_segments_as_the_pipeline_found_its_timelines(
    booster_v1, encoders_v1, frame_v1, tmp_path
):
    # With timelines="as_given" the frame is one timeline: its segments belong to no user.
    one_user = frame_v1[frame_v1["user_id"] == frame_v1["user_id"].iloc[0]].drop(columns="label")
    pipeline = build_pipeline(booster_v1, encoders_v1, timelines="as_given")
    run = infer_to_directory(pipeline, one_user, tmp_path / "run")
    written = read_segments_json(run.directory / "segments.json")
    expected = frame_to_segments(pipeline.transform(one_user), timelines="as_given")
    assert written == expected and {s.user_id for s in written} == {None}


def test_an_evaluation_scores_with_the_pipelines_widths(
    booster_v1, encoders_v1, frame_v1, tmp_path
):
    import json

    from taskclf.metrics import evaluate

    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    pipeline = build_pipeline(booster_v1, encoders_v1, min_block_seconds=1800, max_gap_seconds=120)
    written = evaluate_to_directory(pipeline, X, y, tmp_path / "e")["pooled"]["label"]
    out = pipeline.transform(X)
    expected = evaluate(out, y, min_block_seconds=1800, max_gap_seconds=120)["pooled"]["label"]
    default = evaluate(out, y)["pooled"]["label"]
    text = lambda figures: json.dumps(figures, sort_keys=True, default=str)  # noqa: E731
    assert text(expected) != text(default)  # the widths matter on this frame
    assert text(written) == text(expected)
