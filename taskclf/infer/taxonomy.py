"""Taxonomy mapping of the functional API (re-exported)."""

from taskclf.taxonomy import (
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
