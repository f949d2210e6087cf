"""Reports on inference output: time per label per user and day, and timeline pictures.

:func:`write_report` writes the files that docs/cli.md lists under "report". Pictures are
drawn on matplotlib's Agg canvas directly (no pyplot, no change to the caller's backend);
matplotlib is the ``report`` extra: ``pip install 'taskclf[report]'``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, MAPPED_LABEL, SEGMENT_ID, TRUE_LABEL, USER_ID
from taskclf._io import atomic_directory, atomic_path, read_regular_file
from taskclf._readers import PREDICTIONS_FILE
from taskclf.core.defaults import DEFAULT_IDLE_GAP_SECONDS
from taskclf.core.types import CLASS_ORDER, LABEL_COLORS, MIXED_UNKNOWN
from taskclf.exceptions import InputError, ReaderError
from taskclf.stages._timeline import shared_timelines
from taskclf.stages.segment import Segment, frame_to_segments, number_runs
from taskclf.workflows import VIEWS

ROWS_PER_PICTURE: Final = 40
"""Most user-days drawn in one picture; more go into numbered pictures."""
MAX_PREDICTIONS_BYTES: Final = 2**31
"""Largest ``predictions.csv`` a report reads."""

_OTHER_COLORS: Final = ("#882255", "#44AA99", "#332288", "#DDCC77", "#117733", "#AA4499")
_NO_USER: Final = "(all)"
_REPORT_FILE: Final = re.compile(r"(summary|per_user|per_day)\.csv|timeline(-\d+)?\.png")
_BARS: Final = {"label": (-0.03, 0.38), TRUE_LABEL: (-0.36, 0.16), "rejected": (-0.03, 0.38)}
"""Centre (from a picture row's centre) and height of the bars of each kind of pieces."""
_HATCH: Final = {"fill": False, "hatch": "////", "edgecolor": "#222222", "lw": 0}


def read_predictions(path: str | os.PathLike[str], view: str = "core") -> pd.DataFrame:
    """The minutes of a ``predictions.csv`` with the label of ``view``, by user and time."""
    if view not in VIEWS:
        raise InputError(f"view must be one of {VIEWS}, got {view!r}")
    data = read_regular_file(path, MAX_PREDICTIONS_BYTES, "predictions file")
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except ValueError as exc:  # pandas' ParserError too
        raise ReaderError(f"predictions file {str(path)!r} is not a CSV file: {exc}") from None
    source = MAPPED_LABEL if view == "mapped" else "predicted_label"
    if view == "mapped" and MAPPED_LABEL not in frame:
        raise InputError(
            f"{str(path)!r} has no {MAPPED_LABEL!r} column: run taskclf infer with --taxonomy"
        )
    missing = [c for c in (BUCKET_START_TS, source, "confidence", "is_rejected") if c not in frame]
    if missing:
        raise ReaderError(f"predictions file {str(path)!r} lacks the columns {missing}")
    out = pd.DataFrame(
        {
            BUCKET_START_TS: pd.to_datetime(frame[BUCKET_START_TS], utc=True),
            USER_ID: frame[USER_ID].astype(str) if USER_ID in frame else _NO_USER,
            "label": frame[source].astype(str),
            "confidence": frame["confidence"].astype(float),
            "is_rejected": frame["is_rejected"].astype(str).str.lower().eq("true"),
        }
    )
    if view == "core" and TRUE_LABEL in frame:
        out[TRUE_LABEL] = frame[TRUE_LABEL].astype(str)
    return out.sort_values([USER_ID, BUCKET_START_TS], kind="stable").reset_index(drop=True)


def runs(minutes: pd.DataFrame, column: str, bucket_seconds: int) -> list[Segment]:
    """The segments of ``column``: runs of equal values, cut at gaps as the pipeline cuts."""
    ids = number_runs(minutes, pd.factorize(minutes[column])[0], DEFAULT_IDLE_GAP_SECONDS)
    frame = minutes[[BUCKET_START_TS, USER_ID, column]].assign(**{SEGMENT_ID: ids})
    return frame_to_segments(frame, bucket_seconds=bucket_seconds, label_column=column)


def segments_frame(segments: Sequence[Segment]) -> pd.DataFrame:
    """Segments as a frame: ``user_id``, ``label``, ``start``, ``end``, ``minutes``."""
    frame = pd.DataFrame(
        {
            USER_ID: [_NO_USER if s.user_id is None else str(s.user_id) for s in segments],
            "label": [s.label for s in segments],
            "start": pd.to_datetime([s.start_ts for s in segments], utc=True),
            "end": pd.to_datetime([s.end_ts for s in segments], utc=True),
        }
    )
    frame["minutes"] = (frame["end"] - frame["start"]).dt.total_seconds() / 60.0
    return frame


def summarize_segments(segments: Sequence[Segment]) -> pd.DataFrame:
    """Time per label over all segments: a row per label, most time first, with ``label``,
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
    grouped = segments_frame(segments).groupby("label", sort=False)["minutes"]
    out = pd.DataFrame({"segments": grouped.size(), "minutes": grouped.sum()})
    total = float(out["minutes"].sum())
    out["share"] = (out["minutes"] / total * 100.0).round(2) if total > 0 else 0.0
    out = out.sort_values(["minutes", "segments"], ascending=False, kind="stable")
    return out.assign(minutes=out["minutes"].round(2)).reset_index()


def split_by_day(frame: pd.DataFrame) -> pd.DataFrame:
    """Cut segments at UTC midnight; add ``day`` and start/end hours of that day."""
    first = frame["start"].dt.floor("D")
    last = (frame["end"] - pd.Timedelta(1)).dt.floor("D")  # the day of the last instant
    rows = np.repeat(np.arange(len(frame)), (last - first).dt.days.to_numpy(np.int64) + 1)
    out = frame.iloc[rows].reset_index(drop=True)
    day = first.iloc[rows].reset_index(drop=True)
    day += pd.to_timedelta(out.groupby(rows).cumcount(), unit="D")
    midnight = day + pd.Timedelta(days=1)
    out["start"] = out["start"].where(out["start"] > day, day)
    out["end"] = out["end"].where(out["end"] < midnight, midnight)
    out["day"] = day.dt.date
    out["start_h"] = (out["start"] - day).dt.total_seconds() / 3600.0
    out["end_h"] = (out["end"] - day).dt.total_seconds() / 3600.0
    out["minutes"] = (out["end"] - out["start"]).dt.total_seconds() / 60.0
    return out.sort_values([USER_ID, "day", "start"], kind="stable").reset_index(drop=True)


def time_table(pieces: pd.DataFrame, minutes: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per group of ``by`` (``user_id``, ``day``) of the segments cut per day and
    the minutes (with ``day``): the columns of ``per_user.csv`` that docs/cli.md lists."""
    keys = list(by)
    previous = pieces.groupby([USER_ID, "day"])["label"].shift()
    switched = pieces["label"].ne(previous) & previous.notna()
    table = pieces.groupby(keys).agg(minutes=("minutes", "sum"), segments=("label", "size"))
    switches = switched.groupby([pieces[k] for k in keys]).sum()
    table["switches_per_hour"] = (switches / (table["minutes"] / 60.0)).round(3)
    rates = minutes[keys].assign(reject_rate=minutes["is_rejected"])
    if TRUE_LABEL in minutes:
        rates["accuracy"] = minutes["label"].eq(minutes[TRUE_LABEL])
    table = table.join(rates.groupby(keys).mean().round(4))
    per_label = pieces.pivot_table("minutes", index=keys, columns="label", aggfunc="sum")
    per_label = per_label[_ordered(per_label.columns)].fillna(0.0)
    share = per_label.div(per_label.sum(axis=1), axis=0) * 100.0
    table["minutes"] = table["minutes"].round(2)
    parts = [table, per_label.round(2).add_prefix("minutes_"), share.round(2).add_prefix("share_")]
    return pd.concat(parts, axis=1).reset_index()


def _ordered(labels: Iterable[str]) -> list[str]:
    """The core labels in class order, then other labels (buckets) sorted."""
    present = set(labels)
    known = [label for label in (*CLASS_ORDER, MIXED_UNKNOWN) if label in present]
    return known + sorted(present - set(known))


def _rows(pieces: pd.DataFrame, keys: list[tuple[str, object]]) -> np.ndarray:
    """The picture row of each of ``pieces`` (its user-day's place in ``keys``; -1: not drawn)."""
    found = pd.MultiIndex.from_arrays([pieces[USER_ID], pieces["day"]])
    return pd.Index(keys).get_indexer(found).astype(float)


def _draw(
    ax: Any, pieces: dict[str, pd.DataFrame], minutes: pd.DataFrame, keys: list[tuple[str, object]]
) -> None:
    """Draw a row per user-day of ``keys`` on ``ax`` (docs/cli.md says what it shows)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    predicted = pieces["label"]
    labels = _ordered({*predicted["label"], *pieces.get(TRUE_LABEL, predicted)["label"]})
    extra = iter(_OTHER_COLORS * (1 + len(labels) // len(_OTHER_COLORS)))  # for buckets
    colors = {label: LABEL_COLORS.get(label) or next(extra) for label in labels}
    spans = predicted.groupby(_rows(predicted, keys)).agg({"start_h": "min", "end_h": "max"})
    ax.hlines(spans.index, spans["start_h"], spans["end_h"], color="#555555", lw=0.6)
    for name in (name for name in _BARS if name in pieces):
        rows = _rows(pieces[name], keys)
        shown = pieces[name].assign(row=rows)[rows >= 0]
        # label by label in legend order: Mixed/Unknown's outlines lie on top of the other bars
        order = pd.Index(labels).get_indexer(pd.Index(shown["label"]))
        shown = shown.iloc[np.argsort(order, kind="stable")]
        edges = np.where(shown["label"] == MIXED_UNKNOWN, "#777777", "none")
        style = {"color": shown["label"].map(colors).tolist(), "edgecolor": edges, "lw": 0.4}
        ax.barh(shown["row"] + _BARS[name][0], shown["end_h"] - shown["start_h"],
                left=shown["start_h"], height=_BARS[name][1],
                **(_HATCH if name == "rejected" else style))  # fmt: skip
    rows = _rows(minutes, keys)
    shown = minutes[rows >= 0]
    # The confidence ribbon: two points per minute and a break after each, so gaps stay empty.
    x = np.column_stack([shown["start_h"], shown["start_h"] + shown["width_h"], shown["start_h"]])
    top = np.column_stack([shown["confidence"], shown["confidence"], np.full(len(shown), np.nan)])
    base = np.repeat(rows[rows >= 0] + 0.45, 3)
    ax.fill_between(x.ravel(), base, base - 0.24 * top.ravel(), color="#666666", alpha=0.5, lw=0)
    ax.set_yticks(range(len(keys)), [f"{u}  {d}" for u, d in keys])
    low = float(np.floor(predicted["start_h"].min())) if len(predicted) else 0.0
    high = float(np.ceil(predicted["end_h"].max())) if len(predicted) else 24.0
    ax.set_xlim(max(low - 0.5, 0.0), min(high + 0.5, 24.0))
    ax.set(ylim=(len(keys) - 0.5, -0.5), xlabel="hour of day (UTC)")
    ax.grid(axis="x", alpha=0.3)
    handles: list[Any] = [Patch(facecolor=colors[n], edgecolor="#777777", label=n) for n in labels]
    handles += [
        Patch(fill=False, hatch="////", label="rejected (unsure)"),
        Line2D([], [], color="#555555", lw=0.6, label="gap (no rows)"),
        Patch(color="#666666", alpha=0.5, label="confidence (ribbon)"),
    ]
    if TRUE_LABEL in pieces:
        handles.append(Patch(color="white", label="top strip: true label"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize="small")  # fmt: skip


@contextlib.contextmanager
def _picture(path: Path, width: float, height: float) -> Iterator[Any]:
    """Axes to draw on, on matplotlib's Agg canvas (no pyplot); saved to ``path`` at the end."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReaderError("drawing needs matplotlib: pip install 'taskclf[report]'") from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    yield figure.add_subplot()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def draw_evaluation(pooled: dict[str, Any], directory: Path) -> None:
    """Draw the ``pooled`` figures of :func:`taskclf.metrics.evaluate` into ``directory``:
    ``confusion.png``, ``reliability.png`` and ``coverage.png``."""
    matrix = pooled["label"]["confusion_matrix"]
    names, counts = matrix["labels"], np.asarray(matrix["counts"], dtype=float)
    with _picture(directory / "confusion.png", 7, 6) as ax:
        ax.imshow(counts, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (final labels)")
        for i, j in zip(*np.nonzero(counts), strict=True):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7)
    with _picture(directory / "reliability.png", 5, 5) as ax:
        bins = pd.DataFrame(pooled["reliability"])
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.plot(bins["confidence"], bins["accuracy"], marker="o")
        ax.set(xlabel="mean confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
               title=f"Reliability (ECE {pooled['ece']:.3f})")  # fmt: skip
    with _picture(directory / "coverage.png", 5, 4) as ax:
        curve = pd.DataFrame(pooled["coverage_accuracy"])
        ax.plot(curve["coverage"], curve["accuracy"], marker=".")
        ax.set(xlabel="coverage (share of rows kept)", ylabel="accuracy of kept rows",
               title="Coverage and accuracy over thresholds")  # fmt: skip


def plot_timelines(
    pieces: dict[str, pd.DataFrame], minutes: pd.DataFrame, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Draw the timelines into PNG files in ``out_dir``.

    Parameters
    ----------
    pieces : dict of str to DataFrame
        Segments cut per day (:func:`split_by_day`): ``"label"`` (the predictions),
        ``"rejected"`` (runs of rejected minutes) and, optionally, ``"true_label"``.
    minutes : DataFrame
        The minutes with ``day``, ``start_h`` and ``width_h``.

    Returns
    -------
    list of Path
        ``timeline.png``, or ``timeline-01.png``, ``timeline-02.png``, ...
        when there are more than :data:`ROWS_PER_PICTURE` user-days.
    """
    keys = list(dict.fromkeys(zip(pieces["label"][USER_ID], pieces["label"]["day"])))
    pages = [keys[i : i + ROWS_PER_PICTURE] for i in range(0, max(len(keys), 1), ROWS_PER_PICTURE)]
    paths, many = [], len(pages) > 1
    for number, page in enumerate(pages, start=1):
        paths.append(Path(out_dir) / (f"timeline-{number:02d}.png" if many else "timeline.png"))
        with _picture(paths[-1], 12, max(4.2, 1.4 + 0.6 * len(page))) as ax:
            _draw(ax, pieces, minutes, page)
            suffix = f" ({number}/{len(pages)})" if many else ""
            ax.set_title(f"taskclf timelines per user and day{suffix}")
    return paths


@attrs.frozen
class Report:
    """What :func:`write_report` produced.

    Attributes
    ----------
    summary, per_user, per_day : DataFrame
        Time per label (:func:`summarize_segments`), per user and per user and day.
    files : tuple of Path
        Every file written.
    """

    summary: pd.DataFrame
    per_user: pd.DataFrame
    per_day: pd.DataFrame
    files: tuple[Path, ...]


def _is_report(directory: Path) -> bool:
    return all(p.is_file() and _REPORT_FILE.fullmatch(p.name) for p in directory.iterdir())


def write_report(
    predictions_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, view: str = "core"
) -> Report:
    """Tables and timeline pictures of an inference output directory.

    Parameters
    ----------
    predictions_dir : path-like
        A directory written by ``taskclf infer`` (it reads ``predictions.csv``).
    out_dir : path-like
        Where the report goes: absent, empty or an earlier report (replaced as a whole).
    view : {"core", "mapped"}, default "core"
        Count the core labels, or the buckets of the run's taxonomy.

    Raises
    ------
    ReaderError
        If ``predictions.csv`` is missing or malformed, or matplotlib is missing.
    NotOursError
        If ``out_dir`` holds other files than a report's.
    """
    minutes = read_predictions(Path(predictions_dir) / PREDICTIONS_FILE, view)
    steps = minutes.groupby(USER_ID)[BUCKET_START_TS].diff().dt.total_seconds()
    width = int(steps[steps > 0].mode().min()) if (steps > 0).any() else 60  # the usual step
    day = minutes[BUCKET_START_TS].dt.floor("D")
    minutes = minutes.assign(
        day=day.dt.date,
        start_h=(minutes[BUCKET_START_TS] - day).dt.total_seconds() / 3600.0,
        width_h=width / 3600.0,
        rejected=minutes["is_rejected"].map({True: "rejected", False: ""}),
    )
    columns = [name for name in ("label", TRUE_LABEL, "rejected") if name in minutes]
    with shared_timelines():  # the three kinds of run share one split into timelines
        segments = {name: runs(minutes, name, width) for name in columns}
    pieces = {name: split_by_day(segments_frame(found)) for name, found in segments.items()}
    pieces["rejected"] = pieces["rejected"][pieces["rejected"]["label"] == "rejected"]
    summary = summarize_segments(segments["label"])
    per_user = time_table(pieces["label"], minutes, [USER_ID])
    per_day = time_table(pieces["label"], minutes, [USER_ID, "day"])
    out = Path(out_dir)
    with atomic_directory(out, _is_report, "taskclf report") as staging:
        names = [path.name for path in plot_timelines(pieces, minutes, staging)]
        for name, table in (("summary", summary), ("per_user", per_user), ("per_day", per_day)):
            table.to_csv(staging / f"{name}.csv", index=False)
            names.append(f"{name}.csv")
    return Report(summary, per_user, per_day, tuple(out / name for name in sorted(names)))


__all__ = [
    "Report",
    "VIEWS",
    "draw_evaluation",
    "plot_timelines",
    "read_predictions",
    "segments_frame",
    "split_by_day",
    "summarize_segments",
    "time_table",
    "write_report",
]
