"""What every stage shares: parameter rules (``_parameter_rules``, as scikit-learn's
``_parameter_constraints``) and the DataFrame-in, DataFrame-out base."""

from __future__ import annotations

import numbers
import operator
import reprlib
from collections.abc import Callable
from typing import Any, ClassVar

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags

from taskclf._frame import check_frame, frame_tags
from taskclf.exceptions import InvalidParameterError

Rule = Callable[[Any], str | None]  # what the value should be when it breaks the rule, else None
MAX_SECONDS = 366 * 24 * 3600  # every duration's bound: beyond it, ns arithmetic overflows
MAX_BUCKETS = 100_000  # every count of buckets' bound (windows, minimum blocks)


def _is_number(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def integer(low: int, high: int) -> Rule:
    """An integer (not a bool) in ``[low, high]``."""
    expected = f"an integer in [{low}, {high}]"
    return lambda v: None if _is_number(v, numbers.Integral) and low <= v <= high else expected


def real(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    """A real number (not a bool) between ``low`` and ``high``, each end open or closed."""
    expected = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    above = operator.lt if open_low else operator.le
    below = operator.lt if open_high else operator.le

    def rule(v: Any) -> str | None:
        inside = _is_number(v, numbers.Real) and above(low, v) and below(v, high)
        return None if inside else expected

    return rule


def one_of(*options: Any) -> Rule:
    """One of ``options`` (compared with ``==``)."""
    expected = f"one of {list(options)}"
    hashable = (str, int, float, type(None))
    return lambda v: None if isinstance(v, hashable) and v in options else expected


def instance_of(*types: type, what: str) -> Rule:
    """An instance of one of ``types``; ``what`` names them for the message."""
    return lambda v: None if isinstance(v, types) else what


def optional(rule: Rule) -> Rule:
    """``None``, or a value ``rule`` accepts."""
    return lambda v: None if v is None or rule(v) is None else f"None or {rule(v)}"


SECONDS = integer(1, MAX_SECONDS)  # whole seconds, > 0
GAP = real(0, MAX_SECONDS, open_low=True)  # seconds, > 0
DURATION = integer(0, MAX_SECONDS)  # whole seconds, >= 0


def check_value(value: Any, rule: Rule, name: str, where: str) -> Any:
    """Return ``value`` if ``rule`` accepts it, else raise :class:`InvalidParameterError`."""
    expected = rule(value)
    if expected is not None:
        raise InvalidParameterError(
            f"{where}: {name} must be {expected}, got {reprlib.repr(value)}"
        )
    return value


def check_params(estimator: Any) -> None:
    """Apply ``estimator``'s parameter table (``_parameter_rules``) to its parameters."""
    for name, rule in type(estimator)._parameter_rules.items():
        check_value(getattr(estimator, name), rule, name, type(estimator).__name__)


class FrameTransformer(TransformerMixin, BaseEstimator):
    """Base of the stages that learn nothing: DataFrame in, annotated DataFrame out; subclasses
    declare ``_parameter_rules`` (checked by ``fit`` and ``transform``) and ``_transform``."""

    _parameter_rules: ClassVar[dict[str, Rule]] = {}

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def fit(self, X: pd.DataFrame, y: object = None) -> FrameTransformer:
        """Check the parameters and the frame; the stage learns nothing."""
        check_params(self)
        check_frame(X, type(self).__name__)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return a new frame: ``X``'s columns and this stage's, rows in input order."""
        check_params(self)
        return self._transform(check_frame(X, type(self).__name__))

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self) -> Tags:
        # Label columns come as strings or categories; missing values are refused.
        return frame_tags(super().__sklearn_tags__(), string=True, categorical=True)
