"""Synthetic per-minute activity frames with task labels, for tests, benchmarks and demos.

Everything is drawn from one ``numpy.random.Generator``; loops never run over rows.
"""

from __future__ import annotations

import bisect
import math
import reprlib
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from numpy.random import Generator

from taskclf._columns import LABEL
from taskclf.core.defaults import DEFAULT_BUCKET_SECONDS, DEFAULT_IDLE_GAP_SECONDS
from taskclf.core.schema import SKETCH_COLUMNS, FeatureSchema, get_schema
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InvalidParameterError
from taskclf.stages._base import check_value, integer, optional, real

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

SOURCE_IDS: Final[tuple[str, ...]] = ("taskclf.synth",)
"""The value of every row's ``source_ids`` cell (one shared tuple)."""

NON_BROWSER_DOMAIN: Final = "non_browser"
"""``domain_category`` of rows whose foreground app is not a browser."""

UNSEEN_APP_PREFIX: Final = "app_x"
"""Prefix of the app ids drawn for the ``unseen_app_rate`` rows."""

_N_LABELS: Final = len(CLASS_ORDER)
_BREAK, _MEET = CLASS_ORDER.index("BreakIdle"), CLASS_ORDER.index("Meet")
_AWAY: Final = -1  # segment label of time away from the computer (no rows)

# Every table below has one weight or value per label, in CLASS_ORDER:
#   BreakIdle, Build, Communicate, Debug, Meet, ReadResearch, Review, Write.

# App id, category (is_browser/is_editor/is_terminal follow it), and the
# relative weight of the app while working on each label.
_APPS: Final = (
    ("com.microsoft.VSCode", "editor", (0.5, 5, 0, 3, 0, 0, 2, 1.5)),
    ("com.jetbrains.pycharm", "editor", (0, 3, 0, 3, 0, 0, 1, 0)),
    ("com.sublimetext.4", "editor", (0, 1, 0, 0, 0, 0, 0, 0.5)),
    ("com.apple.Terminal", "terminal", (0, 2, 0, 3, 0, 0, 0.5, 0)),
    ("com.googlecode.iterm2", "terminal", (0, 2, 0, 2.5, 0, 0, 0, 0)),
    ("com.google.Chrome", "browser", (2, 1.5, 1, 2, 1, 5, 4, 1)),
    ("org.mozilla.firefox", "browser", (0, 0.5, 0, 0.7, 0, 2, 1.5, 0)),
    ("com.apple.Safari", "browser", (1, 0, 0, 0.2, 0, 1.5, 0.5, 0)),
    ("com.tinyspeck.slackmacgap", "chat", (1, 0, 5, 0, 0.5, 0, 0, 0)),
    ("com.microsoft.teams2", "meeting", (0, 0, 2, 0, 3, 0, 0, 0)),
    ("us.zoom.xos", "meeting", (0, 0, 0, 0, 5, 0, 0, 0)),
    ("com.microsoft.Outlook", "email", (0, 0, 3, 0, 0, 0, 0, 0.3)),
    ("com.apple.mail", "email", (0.5, 0, 2, 0, 0, 0, 0, 0)),
    ("com.microsoft.Word", "docs", (0, 0, 0, 0, 0, 0, 0, 3)),
    ("notion.id", "docs", (0, 0, 0, 0, 0, 0.5, 0, 3)),
    ("md.obsidian", "notes", (0, 0, 0, 0, 0, 0.3, 0, 2)),
    ("com.apple.Preview", "viewer", (0, 0, 0, 0, 0, 2, 0, 0)),
    ("com.postmanlabs.mac", "devtools", (0, 0.3, 0, 0.8, 0, 0, 0, 0)),
    ("com.github.GitHubClient", "devtools", (0, 0.3, 0, 0, 0, 0, 2, 0)),
    ("com.apple.finder", "system", (1, 0, 0, 0, 0, 0, 0, 0)),
    ("com.spotify.client", "media", (2, 0, 0, 0, 0, 0, 0, 0)),
)
_UNSEEN_CATEGORIES: Final = ("other", "utility", "devtools", "media", "game")
_FLAG_CATEGORIES: Final = ("browser", "editor", "terminal")  # is_browser, ...

# Domain category of browser rows and its weight per label.
_DOMAINS: Final = {
    "code_hosting": (0, 1.5, 0, 1, 0, 0, 6, 0),
    "docs": (0, 3, 0, 2, 0, 3, 1, 3),
    "search": (0, 2, 0, 3, 0, 2, 0, 1),
    "qa_forum": (0, 2, 0, 4, 0, 1, 0, 0),
    "news": (3, 0, 0, 0, 0, 1, 0, 0),
    "social": (3, 0, 1, 0, 0, 0, 0, 0),
    "webmail": (0, 0, 3, 0, 0, 0, 0, 0),
    "chat": (0, 0, 3, 0, 1, 0, 0, 0),
    "video": (2, 0, 0, 0, 0, 0, 0, 0),
    "research": (0, 0, 0, 0, 0, 3, 0, 1),
    "shopping": (2, 0, 0, 0, 0, 0, 0, 0),
    "video_call": (0, 0, 0, 0, 5, 0, 0, 0),
    "other": (0.3,) * 8,
}

# Relative weight of moving from one label (row) to another (column); a
# segment never continues with its own label.
_TRANSITIONS: Final = np.array(
    [
        [0, 2, 3, 1, 1, 1, 1, 1],
        [2, 0, 1.5, 4, 0.5, 2, 1, 0.5],
        [2, 2, 0, 1, 1.5, 1, 1.5, 1],
        [2, 5, 1, 0, 0.3, 2, 0.5, 0.3],
        [3, 1.5, 3, 0.5, 0, 0.5, 0.5, 1.5],
        [2, 2.5, 1, 1, 0.3, 0, 0.5, 2],
        [2, 2, 2, 1, 0.5, 1, 0, 0.5],
        [2, 1, 2, 0.3, 0.5, 2, 1, 0],
    ]
)
# A segment may look like another task (row: its label, column: the label
# its features are drawn from): the user labelled by intent, not by what
# was on screen. This is the irreducible error a model cannot remove.
_LOOKALIKE: Final = np.array(
    [
        [0, 0, 1, 0, 1, 2, 0, 0],
        [0, 0, 0, 3, 0, 0, 1, 1],
        [1, 0, 0, 0, 1, 0, 0, 2],
        [0, 3, 0, 0, 0, 1, 1, 0],
        [1, 0, 2, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 2, 1],
        [0, 1, 0, 1, 0, 2, 0, 0],
        [0, 1, 2, 0, 0, 1, 0, 0],
    ]
)
# Typical values per label: segment length (log-normal median in minutes
# and sigma); per-minute keys, clicks, scroll events, mouse distance (px),
# backspace ratio and shortcut rate; chances of a minute without keys and
# without mouse; app switches per minute; chance that a row shows the
# segment's main app; window title length, digit ratio and separators.
_PROFILE: Final = {
    name: np.array(values, dtype=np.float64)
    for name, values in {
        "dwell": (5, 25, 8, 18, 40, 14, 12, 22),
        "dwell_sigma": (0.6, 0.7, 0.7, 0.7, 0.3, 0.7, 0.6, 0.7),
        "keys": (4, 110, 85, 65, 10, 12, 30, 140),
        "clicks": (3, 8, 10, 14, 3, 9, 12, 4),
        "scroll": (8, 12, 18, 22, 4, 70, 45, 10),
        "mouse": (900, 2200, 2200, 3200, 700, 3000, 2800, 1000),
        "backspace": (0.04, 0.12, 0.10, 0.10, 0.06, 0.06, 0.07, 0.16),
        "shortcut": (0.01, 0.08, 0.04, 0.12, 0.01, 0.02, 0.05, 0.03),
        "p_no_keys": (0.80, 0.10, 0.15, 0.15, 0.65, 0.55, 0.30, 0.05),
        "p_no_mouse": (0.55, 0.15, 0.10, 0.10, 0.40, 0.05, 0.05, 0.30),
        "switch_rate": (0.4, 0.6, 1.3, 1.0, 0.2, 0.5, 0.7, 0.3),
        "stay": (0.4, 0.6, 0.5, 0.5, 0.85, 0.7, 0.6, 0.75),
        "title_chars": (30, 45, 35, 55, 25, 70, 60, 40),
        "title_digits": (0.02, 0.02, 0.01, 0.08, 0.01, 0.02, 0.05, 0.01),
        "title_separators": (1.5, 3.0, 1.5, 3.5, 1.0, 2.0, 2.5, 1.0),
    }.items()
}
_LOOKALIKE_SHARE: Final = 0.2  # share of segments that look like another task at noise 1
_MAX_LOOKALIKE_SHARE: Final = 0.75
_MAX_DWELL_MINUTES: Final = 240
_MEET_GRID_MINUTES: Final = 15  # meetings last whole quarter hours
_AWAY_SHARE: Final = 0.3  # share of breaks spent away from the computer
_AWAY_MINUTES: Final = (6, 45)  # away gaps, minutes without rows (> idle gap)
_DROP_RATE: Final = 0.003  # isolated buckets the collector missed (short gaps)
_DAY_START, _DAY_END = 8 * 60 + 30, 18 * 60  # minutes after midnight, UTC
_IDLE_GAP_MINUTES: Final = DEFAULT_IDLE_GAP_SECONDS // 60  # a longer gap starts a session
_SKETCH_ACTIVE: Final = 48  # sketch coordinates a label's mean title pattern uses


class _Rows:
    """Each user's task chain laid over their working minutes: the rows in output order
    (``user``, ``day``, ``minute`` since the epoch, ``segment``, ``is_start`` of a session,
    ``session``, its ``start_row``) and the segments (``segment_user``, ``segment_label``)."""

    def __init__(
        self, rng: Generator, n_users: int, midnights: IntArray, minutes_per_day: int | None
    ) -> None:
        self.n_users, self.n_days = n_users, len(midnights)
        days: list[np.ndarray] = []
        minutes: list[np.ndarray] = []
        segments: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        n_segments = 0
        for user in range(n_users):
            start, length, lunch_at, lunch_len = _working_days(rng, self.n_days, minutes_per_day)
            total = int(length.sum())
            label, seg_length = _segments(rng, total)
            segment = np.repeat(np.arange(len(label)), seg_length)[:total]
            day = np.repeat(np.arange(self.n_days), length)
            offset = np.arange(total) - np.repeat(np.cumsum(length) - length, length)
            since_lunch = offset - lunch_at[day]
            at_lunch = (since_lunch >= 0) & (since_lunch < lunch_len[day])
            keep = (label[segment] != _AWAY) & ~at_lunch & (rng.random(total) >= _DROP_RATE)
            days.append(day[keep] + user * self.n_days)
            minutes.append(midnights[day[keep]] + start[day[keep]] + offset[keep])
            segments.append(segment[keep] + n_segments)
            labels.append(label)
            n_segments += len(label)
        self.day, self.minute, self.segment, self.segment_label = map(
            _join, (days, minutes, segments, labels)
        )
        self.segment_user = np.repeat(np.arange(n_users), [len(label) for label in labels])
        self.user = self.segment_user[self.segment]
        self.is_start = np.ones(len(self.user), dtype=np.bool_)
        self.is_start[1:] = (np.diff(self.user) != 0) | (np.diff(self.minute) > _IDLE_GAP_MINUTES)
        self.session = np.cumsum(self.is_start) - 1
        self.start_row = np.flatnonzero(self.is_start)[self.session]


def _cumulative(weights: FloatArray) -> FloatArray:
    """Row-normalized cumulative sums; the last column is exactly 1."""
    cum = np.cumsum(weights, axis=-1)
    return cum / cum[..., -1:]


def _draw_grouped(rng: Generator, cum: FloatArray, group: IntArray) -> IntArray:
    """Draw element ``i`` from row ``group[i]`` of ``cum`` in one ``searchsorted``."""
    n_groups, n_cats = cum.shape
    flat = (cum + np.arange(n_groups)[:, None]).ravel()
    found = np.searchsorted(flat, group + rng.random(len(group)), side="right")
    return np.minimum(found - group * n_cats, n_cats - 1)


def _lognormal(rng: Generator, sigma: float, size: int | tuple[int, ...]) -> FloatArray:
    """Multiplicative noise with median 1 (exactly 1 when ``sigma`` is 0)."""
    return np.exp(sigma * rng.standard_normal(size))


def _join(parts: Sequence[np.ndarray]) -> IntArray:
    """Concatenate int arrays; an empty list gives an empty int64 array."""
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def _previous(values: np.ndarray, rows: _Rows) -> np.ndarray:
    """The previous row's value within the session (the row's own at a start)."""
    prev = np.roll(values, 1)
    prev[rows.is_start] = values[rows.is_start]
    return prev


def _window_sum(values: np.ndarray, rows: _Rows, window: int) -> FloatArray:
    """Sum of the last ``window`` values of the session, this one included."""
    cum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    i = np.arange(len(values))
    return cum[i + 1] - cum[np.maximum(i - window + 1, rows.start_row)]


def _take(values: tuple[str, ...] | list[str], codes: IntArray) -> pd.Series:
    """``values[codes]`` as an object column of shared ``str`` objects."""
    return pd.Series(np.array(values, dtype=object)[codes], dtype=object, copy=False)


def make_activity_frame(
    n_users: int = 5,
    n_days: int = 5,
    *,
    schema_version: str = "v1",
    start: str = "2025-03-03",
    minutes_per_day: int | None = None,
    missing_rate: float = 0.01,
    unseen_app_rate: float = 0.02,
    noise: float = 1.0,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Make a labelled synthetic feature frame: one row per user and minute at the computer.

    Each user follows their own Markov chain over the eight labels with
    log-normal dwell times; lunch and some breaks leave no rows (a gap over
    the idle gap starts a new ``session_id``); some segments are drawn as a
    confusable label (users label by intent, not by what is on screen).

    Parameters
    ----------
    n_users, n_days : int
        Users ``user_000``, ``user_001``, ..., each working the first
        ``n_days`` weekdays from ``start`` (a UTC date).
    schema_version : {"v1", "v2", "v3"}, default "v1"
        A v2 frame holds the v1 columns (one ``user_id``); v3 adds the title columns.
    minutes_per_day : int or None, default None
        Working day length, 10 to 840 minutes; None draws it (about 8:30 to 18:00 UTC).
    missing_rate, unseen_app_rate : float
        Share of each float column set to NaN (v3: of rows whose whole sketch is;
        never ``session_length_so_far``), and of rows with a rare ``app_x`` app.
    noise : float, default 1.0
        Spread of features around each label's typical values and of the
        share of look-alike segments (0: none).
    random_state : int or None, default 0
        Seed of ``numpy.random.default_rng``: the same seed gives the same frame.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``user_id`` then ``bucket_start_ts``; registry columns (v2:
        ``user_id`` first), then ``label``. Text is object dtype, timestamps
        ``datetime64[ns, UTC]``, ``source_ids`` the shared tuple :data:`SOURCE_IDS`.

    Raises
    ------
    InvalidParameterError, SchemaMismatchError
        An argument out of range; an unknown ``schema_version``.

    Examples
    --------
    >>> df = make_activity_frame(n_users=2, n_days=1, random_state=0)
    >>> df.columns[-1], df["schema_version"].iloc[0], df["user_id"].nunique()
    ('label', 'v1', 2)
    """
    schema = get_schema(schema_version)
    for name, value, rule in (
        ("n_users", n_users, integer(0, 100_000)),
        ("n_days", n_days, integer(0, 3_660)),
        ("minutes_per_day", minutes_per_day, optional(integer(10, 840))),
        ("missing_rate", missing_rate, real(0.0, 1.0)),
        ("unseen_app_rate", unseen_app_rate, real(0.0, 1.0)),
        ("noise", noise, real(0.0, math.inf, open_high=True)),
    ):
        check_value(value, rule, name, "make_activity_frame")
    try:
        first = pd.Timestamp(start)
        first = first.tz_convert("UTC").tz_localize(None) if first.tzinfo else first
        days = pd.bdate_range(first, periods=n_days, normalize=True).as_unit("ns")
    except (TypeError, ValueError) as error:
        raise InvalidParameterError(f"start must be a date, got {reprlib.repr(start)}") from error
    rng = np.random.default_rng(random_state)
    rows = _Rows(rng, n_users, days.asi8 // (60 * 10**9), minutes_per_day)
    columns = _features(rng, rows, unseen_app_rate, noise, schema.version == "v3")
    if missing_rate > 0:  # a hit in the sketch block blanks the row's whole sketch
        for name, values in columns.items():
            if values.dtype == np.float64 and name != "session_length_so_far":
                values[rng.random(len(values)) < missing_rate] = np.nan
    return _assemble(rng, columns, rows, schema)


def _working_days(
    rng: Generator, n_days: int, minutes_per_day: int | None
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """One user's days: start (minutes after midnight), length, lunch start and length."""
    start_draw = _DAY_START + rng.normal(0.0, 20.0) + rng.normal(0, 10, n_days)
    start = np.round(np.clip(start_draw, 420, 600)).astype(np.int64)
    user_end = rng.normal(0.0, 30.0)
    if minutes_per_day is None:
        end = np.clip(_DAY_END + user_end + rng.normal(0, 15, n_days), start + 240, 1260)
        length = np.round(end).astype(np.int64) - start
    else:
        length = np.full(n_days, minutes_per_day, dtype=np.int64)
    lunch_at = np.round(length * rng.uniform(0.4, 0.5, n_days)).astype(np.int64)
    lunch_len = np.round(rng.uniform(30, 60, n_days) * np.minimum(1.0, length / 480))
    lunch_len[lunch_len < 6] = 0  # too short a day for a lunch break
    return start, length, lunch_at, lunch_len.astype(np.int64)


def _segments(rng: Generator, total: int) -> tuple[IntArray, IntArray]:
    """One user's task segments (labels, lengths) over ``total`` minutes, by their own habits."""
    chain = _cumulative(_TRANSITIONS * rng.gamma(3.0, 1.0 / 3.0, _TRANSITIONS.shape)).tolist()
    dwell_scale = np.exp(rng.normal(0.0, 0.2))
    labels, lengths = [], []
    state, filled = int(rng.integers(_N_LABELS)), 0
    while filled < total:
        steps = max(16, (total - filled) // 8)
        chunk = []
        for u in rng.random(steps).tolist():  # the chain: one step per segment
            state = bisect.bisect_right(chain[state], u)
            chunk.append(state)
        label = np.array(chunk, dtype=np.int64)
        dwell = _PROFILE["dwell"][label] * dwell_scale
        minutes = dwell * _lognormal(rng, 1.0, steps) ** _PROFILE["dwell_sigma"][label]
        grid = np.maximum(1, np.round(minutes / _MEET_GRID_MINUTES)) * _MEET_GRID_MINUTES
        minutes = np.where(label == _MEET, grid, minutes)
        length = np.clip(np.round(minutes), 1, _MAX_DWELL_MINUTES).astype(np.int64)
        away = (label == _BREAK) & (rng.random(steps) < _AWAY_SHARE)
        label[away] = _AWAY
        length[away] = rng.integers(*_AWAY_MINUTES, endpoint=True, size=int(away.sum()))
        labels.append(label)
        lengths.append(length)
        filled += int(length.sum())
    return _join(labels), _join(lengths)


def _features(
    rng: Generator, rows: _Rows, unseen_app_rate: float, noise: float, v3: bool
) -> dict[str, Any]:
    """Every feature column (v3's sketch as one ``title_sketch`` block)."""
    n_segments = len(rows.segment_label)
    segment_label = np.maximum(rows.segment_label, 0)  # away segments have no rows
    lookalike = _draw_grouped(rng, _cumulative(_LOOKALIKE), segment_label)
    swapped = rng.random(n_segments) < min(_MAX_LOOKALIKE_SHARE, _LOOKALIKE_SHARE * noise)
    look = np.where(swapped, lookalike, segment_label)
    label = look[rows.segment]
    segment_pace = _lognormal(rng, 0.4 * noise, (n_segments, 4))[rows.segment]
    pace = _lognormal(rng, 0.25 * noise, (rows.n_users, 4))[rows.user] * segment_pace
    app, columns = _apps(rng, rows, look, unseen_app_rate)
    columns |= _activity(rng, label, pace, noise)
    columns |= _switching(
        rng, rows, app, segment_pace[:, 0] ** 0.5 * _PROFILE["switch_rate"][label], noise
    )
    columns |= _titles(rng, rows, look, noise, v3)
    true_label = rows.segment_label[rows.segment]
    columns |= {
        "idle_return_indicator": rows.is_start | (_previous(true_label, rows) == _BREAK),
        "hour_of_day": (rows.minute // 60) % 24,
        "day_of_week": (rows.minute // 1440 + 3) % 7,  # 1970-01-01 was a Thursday
        "session_length_so_far": (rows.minute - rows.minute[rows.start_row]).astype(np.float64),
    }
    count = np.arange(len(label)) - rows.start_row + 1
    for name in ("keys_per_min", "mouse_distance"):
        for window in (5, 15):
            total = _window_sum(columns[name], rows, window)
            columns[f"{name}_rolling_{window}"] = total / np.minimum(count, window)
    for name in ("keys_per_min", "clicks_per_min", "mouse_distance"):
        columns[f"{name}_delta"] = columns[name] - _previous(columns[name], rows)
    return columns


def _apps(
    rng: Generator, rows: _Rows, look: IntArray, unseen_app_rate: float
) -> tuple[IntArray, dict[str, Any]]:
    """Each row's app index, and the app and domain columns (a segment has a main app)."""
    n, n_apps, label = len(rows.user), len(_APPS), look[rows.segment]
    weights = np.array([w for _, _, w in _APPS], dtype=np.float64).T  # labels x apps
    taste = _lognormal(rng, 0.6, (rows.n_users, 1, n_apps))
    cum = _cumulative(weights * taste).reshape(-1, n_apps)
    main = _draw_grouped(rng, cum, rows.segment_user * _N_LABELS + look)
    other = _draw_grouped(rng, cum, rows.user * _N_LABELS + label)
    app = np.where(rng.random(n) < _PROFILE["stay"][label], main[rows.segment], other)
    unseen = np.flatnonzero(rng.random(n) < unseen_app_rate)
    pool = max(1, len(unseen))
    ids = rng.choice(16**7, size=pool, replace=False)  # distinct names
    names = [a for a, _, _ in _APPS] + [f"{UNSEEN_APP_PREFIX}{v:07x}" for v in ids.tolist()]
    pool_categories = rng.integers(0, len(_UNSEEN_CATEGORIES), pool).tolist()
    categories = [c for _, c, _ in _APPS] + [_UNSEEN_CATEGORIES[c] for c in pool_categories]
    app[unseen] = n_apps + rng.integers(0, pool, size=len(unseen))
    flags = (np.array(categories)[:, None] == np.array(_FLAG_CATEGORIES))[app]
    domain_cum = _cumulative(np.array(list(_DOMAINS.values()), dtype=np.float64).T)
    domain = np.where(flags[:, 0], _draw_grouped(rng, domain_cum, label), len(_DOMAINS))
    return app, {
        "app_id": _take(names, app),
        "app_category": _take(categories, app),
        "is_browser": flags[:, 0],
        "is_editor": flags[:, 1],
        "is_terminal": flags[:, 2],
        "domain_category": _take((*_DOMAINS, NON_BROWSER_DOMAIN), domain),
    }


def _activity(rng: Generator, label: IntArray, pace: FloatArray, noise: float) -> dict[str, Any]:
    """Keyboard and mouse columns: label rates scaled by user, segment and row."""
    n = len(label)

    def rate(name: str, k: int) -> FloatArray:
        return _PROFILE[name][label] * pace[:, k] * _lognormal(rng, 0.5 * noise, n)

    def ratio(name: str, sigma: float) -> FloatArray:
        return np.clip(_PROFILE[name][label] * _lognormal(rng, sigma * noise, n), 0, 1)

    no_keys = rng.random(n) < _PROFILE["p_no_keys"][label]
    no_mouse = rng.random(n) < _PROFILE["p_no_mouse"][label]
    keys = np.where(no_keys, 0.0, np.round(rate("keys", 0)))
    clicks = np.where(no_mouse, 0.0, np.round(rate("clicks", 1)))
    scroll = np.where(no_mouse, 0.0, np.round(rate("scroll", 2)))
    mouse = np.where(no_mouse, 0.0, np.round(rate("mouse", 3), 1))
    jitter = rng.uniform(0.85, 1.15, size=(n, 2)) if noise > 0 else np.ones((n, 2))
    keyboard = np.clip(60 * (1 - np.exp(-keys / 40)) * jitter[:, 0], 0, 60)
    effort = clicks * 3 + scroll + mouse / 300
    pointer = np.clip(60 * (1 - np.exp(-effort / 30)) * jitter[:, 1], 0, 60)
    active = np.minimum(60.0, np.maximum(keyboard, pointer) + 0.3 * np.minimum(keyboard, pointer))
    return {
        "keys_per_min": keys,
        "backspace_ratio": np.where(keys > 0, ratio("backspace", 0.4), 0.0),
        "shortcut_rate": np.where(keys > 0, ratio("shortcut", 0.5), 0.0),
        "clicks_per_min": clicks,
        "scroll_events_per_min": scroll,
        "mouse_distance": mouse,
        "active_seconds_keyboard": keyboard,
        "active_seconds_mouse": pointer,
        "active_seconds_any": active,
        "max_idle_run_seconds": np.clip((60 - active) * rng.uniform(0.5, 1.0, n), 0, 60),
        "event_density": (keys + clicks + scroll) / np.maximum(active, 1.0),
    }


def _switching(
    rng: Generator, rows: _Rows, app: IntArray, rate: FloatArray, noise: float
) -> dict[str, Any]:
    """App switching columns; ``rate`` is each row's expected switches besides an app change."""
    n, spread = len(app), 0.15 * noise
    changed = app != _previous(app, rows)
    switches = rng.poisson(rate) + changed
    last_5, last_15 = (_window_sum(switches, rows, w).astype(np.int64) for w in (5, 15))
    foreground = np.clip(1 - 0.12 * switches + 0.3 * spread * rng.standard_normal(n), 0.05, 1)
    run_start = np.maximum.accumulate(np.where(rows.is_start | changed, np.arange(n), 0))
    entropy_5 = 0.6 * np.log1p(last_5) * _lognormal(rng, spread, n)
    entropy_15 = 0.55 * np.log1p(last_15) * _lognormal(rng, spread, n)
    top2 = 1 - 0.035 * last_15 + 0.3 * spread * rng.standard_normal(n)
    return {
        "app_switch_count_last_5m": last_5,
        "app_foreground_time_ratio": foreground,
        "app_change_count": switches.astype(np.int64),
        "app_dwell_time_seconds": (rows.minute - rows.minute[run_start]) * 60.0 + 60 * foreground,
        "app_entropy_5m": np.clip(entropy_5, 0, np.log(5)),
        "app_entropy_15m": np.clip(entropy_15, 0, np.log(15)),
        "top2_app_concentration_15m": np.clip(top2, 0.2, 1),
        "app_switch_count_last_15m": last_15,
    }


def _titles(rng: Generator, rows: _Rows, look: IntArray, noise: float, v3: bool) -> dict[str, Any]:
    """Window title columns (a main title per segment and two alternates; v3's per title)."""
    n, width = len(rows.user), len(SKETCH_COLUMNS)
    title_id = rows.segment * 3 + (rng.random(n)[:, None] > [0.7, 0.9]).sum(axis=1)
    ids, title = np.unique(title_id, return_inverse=True)
    m, label = len(ids), look[ids // 3]
    hashes = rng.integers(0, 2**64, size=m, dtype=np.uint64)
    repeat = pd.DataFrame({"session": rows.session, "title": title}).groupby(["session", "title"])
    columns = {
        "window_title_hash": _take([f"{h:016x}" for h in hashes.tolist()], title),
        "window_title_bucket": (hashes % np.uint64(256)).astype(np.int64)[title],
        "title_repeat_count_session": repeat.cumcount().to_numpy(dtype=np.int64) + 1,
    }
    if not v3:
        return columns
    chars = np.round(_PROFILE["title_chars"][label] * _lognormal(rng, 0.35 * noise, m))
    chars = np.maximum(3, chars).astype(np.int64)
    tokens = np.maximum(1, np.round(chars / rng.uniform(5.0, 8.0, m))).astype(np.int64)
    digits = _PROFILE["title_digits"][label] * _lognormal(rng, 0.6 * noise, m)
    hot = rng.random((_N_LABELS, width)).argsort(axis=1)[:, :_SKETCH_ACTIVE]
    pattern = np.zeros((_N_LABELS, width), dtype=np.float32)
    np.put_along_axis(pattern, hot, rng.uniform(0.3, 1.0, hot.shape), axis=1)
    sketch = pattern[label] * rng.uniform(0.6, 1.4, size=(m, 1)).astype(np.float32)
    sketch += np.float32(0.2 * noise) * rng.standard_normal((m, width), dtype=np.float32)
    per_title = {
        "title_char_count": chars,
        "title_token_count": tokens,
        "title_unique_token_ratio": np.clip(rng.beta(8, 2, m) + 1.0 / tokens, 0, 1),
        "title_digit_ratio": np.clip(digits, 0, 1),
        "title_separator_count": rng.poisson(_PROFILE["title_separators"][label]),
        "title_sketch": sketch.astype(np.float64),
    }
    return columns | {name: values[title] for name, values in per_title.items()}


def _assemble(
    rng: Generator, columns: dict[str, Any], rows: _Rows, schema: FeatureSchema
) -> pd.DataFrame:
    """Add ids and timestamps to the feature columns; order them as the registry."""
    n = len(rows.user)
    users = [f"user_{u:0{max(3, len(str(rows.n_users - 1)))}d}" for u in range(rows.n_users)]
    session_user = rows.user[rows.is_start]  # sessions are numbered per user, in time order
    number = np.arange(len(session_user)) - np.searchsorted(session_user, session_user)
    sessions = [
        f"{users[u]}-s{k:05d}" for u, k in zip(session_user.tolist(), number.tolist(), strict=True)
    ]
    on_desktop = rng.random(rows.n_users * rows.n_days) < 0.3  # a laptop or a desktop all day
    devices = [f"{user}-{kind}" for user in users for kind in ("laptop", "desktop")]
    start = pd.to_datetime(rows.minute * 60 * 10**9, unit="ns", utc=True)
    columns |= {
        "user_id": _take(users, rows.user),
        "device_id": _take(devices, rows.user * 2 + on_desktop[rows.day]),
        "session_id": _take(sessions, rows.session),
        "bucket_start_ts": start,
        "bucket_end_ts": start + pd.Timedelta(seconds=DEFAULT_BUCKET_SECONDS),
        "schema_version": pd.Series([schema.version] * n, dtype=object),
        "schema_hash": pd.Series([schema.schema_hash] * n, dtype=object),
        "source_ids": pd.Series([SOURCE_IDS] * n, dtype=object),  # one shared tuple
    }
    order = ["user_id"] + [name for name, _ in schema.registry if name != "user_id"]
    sketch_names = set(SKETCH_COLUMNS)
    frame = pd.DataFrame({name: columns[name] for name in order if name not in sketch_names})
    if "title_sketch" in columns:
        sketch = pd.DataFrame(columns["title_sketch"], columns=list(SKETCH_COLUMNS))
        frame = pd.concat([frame, sketch], axis=1)[order]
    frame[LABEL] = _take(CLASS_ORDER, rows.segment_label[rows.segment])
    return frame
