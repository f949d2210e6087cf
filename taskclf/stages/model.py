"""The model stage: LightGBM class probabilities for each bucket."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.class_weight import compute_sample_weight

from taskclf._columns import ENCODED_USER_ID, PROBA_COLUMNS, USER_ID
from taskclf._folds import check_labels, check_n_folds, group_folds
from taskclf._frame import add_columns, check_frame, frame_tags, require_columns
from taskclf.core.schema import (
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
    NotFittedError,
    ProbabilityShapeError,
    SchemaMismatchError,
)

_FILL_ROWS = 8192
"""Rows filled at a time: a block of this many rows stays in cache while the
columns are written into it (writing whole strided columns is 10x slower)."""

PREDICT_ROWS = 131_072
"""Rows handed to ``booster.predict`` at a time, bounding the memory of the
feature matrix."""

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
            arrays.append(column.cat.codes.to_numpy())
            continue
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


def training_data_fingerprint(matrix: np.ndarray, codes: np.ndarray) -> str:
    """SHA-256 (hex) of a training matrix and its label codes, as the model saw them."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(matrix, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
    return digest.hexdigest()


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


def _check_training_params(stage: BoosterPredictor) -> None:
    rounds = stage.num_boost_round
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise InvalidParameterError(f"num_boost_round must be an integer >= 1, got {rounds!r}")
    check_n_folds(stage.n_folds)
    weights = stage.class_weight
    if isinstance(weights, str):
        if weights != "balanced":
            raise InvalidParameterError(
                f"class_weight must be 'balanced', None or a mapping, got {weights!r}"
            )
    elif weights is not None:
        if not isinstance(weights, Mapping):
            raise InvalidParameterError(
                f"class_weight must be 'balanced', None or a mapping, got {weights!r}"
            )
        unknown = [k for k in weights if k not in CLASS_INDEX]
        if unknown:
            raise InvalidParameterError(
                f"class_weight names {unknown[0]!r}, which is not one of the core labels "
                f"{list(CLASS_ORDER)}"
            )
        bad = [v for v in weights.values() if not np.isfinite(v) or v < 0]
        if bad:
            raise InvalidParameterError(f"class_weight values must be >= 0, got {bad[0]!r}")
    if stage.params is not None and not isinstance(stage.params, Mapping):
        raise InvalidParameterError(
            f"params must be a mapping of LightGBM parameters, got {type(stage.params).__name__}"
        )
    threads = stage.num_threads
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0
    ):
        raise InvalidParameterError(f"num_threads must be an integer >= 0, got {threads!r}")


class BoosterPredictor(TransformerMixin, BaseEstimator):
    """Pipeline stage: class probabilities from a LightGBM booster.

    Adds one column per class, ``proba_<Label>``, in class order
    (BreakIdle, Build, Communicate, Debug, Meet, ReadResearch, Review,
    Write).

    The stage works in one of two ways:

    - **frozen**, around a pre-trained ``booster``: ``fit`` leaves it alone
      and ``clone`` returns the stage itself, so grid searches never copy
      or retrain it;
    - **trainable**, without ``booster``: ``fit(X, y)`` trains a LightGBM
      multiclass model over the eight classes (in class order) on the
      schema's feature columns, categorical columns declared to LightGBM,
      and keeps it in ``booster_``. Training is seeded and deterministic.

    ``fit_transform`` (what ``Pipeline.fit`` calls) returns *out-of-fold*
    probabilities: the rows are split into ``n_folds`` group-aware folds
    (by user, or by UTC day when there is one user; see
    :func:`taskclf._folds.group_folds`) and each fold's rows are scored
    by a model trained on the other folds only, so that the stages after
    this one (calibration) learn from probabilities of rows the model
    never saw. ``transform`` after fitting uses ``booster_``, trained on
    all rows: the stacking pattern of scikit-learn's
    ``StackingClassifier``. A frozen stage's ``fit_transform`` is plain
    ``transform``.

    Parameters
    ----------
    booster : lightgbm.Booster, optional
        A trained multiclass booster over the eight classes in class order.
        When given, the stage is frozen and the training parameters below
        are ignored.
    schema_version : str, optional
        Feature schema: of the given booster (guessed from its number of
        features when omitted), or to train on (resolved from the frame
        when omitted).
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

    Attributes
    ----------
    booster_ : lightgbm.Booster
        The model trained on all rows (trainable stage only).
    oof_fold_ : ndarray of int8
        Held-out fold of each training row (set by ``fit_transform``).
    training_fingerprint_ : str
        SHA-256 of the training matrix and labels; saved bundles record it.
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

    def __init__(
        self,
        booster: Any = None,
        schema_version: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        num_boost_round: int = DEFAULT_NUM_BOOST_ROUND,
        class_weight: Any = "balanced",
        n_folds: int = DEFAULT_N_FOLDS,
        random_state: int | None = 0,
        num_threads: int | None = None,
    ) -> None:
        self.booster = booster
        self.schema_version = schema_version
        self.params = params
        self.num_boost_round = num_boost_round
        self.class_weight = class_weight
        self.n_folds = n_folds
        self.random_state = random_state
        self.num_threads = num_threads

    def __sklearn_is_fitted__(self) -> bool:
        return self.booster is not None or hasattr(self, "booster_")

    def __sklearn_tags__(self) -> Tags:
        # The schema's feature columns by name, categoricals encoded as
        # pandas categories; missing values become 0.
        return frame_tags(
            super().__sklearn_tags__(),
            allow_nan=True,
            categorical=True,
            requires_fit=self.booster is None,
        )

    def __sklearn_clone__(self) -> BoosterPredictor:
        # A pre-trained booster is frozen: share the stage, never retrain it.
        # A trainable stage clones like any estimator (parameters, no state).
        if self.booster is not None:
            return self
        return super().__sklearn_clone__()

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

    def _train(self, matrix: np.ndarray, codes: np.ndarray, categorical: list[int]) -> Any:
        import lightgbm as lgb

        dataset = lgb.Dataset(
            matrix,
            label=codes,
            weight=sample_weights(codes, self.class_weight),
            categorical_feature=categorical,
            free_raw_data=True,
        )
        try:
            return lgb.train(self.lightgbm_params(), dataset, num_boost_round=self.num_boost_round)
        except lgb.basic.LightGBMError as exc:  # LightGBM refuses its parameters
            raise InvalidParameterError(
                f"BoosterPredictor: LightGBM cannot train with params={self.params!r}: "
                f"{str(exc).strip()}"
            ) from None

    def _training_data(
        self, X: pd.DataFrame, y: object
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        _check_training_params(self)
        check_frame(X, type(self).__name__)
        codes = check_labels(y, len(X), f"{type(self).__name__}.fit")
        if len(X) == 0:
            raise InputError("BoosterPredictor.fit: cannot train on an empty frame")
        schema = get_schema(resolve_schema_version(X, self.schema_version))
        check_frame_schema(X, schema)
        categorical = [schema.feature_columns.index(c) for c in schema.categorical_columns]
        return feature_matrix(X, schema), codes, categorical

    def _model(self) -> Any:
        model = self.booster if self.booster is not None else getattr(self, "booster_", None)
        if model is None:
            raise NotFittedError("BoosterPredictor has no booster: pass booster= or call fit first")
        if not hasattr(model, "predict") or not hasattr(model, "num_feature"):
            raise InvalidParameterError(
                f"booster must be a lightgbm.Booster, got {type(model).__name__}"
            )
        return model

    @property
    def schema_(self) -> FeatureSchema:
        """The feature schema the booster was trained on."""
        return booster_schema(self._model(), self.schema_version)

    def fit(self, X: pd.DataFrame, y: object = None) -> BoosterPredictor:
        """Train the model on all rows, or keep a pre-trained booster as it is.

        Parameters
        ----------
        X : DataFrame
            Encoded feature frame (the output of
            :class:`~taskclf.CategoricalEncoder`).
        y : array-like of str
            Core label of each row; ignored by a frozen stage.

        Returns
        -------
        self

        Raises
        ------
        InputError
            When ``y`` is missing, of another length than ``X``, or holds a
            value that is not a core label.
        """
        if self.booster is not None:
            check_frame(X, type(self).__name__)
            self._model()
            return self
        matrix, codes, categorical = self._training_data(X, y)
        self.booster_ = self._train(matrix, codes, categorical)
        self.training_fingerprint_ = training_data_fingerprint(matrix, codes)
        return self

    def fit_transform(self, X: pd.DataFrame, y: object = None, **_: Any) -> pd.DataFrame:
        """Fit, then return ``X`` with *out-of-fold* probability columns.

        Each row's probabilities come from a model trained on the other
        folds (see the class description); ``booster_`` is trained on all
        rows. A frozen stage returns ``transform(X)``.

        Returns
        -------
        DataFrame
        """
        if self.booster is not None:
            return self.fit(X, y).transform(X)
        matrix, codes, categorical = self._training_data(X, y)
        self.booster_ = self._train(matrix, codes, categorical)
        self.training_fingerprint_ = training_data_fingerprint(matrix, codes)
        fold = group_folds(X, self.n_folds)
        proba = np.empty((len(X), N_CLASSES), dtype=np.float64)
        for k in range(int(fold.max()) + 1):
            held_out = fold == k
            model = self._train(matrix[~held_out], codes[~held_out], categorical)
            proba[held_out] = predict_matrix(model, matrix[held_out])
        self.oof_fold_ = fold
        return add_columns(X, pd.DataFrame(proba, columns=list(PROBA_COLUMNS)))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """The (n, 8) probability matrix of the rows of ``X``."""
        check_frame(X, type(self).__name__)
        model = self._model()
        schema = booster_schema(model, self.schema_version)
        check_frame_schema(X, schema)
        return predict_frame(model, X, schema)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` with the probability columns added."""
        proba = self.predict_proba(X)
        return add_columns(X, pd.DataFrame(proba, columns=list(PROBA_COLUMNS)))
