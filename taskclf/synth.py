"""Synthetic per-minute activity frames with task labels.

:func:`make_activity_frame` builds feature frames in the layout of schema
v1, v2 or v3, plus a ``label`` column holding the true core label of every
row. The data are made to look like real collector output, so that tests,
benchmarks and demos exercise the pipeline on realistic input:

- every user follows their own Markov chain over the eight core labels, with
  dwell times from a minute (short breaks) to hours (deep work), so labels
  come in segments of tens of minutes;
- users work on weekdays, roughly 8:30 to 18:00 UTC with per-user and
  per-day jitter, take a lunch break, and step away from the computer now and
  then; while away there are no rows, so timelines split at those gaps;
- each label has its own distribution of every feature, and these overlap:
  a model learns a lot from them, but not everything;
- a fraction of rows use apps that no training set has seen, and a fraction
  of numeric values are missing.

Everything is drawn from one ``numpy.random.Generator``, so a seed fixes the
frame. Per-row work is vectorized; Python loops run over users and over
task segments only.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from taskclf._columns import LABEL
from taskclf.core.defaults import DEFAULT_BUCKET_SECONDS, DEFAULT_IDLE_GAP_SECONDS
from taskclf.core.schema import SKETCH_COLUMNS, FeatureSchema, get_schema
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InvalidParameterError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SOURCE_IDS: Final[tuple[str, ...]] = ("taskclf.synth",)
"""The value of every row's ``source_ids`` cell (one shared tuple)."""

NON_BROWSER_DOMAIN: Final = "non_browser"
"""``domain_category`` of rows whose foreground app is not a browser."""

UNSEEN_APP_PREFIX: Final = "app_x"
"""Prefix of the app ids drawn for the ``unseen_app_rate`` rows."""

_N_LABELS: Final = len(CLASS_ORDER)
_CODE: Final = {name: i for i, name in enumerate(CLASS_ORDER)}
_AWAY: Final = -1  # timeline state: away from the computer, no rows

# ---------------------------------------------------------------------------
# Apps: (app_id, app_category, is_browser, is_editor, is_terminal)
# ---------------------------------------------------------------------------
_APPS: Final[tuple[tuple[str, str, bool, bool, bool], ...]] = (
    ("com.microsoft.VSCode", "editor", False, True, False),
    ("com.jetbrains.pycharm", "editor", False, True, False),
    ("com.sublimetext.4", "editor", False, True, False),
    ("com.apple.Terminal", "terminal", False, False, True),
    ("com.googlecode.iterm2", "terminal", False, False, True),
    ("com.google.Chrome", "browser", True, False, False),
    ("org.mozilla.firefox", "browser", True, False, False),
    ("com.apple.Safari", "browser", True, False, False),
    ("com.tinyspeck.slackmacgap", "chat", False, False, False),
    ("com.microsoft.teams2", "meeting", False, False, False),
    ("us.zoom.xos", "meeting", False, False, False),
    ("com.microsoft.Outlook", "email", False, False, False),
    ("com.apple.mail", "email", False, False, False),
    ("com.microsoft.Word", "docs", False, False, False),
    ("notion.id", "docs", False, False, False),
    ("md.obsidian", "notes", False, False, False),
    ("com.apple.Preview", "viewer", False, False, False),
    ("com.postmanlabs.mac", "devtools", False, False, False),
    ("com.github.GitHubClient", "devtools", False, False, False),
    ("com.apple.finder", "system", False, False, False),
    ("com.spotify.client", "media", False, False, False),
)
_APP_INDEX: Final = {app[0]: i for i, app in enumerate(_APPS)}
_UNSEEN_CATEGORIES: Final = ("other", "utility", "devtools", "media", "game")

# Relative weight of each app while working on a label (absent: 0).
_APP_WEIGHTS: Final[dict[str, dict[str, float]]] = {
    "Build": {
        "com.microsoft.VSCode": 5,
        "com.jetbrains.pycharm": 3,
        "com.sublimetext.4": 1,
        "com.apple.Terminal": 2,
        "com.googlecode.iterm2": 2,
        "com.google.Chrome": 1.5,
        "org.mozilla.firefox": 0.5,
        "com.postmanlabs.mac": 0.3,
        "com.github.GitHubClient": 0.3,
    },
    "Debug": {
        "com.microsoft.VSCode": 3,
        "com.jetbrains.pycharm": 3,
        "com.apple.Terminal": 3,
        "com.googlecode.iterm2": 2.5,
        "com.google.Chrome": 2,
        "org.mozilla.firefox": 0.7,
        "com.apple.Safari": 0.2,
        "com.postmanlabs.mac": 0.8,
    },
    "Review": {
        "com.google.Chrome": 4,
        "org.mozilla.firefox": 1.5,
        "com.apple.Safari": 0.5,
        "com.github.GitHubClient": 2,
        "com.microsoft.VSCode": 2,
        "com.jetbrains.pycharm": 1,
        "com.apple.Terminal": 0.5,
    },
    "Write": {
        "com.microsoft.Word": 3,
        "notion.id": 3,
        "md.obsidian": 2,
        "com.microsoft.VSCode": 1.5,
        "com.google.Chrome": 1,
        "com.sublimetext.4": 0.5,
        "com.microsoft.Outlook": 0.3,
    },
    "ReadResearch": {
        "com.google.Chrome": 5,
        "org.mozilla.firefox": 2,
        "com.apple.Safari": 1.5,
        "com.apple.Preview": 2,
        "notion.id": 0.5,
        "md.obsidian": 0.3,
    },
    "Communicate": {
        "com.tinyspeck.slackmacgap": 5,
        "com.microsoft.teams2": 2,
        "com.microsoft.Outlook": 3,
        "com.apple.mail": 2,
        "com.google.Chrome": 1,
    },
    "Meet": {
        "us.zoom.xos": 5,
        "com.microsoft.teams2": 3,
        "com.google.Chrome": 1,
        "com.tinyspeck.slackmacgap": 0.5,
    },
    "BreakIdle": {
        "com.apple.finder": 1,
        "com.spotify.client": 2,
        "com.google.Chrome": 2,
        "com.apple.Safari": 1,
        "com.tinyspeck.slackmacgap": 1,
        "com.apple.mail": 0.5,
        "com.microsoft.VSCode": 0.5,
    },
}

# Domain categories of browser rows, per label (every label also has "other").
_DOMAINS: Final = (
    "code_hosting",
    "docs",
    "search",
    "qa_forum",
    "news",
    "social",
    "webmail",
    "chat",
    "video",
    "research",
    "shopping",
    "video_call",
    "other",
)
_DOMAIN_WEIGHTS: Final[dict[str, dict[str, float]]] = {
    "Build": {"docs": 3, "search": 2, "qa_forum": 2, "code_hosting": 1.5},
    "Debug": {"qa_forum": 4, "search": 3, "docs": 2, "code_hosting": 1},
    "Review": {"code_hosting": 6, "docs": 1},
    "Write": {"docs": 3, "search": 1, "research": 1},
    "ReadResearch": {"research": 3, "docs": 3, "news": 1, "search": 2, "qa_forum": 1},
    "Communicate": {"webmail": 3, "chat": 3, "social": 1},
    "Meet": {"video_call": 5, "chat": 1},
    "BreakIdle": {"news": 3, "social": 3, "video": 2, "shopping": 2},
}

# ---------------------------------------------------------------------------
# Timelines
# ---------------------------------------------------------------------------
# Relative weight of moving from one label (row) to another (column); a
# segment never continues with its own label.
_TRANSITIONS: Final[dict[str, dict[str, float]]] = {
    "Build": {
        "Debug": 4,
        "Review": 1,
        "Write": 0.5,
        "ReadResearch": 2,
        "Communicate": 1.5,
        "Meet": 0.5,
        "BreakIdle": 2,
    },
    "Debug": {
        "Build": 5,
        "Review": 0.5,
        "Write": 0.3,
        "ReadResearch": 2,
        "Communicate": 1,
        "Meet": 0.3,
        "BreakIdle": 2,
    },
    "Review": {
        "Build": 2,
        "Debug": 1,
        "Write": 0.5,
        "ReadResearch": 1,
        "Communicate": 2,
        "Meet": 0.5,
        "BreakIdle": 2,
    },
    "Write": {
        "Build": 1,
        "Debug": 0.3,
        "Review": 1,
        "ReadResearch": 2,
        "Communicate": 2,
        "Meet": 0.5,
        "BreakIdle": 2,
    },
    "ReadResearch": {
        "Build": 2.5,
        "Debug": 1,
        "Review": 0.5,
        "Write": 2,
        "Communicate": 1,
        "Meet": 0.3,
        "BreakIdle": 2,
    },
    "Communicate": {
        "Build": 2,
        "Debug": 1,
        "Review": 1.5,
        "Write": 1,
        "ReadResearch": 1,
        "Meet": 1.5,
        "BreakIdle": 2,
    },
    "Meet": {
        "Build": 1.5,
        "Debug": 0.5,
        "Review": 0.5,
        "Write": 1.5,
        "ReadResearch": 0.5,
        "Communicate": 3,
        "BreakIdle": 3,
    },
    "BreakIdle": {
        "Build": 2,
        "Debug": 1,
        "Review": 1,
        "Write": 1,
        "ReadResearch": 1,
        "Communicate": 3,
        "Meet": 1,
    },
}
# Dwell time of one segment, minutes: log-normal (median, sigma).
_DWELL: Final[dict[str, tuple[float, float]]] = {
    "Build": (25.0, 0.7),
    "Debug": (18.0, 0.7),
    "Review": (12.0, 0.6),
    "Write": (22.0, 0.7),
    "ReadResearch": (14.0, 0.7),
    "Communicate": (8.0, 0.7),
    "Meet": (40.0, 0.3),
    "BreakIdle": (5.0, 0.6),
}
_MAX_DWELL_MINUTES: Final = 240
_MEET_GRID_MINUTES: Final = 15  # meetings last whole quarter hours
_AWAY_SHARE: Final = 0.3  # share of breaks spent away from the computer
_AWAY_MINUTES: Final = (6, 45)  # away gaps, minutes without rows (> idle gap)
_DROP_RATE: Final = 0.003  # isolated buckets the collector missed (short gaps)

_DAY_START: Final = 8 * 60 + 30  # minutes after midnight, UTC
_DAY_END: Final = 18 * 60
_MINUTES_PER_DAY_RANGE: Final = (10, 840)

# ---------------------------------------------------------------------------
# Per-label feature distributions
# ---------------------------------------------------------------------------
# Typical per-minute activity of each label: keys, clicks, scroll events,
# mouse distance (px), backspace ratio, shortcut rate, probability of a
# minute without keys, probability of a minute without mouse activity,
# expected app switches per minute, chance that a row shows the segment's
# main app.
_ACTIVITY_FIELDS: Final = (
    "keys",
    "clicks",
    "scroll",
    "mouse",
    "backspace",
    "shortcut",
    "p_no_keys",
    "p_no_mouse",
    "switch_rate",
    "stay",
)
_ACTIVITY: Final[dict[str, tuple[float, ...]]] = {
    "Build": (110, 8, 12, 2200, 0.12, 0.08, 0.10, 0.15, 0.6, 0.6),
    "Debug": (65, 14, 22, 3200, 0.10, 0.12, 0.15, 0.10, 1.0, 0.5),
    "Review": (30, 12, 45, 2800, 0.07, 0.05, 0.30, 0.05, 0.7, 0.6),
    "Write": (140, 4, 10, 1000, 0.16, 0.03, 0.05, 0.30, 0.3, 0.75),
    "ReadResearch": (12, 9, 70, 3000, 0.06, 0.02, 0.55, 0.05, 0.5, 0.7),
    "Communicate": (85, 10, 18, 2200, 0.10, 0.04, 0.15, 0.10, 1.3, 0.5),
    "Meet": (10, 3, 4, 700, 0.06, 0.01, 0.65, 0.40, 0.2, 0.85),
    "BreakIdle": (4, 3, 8, 900, 0.04, 0.01, 0.80, 0.55, 0.4, 0.4),
}
# Window titles: mean length in characters, digit ratio, separators.
_TITLE: Final[dict[str, tuple[float, float, float]]] = {
    "Build": (45, 0.02, 3.0),
    "Debug": (55, 0.08, 3.5),
    "Review": (60, 0.05, 2.5),
    "Write": (40, 0.01, 1.0),
    "ReadResearch": (70, 0.02, 2.0),
    "Communicate": (35, 0.01, 1.5),
    "Meet": (25, 0.01, 1.0),
    "BreakIdle": (30, 0.02, 1.5),
}
# A segment may look like another task: its features are drawn as if it had
# a confusable label (the user labelled by intent, not by what was on screen).
# This is the irreducible error a model cannot remove.
_LOOKALIKE: Final[dict[str, dict[str, float]]] = {
    "Build": {"Debug": 3, "Review": 1, "Write": 1},
    "Debug": {"Build": 3, "ReadResearch": 1, "Review": 1},
    "Review": {"ReadResearch": 2, "Build": 1, "Debug": 1},
    "Write": {"Communicate": 2, "Build": 1, "ReadResearch": 1},
    "ReadResearch": {"Review": 2, "Write": 1, "BreakIdle": 1},
    "Communicate": {"Write": 2, "Meet": 1, "BreakIdle": 1},
    "Meet": {"Communicate": 2, "BreakIdle": 1},
    "BreakIdle": {"ReadResearch": 2, "Communicate": 1, "Meet": 1},
}
_LOOKALIKE_SHARE: Final = 0.2  # share of segments that look like another task at noise 1
_MAX_LOOKALIKE_SHARE: Final = 0.75
_SKETCH_WIDTH: Final = 128
_SKETCH_ACTIVE: Final = 24  # coordinates a label's mean sketch pattern uses

_NEVER_MISSING: Final = frozenset({"session_length_so_far"})


def _label_table(values: Mapping[str, tuple[float, ...]]) -> FloatArray:
    """Stack per-label tuples into a (n_labels, k) array in class order."""
    return np.array([values[name] for name in CLASS_ORDER], dtype=np.float64)


def _weight_table(weights: dict[str, dict[str, float]], names: tuple[str, ...]) -> FloatArray:
    """Per-label weights over ``names`` as a (n_labels, len(names)) array."""
    index = {name: i for i, name in enumerate(names)}
    table = np.zeros((_N_LABELS, len(names)))
    for label, row in weights.items():
        for name, weight in row.items():
            table[_CODE[label], index[name]] = weight
    return table


def _cumulative(weights: FloatArray) -> FloatArray:
    """Row-normalized cumulative sums; the last column is exactly 1."""
    cum = np.cumsum(weights, axis=-1)
    cum /= cum[..., -1:]
    cum[..., -1] = 1.0
    return cum


def _draw_grouped(rng: np.random.Generator, cum: FloatArray, group: IntArray) -> IntArray:
    """Draw one category per element from the cumulative table of its group.

    ``cum`` has one row of cumulative probabilities per group; element ``i``
    draws from row ``group[i]``. All draws take one ``searchsorted`` over the
    flattened table, with each row shifted by its group number so that the
    rows stay sorted end to end.
    """
    n_groups, n_cats = cum.shape
    flat = (cum + np.arange(n_groups)[:, None]).ravel()
    u = rng.random(len(group))
    found = np.searchsorted(flat, group + u, side="right")
    return np.minimum(found - group * n_cats, n_cats - 1).astype(np.int64)


def _validate(
    n_users: int,
    n_days: int,
    minutes_per_day: int | None,
    missing_rate: float,
    unseen_app_rate: float,
    noise: float,
) -> None:
    for name, value in (("n_users", n_users), ("n_days", n_days)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InvalidParameterError(f"{name} must be an integer >= 0, got {value!r}")
    if minutes_per_day is not None:
        low, high = _MINUTES_PER_DAY_RANGE
        if not isinstance(minutes_per_day, int | np.integer) or not (
            low <= minutes_per_day <= high
        ):
            raise InvalidParameterError(
                f"minutes_per_day must be None or an integer in [{low}, {high}], "
                f"got {minutes_per_day!r}"
            )
    for name, rate in (
        ("missing_rate", missing_rate),
        ("unseen_app_rate", unseen_app_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            raise InvalidParameterError(f"{name} must be in [0, 1], got {rate!r}")
    if not noise >= 0.0 or not np.isfinite(noise):
        raise InvalidParameterError(f"noise must be a finite number >= 0, got {noise!r}")


def _workdays(start: str, n_days: int) -> IntArray:
    """Midnights (minutes since the epoch, UTC) of ``n_days`` weekdays from ``start``."""
    first = pd.Timestamp(start)
    if first.tzinfo is not None:
        first = first.tz_convert("UTC").tz_localize(None)
    days = pd.bdate_range(first.normalize(), periods=n_days).as_unit("ns")
    return np.asarray(days.asi8 // (60 * 10**9), dtype=np.int64)


class _Timelines:
    """Rows of every user, in output order, before features are drawn.

    Attributes (one entry per row unless noted): ``user`` (user index),
    ``day`` (global user-day index), ``minute`` (bucket start in minutes since
    the epoch), ``label`` (class index), ``segment`` (global segment index);
    per segment: ``segment_user``, ``segment_label`` (class index, or -1 for
    time away from the computer, which has no rows).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        n_users: int,
        midnights: IntArray,
        minutes_per_day: int | None,
    ) -> None:
        n_days = len(midnights)
        base = _weight_table(_TRANSITIONS, CLASS_ORDER)
        dwell = _label_table(_DWELL)
        log_median, sigma = np.log(dwell[:, 0]), dwell[:, 1]
        breaks = _CODE["BreakIdle"]
        meet = _CODE["Meet"]

        users, days, minutes, labels, segments = [], [], [], [], []
        seg_users, seg_labels = [], []
        n_segments = 0
        for user in range(n_users):
            # The user's habits: a perturbed transition matrix, a dwell-time
            # scale, when the working day starts and ends.
            chain = _cumulative(base * rng.gamma(3.0, 1.0 / 3.0, size=base.shape))
            cum_rows = chain.tolist()
            dwell_scale = np.exp(rng.normal(0.0, 0.2))
            user_start = rng.normal(0.0, 20.0)
            user_end = rng.normal(0.0, 30.0)

            start_draw = _DAY_START + user_start + rng.normal(0, 10, n_days)
            start = np.round(np.clip(start_draw, 420, 600)).astype(np.int64)
            length: IntArray
            if minutes_per_day is None:
                end_draw = _DAY_END + user_end + rng.normal(0, 15, n_days)
                end = np.round(np.clip(end_draw, start + 240, 1260)).astype(np.int64)
                length = end - start
            else:
                length = np.full(n_days, minutes_per_day, dtype=np.int64)
            lunch_at = np.round(length * rng.uniform(0.4, 0.5, n_days)).astype(np.int64)
            lunch_draw = rng.uniform(30, 60, n_days) * np.minimum(1.0, length / 480)
            lunch_len = np.round(lunch_draw).astype(np.int64)
            lunch_len[lunch_len < 6] = 0  # too short a day for a lunch break

            # The task chain, long enough to fill every working minute.
            total = int(length.sum())
            seg_label_parts, seg_len_parts = [], []
            filled = 0
            state = int(rng.integers(_N_LABELS))
            while filled < total:
                steps = max(16, (total - filled) // 8)
                chunk = []
                for u in rng.random(steps).tolist():
                    state = bisect.bisect_right(cum_rows[state], u)
                    chunk.append(state)
                lab = np.array(chunk, dtype=np.int64)
                dur = np.exp(log_median[lab] + sigma[lab] * rng.standard_normal(steps))
                dur *= dwell_scale
                dur = np.where(
                    lab == meet,
                    np.maximum(1, np.round(dur / _MEET_GRID_MINUTES)) * _MEET_GRID_MINUTES,
                    dur,
                )
                dur = np.clip(np.round(dur), 1, _MAX_DWELL_MINUTES).astype(np.int64)
                away = (lab == breaks) & (rng.random(steps) < _AWAY_SHARE)
                lab[away] = _AWAY
                dur[away] = rng.integers(*_AWAY_MINUTES, endpoint=True, size=int(away.sum()))
                seg_label_parts.append(lab)
                seg_len_parts.append(dur)
                filled += int(dur.sum())
            seg_label = np.concatenate([np.empty(0, dtype=np.int64), *seg_label_parts])
            seg_len = np.concatenate([np.empty(0, dtype=np.int64), *seg_len_parts])

            # Lay the chain over the working minutes, day after day: a task
            # left in the evening goes on the next morning.
            seg_of_minute = np.repeat(np.arange(len(seg_len)), seg_len)[:total]
            day_of_minute = np.repeat(np.arange(n_days), length)
            offset = np.arange(total) - np.repeat(np.cumsum(length) - length, length)
            lunch_start = lunch_at[day_of_minute]
            at_lunch = (offset >= lunch_start) & (offset < lunch_start + lunch_len[day_of_minute])
            keep = (
                (seg_label[seg_of_minute] != _AWAY) & ~at_lunch & (rng.random(total) >= _DROP_RATE)
            )
            kept_day = day_of_minute[keep]
            kept_seg = seg_of_minute[keep]
            users.append(np.full(len(kept_day), user, dtype=np.int64))
            days.append(kept_day + user * n_days)
            minutes.append(midnights[kept_day] + start[kept_day] + offset[keep])
            labels.append(seg_label[kept_seg])
            segments.append(kept_seg + n_segments)
            seg_users.append(np.full(len(seg_len), user, dtype=np.int64))
            seg_labels.append(seg_label)
            n_segments += len(seg_len)

        def join(parts: list[IntArray]) -> IntArray:
            return np.concatenate([np.empty(0, dtype=np.int64), *parts]).astype(np.int64)

        self.user = join(users)
        self.day = join(days)
        self.minute = join(minutes)
        self.label = join(labels)
        self.segment = join(segments)
        self.segment_user = join(seg_users)
        self.segment_label = join(seg_labels)
        self.n_users = n_users
        self.n_days = n_days


def _session_starts(user: IntArray, minute: IntArray) -> BoolArray:
    """True where a row starts a new timeline piece (new user or a long gap)."""
    first = np.ones(len(user), dtype=bool)
    gap_minutes = DEFAULT_IDLE_GAP_SECONDS // DEFAULT_BUCKET_SECONDS
    first[1:] = (user[1:] != user[:-1]) | (np.diff(minute) > gap_minutes)
    return first


def _rolling_mean(values: FloatArray, start: IntArray, window: int) -> FloatArray:
    """Mean of the last ``window`` values (this one included) since ``start``."""
    cum = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(len(values))
    lo = np.maximum(i - window + 1, start)
    return (cum[i + 1] - cum[lo]) / (i + 1 - lo)


def _rolling_sum(values: IntArray, start: IntArray, window: int) -> IntArray:
    """Sum of the last ``window`` values (this one included) since ``start``."""
    cum = np.concatenate([[0], np.cumsum(values)])
    i = np.arange(len(values))
    lo = np.maximum(i - window + 1, start)
    return (cum[i + 1] - cum[lo]).astype(np.int64)


def _previous(values: FloatArray, is_start: BoolArray) -> FloatArray:
    """The previous row's value within the session (the row's own at a start)."""
    prev = np.empty_like(values)
    if len(values):
        prev[0] = values[0]
        prev[1:] = values[:-1]
        prev[is_start] = values[is_start]
    return prev


def _mix64(values: IntArray, salt: int) -> npt.NDArray[np.uint64]:
    """A well-spread 64-bit hash of integers (SplitMix64 finalizer)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _object_take(values: list[str] | tuple[str, ...], codes: IntArray) -> np.ndarray:
    """``values[codes]`` as an object array of shared ``str`` objects."""
    table = np.empty(len(values), dtype=object)
    table[:] = list(values)
    return table[codes]


def _lognormal(rng: np.random.Generator, sigma: float, size: int | tuple[int, ...]) -> FloatArray:
    """Multiplicative noise with median 1 (exactly 1 when ``sigma`` is 0)."""
    return np.exp(sigma * rng.standard_normal(size))


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
    """Make a labelled synthetic feature frame for many users and days.

    One row per (user, one-minute bucket) while the user is at the
    computer, with every column of the schema's row registry and a
    ``label`` column holding the true core label.

    Parameters
    ----------
    n_users : int, default 5
        Number of users, named ``user_000``, ``user_001``, ...
    n_days : int, default 5
        Number of working days per user: the first ``n_days`` weekdays on or
        after ``start`` (weekends have no rows).
    schema_version : {"v1", "v2", "v3"}, default "v1"
        Layout of the frame. Schema v2's registry has no ``user_id``; the
        frame has the column all the same (timelines are per user), so a
        v2 frame holds exactly the v1 columns. v3 adds the 256 title sketch
        columns and the five title scalars.
    start : str, default "2025-03-03"
        First calendar day, read as a UTC date (a Monday by default).
    minutes_per_day : int or None, default None
        Length of each working day in minutes, lunch and breaks included,
        between 10 and 840. None draws it per user and day: about 8:30 to
        18:00 UTC, with per-user and per-day jitter.
    missing_rate : float, default 0.01
        Share of the values of each float feature column set to NaN (for v3
        also the share of rows whose title sketch is all NaN). Boolean,
        integer and string columns are never missing, nor is
        ``session_length_so_far``.
    unseen_app_rate : float, default 0.02
        Share of rows whose app is drawn from a large pool of rare names
        (``app_x`` and hex digits), most of which occur once.
    noise : float, default 1.0
        Scale of the spread of numeric features around each label's typical
        values (per user, per segment and per row). 0 leaves only the label
        means and the random choice of apps; 2 blurs labels further.
    random_state : int or None, default 0
        Seed of ``numpy.random.default_rng``; the same seed and arguments
        give the same frame.

    Returns
    -------
    pandas.DataFrame
        Rows sorted by ``user_id`` then ``bucket_start_ts``, no duplicate
        (user_id, bucket_start_ts), and columns in registry order (for v2,
        ``user_id`` first) followed by ``label``. Dtypes follow the registry
        type names: str columns hold Python ``str`` in object columns
        (cheap to build; ``.astype("str")`` gives pandas' string dtype),
        int is int64, float is float64, bool is bool, datetime is
        ``datetime64[ns, UTC]``. ``source_ids`` holds the one shared tuple
        :data:`SOURCE_IDS` in every row, not a new list per row.

    Notes
    -----
    Timelines: each user follows their own Markov chain over the eight
    labels (a perturbed copy of a shared transition matrix that never stays
    on a label). Dwell times are log-normal (median about 25 minutes for
    Build, 8 for Communicate, 5 for BreakIdle; meetings last 15 to 60
    minutes on a quarter-hour grid). Some breaks are spent away from the
    computer: 6 to 45 minutes without rows. Lunch removes 30 to 60 minutes
    around the middle of the day. Gaps longer than the 300 s idle gap start
    a new session (``session_id``); a few single buckets are missing, as
    from a collector hiccup, without splitting a session.

    Features: per-label activity rates are scaled by log-normal user, segment
    and row factors; apps come from per-label pools weighted by each user's
    preferences, with a main app per segment; ``app_category``,
    ``is_browser``, ``is_editor``, ``is_terminal`` and ``domain_category``
    follow the app. Rolling and delta features are computed from the
    drawn per-minute values within a session; ``session_length_so_far`` is
    in minutes since the session's first bucket; ``hour_of_day`` and
    ``day_of_week`` (Monday is 0) come from ``bucket_start_ts``. Window
    titles are shared by rows of a segment (a main title and two
    alternates); v3 title sketches and scalars are functions of the title,
    around per-label mean patterns.

    Memory: a v1 row takes about 400 bytes; a v3 row about 2.5 kB (the 256
    float64 sketch columns).

    Examples
    --------
    >>> df = make_activity_frame(n_users=2, n_days=1, random_state=0)
    >>> df.columns[-1], df["schema_version"].iloc[0], df["user_id"].nunique()
    ('label', 'v1', 2)
    >>> bool(df.duplicated(["user_id", "bucket_start_ts"]).any())
    False
    >>> str(df["bucket_start_ts"].dtype)
    'datetime64[ns, UTC]'
    >>> v3 = make_activity_frame(n_users=1, n_days=1, schema_version="v3")
    >>> v3.shape[1] - df.shape[1]
    261
    """
    schema = get_schema(schema_version)
    _validate(n_users, n_days, minutes_per_day, missing_rate, unseen_app_rate, noise)
    rng = np.random.default_rng(random_state)
    midnights = _workdays(start, n_days)
    tl = _Timelines(rng, int(n_users), midnights, minutes_per_day)
    columns = _features(rng, tl, int(n_users), schema, missing_rate, unseen_app_rate, noise)
    return _assemble(rng, columns, schema, tl)


def _features(
    rng: np.random.Generator,
    tl: _Timelines,
    n_users: int,
    schema: FeatureSchema,
    missing_rate: float,
    unseen_app_rate: float,
    noise: float,
) -> dict[str, np.ndarray]:
    """Draw every feature column for the rows of ``tl``."""
    n = len(tl.label)
    seg = tl.segment
    n_segments = len(tl.segment_label)
    # The label each segment looks like; every feature is drawn from it.
    seg_label = np.maximum(tl.segment_label, 0)  # away segments have no rows
    lookalike = _draw_grouped(rng, _cumulative(_weight_table(_LOOKALIKE, CLASS_ORDER)), seg_label)
    swapped = rng.random(n_segments) < min(_MAX_LOOKALIKE_SHARE, _LOOKALIKE_SHARE * noise)
    seg_look = np.where(swapped, lookalike, seg_label)
    lab = seg_look[seg]
    act = _label_table(_ACTIVITY)
    field = {name: act[:, i] for i, name in enumerate(_ACTIVITY_FIELDS)}

    is_start = _session_starts(tl.user, tl.minute)
    session = np.cumsum(is_start) - 1
    start_row = np.flatnonzero(is_start)[session] if n else np.empty(0, dtype=np.int64)

    # -- apps --------------------------------------------------------------
    n_apps = len(_APPS)
    app_weights = _weight_table(_APP_WEIGHTS, tuple(a[0] for a in _APPS))
    taste = np.exp(rng.normal(0.0, 0.6, size=(n_users, 1, n_apps)))
    app_cum = _cumulative(app_weights[None, :, :] * taste).reshape(-1, n_apps)
    main_app = _draw_grouped(rng, app_cum, tl.segment_user * _N_LABELS + seg_look)
    row_app = _draw_grouped(rng, app_cum, tl.user * _N_LABELS + lab)
    stays = rng.random(n) < field["stay"][lab]
    app = np.where(stays, main_app[seg], row_app)

    unseen = np.flatnonzero(rng.random(n) < unseen_app_rate)
    pool_size = max(1, len(unseen))
    pool_ids = rng.choice(16**7, size=pool_size, replace=False)  # distinct names
    pool_names = [f"{UNSEEN_APP_PREFIX}{v:07x}" for v in pool_ids.tolist()]
    pool_cats = rng.integers(0, len(_UNSEEN_CATEGORIES), size=pool_size)
    app[unseen] = n_apps + rng.integers(0, pool_size, size=len(unseen))

    names = [a[0] for a in _APPS] + pool_names
    categories = [a[1] for a in _APPS] + [_UNSEEN_CATEGORIES[c] for c in pool_cats.tolist()]
    flags = np.zeros((len(names), 3), dtype=bool)
    flags[:n_apps] = [a[2:] for a in _APPS]
    is_browser = flags[app, 0]

    domain_cum = _cumulative(
        _weight_table(_DOMAIN_WEIGHTS, _DOMAINS) + 0.3 * (np.array(_DOMAINS) == "other")
    )
    domain = _draw_grouped(rng, domain_cum, lab)
    domain = np.where(is_browser, domain, len(_DOMAINS))

    # -- per-minute activity ----------------------------------------------
    user_speed = _lognormal(rng, 0.25 * noise, (n_users, 4))
    seg_level = _lognormal(rng, 0.4 * noise, (n_segments, 4))
    row_sigma = 0.5 * noise

    def rate(name: str, k: int) -> FloatArray:
        scale = field[name][lab] * user_speed[tl.user, k] * seg_level[seg, k]
        return scale * _lognormal(rng, row_sigma, n)

    no_keys = rng.random(n) < field["p_no_keys"][lab]
    no_mouse = rng.random(n) < field["p_no_mouse"][lab]
    keys = np.where(no_keys, 0.0, np.round(rate("keys", 0)))
    clicks = np.where(no_mouse, 0.0, np.round(rate("clicks", 1)))
    scroll = np.where(no_mouse, 0.0, np.round(rate("scroll", 2)))
    mouse = np.where(no_mouse, 0.0, np.round(rate("mouse", 3), 1))
    typed = keys > 0
    backspace = np.where(
        typed, np.clip(field["backspace"][lab] * _lognormal(rng, 0.4 * noise, n), 0, 1), 0.0
    )
    shortcut = np.where(
        typed, np.clip(field["shortcut"][lab] * _lognormal(rng, 0.5 * noise, n), 0, 1), 0.0
    )
    jitter = rng.uniform(0.85, 1.15, size=(n, 2)) if noise > 0 else np.ones((n, 2))
    kb_seconds = np.clip(60 * (1 - np.exp(-keys / 40)) * jitter[:, 0], 0, 60)
    mouse_effort = clicks * 3 + scroll + mouse / 300
    mouse_seconds = np.clip(60 * (1 - np.exp(-mouse_effort / 30)) * jitter[:, 1], 0, 60)
    any_seconds = np.minimum(
        60.0,
        np.maximum(kb_seconds, mouse_seconds) + 0.3 * np.minimum(kb_seconds, mouse_seconds),
    )
    idle_run = np.clip((60 - any_seconds) * rng.uniform(0.5, 1.0, n), 0, 60)
    density = (keys + clicks + scroll) / np.maximum(any_seconds, 1.0)

    # -- app switching -----------------------------------------------------
    prev_app = _previous(app.astype(np.float64), is_start)
    changed = (app != prev_app).astype(np.int64)
    switches = rng.poisson(field["switch_rate"][lab] * seg_level[seg, 0] ** 0.5) + changed
    switch_5 = _rolling_sum(switches, start_row, 5)
    switch_15 = _rolling_sum(switches, start_row, 15)
    spread = 0.15 * noise
    entropy_5 = np.clip(0.6 * np.log1p(switch_5) * _lognormal(rng, spread, n), 0, np.log(5))
    entropy_15 = np.clip(0.55 * np.log1p(switch_15) * _lognormal(rng, spread, n), 0, np.log(15))
    top2 = np.clip(1 - 0.035 * switch_15 + spread * 0.3 * rng.standard_normal(n), 0.2, 1)
    foreground = np.clip(1 - 0.12 * switches + spread * 0.3 * rng.standard_normal(n), 0.05, 1.0)
    app_run_start = (
        np.maximum.accumulate(np.where(is_start | (changed > 0), np.arange(n), 0))
        if n
        else np.empty(0, dtype=np.int64)
    )
    dwell_seconds = (tl.minute - tl.minute[app_run_start]) * 60.0 + 60.0 * foreground

    # -- sessions and time -------------------------------------------------
    session_minutes = (tl.minute - tl.minute[start_row]).astype(np.float64)
    on_break = (tl.label == _CODE["BreakIdle"]).astype(np.float64)
    after_break = _previous(on_break, is_start) > 0
    idle_return = is_start | after_break
    hour = (tl.minute // 60) % 24
    weekday = (tl.minute // 1440 + 3) % 7  # 1970-01-01 was a Thursday

    # -- window titles -----------------------------------------------------
    title = seg * 3 + (rng.random(n)[:, None] > [0.7, 0.9]).sum(axis=1)
    titles, first_row, title_of_row = np.unique(title, return_index=True, return_inverse=True)
    title_hash = _mix64(titles, salt=int(rng.integers(1, 2**31)))
    title_hex = [f"{h:016x}" for h in title_hash.tolist()]
    title_bucket = (title_hash % np.uint64(256)).astype(np.int64)
    key = session * (len(titles) + 1) + title_of_row
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    new_key = np.ones(n, dtype=bool)
    new_key[1:] = sorted_key[1:] != sorted_key[:-1]
    group_first = np.maximum.accumulate(np.where(new_key, np.arange(n), 0))
    repeat = np.empty(n, dtype=np.int64)
    repeat[order] = np.arange(n) - group_first + 1

    rows: dict[str, np.ndarray] = {
        "app_id": _object_take(names, app),
        "app_category": _object_take(categories, app),
        "window_title_hash": _object_take(title_hex, title_of_row),
        "is_browser": is_browser,
        "is_editor": flags[app, 1],
        "is_terminal": flags[app, 2],
        "app_switch_count_last_5m": switch_5,
        "app_foreground_time_ratio": foreground,
        "app_change_count": switches.astype(np.int64),
        "app_dwell_time_seconds": dwell_seconds,
        "app_entropy_5m": entropy_5,
        "app_entropy_15m": entropy_15,
        "top2_app_concentration_15m": top2,
        "idle_return_indicator": idle_return,
        "keys_per_min": keys,
        "backspace_ratio": backspace,
        "shortcut_rate": shortcut,
        "clicks_per_min": clicks,
        "scroll_events_per_min": scroll,
        "mouse_distance": mouse,
        "active_seconds_keyboard": kb_seconds,
        "active_seconds_mouse": mouse_seconds,
        "active_seconds_any": any_seconds,
        "max_idle_run_seconds": idle_run,
        "event_density": density,
        "domain_category": _object_take((*_DOMAINS, NON_BROWSER_DOMAIN), domain),
        "window_title_bucket": title_bucket[title_of_row],
        "title_repeat_count_session": repeat,
        "keys_per_min_rolling_5": _rolling_mean(keys, start_row, 5),
        "keys_per_min_rolling_15": _rolling_mean(keys, start_row, 15),
        "mouse_distance_rolling_5": _rolling_mean(mouse, start_row, 5),
        "mouse_distance_rolling_15": _rolling_mean(mouse, start_row, 15),
        "keys_per_min_delta": keys - _previous(keys, is_start),
        "clicks_per_min_delta": clicks - _previous(clicks, is_start),
        "mouse_distance_delta": mouse - _previous(mouse, is_start),
        "app_switch_count_last_15m": switch_15,
        "hour_of_day": hour,
        "day_of_week": weekday,
        "session_length_so_far": session_minutes,
    }
    if schema.version == "v3":
        title_label = lab[first_row]
        rows.update(_title_scalars(rng, title_label, title_of_row, noise))
        rows["__sketch__"] = _title_sketches(rng, title_label, title_of_row, noise)

    # -- missing values ----------------------------------------------------
    # Each float column independently; a hit in the 2-D sketch block blanks
    # the whole sketch of that row (no title was captured).
    if missing_rate > 0 and n:
        for name, values in rows.items():
            if values.dtype == np.float64 and name not in _NEVER_MISSING:
                hit = rng.random(n) < missing_rate
                values[hit] = np.nan

    rows["__session__"] = session
    return rows


def _title_scalars(
    rng: np.random.Generator, title_label: IntArray, title_of_row: IntArray, noise: float
) -> dict[str, np.ndarray]:
    """The five v3 title scalar columns, one value per title spread to rows."""
    table = _label_table(_TITLE)
    m = len(title_label)
    chars = np.maximum(
        3, np.round(table[title_label, 0] * _lognormal(rng, 0.35 * noise, m))
    ).astype(np.int64)
    tokens = np.maximum(1, np.round(chars / rng.uniform(5.0, 8.0, m))).astype(np.int64)
    unique_ratio = np.clip(rng.beta(8, 2, m) + 1.0 / tokens, 0, 1)
    digits = np.clip(table[title_label, 1] * _lognormal(rng, 0.6 * noise, m), 0, 1)
    separators = rng.poisson(table[title_label, 2]).astype(np.int64)
    return {
        "title_char_count": chars[title_of_row],
        "title_token_count": tokens[title_of_row],
        "title_unique_token_ratio": unique_ratio[title_of_row],
        "title_digit_ratio": digits[title_of_row],
        "title_separator_count": separators[title_of_row],
    }


def _title_sketches(
    rng: np.random.Generator, title_label: IntArray, title_of_row: IntArray, noise: float
) -> FloatArray:
    """The 256 v3 sketch columns as one (n_rows, 256) float64 block.

    Each label has a sparse mean pattern for the token sketch and one for
    the character-trigram sketch; a title's sketch is its label's pattern,
    scaled, plus noise. Sketches are drawn per title in float32 (titles are
    far fewer than rows) and spread to rows once, as float64.
    """
    width = 2 * _SKETCH_WIDTH
    pattern = np.zeros((_N_LABELS, width), dtype=np.float32)
    for label in range(_N_LABELS):
        hot = rng.choice(width, size=2 * _SKETCH_ACTIVE, replace=False)
        pattern[label, hot] = rng.uniform(0.3, 1.0, size=hot.size)
    m = len(title_label)
    scale = rng.uniform(0.6, 1.4, size=(m, 1)).astype(np.float32)
    per_title = pattern[title_label] * scale
    per_title += np.float32(0.2 * noise) * rng.standard_normal((m, width), dtype=np.float32)
    return per_title.astype(np.float64)[title_of_row]


def _assemble(
    rng: np.random.Generator,
    columns: dict[str, np.ndarray],
    schema: FeatureSchema,
    tl: _Timelines,
) -> pd.DataFrame:
    """Put the drawn columns, ids and timestamps together in registry order."""
    n = len(tl.label)
    width = max(3, len(str(tl.n_users - 1)))
    user_names = [f"user_{u:0{width}d}" for u in range(tl.n_users)]

    # Sessions are numbered per user, in time order.
    session = columns.pop("__session__")
    first = np.ones(n, dtype=bool)
    first[1:] = session[1:] != session[:-1]
    session_user = tl.user[first]
    number = np.arange(len(session_user)) - np.searchsorted(session_user, session_user)
    session_names = [
        f"{user_names[u]}-s{k:05d}"
        for u, k in zip(session_user.tolist(), number.tolist(), strict=True)
    ]

    # A laptop and a desktop per user; each day is spent on one of them.
    on_desktop = rng.random(tl.n_users * tl.n_days) < 0.3
    device = tl.user * 2 + on_desktop[tl.day]
    device_names = [f"{name}-{kind}" for name in user_names for kind in ("laptop", "desktop")]

    ns = tl.minute * (DEFAULT_BUCKET_SECONDS * 10**9)
    bucket = DEFAULT_BUCKET_SECONDS * 10**9
    data: dict[str, object] = {
        "user_id": _object_take(user_names, tl.user),
        "device_id": _object_take(device_names, device),
        "session_id": _object_take(session_names, session),
        "bucket_start_ts": pd.to_datetime(ns, unit="ns", utc=True),
        "bucket_end_ts": pd.to_datetime(ns + bucket, unit="ns", utc=True),
        "schema_version": _shared(schema.version, n),
        "schema_hash": _shared(schema.schema_hash, n),
        "source_ids": _shared(SOURCE_IDS, n),
    }
    sketch = columns.pop("__sketch__", None)
    data.update(columns)
    names = ["user_id"] + [name for name, _ in schema.registry if name != "user_id"]
    names = [c for c in names if c not in SKETCH_COLUMNS]
    frame = pd.DataFrame({name: _series(data[name], name) for name in names}, copy=False)
    parts = [frame]
    if sketch is not None:
        parts.append(pd.DataFrame(sketch, columns=list(SKETCH_COLUMNS), copy=False))
    frame = pd.concat(parts, axis=1) if len(parts) > 1 else frame
    order = ["user_id"] + [name for name, _ in schema.registry if name != "user_id"]
    frame = frame[order]
    frame[LABEL] = pd.Series(_object_take(CLASS_ORDER, tl.label), dtype=object)
    return frame


def _shared(value: object, n: int) -> np.ndarray:
    """An object array holding the one object ``value`` ``n`` times.

    (``np.full(n, "v1", dtype=object)`` would make ``n`` new strings.)
    """
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def _series(values: object, name: str) -> pd.Series:
    """A column with the dtype its registry type name implies."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return pd.Series(values, dtype=object, name=name, copy=False)
    return pd.Series(values, name=name, copy=False)


__all__ = ["NON_BROWSER_DOMAIN", "SOURCE_IDS", "UNSEEN_APP_PREFIX", "make_activity_frame"]
