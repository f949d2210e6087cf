"""What every stage shares: parameter rules and the DataFrame-in, DataFrame-out base.

Each stage declares its parameters' rules once, in a table
(``_parameter_rules``, as scikit-learn's ``_parameter_constraints``), and
:func:`check_params` applies it where scikit-learn checks parameters: in
``fit``, and in ``transform`` for the stages that need no fitting.
"""

from __future__ import annotations

import numbers
import reprlib
from collections.abc import Callable
from typing import Any, ClassVar

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags

from taskclf._frame import check_frame, frame_tags
from taskclf.exceptions import InvalidParameterError

Rule = Callable[[Any], str | None]
"""A parameter rule: returns what the value should be when it breaks the rule, else None."""

MAX_SECONDS = 366 * 24 * 3600
"""Upper bound of every duration parameter (one year): beyond it, nanosecond
arithmetic on timestamps would overflow."""

MAX_BUCKETS = 100_000
"""Upper bound of every count of buckets (windows, minimum blocks)."""


def integer(low: int, high: int) -> Rule:
    """An integer (not a bool) in ``[low, high]``."""

    def rule(value: Any) -> str | None:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok and low <= value <= high else f"an integer in [{low}, {high}]"

    return rule


def real(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    """A real number (not a bool) between ``low`` and ``high``, each end open or closed."""
    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def rule(value: Any) -> str | None:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return f"a number in {interval}"
        value = float(value)
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        return None if above and below else f"a number in {interval}"

    return rule


def one_of(*options: Any) -> Rule:
    """One of ``options`` (compared with ``==``)."""

    def rule(value: Any) -> str | None:
        hashable = isinstance(value, (str, int, float, type(None)))
        return None if hashable and value in options else f"one of {list(options)}"

    return rule


def instance_of(*types: type, what: str) -> Rule:
    """An instance of one of ``types``; ``what`` names them for the message."""

    def rule(value: Any) -> str | None:
        return None if isinstance(value, types) else what

    return rule


def optional(rule: Rule) -> Rule:
    """``None``, or a value ``rule`` accepts."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        expected = rule(value)
        return None if expected is None else f"None or {expected}"

    return check


SECONDS = integer(1, MAX_SECONDS)
"""A duration in whole seconds, > 0."""

GAP = real(0, MAX_SECONDS, open_low=True)
"""A gap in seconds, > 0 (fractions allowed)."""

DURATION = integer(0, MAX_SECONDS)
"""A duration in whole seconds, >= 0."""


def check_value(value: Any, rule: Rule, name: str, where: str) -> Any:
    """Return ``value`` if ``rule`` accepts it.

    Raises
    ------
    InvalidParameterError
        Naming ``where``, the parameter, the value and what it should be.
    """
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
    """Base of the stages that learn nothing: DataFrame in, annotated DataFrame out.

    Subclasses declare ``_parameter_rules`` and implement ``_transform``
    (compute and add the stage's columns). Parameters are checked in
    ``fit`` and ``transform``; ``set_params`` only stores, as in
    scikit-learn.
    """

    _parameter_rules: ClassVar[dict[str, Rule]] = {}

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def fit(self, X: pd.DataFrame, y: object = None) -> FrameTransformer:
        """Check the parameters; the stage learns nothing.

        Returns
        -------
        self
        """
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
        # Label stages read label columns given as strings or categories and
        # refuse missing labels, timestamps and segment ids.
        return frame_tags(super().__sklearn_tags__(), string=True, categorical=True)
