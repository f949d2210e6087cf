"""Scale-out on Dask: the fitted pipeline on a Dask DataFrame partitioned by user.

A timeline is one user's rows, so the in-memory pipeline is right on any partition
holding all rows of each of its users (docs/dask.md). Without Dask every function
raises an ImportError saying what to install.
"""

from __future__ import annotations

import contextlib
import importlib
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


def _require(module: str) -> Any:
    """Import ``module``, or raise an ImportError that tells how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"taskclf.distributed needs {module} ({exc}); install it with: {DASK_INSTALL_HINT}"
        ) from exc


def _check_frame(ddf: object, where: str) -> dd.DataFrame:
    if not isinstance(ddf, _require("dask.dataframe").DataFrame):
        raise InputError(f"{where} expects a dask.dataframe.DataFrame, got {type(ddf).__name__}")
    return ddf


def _check_pipeline(pipeline: object, where: str) -> Any:
    if not callable(getattr(pipeline, "transform", None)):
        raise InvalidParameterError(
            f"{where} expects a fitted taskclf pipeline (see taskclf.build_pipeline), "
            f"got {type(pipeline).__name__}"
        )
    return pipeline


@attrs.frozen(eq=False)
class UserPartitions:
    """A Dask DataFrame (``frame``) laid out so that every partition holds whole users.

    ``users`` lists the user ids in order of first appearance (``None`` without
    ``user_id``, when all rows are in one partition); ``shuffled`` tells whether
    rows had to move.
    """

    frame: Any
    users: pd.Index | None
    shuffled: bool


def partition_by_user(ddf: dd.DataFrame) -> UserPartitions:
    """Lay ``ddf`` out so that the rows of each user are in one partition.

    Each partition first sends back its distinct user ids (one small
    computation); rows are shuffled on ``user_id`` only when a user spans
    partitions. Without a ``user_id`` column, all rows go to one partition.

    Examples
    --------
    >>> import pandas as pd
    >>> import dask.dataframe as dd
    >>> frame = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "x": range(4)})
    >>> parts = partition_by_user(dd.from_pandas(frame, npartitions=2))
    >>> parts.shuffled, parts.users.tolist()
    (False, ['a', 'b'])
    """
    ddf = _check_frame(ddf, "partition_by_user")
    if USER_ID not in ddf.columns:  # one timeline, in one partition
        moved = ddf.npartitions > 1
        return UserPartitions(ddf.repartition(npartitions=1) if moved else ddf, None, moved)
    column = ddf[USER_ID]
    firsts = column.map_partitions(pd.Series.drop_duplicates, meta=column._meta)
    # Reading one column, Dask's optimizer may concatenate small input
    # partitions (Parquet files, say) that the full read keeps apart: look at
    # the partitions as they are, whose locality every coarser layout keeps.
    with _require("dask").config.set({"optimization.tune.active": False}):
        firsts = firsts.compute()
    users = pd.Index(firsts.drop_duplicates().to_numpy(), name=USER_ID)
    if len(users) == len(firsts):  # no user in two partitions
        return UserPartitions(ddf, users, shuffled=False)
    return UserPartitions(ddf.shuffle(on=USER_ID), users, shuffled=True)


def transform(pipeline: Any, ddf: dd.DataFrame) -> dd.DataFrame:
    """``pipeline.transform`` on a Dask DataFrame, lazily, partition by partition.

    After :func:`partition_by_user`, each partition runs the fitted pipeline,
    which the workers fetch once. Every output row keeps its input index and
    equals the row of ``pipeline.transform(ddf.compute())`` with that index.
    InputError (``ddf`` is not a Dask DataFrame) and the pipeline's own errors
    on the columns are raised here, before any task runs.
    """
    return _transform(pipeline, ddf, "taskclf.distributed.transform")


def _transform(pipeline: Any, ddf: dd.DataFrame, where: str) -> dd.DataFrame:
    """:func:`transform`, its errors naming the public function ``where``."""
    ddf = _check_frame(ddf, where)
    meta = _check_pipeline(pipeline, where).transform(ddf._meta)  # column errors: here, now
    if not isinstance(meta, pd.DataFrame):
        raise InvalidParameterError(
            f"pipeline.transform must give a DataFrame, got {type(meta).__name__}"
        )
    frame = partition_by_user(ddf).frame
    # One Delayed key, which workers fetch once, rather than a copy in every task.
    shipped = _require("dask").delayed(pipeline, name=f"taskclf-pipeline-{uuid.uuid4().hex}")
    return frame.map_partitions(lambda part, fitted: fitted.transform(part), shipped, meta=meta)


def predict(pipeline: Any, ddf: dd.DataFrame) -> dd.Series:
    """:func:`transform`'s categorical ``label`` column: equal to
    ``pipeline.predict(ddf.compute())`` once aligned on the index."""
    out = _transform(pipeline, ddf, "taskclf.distributed.predict")
    if LABEL not in out.columns:
        raise InvalidParameterError(
            f"the pipeline's output has no {LABEL!r} column; it ends with "
            f"{list(out.columns)[-3:]!r}"
        )
    return out[LABEL]


@contextlib.contextmanager
def _scheduler(address: str | None, n_workers: int | None) -> Iterator[None]:
    """Make ``address`` (``"local"``: a new LocalCluster) the Dask scheduler of the block."""
    with contextlib.ExitStack() as stack:
        if address == "local":
            distributed = _require("distributed")
            cluster = distributed.LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",  # a free port: no clash when 8787 is taken
            )
            stack.enter_context(distributed.Client(stack.enter_context(cluster)))
        elif address is not None:
            try:
                client = _require("distributed").Client(address)
            except OSError as exc:  # includes timeouts
                raise InvalidParameterError(
                    f"cannot reach the Dask scheduler at {address!r}: {exc}"
                ) from exc
            stack.enter_context(client)  # closes the client, not the cluster
        yield


def infer_parquet_dir(
    pipeline: Any,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    address: str | None = "local",
    n_workers: int | None = None,
) -> InferenceRun:
    """Batch inference on Dask: Parquet feature files in, one run directory out.

    :func:`transform` on the Parquet files under ``input_dir`` (or one file),
    written as :func:`taskclf.workflows.infer_to_directory` writes (rows
    grouped by user). ``address`` is ``"local"`` (a LocalCluster of
    ``n_workers`` processes, closed after), a scheduler address, or ``None``
    (the scheduler Dask already uses); docs/dask.md says more.

    Raises
    ------
    ReaderError, NotOursError, InvalidParameterError
        For a missing, empty or unreadable ``input_dir``; an ``output_dir``
        holding other files than a run's; a bad or unreachable ``address``.
    """
    from taskclf.workflows import check_output_dir, infer_to_directory, run_columns

    _check_pipeline(pipeline, "taskclf.distributed.infer_parquet_dir")
    if address is not None and (not isinstance(address, str) or not address):
        raise InvalidParameterError(
            "address must be 'local', a scheduler address such as "
            f"'tcp://scheduler:8786', or None; got {address!r}"
        )
    check_output_dir(output_dir)
    source = Path(input_dir)  # read for its metadata only: fails before a cluster starts
    if not source.exists():
        raise ReaderError(f"input directory {str(source)!r} does not exist")
    if source.is_dir() and not any(source.rglob("*.parquet")):
        raise ReaderError(f"input directory {str(source)!r} holds no .parquet files")
    try:
        features = _require("dask.dataframe").read_parquet(str(source))
    except (OSError, ValueError, TypeError) as exc:
        raise ReaderError(f"cannot read Parquet from {str(source)!r}: {exc}") from exc

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
