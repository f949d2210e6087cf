"""CategoricalEncoder: codes are positions in the sorted vocabulary.

An unseen (or missing) value gets the code of ``__unknown__`` when the
vocabulary has it, else -1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import refused
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder

from taskclf.exceptions import InvalidParameterError, MissingColumnsError
from taskclf.stages.encode import CategoricalEncoder

UNKNOWN = "__unknown__"


def reference_codes(values, vocabulary):
    """The rule, value by value."""
    ordered = sorted(vocabulary)
    fallback = ordered.index(UNKNOWN) if UNKNOWN in ordered else -1
    out = []
    for value in values:
        if isinstance(value, str) and value in ordered:
            out.append(ordered.index(value))
        else:
            out.append(fallback)
    return out


def codes_of(encoder, values, dtype=None, column="app_id"):
    series = pd.Series(values, dtype=dtype)
    out = encoder.transform(pd.DataFrame({column: series}))[column]
    assert isinstance(out.dtype, pd.CategoricalDtype)
    return out.cat.codes.tolist()


def test_codes_are_positions_in_the_sorted_vocabulary():
    enc = CategoricalEncoder.from_vocabulary({"app_id": ["zoom", "code", "slack"]})
    out = enc.transform(pd.DataFrame({"app_id": ["slack", "zoom", "code", "slack"]}))
    assert out["app_id"].cat.categories.tolist() == ["code", "slack", "zoom"]
    assert out["app_id"].cat.codes.tolist() == [1, 2, 0, 1]


@pytest.mark.parametrize("with_unknown", [False, True])
def test_unseen_and_missing_values_take_the_unknown_code_or_minus_one(with_unknown):
    vocabulary = ["code", "slack"] + ([UNKNOWN] if with_unknown else [])
    enc = CategoricalEncoder.from_vocabulary({"app_id": vocabulary})
    # sorted: [__unknown__,] code, slack
    code, slack, unknown = (1, 2, 0) if with_unknown else (0, 1, -1)
    values = ["slack", "vim", None, np.nan, "code"]
    assert codes_of(enc, values, dtype=object) == [slack, unknown, unknown, unknown, code]
    assert codes_of(enc, ["slack", None], dtype="str") == [slack, unknown]
    if with_unknown:
        assert enc.transform(pd.DataFrame({"app_id": ["vim"]}))["app_id"].tolist() == [UNKNOWN]
    # categories in another order, with an unused and an unseen one; all missing; none
    dtype = pd.CategoricalDtype(["vim", "slack", "unused", "code"])
    assert codes_of(enc, values, dtype=dtype) == [slack, unknown, unknown, unknown, code]
    assert codes_of(enc, [None, None], dtype="category") == [unknown] * 2
    assert codes_of(enc, [], dtype="category") == []


def test_fitted_label_encoders_are_accepted_as_vocabulary():
    le = LabelEncoder().fit(["slack", "code", "zoom", "code"])
    enc = CategoricalEncoder.from_vocabulary({"app_id": le})
    values = ["zoom", "code", "slack"]
    assert codes_of(enc, values) == le.transform(values).tolist()
    # frozen, the fitted vocabulary survives fit and clone
    frozen = FrozenEstimator(enc)
    assert clone(frozen) is frozen
    assert frozen.fit(pd.DataFrame({"app_id": ["other"] * 9}), None).vocabulary_ == {
        "app_id": ["code", "slack", "zoom"]
    }
    assert not hasattr(clone(enc), "vocabulary_")  # unfrozen, a clone is unfitted


@settings(max_examples=40, deadline=None)
@given(
    vocabulary=st.lists(st.sampled_from(["a", "b", "c", "d", "é", UNKNOWN]), unique=True),
    values=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "é", "x", "y"]))),
    as_category=st.booleans(),
)
def test_codes_match_the_rule(vocabulary, values, as_category):
    enc = CategoricalEncoder.from_vocabulary({"app_id": vocabulary})
    dtype = "category" if as_category else object
    assert codes_of(enc, values, dtype=dtype) == reference_codes(values, vocabulary)


def test_other_columns_are_kept_and_absent_vocabulary_columns_ignored():
    enc = CategoricalEncoder.from_vocabulary({"app_id": ["code"], "domain_category": ["work"]})
    df = pd.DataFrame({"app_id": ["code"], "keys_per_min": [3.0]}, index=[7])
    out = enc.transform(df)
    assert list(out.columns) == ["app_id", "keys_per_min"]
    assert out.index.tolist() == [7]
    assert out["keys_per_min"].tolist() == [3.0]


def fit_frame():
    # v2 categoricals: app_id, app_category, domain_category
    apps = ["code"] * 10 + ["slack"] * 6 + ["vim"] * 2 + ["zoom"]
    return pd.DataFrame(
        {
            "app_id": apps,
            "app_category": ["dev"] * len(apps),
            "domain_category": ["work", "misc"] * 9 + ["work"],
        }
    )


def test_fit_learns_frequent_values_plus_unknown():
    df = fit_frame()
    enc = CategoricalEncoder(schema_version="v2", min_category_freq=5).fit(df)
    assert enc.vocabulary_ == {
        "app_id": [UNKNOWN, "code", "slack"],
        "app_category": [UNKNOWN, "dev"],
        "domain_category": [UNKNOWN, "misc", "work"],
    }
    # rare values map to __unknown__ at transform time
    assert enc.transform(df)["app_id"].tolist()[-3:] == [UNKNOWN] * 3
    lowered = CategoricalEncoder(schema_version="v2", min_category_freq=2).fit(df)
    assert lowered.vocabulary_["app_id"] == [UNKNOWN, "code", "slack", "vim"]


def test_fit_requires_the_schema_categoricals():
    with pytest.raises(MissingColumnsError, match="'app_category', 'domain_category'"):
        CategoricalEncoder(schema_version="v2").fit(pd.DataFrame({"app_id": ["a"]}))


def test_fit_transform_masks_a_seeded_fraction_of_known_values():
    df = pd.DataFrame(
        {
            "app_id": ["code", "slack"] * 500,
            "app_category": ["dev"] * 1000,
            "domain_category": ["work"] * 1000,
        }
    )
    enc = CategoricalEncoder(schema_version="v2", unknown_mask_rate=0.2, random_state=3)
    first = enc.fit_transform(df)
    again = clone(enc).fit_transform(df)
    pd.testing.assert_frame_equal(first, again)
    masked = (first["app_id"] == UNKNOWN).mean()
    assert 0.15 < masked < 0.25
    # plain transform masks nothing
    assert (enc.transform(df)["app_id"] == UNKNOWN).sum() == 0
    no_mask = CategoricalEncoder(schema_version="v2", unknown_mask_rate=0.0).fit_transform(df)
    assert (no_mask["app_id"] == UNKNOWN).sum() == 0
    # v1 (v2's categoricals and user_id): user_id passes, the others are masked as in v2
    v1 = enc.set_params(schema_version="v1").fit_transform(df.assign(user_id="u"))
    assert set(enc.vocabulary_) == set(df.columns)
    pd.testing.assert_frame_equal(v1, first.assign(user_id="u"))


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (
            {"min_category_freq": 0},
            "min_category_freq must be an integer in [1, 2147483648], got 0",
        ),
        ({"unknown_mask_rate": 1.0}, "unknown_mask_rate must be a number in [0.0, 1.0), got 1.0"),
        ({"unknown_mask_rate": -0.1}, "unknown_mask_rate must be a number in [0.0, 1.0)"),
        ({"schema_version": "v9"}, "schema_version must be None or one of ['v1', 'v2', 'v3']"),
        ({"random_state": -1}, "random_state must be None or an integer in [0, 4294967295]"),
    ],
)
def test_bad_parameters_are_refused_at_fit(params, words):
    encoder = CategoricalEncoder(schema_version="v2").set_params(**params)  # only stored
    refused(lambda: encoder.fit(fit_frame()), InvalidParameterError, "CategoricalEncoder: " + words)


@pytest.mark.parametrize(
    ("vocabulary", "words"),
    [
        (["code"], ("a vocabulary maps column names", "got list")),
        ({"app_id": ["code", 3]}, ("vocabulary['app_id']", "one sortable type")),
    ],
)
def test_bad_vocabulary_is_refused(vocabulary, words):
    refused(lambda: CategoricalEncoder.from_vocabulary(vocabulary), InvalidParameterError, *words)


def test_user_id_is_left_to_the_model_stage():
    enc = CategoricalEncoder.from_vocabulary({"user_id": ["u1", "u2"], "app_id": ["code"]})
    df = pd.DataFrame({"user_id": ["u2", "new", "u1"], "app_id": ["code", "vim", "code"]})
    out = enc.transform(df)
    assert enc.vocabulary_ == {"app_id": ["code"]}
    pd.testing.assert_series_equal(out["user_id"], df["user_id"])
    assert out["app_id"].cat.codes.tolist() == [0, -1, 0]
    assert list(out.columns) == ["user_id", "app_id"]


def test_given_vocabulary_is_not_masked_when_a_pipeline_fits():
    frame = pd.DataFrame({"app_id": ["a", "b"] * 500})
    encoder = CategoricalEncoder.from_vocabulary({"app_id": [UNKNOWN, "a", "b"]})
    encoder.set_params(unknown_mask_rate=0.5)
    fitted = Pipeline([("encode", FrozenEstimator(encoder))]).fit_transform(frame)
    pd.testing.assert_frame_equal(fitted, encoder.transform(frame))
