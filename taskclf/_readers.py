"""Reading (and writing) feature files: CSV, Parquet, or a directory of them.

Every refusal is a :class:`~taskclf.exceptions.ReaderError` that names the
file and says what is wrong with it: an empty file, binary content where
text was expected, a missing header row, a column of the wrong type, an
unparseable timestamp, or a directory without feature files.

Known columns (those of the feature schemas' row registries, plus
``label``) are given their registry type: text columns stay text (``"007"``
stays ``"007"``), numeric columns must hold numbers, boolean columns
``True``/``False`` (or 0/1), and ``bucket_start_ts``/``bucket_end_ts`` are
parsed to UTC. Other columns are kept as pandas reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import pandas as pd

from taskclf._columns import LABEL
from taskclf._io import atomic_path
from taskclf.core.schema import SCHEMA_V3
from taskclf.core.time import to_utc_series
from taskclf.exceptions import ReaderError, TimestampError

CSV_SUFFIXES: Final = (".csv",)
PARQUET_SUFFIXES: Final = (".parquet", ".pq")
FEATURE_SUFFIXES: Final = CSV_SUFFIXES + PARQUET_SUFFIXES

COLUMN_TYPES: Final[dict[str, str]] = {**dict(SCHEMA_V3.registry), LABEL: "str"}
"""Type name of every known column (v3's registry holds v1's and v2's)."""

TIMESTAMP_COLUMNS: Final = ("bucket_start_ts", "bucket_end_ts")
_SNIFF_BYTES: Final = 8192
_PARQUET_MAGIC: Final = b"PAR1"
_TRUE: Final = frozenset({"true", "1", "1.0", "yes"})
_FALSE: Final = frozenset({"false", "0", "0.0", "no"})

T = TypeVar("T")


def _no_progress(items: Iterable[T]) -> Iterator[T]:
    return iter(items)


def _where(path: Path) -> str:
    return f"features file {str(path)!r}"


def feature_files(path: str | os.PathLike[str]) -> list[Path]:
    """The feature files ``path`` names: itself, or those inside a directory.

    A directory is searched recursively (so Hive-style partitioned output
    works) for ``*.csv``, ``*.parquet`` and ``*.pq`` files, skipping names
    starting with ``.`` or ``_`` (temporary and marker files); files come
    in sorted path order.

    Raises
    ------
    ReaderError
        If ``path`` does not exist, is a file of another kind, or is a
        directory holding no feature file.
    """
    path = Path(path)
    if path.is_dir():
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
    if not path.exists():
        raise ReaderError(f"{_where(path)} does not exist")
    if path.suffix.lower() not in FEATURE_SUFFIXES:
        raise ReaderError(
            f"{_where(path)} is neither CSV nor Parquet: expected a name ending in "
            f"{', '.join(FEATURE_SUFFIXES)}"
        )
    return [path]


def read_features(
    path: str | os.PathLike[str],
    *,
    progress: Callable[[Iterable[Path]], Iterable[Path]] = _no_progress,
) -> pd.DataFrame:
    """Read a CSV or Parquet feature file, or every such file in a directory.

    Parameters
    ----------
    path : path-like
        A ``.csv``, ``.parquet`` or ``.pq`` file, or a directory of them.
        The files of a directory must share their columns; their rows are
        concatenated in file order.
    progress : callable, optional
        Wraps the iteration over files (a progress bar).

    Returns
    -------
    DataFrame
        Known columns typed (see the module docstring); a fresh
        ``RangeIndex``.

    Raises
    ------
    ReaderError
        Naming the file and the problem.

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
    first_columns: list[str] | None = None
    for file in progress(files):
        frame = read_feature_file(file)
        if first_columns is None:
            first_columns = list(frame.columns)
        elif set(frame.columns) != set(first_columns):
            missing = sorted(set(first_columns) - set(frame.columns))
            extra = sorted(set(frame.columns) - set(first_columns))
            raise ReaderError(
                f"{_where(file)} has other columns than {str(files[0])!r}: "
                f"missing {missing[:10]}, extra {extra[:10]}"
            )
        frames.append(frame)
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def read_feature_file(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read one CSV or Parquet feature file (see :func:`read_features`)."""
    path = Path(path)
    if not path.is_file():
        raise ReaderError(f"{_where(path)} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ReaderError(f"{_where(path)} is empty")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame = _read_parquet(path)
    elif path.suffix.lower() in CSV_SUFFIXES:
        frame = _read_csv(path)
    else:
        raise ReaderError(f"{_where(path)} is neither CSV nor Parquet")
    return _typed(frame, path)


def _read_csv(path: Path) -> pd.DataFrame:
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise ReaderError(f"{_where(path)} is not a text CSV file: it holds binary data")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sniffed block is fine.
        if exc.start < len(head) - 4:
            raise ReaderError(
                f"{_where(path)} is not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from None
    try:
        header = pd.read_csv(path, nrows=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReaderError(f"{_where(path)} cannot be read as CSV: {exc}") from None
    columns = [str(c) for c in header.columns]
    _check_header(columns, path)
    text = {c: "str" for c in columns if COLUMN_TYPES.get(c) in ("str", "datetime")}
    try:
        return pd.read_csv(path, dtype=text)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ReaderError(f"{_where(path)} cannot be read as CSV: {exc}") from None


def _check_header(columns: list[str], path: Path) -> None:
    if not any(c in COLUMN_TYPES for c in columns):
        shown = ", ".join(columns[:5])
        raise ReaderError(
            f"{_where(path)} has no header row of feature column names: its first "
            f"line reads {shown!r}; expected names such as 'bucket_start_ts', "
            "'user_id', 'app_id'"
        )
    unnamed = [c for c in columns if c.startswith("Unnamed: ")]
    if unnamed:
        raise ReaderError(f"{_where(path)}: header row has {len(unnamed)} empty column name(s)")


def _read_parquet(path: Path) -> pd.DataFrame:
    with open(path, "rb") as handle:
        start = handle.read(4)
        handle.seek(-4, os.SEEK_END)
        end = handle.read(4)
    if start != _PARQUET_MAGIC or end != _PARQUET_MAGIC:
        raise ReaderError(f"{_where(path)} is not a Parquet file (no PAR1 magic bytes)")
    try:
        return pd.read_parquet(path)
    except ImportError:
        raise ReaderError(
            f"reading {_where(path)} needs pyarrow: pip install 'taskclf[parquet]'"
        ) from None
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError, ...
        raise ReaderError(f"{_where(path)} cannot be read as Parquet: {exc}") from None


def _bad_value(column: pd.Series, bad: np.ndarray) -> tuple[int, Any]:
    position = int(np.flatnonzero(bad)[0])
    return position, column.iloc[position]


def _as_numeric(column: pd.Series, name: str, path: Path) -> pd.Series:
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.astype(np.float64)
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column
    numbers = pd.to_numeric(column, errors="coerce")
    bad = (numbers.isna() & column.notna()).to_numpy()
    if bad.any():
        row, value = _bad_value(column, bad)
        raise ReaderError(
            f"{_where(path)}: column {name!r} must hold numbers but row {row} holds "
            f"{value!r} ({int(bad.sum())} such value(s))"
        )
    return numbers


def _as_bool(column: pd.Series, name: str, path: Path) -> pd.Series:
    if pd.api.types.is_bool_dtype(column.dtype):
        return column
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        if bad.any():
            row, value = _bad_value(column, bad)
            raise ReaderError(
                f"{_where(path)}: column {name!r} must hold True/False but row {row} "
                f"holds {value!r}"
            )
        return column.astype("boolean")
    text = column.astype("str").str.strip().str.lower()
    known = text.isin(_TRUE | _FALSE).to_numpy() | column.isna().to_numpy()
    if not known.all():
        row, value = _bad_value(column, ~known)
        raise ReaderError(
            f"{_where(path)}: column {name!r} must hold True/False but row {row} holds {value!r}"
        )
    out = pd.Series(text.isin(_TRUE).to_numpy(), index=column.index, dtype="boolean")
    out[column.isna().to_numpy()] = pd.NA
    return out


def _is_text(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column.dtype) or column.dtype == object


def _as_lists(column: pd.Series) -> pd.Series:
    """A list column as :func:`write_features` writes it to CSV (JSON text) back to tuples.

    Text that is not a JSON list (as other writers leave it) stays text: the
    column is metadata, not a model feature.
    """
    present = column.dropna()
    if present.empty or not isinstance(present.iloc[0], str):
        return column  # Parquet keeps lists as arrays: nothing to parse
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
    new: dict[str, pd.Series] = {}
    for name in frame.columns:
        kind = COLUMN_TYPES.get(str(name))
        column = frame[name]
        if kind in ("int", "float"):
            new[name] = _as_numeric(column, name, path)
        elif kind == "bool":
            new[name] = _as_bool(column, name, path)
        elif kind == "datetime" and name in TIMESTAMP_COLUMNS:
            try:
                new[name] = to_utc_series(column, column=name)
            except TimestampError as exc:
                raise ReaderError(f"{_where(path)}: {exc}") from None
        elif kind == "list" and not column.empty and _is_text(column):
            new[name] = _as_lists(column)
        elif kind == "str" and not (
            pd.api.types.is_string_dtype(column.dtype) or column.dtype == object
        ):
            new[name] = column.astype("str").where(column.notna())
    changed = {k: v for k, v in new.items() if v is not frame[k]}
    out = frame.assign(**changed) if changed else frame
    return out.reset_index(drop=True)


def _json_text(value: Any) -> Any:
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value


def _for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """List cells (``source_ids``) as JSON text, which :func:`read_features` parses."""
    new = {}
    for name in frame.columns:
        if COLUMN_TYPES.get(str(name)) != "list" or frame[name].dtype != object:
            continue
        column = frame[name]
        try:
            codes, uniques = pd.factorize(column)
        except TypeError:  # unhashable cells (lists): convert cell by cell
            new[name] = column.map(_json_text)
            continue
        texts = np.array([_json_text(v) for v in uniques] + [None], dtype=object)
        new[name] = pd.Series(texts[codes], index=column.index, dtype=object)
    return frame.assign(**new) if new else frame


def write_features(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a feature frame as CSV or Parquet (by suffix), atomically.

    Raises
    ------
    ReaderError
        If the suffix is neither CSV nor Parquet, or Parquet support
        (pyarrow) is missing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise ReaderError(
            f"cannot write {str(path)!r}: the name must end in {', '.join(FEATURE_SUFFIXES)}"
        )
    with atomic_path(path) as temporary:
        if suffix in PARQUET_SUFFIXES:
            try:
                frame.to_parquet(temporary, index=False)
            except ImportError:
                raise ReaderError(
                    f"writing {str(path)!r} needs pyarrow: pip install 'taskclf[parquet]'"
                ) from None
        else:
            _for_csv(frame).to_csv(temporary, index=False)
    return path
