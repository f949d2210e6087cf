"""Feature schemas: hashes, columns, resolution, the docs page and validate_features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import make_frame

from taskclf.core import schema
from taskclf.core.schema import SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, check_frame_schema, get_schema
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import SchemaMismatchError

DOCS = Path(__file__).parents[1] / "docs" / "schema.md"


def test_known_schema_hashes_and_taskclf_04_names():
    assert SCHEMA_V1.schema_hash == "4077fe0dba70"
    assert SCHEMA_V2.schema_hash == "a15f4751a947"
    assert SCHEMA_V3.schema_hash == "7f29b4b8795e"
    v1, v3 = schema.FeatureSchemaV1, schema.FeatureSchemaV3  # taskclf 0.4's names
    assert schema._build_schema_hash(v1.COLUMNS) == v1.SCHEMA_HASH == "4077fe0dba70"
    assert (v3.VERSION, v3.SCHEMA_HASH) == ("v3", "7f29b4b8795e")


def test_feature_columns_and_class_order():
    assert SCHEMA_V1.n_features == 39
    assert SCHEMA_V1.feature_columns[:3] == ("app_id", "app_category", "is_browser")
    assert SCHEMA_V1.feature_columns[-1] == "user_id"
    assert SCHEMA_V2.feature_columns == SCHEMA_V1.feature_columns[:-1]
    assert SCHEMA_V3.n_features == 38 + 256 + 5
    assert SCHEMA_V3.feature_columns[38] == "title_token_sketch_000"
    assert SCHEMA_V3.feature_columns[-1] == "title_separator_count"
    assert SCHEMA_V2.categorical_columns == ("app_id", "app_category", "domain_category")
    assert CLASS_ORDER == ("BreakIdle", "Build", "Communicate", "Debug", "Meet", "ReadResearch",
                           "Review", "Write")  # fmt: skip


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"schema_version": ["v2"], "user_id": ["u"]}, "v2"),
        ({c: [0.0] for c in schema.SKETCH_COLUMNS} | {"user_id": ["u"]}, "v3"),
        ({"user_id": ["u"]}, "v1"),
        ({"app_id": ["a"]}, "v2"),
    ],
)
def test_resolve_schema_version(columns, expected):
    assert schema.resolve_schema_version(pd.DataFrame(columns)) == expected


def test_unknown_or_mismatched_schemas_are_refused():
    with pytest.raises(SchemaMismatchError, match="unknown schema version 'v9'"):
        get_schema("v9")
    with pytest.raises(SchemaMismatchError, match="schema_version column holds.*'v2'"):
        check_frame_schema(pd.DataFrame({"schema_version": ["v1", "v2"]}), SCHEMA_V1)
    with pytest.raises(SchemaMismatchError, match="expects '4077fe0dba70'"):
        check_frame_schema(pd.DataFrame({"schema_hash": ["deadbeef0000"]}), SCHEMA_V1)
    check_frame_schema(pd.DataFrame({"schema_hash": ["4077fe0dba70"]}), SCHEMA_V1)


def test_the_docs_page_is_generated_from_the_schemas():
    assert DOCS.read_text() == schema.schema_markdown(), "regenerate docs/schema.md"


@pytest.mark.parametrize("version", schema.SCHEMA_VERSIONS)
def test_every_column_is_described_once(version):
    table = schema.describe_schema(version)
    registry = [c for c, _ in get_schema(version).registry]
    sketches = 256 if version == "v3" else 0  # two rows stand for them
    assert len(table) == len(registry) - sketches + (2 if sketches else 0)
    assert not table.duplicated("column").any()
    assert set(table["column"].str.split(" … ").str[0]) <= set(registry)
    assert (table["meaning"].str.len() > 5).all()


def test_validate_features_reports_every_problem_at_once():
    frame = make_frame(n_users=2, minutes=20).drop(columns="label")
    assert schema.validate_features(frame) == []
    frame = frame.drop(columns="keys_per_min").assign(clicks_per_min="x", schema_hash="abc")
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    frame["bucket_start_ts"] = frame["bucket_start_ts"].astype(object)
    frame.loc[5, "bucket_start_ts"] = "nope"
    problems = schema.validate_features(frame)
    assert len(problems) == 4
    for words in ("'keys_per_min'", "'clicks_per_min'", "schema_hash", "'nope' (row 5)"):
        assert any(words in p for p in problems), words
