"""taskclf._io: writes failed half-way (by an exception or a signal) leave the old output."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import refused

from taskclf import Segment
from taskclf._io import (
    atomic_directory,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    read_regular_file,
)
from taskclf.exceptions import MissingFileError, NotOursError, ReaderError
from taskclf.infer.batch import write_predictions_csv, write_segments_json

OLD = b"the previous, complete file\n"


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def ours(directory: Path) -> bool:
    return (directory / "MARKER").exists()


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over an old file"])
def test_a_failed_write_leaves_the_old_file_or_none(tmp_path, existing, error):
    target = tmp_path / "out.bin"
    if existing:
        target.write_bytes(OLD)
    with pytest.raises(error), atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary != target
        temporary.write_bytes(b"x" * 1000)
        assert (target.read_bytes() == OLD) if existing else not target.exists()
        raise error("disk on fire")
    assert listing(tmp_path) == (["out.bin"] if existing else [])
    assert not existing or target.read_bytes() == OLD


def test_a_finished_write_replaces_the_target(tmp_path):
    target = tmp_path / "deeper" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    with atomic_path(tmp_path / "empty.txt"):
        pass  # the caller may write nothing: an empty file
    assert target.read_bytes() == b"second" and listing(target.parent) == ["out.txt"]
    assert (tmp_path / "empty.txt").read_bytes() == b""


class ExplodingLabel:
    """A label whose text cannot be produced: writing fails on this row."""

    def __str__(self) -> str:
        raise Boom("label lost")

    __repr__ = __str__


def test_writers_failing_half_way_leave_the_old_files(tmp_path):
    # written in place, both failures would have truncated the old files
    predictions, segments = tmp_path / "predictions.csv", tmp_path / "segments.json"
    predictions.write_bytes(OLD)
    segments.write_bytes(OLD)
    ts = pd.date_range("2025-01-06", periods=3, freq="min", tz="UTC")
    with pytest.raises(Boom):
        labels = ["Build", "Debug", ExplodingLabel()]
        write_predictions_csv(pd.DataFrame({"bucket_start_ts": ts}), labels, predictions)
    unserializable = Segment(ts[0], ts[1], "Build", 1, user_id=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        write_segments_json([unserializable], segments)
    assert listing(tmp_path) == ["predictions.csv", "segments.json"]
    assert predictions.read_bytes() == segments.read_bytes() == OLD


def test_atomic_directory_replaces_only_its_own_output_with_umask_modes(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")

    def write_into_foreign():
        with atomic_directory(foreign, ours, "test directory"):
            raise AssertionError("no work may start")

    refused(write_into_foreign, NotOursError, str(foreign), "not a test directory")
    assert listing(foreign) == ["thesis.tex"]
    target = tmp_path / "ours"
    old = os.umask(0o027)
    try:
        for content in ("first", "second"):
            with atomic_directory(target, ours, "test directory") as staging:
                assert staging.parent == tmp_path and staging != target
                atomic_write_text(staging / "MARKER", content)
    finally:
        os.umask(old)
    # new files and directories get the permissions the umask gives
    assert (target / "MARKER").stat().st_mode & 0o777 == 0o640
    assert target.stat().st_mode & 0o777 == 0o750
    assert listing(target) == ["MARKER"] and (target / "MARKER").read_text() == "second"
    assert listing(tmp_path) == ["foreign", "ours"]  # nothing left over


@pytest.mark.parametrize("step", ["staging created", "old output retired"])
def test_an_interrupt_between_two_steps_leaves_the_old_output_and_nothing_else(
    tmp_path, monkeypatch, step
):
    # A signal's KeyboardInterrupt can come between any two steps; raise it at the worst ones.
    target = tmp_path / "out"
    target.mkdir()
    (target / "MARKER").write_bytes(OLD)
    real_mkdir, real_replace = Path.mkdir, os.replace

    def mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if step == "staging created" and self.name.endswith(".tmp"):
            raise KeyboardInterrupt

    def replace(source, destination):
        real_replace(source, destination)
        if step == "old output retired" and Path(source) == target:
            raise KeyboardInterrupt

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), atomic_directory(target, ours, "t") as staging:
        (staging / "MARKER").write_bytes(b"new")
    monkeypatch.undo()
    assert listing(tmp_path) == ["out"]
    assert (target / "MARKER").read_bytes() == OLD


def forked(work: Callable[[Callable[[str], None]], object]) -> tuple[BaseProcess, str]:
    """Start ``work(report)`` in a forked process; the process and the text it reported."""
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=work, args=(send.send,))
    child.start()
    return child, receive.recv()


def stopped(child: BaseProcess, signum: int) -> int | None:
    """Send ``signum`` to the child; its exit code (minus the signal that ended it)."""
    os.kill(child.pid, signum)  # type: ignore[arg-type]
    child.join()
    return child.exitcode


@pytest.mark.parametrize("kind", ["file", "directory"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_a_writer_stopped_half_way_leaves_the_old_output(tmp_path, kind, signum):
    target = tmp_path / "out"
    old = target if kind == "file" else target / "MARKER"
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(OLD)

    def write_and_wait(report: Callable[[str], None]) -> None:
        output = atomic_path(target) if kind == "file" else atomic_directory(target, ours, "t")
        with output as temporary:
            (temporary if kind == "file" else temporary / "MARKER").write_bytes(b"n" * 99999)
            report(str(temporary))  # half-way: now stop me
            for _ in range(1200):  # short sleeps: the handler runs between them at the latest
                time.sleep(0.05)

    child, temporary = forked(write_and_wait)
    assert Path(temporary).parent == tmp_path and Path(temporary).exists()
    code = stopped(child, signum)
    assert old.read_bytes() == OLD
    if signum == signal.SIGKILL:  # no chance to clean up: the temporary stays, hidden
        assert code == -signal.SIGKILL
        assert listing(tmp_path) == sorted(["out", Path(temporary).name])
        assert temporary.startswith(str(tmp_path / ".out.")) and temporary.endswith(".tmp")
    else:  # SIGTERM interrupts the write, which cleans up
        assert code == 1  # KeyboardInterrupt
        assert listing(tmp_path) == ["out"]


def test_readers_see_the_old_or_the_whole_new_file_whenever_the_writer_dies(tmp_path):
    n = 2000
    target = tmp_path / "predictions.csv"
    target.write_text("bucket_start_ts,predicted_label\nold,Build\n")
    frame = pd.DataFrame({"bucket_start_ts": pd.date_range("2025-01-06", periods=n, freq="min")})

    def rewrite_forever(report: Callable[[str], None]) -> None:
        report("writing")
        for k in range(10**6):
            labels = np.full(n, ("Build", "Debug")[k % 2], dtype=object)
            write_predictions_csv(frame, labels, target, confidences=np.full(n, 0.75))

    child, said = forked(rewrite_forever)
    assert said == "writing"
    sizes = []
    for _ in range(500):  # meanwhile, every read sees a whole file
        written = pd.read_csv(target)
        sizes.append(len(written))
        assert len(written) == 1 or (
            written["confidence"].eq(0.75).all() and written["predicted_label"].nunique() == 1
        )
        if sizes.count(n) == 5:
            break
    assert stopped(child, signal.SIGKILL) == -signal.SIGKILL  # at whatever moment of a write
    assert set(sizes) <= {1, n} and len(pd.read_csv(target)) == n
    leftovers = [name for name in listing(tmp_path) if name != "predictions.csv"]
    assert all(name.startswith(".predictions.csv.") for name in leftovers)


def test_read_regular_file_reads_regular_files_only_up_to_the_limit(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 100)
    link = tmp_path / "link.bin"
    link.symlink_to(path)  # a symlink to a regular file is followed
    assert read_regular_file(path, 100) == read_regular_file(link, 100) == b"x" * 100
    refused(lambda: read_regular_file(path, 99), ReaderError, "too large", "at most 99")
    error = refused(lambda: read_regular_file(tmp_path / "no", 9), MissingFileError, "not exist")
    assert isinstance(error, FileNotFoundError)
    os.mkfifo(tmp_path / "pipe")  # nobody writes: a blocking open would hang
    (tmp_path / "zeros").symlink_to("/dev/zero")  # endless: must never be read to the end
    for other in (tmp_path / "pipe", tmp_path / "zeros", tmp_path):
        refused(lambda p=other: read_regular_file(p, 1 << 20), ReaderError, str(other), "regular")
