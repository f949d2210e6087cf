"""The model stage: LightGBM class probabilities for each bucket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import check_is_fitted

from taskclf._columns import PROBA_COLUMNS, USER_ID
from taskclf._folds import check_labels, group_folds
from taskclf._frame import add_columns, check_frame, frame_tags, require_columns
from taskclf._progress import step
from taskclf.core.defaults import DEFAULT_MIN_CATEGORY_FREQ, DEFAULT_UNKNOWN_MASK_RATE
from taskclf.core.schema import (
    SCHEMA_VERSIONS,
    SCHEMAS,
    FeatureSchema,
    check_frame_schema,
    get_schema,
    resolve_schema_version,
    schema_for_n_features,
)
from taskclf.core.types import CLASS_INDEX, CLASS_ORDER, N_CLASSES
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    ProbabilityShapeError,
    SchemaMismatchError,
)
from taskclf.stages._base import check_params, instance_of, integer, one_of, optional, real
from taskclf.stages.encode import encode_column, learn_vocabulary, mask_known, vocabulary_of

_FILL_ROWS = 8192  # a block stays in cache (whole strided columns are 10x slower)
PREDICT_ROWS = 131_072  # rows per booster.predict call, bounding the matrix's memory
DEFAULT_NUM_BOOST_ROUND = 100
DEFAULT_N_FOLDS = 3

_NUMBER_KINDS = frozenset({"boolean", "integer", "floating", "mixed-integer-float", "empty"})


def _numeric(column: pd.Series, name: str, categorical: bool) -> np.ndarray:
    """One feature column as a 1-D numeric array (numpy-backed columns not copied)."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        if categorical:
            return column.cat.codes.to_numpy()
        column = column.astype(dtype.categories.dtype)  # numbers through their values
        dtype = column.dtype
    if categorical:
        raise ColumnTypeError(
            f"categorical column {name!r} is not encoded ({dtype}) and the pipeline "
            "has no vocabulary of it"
        )
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        return column.to_numpy()
    kind = pd.api.types.infer_dtype(column, skipna=True) if dtype == np.dtype(object) else ""
    if not pd.api.types.is_complex_dtype(dtype) and (  # no silent loss of imaginary parts
        pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
        or kind in _NUMBER_KINDS
    ):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    sample = column.dropna().head(3).tolist()  # none in an empty frame (Dask's meta)
    such_as = f" such as {sample!r}" if sample else ""
    raise ColumnTypeError(f"column {name!r} must hold numbers, found {dtype} values{such_as}")


def feature_columns(
    X: pd.DataFrame, schema: FeatureSchema, user_vocabulary: list[Any] | None = None
) -> list[np.ndarray]:
    """The schema's features of ``X`` as 1-D arrays, categoricals as codes (user_id's if given)."""
    require_columns(X, schema.feature_columns, "feature matrix")
    categorical = set(schema.categorical_columns)
    return [
        encode_column(X[name], pd.Index(user_vocabulary, dtype=object))
        if name == USER_ID and user_vocabulary is not None
        else _numeric(X[name], name, name in categorical)
        for name in schema.feature_columns
    ]


def fill_matrix(arrays: list[np.ndarray], start: int, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` (C-ordered float64) with rows ``start:`` of ``arrays``, missing values 0."""
    for lo in range(0, len(out), _FILL_ROWS):
        block = out[lo : lo + _FILL_ROWS]
        for j, values in enumerate(arrays):
            block[:, j] = values[start + lo : start + lo + len(block)]
    out[np.isnan(out)] = 0.0
    return out


def feature_matrix(
    X: pd.DataFrame, schema: FeatureSchema, user_vocabulary: list[Any] | None = None
) -> np.ndarray:
    """The booster's input: the schema's features as a float64 matrix, missing values 0."""
    arrays = feature_columns(X, schema, user_vocabulary)
    return fill_matrix(arrays, 0, np.empty((len(X), len(arrays))))


def predict_matrix(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """``booster.predict`` checked to give one probability column per class."""
    proba = np.asarray(booster.predict(matrix), dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
        raise ProbabilityShapeError(
            f"the booster returned probabilities of shape {proba.shape}; "
            f"expected (n, {N_CLASSES}): one column per class"
        )
    return proba


def _check_class_weight(value: Any) -> str | None:
    """Parameter rule of ``class_weight``."""
    expected = "'balanced', None or a mapping of core labels to weights >= 0"
    if value is None or (isinstance(value, str) and value == "balanced"):
        return None
    if not isinstance(value, Mapping):
        return expected
    for label, weight in value.items():
        if label not in CLASS_INDEX:
            return f"{expected}; {label!r} is not one of {list(CLASS_ORDER)}"
        if not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            return expected
    return None


class BoosterPredictor(TransformerMixin, BaseEstimator):
    """Pipeline stage: ``proba_<Label>`` for the eight classes, from a LightGBM booster.

    ``fit(X, y)`` trains a seeded, deterministic LightGBM multiclass model on the
    schema's feature columns; :meth:`from_booster` wraps a pre-trained one.
    ``fit_transform`` returns *out-of-fold* probabilities (docs/tuning.md).

    Parameters
    ----------
    schema_version : str, optional
        Feature schema to train on; resolved from the frame when omitted.
    params : dict, optional
        LightGBM parameters overriding the defaults (see :meth:`lightgbm_params`).
    class_weight : "balanced", dict or None, default "balanced"
        Row weights: inversely proportional to class frequency, a weight
        per core label, or none.
    num_boost_round, n_folds, random_state, num_threads : int
        Boosting rounds, folds (fewer when there are fewer groups), LightGBM
        ``seed`` (and the seed of masking) and threads.
    min_category_freq, unknown_mask_rate
        At fit, rarer user ids become ``__unknown__``, and this seeded fraction
        of known ones is masked to it in the training matrix.
    backend : {"lightgbm", "compiled"}, default "lightgbm"
        LightGBM, or the booster compiled to machine code (see docs/performance.md).

    Attributes
    ----------
    booster_ : lightgbm.Booster
    schema_ : FeatureSchema
    user_vocabulary_ : list or None
        Sorted vocabulary of ``user_id``, which this stage encodes (v1; else None).
    oof_fold_ : ndarray of int8
        Held-out fold of each training row (set by ``fit_transform``).

    Examples
    --------
    >>> stage = BoosterPredictor(num_boost_round=20, num_threads=1)
    >>> stage.get_params()["num_boost_round"]
    20
    """

    _parameter_rules: ClassVar = {
        "schema_version": optional(one_of(*SCHEMA_VERSIONS)),
        "params": optional(instance_of(Mapping, what="a mapping of LightGBM parameters")),
        "num_boost_round": integer(1, 100_000),
        "class_weight": _check_class_weight,
        "n_folds": integer(2, 100),
        "random_state": optional(integer(0, 2**31 - 1)),
        "num_threads": optional(integer(0, 4096)),
        "backend": one_of("lightgbm", "compiled"),
        "min_category_freq": integer(1, 2**31),
        "unknown_mask_rate": real(0.0, 1.0, open_high=True),
    }

    def __init__(
        self,
        schema_version: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        num_boost_round: int = DEFAULT_NUM_BOOST_ROUND,
        class_weight: Any = "balanced",
        n_folds: int = DEFAULT_N_FOLDS,
        random_state: int | None = 0,
        num_threads: int | None = None,
        backend: str = "lightgbm",
        min_category_freq: int = DEFAULT_MIN_CATEGORY_FREQ,
        unknown_mask_rate: float = DEFAULT_UNKNOWN_MASK_RATE,
    ) -> None:
        self.schema_version = schema_version
        self.params = params
        self.num_boost_round = num_boost_round
        self.class_weight = class_weight
        self.n_folds = n_folds
        self.random_state = random_state
        self.num_threads = num_threads
        self.backend = backend
        self.min_category_freq = min_category_freq
        self.unknown_mask_rate = unknown_mask_rate

    @classmethod
    def from_booster(
        cls,
        booster: Any,
        schema_version: str | None = None,
        *,
        user_vocabulary: Any = None,
        backend: str = "lightgbm",
    ) -> BoosterPredictor:
        """A fitted stage around a pre-trained booster (schema guessed from its width).

        ``user_vocabulary`` (a ``LabelEncoder`` or values) encodes a v1 booster's ``user_id``.
        Raises InvalidParameterError for a non-booster, SchemaMismatchError if its width
        matches no schema (or not the given one).
        """
        if not hasattr(booster, "predict") or not hasattr(booster, "num_feature"):
            raise InvalidParameterError(
                f"booster must be a lightgbm.Booster, got {type(booster).__name__}"
            )
        stage = cls(schema_version, backend=backend)
        check_params(stage)
        n_features = int(booster.num_feature())
        schema = schema_for_n_features(n_features)
        if schema_version is not None:
            schema = get_schema(schema_version)
            if schema.n_features != n_features:
                raise SchemaMismatchError(
                    f"schema {schema.version} has {schema.n_features} feature columns but "
                    f"the booster expects {n_features}"
                )
        if schema is None:
            raise SchemaMismatchError(
                f"the booster expects {n_features} features, which matches no schema "
                f"({', '.join(f'{s.version}: {s.n_features}' for s in SCHEMAS.values())})"
            )
        stage.booster_ = booster
        stage.schema_ = schema
        stage.user_vocabulary_ = None
        if user_vocabulary is not None:
            stage.user_vocabulary_ = vocabulary_of(user_vocabulary, "user_vocabulary")
        return stage

    def __sklearn_tags__(self) -> Tags:
        # Feature columns by name, categoricals encoded (user_id here); missing values become 0.
        return frame_tags(
            super().__sklearn_tags__(), allow_nan=True, categorical=True, requires_fit=True
        )

    @property
    def classes_(self) -> np.ndarray:
        """The eight classes in class order."""
        return np.asarray(CLASS_ORDER, dtype=object)

    def lightgbm_params(self) -> dict[str, Any]:
        """The LightGBM parameters of training: the defaults below, then ``params``."""
        params: dict[str, Any] = {
            "objective": "multiclass",
            "num_class": N_CLASSES,
            "learning_rate": 0.1,
            "seed": 0 if self.random_state is None else int(self.random_state),
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        if self.num_threads is not None:
            params["num_threads"] = int(self.num_threads)
        return {**params, **(self.params or {})}

    def _train(self, matrix: np.ndarray, codes: np.ndarray, what: str) -> Any:
        import lightgbm as lgb

        categorical = [
            self.schema_.feature_columns.index(c) for c in self.schema_.categorical_columns
        ]
        weight = None  # per row; 1 for the labels a mapping omits
        if isinstance(self.class_weight, str):
            weight = compute_sample_weight("balanced", codes)
        elif self.class_weight is not None:
            weight = np.array([self.class_weight.get(c, 1.0) for c in CLASS_ORDER])[codes]
        dataset = lgb.Dataset(
            matrix,
            label=codes,
            weight=weight,
            categorical_feature=categorical,
            free_raw_data=True,
        )
        with step(what, self.num_boost_round) as advance:
            try:
                return lgb.train(
                    self.lightgbm_params(),
                    dataset,
                    num_boost_round=self.num_boost_round,
                    callbacks=[lambda env: advance(1)],
                )
            except lgb.basic.LightGBMError as exc:  # LightGBM refuses its parameters
                raise InvalidParameterError(
                    f"BoosterPredictor: LightGBM cannot train with params={self.params!r}: "
                    f"{str(exc).strip()}"
                ) from None

    def _fit(self, X: pd.DataFrame, y: object) -> tuple[np.ndarray, np.ndarray]:
        """Train ``booster_`` on all rows; return the feature matrix and class codes."""
        check_params(self)
        check_frame(X, type(self).__name__)
        codes = check_labels(y, len(X), f"{type(self).__name__}.fit")
        if len(X) == 0:
            raise InputError("BoosterPredictor.fit: cannot train on an empty frame")
        self.schema_ = get_schema(resolve_schema_version(X, self.schema_version))
        check_frame_schema(X, self.schema_)
        require_columns(X, self.schema_.feature_columns, "feature matrix")
        self.user_vocabulary_ = None
        if USER_ID in self.schema_.feature_columns:
            self.user_vocabulary_ = learn_vocabulary(X[USER_ID], self.min_category_freq)
        matrix = feature_matrix(X, self.schema_, self.user_vocabulary_)
        if self.user_vocabulary_ is not None:
            j = self.schema_.feature_columns.index(USER_ID)
            rng = np.random.default_rng(self.random_state)
            matrix[:, j] = mask_known(
                matrix[:, j], self.user_vocabulary_, self.unknown_mask_rate, rng
            )
        self.booster_ = self._train(matrix, codes, "boosting rounds")
        return matrix, codes

    def fit(self, X: pd.DataFrame, y: object = None) -> BoosterPredictor:
        """Train the model on all rows of the encoded frame ``X`` with core labels ``y``."""
        self._fit(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y: object = None, **_: Any) -> pd.DataFrame:
        """Fit, then return ``X`` with *out-of-fold* probability columns."""
        matrix, codes = self._fit(X, y)
        fold = group_folds(X, self.n_folds)
        proba = np.empty((len(X), N_CLASSES), dtype=np.float64)
        n_folds = int(fold.max()) + 1
        for k in range(n_folds):
            held_out = fold == k
            what = f"out-of-fold model {k + 1}/{n_folds}"
            model = self._train(matrix[~held_out], codes[~held_out], what)
            proba[held_out] = predict_matrix(model, matrix[held_out])
        self.oof_fold_ = fold
        return add_columns(X, pd.DataFrame(proba, columns=list(PROBA_COLUMNS)))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """The (n, 8) probability matrix of the rows of ``X``."""
        check_is_fitted(self)
        check_frame(X, type(self).__name__)
        check_frame_schema(X, self.schema_)
        model = self.booster_
        if self.backend == "compiled":
            from taskclf.stages._compiled import compiled_model

            model = compiled_model(self.booster_)
        arrays = feature_columns(X, self.schema_, self.user_vocabulary_)
        n = len(X)
        proba = np.empty((n, N_CLASSES), dtype=np.float64)
        # One buffer for every block of rows: fresh large allocations cost page faults.
        buffer = np.empty((min(n, PREDICT_ROWS), len(arrays)), dtype=np.float64)
        for start in range(0, n, PREDICT_ROWS):
            block = fill_matrix(arrays, start, buffer[: min(PREDICT_ROWS, n - start)])
            proba[start : start + len(block)] = predict_matrix(model, block)
        return proba

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with the probability columns added."""
        proba = self.predict_proba(X)
        return add_columns(X, pd.DataFrame(proba, columns=list(PROBA_COLUMNS)))
