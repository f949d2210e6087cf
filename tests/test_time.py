"""UTC time helpers (taskclf.core.time): parsing, bucket alignment, 0.4's helpers."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf.core.time import (
    align_to_bucket,
    generate_bucket_range,
    to_naive_utc,
    to_utc_series,
    ts_utc_aware_get,
)
from taskclf.exceptions import TimestampError

EASTERN = dt.timezone(dt.timedelta(hours=-5))
WIDTHS = st.sampled_from([1, 60, 900, 3600])


@pytest.mark.parametrize(
    "values",
    [
        ["2520-01-01T00:00:00"],
        [dt.datetime(2520, 1, 1)],
        pd.to_datetime(["2520-01-01"]).as_unit("s"),
        ["2025-01-06T09:00:00", "1500-01-01T00:00:00"],
    ],
)
def test_timestamps_beyond_what_pandas_holds_are_refused_naming_the_row(values):
    with pytest.raises(TimestampError, match="outside the years 1677-2262") as caught:
        to_utc_series(pd.Series(values))
    assert f"row {len(values) - 1}" in str(caught.value)


def test_naive_values_are_utc_and_aware_ones_converted():
    parsed = to_utc_series(pd.Series([dt.datetime(2025, 1, 6, 9), "2025-01-06T09:00:00-05:00"]))
    assert [t.hour for t in parsed] == [9, 14] and str(parsed.dt.tz) == "UTC"
    assert to_naive_utc(dt.datetime(2025, 1, 1, 9, tzinfo=EASTERN)) == dt.datetime(2025, 1, 1, 14)
    naive = dt.datetime(2025, 1, 1, 9)
    assert to_naive_utc(naive) is naive


@settings(max_examples=40)
@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)), WIDTHS)
def test_align_to_bucket_floors_to_a_multiple_of_the_width(value, width):
    aligned = align_to_bucket(value, width)
    assert aligned.tzinfo == dt.UTC and int(aligned.timestamp()) % width == 0
    assert dt.timedelta(0) <= ts_utc_aware_get(value) - aligned < dt.timedelta(seconds=width)
    assert align_to_bucket(value.replace(tzinfo=dt.UTC).astimezone(EASTERN), width) == aligned


@settings(max_examples=40)
@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.integers(min_value=-5, max_value=500),
    WIDTHS,
)
def test_generate_bucket_range_enumerates_the_aligned_starts(start, n, width):
    end = start + dt.timedelta(seconds=n * width)
    buckets = generate_bucket_range(start, end, width)
    first, last = align_to_bucket(start, width), align_to_bucket(end, width)
    assert buckets == [first + i * dt.timedelta(seconds=width) for i in range(len(buckets))]
    assert (buckets[-1] + dt.timedelta(seconds=width) == last) if buckets else last <= first
