import pandas as pd
import pytest

from taskclf.core.schema import (
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    SKETCH_COLUMNS,
    check_frame_schema,
    get_schema,
    resolve_schema_version,
)
from taskclf.core.types import CLASS_ORDER, LABEL_SET_V1
from taskclf.exceptions import SchemaMismatchError


def test_known_schema_hashes():
    assert SCHEMA_V1.schema_hash == "4077fe0dba70"
    assert SCHEMA_V2.schema_hash == "a15f4751a947"
    assert SCHEMA_V3.schema_hash == "7f29b4b8795e"


def test_feature_column_counts_and_order():
    assert SCHEMA_V1.n_features == 39
    assert SCHEMA_V1.feature_columns[:3] == ("app_id", "app_category", "is_browser")
    assert SCHEMA_V1.feature_columns[-1] == "user_id"
    assert SCHEMA_V2.feature_columns == SCHEMA_V1.feature_columns[:-1]
    assert SCHEMA_V3.n_features == 38 + 256 + 5
    assert SCHEMA_V3.feature_columns[38] == "title_token_sketch_000"
    assert SCHEMA_V3.feature_columns[-1] == "title_separator_count"
    assert SCHEMA_V2.categorical_columns == ("app_id", "app_category", "domain_category")


def test_class_order_is_sorted_labels():
    assert CLASS_ORDER == (
        "BreakIdle",
        "Build",
        "Communicate",
        "Debug",
        "Meet",
        "ReadResearch",
        "Review",
        "Write",
    )
    assert len(LABEL_SET_V1) == 8


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"schema_version": ["v2"], "user_id": ["u"]}, "v2"),
        ({c: [0.0] for c in SKETCH_COLUMNS} | {"user_id": ["u"]}, "v3"),
        ({"user_id": ["u"]}, "v1"),
        ({"app_id": ["a"]}, "v2"),
    ],
)
def test_resolve_schema_version(columns, expected):
    assert resolve_schema_version(pd.DataFrame(columns)) == expected


def test_unknown_schema_version_is_refused():
    with pytest.raises(SchemaMismatchError, match="unknown schema version 'v9'"):
        get_schema("v9")


def test_declared_schema_mismatch_is_refused():
    df = pd.DataFrame({"schema_version": ["v1", "v2"]})
    with pytest.raises(SchemaMismatchError, match="schema_version column holds.*'v2'"):
        check_frame_schema(df, SCHEMA_V1)
    df = pd.DataFrame({"schema_hash": ["deadbeef0000"]})
    with pytest.raises(SchemaMismatchError, match="expects '4077fe0dba70'"):
        check_frame_schema(df, SCHEMA_V1)
    check_frame_schema(pd.DataFrame({"schema_hash": ["4077fe0dba70"]}), SCHEMA_V1)
