"""Smoothing and segmentation helpers of the functional API (re-exported)."""

from taskclf.metrics import flap_rate
from taskclf.stages.merge import merge_short_segments
from taskclf.stages.segment import Segment, aggregate_session_label, segmentize
from taskclf.stages.smooth import rolling_majority

__all__ = [
    "Segment",
    "aggregate_session_label",
    "flap_rate",
    "merge_short_segments",
    "rolling_majority",
    "segmentize",
]
