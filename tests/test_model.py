"""BoosterPredictor: the schema's feature columns in order, categoricals as codes,
missing values 0, a float64 matrix, ``booster.predict`` -> (n, 8) probabilities."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from taskclf._columns import PROBA_COLUMNS
from taskclf.core.schema import SCHEMA_V1, SCHEMA_V2
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    ColumnTypeError,
    InvalidParameterError,
    MissingColumnsError,
    ProbabilityShapeError,
    SchemaMismatchError,
)
from taskclf.stages.encode import CategoricalEncoder
from taskclf.stages.model import BoosterPredictor, feature_matrix


def reference_matrix(df, encoders, schema):
    """The model input, cell by cell: categoricals by their LabelEncoder, missing -> 0."""
    rows = []
    for _, row in df.iterrows():
        cells = []
        for name in schema.feature_columns:
            value = row[name]
            if name in schema.categorical_columns:
                cells.append(float(encoders[name].transform([value])[0]))
            elif pd.isna(value):
                cells.append(0.0)
            else:
                cells.append(float(value))
        rows.append(cells)
    return np.array(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def small(frame_v1):
    return frame_v1.drop(columns="label").iloc[::37].reset_index(drop=True)


@pytest.fixture(scope="module")
def encoder(encoders_v1):
    return CategoricalEncoder.from_vocabulary(encoders_v1)


@pytest.fixture(scope="module")
def users(encoders_v1):
    """The booster's vocabulary of ``user_id``, which the model stage encodes."""
    return encoders_v1["user_id"].classes_.tolist()


@pytest.fixture(scope="module")
def stage(booster_v1, encoders_v1):
    return BoosterPredictor.from_booster(booster_v1, user_vocabulary=encoders_v1["user_id"])


def with_gaps(df):
    """Missing numbers, a boolean column with gaps (object dtype), nullable integers."""
    n = len(df)
    out = df.copy()
    out.loc[[1, 4], "keys_per_min"] = np.nan
    out.loc[2, "mouse_distance"] = None
    out["is_browser"] = pd.Series([True, None] * (n // 2) + [False] * (n % 2), dtype=object)
    out["hour_of_day"] = pd.array([9, None] * (n // 2) + [10] * (n % 2), dtype="Int64")
    return out


def test_feature_matrix_follows_the_schema(small, encoder, encoders_v1, users):
    df = with_gaps(small)
    matrix = feature_matrix(encoder.transform(df), SCHEMA_V1, users)
    assert matrix.dtype == np.float64 and matrix.shape == (len(df), 39)
    np.testing.assert_array_equal(matrix, reference_matrix(df, encoders_v1, SCHEMA_V1))
    column = SCHEMA_V1.feature_columns.index
    assert matrix[[1, 4], column("keys_per_min")].tolist() == [0.0, 0.0]
    assert matrix[:2, column("is_browser")].tolist() == [1.0, 0.0]
    assert matrix[:2, column("hour_of_day")].tolist() == [9.0, 0.0]
    # column order and extra columns do not matter
    encoded = encoder.transform(df)
    shuffled = encoded[list(reversed(encoded.columns))].assign(extra="text")
    np.testing.assert_array_equal(feature_matrix(shuffled, SCHEMA_V1, users), matrix)


def test_transform_adds_probabilities_from_the_booster(small, encoder, stage, encoders_v1):
    encoded = encoder.transform(small)
    out = stage.transform(encoded)
    expected = stage.booster_.predict(reference_matrix(small, encoders_v1, SCHEMA_V1))
    assert expected.shape == (len(small), 8)
    assert list(out.columns) == [*encoded.columns, *PROBA_COLUMNS]
    np.testing.assert_allclose(out[list(PROBA_COLUMNS)].to_numpy(), expected, rtol=0, atol=0)
    assert tuple(f"proba_{c}" for c in CLASS_ORDER) == PROBA_COLUMNS


def test_schema_is_guessed_from_the_booster_width_or_checked_against_it(booster_v1):
    assert BoosterPredictor.from_booster(booster_v1).schema_ is SCHEMA_V1
    with pytest.raises(SchemaMismatchError, match="schema v2 has 38 .* booster expects 39"):
        BoosterPredictor.from_booster(booster_v1, schema_version="v2")
    assert SCHEMA_V2.n_features == 38


def test_frame_declaring_another_schema_is_refused(small, encoder, stage):
    v2 = encoder.transform(small).assign(schema_version="v2")
    with pytest.raises(SchemaMismatchError, match="schema_version column holds \\['v2'\\]"):
        stage.predict_proba(v2)
    tampered = encoder.transform(small).assign(schema_hash="0123456789ab")
    with pytest.raises(SchemaMismatchError, match="'0123456789ab'.*expects '4077fe0dba70'"):
        stage.predict_proba(tampered)
    good = encoder.transform(small).assign(schema_version="v1", schema_hash="4077fe0dba70")
    assert stage.predict_proba(good).shape == (len(small), 8)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (
            lambda df: df.drop(columns=["keys_per_min", "hour_of_day"]),
            MissingColumnsError,
            "2 required column.*'keys_per_min', 'hour_of_day'",
        ),
        (
            lambda df: df.assign(keys_per_min=df["keys_per_min"].round(1).astype(str)),
            ColumnTypeError,
            "column 'keys_per_min' must hold numbers",
        ),
        (
            lambda df: df.assign(app_id=df["app_id"].astype(str)),
            ColumnTypeError,
            "categorical column 'app_id' is not encoded",
        ),
    ],
)
def test_bad_feature_columns_are_named(change, error, words, small, encoder, stage):
    with pytest.raises(error, match=words):
        stage.predict_proba(change(encoder.transform(small)))


def test_probabilities_of_the_wrong_width_are_refused(small, encoder, booster_3_classes, users):
    stage = BoosterPredictor.from_booster(booster_3_classes, user_vocabulary=users)
    with pytest.raises(ProbabilityShapeError, match=r"shape \(\d+, 3\); expected \(n, 8\)"):
        stage.predict_proba(encoder.transform(small))


def test_without_a_booster(small, booster_v1):
    # scikit-learn's error (taskclf's NotFittedError is one too)
    with pytest.raises(SklearnNotFittedError, match="BoosterPredictor"):
        BoosterPredictor().predict_proba(small)
    with pytest.raises(InvalidParameterError, match="lightgbm.Booster, got str"):
        BoosterPredictor.from_booster("model.txt")
    with pytest.raises(InvalidParameterError, match="user_vocabulary must hold values"):
        BoosterPredictor.from_booster(booster_v1, user_vocabulary=["a", 3])


def test_numeric_category_columns_are_read_through_their_values(small, encoder, users):
    # categories [9, 10, ...] have codes 0, 1, ...: the model must see 9, 10, ...
    hours = small["hour_of_day"].round().astype(int) + 10
    df = small.assign(hour_of_day=hours.astype("category"))
    column = SCHEMA_V1.feature_columns.index("hour_of_day")
    matrix = feature_matrix(encoder.transform(df), SCHEMA_V1, users)
    assert matrix[:, column].tolist() == hours.astype(float).tolist()
    assert hours.nunique() > 1 and hours.min() > 0


def test_the_stage_encodes_user_id_over_its_vocabulary(small, encoder, encoders_v1, users):
    df = encoder.transform(small.assign(user_id=["new-user"] * len(small)))
    column = SCHEMA_V1.feature_columns.index("user_id")
    # unseen and no __unknown__ in the LabelEncoder vocabulary: code -1
    assert feature_matrix(df, SCHEMA_V1, users)[:, column].tolist() == [-1.0] * len(small)
    known = feature_matrix(encoder.transform(small), SCHEMA_V1, users)[:, column]
    assert known.tolist() == encoders_v1["user_id"].transform(small["user_id"]).tolist()
    # without a vocabulary, user_id must come encoded
    with pytest.raises(ColumnTypeError, match="'user_id' is not encoded"):
        feature_matrix(df, SCHEMA_V1)
    codes = feature_matrix(df.assign(user_id=df["user_id"].astype("category")), SCHEMA_V1)
    assert codes[:, column].tolist() == [0.0] * len(small)


def test_prediction_in_row_blocks_equals_one_call(frame_v1, encoder, stage, users, monkeypatch):
    import taskclf.stages.model as predict_module

    encoded = encoder.transform(frame_v1.drop(columns="label"))
    whole = stage.booster_.predict(feature_matrix(encoded, SCHEMA_V1, users))
    monkeypatch.setattr(predict_module, "PREDICT_ROWS", 100)
    monkeypatch.setattr(predict_module, "_FILL_ROWS", 7)
    blocks = stage.predict_proba(encoded)
    assert len(encoded) > 300 and len(encoded) % 100 != 0
    np.testing.assert_array_equal(blocks, whole)


def test_fit_learns_the_users_and_trains_every_model_on_one_masked_matrix(
    frame_v1, encoder, monkeypatch
):
    X = encoder.transform(frame_v1.drop(columns="label"))
    X["user_id"] = np.where(np.arange(len(X)) < 4, "rare", X["user_id"])
    y = frame_v1["label"]
    matrices = []
    train = BoosterPredictor._train
    monkeypatch.setattr(
        BoosterPredictor, "_train", lambda self, m, *a: matrices.append(m) or train(self, m, *a)
    )
    params = {"num_boost_round": 1, "num_threads": 1, "n_folds": 2, "random_state": 3}
    stage = BoosterPredictor(unknown_mask_rate=0.2, **params)
    stage.fit_transform(X, y)
    assert stage.user_vocabulary_ == ["__unknown__", "user0", "user1", "user2"]
    full, *folds = matrices
    unknown = full[:, SCHEMA_V1.feature_columns.index("user_id")] == 0
    assert unknown[:4].all() and 0.15 < unknown[4:].mean() < 0.25  # rare, and masked
    assert len(folds) == 2
    for k, matrix in enumerate(folds):  # the out-of-fold models see the masked rows too
        np.testing.assert_array_equal(matrix, full[stage.oof_fold_ != k])
    stage.fit(X, y)  # seeded
    np.testing.assert_array_equal(matrices[-1], full)
    stage.set_params(unknown_mask_rate=0.0, min_category_freq=4).fit(X, y)
    assert "rare" in stage.user_vocabulary_ and not (matrices[-1][:, -1] == 0).any()
    v2 = BoosterPredictor("v2", **params).fit(X, y)
    assert v2.user_vocabulary_ is None and matrices[-1].shape[1] == 38
    for bad, words in [
        ({"min_category_freq": 0}, "min_category_freq must be an integer in [1, 2147483648]"),
        ({"unknown_mask_rate": 1.0}, "unknown_mask_rate must be a number in [0.0, 1.0)"),
    ]:
        with pytest.raises(InvalidParameterError, match=re.escape(words)):
            clone(stage).set_params(**bad).fit(X, y)
