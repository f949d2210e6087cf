"""The model compiled to machine code: the ``backend="compiled"`` of the model stage.

lleaves (the ``fast`` extra) compiles a LightGBM booster with LLVM into a
function for this CPU that gives the booster's probabilities several times
faster (docs/performance.md). Compiling takes about a minute for 800 trees,
so the machine code is kept:

- in the process, per booster (and per model digest), so repeated
  predicts neither recompile nor reload;
- on disk, in :func:`cache_directory`, one file per model, CPU and
  compiler, so every later process (a Dask worker too) loads it in a
  fraction of a second.

A cache file starts with one JSON line naming its model (the SHA-256 of
``booster.model_to_string()``), its CPU and compiler versions, and the
SHA-256 of the machine code after it; a file whose line does not match, or
whose code does not hash to it, is compiled anew, never loaded. Processes
compiling the same model at once take turns through a lock file beside the
entry (where the platform has ``fcntl``), and every file is written under a
temporary name and renamed into place, so a reader never sees half of one.

When lleaves is not installed, the CPU is not supported, or compiling
fails, the stage warns once (:class:`CompiledBackendWarning`) and LightGBM
predicts. The cache is never part of a bundle: a bundle holds the booster
only.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import platform
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from taskclf._io import atomic_write_bytes, read_regular_file
from taskclf._progress import step
from taskclf.exceptions import ReaderError, TaskclfWarning

CACHE_FORMAT = "taskclf-compiled-1"
"""Names the layout of a cache file and the compile options below."""

_COMPILE_OPTIONS = {"fblocksize": 34, "fcodemodel": "large", "finline": True}

_MAX_ENTRY_BYTES = 2**31
"""Largest cache file read back (machine code of very large forests)."""

_KEEP_IN_PROCESS = 8
"""Compiled models kept in the process by model digest."""

_lock = threading.Lock()
_by_booster: weakref.WeakKeyDictionary[Any, tuple[int, Any]] = weakref.WeakKeyDictionary()
_by_digest: collections.OrderedDict[str, Any] = collections.OrderedDict()


class CompiledBackendWarning(TaskclfWarning):
    """The compiled backend cannot be used (LightGBM predicts) or its code cannot be cached."""


class CompiledBooster:
    """A booster compiled by lleaves: ``predict(matrix)`` as ``booster.predict``.

    Parameters
    ----------
    model : lleaves.Model
        The compiled model.
    n_threads : int
        Threads that predict (rows are split among them).
    """

    def __init__(self, model: Any, n_threads: int) -> None:
        self.model = model
        self.n_threads = n_threads

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """The (n, n_classes) float64 probabilities of the rows of ``matrix``."""
        return np.asarray(self.model.predict(matrix, n_jobs=self.n_threads), dtype=np.float64)


def cache_directory() -> Path:
    """Where compiled models are kept.

    ``$TASKCLF_CACHE_DIR/compiled`` when that variable is set, else
    ``$XDG_CACHE_HOME/taskclf/compiled``, else
    ``~/.cache/taskclf/compiled``.
    """
    root = os.environ.get("TASKCLF_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "compiled"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "taskclf" / "compiled"


def _toolchain() -> dict[str, str]:
    """The CPU and compiler versions the machine code depends on.

    Raises ImportError when lleaves (the ``fast`` extra) is not installed.
    """
    from importlib.metadata import version

    import lleaves  # noqa: F401
    import llvmlite
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot tell on this CPU
        features = ""
    return {
        "format": CACHE_FORMAT,
        "machine": platform.machine(),
        "cpu": llvm.get_host_cpu_name(),
        "cpu_features": features,
        "lleaves": version("lleaves"),
        "llvmlite": llvmlite.__version__,
        "llvm": ".".join(map(str, llvm.llvm_version_info)),
    }


def _entry_name(header: dict[str, str]) -> str:
    """The cache file name of a model on a toolchain: a hash of both."""
    text = json.dumps(header, sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:40] + ".bin"


def _read_entry(path: Path, header: dict[str, str]) -> bytes | None:
    """The machine code in ``path`` when its header matches; None otherwise."""
    try:
        data = read_regular_file(path, _MAX_ENTRY_BYTES, "compiled model cache")
    except (ReaderError, OSError):
        return None
    first, _, code = data.partition(b"\n")
    try:
        written = json.loads(first)
    except ValueError:
        return None
    expected = {**header, "code_sha256": hashlib.sha256(code).hexdigest()}
    return code if written == expected else None


def _write_entry(path: Path, header: dict[str, str], code: bytes) -> None:
    """Write ``code`` under its header to ``path`` atomically."""
    line = json.dumps({**header, "code_sha256": hashlib.sha256(code).hexdigest()}, sort_keys=True)
    atomic_write_bytes(path, line.encode() + b"\n" + code)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (no lock where none can be had)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent compiles each write a whole file
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 (closed below)
    except OSError:  # a read-only cache: compile without a lock
        yield
        return
    with handle:
        with contextlib.suppress(OSError):  # a file system without locks: none
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _lleaves_model(model_text: str, code: bytes | None) -> tuple[Any, bytes]:
    """A compiled lleaves model and its machine code.

    Compiles ``model_text`` when ``code`` is None, else loads ``code``.
    """
    import lleaves

    with tempfile.TemporaryDirectory(prefix="taskclf-compile-") as scratch:
        model_file = Path(scratch) / "model.txt"
        model_file.write_text(model_text)
        object_file = Path(scratch) / "model.o"
        if code is not None:
            object_file.write_bytes(code)
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(object_file), **_COMPILE_OPTIONS)
        return model, object_file.read_bytes()


def _threads(booster: Any) -> int:
    """The booster's ``num_threads`` parameter, else every core this process may use."""
    wanted = int((getattr(booster, "params", None) or {}).get("num_threads") or 0)
    if wanted > 0:
        return wanted
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _compile_cached(model_text: str, digest: str) -> Any:
    """The lleaves model of ``model_text``: from the disk cache, or compiled into it."""
    header = {**_toolchain(), "model_sha256": digest}
    path = cache_directory() / _entry_name(header)
    code = _read_entry(path, header)
    if code is None:
        with _exclusive(path.with_suffix(".lock")):
            code = _read_entry(path, header)  # another process may have compiled it
            if code is None:
                with step("compiling the model (once per model and CPU)", 1) as advance:
                    model, code = _lleaves_model(model_text, None)
                    advance(1)
                try:
                    _write_entry(path, header, code)
                except OSError as exc:
                    warnings.warn(
                        f"the compiled model cannot be cached in {str(path.parent)!r} "
                        f"({exc.strerror}); each new process compiles it again",
                        CompiledBackendWarning,
                        stacklevel=4,
                    )
                return model
    return _lleaves_model(model_text, code)[0]


def _compile(booster: Any) -> Any:
    """The compiled model of ``booster`` (kept by model digest), or the booster itself.

    The booster itself, after one warning, when the model cannot be
    compiled.
    """
    digest = None
    try:
        model_text = booster.model_to_string()
        digest = hashlib.sha256(model_text.encode()).hexdigest()
        if digest in _by_digest:
            _by_digest.move_to_end(digest)
            return _by_digest[digest]
        compiled: Any = CompiledBooster(_compile_cached(model_text, digest), _threads(booster))
    except ImportError:
        compiled = booster
        reason = "the 'fast' extra is not installed (pip install 'taskclf[fast]')"
    except Exception as exc:  # any failure of LLVM or lleaves: LightGBM still predicts
        compiled = booster
        reason = f"compiling failed on {platform.machine()} ({type(exc).__name__}: {exc})"
    if compiled is booster:
        warnings.warn(
            f"the compiled backend is not available: {reason}; LightGBM predicts",
            CompiledBackendWarning,
            stacklevel=4,
        )
    if digest is not None:
        _by_digest[digest] = compiled
        while len(_by_digest) > _KEEP_IN_PROCESS:
            _by_digest.popitem(last=False)
    return compiled


def compiled_model(booster: Any) -> Any:
    """An object whose ``predict(matrix)`` equals ``booster.predict(matrix)``.

    The booster compiled to machine code (built once and cached, see the
    module description), or the booster itself after one
    :class:`CompiledBackendWarning` when it cannot be compiled.

    Parameters
    ----------
    booster : lightgbm.Booster
        A trained booster; it must not be trained further once compiled.

    Returns
    -------
    CompiledBooster or lightgbm.Booster
    """
    with _lock:
        kept = _by_booster.get(booster)
        if kept is not None and kept[0] == booster.num_trees():
            return kept[1]
        compiled = _compile(booster)
        _by_booster[booster] = (booster.num_trees(), compiled)
        return compiled


def is_cached(booster: Any) -> bool | None:
    """Whether the compiled model of ``booster`` is in the disk cache (None without lleaves)."""
    try:
        text = booster.model_to_string()
        header = {**_toolchain(), "model_sha256": hashlib.sha256(text.encode()).hexdigest()}
    except ImportError:
        return None
    path = cache_directory() / _entry_name(header)
    return _read_entry(path, header) is not None
