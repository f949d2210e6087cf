"""Reports on inference output: time per label, and timeline pictures.

:func:`write_report` reads the ``segments.json`` that ``taskclf infer``
writes and produces

- ``summary.csv``: time per label over every user and day (segments,
  minutes, share of the total);
- ``timeline.png`` (``timeline-01.png``, ``timeline-02.png``, ... when there
  are many user-days): one row per user and day, the day's segments drawn as
  coloured bars over the hours of the day (UTC).

The files are published together: the report directory is built beside its
destination and renamed into place, replacing only an earlier report.

Pictures are drawn with matplotlib's Agg canvas directly (no pyplot, no
change to the caller's matplotlib backend). matplotlib is the ``report``
extra: ``pip install 'taskclf[report]'``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import pandas as pd

from taskclf._io import atomic_directory, atomic_path
from taskclf._readers import SEGMENTS_FILE, read_segments_json
from taskclf.core.types import CLASS_ORDER, LABEL_COLORS, MIXED_UNKNOWN
from taskclf.exceptions import ReaderError
from taskclf.stages.segment import Segment

SUMMARY_FILE: Final = "summary.csv"
ROWS_PER_PICTURE: Final = 40
"""Most user-days drawn in one picture; more go into numbered pictures."""

_OTHER_COLORS: Final = ("#8C564B", "#E377C2", "#7F7F7F", "#AEC7E8", "#FFBB78", "#98DF8A")
_NO_USER: Final = "(all)"
_REPORT_FILE: Final = re.compile(r"summary\.csv|timeline(-\d+)?\.png")


def segments_frame(segments: Sequence[Segment]) -> pd.DataFrame:
    """Segments as a frame: ``user_id``, ``label``, ``start``, ``end``, ``minutes``.

    Examples
    --------
    >>> import datetime as dt
    >>> seg = Segment(dt.datetime(2025, 1, 6, 9), dt.datetime(2025, 1, 6, 9, 30), "Build", 30)
    >>> segments_frame([seg])[["label", "minutes"]].values.tolist()
    [['Build', 30.0]]
    """
    frame = pd.DataFrame(
        {
            "user_id": [_NO_USER if s.user_id is None else str(s.user_id) for s in segments],
            "label": [s.label for s in segments],
            "start": pd.to_datetime([s.start_ts for s in segments], utc=True),
            "end": pd.to_datetime([s.end_ts for s in segments], utc=True),
        }
    )
    frame["minutes"] = (frame["end"] - frame["start"]).dt.total_seconds() / 60.0
    return frame


def summarize_segments(segments: Sequence[Segment]) -> pd.DataFrame:
    """Time per label over all segments.

    Returns
    -------
    DataFrame
        One row per label, most time first, with columns ``label``,
        ``segments``, ``minutes`` and ``share`` (percent of all minutes).

    Examples
    --------
    >>> import datetime as dt
    >>> t = dt.datetime(2025, 1, 6, 9)
    >>> segs = [Segment(t, t + dt.timedelta(minutes=30), "Build", 30),
    ...         Segment(t + dt.timedelta(minutes=30), t + dt.timedelta(minutes=40), "Meet", 10)]
    >>> summarize_segments(segs)[["label", "minutes", "share"]].values.tolist()
    [['Build', 30.0, 75.0], ['Meet', 10.0, 25.0]]
    """
    frame = segments_frame(segments)
    grouped = frame.groupby("label", sort=False)["minutes"].agg(["count", "sum"])
    grouped = grouped.rename(columns={"count": "segments", "sum": "minutes"})
    total = float(grouped["minutes"].sum())
    grouped["share"] = (grouped["minutes"] / total * 100.0).round(2) if total > 0 else 0.0
    grouped = grouped.sort_values(["minutes", "segments"], ascending=False, kind="stable")
    out = grouped.reset_index()
    out["segments"] = out["segments"].astype(np.int64)
    out["minutes"] = out["minutes"].round(2)
    return out[["label", "segments", "minutes", "share"]]


def split_by_day(frame: pd.DataFrame) -> pd.DataFrame:
    """Cut segments at UTC midnight; add ``day`` and start/end hours of that day."""
    if frame.empty:
        return frame.assign(day=pd.Series(dtype=object), start_h=[], end_h=[])
    pieces = []
    rest = frame
    while len(rest):
        day = rest["start"].dt.floor("D")
        midnight = day + pd.Timedelta(days=1)
        piece = rest.assign(
            day=day.dt.date, end=rest["end"].where(rest["end"] <= midnight, midnight)
        )
        pieces.append(piece)
        crossing = (rest["end"] > midnight).to_numpy()
        rest = rest[crossing].assign(start=midnight[crossing])
    out = pd.concat(pieces, ignore_index=True)
    base = pd.to_datetime(out["day"].astype(str), utc=True)
    out["start_h"] = (out["start"] - base).dt.total_seconds() / 3600.0
    out["end_h"] = (out["end"] - base).dt.total_seconds() / 3600.0
    return out.sort_values(["user_id", "day", "start"], kind="stable").reset_index(drop=True)


def _colors(labels: Sequence[str]) -> dict[str, str]:
    colors = {}
    extra = iter(_OTHER_COLORS * (1 + len(labels) // len(_OTHER_COLORS)))
    for label in labels:
        colors[label] = LABEL_COLORS.get(label) or next(extra)
    return colors


def _draw(rows: pd.DataFrame, keys: list[tuple[str, Any]], path: Path, title: str) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise ReaderError(
            "drawing timelines needs matplotlib: pip install 'taskclf[report]'"
        ) from None
    position = {key: i for i, key in enumerate(keys)}
    y = np.array([position[(u, d)] for u, d in zip(rows["user_id"], rows["day"])], dtype=float)
    present = [label for label in (*CLASS_ORDER, MIXED_UNKNOWN) if label in set(rows["label"])]
    present += sorted(set(rows["label"]) - set(present))
    colors = _colors(present)
    lo = float(np.floor(rows["start_h"].min())) if len(rows) else 0.0
    hi = float(np.ceil(rows["end_h"].max())) if len(rows) else 24.0
    figure = Figure(figsize=(12, 1.6 + 0.38 * len(keys)), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for label in present:
        mask = (rows["label"] == label).to_numpy()
        ax.barh(
            y[mask],
            (rows["end_h"] - rows["start_h"]).to_numpy()[mask],
            left=rows["start_h"].to_numpy()[mask],
            height=0.8,
            color=colors[label],
            edgecolor="none",
        )
    ax.set_yticks(range(len(keys)), [f"{u}  {d}" for u, d in keys])
    ax.set_ylim(len(keys) - 0.5, -0.5)
    ax.set_xlim(max(lo - 0.5, 0.0), min(hi + 0.5, 24.0))
    ax.set_xlabel("hour of day (UTC)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[Patch(color=colors[label], label=label) for label in present],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def plot_timelines(segments: Sequence[Segment], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw the segments, one row per user and day, into PNG files in ``out_dir``.

    Returns
    -------
    list of Path
        ``timeline.png``, or ``timeline-01.png``, ``timeline-02.png``, ...
        when there are more than :data:`ROWS_PER_PICTURE` user-days.
    """
    out = Path(out_dir)
    rows = split_by_day(segments_frame(segments))
    keys = list(dict.fromkeys(zip(rows["user_id"], rows["day"])))
    pages = [keys[i : i + ROWS_PER_PICTURE] for i in range(0, len(keys), ROWS_PER_PICTURE)]
    pages = pages or [[]]
    paths = []
    for number, page in enumerate(pages, start=1):
        name = "timeline.png" if len(pages) == 1 else f"timeline-{number:02d}.png"
        selected = set(page)
        mask = np.array([k in selected for k in zip(rows["user_id"], rows["day"])], dtype=bool)
        suffix = "" if len(pages) == 1 else f" ({number}/{len(pages)})"
        _draw(rows[mask], page, out / name, f"taskclf segments per user and day{suffix}")
        paths.append(out / name)
    return paths


@attrs.frozen
class Report:
    """What :func:`write_report` produced.

    Attributes
    ----------
    summary : DataFrame
        Time per label (see :func:`summarize_segments`).
    summary_csv : Path
    timelines : tuple of Path
    """

    summary: pd.DataFrame
    summary_csv: Path
    timelines: tuple[Path, ...]


def _is_report(directory: Path) -> bool:
    return all(p.is_file() and _REPORT_FILE.fullmatch(p.name) for p in directory.iterdir())


def write_report(
    predictions_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> Report:
    """Summarize and draw the segments of an inference output directory.

    Parameters
    ----------
    predictions_dir : path-like
        A directory written by ``taskclf infer`` (it reads ``segments.json``).
    out_dir : path-like
        Where ``summary.csv`` and the timeline pictures go: absent, empty
        or an earlier report (replaced as a whole).

    Returns
    -------
    Report

    Raises
    ------
    ReaderError
        If ``segments.json`` is missing or malformed, or matplotlib is
        missing.
    NotOursError
        If ``out_dir`` holds other files than a report's.
    """
    source = Path(predictions_dir)
    segments_path = source / SEGMENTS_FILE
    if not source.is_dir():
        raise ReaderError(f"predictions directory {str(source)!r} does not exist")
    if not segments_path.is_file():
        raise ReaderError(
            f"predictions directory {str(source)!r} has no {SEGMENTS_FILE} "
            "(write one with taskclf infer)"
        )
    segments = read_segments_json(segments_path)
    out = Path(out_dir)
    summary = summarize_segments(segments)
    with atomic_directory(out, _is_report, "taskclf report") as staging:
        names = [path.name for path in plot_timelines(segments, staging)]
        summary.to_csv(staging / SUMMARY_FILE, index=False)
    timelines = tuple(out / name for name in names)
    return Report(summary=summary, summary_csv=out / SUMMARY_FILE, timelines=timelines)


__all__ = [
    "LABEL_COLORS",
    "Report",
    "plot_timelines",
    "segments_frame",
    "split_by_day",
    "summarize_segments",
    "write_report",
]
