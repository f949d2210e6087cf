"""Live inference whose final results equal batch inference (docs/streaming.md)."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import reprlib
import signal
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from taskclf._columns import (
    BUCKET_START_TS,
    IS_REJECTED,
    LABEL,
    PROBA_COLUMNS,
    RAW_LABEL,
    SEGMENT_ID,
    SMOOTHED_LABEL,
    USER_ID,
)
from taskclf._frame import (
    LABEL_DTYPE,
    add_columns,
    check_frame,
    label_codes,
    labels_from_codes,
    require_columns,
)
from taskclf._io import atomic_write_bytes, read_regular_file, signals_handled
from taskclf._stream import Rules, State, Step, advance
from taskclf.core.time import format_utc, ns_to_datetime, timestamps_ns
from taskclf.exceptions import (
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    ReaderError,
    SchemaMismatchError,
    TaskclfError,
)
from taskclf.stages._base import check_params
from taskclf.stages.merge import HysteresisMerger, min_buckets_of
from taskclf.stages.segment import Segment, Segmenter
from taskclf.stages.smooth import MajoritySmoother
from taskclf.stages.viterbi import ViterbiSmoother, log_emissions, sticky_log_transitions

STATE_FORMAT = "taskclf-stream-state/1"  # in every state file; a file without it is refused
MAX_STATE_BYTES = 1 << 30  # the largest state file StreamingPipeline.load reads


def _rules(pipeline: Pipeline) -> tuple[int, Rules]:
    """Where the time steps start in ``pipeline``, and their parameters."""
    names = [name for name, _ in getattr(pipeline, "steps", [])]
    at = names.index("smooth") if "smooth" in names else -1
    if at < 0 or names[at : at + 3] != ["smooth", "segment", "merge"]:
        raise InvalidParameterError(
            f"StreamingPipeline needs a taskclf pipeline (steps ... smooth, segment, "
            f"merge [, taxonomy]); got steps {names}"
        )
    stages = smooth, _, merge = [step for _, step in pipeline.steps[at : at + 3]]
    kinds: tuple[Any, ...] = ((MajoritySmoother, ViterbiSmoother), Segmenter, HysteresisMerger)
    for stage, kind in zip(stages, kinds):
        if not isinstance(stage, kind):
            raise InvalidParameterError(f"StreamingPipeline cannot stream {type(stage).__name__}")
        check_params(stage)
        if stage.timelines != "per_user":
            raise InvalidParameterError(
                f"StreamingPipeline streams timelines='per_user' only; "
                f"{type(stage).__name__} has timelines={stage.timelines!r}"
            )
    gaps = sorted({float(s.max_gap_seconds) for s in stages})
    if len(gaps) > 1:
        raise InvalidParameterError(
            f"StreamingPipeline needs one max_gap_seconds for smooth, segment and merge, got {gaps}"
        )
    is_majority = isinstance(smooth, MajoritySmoother)
    return at, Rules(
        window=int(smooth.window) if is_majority else None,
        log_transition=None if is_majority else sticky_log_transitions(float(smooth.switch_prob)),
        gap_ns=round(gaps[0] * 1_000_000_000),
        min_buckets=min_buckets_of(merge.min_block_seconds, merge.bucket_seconds),
        width_ns=int(merge.bucket_seconds) * 1_000_000_000,
        join_equal=bool(merge.join_equal),
    )


def _where(user: Any, ts_ns: int) -> str:
    return (
        f"row for user_id {reprlib.repr(user)}, bucket_start_ts {format_utc(np.array([ts_ns]))[0]}"
    )


@attrs.define(slots=False)
class StreamResult:
    """What one call of :meth:`StreamingPipeline.update` or ``close`` finalized.

    Attributes
    ----------
    final : DataFrame
        The rows that became final, by user and time, as ``pipeline.transform`` gives them.
    segments : list of Segment
        The segments that became final, by user and time.
    provisional : DataFrame
        Per input row, in input order, ``user_id``, ``bucket_start_ts`` and
        ``label``: its label if the stream ended now (computed when first read).
    """

    final: pd.DataFrame
    segments: list[Segment]
    _provisional: Callable[[], pd.DataFrame] = attrs.field(repr=False)

    @functools.cached_property
    def provisional(self) -> pd.DataFrame:
        return self._provisional()


class StreamingPipeline:
    """Run a fitted taskclf pipeline on rows as they come; results equal batch.

    Each row and segment is handed back, as ``pipeline.transform`` of all
    rows gives it, once no later row can change it (docs/streaming.md).

    Parameters
    ----------
    pipeline : Pipeline
        A fitted taskclf pipeline or a loaded bundle (rolling-majority or
        Viterbi smoother, with or without a taxonomy step).

    Raises
    ------
    InvalidParameterError
        For another kind of pipeline, timelines ``"as_given"`` or different gaps.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        at, self._rules = _rules(pipeline)
        self.pipeline = pipeline
        self._per_row = pipeline[:at]
        self._after = pipeline[at + 3 :] if len(pipeline) > at + 3 else None
        self._fingerprint = joblib.hash(pipeline)
        self._state = State.empty(self._rules)
        self._columns: list[str] | None = None

    def _check_columns(self, rows: pd.DataFrame) -> pd.DataFrame:
        require_columns(rows, [USER_ID, BUCKET_START_TS], "StreamingPipeline.update")
        if self._columns is None or list(rows.columns) == self._columns:
            return rows
        missing = [c for c in self._columns if c not in rows.columns]
        extra = [c for c in rows.columns if c not in self._columns]
        if missing or extra:
            raise SchemaMismatchError(
                f"{_where(rows[USER_ID].iloc[0], timestamps_ns(rows.iloc[:1])[0])}: the columns "
                f"differ from the stream's: missing {missing[:10]}, unexpected {extra[:10]}"
            )
        return rows[self._columns]

    def _check_order(self, user: np.ndarray, ts: np.ndarray, users: pd.Index) -> None:
        """Refuse a row not after the last one of its user, or joining a closed timeline."""
        by_user = np.argsort(user, kind="stable")
        u, t = user[by_user], ts[by_user]
        known = np.append(True, u[1:] != u[:-1]) & (u < len(self._state.users))
        previous = np.append(np.int64(0), t[:-1])
        previous[known] = self._state.per_user["last_ns"][u[known]]
        reopened = known.copy()
        reopened[known] = ~self._state.is_open[u[known]]
        for bad, why in [
            ((t <= previous) & (np.append(False, u[1:] == u[:-1]) | known),
             "not after the user's previous row ({}); each user's rows must come in time order"),
            (reopened & (t - previous <= self._rules.gap_ns),
             "the user's timeline was closed after {}; a later row must start more than "
             "max_gap_seconds after it"),
        ]:  # fmt: skip
            if bad.any():
                i = int(np.argmax(bad))
                when = format_utc(previous[i : i + 1])[0]
                raise InputError(f"{_where(users[u[i]], t[i])}: {why.format(when)}")

    def _new_rows(self, rows: pd.DataFrame) -> tuple[dict[str, Any], pd.Index]:
        ts = timestamps_ns(rows)
        users = pd.Index(rows[USER_ID].to_numpy(dtype=object), dtype=object)
        if users.hasnans:
            missing = int(np.argmax(pd.isna(users)))
            raise InputError(f"column 'user_id' has a missing value at row {missing}")
        grown = self._state.users.append(users.unique().difference(self._state.users, sort=False))
        user = grown.get_indexer(users).astype(np.int64)
        self._check_order(user, ts, grown)
        try:
            out = self._per_row.transform(rows)
        except MissingColumnsError as exc:
            raise SchemaMismatchError(
                f"{_where(users[0], ts[0])}: the rows lack the model's columns {exc.columns[:10]}"
            ) from None
        except TaskclfError as exc:
            raise type(exc)(f"{_where(users[0], ts[0])}: {exc}") from None
        new = {"frame": out.reset_index(drop=True), "user": user, "ts": ts}
        new["serial"] = self._state.n_seen + np.arange(len(rows), dtype=np.int64)
        new["raw"] = label_codes(out[RAW_LABEL], RAW_LABEL)
        new["rejected"] = out[IS_REJECTED].to_numpy(dtype=bool)
        if self._rules.log_transition is not None:
            proba = out[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
            new["log_emission"] = log_emissions(proba, new["rejected"])
        return new, grown

    def update(self, rows: pd.DataFrame, now: Any = None) -> StreamResult:
        """Add rows; return those (and the segments) that became final.

        Parameters
        ----------
        rows : DataFrame
            Feature rows of any users, each user's in time order after its earlier rows.
        now : timestamp, optional
            No row still to come starts before ``now``: timelines whose last
            row starts more than ``max_gap_seconds`` before it end.

        Raises
        ------
        InputError
            For a row not after its user's previous row or joining a closed
            timeline; ``SchemaMismatchError`` for columns unlike the
            pipeline's or earlier rows'. The state is kept.
        """
        check_frame(rows, "StreamingPipeline.update")
        rows = self._check_columns(rows)
        state, new = self._state, None
        if len(rows):
            new, users = self._new_rows(rows)
            state = state.with_users(users)
        closing = np.zeros(len(state.users), bool)
        if now is not None:
            now_ns = timestamps_ns(pd.DataFrame({BUCKET_START_TS: [now]}))[0]
            last, closing = state.per_user["last_ns"].copy(), state.is_open
            if new is not None:
                np.maximum.at(last, new["user"], new["ts"])
                closing[new["user"]] = True
            closing &= now_ns - last > self._rules.gap_ns
        result = self._commit(advance(state, new, closing, self._rules), rows, new)
        if self._columns is None and len(rows):
            self._columns = list(rows.columns)
        return result

    def close(self, user_id: Any = None) -> StreamResult:
        """End the open timeline of ``user_id`` (every user's when None): the rest becomes final.

        Raises
        ------
        InputError
            For a user the stream has not seen.
        """
        closing = self._state.is_open
        if user_id is not None:
            at = self._state.users.get_indexer(pd.Index([user_id], dtype=object))[0]
            if at < 0:
                raise InputError(
                    f"close: user_id {reprlib.repr(user_id)} has no rows in the stream"
                )
            closing &= np.arange(len(closing)) == at
        return self._commit(advance(self._state, None, closing, self._rules), None, None)

    def _commit(
        self, step: Step, rows: pd.DataFrame | None, new: dict[str, Any] | None
    ) -> StreamResult:
        """Keep the state after ``step``; what it finalized."""

        def provisional() -> pd.DataFrame:
            if rows is None or new is None:
                return pd.DataFrame({USER_ID: [], BUCKET_START_TS: [], LABEL: []})
            closing = np.zeros(len(step.state.users), bool)
            closing[new["user"]] = True
            rest = advance(step.state, None, closing, self._rules)
            serial = new["serial"]
            codes = np.full(len(serial), -1, np.int8)
            for done in (step, rest):
                mine = done.serial >= serial[0]
                codes[done.serial[mine] - serial[0]] = done.label[mine]
            return rows[[USER_ID, BUCKET_START_TS]].assign(**{LABEL: labels_from_codes(codes)})

        final = add_columns(
            step.frame.iloc[step.rows].reset_index(drop=True),
            {
                SMOOTHED_LABEL: labels_from_codes(step.smooth),
                SEGMENT_ID: step.segment_id,
                LABEL: labels_from_codes(step.label),
            },
        )
        if self._after is not None:
            final = self._after.transform(final)
        found = step.segments[np.lexsort((step.segments[:, 1], step.segments[:, 0]))]
        names, users, width = LABEL_DTYPE.categories, step.state.users, self._rules.width_ns
        segments = [
            Segment(ns_to_datetime(f), ns_to_datetime(e + width), str(names[k]), c, users[u])
            for u, f, e, k, c in found.tolist()
        ]
        self._state = step.state
        return StreamResult(final, segments, provisional)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` atomically (one ``.npz`` file, loaded by :meth:`load`)."""
        state = self._state
        users = pd.DataFrame({USER_ID: state.users.to_numpy(dtype=object)})
        meta: dict[str, Any] = {"format": STATE_FORMAT, "fingerprint": self._fingerprint}
        meta |= {"n_seen": state.n_seen, "columns": self._columns}
        arrays: dict[str, Any] = {f"user_{k}": v for k, v in state.per_user.items()}
        arrays |= {f"row_{k}": v for k, v in state.rows.items()}
        for name, frame in [("frame", state.frame), ("users", users)]:
            arrays[name], meta[name] = _to_parquet(frame)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str], pipeline: Pipeline) -> StreamingPipeline:
        """A stream of ``pipeline`` resumed from the state saved at ``path``.

        Raises
        ------
        ReaderError
            Naming the file: not a stream state, corrupt, or saved for another pipeline.
        """
        stream = cls(pipeline)
        where = f"stream state {str(path)!r}"
        data = read_regular_file(path, MAX_STATE_BYTES, "stream state")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                stored = {name: saved[name] for name in saved.files}
            meta = json.loads(stored["meta"].tobytes())
            if meta.get("format") != STATE_FORMAT:
                raise ReaderError(f"{where} is not a taskclf stream state")
            if meta["fingerprint"] != stream._fingerprint:
                raise ReaderError(
                    f"{where} was saved for another pipeline (other parameters or model); "
                    "resume it with the pipeline that wrote it"
                )
            frame = _from_parquet(stored["frame"], meta["frame"])
            users = _from_parquet(stored["users"], meta["users"])[USER_ID]
            empty = State.empty(stream._rules)
            state = State(
                users=pd.Index(users.to_numpy(dtype=object), dtype=object),
                per_user={k: stored[f"user_{k}"] for k in empty.per_user},
                rows={k: stored[f"row_{k}"] for k in empty.rows},
                frame=frame,
                n_seen=int(meta["n_seen"]),
            )
        except ReaderError:
            raise
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ReaderError(f"{where} is corrupt: {exc}") from None
        n_users, n_rows = len(state.users), len(state.rows["user"])
        fits = [len(a) == n_users for a in state.per_user.values()]
        fits += [len(a) == n_rows for a in state.rows.values()]
        fits += [len(frame) == n_rows]
        if not all(fits) or (n_rows and state.rows["user"].max() >= n_users):
            raise ReaderError(f"{where} is corrupt: its arrays do not fit together")
        stream._state, stream._columns = state, meta["columns"]
        return stream


def _to_parquet(frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    """``frame`` as Parquet bytes, and how to give each column its dtype back."""
    buffer = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buffer, index=False)
    dtypes = {
        str(name): [dtype.categories.tolist(), str(dtype.categories.dtype), bool(dtype.ordered)]
        if isinstance(dtype, pd.CategoricalDtype)
        else str(dtype)
        for name, dtype in frame.dtypes.items()
    }
    return np.frombuffer(buffer.getvalue(), np.uint8), dtypes


def _from_parquet(data: np.ndarray, dtypes: dict[str, Any]) -> pd.DataFrame:
    frame = pd.read_parquet(io.BytesIO(data.tobytes()))
    for name, dtype in dtypes.items():
        if isinstance(dtype, list):
            categories = pd.Index(dtype[0], dtype=dtype[1])
            codes = categories.get_indexer(pd.Index(frame[name].astype(object)))
            target = pd.CategoricalDtype(categories, ordered=dtype[2])
            frame[name] = pd.Categorical.from_codes(codes, dtype=target)
        elif str(frame[name].dtype) != dtype:
            frame[name] = frame[name].astype(dtype)
    return frame


@contextlib.contextmanager
def _signals_deferred() -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """SIGTERM and Ctrl-C: raised while waiting for input, deferred while ``working()``."""
    busy, stopped = [False], [False]

    def handle(signum: int, frame: object) -> None:
        if not busy[0]:
            raise KeyboardInterrupt(f"signal {signum}")
        stopped[0] = True

    @contextlib.contextmanager
    def working() -> Iterator[None]:
        busy[0] = True
        yield
        busy[0] = False
        if stopped[0]:
            raise KeyboardInterrupt("stopped")

    with signals_handled(handle, signal.SIGTERM, signal.SIGINT):
        yield working


def _row_from_json(line: str, number: int) -> pd.DataFrame:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise InputError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise InputError(f"line {number}: expected a JSON object, got {type(record).__name__}")
    return pd.DataFrame([record])


def _lines(result: StreamResult, inputs: list[str], provisional: bool) -> list[str]:
    lines = []
    if provisional:
        rows = result.provisional
        times = format_utc(timestamps_ns(rows))
        for user, ts, label in zip(rows[USER_ID].tolist(), times, rows[LABEL].tolist()):
            record = {"kind": "provisional", USER_ID: user, BUCKET_START_TS: ts, LABEL: label}
            lines.append(json.dumps(record))
    final = result.final
    if len(final):
        added = [c for c in final.columns if c not in inputs]
        out = final[[USER_ID, *added]].copy()
        out.insert(1, BUCKET_START_TS, format_utc(timestamps_ns(final)))
        out.insert(0, "kind", "row")
        lines += out.to_json(orient="records", lines=True, double_precision=15).splitlines()
    return lines + [json.dumps({"kind": "segment", **s.to_dict()}) for s in result.segments]


def run_stream(
    pipeline: Pipeline,
    lines_in: Iterable[str],
    write_line: Callable[[str], Any],
    *,
    state_path: str | os.PathLike[str] | None = None,
    provisional: bool = False,
) -> bool:
    """Stream feature rows given as JSON lines; write results as JSON lines.

    The output lines, the resume from ``state_path`` and the stop on SIGTERM
    or Ctrl-C: docs/streaming.md, "Command line".

    Parameters
    ----------
    write_line : callable
        Called with each output line (without its newline).
    state_path : path-like, optional
        Where the state is resumed from (if it exists) and saved at the end.
    provisional : bool, default False
        Also write the provisional label of each input row.

    Returns
    -------
    bool
        True when the input ended (everything final), False when stopped by a signal.
    """
    stream = StreamingPipeline(pipeline)
    if state_path is not None and os.path.exists(state_path):
        stream = StreamingPipeline.load(state_path, pipeline)
    try:
        with _signals_deferred() as working:
            for number, line in enumerate(lines_in, start=1):
                if line.strip():
                    with working():
                        result = stream.update(_row_from_json(line, number))
                        for text in _lines(result, stream._columns or [], provisional):
                            write_line(text)
            with working():
                for text in _lines(stream.close(), stream._columns or [], False):
                    write_line(text)
        return True
    except KeyboardInterrupt:
        return False
    finally:
        if state_path is not None:
            stream.save(state_path)


__all__ = ["StreamResult", "StreamingPipeline", "run_stream"]
