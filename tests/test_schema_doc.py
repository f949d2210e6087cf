"""The input documented and checkable: the schema page and validate_features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import make_frame

from taskclf.core.schema import (
    SCHEMA_VERSIONS,
    describe_schema,
    get_schema,
    schema_markdown,
    validate_features,
)

DOCS = Path(__file__).parents[1] / "docs" / "schema.md"


def test_the_docs_page_is_generated_from_the_schemas():
    assert DOCS.read_text() == schema_markdown(), "regenerate docs/schema.md: schema_markdown()"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_column_is_described_once(version):
    table = describe_schema(version)
    registry = [c for c, _ in get_schema(version).registry]
    sketches = 256 if version == "v3" else 0  # two rows stand for them
    assert len(table) == len(registry) - sketches + (2 if sketches else 0)
    assert not table.duplicated("column").any()
    assert set(table["column"].str.split(" … ").str[0]) <= set(registry)
    assert (table["meaning"].str.len() > 5).all()


def test_a_good_frame_has_no_problem():
    assert validate_features(make_frame(n_users=2, minutes=20).drop(columns="label")) == []


def test_every_problem_is_reported_at_once():
    frame = make_frame(n_users=2, minutes=20).drop(columns=["label", "keys_per_min"])
    frame = frame.assign(clicks_per_min="x", schema_hash="abc")
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    frame["bucket_start_ts"] = frame["bucket_start_ts"].astype(object)
    frame.loc[5, "bucket_start_ts"] = "nope"
    problems = validate_features(frame)
    assert len(problems) == 4
    for words in ("'keys_per_min'", "'clicks_per_min'", "schema_hash", "'nope' (row 5)"):
        assert any(words in p for p in problems), words
