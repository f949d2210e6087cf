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
from taskclf.stages._base import GAP, FrameTransformer, one_of, real
from taskclf.stages._timeline import TIMELINE_MODES, find_timelines
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
    """Forward steps of Viterbi: timeline ``i`` goes on from ``score[i]`` over its rows.

    Row ``t`` scores state ``j`` as ``max_s(score[s] + log_transition[s, j])
    + log_emission[t, j]`` and stores the best ``s`` (the lowest on ties) in
    ``back[t, j]``, filled in place.

    Parameters
    ----------
    starts, lengths : ndarray of int, shape (n_timelines,)
        The rows ``starts[i] … starts[i] + lengths[i] - 1`` of each timeline.
    score : ndarray of float64, shape (n_timelines, k)
        Scores before each timeline's first row.

    Returns
    -------
    ndarray of float64, shape (n_timelines, k)
        The scores at each timeline's last row.
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
    """The states of ``s`` back-pointer chains per timeline, followed from its end.

    ``ends`` is each timeline's last row + 1, ``lengths`` how many rows to
    follow back, ``states`` (n_timelines, s) the states the chains end in.
    Returns the state of each chain at each row followed, shape (n, s), 0 elsewhere.
    """
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
    """Most likely state path (int8 codes) of each timeline.

    ``log_emission`` (n, k) holds the timelines concatenated in time order,
    ``bounds`` the start of each, then ``n``; ``log_transition[i, j]`` is
    ``log P(next = j | previous = i)``. A timeline starts from its first
    row's emission (no prior) and ends in its best state (the lowest on ties).

    Examples
    --------
    >>> e = np.log([[0.9, 0.1], [0.4, 0.6], [0.9, 0.1]])
    >>> a = np.log([[0.9, 0.1], [0.1, 0.9]])
    >>> viterbi_codes(e, np.array([0, 3]), a).tolist()
    [0, 0, 0]
    >>> viterbi_codes(e, np.array([0, 1, 2, 3]), a).tolist()
    [0, 1, 0]
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    lengths = np.diff(bounds)
    starts = bounds[:-1][lengths > 0]
    lengths = lengths[lengths > 0]
    back = np.zeros(log_emission.shape, dtype=np.int8)
    first = log_emission[starts]
    score = viterbi_forward(log_emission, starts + 1, lengths - 1, log_transition, first, back)
    best = score.argmax(axis=1)[:, None]
    path = viterbi_backtrace(back, starts + lengths, lengths, best)
    return path[:, 0]


class ViterbiSmoother(FrameTransformer):
    """Pipeline stage: Viterbi decoding of the calibrated probabilities.

    A drop-in alternative to :class:`~taskclf.MajoritySmoother`: adds
    ``smoothed_label``, the most likely label path of each timeline (emission
    scores ``log(clip(p, 1e-12))``; a label stays with probability
    ``1 - switch_prob``, else moves to any of the seven others). A rejected
    row (``is_rejected``, else a ``Mixed/Unknown`` ``raw_label``) keeps
    ``Mixed/Unknown`` and has a flat emission: it neither votes nor breaks a task.

    Parameters
    ----------
    switch_prob : float, default 0.02
        In (0, 1); ``7/8`` gives each row's most probable label.
    max_gap_seconds : float, default 300.0
        Longest gap between bucket starts inside one timeline.
    timelines : {"per_user", "as_given"}, default "per_user"
        ``"as_given"``: one sequence in the order given (docs/migrating.md).

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
        "max_gap_seconds": GAP,
        "timelines": one_of(*TIMELINE_MODES),
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
        proba = timelines.to_sorted(proba)
        if IS_REJECTED in X.columns or RAW_LABEL not in X.columns:
            rejected = X.get(IS_REJECTED, pd.Series(False, X.index)).to_numpy(dtype=bool)
        else:
            rejected = label_codes(X[RAW_LABEL], RAW_LABEL) == MIXED_CODE
        rejected = timelines.to_sorted(rejected)
        transitions = sticky_log_transitions(float(self.switch_prob))
        codes = viterbi_codes(log_emissions(proba, rejected), timelines.bounds, transitions)
        codes[rejected] = MIXED_CODE
        return add_columns(X, {SMOOTHED_LABEL: labels_from_codes(timelines.to_input(codes))})
