"""Regenerate the taskclf 0.4 taxonomy fixture (run with taskclf 0.4.15 importable).

    pip download --no-deps --ignore-requires-python taskclf==0.4.15 -d /tmp/tc04
    cd /tmp/tc04 && unzip -q taskclf-0.4.15-py3-none-any.whl -d x
    PYTHONPATH=/tmp/tc04/x python tests/data/v04/make_fixture.py

Writes ``mapped.json``: for each taxonomy file here, the probability rows,
rejection flags and what taskclf 0.4's ``TaxonomyResolver.resolve_batch``
returned for them.
"""

import json
from pathlib import Path

import numpy as np

from taskclf.infer.taxonomy import TaxonomyResolver, load_taxonomy

HERE = Path(__file__).parent


def rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(rng.uniform(0.1, 2.0, size=8), size=40)
    ties = np.zeros((8, 8))
    for i, t in enumerate([0.5, 0.0078125, 2.5e-06, 0.1234565, 1 / 3, 0.25, 0.75, 1.0]):
        ties[i, i], ties[i, (i + 3) % 8] = t, 1.0 - t
    proba = np.vstack([proba, ties, np.zeros((1, 8))])
    return proba, rng.random(len(proba)) < 0.15


cases = []
for seed, name in enumerate(["sum_weighted.yaml", "max_plain.yaml"]):
    proba, rejected = rows(seed)
    results = TaxonomyResolver(load_taxonomy(HERE / name)).resolve_batch(
        proba.argmax(axis=1), proba, is_rejected=rejected
    )
    cases.append(
        {
            "taxonomy": name,
            "proba": proba.tolist(),
            "is_rejected": rejected.tolist(),
            "mapped_labels": [r.mapped_label for r in results],
            "mapped_probs": [r.mapped_probs for r in results],
        }
    )
fixture = {"taskclf_version": "0.4.15", "cases": cases}
(HERE / "mapped.json").write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
