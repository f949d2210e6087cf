"""Taxonomy mapping of the functional API (re-exported, the names of taskclf 0.4)."""

from taskclf.taxonomy import (
    FALLBACK_BUCKET_NAME,
    TaxonomyAdvanced,
    TaxonomyBucket,
    TaxonomyConfig,
    TaxonomyDisplay,
    TaxonomyReject,
    TaxonomyResolver,
    TaxonomyResult,
    default_taxonomy,
    load_taxonomy,
    save_taxonomy,
)

__all__ = [
    "FALLBACK_BUCKET_NAME",
    "TaxonomyAdvanced",
    "TaxonomyBucket",
    "TaxonomyConfig",
    "TaxonomyDisplay",
    "TaxonomyReject",
    "TaxonomyResolver",
    "TaxonomyResult",
    "default_taxonomy",
    "load_taxonomy",
    "save_taxonomy",
]
