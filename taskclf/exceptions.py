"""The exceptions taskclf raises: every refusal is a :class:`TaskclfError`.

Those caused by a bad value also subclass :class:`ValueError`, so code
written against scikit-learn's conventions keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable


class TaskclfError(Exception):
    """Base class of every error taskclf raises on purpose."""


class InputError(TaskclfError, ValueError):
    """The input frame, matrix or file content is not usable as given."""


class MissingColumnsError(InputError):
    """The frame lacks ``columns`` that ``where`` (a stage or function) needs."""

    def __init__(self, columns: Iterable[str], where: str = "input frame") -> None:
        self.columns = list(columns)
        self.where = where
        shown = ", ".join(repr(c) for c in self.columns[:20])
        more = f" (and {len(self.columns) - 20} more)" if len(self.columns) > 20 else ""
        super().__init__(f"{where}: missing {len(self.columns)} required column(s): {shown}{more}")

    def __reduce__(self) -> tuple[type, tuple[list[str], str]]:  # pickled by Dask workers
        return type(self), (self.columns, self.where)


class ColumnTypeError(InputError):
    """A column holds values of the wrong type."""


class TimestampError(InputError):
    """Timestamps are missing or cannot be parsed."""


class DuplicateRowsError(InputError):
    """Two rows share the same (user_id, bucket_start_ts)."""


class SchemaMismatchError(InputError):
    """The frame's feature schema differs from the model's."""


class ProbabilityShapeError(InputError):
    """A probability matrix does not have one column per class."""


class InvalidParameterError(TaskclfError, ValueError):
    """A parameter value is out of its allowed range."""


class TaxonomyError(TaskclfError, ValueError):
    """A taxonomy configuration is invalid (unknown label, bad colour, ...)."""


class BundleError(TaskclfError, ValueError):
    """A bundle file or directory is corrupt, tampered with or incompatible."""


class ReaderError(InputError):
    """A features, segments or configuration file cannot be read."""


class MissingFileError(ReaderError, FileNotFoundError):
    """A file to read does not exist (also a ``FileNotFoundError``)."""


class NotOursError(TaskclfError, FileExistsError):
    """An output directory holds files taskclf did not write; it is left alone."""


class TaskclfWarning(UserWarning):
    """Base class of the warnings taskclf issues."""


class BundleVersionWarning(TaskclfWarning):
    """A bundle was saved with other (compatible) library versions than these."""


def __getattr__(name: str) -> type[Exception]:
    """Define :class:`NotFittedError` on first use: importing scikit-learn takes a second."""
    if name != "NotFittedError":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(TaskclfError, SklearnNotFittedError):
        """A stage was used before it was fitted (also scikit-learn's ``NotFittedError``)."""

    NotFittedError.__qualname__ = name  # pickled by name, as the other errors are
    return globals().setdefault(name, NotFittedError)  # one class, even when threads race
