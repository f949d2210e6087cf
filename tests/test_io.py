"""taskclf._io: atomic files and directories, bounded reads of regular files.

:func:`taskclf._io.atomic_path` writes to a temporary file in the target's
directory and renames it over the target only once the block completes;
:func:`~taskclf._io.atomic_directory` does the same for a directory and never
replaces one that taskclf did not write. These tests fail a write half-way
(an exception, SIGTERM or SIGKILL of a real process) and look at what is left
on disk; and they hand :func:`~taskclf._io.read_regular_file` what is not a
regular file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
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

ROOT = Path(__file__).resolve().parents[1]
OLD = b"the previous, complete file\n"


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over an old file"])
def test_exception_mid_write_leaves_no_file_and_no_temporary(tmp_path, existing):
    target = tmp_path / "out.bin"
    if existing:
        target.write_bytes(OLD)
    with pytest.raises(Boom), atomic_path(target) as temporary:
        assert temporary.parent == target.parent  # same directory: rename is atomic
        assert temporary != target
        with open(temporary, "wb") as handle:
            handle.write(b"x" * 100_000)
        assert temporary.stat().st_size == 100_000
        assert (target.read_bytes() == OLD) if existing else not target.exists()
        raise Boom("disk on fire")
    assert listing(tmp_path) == (["out.bin"] if existing else [])
    if existing:
        assert target.read_bytes() == OLD


def test_keyboard_interrupt_mid_write_cleans_up(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temporary:
        temporary.write_text("partial")
        raise KeyboardInterrupt
    assert listing(tmp_path) == []


def test_success_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deeper" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert listing(target.parent) == ["out.txt"]


def test_the_caller_may_write_nothing(tmp_path):
    # a block that leaves the temporary file empty gives an empty file
    with atomic_path(tmp_path / "empty.txt"):
        pass
    assert (tmp_path / "empty.txt").read_bytes() == b""


class ExplodingLabel:
    """A label whose text cannot be produced: CSV writing fails on this row."""

    def __str__(self) -> str:
        raise Boom("label lost")

    __repr__ = __str__


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over an old file"])
def test_csv_writer_failing_mid_write_leaves_nothing_partial(tmp_path, existing):
    n = 120_000  # pandas writes a CSV in chunks of rows: the first ones hit the disk
    frame = pd.DataFrame(
        {"bucket_start_ts": pd.date_range("2025-01-06", periods=n, freq="min", tz="UTC")}
    )
    labels = np.full(n, "Build", dtype=object)
    labels[-1] = ExplodingLabel()

    # the premise: written in place, the failure leaves a partial file
    plain = tmp_path / "plain" / "predictions.csv"
    plain.parent.mkdir()
    with pytest.raises(Boom):
        frame.assign(predicted_label=labels).to_csv(plain, index=False)
    assert 1 < len(plain.read_text().splitlines()) < n + 1  # header and some rows

    target = tmp_path / "atomic" / "predictions.csv"
    target.parent.mkdir()
    if existing:
        target.write_bytes(OLD)
    with pytest.raises(Boom):
        write_predictions_csv(frame, labels, target)
    assert listing(target.parent) == (["predictions.csv"] if existing else [])
    if existing:
        assert target.read_bytes() == OLD


def test_segments_writer_failing_leaves_the_old_file(tmp_path):
    target = tmp_path / "segments.json"
    target.write_bytes(OLD)
    start = pd.Timestamp("2025-01-06 09:00", tz="UTC").to_pydatetime()
    unserializable = Segment(start, start, "Build", 1, user_id=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        write_segments_json([unserializable], target)
    assert target.read_bytes() == OLD
    assert listing(tmp_path) == ["segments.json"]


# --------------------------------------------------------------------------
# A real process killed mid-write
# --------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from taskclf._io import atomic_path

    target = sys.argv[1]
    with atomic_path(target) as temporary:
        with open(temporary, "wb") as handle:
            for _ in range(64):
                handle.write(b"n" * 65536)  # 4 MiB of the new content
            handle.flush()
            print(temporary, flush=True)  # tell the parent: half-way, now kill me
            time.sleep(120)
            handle.write(b"the end")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over an old file"])
def test_process_killed_mid_write_leaves_no_partial_target(tmp_path, existing):
    target = tmp_path / "big.bin"
    if existing:
        target.write_bytes(OLD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = child.stdout.readline().strip()  # type: ignore[union-attr]
        assert line, child.stderr.read()  # type: ignore[union-attr]
        temporary = Path(line)
        assert temporary.parent == tmp_path
        assert temporary.stat().st_size == 64 * 65536
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
    assert child.returncode == -signal.SIGKILL
    if existing:
        assert target.read_bytes() == OLD
    else:
        assert not target.exists()
    # The kill gave no chance to clean up: the temporary file may remain,
    # but only under its hidden temporary name, never as the target.
    leftovers = [name for name in listing(tmp_path) if name != "big.bin"]
    assert all(name.startswith(".big.bin.") and name.endswith(".tmp") for name in leftovers)


def test_readers_never_see_a_partial_file_while_writing(tmp_path):
    # while the block runs, the target holds the old content in full
    target = tmp_path / "table.csv"
    old = pd.DataFrame({"a": np.arange(5)})
    old.to_csv(target, index=False)
    with atomic_path(target) as temporary:
        pd.DataFrame({"a": np.arange(100_000)}).to_csv(temporary, index=False)
        pd.testing.assert_frame_equal(pd.read_csv(target), old)
    assert len(pd.read_csv(target)) == 100_000


WRITER_OF_PREDICTIONS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    from taskclf.infer.batch import write_predictions_csv

    n = int(sys.argv[2])
    frame = pd.DataFrame(
        {"bucket_start_ts": pd.date_range("2025-01-06", periods=n, freq="min", tz="UTC")}
    )
    labels = np.where(np.arange(n) % 3 == 0, "Build", "Debug").astype(object)
    print("writing", flush=True)
    write_predictions_csv(frame, labels, sys.argv[1], confidences=np.full(n, 0.75))
    print("done", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 3.0])
def test_prediction_writer_killed_at_any_moment_leaves_old_or_complete_file(tmp_path, delay):
    n = 400_000
    target = tmp_path / "predictions.csv"
    target.write_text("bucket_start_ts,predicted_label\nold,Build\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER_OF_PREDICTIONS, str(target), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "writing", child.stderr.read()  # type: ignore[union-attr]
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
    written = pd.read_csv(target)
    # the old file, or the whole new one: never a part
    assert len(written) in (1, n)
    if delay < 0.1:  # writing 400 000 rows takes most of a second: killed half-way
        assert len(written) == 1
    if len(written) == n:
        assert written["confidence"].eq(0.75).all()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "predictions.csv"]
    assert all(name.startswith(".predictions.csv.") for name in leftovers)


# --------------------------------------------------------------------------
# Permissions, directories and bounded reads
# --------------------------------------------------------------------------


def test_new_files_and_directories_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "file.txt", "x")
        with atomic_directory(tmp_path / "dir", lambda p: False, "test directory") as staging:
            (staging / "inside.txt").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "dir").stat().st_mode & 0o777 == 0o750


def ours(directory: Path) -> bool:
    return (directory / "MARKER").exists()


def test_atomic_directory_refuses_what_is_not_ours_and_replaces_what_is(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")

    def write_into_foreign():
        with atomic_directory(foreign, ours, "test directory"):
            raise AssertionError("no work may start")

    refused(write_into_foreign, NotOursError, str(foreign), "not a test directory")
    assert listing(foreign) == ["thesis.tex"]
    assert listing(tmp_path) == ["foreign"]

    target = tmp_path / "ours"
    for content in ("first", "second"):
        with atomic_directory(target, ours, "test directory") as staging:
            assert staging.parent == tmp_path and staging != target
            (staging / "MARKER").write_text(content)
    assert listing(target) == ["MARKER"] and (target / "MARKER").read_text() == "second"
    assert listing(tmp_path) == ["foreign", "ours"]  # nothing left over

    with pytest.raises(Boom), atomic_directory(target, ours, "test directory") as staging:
        (staging / "MARKER").write_text("third")
        raise Boom("half-way")
    assert (target / "MARKER").read_text() == "second"
    assert listing(tmp_path) == ["foreign", "ours"]


DIRECTORY_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from taskclf._io import atomic_directory

    with atomic_directory(sys.argv[1], lambda p: (p / "MARKER").exists(), "test") as staging:
        (staging / "MARKER").write_text("new")
        print(staging, flush=True)  # half-way: now terminate me
        time.sleep(120)
    """
)


@pytest.mark.slow
def test_sigterm_mid_write_leaves_the_old_directory_and_no_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "MARKER").write_text("old")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", DIRECTORY_WRITER, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        staging = Path(child.stdout.readline().strip())  # type: ignore[union-attr]
        assert staging.is_dir(), child.stderr.read()  # type: ignore[union-attr]
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
    assert child.returncode != 0
    assert not staging.exists()
    assert listing(tmp_path) == ["out"]
    assert (target / "MARKER").read_text() == "old"


def test_read_regular_file_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # nobody writes: a blocking open would hang
    refused(lambda: read_regular_file(fifo, 100), ReaderError, str(fifo), "not a regular file")
    zeros = tmp_path / "zeros.json"
    zeros.symlink_to("/dev/zero")  # endless: must never be read to the end
    refused(lambda: read_regular_file(zeros, 1 << 20), ReaderError, str(zeros))
    missing = tmp_path / "nowhere.json"
    error = refused(lambda: read_regular_file(missing, 100), MissingFileError, "does not exist")
    assert isinstance(error, FileNotFoundError)


def test_read_regular_file_refuses_a_directory(tmp_path):
    refused(lambda: read_regular_file(tmp_path, 100), ReaderError, str(tmp_path))


def test_read_regular_file_reads_up_to_the_limit(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100) == b"x" * 100
    refused(lambda: read_regular_file(path, 99), ReaderError, "too large", "at most 99")
    link = tmp_path / "link.bin"
    link.symlink_to(path)  # a symlink to a regular file is followed
    assert read_regular_file(link, 100) == b"x" * 100
