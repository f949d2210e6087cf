"""Smoothing and segmentation helpers of the functional API (re-exported)."""

from taskclf.merge import merge_short_segments
from taskclf.segment import Segment, segmentize
from taskclf.smooth import flap_rate, rolling_majority

__all__ = ["Segment", "flap_rate", "merge_short_segments", "rolling_majority", "segmentize"]
