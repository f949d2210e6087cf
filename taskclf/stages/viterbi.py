"""Viterbi smoothing: the kernels (over many timelines at once, also run by
the stream), :func:`viterbi_codes` decoding with them, and the pipeline stage."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, IS_REJECTED, PROBA_COLUMNS, RAW_LABEL, SMOOTHED_LABEL
from taskclf._frame import (
    add_columns,
    check_finite_columns,
    label_codes,
    labels_from_codes,
    require_columns,
)
from taskclf.calibration import PROBA_FLOOR
from taskclf.core.defaults import DEFAULT_IDLE_GAP_SECONDS
from taskclf.core.types import N_CLASSES
from taskclf.stages._base import FrameTransformer, real
from taskclf.stages._timeline import TIMELINE_RULES, find_timelines
from taskclf.stages.reject import MIXED_CODE

DEFAULT_SWITCH_PROB = 0.02


def sticky_log_transitions(switch_prob: float, n_classes: int = N_CLASSES) -> np.ndarray:
    """Log transition matrix: stay with ``1 - switch_prob``, else move to any other label."""
    off = np.log(switch_prob / (n_classes - 1))
    table = np.full((n_classes, n_classes), off)
    np.fill_diagonal(table, np.log1p(-switch_prob))
    return table


def log_emissions(proba: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """Emission scores ``log(clip(proba, 1e-12))``; a rejected row's are flat (0)."""
    log_emission = np.log(np.clip(proba, PROBA_FLOOR, None))
    log_emission[rejected] = 0.0
    return log_emission


def viterbi_forward(
    log_emission: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    log_transition: np.ndarray,
    score: np.ndarray,
    back: np.ndarray,
) -> np.ndarray:
    """Forward steps of Viterbi: timeline ``i`` (rows ``starts[i]`` on, ``lengths[i]`` of them)
    goes on from ``score[i]`` (its scores before its first row, shape (n_timelines, k)).

    Row ``t`` scores state ``j`` as ``max_s(score[s] + log_transition[s, j]) +
    log_emission[t, j]``; the best ``s`` (the lowest on ties) goes into ``back[t, j]``
    in place. Returns the scores at each timeline's last row.
    """
    score = score.copy()
    for t in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > t)
        rows = starts[active] + t
        candidates = score[active][:, :, None] + log_transition  # (m, previous, next)
        back[rows] = candidates.argmax(axis=1)
        score[active] = candidates.max(axis=1) + log_emission[rows]
    return score


def viterbi_backtrace(
    back: np.ndarray, ends: np.ndarray, lengths: np.ndarray, states: np.ndarray
) -> np.ndarray:
    """The states (n, s; 0 elsewhere) of ``s`` back-pointer chains per timeline, followed
    ``lengths`` rows back from its end ``ends`` (last row + 1), ending in ``states``."""
    out = np.zeros((len(back), states.shape[1]), dtype=np.int8)
    states = states.astype(np.intp)
    for t in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > t)
        rows = ends[active] - 1 - t
        out[rows] = states[active]
        states[active] = np.take_along_axis(back[rows], states[active], axis=1)
    return out


def viterbi_codes(
    log_emission: np.ndarray, bounds: np.ndarray, log_transition: np.ndarray
) -> np.ndarray:
    """Most likely state path (int8 codes) of each timeline (docs/contract.md).

    ``log_emission`` (n, k) holds the timelines concatenated in time order,
    ``bounds`` the start of each, then ``n``; ``log_transition[i, j]`` is
    ``log P(next = j | previous = i)``. A timeline starts from its first
    row's emission (no prior) and ends in its best state (the lowest on ties).
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    lengths = np.diff(bounds)
    starts = bounds[:-1][lengths > 0]
    lengths = lengths[lengths > 0]
    back = np.zeros(log_emission.shape, dtype=np.int8)
    first = log_emission[starts]
    score = viterbi_forward(log_emission, starts + 1, lengths - 1, log_transition, first, back)
    return viterbi_backtrace(back, starts + lengths, lengths, score.argmax(axis=1)[:, None])[:, 0]


class ViterbiSmoother(FrameTransformer):
    """Pipeline stage: ``smoothed_label``, the Viterbi path of the calibrated probabilities.

    A drop-in alternative to :class:`~taskclf.MajoritySmoother`. A rejected
    row (``is_rejected``, else a ``Mixed/Unknown`` ``raw_label``) keeps
    ``Mixed/Unknown`` and has a flat emission: it neither votes nor breaks a
    task. The rule and the parameters are in docs/contract.md;
    ``switch_prob=7/8`` gives each row's most probable label.

    Examples
    --------
    >>> import pandas as pd
    >>> from taskclf._columns import PROBA_COLUMNS
    >>> p = [[0.0, 0.9, 0.1] + [0.0] * 5] * 2 + [[0.0, 0.4, 0.6] + [0.0] * 5]
    >>> frame = pd.DataFrame(p * 2, columns=PROBA_COLUMNS)
    >>> frame["bucket_start_ts"] = pd.date_range("2025-01-06 09:00", periods=6, freq="min")
    >>> ViterbiSmoother(switch_prob=0.01).transform(frame)["smoothed_label"].tolist()
    ['Build', 'Build', 'Build', 'Build', 'Build', 'Build']
    """

    _parameter_rules: ClassVar = {
        "switch_prob": real(0.0, 1.0, open_low=True, open_high=True),
        **TIMELINE_RULES,
    }

    def __init__(
        self,
        switch_prob: float = DEFAULT_SWITCH_PROB,
        max_gap_seconds: float = DEFAULT_IDLE_GAP_SECONDS,
        timelines: str = "per_user",
    ) -> None:
        self.switch_prob = switch_prob
        self.max_gap_seconds = max_gap_seconds
        self.timelines = timelines

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        require_columns(X, [*PROBA_COLUMNS, BUCKET_START_TS], type(self).__name__)
        timelines = find_timelines(X, self.max_gap_seconds, self.timelines)
        proba = X[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
        check_finite_columns(proba, PROBA_COLUMNS)  # NaN would steer the path silently
        if IS_REJECTED in X.columns:
            rejected = X[IS_REJECTED].to_numpy(dtype=bool)
        elif RAW_LABEL not in X.columns:
            rejected = np.zeros(len(X), dtype=bool)
        else:
            rejected = label_codes(X[RAW_LABEL], RAW_LABEL) == MIXED_CODE
        rejected = timelines.to_sorted(rejected)
        transitions = sticky_log_transitions(float(self.switch_prob))
        emissions = log_emissions(timelines.to_sorted(proba), rejected)
        codes = viterbi_codes(emissions, timelines.bounds, transitions)
        codes[rejected] = MIXED_CODE
        return add_columns(X, {SMOOTHED_LABEL: labels_from_codes(timelines.to_input(codes))})
