"""The model compiled to machine code by lleaves: the ``backend="compiled"`` of the model
stage, cached in the process and on disk (docs/performance.md, "The compiled model stage").
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
_KEEP_IN_PROCESS = 8

_lock = threading.Lock()
_by_booster: weakref.WeakKeyDictionary[Any, tuple[int, Any]] = weakref.WeakKeyDictionary()
_by_digest: collections.OrderedDict[str, Any] = collections.OrderedDict()


class CompiledBackendWarning(TaskclfWarning):
    """The compiled backend cannot be used (LightGBM predicts) or its code cannot be cached."""


class CompiledBooster:
    """An lleaves model whose ``predict(matrix)`` works as ``booster.predict``, on ``n_threads``."""

    def __init__(self, model: Any, n_threads: int) -> None:
        self.model = model
        self.n_threads = n_threads

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """The (n, n_classes) float64 probabilities of the rows of ``matrix``."""
        return np.asarray(self.model.predict(matrix, n_jobs=self.n_threads), dtype=np.float64)


def cache_directory() -> Path:
    """Where compiled models are kept (the table of docs/performance.md)."""
    root = os.environ.get("TASKCLF_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "compiled"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "taskclf" / "compiled"


def model_sha256(model_text: str) -> str:
    """The digest a booster's compiled model is cached under (bundles record it)."""
    return hashlib.sha256(model_text.encode()).hexdigest()


def is_cached(digest: str) -> bool | None:
    """Whether the compiled model of the booster with ``digest`` is cached (None: no lleaves)."""
    try:
        header = _header(digest)
    except ImportError:
        return None
    return _read_entry(_entry_path(header), header) is not None


def _header(digest: str) -> dict[str, str]:
    """The model digest, CPU and compiler versions the code depends on (needs lleaves)."""
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
        "model_sha256": digest,
    }


def _entry_path(header: dict[str, str]) -> Path:
    name = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:40]
    return cache_directory() / f"{name}.bin"


def _signed(header: dict[str, str], code: bytes) -> bytes:
    """The header line of ``code``, with the code's SHA-256."""
    signed = {**header, "code_sha256": hashlib.sha256(code).hexdigest()}
    return json.dumps(signed, sort_keys=True).encode()


def _read_entry(path: Path, header: dict[str, str]) -> bytes | None:
    """The machine code in ``path`` when its header line matches; None otherwise."""
    try:
        data = read_regular_file(path, _MAX_ENTRY_BYTES, "compiled model cache")
    except (ReaderError, OSError):
        return None
    first, _, code = data.partition(b"\n")
    return code if first == _signed(header, code) else None


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path``, where one can be had."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 (closed below)
    except (ImportError, OSError):  # Windows, or a read-only cache: no lock
        yield
        return
    with handle:
        with contextlib.suppress(OSError):  # a file system without locks
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _lleaves_model(model_text: str, code: bytes | None) -> tuple[Any, bytes]:
    """The lleaves model of ``model_text`` and its machine code (compiled when ``code`` is None)."""
    import lleaves

    with tempfile.TemporaryDirectory(prefix="taskclf-compile-") as scratch:
        model_file, object_file = Path(scratch, "model.txt"), Path(scratch, "model.o")
        model_file.write_text(model_text)
        if code is not None:
            object_file.write_bytes(code)
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(object_file), **_COMPILE_OPTIONS)
        return model, object_file.read_bytes()


def _compile_cached(model_text: str, header: dict[str, str]) -> Any:
    """The lleaves model of ``model_text``: from the disk cache, or compiled into it."""
    path = _entry_path(header)
    with _exclusive(path.with_suffix(".lock")):  # a process compiling it: wait, then load
        code = _read_entry(path, header)
        if code is not None:
            return _lleaves_model(model_text, code)[0]
        with step("compiling the model (once per model and CPU)", 1) as advance:
            model, code = _lleaves_model(model_text, None)
            advance(1)
        try:
            atomic_write_bytes(path, _signed(header, code) + b"\n" + code)
        except OSError as exc:
            warnings.warn(
                f"the compiled model cannot be cached in {str(path.parent)!r} "
                f"({exc.strerror}); each new process compiles it again",
                CompiledBackendWarning,
                stacklevel=4,
            )
        return model


def _threads(booster: Any) -> int:
    """The booster's ``num_threads`` parameter, else every core this process may use."""
    wanted = int((getattr(booster, "params", None) or {}).get("num_threads") or 0)
    if wanted > 0:
        return wanted
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _compile(booster: Any) -> Any:
    """The compiled model of ``booster`` (kept by digest), or the booster after one warning."""
    model_text = booster.model_to_string()
    digest = model_sha256(model_text)
    if digest in _by_digest:
        _by_digest.move_to_end(digest)
        return _by_digest[digest]
    try:
        compiled = CompiledBooster(_compile_cached(model_text, _header(digest)), _threads(booster))
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
    _by_digest[digest] = compiled
    if len(_by_digest) > _KEEP_IN_PROCESS:
        _by_digest.popitem(last=False)
    return compiled


def compiled_model(booster: Any) -> Any:
    """``booster`` compiled (a :class:`CompiledBooster`, whose ``predict(matrix)`` equals
    ``booster.predict(matrix)``), or ``booster`` itself after one
    :class:`CompiledBackendWarning` when it cannot be compiled."""
    with _lock:
        kept = _by_booster.get(booster)
        if kept is None or kept[0] != booster.num_trees():
            kept = (booster.num_trees(), _compile(booster))
            _by_booster[booster] = kept
        return kept[1]
