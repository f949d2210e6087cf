"""Reading and writing taskclf's files: features (CSV, Parquet), predictions and segments.

Known columns (the row registries' and ``label``) get their registry type
(text stays text: ``"007"`` stays ``"007"``); others stay as pandas reads them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import reprlib
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from taskclf._columns import BUCKET_START_TS, LABEL, USER_ID
from taskclf._io import atomic_path, atomic_write_text, read_regular_file
from taskclf._progress import step
from taskclf.core.schema import SCHEMA_V3
from taskclf.core.time import format_utc, timestamps_ns, to_utc_series
from taskclf.exceptions import DuplicateRowsError, InputError, ReaderError, TimestampError
from taskclf.stages.segment import Segment

PARQUET_SUFFIXES: Final = (".parquet", ".pq")
FEATURE_SUFFIXES: Final = (".csv", *PARQUET_SUFFIXES)
COLUMN_TYPES: Final[dict[str, str]] = {**dict(SCHEMA_V3.registry), LABEL: "str"}
"""Type name of every known column (v3's registry holds v1's and v2's)."""

_SNIFF_BYTES: Final = 8192
_BOOLEANS: Final = {
    **dict.fromkeys(("true", "1", "1.0", "yes"), True),
    **dict.fromkeys(("false", "0", "0.0", "no"), False),
}
PREDICTIONS_FILE: Final = "predictions.csv"
SEGMENTS_FILE: Final = "segments.json"
MAX_SEGMENTS_BYTES: Final = 1 << 30
"""Largest ``segments.json`` :func:`read_segments_json` reads."""


def _where(path: Path) -> str:
    return f"features file {str(path)!r}"


def feature_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself, or the feature files under a directory in path order.

    Names starting with ``.`` or ``_`` (temporary and marker files) are skipped.
    """
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise ReaderError(f"{_where(path)} does not exist")
        if path.suffix.lower() not in FEATURE_SUFFIXES:
            raise ReaderError(
                f"{_where(path)} is neither CSV nor Parquet: expected a name ending in "
                f"{', '.join(FEATURE_SUFFIXES)}"
            )
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in FEATURE_SUFFIXES
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise ReaderError(
            f"directory {str(path)!r} holds no feature files "
            f"({', '.join('*' + s for s in FEATURE_SUFFIXES)})"
        )
    return files


def read_features(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV or Parquet feature file, or a directory of them sharing their columns.

    Returns the rows in file order with known columns typed and a fresh
    ``RangeIndex``; each refusal is a :class:`~taskclf.exceptions.ReaderError`
    naming the file, or a ``DuplicateRowsError`` for a row two files hold.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "f.csv").write_text("user_id,bucket_start_ts,keys_per_min\\n"
    ...                              "007,2025-01-06 09:00,12.5\\n")
    >>> frame = read_features(d / "f.csv")
    >>> frame["user_id"].iloc[0], str(frame["bucket_start_ts"].dtype)
    ('007', 'datetime64[ns, UTC]')
    """
    files = feature_files(path)
    frames: list[pd.DataFrame] = []
    with step("reading", len(files)) as advance:
        for file in files:
            frame = _read_file(file)
            if frames and set(frame.columns) != set(frames[0].columns):
                missing = sorted(set(frames[0].columns) - set(frame.columns))
                extra = sorted(set(frame.columns) - set(frames[0].columns))
                raise ReaderError(
                    f"{_where(file)} has other columns than {str(files[0])!r}: "
                    f"missing {missing[:10]}, extra {extra[:10]}"
                )
            frames.append(frame)
            advance(1)
    if len(frames) == 1:
        return frames[0]
    out = pd.concat(frames, ignore_index=True)
    _check_rows_in_one_file(out, np.repeat(np.arange(len(files)), [len(f) for f in frames]), files)
    return out


def _check_rows_in_one_file(frame: pd.DataFrame, owner: np.ndarray, files: list[Path]) -> None:
    """Refuse a ``(user_id, bucket_start_ts)`` row that two files hold."""
    keys = [c for c in (USER_ID, BUCKET_START_TS) if c in frame.columns]
    if BUCKET_START_TS not in keys:
        return
    twice = frame.duplicated(keys, keep=False).to_numpy()
    rows = frame[twice].assign(_file=owner[twice])
    spread = rows.groupby(keys, sort=False, dropna=False)["_file"].agg(["min", "max"])
    spread = spread[spread["min"] != spread["max"]]
    if spread.empty:  # repeated within one file: the pipeline names the row
        return
    key = spread.index[0] if len(keys) == 2 else (None, spread.index[0])
    first, second = files[int(spread["min"].iloc[0])], files[int(spread["max"].iloc[0])]
    whose = "" if key[0] is None else f" of user {reprlib.repr(key[0])}"
    raise DuplicateRowsError(
        f"features files {str(first)!r} and {str(second)!r} both hold the row{whose} at "
        f"{key[1].isoformat()} ({len(spread)} duplicate row(s) across files)"
    )


def _read_file(path: Path) -> pd.DataFrame:
    """Read one feature file of those :func:`feature_files` found."""
    try:
        info = path.stat()
    except FileNotFoundError:  # removed since
        raise ReaderError(f"{_where(path)} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise ReaderError(f"{_where(path)} is not a regular file")
    if info.st_size == 0:
        raise ReaderError(f"{_where(path)} is empty")
    frame = _read_parquet(path) if path.suffix.lower() in PARQUET_SUFFIXES else _read_csv(path)
    return _typed(frame, path)


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV file after checking it is UTF-8 text with one header row of known names."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise ReaderError(f"{_where(path)} is not a text CSV file: it holds binary data")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not a character cut at the end of the block
            raise ReaderError(
                f"{_where(path)} is not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from None
    # The header as written: pandas would rename a repeated name 'x' to 'x.1'.
    header = _read_csv_part(path, nrows=1, header=None, dtype=str, keep_default_na=False)
    columns = [str(c) for c in header.iloc[0]]
    if not any(c in COLUMN_TYPES for c in columns):
        raise ReaderError(
            f"{_where(path)} has no header row of feature column names: its first "
            f"line reads {', '.join(columns[:5])!r}; expected names such as "
            "'bucket_start_ts', 'user_id', 'app_id'"
        )
    unnamed = [c for c in columns if not c.strip()]
    if unnamed:
        raise ReaderError(f"{_where(path)}: header row has {len(unnamed)} empty column name(s)")
    repeated = pd.Index(columns)[pd.Index(columns).duplicated()]
    if len(repeated):
        raise ReaderError(f"{_where(path)}: header row names column {repeated[0]!r} twice")
    text = {c: "str" for c in columns if COLUMN_TYPES.get(c) in ("str", "datetime")}
    return _read_csv_part(path, dtype=text)


def _read_csv_part(path: Path, **options: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except ValueError as exc:  # pandas' parser errors, UnicodeDecodeError
        raise ReaderError(f"{_where(path)} cannot be read as CSV: {exc}") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read a Parquet file after checking its magic bytes at both ends."""
    with open(path, "rb") as handle:
        start = handle.read(4)
        handle.seek(-4, os.SEEK_END)
        if start != b"PAR1" or handle.read(4) != b"PAR1":
            raise ReaderError(f"{_where(path)} is not a Parquet file (no PAR1 magic bytes)")
    try:
        return pd.read_parquet(path)
    except ImportError:
        raise ReaderError(
            f"reading {_where(path)} needs pyarrow: pip install 'taskclf[parquet]'"
        ) from None
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError, ...
        raise ReaderError(f"{_where(path)} cannot be read as Parquet: {exc}") from None


def _refuse(column: pd.Series, bad: np.ndarray, what: str, path: Path) -> None:
    """Raise naming the first row flagged in ``bad``, if any."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ReaderError(
            f"{_where(path)}: column {column.name!r} must hold {what} but row {row} holds "
            f"{column.iloc[row]!r} ({int(bad.sum())} such value(s))"
        )


def _as_numeric(column: pd.Series, path: Path) -> pd.Series:
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.astype(np.float64)
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column
    numbers = pd.to_numeric(column, errors="coerce")
    _refuse(column, (numbers.isna() & column.notna()).to_numpy(), "numbers", path)
    return numbers


def _as_bool(column: pd.Series, path: Path) -> pd.Series:
    """True/False, yes/no or 1/0 (text or numbers) as pandas' nullable booleans."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return column
    out = column.astype("str").str.strip().str.lower().map(_BOOLEANS)
    _refuse(column, (out.isna() & column.notna()).to_numpy(), "True/False", path)
    return out.astype("boolean")


def _as_lists(column: pd.Series) -> pd.Series:
    """JSON list text (as :func:`write_features` writes lists) as tuples; other text stays."""
    present = column.dropna()
    if present.empty or not isinstance(present.iloc[0], str):
        return column  # Parquet keeps lists as arrays
    parsed: dict[Any, Any] = {}
    for value in pd.unique(present):  # few distinct values: loop over those
        try:
            items = json.loads(value)
        except (TypeError, ValueError, RecursionError):  # not JSON (or hostile JSON)
            return column
        if not isinstance(items, list):
            return column
        parsed[value] = tuple(items)
    return column.map(parsed).astype(object)


def _typed(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Give each known column its registry type."""
    new: dict[str, pd.Series] = {}
    for name in frame.columns:
        kind, column = COLUMN_TYPES.get(str(name)), frame[name]
        is_text = pd.api.types.is_string_dtype(column.dtype) or column.dtype == object
        if kind in ("int", "float"):
            new[name] = _as_numeric(column, path)
        elif kind == "bool":
            new[name] = _as_bool(column, path)
        elif kind == "datetime":
            try:
                new[name] = to_utc_series(column, column=name)
            except TimestampError as exc:
                raise ReaderError(f"{_where(path)}: {exc}") from None
        elif kind == "list" and is_text:
            new[name] = _as_lists(column)
        elif kind == "str" and not is_text:
            new[name] = column.astype("str").where(column.notna())
    changed = {k: v for k, v in new.items() if v is not frame[k]}
    return (frame.assign(**changed) if changed else frame).reset_index(drop=True)


def _json_text(value: Any) -> Any:
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value


def _for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """List cells (``source_ids``) as JSON text, which :func:`read_features` parses."""
    new = {}
    for name in frame.columns:
        if COLUMN_TYPES.get(str(name)) == "list" and frame[name].dtype == object:
            try:
                codes, uniques = pd.factorize(frame[name])
            except TypeError:  # unhashable cells (lists): convert cell by cell
                new[name] = frame[name].map(_json_text)
                continue
            texts = np.array([_json_text(v) for v in uniques] + [None], dtype=object)
            new[name] = pd.Series(texts[codes], index=frame.index, dtype=object)
    return frame.assign(**new) if new else frame


def write_features(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a feature frame as CSV or Parquet (by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise ReaderError(
            f"cannot write {str(path)!r}: the name must end in {', '.join(FEATURE_SUFFIXES)}"
        )
    with atomic_path(path) as temporary:
        if suffix == ".csv":
            _for_csv(frame).to_csv(temporary, index=False)
        else:
            try:
                frame.to_parquet(temporary, index=False)
            except ImportError:
                raise ReaderError(
                    f"writing {str(path)!r} needs pyarrow: pip install 'taskclf[parquet]'"
                ) from None
    return path


def write_predictions_csv(
    features_df: pd.DataFrame,
    labels: Sequence[str],
    path: str | os.PathLike[str],
    *,
    confidences: np.ndarray | None = None,
    is_rejected: np.ndarray | None = None,
    mapped_labels: Sequence[str] | None = None,
    core_probs: np.ndarray | None = None,
    include_user_id: bool = False,
    extra_columns: Mapping[str, Any] | None = None,
) -> Path:
    """Write one CSV row per bucket, atomically.

    Columns: ``bucket_start_ts`` (ISO 8601, UTC), ``user_id`` (only with
    ``include_user_id`` and a frame that has it), ``predicted_label``, then
    ``confidence`` (4 decimals), ``is_rejected``, ``mapped_label`` and
    ``core_probs`` (a JSON list of 4-decimal probabilities in class order)
    for the arguments given, then ``extra_columns`` (name to values) as given.
    Returns ``path``.
    """
    from taskclf.calibration import check_proba
    from taskclf.taxonomy import round_like_python

    given = {
        "labels": labels,
        "confidences": confidences,
        "is_rejected": is_rejected,
        "mapped_labels": mapped_labels,
        "core_probs": core_probs,
        **(extra_columns or {}),
    }
    for name, values in given.items():
        if values is not None and len(values) != len(features_df):
            raise InputError(
                f"{name} has {len(values)} values but features_df has {len(features_df)} rows"
            )
    data: dict[str, Any] = {BUCKET_START_TS: format_utc(timestamps_ns(features_df))}
    if include_user_id and USER_ID in features_df.columns:
        data[USER_ID] = features_df[USER_ID].to_numpy()
    data["predicted_label"] = np.asarray(labels, dtype=object)
    if confidences is not None:
        data["confidence"] = np.round(np.asarray(confidences, dtype=np.float64), 4)
    if is_rejected is not None:
        data["is_rejected"] = np.asarray(is_rejected, dtype=bool)
    if mapped_labels is not None:
        data["mapped_label"] = np.asarray(mapped_labels, dtype=object)
    if core_probs is not None:  # Python's round(p, 4), bit for bit, as earlier files hold
        rounded = round_like_python(check_proba(core_probs, "core_probs"), 4)
        data["core_probs"] = [json.dumps(row) for row in rounded.tolist()]
    data.update({name: np.asarray(values) for name, values in (extra_columns or {}).items()})
    with atomic_path(path) as temporary:
        pd.DataFrame(data).to_csv(temporary, index=False)
    return Path(path)


def _json_scalar(value: object) -> Any:
    """numpy scalars (a ``user_id`` of an integer column) as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_segments_json(segments: Sequence[Segment], path: str | os.PathLike[str]) -> Path:
    """Write segments to a JSON list, atomically, timestamps in ISO 8601; return ``path``."""
    records = [segment.to_dict() for segment in segments]
    return atomic_write_text(path, json.dumps(records, indent=2, default=_json_scalar))


def _segment(record: object) -> Segment:
    """One record of a segments file, checked field by field (ValueError names the field)."""
    if not isinstance(record, dict):
        raise ValueError(f"a {type(record).__name__}, not an object")
    for name in ("start_ts", "end_ts", "label", "bucket_count"):
        if name not in record:
            raise ValueError(f"no field {name!r}")
    fields: dict[str, Any] = {}
    for name in ("start_ts", "end_ts"):  # ISO 8601 within the years pandas holds
        value = record[name]
        try:
            fields[name] = dt.datetime.fromisoformat(value)
            pd.Timestamp(fields[name]).as_unit("ns")
        except pd.errors.OutOfBoundsDatetime:
            raise ValueError(
                f"field {name!r} holds {value!r}, outside the years 1677-2262"
            ) from None
        except (TypeError, ValueError):
            raise ValueError(
                f"field {name!r} holds {reprlib.repr(value)}, not an ISO 8601 timestamp"
            ) from None
    label, count, user = record["label"], record["bucket_count"], record.get("user_id")
    if not isinstance(label, str):
        raise ValueError(f"field 'label' holds {reprlib.repr(label)}, not text")
    if type(count) is not int or count < 1:
        raise ValueError(f"field 'bucket_count' holds {reprlib.repr(count)}, not a count >= 1")
    if user is not None and (isinstance(user, bool) or not isinstance(user, (str, int))):
        raise ValueError(f"field 'user_id' holds {reprlib.repr(user)}, not text or a number")
    fields.update(label=label, bucket_count=count, user_id=user)
    return Segment(**fields)


def read_segments_json(path: str | os.PathLike[str]) -> list[Segment]:
    """Read segments written by :func:`write_segments_json` (or an earlier taskclf, without
    ``user_id``); a :class:`~taskclf.exceptions.ReaderError` names the bad record's field."""
    where = f"segments file {str(path)!r}"
    data = read_regular_file(path, MAX_SEGMENTS_BYTES, "segments file")
    try:
        records = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also 5000-digit numbers, nesting bombs
        raise ReaderError(f"cannot read {where}: {exc}") from None
    if not isinstance(records, list):
        raise ReaderError(f"{where} must hold a JSON list, got {type(records).__name__}")
    segments = []
    for i, record in enumerate(records):
        try:
            segments.append(_segment(record))
        except ValueError as exc:
            raise ReaderError(f"{where}: record {i} is not a segment: {exc}") from None
    return segments
