"""Default values shared by the pipeline, the functional API and the CLI."""

from __future__ import annotations

from typing import Final

from taskclf.core.types import MIXED_UNKNOWN as MIXED_UNKNOWN  # taskclf 0.4 had it here

DEFAULT_BUCKET_SECONDS: Final[int] = 60
"""Width of one feature bucket, in seconds."""

DEFAULT_SMOOTH_WINDOW: Final[int] = 3
"""Rolling-majority window, in buckets."""

MIN_BLOCK_DURATION_SECONDS: Final[int] = 180
"""Hysteresis: segments shorter than this are merged into a neighbour."""

DEFAULT_REJECT_THRESHOLD: Final[float] = 0.55
"""Confidence below which a bucket is labelled ``Mixed/Unknown``."""

DEFAULT_IDLE_GAP_SECONDS: Final[float] = 300.0
"""Gap between consecutive buckets that splits a timeline."""

DEFAULT_MIN_CATEGORY_FREQ: Final[int] = 5
DEFAULT_UNKNOWN_MASK_RATE: Final[float] = 0.05
UNKNOWN_CATEGORY: Final[str] = "__unknown__"
