"""The one place taskclf writes and reads files.

Writes build a hidden temporary beside the target and rename it into place, so a
failure (an exception, Ctrl-C or SIGTERM) leaves the old target, or none; new files
get the umask's permissions. Reads take regular files only, up to a stated size.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from taskclf.exceptions import MissingFileError, NotOursError, ReaderError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sibling(target: Path, suffix: str) -> Path:
    """A new hidden name beside ``target``: created inside the block that removes it, so a
    signal never leaves it behind (``tempfile`` creates before the caller has the name)."""
    return target.parent / f".{target.name}.{secrets.token_hex(8)}{suffix}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def signals_handled(
    handler: Callable[[int, object], None] = _interrupt, *signums: int
) -> Iterator[None]:
    """Handle ``signums`` (SIGTERM when none) with ``handler`` inside the block; the default
    raises KeyboardInterrupt, so that an interrupted write cleans up."""
    try:
        previous = {s: signal.signal(s, handler) for s in signums or (signal.SIGTERM,)}
    except ValueError:  # only the main thread of the main interpreter sets handlers
        yield
        return
    try:
        yield
    finally:
        for s, handler_before in previous.items():
            signal.signal(s, handler_before)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; rename it over ``path`` on success.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with signals_handled():
        temporary = _sibling(target, ".tmp")
        try:
            os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            yield temporary
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o666 & ~_umask())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_replaceable(
    directory: str | os.PathLike[str], is_ours: Callable[[Path], bool], what: str
) -> None:
    """Raise ``NotOursError`` for a ``directory`` neither absent, empty nor ``is_ours``."""
    target = Path(directory)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise NotOursError(f"{str(target)!r} exists and is not a directory; not replacing it")
    if target.is_dir() and any(target.iterdir()) and not is_ours(target):
        raise NotOursError(
            f"directory {str(target)!r} is not empty and is not a {what}; "
            "taskclf writes only into an empty directory or over its own output"
        )


@contextlib.contextmanager
def atomic_directory(
    directory: str | os.PathLike[str], is_ours: Callable[[Path], bool], what: str
) -> Iterator[Path]:
    """Yield an empty staging directory; put it in ``directory``'s place on success.

    :func:`check_replaceable` runs before any work and again before the swap;
    ``what`` names the directory in messages (``"taskclf bundle directory"``).
    """
    target = Path(directory)
    check_replaceable(target, is_ours, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    with signals_handled():
        staging = _sibling(target, ".tmp")
        try:
            staging.mkdir()  # the umask's permissions
            yield staging
            check_replaceable(target, is_ours, what)  # still ours after the work?
            if target.exists():
                retired = _sibling(target, ".old")
                try:
                    retired.mkdir(mode=0o700)
                    os.replace(target, retired / target.name)
                    os.replace(staging, target)
                except BaseException:
                    if not target.exists() and (retired / target.name).exists():
                        os.replace(retired / target.name, target)  # the old output back
                    raise
                finally:
                    shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _fsync_directory(target.parent)


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes.

    A FIFO (opened non-blocking), device or directory is refused with a
    ``ReaderError`` (``MissingFileError`` when absent), so a read never hangs.
    """
    where = f"{what} {str(path)!r}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise MissingFileError(f"{where} does not exist") from None
    except OSError as exc:
        raise ReaderError(f"{where} cannot be read: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ReaderError(f"{where} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise ReaderError(f"{where} is too large ({info.st_size} bytes; at most {limit})")
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise ReaderError(f"{where} is too large (more than {limit} bytes)")
    return data
