"""Scale-out on Dask: the fitted pipeline on a Dask DataFrame partitioned by user.

Smoothing, segmentation and merging work along timelines, and a timeline is
one user's rows (the whole frame when there is no ``user_id``). So the
in-memory pipeline gives the right answer on any partition that holds every
row of each of its users. :func:`partition_by_user` lays a Dask DataFrame
out that way (moving rows only when a user spans partitions),
:func:`transform` and :func:`predict` then run ``pipeline.transform`` on
each partition, and :func:`infer_parquet_dir` does a whole batch run from a
directory of Parquet files to predictions and segments on disk.

Results equal the in-memory run on the whole frame (``ddf.compute()``), row
for row, once aligned on the index: a shuffle changes which partition a row
lands in and its position there, never its index. Dask itself is an
optional dependency: ``pip install "taskclf[dask]"``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import pandas as pd

from taskclf._columns import (
    BUCKET_START_TS,
    CONFIDENCE,
    IS_REJECTED,
    LABEL,
    MAPPED_LABEL,
    MAPPED_PROBA_PREFIX,
    PROBA_COLUMNS,
    SEGMENT_ID,
    USER_ID,
)
from taskclf._frame import LABEL_DTYPE
from taskclf._io import atomic_path
from taskclf.core.defaults import DEFAULT_BUCKET_SECONDS
from taskclf.core.time import to_utc_series
from taskclf.exceptions import InputError, InvalidParameterError, ReaderError
from taskclf.infer.batch import write_segments_json
from taskclf.stages._timeline import check_positive_seconds
from taskclf.stages.merge import HysteresisMerger
from taskclf.stages.segment import Segment, Segmenter, frame_to_segments

if TYPE_CHECKING:
    import dask.dataframe as dd

DASK_INSTALL_HINT = 'pip install "taskclf[dask]"'
"""How to get the optional dependencies of this module."""

PREDICTED_LABEL = "predicted_label"
"""Column of the final label in the predictions written by :func:`infer_parquet_dir`."""

_RANK = "__taskclf_user_rank__"
"""Hidden column: position of the row's user in order of first appearance."""

_BLOCKS_META = pd.DataFrame(
    {
        "rank": np.zeros(0, np.int64),
        "first": np.zeros(0, np.int64),
        "count": np.zeros(0, np.int64),
    }
)
_SHIFTS_META = pd.DataFrame({"rank": np.zeros(0, np.int64), "shift": np.zeros(0, np.int64)})
_RECORDS_META = pd.DataFrame(
    {
        "user_rank": np.zeros(0, np.int64),
        "position": np.zeros(0, np.int64),
        "start_ts": pd.Series([], dtype="datetime64[ns, UTC]"),
        "end_ts": pd.Series([], dtype="datetime64[ns, UTC]"),
        "label": pd.Categorical([], dtype=LABEL_DTYPE),
        "bucket_count": np.zeros(0, np.int64),
    }
)


def _dask() -> tuple[Any, Any]:
    """``(dask, dask.dataframe)``, or an ImportError telling how to install them."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as exc:
        raise ImportError(
            f"taskclf.distributed needs Dask ({exc}); install it with: {DASK_INSTALL_HINT}"
        ) from exc
    return dask, dd


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"running on a Dask cluster needs dask.distributed ({exc}); "
            f"install it with: {DASK_INSTALL_HINT}"
        ) from exc
    return distributed


def _check_frame(ddf: object, where: str) -> dd.DataFrame:
    _, dd = _dask()
    if not isinstance(ddf, dd.DataFrame):
        raise InputError(f"{where} expects a dask.dataframe.DataFrame, got {type(ddf).__name__}")
    return ddf


def _check_pipeline(pipeline: object, where: str) -> Any:
    if not callable(getattr(pipeline, "transform", None)):
        raise InvalidParameterError(
            f"{where} expects a fitted taskclf pipeline (see taskclf.build_pipeline), "
            f"got {type(pipeline).__name__}"
        )
    return pipeline


def _ship(value: Any, what: str) -> Any:
    """Wrap ``value`` as one graph key, so it reaches each worker once.

    Passed to ``map_partitions`` as a plain argument, the pipeline (with its
    booster) would be serialized into every task; as a ``Delayed`` it is one
    piece of data that workers fetch once and share.
    """
    dask, _ = _dask()
    return dask.delayed(value, name=f"taskclf-{what}-{uuid.uuid4().hex}")


@attrs.frozen(eq=False)
class UserPartitions:
    """A Dask DataFrame laid out so that every partition holds whole users.

    Made by :func:`partition_by_user`.

    Attributes
    ----------
    frame : dask.dataframe.DataFrame
        The rows, each user's in one partition (all rows in one partition
        when there is no ``user_id`` column). Each row keeps its index.
    users : pandas.Index or None
        The distinct user ids in order of first appearance in the input
        (partition by partition, then row by row); ``None`` without
        ``user_id``.
    shuffled : bool
        Whether rows had to move: a shuffle on ``user_id``, or the
        concatenation of all partitions into one.
    """

    frame: Any
    users: pd.Index | None
    shuffled: bool


def _first_appearances(users: pd.Series) -> pd.Series:
    """The distinct values of one partition's ``user_id``, in order of appearance."""
    return users.drop_duplicates().reset_index(drop=True)


def partition_by_user(ddf: dd.DataFrame) -> UserPartitions:
    """Lay ``ddf`` out so that the rows of each user are in one partition.

    Reads the ``user_id`` column once (one small computation: each
    partition sends back its distinct user ids) to learn whether any user
    spans partitions, and shuffles on ``user_id`` only then. A frame
    without ``user_id`` is one timeline: all its rows go to one partition.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        Feature rows; ``user_id`` must be a column (an index named
        ``user_id`` is not read, as in the in-memory pipeline).

    Returns
    -------
    UserPartitions

    Raises
    ------
    InputError
        If ``ddf`` is not a Dask DataFrame.
    ImportError
        If Dask is not installed.

    Examples
    --------
    >>> import pandas as pd
    >>> import dask.dataframe as dd
    >>> frame = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "x": range(4)})
    >>> parts = partition_by_user(dd.from_pandas(frame, npartitions=2))
    >>> parts.shuffled, parts.users.tolist()
    (False, ['a', 'b'])
    >>> frame = pd.DataFrame({"user_id": ["a", "b", "a", "b"], "x": range(4)})
    >>> partition_by_user(dd.from_pandas(frame, npartitions=2)).shuffled
    True
    """
    ddf = _check_frame(ddf, "partition_by_user")
    if USER_ID not in ddf.columns:
        if ddf.npartitions == 1:
            return UserPartitions(ddf, None, shuffled=False)
        return UserPartitions(ddf.repartition(npartitions=1), None, shuffled=True)
    dask, _ = _dask()
    column = ddf[USER_ID]
    firsts = column.map_partitions(_first_appearances, meta=column._meta)
    # Reading one column, Dask's optimizer would concatenate small input
    # partitions (Parquet files, say) into fewer; the full read may keep them
    # apart. Users local to the concatenated partitions may then span the
    # real ones: look at the partitions as they are, the finest layout, whose
    # locality every coarser layout keeps.
    with dask.config.set({"optimization.tune.active": False}):
        firsts = firsts.compute()
    users = pd.Index(firsts.drop_duplicates().to_numpy(), name=USER_ID)
    if len(users) == len(firsts):  # no user in two partitions
        return UserPartitions(ddf, users, shuffled=False)
    return UserPartitions(ddf.shuffle(on=USER_ID), users, shuffled=True)


def _pipeline_meta(pipeline: Any, frame: dd.DataFrame) -> pd.DataFrame:
    """The pipeline's output on the (empty) metadata frame of ``frame``.

    Doubles as an early check: missing columns and the like are reported
    here, on the client, before any task runs.
    """
    meta = pipeline.transform(frame._meta)
    if not isinstance(meta, pd.DataFrame) or len(meta):
        raise InvalidParameterError(
            "pipeline.transform must turn an empty frame into an empty DataFrame, got "
            f"{type(meta).__name__} of length {len(meta)}"
        )
    return meta


def _transform_partition(part: pd.DataFrame, pipeline: Any) -> pd.DataFrame:
    return pipeline.transform(part)


def _transform_ranked(part: pd.DataFrame, pipeline: Any, users: pd.Index) -> pd.DataFrame:
    """``pipeline.transform`` plus the rank of each row's user."""
    out = pipeline.transform(part)
    return out.assign(**{_RANK: users.get_indexer(pd.Index(part[USER_ID])).astype(np.int64)})


def _segment_blocks(ranked: pd.DataFrame) -> pd.DataFrame:
    """Per user of one partition: the first of its segment ids and how many it has.

    Within a partition each user's segments are numbered consecutively
    (the Segmenter numbers timeline by timeline, user by user).
    """
    ids = ranked.groupby(_RANK, sort=False)[SEGMENT_ID]
    first, last = ids.min(), ids.max()
    return pd.DataFrame(
        {
            "rank": first.index.to_numpy(dtype=np.int64),
            "first": first.to_numpy(dtype=np.int64),
            "count": (last - first + 1).to_numpy(dtype=np.int64),
        }
    )


def _segment_shifts(blocks: pd.DataFrame) -> pd.DataFrame:
    """What to add to each user's partition-local segment ids to number them globally.

    Globally, as in the in-memory pipeline, users come in order of first
    appearance and each user's segments follow the previous user's.
    """
    blocks = blocks.sort_values("rank", kind="stable")
    counts = blocks["count"].to_numpy(dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    return pd.DataFrame(
        {
            "rank": blocks["rank"].to_numpy(dtype=np.int64),
            "shift": offsets - blocks["first"].to_numpy(dtype=np.int64),
        }
    )


def _renumber(ranked: pd.DataFrame, shifts: pd.DataFrame) -> pd.DataFrame:
    """Global segment ids, and the hidden rank column dropped."""
    ranks = ranked[_RANK].to_numpy()
    where = np.searchsorted(shifts["rank"].to_numpy(), ranks)
    ids = ranked[SEGMENT_ID].to_numpy() + shifts["shift"].to_numpy()[where]
    return ranked.drop(columns=_RANK).assign(**{SEGMENT_ID: ids})


def transform(pipeline: Any, ddf: dd.DataFrame, *, global_segment_ids: bool = True) -> dd.DataFrame:
    """``pipeline.transform`` on a Dask DataFrame, partition by partition.

    The rows of each user are first brought into one partition
    (:func:`partition_by_user`); each partition then runs the in-memory
    pipeline. Every output row keeps its input index and equals the row of
    ``pipeline.transform(ddf.compute())`` with that index, ``segment_id``
    included: the partition-local segment numbers are renumbered as the
    whole-frame run numbers them (users in order of first appearance, then
    time).

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted taskclf pipeline (:func:`taskclf.build_pipeline`). It is
        sent to the workers once, as one piece of data in the task graph.
    ddf : dask.dataframe.DataFrame
        Feature rows, as ``pipeline.transform`` takes them.
    global_segment_ids : bool, default True
        Renumber ``segment_id`` as the whole-frame run does. That needs the
        segment counts of every user before any output partition is
        final, so the whole output stays in cluster memory (or spills to
        disk) until then. With ``False`` partitions stream through and
        ``segment_id`` is numbered within each partition: unique per
        ``(user_id, segment_id)``, not globally.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy. After a shuffle its partitions and row order differ from
        the input's: align on the index (``result.compute().loc[index]``)
        to compare row for row.

    Raises
    ------
    InputError
        If ``ddf`` is not a Dask DataFrame; the pipeline's own errors
        (missing columns, ...) are raised here, before any task runs.
    ImportError
        If Dask is not installed.

    Notes
    -----
    Without a ``user_id`` column the whole frame is one timeline, and all
    rows go to one partition: one worker does all the work.

    Examples
    --------
    >>> from distributed import Client                      # doctest: +SKIP
    >>> client = Client("tcp://scheduler:8786")             # doctest: +SKIP
    >>> ddf = dd.read_parquet("s3://bucket/features/")      # doctest: +SKIP
    >>> out = transform(pipeline, ddf)                      # doctest: +SKIP
    >>> out.to_parquet("s3://bucket/annotated/")            # doctest: +SKIP
    """
    ddf = _check_frame(ddf, "taskclf.distributed.transform")
    _check_pipeline(pipeline, "taskclf.distributed.transform")
    parts = partition_by_user(ddf)
    frame = parts.frame
    meta = _pipeline_meta(pipeline, frame)
    shipped = _ship(pipeline, "pipeline")
    if not global_segment_ids or parts.users is None or frame.npartitions == 1:
        return frame.map_partitions(_transform_partition, shipped, meta=meta)
    if SEGMENT_ID not in meta.columns:  # a pipeline without a segmenter
        return frame.map_partitions(_transform_partition, shipped, meta=meta)
    ranked = frame.map_partitions(
        _transform_ranked,
        shipped,
        _ship(parts.users, "users"),
        meta=meta.assign(**{_RANK: np.zeros(0, np.int64)}),
    )
    blocks = ranked.map_partitions(_segment_blocks, meta=_BLOCKS_META)
    shifts = blocks.repartition(npartitions=1).map_partitions(_segment_shifts, meta=_SHIFTS_META)
    return ranked.map_partitions(_renumber, shifts, meta=meta)


def _predict_partition(part: pd.DataFrame, pipeline: Any) -> pd.Series:
    return pipeline.transform(part)[LABEL]


def predict(pipeline: Any, ddf: dd.DataFrame) -> dd.Series:
    """The final label of each row of a Dask DataFrame.

    As :func:`transform`, but only the ``label`` column comes back, and no
    renumbering is needed, so partitions stream through.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted taskclf pipeline.
    ddf : dask.dataframe.DataFrame
        Feature rows.

    Returns
    -------
    dask.dataframe.Series
        Named ``label``, with the input index; categorical over the eight
        classes and ``Mixed/Unknown`` (``.astype(str)`` for plain text).
        Its values equal ``pipeline.predict(ddf.compute())`` once aligned
        on the index.

    Raises
    ------
    InvalidParameterError
        If the pipeline gives no ``label`` column.
    InputError
        If ``ddf`` is not a Dask DataFrame.
    ImportError
        If Dask is not installed.

    Examples
    --------
    >>> labels = predict(pipeline, ddf)                     # doctest: +SKIP
    >>> labels.value_counts().compute()                     # doctest: +SKIP
    """
    ddf = _check_frame(ddf, "taskclf.distributed.predict")
    _check_pipeline(pipeline, "taskclf.distributed.predict")
    parts = partition_by_user(ddf)
    meta = _pipeline_meta(pipeline, parts.frame)
    if LABEL not in meta.columns:
        raise InvalidParameterError(
            f"the pipeline's output has no {LABEL!r} column; it ends with "
            f"{list(meta.columns)[-3:]!r}"
        )
    shipped = _ship(pipeline, "pipeline")
    return parts.frame.map_partitions(_predict_partition, shipped, meta=meta[LABEL])


# --- a whole batch run from Parquet to Parquet ---------------------------------


def _prediction_partition(
    part: pd.DataFrame, pipeline: Any, users: pd.Index | None
) -> pd.DataFrame:
    """The prediction columns of one partition, with its local segment ids and user ranks.

    ``user_id`` is the caller's (the pipeline's copy is the encoded model
    feature); timestamps are normalized to ``datetime64[ns, UTC]``.
    """
    out = pipeline.transform(part)
    columns: dict[str, Any] = {BUCKET_START_TS: to_utc_series(part[BUCKET_START_TS]).array}
    if users is not None:
        columns[USER_ID] = part[USER_ID].array
    columns[PREDICTED_LABEL] = out[LABEL].astype(str).array
    mapped = [c for c in out.columns if c == MAPPED_LABEL or c.startswith(MAPPED_PROBA_PREFIX)]
    for name in (CONFIDENCE, IS_REJECTED, *PROBA_COLUMNS, *mapped, SEGMENT_ID):
        columns[name] = out[name].array
    ranks = (
        np.zeros(len(part), np.int64)
        if users is None
        else users.get_indexer(pd.Index(part[USER_ID]))
    )
    columns[_RANK] = np.asarray(ranks, dtype=np.int64)
    return pd.DataFrame(columns, index=part.index)


def _segment_records(predictions: pd.DataFrame, bucket_seconds: int) -> pd.DataFrame:
    """The segments of one partition as rows, with the key that orders them globally.

    ``frame_to_segments`` gives them by partition-local segment id; the
    user's rank and that position order them as the whole-frame run does.
    """
    segments = frame_to_segments(
        predictions, bucket_seconds=bucket_seconds, label_column=PREDICTED_LABEL
    )
    # frame_to_segments orders segments by segment id: so does this groupby.
    ranks = predictions.groupby(SEGMENT_ID, sort=True)[_RANK].first().to_numpy(np.int64)
    return pd.DataFrame(
        {
            "user_rank": ranks,
            "position": np.arange(len(segments), dtype=np.int64),
            "start_ts": pd.to_datetime([s.start_ts for s in segments], utc=True).as_unit("ns"),
            "end_ts": pd.to_datetime([s.end_ts for s in segments], utc=True).as_unit("ns"),
            "label": pd.Categorical([s.label for s in segments], dtype=LABEL_DTYPE),
            "bucket_count": np.array([s.bucket_count for s in segments], dtype=np.int64),
        }
    )


def _segments_in_order(records: pd.DataFrame, users: pd.Index | None) -> list[Segment]:
    """Segments by user (first appearance) and time, as the in-memory run lists them."""
    records = records.sort_values(["user_rank", "position"], kind="stable")
    ranks = records["user_rank"].to_numpy()
    owners = [None] * len(records) if users is None else users[ranks].tolist()
    return [
        Segment(start, end, str(label), int(count), owner)
        for start, end, label, count, owner in zip(
            records["start_ts"].tolist(),
            records["end_ts"].tolist(),
            records["label"].tolist(),
            records["bucket_count"].tolist(),
            owners,
        )
    ]


def _pipeline_bucket_seconds(pipeline: Any) -> int:
    """The bucket width the pipeline's segment stages use (60 s if none says)."""
    for _, step in getattr(pipeline, "steps", []):
        if isinstance(step, (Segmenter, HysteresisMerger)):
            return check_positive_seconds(step.bucket_seconds, "bucket_seconds")
    return DEFAULT_BUCKET_SECONDS


def _check_address(address: object) -> str | None:
    if address is not None and (not isinstance(address, str) or not address):
        raise InvalidParameterError(
            f"address must be 'local', a scheduler address such as "
            f"'tcp://scheduler:8786', or None; got {address!r}"
        )
    return address


@contextlib.contextmanager
def _scheduler(address: str | None, n_workers: int | None) -> Iterator[str | None]:
    """Make ``address`` the Dask scheduler for the block; yield its address.

    ``"local"`` starts a LocalCluster (worker processes, one thread each)
    and closes it after; another string connects a Client to a running
    scheduler and closes the client (not the cluster) after; ``None`` keeps
    whatever scheduler Dask is already set to use.
    """
    if _check_address(address) is None:
        yield None
        return
    distributed = _distributed()
    if address == "local":
        with (
            distributed.LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                # A free local port: no clash (and no warning) when 8787 is taken.
                dashboard_address="127.0.0.1:0",
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client.scheduler.address
        return
    try:
        client = distributed.Client(address)
    except OSError as exc:  # includes timeouts
        raise InvalidParameterError(
            f"cannot reach the Dask scheduler at {address!r}: {exc}"
        ) from exc
    with client:
        yield address


@contextlib.contextmanager
def _staged_directory(target: Path) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; put it in ``target``'s place on success.

    On an exception the staged directory is removed and ``target`` (old or
    absent) stays as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        if target.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read_parquet(source: Path) -> dd.DataFrame:
    _, dd = _dask()
    if not source.exists():
        raise ReaderError(f"input directory {str(source)!r} does not exist")
    if source.is_dir() and not any(source.rglob("*.parquet")):
        raise ReaderError(f"input directory {str(source)!r} holds no .parquet files")
    try:
        return dd.read_parquet(str(source))
    except (OSError, ValueError, TypeError) as exc:
        raise ReaderError(f"cannot read Parquet from {str(source)!r}: {exc}") from exc


def infer_parquet_dir(
    pipeline: Any,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    address: str | None = "local",
    n_workers: int | None = None,
    bucket_seconds: int | None = None,
) -> dict[str, Any]:
    """Batch inference on Dask: Parquet feature files in, predictions and segments out.

    Reads every Parquet file under ``input_dir`` lazily, brings each
    user's rows into one partition, runs the pipeline on each partition
    and writes, in one pass over the data:

    - ``output_dir/predictions/``: Parquet, one file per partition, with
      ``bucket_start_ts`` (UTC), ``user_id`` (when the input has it),
      ``predicted_label``, ``confidence``, ``is_rejected``, the eight
      ``proba_<Class>`` columns (and the taxonomy's ``mapped_label`` and
      ``mapped_proba_<bucket>`` columns when the pipeline maps). Rows are
      grouped by user, not in input order; ``(user_id, bucket_start_ts)``
      identifies each.
    - ``output_dir/segments.json``: the merged segments, by user (in order
      of first appearance) and time, as
      :func:`taskclf.infer.batch.write_segments_json` writes them.

    Both appear only when everything succeeded (an existing
    ``predictions/`` is replaced as a whole); on an error neither is
    touched.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted taskclf pipeline.
    input_dir : path
        Directory of Parquet feature files (or one Parquet file), local.
    output_dir : path
        Where ``predictions/`` and ``segments.json`` go; created if needed.
    address : str or None, default "local"
        ``"local"``: start a LocalCluster on this machine (worker
        processes, one thread each) and close it after. A scheduler
        address (``"tcp://scheduler:8786"``): connect to that cluster;
        every worker needs taskclf installed and must see ``input_dir``
        and ``output_dir`` at the same paths. ``None``: use the scheduler
        Dask is already set to use (a ``Client`` made by the caller, say).
    n_workers : int, optional
        Worker processes of the ``"local"`` cluster (default: one per core).
    bucket_seconds : int, optional
        Bucket width of the segments; by default the pipeline's own.

    Returns
    -------
    dict
        ``rows``, ``users`` (None without ``user_id``), ``segments``,
        ``partitions`` (after partitioning by user), ``shuffled``,
        ``predictions_dir``, ``segments_path`` and ``address``.

    Raises
    ------
    ReaderError
        Naming ``input_dir``, when it is missing, empty or unreadable.
    InvalidParameterError
        On a bad ``address`` or an unreachable scheduler.
    ImportError
        If Dask is not installed.

    Examples
    --------
    >>> infer_parquet_dir(pipeline, "features/", "out/", address="local")  # doctest: +SKIP
    {'rows': 1440000, 'users': 1000, 'segments': 91234, ...}
    """
    dask, _ = _dask()
    _check_pipeline(pipeline, "taskclf.distributed.infer_parquet_dir")
    width = (
        _pipeline_bucket_seconds(pipeline)
        if bucket_seconds is None
        else check_positive_seconds(bucket_seconds, "bucket_seconds")
    )
    _check_address(address)
    source, destination = Path(input_dir), Path(output_dir)
    segments_path = destination / "segments.json"
    predictions_dir = destination / "predictions"
    features = _read_parquet(source)  # metadata only: bad input fails before any cluster starts
    with _scheduler(address, n_workers) as scheduler_address:
        parts = partition_by_user(features)
        frame = parts.frame
        meta = _prediction_partition(frame._meta, pipeline, parts.users)
        predictions = frame.map_partitions(
            _prediction_partition,
            _ship(pipeline, "pipeline"),
            None if parts.users is None else _ship(parts.users, "users"),
            meta=meta,
        )
        records = predictions.map_partitions(_segment_records, width, meta=_RECORDS_META)
        with (
            atomic_path(segments_path) as segments_temporary,
            _staged_directory(predictions_dir) as staging,
        ):
            written = predictions.drop(columns=[SEGMENT_ID, _RANK]).to_parquet(
                str(staging), write_index=False, compute=False
            )
            # One computation: both outputs share each partition's pipeline run.
            _, segment_rows = dask.compute(written, records)
            segments = _segments_in_order(segment_rows, parts.users)
            write_segments_json(segments, segments_temporary)
    return {
        "rows": int(sum(s.bucket_count for s in segments)),
        "users": None if parts.users is None else len(parts.users),
        "segments": len(segments),
        "partitions": frame.npartitions,
        "shuffled": parts.shuffled,
        "predictions_dir": str(predictions_dir),
        "segments_path": str(segments_path),
        "address": scheduler_address,
    }


__all__ = [
    "DASK_INSTALL_HINT",
    "PREDICTED_LABEL",
    "UserPartitions",
    "infer_parquet_dir",
    "partition_by_user",
    "predict",
    "transform",
]
