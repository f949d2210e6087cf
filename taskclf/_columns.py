"""Names of the columns the pipeline stages add to a frame."""

from __future__ import annotations

from typing import Final

from taskclf.core.types import CLASS_ORDER

PROBA_COLUMNS: Final[tuple[str, ...]] = tuple(f"proba_{c}" for c in CLASS_ORDER)
"""One probability column per class, in class order (added by ``predict``)."""

CONFIDENCE: Final = "confidence"
IS_REJECTED: Final = "is_rejected"
RAW_LABEL: Final = "raw_label"
SMOOTHED_LABEL: Final = "smoothed_label"
SEGMENT_ID: Final = "segment_id"
LABEL: Final = "label"
MAPPED_LABEL: Final = "mapped_label"
MAPPED_PROBA_PREFIX: Final = "mapped_proba_"
TRUE_LABEL: Final = "true_label"
"""Column of ``predictions.csv`` with the true label, when the input had one."""

USER_ID: Final = "user_id"
BUCKET_START_TS: Final = "bucket_start_ts"
