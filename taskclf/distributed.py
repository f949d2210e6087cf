"""Scale-out on Dask: the fitted pipeline on a Dask DataFrame partitioned by user.

Smoothing, segmentation and merging work along timelines, and a timeline is
one user's rows (the whole frame when there is no ``user_id``). So the
in-memory pipeline gives the right answer on any partition that holds every
row of each of its users. :func:`partition_by_user` lays a Dask DataFrame
out that way (moving rows only when a user spans partitions),
:func:`transform` and :func:`predict` then run ``pipeline.transform`` on
each partition, and :func:`infer_parquet_dir` does a whole batch run from a
directory of Parquet files to ``predictions.csv`` and ``segments.json``.

Results equal the in-memory run on the whole frame (``ddf.compute()``), row
for row, once aligned on the index: a shuffle changes which partition a row
lands in and its position there, never its index. Segments are named by
``(user_id, segment_id)``. Dask itself is an optional dependency:
``pip install ".[dask]"``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pandas as pd

from taskclf._columns import LABEL, USER_ID
from taskclf.exceptions import InputError, InvalidParameterError, ReaderError

if TYPE_CHECKING:
    import dask.dataframe as dd

    from taskclf.workflows import InferenceRun

DASK_INSTALL_HINT = 'pip install ".[dask]" (from a taskclf checkout)'
"""How to get the optional dependencies of this module."""


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


def transform(pipeline: Any, ddf: dd.DataFrame) -> dd.DataFrame:
    """``pipeline.transform`` on a Dask DataFrame, partition by partition.

    The rows of each user are first brought into one partition
    (:func:`partition_by_user`); each partition then runs the in-memory
    pipeline, and partitions stream through. Every output row keeps its
    input index and equals the row of ``pipeline.transform(ddf.compute())``
    with that index; ``(user_id, segment_id)`` names a segment.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted taskclf pipeline (:func:`taskclf.build_pipeline`). It is
        sent to the workers once, as one piece of data in the task graph.
    ddf : dask.dataframe.DataFrame
        Feature rows, as ``pipeline.transform`` takes them.

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
    frame = partition_by_user(ddf).frame
    meta = _pipeline_meta(pipeline, frame)
    return frame.map_partitions(_transform_partition, _ship(pipeline, "pipeline"), meta=meta)


def _predict_partition(part: pd.DataFrame, pipeline: Any) -> pd.Series:
    return pipeline.transform(part)[LABEL]


def predict(pipeline: Any, ddf: dd.DataFrame) -> dd.Series:
    """The final label of each row of a Dask DataFrame.

    As :func:`transform`, but only the ``label`` column comes back.

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


# --- a whole batch run from Parquet files to a run directory -----------------


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
) -> InferenceRun:
    """Batch inference on Dask: Parquet feature files in, one run directory out.

    Reads every Parquet file under ``input_dir`` lazily, brings each
    user's rows into one partition, runs the pipeline on each partition
    (:func:`transform`), gathers the prediction columns and writes them
    with :func:`taskclf.workflows.infer_to_directory`, as the in-memory
    run does: ``output_dir/predictions.csv`` (rows grouped by user, not
    in input order; ``(user_id, bucket_start_ts)`` identifies each) and
    ``output_dir/segments.json``, published together.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted taskclf pipeline.
    input_dir : path
        Directory of Parquet feature files (or one Parquet file), local.
    output_dir : path
        The run's directory: absent, empty or an earlier run's output.
    address : str or None, default "local"
        ``"local"``: start a LocalCluster on this machine (worker
        processes, one thread each) and close it after. A scheduler
        address (``"tcp://scheduler:8786"``): connect to that cluster;
        every worker needs taskclf installed and must see ``input_dir``
        at the same path. ``None``: use the scheduler Dask is already set
        to use (a ``Client`` made by the caller, say).
    n_workers : int, optional
        Worker processes of the ``"local"`` cluster (default: one per core).

    Returns
    -------
    taskclf.workflows.InferenceRun

    Raises
    ------
    ReaderError
        Naming ``input_dir``, when it is missing, empty or unreadable.
    NotOursError
        When ``output_dir`` holds other files than a run's.
    InvalidParameterError
        On a bad ``address`` or an unreachable scheduler.
    ImportError
        If Dask is not installed.

    Examples
    --------
    >>> infer_parquet_dir(pipeline, "features/", "out/", address="local")  # doctest: +SKIP
    InferenceRun(directory=PosixPath('out'), rows=1440000, segments=91234)
    """
    from taskclf.workflows import check_output_dir, infer_to_directory, run_columns

    _check_pipeline(pipeline, "taskclf.distributed.infer_parquet_dir")
    _check_address(address)
    check_output_dir(output_dir)
    features = _read_parquet(Path(input_dir))  # metadata only: fails before a cluster starts

    def gather(ddf: dd.DataFrame) -> pd.DataFrame:
        out = transform(pipeline, ddf)
        return out[run_columns(out.columns)].compute()

    with _scheduler(address, n_workers):
        return infer_to_directory(pipeline, features, output_dir, transform=gather)


__all__ = [
    "DASK_INSTALL_HINT",
    "UserPartitions",
    "infer_parquet_dir",
    "partition_by_user",
    "predict",
    "transform",
]
