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

from taskclf._columns import ENCODED_USER_ID, PROBA_COLUMNS, USER_ID
from taskclf._folds import check_labels, group_folds
from taskclf._frame import add_columns, check_frame, frame_tags, require_columns
from taskclf._progress import step
from taskclf.core.schema import (
    SCHEMA_VERSIONS,
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
from taskclf.stages._base import check_params, instance_of, integer, one_of, optional

_FILL_ROWS = 8192
"""Rows filled at a time: a block of this many rows stays in cache while the
columns are written into it (writing whole strided columns is 10x slower)."""

PREDICT_ROWS = 131_072
"""Rows handed to ``booster.predict`` at a time, bounding the memory of the
feature matrix."""

BACKENDS = ("lightgbm", "compiled")
"""What can predict in the model stage."""

DEFAULT_NUM_BOOST_ROUND = 100
DEFAULT_N_FOLDS = 3

_NUMBER_KINDS = frozenset({"boolean", "integer", "floating", "mixed-integer-float", "empty"})


def _holds_numbers(column: pd.Series) -> bool:
    """An object column of numbers or booleans with gaps (e.g. ``[True, None]``)."""
    kind = pd.api.types.infer_dtype(column, skipna=True)
    return column.dtype == object and kind in _NUMBER_KINDS


def feature_columns(X: pd.DataFrame, schema: FeatureSchema) -> list[np.ndarray]:
    """The schema's feature columns of ``X`` as 1-D numeric arrays, in order.

    Categorical columns (pandas ``category`` dtype, as the encoder writes
    them) become their codes, booleans stay booleans and numbers numbers;
    numpy-backed columns are not copied. The ``user_id`` feature is read
    from ``user_id_encoded`` when present.

    Raises
    ------
    MissingColumnsError
        Listing every absent feature column.
    ColumnTypeError
        Naming a column of text values, or a categorical column that was
        not encoded.
    """
    columns = schema.feature_columns
    require_columns(X, columns, "feature matrix")
    categorical = set(schema.categorical_columns)
    arrays = []
    for name in columns:
        column = X[ENCODED_USER_ID if name == USER_ID and ENCODED_USER_ID in X else name]
        dtype = column.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            if name in categorical:
                arrays.append(column.cat.codes.to_numpy())
                continue
            column = column.astype(dtype.categories.dtype)  # numbers through their values
            dtype = column.dtype
        if name in categorical:
            raise ColumnTypeError(
                f"categorical column {name!r} is not encoded ({dtype}); put a "
                "CategoricalEncoder before the model stage"
            )
        if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
            arrays.append(column.to_numpy())
        elif not pd.api.types.is_complex_dtype(dtype) and (  # no silent loss of imaginary parts
            pd.api.types.is_numeric_dtype(dtype)
            or pd.api.types.is_bool_dtype(dtype)
            or _holds_numbers(column)
        ):
            arrays.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            sample = column.dropna().head(3).tolist()
            # (an empty frame, such as Dask's meta, has no values to show)
            such_as = f" such as {sample!r}" if sample else ""
            raise ColumnTypeError(
                f"column {name!r} must hold numbers, found {dtype} values{such_as}"
            )
    return arrays


def fill_matrix(
    arrays: list[np.ndarray], start: int, stop: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Rows ``start:stop`` of the float64 feature matrix, missing values as 0.

    ``out``, when given, is a C-ordered float64 buffer of that shape to fill.
    """
    if out is None:
        out = np.empty((stop - start, len(arrays)), dtype=np.float64)
    matrix = out
    for lo in range(start, stop, _FILL_ROWS):
        hi = min(lo + _FILL_ROWS, stop)
        block = matrix[lo - start : hi - start]
        for j, values in enumerate(arrays):
            block[:, j] = values[lo:hi]
    matrix[np.isnan(matrix)] = 0.0
    return matrix


def feature_matrix(X: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """The booster's input: the schema's feature columns as a float64 matrix.

    Categorical columns become their codes, booleans 0/1 and missing values
    0 (see :func:`feature_columns`).
    """
    return fill_matrix(feature_columns(X, schema), 0, len(X))


def booster_schema(booster: Any, schema_version: str | None) -> FeatureSchema:
    """The feature schema of ``booster``: the given version, or guessed from its width."""
    n_features = int(booster.num_feature())
    if schema_version is not None:
        schema = get_schema(schema_version)
        if schema.n_features != n_features:
            raise SchemaMismatchError(
                f"schema {schema.version} has {schema.n_features} feature columns but "
                f"the booster expects {n_features}"
            )
        return schema
    guessed = schema_for_n_features(n_features)
    if guessed is None:
        raise SchemaMismatchError(
            f"the booster expects {n_features} features, which matches no schema "
            "(v1: 39, v2: 38, v3: 299)"
        )
    return guessed


def predict_matrix(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """``booster.predict`` checked to give one probability column per class."""
    if len(matrix) == 0:
        return np.zeros((0, N_CLASSES))
    proba = np.asarray(booster.predict(matrix), dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
        raise ProbabilityShapeError(
            f"the booster returned probabilities of shape {proba.shape}; "
            f"expected (n, {N_CLASSES}): one column per class"
        )
    return proba


def predict_frame(booster: Any, X: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """Probabilities of the rows of ``X``, predicted in blocks of rows."""
    arrays = feature_columns(X, schema)
    n = len(X)
    if n <= PREDICT_ROWS:
        return predict_matrix(booster, fill_matrix(arrays, 0, n))
    proba = np.empty((n, N_CLASSES), dtype=np.float64)
    # One buffer for every block: fresh large allocations cost page faults.
    buffer = np.empty((PREDICT_ROWS, len(arrays)), dtype=np.float64)
    for start in range(0, n, PREDICT_ROWS):
        stop = min(start + PREDICT_ROWS, n)
        block = fill_matrix(arrays, start, stop, out=buffer[: stop - start])
        proba[start:stop] = predict_matrix(booster, block)
    return proba


def sample_weights(codes: np.ndarray, class_weight: Any) -> np.ndarray | None:
    """Per-row training weights of class codes.

    ``"balanced"`` weighs each class inversely to its frequency
    (``n / (n_present_classes * count)``, as scikit-learn does), a mapping
    gives a weight per core label (1 for labels it omits), ``None`` gives
    no weights.
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        return np.asarray(compute_sample_weight("balanced", codes), dtype=np.float64)
    table = np.ones(N_CLASSES, dtype=np.float64)
    for label, weight in class_weight.items():
        table[CLASS_INDEX[label]] = float(weight)
    return table[codes]


def _check_class_weight(value: Any) -> str | None:
    """Parameter rule of ``class_weight``: "balanced", None or core label → weight >= 0."""
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
    """Pipeline stage: class probabilities from a LightGBM booster.

    Adds one column per class, ``proba_<Label>``, in class order
    (BreakIdle, Build, Communicate, Debug, Meet, ReadResearch, Review,
    Write).

    ``fit(X, y)`` trains a LightGBM multiclass model over the eight classes
    on the schema's feature columns (categorical columns declared to
    LightGBM) and keeps it in ``booster_``; training is seeded and
    deterministic. A pre-trained booster makes a fitted stage through
    :meth:`from_booster`.

    ``fit_transform`` (what ``Pipeline.fit`` calls) returns *out-of-fold*
    probabilities: the rows are split into ``n_folds`` group-aware folds
    (by user, or by UTC day when there is one user) and each fold's rows
    are scored by a model trained on the other folds only, so that the
    stages after this one (calibration) learn from probabilities of rows
    the model never saw. ``transform`` uses ``booster_``, trained on all
    rows: the stacking pattern of scikit-learn's ``StackingClassifier``.

    Parameters
    ----------
    schema_version : str, optional
        Feature schema to train on; resolved from the frame when omitted.
    params : dict, optional
        LightGBM parameters, overriding the defaults (``objective
        multiclass``, ``num_class 8``, ``learning_rate 0.1``, ``seed``,
        ``deterministic``, ``force_row_wise``, ``verbose -1``).
    num_boost_round : int, default 100
        Boosting rounds.
    class_weight : "balanced", dict or None, default "balanced"
        Row weights: inversely proportional to class frequency, a weight
        per core label, or none.
    n_folds : int, default 3
        Folds of the out-of-fold probabilities of ``fit_transform`` (fewer
        when there are fewer groups).
    random_state : int, default 0
        LightGBM ``seed``.
    num_threads : int, optional
        LightGBM threads; LightGBM's default (all cores) when omitted.
    backend : {"lightgbm", "compiled"}, default "lightgbm"
        What predicts: LightGBM itself, or the booster compiled to machine
        code (the ``fast`` extra; see docs/performance.md), which gives the
        same labels and falls back to LightGBM with a warning when it
        cannot be used.

    Attributes
    ----------
    booster_ : lightgbm.Booster
        The model.
    schema_ : FeatureSchema
        The feature schema of the model.
    oof_fold_ : ndarray of int8
        Held-out fold of each training row (set by ``fit_transform``).
    classes_ : ndarray of str
        The eight classes in class order.

    See Also
    --------
    taskclf.CategoricalEncoder : the stage before, which encodes categories.
    taskclf.Calibrator : the stage after, fitted on the out-of-fold output.

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
        "backend": one_of(*BACKENDS),
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
    ) -> None:
        self.schema_version = schema_version
        self.params = params
        self.num_boost_round = num_boost_round
        self.class_weight = class_weight
        self.n_folds = n_folds
        self.random_state = random_state
        self.num_threads = num_threads
        self.backend = backend

    @classmethod
    def from_booster(
        cls, booster: Any, schema_version: str | None = None, *, backend: str = "lightgbm"
    ) -> BoosterPredictor:
        """A fitted stage around a pre-trained booster.

        Parameters
        ----------
        booster : lightgbm.Booster
            A multiclass booster over the eight classes in class order.
        schema_version : str, optional
            Its feature schema; guessed from its number of features when
            omitted.
        backend : {"lightgbm", "compiled"}, default "lightgbm"
            What predicts (see the class parameters).

        Returns
        -------
        BoosterPredictor
            Fitted; wrap it in :class:`sklearn.frozen.FrozenEstimator` to
            keep ``fit`` from retraining it.

        Raises
        ------
        InvalidParameterError
            If ``booster`` is not a LightGBM booster.
        SchemaMismatchError
            If its width matches no schema (or not the given one).
        """
        if not hasattr(booster, "predict") or not hasattr(booster, "num_feature"):
            raise InvalidParameterError(
                f"booster must be a lightgbm.Booster, got {type(booster).__name__}"
            )
        stage = cls(schema_version, backend=backend)
        check_params(stage)
        stage.booster_ = booster
        stage.schema_ = booster_schema(booster, schema_version)
        return stage

    def __sklearn_tags__(self) -> Tags:
        # The schema's feature columns by name, categoricals encoded as
        # pandas categories; missing values become 0.
        return frame_tags(
            super().__sklearn_tags__(), allow_nan=True, categorical=True, requires_fit=True
        )

    @property
    def classes_(self) -> np.ndarray:
        """The eight classes in class order (the probability columns' order)."""
        return np.asarray(CLASS_ORDER, dtype=object)

    def lightgbm_params(self) -> dict[str, Any]:
        """The LightGBM parameters training uses (defaults, then ``params``)."""
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
        params.update(self.params or {})
        return params

    def _train(
        self, matrix: np.ndarray, codes: np.ndarray, categorical: list[int], what: str
    ) -> Any:
        import lightgbm as lgb

        dataset = lgb.Dataset(
            matrix,
            label=codes,
            weight=sample_weights(codes, self.class_weight),
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

    def _training_data(
        self, X: pd.DataFrame, y: object
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        check_params(self)
        check_frame(X, type(self).__name__)
        codes = check_labels(y, len(X), f"{type(self).__name__}.fit")
        if len(X) == 0:
            raise InputError("BoosterPredictor.fit: cannot train on an empty frame")
        self.schema_ = get_schema(resolve_schema_version(X, self.schema_version))
        check_frame_schema(X, self.schema_)
        categorical = [
            self.schema_.feature_columns.index(c) for c in self.schema_.categorical_columns
        ]
        return feature_matrix(X, self.schema_), codes, categorical

    def fit(self, X: pd.DataFrame, y: object = None) -> BoosterPredictor:
        """Train the model on all rows.

        Parameters
        ----------
        X : DataFrame
            Encoded feature frame (the output of
            :class:`~taskclf.CategoricalEncoder`).
        y : array-like of str
            Core label of each row.

        Returns
        -------
        self

        Raises
        ------
        InputError
            When ``y`` is missing, of another length than ``X``, or holds a
            value that is not a core label.
        """
        matrix, codes, categorical = self._training_data(X, y)
        self.booster_ = self._train(matrix, codes, categorical, "boosting rounds")
        return self

    def fit_transform(self, X: pd.DataFrame, y: object = None, **_: Any) -> pd.DataFrame:
        """Fit, then return ``X`` with *out-of-fold* probability columns.

        Each row's probabilities come from a model trained on the other
        folds (see the class description); ``booster_`` is trained on all
        rows.

        Returns
        -------
        DataFrame
        """
        matrix, codes, categorical = self._training_data(X, y)
        self.booster_ = self._train(matrix, codes, categorical, "boosting rounds")
        fold = group_folds(X, self.n_folds)
        proba = np.empty((len(X), N_CLASSES), dtype=np.float64)
        n_folds = int(fold.max()) + 1
        for k in range(n_folds):
            held_out = fold == k
            model = self._train(
                matrix[~held_out],
                codes[~held_out],
                categorical,
                f"out-of-fold model {k + 1}/{n_folds}",
            )
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
        return predict_frame(model, X, self.schema_)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with the probability columns added."""
        proba = self.predict_proba(X)
        return add_columns(X, pd.DataFrame(proba, columns=list(PROBA_COLUMNS)))
