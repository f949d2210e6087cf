"""scikit-learn compatibility of every stage.

Three layers:

1. ``parametrize_with_checks`` on every stage, with the tags the stages
   declare. A stage reads named columns of a DataFrame, so its
   ``__sklearn_tags__`` say ``two_d_array=False``; scikit-learn then runs
   the checks that need no data (cloning) and skips its array-based ones.
2. The API checks of scikit-learn that never look at data, which
   ``parametrize_with_checks`` skips along with the array-based ones
   (repr, parameters, tags, mixin order, ...), run one by one: every
   stage passes them all (``set_params`` only stores; parameters are
   checked in ``fit`` and ``transform``).
3. The array-based checks that matter, restated on real DataFrames: fit
   returns self and keeps the parameters, no input mutation, determinism,
   pickling and cloning, row-order and subset invariance, empty input,
   and that each declared tag (input type, NaN, fitting) is true. The
   pre-trained parts are checked as the pipeline holds them: fitted
   stages in ``sklearn.frozen.FrozenEstimator``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame
from sklearn.base import clone
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.frozen import FrozenEstimator
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    check_valid_tag_types,
    estimator_checks_generator,
    parametrize_with_checks,
)

from taskclf import (
    BoosterPredictor,
    Calibrator,
    CalibratorStore,
    CategoricalEncoder,
    HysteresisMerger,
    IdentityCalibrator,
    MajoritySmoother,
    Rejector,
    Segmenter,
    TemperatureCalibrator,
    build_pipeline,
)
from taskclf._columns import (
    CONFIDENCE,
    IS_REJECTED,
    LABEL,
    MAPPED_LABEL,
    PROBA_COLUMNS,
    RAW_LABEL,
    SEGMENT_ID,
    SMOOTHED_LABEL,
)
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import InputError
from taskclf.stages.viterbi import ViterbiSmoother
from taskclf.taxonomy import TaxonomyBucket, TaxonomyConfig, TaxonomyMapper

TAXONOMY = TaxonomyConfig(
    [
        TaxonomyBucket("Coding", ["Build", "Debug", "Review"]),
        TaxonomyBucket("Talking", ["Meet", "Communicate"], color="#FF8800"),
    ]
)


def sklearn_instances() -> list[Any]:
    return [
        CategoricalEncoder(),
        BoosterPredictor(num_boost_round=3),
        Calibrator(),
        Calibrator(method="temperature", per_user=True),
        Rejector(0.55),
        MajoritySmoother(),
        Segmenter(),
        HysteresisMerger(),
        HysteresisMerger(join_equal=False),
        ViterbiSmoother(),
        TaxonomyMapper(),
        TaxonomyMapper(TAXONOMY),
    ]


# --------------------------------------------------------------------------
# 1. scikit-learn's own parametrization
# --------------------------------------------------------------------------


with warnings.catch_warnings():
    # scikit-learn warns, for each stage, that it skips its array-based
    # checks (SkipTestWarning): test_sklearn_runs_only_data_free_checks
    # states that instead.
    warnings.simplefilter("ignore", SkipTestWarning)
    _sklearn_parametrization = parametrize_with_checks(sklearn_instances())


def stable_id(value: Any) -> str:
    """A test id without memory addresses (the booster's repr has one), so
    that every pytest-xdist worker collects the same tests."""
    if hasattr(value, "get_params"):
        return re.sub(r"\s|object at 0x[0-9a-fA-F]+", "", repr(value))
    return getattr(value, "func", value).__name__


@pytest.mark.parametrize(*_sklearn_parametrization.args, ids=stable_id)
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_sklearn_runs_only_data_free_checks_on_dataframe_stages():
    # If a scikit-learn release starts running array-based checks on
    # stages declaring two_d_array=False, this fails: review the tags and
    # the expected failures then.
    for estimator in sklearn_instances():
        with pytest.warns(SkipTestWarning, match="Can't test estimator"):
            checks = list(estimator_checks_generator(estimator))
        names = [getattr(check, "func", check).__name__ for _, check in checks]
        assert names == ["check_estimator_cloneable"], names


# --------------------------------------------------------------------------
# 2. scikit-learn's data-free API checks, which the decorator skips
# --------------------------------------------------------------------------

DATA_FREE_CHECKS = [
    check_estimator_cloneable,
    check_estimator_repr,
    check_no_attributes_set_in_init,
    check_estimator_tags_renamed,
    check_valid_tag_types,
    check_mixin_order,
    check_parameters_default_constructible,
    check_get_params_invariance,
    check_set_params,
    check_do_not_raise_errors_in_init_or_set_params,
]


@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("estimator", sklearn_instances(), ids=stable_id)
def test_sklearn_data_free_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(type(estimator).__name__, estimator)


# --------------------------------------------------------------------------
# 3. The array-based checks restated on real DataFrames
# --------------------------------------------------------------------------


@dataclass
class Case:
    """A stage, how to build it, and what its input looks like."""

    make: Callable[[Any, dict], Any]
    step: str
    """The pipeline step whose input the stage takes."""
    adds: tuple[str, ...]
    """Columns the stage writes (replacing same-named input columns)."""
    nan_column: str
    """An input column the stage reads, for the NaN tag check."""
    row_wise: bool
    """Each row's output depends on that row only."""
    needs_y: bool = False
    """``fit`` learns from the true labels."""
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    """Changes the step's input frame for this case."""
    text_column: str | None = None
    """A column of text the stage reads (labels, categories), if any."""


def _store() -> CalibratorStore:
    return CalibratorStore(
        TemperatureCalibrator(1.5),
        {"user0": TemperatureCalibrator(0.5), "user1": IdentityCalibrator()},
    )


CASES = {
    "encoder-fitted": Case(
        lambda b, e: CategoricalEncoder(min_category_freq=2, unknown_mask_rate=0.0),
        "encode",
        ("app_id", "app_category", "domain_category", "user_id_encoded"),
        "app_id",
        True,
        text_column="app_id",
    ),
    "encoder-vocabulary": Case(
        lambda b, e: FrozenEstimator(CategoricalEncoder.from_vocabulary(e)),
        "encode",
        ("app_id", "app_category", "domain_category", "user_id_encoded"),
        "domain_category",
        True,
        text_column="app_category",
    ),
    "predictor": Case(
        lambda b, e: FrozenEstimator(BoosterPredictor.from_booster(b)),
        "predict",
        PROBA_COLUMNS,
        "keys_per_min",
        True,
    ),
    "calibrator-identity": Case(
        lambda b, e: Calibrator(), "calibrate", PROBA_COLUMNS, PROBA_COLUMNS[2], True
    ),
    "calibrator-temperature": Case(
        lambda b, e: FrozenEstimator(Calibrator.from_maps(TemperatureCalibrator(2.5))),
        "calibrate",
        PROBA_COLUMNS,
        PROBA_COLUMNS[0],
        True,
    ),
    "calibrator-store": Case(
        lambda b, e: FrozenEstimator(Calibrator.from_maps(store=_store())),
        "calibrate",
        PROBA_COLUMNS,
        PROBA_COLUMNS[5],
        True,
    ),
    "predictor-trainable": Case(
        lambda b, e: BoosterPredictor(num_boost_round=4, n_folds=2, num_threads=1),
        "predict",
        PROBA_COLUMNS,
        "keys_per_min",
        True,
        needs_y=True,
    ),
    "calibrator-isotonic": Case(
        lambda b, e: Calibrator(method="isotonic"),
        "calibrate",
        PROBA_COLUMNS,
        PROBA_COLUMNS[4],
        True,
        needs_y=True,
    ),
    "calibrator-per-user": Case(
        lambda b, e: Calibrator(
            method="temperature",
            per_user=True,
            min_user_rows=20,
            min_user_days=1,
            min_user_labels=2,
        ),
        "calibrate",
        PROBA_COLUMNS,
        PROBA_COLUMNS[6],
        True,
        needs_y=True,
    ),
    "viterbi": Case(
        lambda b, e: ViterbiSmoother(switch_prob=0.05),
        "smooth",
        (SMOOTHED_LABEL,),
        PROBA_COLUMNS[1],
        False,
        text_column=RAW_LABEL,
    ),
    "viterbi-raw-label": Case(
        lambda b, e: ViterbiSmoother(switch_prob=0.3, max_gap_seconds=120),
        "smooth",
        (SMOOTHED_LABEL,),
        PROBA_COLUMNS[7],
        False,
        text_column=RAW_LABEL,
        prepare=lambda X: X.drop(columns=IS_REJECTED),  # rejection read from raw_label
    ),
    "rejector": Case(
        lambda b, e: Rejector(0.6),
        "reject",
        (CONFIDENCE, IS_REJECTED, RAW_LABEL),
        PROBA_COLUMNS[1],
        True,
    ),
    "smoother": Case(
        lambda b, e: MajoritySmoother(window=5),
        "smooth",
        (SMOOTHED_LABEL,),
        RAW_LABEL,
        False,
        text_column=RAW_LABEL,
    ),
    "segmenter": Case(
        lambda b, e: Segmenter(),
        "segment",
        (SEGMENT_ID,),
        SMOOTHED_LABEL,
        False,
        text_column=SMOOTHED_LABEL,
    ),
    "mapper": Case(
        lambda b, e: TaxonomyMapper(TAXONOMY),
        "taxonomy",
        (MAPPED_LABEL, "mapped_proba_Coding", "mapped_proba_Talking", "mapped_proba_Other"),
        PROBA_COLUMNS[3],
        True,
        text_column=LABEL,
    ),
    "mapper-default": Case(
        lambda b, e: TaxonomyMapper(),
        "taxonomy",
        (MAPPED_LABEL, *(f"mapped_proba_{c}" for c in CLASS_ORDER)),
        PROBA_COLUMNS[0],
        True,
        text_column=LABEL,
    ),
    "merger": Case(
        lambda b, e: HysteresisMerger(min_block_seconds=240),
        "merge",
        (SEGMENT_ID, LABEL),
        SEGMENT_ID,
        False,
        text_column=SMOOTHED_LABEL,
    ),
    "merger-0.4": Case(
        lambda b, e: HysteresisMerger(min_block_seconds=120, join_equal=False),
        "merge",
        (SEGMENT_ID, LABEL),
        SMOOTHED_LABEL,
        False,
        text_column=SMOOTHED_LABEL,
    ),
}


@pytest.fixture(scope="module")
def raw_frame() -> pd.DataFrame:
    """Three users, interleaved rows, a string index, a category column."""
    frame = make_frame(n_users=3, minutes=90, seed=21).drop(columns="label")
    frame["app_category"] = frame["app_category"].astype("category")
    order = np.random.default_rng(0).permutation(len(frame))
    frame = frame.iloc[order]
    frame.index = pd.Index([f"r{i}" for i in order], name="row")
    return frame


@pytest.fixture(scope="module")
def inputs(raw_frame, booster_v1, encoders_v1) -> dict[str, pd.DataFrame]:
    """The input frame of each step: the pipeline's output up to it."""
    pipeline = build_pipeline(booster_v1, encoders_v1, reject_threshold=0.5, taxonomy=TAXONOMY)
    out = {}
    for position, (step, _) in enumerate(pipeline.steps):
        out[step] = pipeline[:position].transform(raw_frame) if position else raw_frame
    return out


@pytest.fixture(scope="module")
def labels(raw_frame) -> pd.Series:
    """The true label of each row of ``raw_frame`` (same index)."""
    frame = make_frame(n_users=3, minutes=90, seed=21)
    return pd.Series(
        frame["label"].to_numpy()[[int(i[1:]) for i in raw_frame.index]], index=raw_frame.index
    )


@pytest.fixture(params=sorted(CASES))
def case(request, booster_v1, encoders_v1, inputs, labels):
    """(spec, a factory of fresh stages, the stage's input, its labels or None)."""
    spec = CASES[request.param]
    X = inputs[spec.step]
    if spec.prepare is not None:
        X = spec.prepare(X)
    y = labels if spec.needs_y else None
    return spec, (lambda: spec.make(booster_v1, encoders_v1)), X, y


def _fitted(make, X, y):
    return make().fit(X, y)


def _same_partition(a: np.ndarray, b: np.ndarray) -> None:
    """Two labellings of the rows group them the same way."""
    pairs = pd.DataFrame({"a": a, "b": b}).drop_duplicates()
    assert pairs["a"].is_unique and pairs["b"].is_unique


def assert_same_output(left: pd.DataFrame, right: pd.DataFrame, spec: Case) -> None:
    """Outputs equal; segment ids compared as partitions of the rows."""
    columns = [c for c in left.columns if c != SEGMENT_ID or SEGMENT_ID not in spec.adds]
    pd.testing.assert_frame_equal(left[columns], right[columns], check_exact=True)
    if SEGMENT_ID in spec.adds:
        _same_partition(left[SEGMENT_ID].to_numpy(), right[SEGMENT_ID].to_numpy())


def test_fit_returns_self_and_keeps_its_parameters(case):
    _, make, X, y = case
    stage = make()
    params = stage.get_params(deep=False)
    attributes = set(vars(stage))
    assert stage.fit(X, y) is stage
    assert stage.fit(X, y) is stage
    after = stage.get_params(deep=False)
    assert after.keys() == params.keys()
    for name, value in params.items():
        assert after[name] is value, name  # not replaced, not copied
    added = set(vars(stage)) - attributes
    assert all(a.endswith("_") or a.startswith("_") for a in added), added


@pytest.mark.parametrize("method", ["transform", "fit_transform"])
def test_no_stage_mutates_its_input(case, method):
    _, make, X, y = case
    stage = _fitted(make, X, y) if method in ("transform", "predict") else make()
    if not hasattr(stage, method):  # a frozen stage has no fit_transform
        method = "fit"
    original = X.copy(deep=True)
    y_original = None if y is None else y.copy(deep=True)
    out = getattr(stage, method)(X, y) if method.startswith("fit") else getattr(stage, method)(X)
    if y is not None:
        pd.testing.assert_series_equal(y, y_original)
    pd.testing.assert_frame_equal(
        X,
        original,
        check_exact=True,
        check_index_type=True,
        check_column_type=True,
        check_categorical=True,
        check_flags=True,
    )
    for column in X.columns:
        if isinstance(X[column].dtype, pd.CategoricalDtype):
            assert X[column].dtype == original[column].dtype
    if isinstance(out, pd.DataFrame) and len(out):
        # the output shares no writable memory with the input
        for column in out.columns:
            values = out[column].to_numpy(copy=True)
            out.loc[out.index[0], column] = values[-1]
        pd.testing.assert_frame_equal(X, original, check_exact=True)


def test_output_keeps_the_callers_columns_rows_and_index(case):
    spec, make, X, y = case
    out = _fitted(make, X, y).transform(X)
    assert list(out.columns[: X.shape[1]]) == list(X.columns)
    assert set(spec.adds) <= set(out.columns)
    pd.testing.assert_index_equal(out.index, X.index, exact=True)
    kept = [c for c in X.columns if c not in spec.adds]
    pd.testing.assert_frame_equal(out[kept], X[kept], check_exact=True)


def test_transform_is_deterministic_and_fit_is_idempotent(case):
    _, make, X, y = case
    stage = _fitted(make, X, y)
    first = stage.transform(X)
    pd.testing.assert_frame_equal(stage.transform(X), first, check_exact=True)
    pd.testing.assert_frame_equal(stage.fit(X, y).transform(X), first, check_exact=True)


@pytest.mark.parametrize("how", ["joblib", "clone"])
def test_round_trips_give_the_same_output(case, how, tmp_path):
    _, make, X, y = case
    stage = _fitted(make, X, y)
    expected = stage.transform(X)
    if how == "joblib":  # pickles
        joblib.dump(stage, tmp_path / "stage.joblib")
        other = joblib.load(tmp_path / "stage.joblib")
    else:
        other = clone(stage).fit(X, y)
    pd.testing.assert_frame_equal(other.transform(X), expected, check_exact=True)


def test_row_order_does_not_matter(case):
    spec, make, X, y = case
    stage = _fitted(make, X, y)
    expected = stage.transform(X)
    shuffled = X.iloc[np.random.default_rng(1).permutation(len(X))]
    out = stage.transform(shuffled)
    pd.testing.assert_index_equal(out.index, shuffled.index)
    assert_same_output(out.loc[X.index], expected, spec)


def test_subsets_give_the_same_rows(case):
    # Row-wise stages: any subset of rows. Stages along time: whole users
    # (a window or a segment needs its neighbours, so an arbitrary subset
    # of rows would not give the same result, by design).
    spec, make, X, y = case
    stage = _fitted(make, X, y)
    expected = stage.transform(X)
    if spec.row_wise:
        rows = np.random.default_rng(2).random(len(X)) < 0.3
        subsets = [rows, ~rows]
    else:
        users = X["user_id"].to_numpy()
        subsets = [users == u for u in pd.unique(users)]
    for rows in subsets:
        assert_same_output(stage.transform(X[rows]), expected[rows], spec)


def test_empty_frame_gives_an_empty_frame_with_the_columns(case):
    _, make, X, y = case
    stage = _fitted(make, X, y)
    out = stage.transform(X.iloc[:0])
    assert len(out) == 0
    assert list(out.columns) == list(stage.transform(X).columns)


def test_declared_input_is_a_dataframe(case):
    _, make, X, y = case
    stage = make()
    tags = get_tags(stage)
    assert tags.input_tags.two_d_array is False
    assert tags.transformer_tags is not None and tags.transformer_tags.preserves_dtype == []
    numbers = X.select_dtypes("number").to_numpy()
    with pytest.raises(InputError, match="DataFrame"):
        _fitted(make, X, y).transform(numbers)
    with pytest.raises(InputError, match="DataFrame"):  # an array never gets through
        make().fit(numbers, y).transform(numbers)


def test_declared_nan_support_is_true(case):
    spec, make, X, y = case
    stage = _fitted(make, X, y)
    column = X[spec.nan_column]
    if isinstance(column.dtype, pd.CategoricalDtype):
        holed = column.copy()
    else:
        holed = column.astype(object if not pd.api.types.is_float_dtype(column) else float)
    holed.iloc[5] = np.nan
    with_nan = X.assign(**{spec.nan_column: holed})
    if get_tags(stage).input_tags.allow_nan:
        out = stage.transform(with_nan)
        assert len(out) == len(X)
    else:
        with pytest.raises(InputError, match=spec.nan_column):
            stage.transform(with_nan)


def test_declared_need_for_fitting_is_true(case):
    _, make, X, y = case
    fresh = make()
    if isinstance(fresh, FrozenEstimator):  # given parts: the stage they come from
        fresh = clone(fresh.estimator)
    if get_tags(fresh).requires_fit:
        with pytest.raises(NotFittedError):
            fresh.transform(X)
    else:
        pd.testing.assert_frame_equal(
            fresh.transform(X), clone(fresh).fit(X, y).transform(X), check_exact=True
        )


def test_declared_text_input_is_true(booster_v1, encoders_v1):
    # a stage declares string (and categorical) input exactly when it reads
    # a text column, which the next test feeds in each form
    for name, spec in CASES.items():
        tags = get_tags(spec.make(booster_v1, encoders_v1))
        assert tags.input_tags.string is (spec.text_column is not None), name


@pytest.mark.parametrize("name", sorted(n for n, spec in CASES.items() if spec.text_column))
def test_text_columns_as_str_object_or_category_give_the_same_output(
    name, booster_v1, encoders_v1, inputs
):
    spec = CASES[name]
    X = inputs[spec.step] if spec.prepare is None else spec.prepare(inputs[spec.step])
    stage = spec.make(booster_v1, encoders_v1).fit(X, None)
    expected = stage.transform(X)
    column = spec.text_column
    kept = [c for c in expected.columns if c != column or column in spec.adds]
    for dtype in ("str", "object", "category"):
        other = X.assign(**{column: X[column].astype(dtype)})
        assert_same_output(stage.transform(other)[kept], expected[kept], spec)
        if hasattr(stage, "predict"):
            np.testing.assert_array_equal(
                np.asarray(stage.predict(other), dtype=str),
                np.asarray(stage.predict(X), dtype=str),
            )
