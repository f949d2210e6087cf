"""Taxonomy mapping of the functional API (re-exported, the names of taskclf 0.4)."""

from taskclf.taxonomy import FALLBACK_BUCKET_NAME as FALLBACK_BUCKET_NAME
from taskclf.taxonomy import TaxonomyAdvanced as TaxonomyAdvanced
from taskclf.taxonomy import TaxonomyBucket as TaxonomyBucket
from taskclf.taxonomy import TaxonomyConfig as TaxonomyConfig
from taskclf.taxonomy import TaxonomyDisplay as TaxonomyDisplay
from taskclf.taxonomy import TaxonomyReject as TaxonomyReject
from taskclf.taxonomy import TaxonomyResolver as TaxonomyResolver
from taskclf.taxonomy import TaxonomyResult as TaxonomyResult
from taskclf.taxonomy import default_taxonomy as default_taxonomy
from taskclf.taxonomy import load_taxonomy as load_taxonomy
from taskclf.taxonomy import save_taxonomy as save_taxonomy
