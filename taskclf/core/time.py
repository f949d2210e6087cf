"""UTC timestamps: naive values are read as UTC, aware ones converted; ISO 8601 out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from taskclf.core.defaults import DEFAULT_BUCKET_SECONDS
from taskclf.exceptions import MissingColumnsError, TimestampError


def ts_utc_aware_get(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime (naive values are read as UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def to_naive_utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as a naive datetime in UTC (naive values are returned as given)."""
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def align_to_bucket(
    value: dt.datetime, bucket_seconds: int = DEFAULT_BUCKET_SECONDS
) -> dt.datetime:
    """The start of the bucket holding ``value``: aware UTC, a multiple of the width."""
    epoch = int(ts_utc_aware_get(value).timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % bucket_seconds, tz=dt.UTC)


def generate_bucket_range(
    start: dt.datetime, end: dt.datetime, bucket_seconds: int = DEFAULT_BUCKET_SECONDS
) -> list[dt.datetime]:
    """Bucket starts from ``start``'s bucket up to ``end``'s (exclusive), aware UTC."""
    first = align_to_bucket(start, bucket_seconds)
    step = dt.timedelta(seconds=bucket_seconds)
    return [first + i * step for i in range((align_to_bucket(end, bucket_seconds) - first) // step)]


def to_utc_series(values: pd.Series, *, column: str = "bucket_start_ts") -> pd.Series:
    """Parse timestamps into ``datetime64[ns, UTC]``; ``TimestampError`` names a bad row."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        out = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        out = values.dt.tz_localize("UTC")
    else:
        if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            raise TimestampError(f"column {column!r} holds {values.dtype} values, not timestamps")
        try:
            out = pd.to_datetime(values, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            # pandas' message advises arguments callers cannot pass: name the row
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
            bad = parsed.isna() & values.notna()
            position = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise TimestampError(
                f"column {column!r}: cannot parse {values.iloc[position]!r} "
                f"(row {position}) as an ISO 8601 timestamp"
            ) from None
    missing = out.isna().to_numpy()
    if missing.any():
        raise TimestampError(
            f"column {column!r} has {int(missing.sum())} missing timestamp(s); "
            f"first at row {int(np.flatnonzero(missing)[0])}"
        )
    try:
        return out.astype("datetime64[ns, UTC]")
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        low, high = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
        position = int(np.flatnonzero(((out < low) | (out > high)).to_numpy())[0])
        raise TimestampError(
            f"column {column!r}: {values.iloc[position]!r} (row {position}) is outside the "
            "years 1677-2262 that timestamps can hold"
        ) from None


NS_PER_DAY = 86_400 * 1_000_000_000
"""Nanoseconds in a UTC day."""


def timestamps_ns(df: pd.DataFrame, column: str = "bucket_start_ts") -> np.ndarray:
    """The ``column`` of ``df`` as int64 nanoseconds since the epoch, UTC."""
    if column not in df.columns:
        raise MissingColumnsError([column])
    return to_utc_series(df[column], column=column).to_numpy(dtype="datetime64[ns]").view(np.int64)


def ns_to_datetime(value_ns: int) -> dt.datetime:
    """An int64 nanosecond timestamp as an aware UTC datetime."""
    return pd.Timestamp(int(value_ns), tz="UTC").to_pydatetime()


def format_utc(values_ns: np.ndarray) -> np.ndarray:
    """ISO 8601 strings with ``+00:00`` for an array of ns timestamps."""
    index = pd.DatetimeIndex(np.asarray(values_ns, dtype="datetime64[ns]"))
    text = index.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = np.asarray(values_ns, dtype=np.int64) % 1_000_000_000
    out = np.asarray(text, dtype=object) + "+00:00"
    if fraction.any():
        with_us = index.strftime("%Y-%m-%dT%H:%M:%S.%f")
        out = np.where(fraction != 0, np.asarray(with_us, dtype=object) + "+00:00", out)
    return out
