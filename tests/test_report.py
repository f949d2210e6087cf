"""Reports: time per label and timeline pictures."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

import taskclf.report as report_module
from taskclf import build_pipeline, frame_to_segments
from taskclf.exceptions import NotOursError, ReaderError
from taskclf.infer.batch import write_segments_json
from taskclf.report import (
    segments_frame,
    split_by_day,
    summarize_segments,
    write_report,
)
from taskclf.stages.segment import Segment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)


def seg(start_min, minutes, label, user="u1"):
    start = T0 + dt.timedelta(minutes=start_min)
    return Segment(start, start + dt.timedelta(minutes=minutes), label, minutes, user)


def test_summary_is_time_per_label():
    segments = [
        seg(0, 30, "Build"),
        seg(30, 10, "Meet"),
        seg(40, 20, "Build"),
        seg(0, 40, "Write", user="u2"),
    ]
    summary = summarize_segments(segments)
    assert summary.to_dict("records") == [
        {"label": "Build", "segments": 2, "minutes": 50.0, "share": 50.0},
        {"label": "Write", "segments": 1, "minutes": 40.0, "share": 40.0},
        {"label": "Meet", "segments": 1, "minutes": 10.0, "share": 10.0},
    ]


def test_summary_of_nothing_is_empty():
    summary = summarize_segments([])
    assert list(summary.columns) == ["label", "segments", "minutes", "share"]
    assert len(summary) == 0


def test_segments_crossing_midnight_are_split_per_day():
    start = dt.datetime(2025, 1, 6, 23, 30, tzinfo=dt.UTC)
    late = Segment(start, start + dt.timedelta(hours=25), "Debug", 25 * 60, "u1")
    rows = split_by_day(segments_frame([late, seg(0, 60, "Build")]))
    debug = rows[rows["label"] == "Debug"]
    assert [str(d) for d in debug["day"]] == ["2025-01-06", "2025-01-07", "2025-01-08"]
    assert debug["start_h"].tolist() == [23.5, 0.0, 0.0]
    assert debug["end_h"].tolist() == [24.0, 24.0, 0.5]
    total = (debug["end_h"] - debug["start_h"]).sum()
    assert total == pytest.approx(25.0)


@pytest.fixture(scope="module")
def predictions_dir(booster_v1, encoders_v1, frame_v1, tmp_path_factory):
    """segments.json of a real pipeline run."""
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.5)
    segments = frame_to_segments(pipeline.transform(frame_v1.drop(columns="label")))
    directory = tmp_path_factory.mktemp("predictions")
    write_segments_json(segments, directory / "segments.json")
    return directory, segments


def test_write_report_from_real_segments(predictions_dir, tmp_path):
    directory, segments = predictions_dir
    report = write_report(directory, tmp_path / "report")
    written = pd.read_csv(report.summary_csv)
    pd.testing.assert_frame_equal(written, summarize_segments(segments), check_dtype=False)
    total_minutes = sum(s.bucket_count for s in segments)  # 60 s buckets
    assert written["minutes"].sum() == pytest.approx(total_minutes)
    assert written["share"].sum() == pytest.approx(100.0, abs=0.05)
    assert [p.name for p in report.timelines] == ["timeline.png"]
    data = report.timelines[0].read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1200 and height > 200


def test_many_user_days_are_drawn_on_several_pictures(monkeypatch, tmp_path):
    monkeypatch.setattr(report_module, "ROWS_PER_PICTURE", 2)
    segments = [seg(0, 60, "Build", user=f"u{i}") for i in range(5)]
    (tmp_path / "in").mkdir()
    write_segments_json(segments, tmp_path / "in" / "segments.json")
    report = write_report(tmp_path / "in", tmp_path / "out")
    assert [p.name for p in report.timelines] == [
        "timeline-01.png",
        "timeline-02.png",
        "timeline-03.png",
    ]
    heights = [int.from_bytes(p.read_bytes()[20:24], "big") for p in report.timelines]
    assert heights[0] == heights[1] > heights[2]
    # A new report replaces the old one whole; a directory with other files is refused.
    write_segments_json(segments[:1], tmp_path / "in" / "segments.json")
    write_report(tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.csv", "timeline.png"]
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(NotOursError, match="not a taskclf report"):
        write_report(tmp_path / "in", tmp_path / "out")


def test_segments_without_user_are_drawn(tmp_path):
    (tmp_path / "in").mkdir()
    write_segments_json([seg(0, 30, "Meet", user=None)], tmp_path / "in" / "segments.json")
    report = write_report(tmp_path / "in", tmp_path / "out")
    assert report.timelines[0].stat().st_size > 1000


def test_missing_or_malformed_input_is_refused(tmp_path):
    with pytest.raises(ReaderError, match="does not exist"):
        write_report(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "in").mkdir()
    with pytest.raises(ReaderError, match="no segments.json"):
        write_report(tmp_path / "in", tmp_path / "out")
    (tmp_path / "in" / "segments.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ReaderError, match="segments.json"):
        write_report(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_report_does_not_change_the_matplotlib_backend(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    paths = report_module.plot_timelines([seg(0, 30, "Build")], tmp_path)
    assert matplotlib.get_backend() == before
    assert paths[0].read_bytes().startswith(PNG_MAGIC)
