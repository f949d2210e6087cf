"""The taskclf command, driven as a user drives it, on real files.

Commands run in this process (``main``), and in a real ``python -m taskclf``
where the process is what is tested: signals, a terminal, concurrent runs,
the demo.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taskclf import export_bundle_dir, load_bundle, read_bundle_info
from taskclf._readers import read_features, read_segments_json, write_features
from taskclf.bundle import decode_bundle, encode_bundle
from taskclf.cli import main
from taskclf.core.types import CLASS_ORDER
from taskclf.tune import day_fingerprints
from taskclf.workflows import configure

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("synth", "train", "infer", "tune", "inspect", "report", "demo")


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "taskclf", *map(str, args)]


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("PYTHONWARNINGS", None)


def run_cli(*args: object) -> tuple[int, str, str]:
    """``taskclf ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def features(work) -> Path:
    """A labelled synthetic feature file, written by `taskclf synth`."""
    path = work / "features.csv"
    assert main(["synth", "--out", str(path), "--users", "2", "--days", "1", "--seed", "3"]) == 0
    return path


@pytest.fixture(scope="module")
def bundle(work, features) -> Path:
    """A bundle file written by `taskclf train`."""
    path = work / "model.taskclf"
    code, out, err = run_cli(
        "train", features, "--out", path, "--rounds", 8, "--reject-threshold", 0.3, "--threads", 1
    )
    assert code == 0, err
    assert f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in out
    assert "out of fold: accuracy 0." in out and "macro-F1 0." in out
    return path


@pytest.fixture(scope="module")
def predictions(work, features, bundle) -> Path:
    out = work / "predictions"
    assert main(["infer", str(features), "--bundle", str(bundle), "--out", str(out)]) == 0
    return out


def test_synth_and_train(features, bundle, work):
    frame = read_features(features)
    assert len(frame) > 100 and set(frame["label"]) <= set(CLASS_ORDER)
    assert frame["user_id"].nunique() == 2 and (frame["schema_version"] == "v1").all()
    meta = read_bundle_info(bundle).metadata
    assert meta.params["predict__num_boost_round"] == 8
    assert meta.params["reject__threshold"] == 0.3
    assert meta.training_fingerprint is not None
    assert meta.extra["trained_on"] == str(features)
    code, _, err = run_cli("synth", "--out", work / "v3.parquet", "--users", 1,
                           "--days", 1, "--schema", "v3")  # fmt: skip
    assert code == 0, err
    assert (read_features(work / "v3.parquet")["schema_version"] == "v3").all()


def test_infer_writes_predictions_and_segments(predictions, features, bundle):
    assert sorted(p.name for p in predictions.iterdir()) == ["predictions.csv", "segments.json"]
    table = pd.read_csv(predictions / "predictions.csv")
    assert list(table.columns) == ["bucket_start_ts", "user_id", "predicted_label", "confidence",
                                   "is_rejected", "core_probs", "true_label"]  # fmt: skip
    labelled = read_features(features)  # its labels are written beside the predictions
    assert table["true_label"].tolist() == labelled["label"].tolist()
    frame = labelled.drop(columns="label")
    assert table["predicted_label"].tolist() == list(load_bundle(bundle).predict(frame))
    assert table["bucket_start_ts"].str.endswith("+00:00").all()
    assert table["core_probs"].map(json.loads).map(len).eq(8).all()
    segments = read_segments_json(predictions / "segments.json")
    assert sum(s.bucket_count for s in segments) == len(frame)
    assert {s.user_id for s in segments} == set(frame["user_id"])


def test_infer_overrides_taxonomy_smoother_and_bundle_directory(
    work, features, bundle, predictions
):
    taxonomy = work / "buckets.yaml"
    taxonomy.write_text(
        "buckets:\n"
        "  - name: Focus\n    core_labels: [Build, Debug, Write]\n    color: '#1F77B4'\n"
        "  - name: Talk\n    core_labels: [Meet, Communicate]\n    color: '#FF7F0E'\n"
    )
    out = work / "mapped"
    # About half the rows rejected; half-way between 4-decimal steps, so that the
    # rounded confidences in the file show the same rejections.
    confidence = pd.read_csv(predictions / "predictions.csv")["confidence"]
    threshold = round(float(confidence.median()), 4) + 0.00005
    code, _, err = run_cli("infer", features, "--bundle", bundle, "--out", out,
                           "--taxonomy", taxonomy, "--reject-threshold", threshold,
                           "--smooth-window", 1, "--view", "mapped", "--mapped-probs")  # fmt: skip
    assert code == 0, err
    table = pd.read_csv(out / "predictions.csv")
    buckets = {"Focus", "Talk", "Other", "Mixed/Unknown"}
    assert set(table["mapped_label"]) <= buckets
    probs = table[["mapped_proba_Focus", "mapped_proba_Talk", "mapped_proba_Other"]]
    accepted = ~table["is_rejected"].to_numpy()
    assert accepted.any() and probs.isna().all(axis=1).tolist() == (~accepted).tolist()
    assert np.allclose(probs[accepted].sum(axis=1), 1.0, atol=2e-4)
    segments = read_segments_json(out / "segments.json")
    assert {s.label for s in segments} <= buckets
    assert sum(s.bucket_count for s in segments) == len(table)
    code, _, err = run_cli("infer", features, "--bundle", bundle, "--out",
                           work / "no-buckets", "--view", "mapped")  # fmt: skip
    assert code == 2 and "taxonomy" in err and not (work / "no-buckets").exists()
    assert table["is_rejected"].tolist() == (table["confidence"] < threshold).tolist()
    assert (table.loc[table["is_rejected"], "mapped_label"] == "Mixed/Unknown").all()

    directory = export_bundle_dir(load_bundle(bundle), work / "model-dir")
    assert main(["infer", str(features), "--bundle", str(directory), "--out",
                 str(work / "from-dir")]) == 0  # fmt: skip
    pd.testing.assert_frame_equal(
        pd.read_csv(work / "from-dir" / "predictions.csv"),
        pd.read_csv(predictions / "predictions.csv"),
    )
    code, _, err = run_cli("infer", features, "--bundle", bundle, "--out",
                           work / "viterbi", "--smoother", "viterbi")  # fmt: skip
    assert code == 0, err
    viterbi = configure(load_bundle(bundle), smoother="viterbi")
    expected = viterbi.predict(read_features(features).drop(columns="label"))
    assert pd.read_csv(work / "viterbi" / "predictions.csv")["predicted_label"].tolist() == list(
        expected
    )


def test_inspect_reads_metadata_without_unpickling(work, bundle):
    code, stdout, err = run_cli("inspect", bundle)
    assert code == 0, err
    assert "schema_version" in stdout and "4077fe0dba70" in stdout
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() in stdout
    assert "compiled_model" in stdout and "macro_f1" in stdout

    # A bundle whose payload runs code when unpickled: inspect must not run it,
    # and infer must refuse it (its metadata is incompatible) before unpickling.
    marker = work / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    header, _ = decode_bundle(bundle.read_bytes(), "test")
    payload = pickle.dumps(Exploit())
    header["payload"].update(sha256=hashlib.sha256(payload).hexdigest(), length=len(payload))
    header["metadata"]["schema_hash"] = "000000000000"
    evil = work / "evil.taskclf"
    evil.write_bytes(encode_bundle(header, payload))
    code, out, _ = run_cli("inspect", evil, "--json")
    assert code == 0 and json.loads(out)["schema_hash"] == "000000000000"
    code, _, err = run_cli("infer", work / "features.csv", "--bundle", evil, "--out",
                           work / "evil-out")  # fmt: skip
    assert code == 2 and "schema hash mismatch" in err and "evil.taskclf" in err
    assert not marker.exists()
    assert not (work / "evil-out").exists()


def test_report_replaces_only_its_own_output(work, predictions):
    out = work / "report"
    code, _, err = run_cli("report", predictions, "--out", out)
    assert code == 0, err
    code, stdout, err = run_cli("report", predictions, "--out", out)  # replaces its own output
    assert code == 0, err
    assert "time per label" in stdout and "switches_per_hour" in stdout and "accuracy" in stdout
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["label", "segments", "minutes", "share"]
    assert summary["share"].sum() == pytest.approx(100.0, abs=0.05)
    assert (out / "timeline.png").stat().st_size > 1000
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli("report", predictions, "--out", out)
    assert code == 2 and "not a taskclf report" in err
    assert "Traceback" not in err and (out / "notes.txt").read_text() == "mine"


def test_tune_prints_the_grid_and_saves_the_best(work, features, bundle):
    out = work / "tuned.taskclf"
    args = ("--thresholds", "0.2,0.6", "--windows", "1,5", "--cv", 2, "--out", out, "-q")
    code, stdout, err = run_cli("tune", features, "--bundle", bundle, *args)
    assert code == 0, err
    # The bundle was trained on these rows: the search says so and how to avoid it.
    assert "warning: 2 user-days of these rows trained" in err
    assert "user_001 2025-" in err and "--train" in err
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("reject_threshold"))
    assert lines[header].split() == ["reject_threshold", "smooth_window", "mean_score",
                                     "std_score", "rank"]  # fmt: skip
    assert lines[header + 1].split()[-1] == "1"  # best first
    assert lines[header + 5].startswith("best: ")
    best = json.loads(lines[header + 5][len("best: ") :].split(" (")[0])
    params = read_bundle_info(out).metadata.params
    assert params["reject__threshold"] == best["reject__threshold"] in (0.2, 0.6)
    assert params["smooth__window"] == best["smooth__window"] in (1, 5)


def test_viterbi_training_and_tuning(work, features):
    model = work / "viterbi.taskclf"
    code, _, err = run_cli("train", features, "--out", model, "--rounds", 4,
                           "--threads", 1, "--smoother", "viterbi")  # fmt: skip
    assert code == 0, err
    assert "smooth__switch_prob" in read_bundle_info(model).metadata.params
    held_out = work / "held-out.csv"
    assert run_cli("synth", "--out", held_out, "--users", 2, "--seed", 9)[0] == 0
    code, out, err = run_cli("tune", held_out, "--bundle", model, "--thresholds",
                             "none,0.2", "--cv", 2)  # fmt: skip
    assert code == 0, err
    assert "smooth_window" not in out and "reject_threshold" in out
    assert "warning" not in err  # rows the model never saw
    assert "tuning" not in err and "\x1b" not in err  # not a terminal: no progress bars
    code, _, err = run_cli("tune", features, "--bundle", model, "--windows", "1,3")
    assert code == 2 and "windows" in err
    # tune --train saves the best candidate refitted on all rows, with their training days
    tuned = work / "tuned-by-training.taskclf"
    args = ("--rounds", 2, "--threads", 1, "--cv", 2, "--thresholds", "0.3", "--windows", "1")
    code, _, err = run_cli("tune", held_out, "--train", *args, "--out", tuned)
    assert code == 0, err
    days = read_bundle_info(tuned).metadata.extra["training_days"]
    assert days == sorted(day_fingerprints(read_features(held_out).drop(columns="label")))
    code, _, err = run_cli("tune", held_out, "--bundle", tuned, "--thresholds", "0.3")
    assert code == 0 and f"{len(days)} user-days of these rows trained" in err


def test_help():
    code, out, _ = run_cli()  # no command: the overview
    assert code == 0 and all(name in out for name in COMMANDS)
    for name in COMMANDS:
        code, out, _ = run_cli(name, "--help")
        assert code == 0
        assert "Examples" in out and f"taskclf {name}" in out
    code, out, _ = run_cli("train", "--help")
    assert "[required]" in out and "[default: 100;" in out
    # Answering --help loads none of the heavy libraries.
    probe = "import sys; from taskclf.cli import main; main(['infer', '--help']); "
    probe += "print(sorted({'pandas', 'sklearn', 'lightgbm', 'rich'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV)
    assert done.stdout.splitlines()[-1] == "[]", done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["infer", "f.csv", "--bundle", "b", "--out", "o", "--reject-threshold", "2"],
        ["synth", "--out", "f.csv", "--users", "0"],
        ["train", "f.csv", "--out", "m", "--calibration", "magic"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args):
    code, _, err = run_cli(*args)
    assert code == 2
    assert "Usage:" in err


CLI_CASES = {
    "infer: features that do not exist": (
        ["infer", "{root}/absent.csv", "--bundle", "{bundle}"],
        ("absent.csv", "does not exist"),
    ),
    "infer: garbage features": (["infer", "{garbage}", "--bundle", "{bundle}"], ("garbage.csv",)),
    "infer: missing columns": (
        ["infer", "{missing}", "--bundle", "{bundle}"],
        ("'keys_per_min'", "'app_id'"),
    ),
    "infer: no bucket_start_ts": (
        ["infer", "{no_timestamps}", "--bundle", "{bundle}"],
        ("'bucket_start_ts'", "no_timestamps.csv"),
    ),
    "infer: a duplicate row": (
        ["infer", "{duplicates}", "--bundle", "{bundle}"],
        ("duplicate", "'user0'"),
    ),
    "infer: a row in two files": (
        ["infer", "{two_files}", "--bundle", "{bundle}"],
        ("a.csv", "b.csv", "'user1'"),
    ),
    "infer: an unparseable timestamp": (
        ["infer", "{bad_timestamps}", "--bundle", "{bundle}"],
        ("'half past nine'",),
    ),
    "infer: another schema": (["infer", "{v2_declared}", "--bundle", "{bundle}"], ("'v2'", "v1")),
    "infer: a damaged bundle": (
        ["infer", "{features}", "--bundle", "{flipped}"],
        ("flipped.taskclf", "corrupt"),
    ),
    "infer: a bundle that does not exist": (
        ["infer", "{features}", "--bundle", "{root}/absent.taskclf"],
        ("absent.taskclf",),
    ),
    "infer: a wrong pinned digest": (
        ["infer", "{features}", "--bundle", "{bundle}", "--sha256", "0" * 64],
        ("SHA-256",),
    ),
    "infer: a digest pinned on a directory": (
        ["infer", "{features}", "--bundle", "{bundle_dir}", "--sha256", "0" * 64],
        ("sha256", "bundle directory"),
    ),
    "infer: an unknown taxonomy label": (
        ["infer", "{features}", "--bundle", "{bundle}", "--taxonomy", "{taxonomy}"],
        ("taxonomy.yaml", "'Programming'"),
    ),
    "infer: a features file as taxonomy": (
        ["infer", "{features}", "--bundle", "{bundle}", "--taxonomy", "{features}"],
        ("features.csv",),
    ),
    "infer: --out is a file": (
        ["infer", "{features}", "--bundle", "{bundle}", "--out", "{features}"],
        ("features.csv", "not a directory"),
    ),
    "infer: --out holds other files": (
        ["infer", "{features}", "--bundle", "{bundle}", "--out", "{root}"],
        ("not a taskclf inference output",),
    ),
    "train: no label column": (["train", "{features}"], ("'label'",)),
    "train: an unknown label": (["train", "{unlabelled_known}"], ("'Coding'",)),
    "train: missing columns": (["train", "{labelled_missing}"], ("'keys_per_min'", "'app_id'")),
    "train: no bucket_start_ts, refused before training": (
        ["train", "{labelled_no_timestamps}", "--rounds", "100000"],
        ("'bucket_start_ts'",),
    ),
    "train: empty features": (["train", "{labelled_empty}"], ("no rows",)),
    "train: --out is a directory": (
        ["train", "{labelled_frame}", "--out", "{root}"],
        ("directory",),
    ),
    "tune: an unknown scorer": (
        ["tune", "{labelled_frame}", "--bundle", "{bundle}", "--scoring", "vibes"],
        ("'vibes'",),
    ),
    "tune: neither --bundle nor --train": (["tune", "{labelled_frame}"], ("--train",)),
    "tune: a window of 0": (["tune", "{labelled_frame}", "--train", "--windows", "1,0"], ("1,0",)),
    "inspect: a damaged bundle": (["inspect", "{flipped}"], ("flipped.taskclf",)),
    "inspect: a feature file": (["inspect", "{features}"], ("not a taskclf bundle",)),
    "report: no predictions": (["report", "{root}"], ("predictions.csv",)),
}


@pytest.fixture(scope="module")
def more_files(cli_files, frame, labelled_frame) -> dict[str, Path]:
    root = cli_files["root"]
    two = root / "two-files"
    write_features(frame, two / "a.csv")
    write_features(frame[frame["user_id"] == "user1"].iloc[3:5], two / "b.csv")
    return {
        **cli_files,
        "two_files": two,
        "no_timestamps": write_features(
            frame.drop(columns="bucket_start_ts"), root / "no_timestamps.csv"
        ),
        "labelled_no_timestamps": write_features(
            labelled_frame.drop(columns="bucket_start_ts"), root / "labelled_no_ts.csv"
        ),
    }


@pytest.mark.parametrize(("args", "words"), CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_refuses_with_exit_2_and_leaves_nothing(args, words, more_files, tmp_path):
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in more_files["root"].rglob("*")}
    command = [a.format(**more_files) for a in args]
    if "--out" not in command and command[0] in ("train", "infer", "report"):
        command += ["--out", str(out / "model.taskclf") if command[0] == "train" else str(out)]
    if command[0] in ("train", "tune") and "--rounds" not in command:
        command += ["--rounds", "2", "--threads", "1"] if "--bundle" not in command else []
    code, _, err = run_cli(*command)
    assert code == 2, err
    assert "Traceback" not in err and "error" in err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    assert {p: p.stat().st_mtime_ns for p in more_files["root"].rglob("*")} == before


def test_cli_empty_and_unseen_features(cli_files, tmp_path):
    code, stdout, err = run_cli("infer", cli_files["empty"], "--bundle",
                                cli_files["bundle"], "--out", tmp_path / "empty")  # fmt: skip
    assert code == 0, err
    assert "0 rows" in stdout
    assert len(pd.read_csv(tmp_path / "empty" / "predictions.csv")) == 0
    assert json.loads((tmp_path / "empty" / "segments.json").read_text()) == []
    for bundle in ("bundle", "bundle_dir"):
        out = tmp_path / bundle
        code, _, err = run_cli("infer", cli_files["unseen"], "--bundle",
                               cli_files[bundle], "--out", out)  # fmt: skip
        assert code == 0, err
        assert len(pd.read_csv(out / "predictions.csv")) == len(read_features(cli_files["unseen"]))


@pytest.fixture(scope="module")
def big_features(work, features) -> Path:
    """About 20 000 rows: 20 copies of the synthetic users under new ids."""
    frame = read_features(features).drop(columns="label")
    copies = [frame.assign(user_id=frame["user_id"] + f"-{k}") for k in range(20)]
    return write_features(pd.concat(copies, ignore_index=True), work / "big.parquet")


def start_writing(tmp_path: Path, *args: object) -> subprocess.Popen:
    """``taskclf infer ARGS --out tmp_path/out`` in a new process, once it is writing
    (its staging directory exists)."""
    child = subprocess.Popen(
        command("infer", *args, "--out", tmp_path / "out"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.005)
    return child


def test_sigterm_during_a_run_leaves_the_old_output_and_no_temporary_files(
    tmp_path, big_features, bundle, predictions
):
    out = tmp_path / "out"
    shutil.copytree(predictions, out)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    child = start_writing(tmp_path, big_features, "--bundle", bundle)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_concurrent_runs_into_one_directory_leave_one_complete_run(
    tmp_path, features, big_features, bundle
):
    # One run in another process; while it writes, one here.
    out = tmp_path / "out"
    inputs = {len(read_features(p)) for p in (features, big_features)}
    child = start_writing(tmp_path, big_features, "--bundle", bundle, "-q")
    results = [run_cli("infer", features, "--bundle", bundle, "--out", out, "-q")[::2]]
    results.append((child.wait(timeout=300), child.communicate()[1]))
    assert any(code == 0 for code, _ in results), results
    assert all(code in (0, 2) and "Traceback" not in err for code, err in results), results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "segments.json"]
    rows = len(pd.read_csv(out / "predictions.csv"))
    assert rows in inputs
    assert sum(s.bucket_count for s in read_segments_json(out / "segments.json")) == rows


@pytest.mark.slow
def test_demo_end_to_end_drawing_progress_bars_on_a_terminal(tmp_path):
    args = ("demo", "--out", tmp_path / "demo", "--users", 2, "--days", 1, "--rounds", 5)
    leader, follower = pty.openpty()  # standard error is a terminal: bars are drawn there
    child = subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=follower, text=True,
                             env=ENV, cwd=tmp_path)  # fmt: skip
    os.close(follower)
    drawn = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO once the child has gone
            while chunk := os.read(leader, 4096):
                drawn.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    stdout, _ = child.communicate(timeout=300)
    reader.join()
    os.close(leader)
    assert child.returncode == 0, drawn.decode(errors="replace")
    assert b"boosting rounds" in drawn and b"/5" in drawn  # the bar of training, 5 rounds
    demo = tmp_path / "demo"
    for name in ("features/train.csv", "features/new-day.csv", "model.taskclf",
                 "model/pipeline.skops", "model/bundle.json",
                 "predictions/predictions.csv", "predictions/segments.json",
                 "report/summary.csv", "report/per_day.csv", "report/timeline.png"):  # fmt: skip
        path = demo / name
        assert path.is_file() and path.stat().st_size > 0, name
        assert str(path.parent if path.parent.name == "model" else path) in stdout, name


def test_calibrator_stores_in_and_out_of_the_command(work, features, bundle, predictions):
    """train writes its store in taskclf 0.4's layout; infer calibrates with a store."""
    from taskclf.calibration import load_calibrator_store

    store_dir = work / "store"
    code, _, err = run_cli(
        "train", features, "--out", work / "per-user.taskclf", "--rounds", 4,
        "--threads", 1, "--per-user-calibration", "--calibrator-store-out", store_dir,
    )  # fmt: skip
    assert code == 0, err
    assert (store_dir / "store.json").is_file() and (store_dir / "global.json").is_file()
    store = load_calibrator_store(store_dir)
    assert store.method == "temperature"
    code, _, err = run_cli(
        "infer", features, "--bundle", bundle, "--out", work / "calibrated",
        "--calibrator-store", store_dir, "--backend", "lightgbm",
    )  # fmt: skip
    assert code == 0, err
    plain = pd.read_csv(predictions / "predictions.csv")
    calibrated = pd.read_csv(work / "calibrated" / "predictions.csv")
    assert len(plain) == len(calibrated)
    assert not np.allclose(plain["confidence"], calibrated["confidence"])
    code, _, err = run_cli("infer", features, "--bundle", bundle, "--out",
                           work / "nowhere", "--calibrator-store", work / "no-store")  # fmt: skip
    assert code == 2 and "does not exist" in err


def test_evaluate_writes_figures_equal_to_scikit_learn_and_gates(work, features, bundle):
    from sklearn.metrics import accuracy_score, f1_score

    out = work / "evaluation"
    code, stdout, err = run_cli("evaluate", bundle, features, "--out", out)
    assert code == 0, err
    report = json.loads((out / "evaluation.json").read_text())
    for name in ("confusion.png", "reliability.png", "coverage.png", "per_user.csv"):
        assert (out / name).stat().st_size > 0
    truth = read_features(features)["label"].astype(str)
    predicted = load_bundle(bundle).predict(read_features(features).drop(columns="label"))
    pooled = report["pooled"]
    assert pooled["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert pooled["macro_f1"] == pytest.approx(
        f1_score(truth, predicted, average="macro", labels=sorted(set(truth) | set(predicted)))
    )
    assert len(report["per_user"]) == read_features(features)["user_id"].nunique()
    assert f"{pooled['accuracy']:.4f}" in stdout
    code, _, err = run_cli(
        "evaluate", bundle, features, "--out", out, "--fail-under", "accuracy=1.01"
    )
    assert code == 1 and "accuracy" in err and "below" in err


def test_schema_and_validate(work, features):
    code, out, _ = run_cli("schema", "v2")
    assert code == 0 and "keys_per_min" in out and "per minute" in out
    code, out, _ = run_cli("validate", features)
    assert code == 0 and "no problem" in out
    broken = work / "broken.csv"
    frame = read_features(features).drop(columns=["keys_per_min"]).assign(schema_hash="abc")
    frame.to_csv(broken, index=False)
    code, out, _ = run_cli("validate", broken)
    assert code == 2 and "'keys_per_min'" in out and "'abc'" in out


def test_stream_command_gives_the_batch_result(work, features, bundle, monkeypatch):
    frame = read_features(features).drop(columns="label").groupby("user_id").head(15)
    frame = frame.sort_values(["bucket_start_ts", "user_id"], kind="stable")
    rows = frame.assign(bucket_start_ts=frame["bucket_start_ts"].map(lambda t: t.isoformat()))
    lines = "".join(json.dumps(r, default=str) + "\n" for r in rows.to_dict("records"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code, stdout, err = run_cli("stream", "--bundle", bundle, "--state", work / "live.state")
    assert code == 0, err
    out = [json.loads(line) for line in stdout.splitlines()]
    final = {(r["user_id"], r["bucket_start_ts"]): r["label"] for r in out if r["kind"] == "row"}
    batch = load_bundle(bundle).transform(frame)
    expected = {
        (u, t.isoformat()): label
        for u, t, label in zip(batch["user_id"], batch["bucket_start_ts"], batch["label"])
    }
    assert final == expected
    assert sum(r["kind"] == "segment" for r in out) > 0


def test_train_refuses_someone_elses_directory_before_training(work, features):
    theirs = work / "theirs"
    theirs.mkdir()
    (theirs / "bundle.json").write_text('{"not": "ours"}')
    code, out, err = run_cli("train", features, "--out", theirs, "--pickle-free")
    assert code == 2 and "theirs" in err and "training on" not in out
    assert [p.name for p in theirs.iterdir()] == ["bundle.json"]


def test_infer_says_which_threshold_it_used(work, features, bundle):
    code, out, err = run_cli("infer", features, "--bundle", bundle, "--out",
                             work / "threshold-run", "--reject-threshold", 0.45)  # fmt: skip
    assert code == 0, err
    assert "reject threshold 0.45 (given on the command line)" in out
