"""The taskclf command, driven as a user drives it: subprocesses on real files."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from taskclf import (
    export_bundle_dir,
    load_bundle,
    read_bundle_info,
)
from taskclf._readers import read_features, write_features
from taskclf.bundle import decode_bundle, encode_bundle
from taskclf.cli import main
from taskclf.core.types import CLASS_ORDER
from taskclf.infer.batch import (
    read_segments_json,
)

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("synth", "train", "infer", "tune", "inspect", "report", "demo")


def run(
    *args: object, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m taskclf ARGS`` with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "-m", "taskclf", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit code 2, a short message naming the problem, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def features(work) -> Path:
    """A labelled synthetic feature file, written by `taskclf synth`."""
    path = work / "features.csv"
    result = run("synth", "--out", path, "--users", 2, "--days", 1, "--seed", 3)
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    return path


@pytest.fixture(scope="module")
def bundle(work, features) -> Path:
    """A bundle file written by `taskclf train`."""
    path = work / "model.taskclf"
    result = run(
        "train", features, "--out", path, "--rounds", 8, "--reject-threshold", 0.3, "--threads", 1
    )
    assert result.returncode == 0, result.stderr
    assert f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in result.stdout
    return path


@pytest.fixture(scope="module")
def predictions(work, features, bundle) -> Path:
    out = work / "predictions"
    result = run("infer", features, "--bundle", bundle, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def test_synth_writes_labelled_rows(features, work):
    frame = read_features(features)
    assert len(frame) > 100
    assert set(frame["label"]) <= set(CLASS_ORDER)
    assert frame["user_id"].nunique() == 2
    assert (frame["schema_version"] == "v1").all()
    assert main(["synth", "--out", str(work / "v3.parquet"), "--users", "1", "--days", "1",
                 "--schema", "v3"]) == 0  # fmt: skip
    v3 = read_features(work / "v3.parquet")
    assert "title_token_sketch_127" in v3.columns and (v3["schema_version"] == "v3").all()


def test_train_records_metadata(bundle, features):
    meta = read_bundle_info(bundle).metadata
    assert meta.schema_version == "v1"
    assert meta.params["predict__num_boost_round"] == 8
    assert meta.params["reject__threshold"] == 0.3
    assert meta.training_fingerprint is not None
    assert meta.extra["trained_on"] == str(features)


def test_infer_writes_predictions_and_segments(predictions, features, bundle):
    table = pd.read_csv(predictions / "predictions.csv")
    assert list(table.columns) == [
        "bucket_start_ts",
        "user_id",
        "predicted_label",
        "confidence",
        "is_rejected",
        "core_probs",
    ]
    frame = read_features(features).drop(columns="label")
    assert len(table) == len(frame)
    expected = load_bundle(bundle).predict(frame)
    assert table["predicted_label"].tolist() == list(expected)
    assert table["bucket_start_ts"].str.endswith("+00:00").all()
    probabilities = table["core_probs"].map(json.loads)
    assert probabilities.map(len).eq(8).all()
    segments = read_segments_json(predictions / "segments.json")
    assert sum(s.bucket_count for s in segments) == len(frame)
    assert {s.user_id for s in segments} == set(frame["user_id"])


def test_infer_with_overrides_taxonomy_and_a_bundle_directory(work, features, bundle, predictions):
    taxonomy = work / "buckets.yaml"
    taxonomy.write_text(
        "buckets:\n"
        "  - name: Focus\n    core_labels: [Build, Debug, Write]\n    color: '#1F77B4'\n"
        "  - name: Talk\n    core_labels: [Meet, Communicate]\n    color: '#FF7F0E'\n"
    )
    out = work / "mapped"
    result = run(
        "infer", features, "--bundle", bundle, "--out", out, "--taxonomy", taxonomy,
        "--reject-threshold", 0.9, "--smooth-window", 1, "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "predictions.csv")
    assert "mapped_label" in table.columns
    assert set(table["mapped_label"]) <= {"Focus", "Talk", "Other", "Mixed/Unknown"}
    assert table["is_rejected"].tolist() == (table["confidence"] < 0.9).tolist()
    assert (table.loc[table["is_rejected"], "mapped_label"] == "Mixed/Unknown").all()

    directory = export_bundle_dir(load_bundle(bundle), work / "model-dir")
    args = ["infer", str(features), "--bundle", str(directory), "--out", str(work / "from-dir")]
    assert main([*args, "-q"]) == 0
    from_dir = pd.read_csv(work / "from-dir" / "predictions.csv")
    from_file = pd.read_csv(predictions / "predictions.csv")
    pd.testing.assert_frame_equal(from_dir, from_file)


def test_inspect_reads_metadata_without_unpickling(work, bundle, capsys):
    result = run("inspect", bundle)
    assert result.returncode == 0, result.stderr
    assert "schema_version" in result.stdout and "4077fe0dba70" in result.stdout
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() in result.stdout

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
    capsys.readouterr()
    assert main(["inspect", str(evil), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema_hash"] == "000000000000"
    result = run("infer", work / "features.csv", "--bundle", evil, "--out", work / "evil-out")
    assert_user_error(result, "schema hash mismatch", "evil.taskclf")
    assert not marker.exists()
    assert not (work / "evil-out").exists()


def test_report_writes_summary_and_timeline(work, predictions):
    out = work / "report"
    result = run("report", predictions, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "time per label" in result.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["label", "segments", "minutes", "share"]
    assert summary["share"].sum() == pytest.approx(100.0, abs=0.05)
    assert (out / "timeline.png").stat().st_size > 1000


def test_tune_prints_the_grid_and_saves_the_best(work, features, bundle):
    out = work / "tuned.taskclf"
    result = run(
        "tune", features, "--bundle", bundle, "--thresholds", "0.2,0.6", "--windows", "1,5",
        "--cv", 2, "--out", out, "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("reject_threshold"))
    assert header + 5 < len(lines) and lines[header + 5].startswith("best: ")
    assert lines[header].split() == ["reject_threshold", "smooth_window", "mean_score",
                                     "std_score", "rank"]  # fmt: skip
    assert lines[header + 1].split()[-1] == "1"  # best first
    best_line = next(line for line in result.stdout.splitlines() if line.startswith("best: "))
    best = json.loads(best_line[len("best: ") :].split(" (")[0])
    params = read_bundle_info(out).metadata.params
    assert params["reject__threshold"] == best["reject__threshold"] in (0.2, 0.6)
    assert params["smooth__window"] == best["smooth__window"] in (1, 5)


def test_bad_input_exits_2_without_traceback_or_output(work, features, bundle):
    out = work / "failed"
    result = run("infer", work / "missing.csv", "--bundle", bundle, "--out", out)
    assert_user_error(result, "missing.csv", "does not exist")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken = work / "broken.taskclf"
    broken.write_bytes(bytes(data))
    result = run("infer", features, "--bundle", broken, "--out", out)
    assert_user_error(result, "broken.taskclf", "corrupt")
    assert not out.exists()


# In-process: the same entry point, for the many small refusals.


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["infer", "{features}", "--bundle", "{bundle}", "--out", "{out}", "--sha256", "0" * 64],
         ["SHA-256 mismatch"]),
        (["report", "{work}", "--out", "{out}"], ["no segments.json"]),
        (["inspect", "{features}"], ["not a taskclf bundle"]),
        (["tune", "{features}", "--bundle", "{bundle}", "--scoring", "vibes"],
         ["unknown scorer 'vibes'"]),
        (["train", "{garbage}", "--out", "{out}/m.taskclf"], ["binary"]),
        (["train", "{unlabelled}", "--out", "{out}/m.taskclf"], ["'label'"]),
        (["infer", "{features}", "--bundle", "{bundle}", "--out", "{out}", "--taxonomy",
          "{features}"], ["features.csv"]),
    ],
)  # fmt: skip
def test_refusals_in_process(work, features, bundle, capsys, args, words):
    garbage = work / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 8)
    unlabelled = work / "unlabelled.csv"
    read_features(features).drop(columns="label").to_csv(unlabelled, index=False)
    out = work / "refused"
    values = {
        "features": features,
        "bundle": bundle,
        "out": out,
        "work": work,
        "garbage": garbage,
        "unlabelled": unlabelled,
    }
    code = main([a.format(**values) for a in args])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    for word in words:
        assert word in captured.err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["infer", "f.csv", "--bundle", "b", "--out", "o", "--reject-threshold", "2"],
        ["synth", "--out", "f.csv", "--users", "0"],
        ["tune", "f.csv", "--windows", "1,x", "--train"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys, args):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert f"taskclf {command}" in text


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    started = time.perf_counter()
    result = run("demo", "--out", tmp_path / "demo", cwd=tmp_path, timeout=180)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    demo = tmp_path / "demo"
    for name in (
        "features/train.csv",
        "features/new-day.csv",
        "model.taskclf",
        "model/pipeline.skops",
        "model/bundle.json",
        "predictions/predictions.csv",
        "predictions/segments.json",
        "report/summary.csv",
        "report/timeline.png",
    ):
        path = demo / name
        assert path.is_file() and path.stat().st_size > 0, name
        shown = path.parent if path.parent.name == "model" else path
        assert str(shown) in result.stdout, name
    assert seconds < 60, f"the demo took {seconds:.1f} s"


def test_demo_default_directory_is_taskclf_demo():
    from taskclf.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert args.out == "taskclf-demo"


def test_inference_in_user_chunks_equals_one_pass(monkeypatch, tmp_path, bundle, features):
    """Large inputs go through the pipeline in groups of whole users: same files."""
    import taskclf.cli as cli

    pipeline = load_bundle(bundle)
    frame = read_features(features).drop(columns="label")
    frame = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)  # users interleaved
    console = cli.Console(quiet=True)
    cli.run_inference(pipeline, frame, tmp_path / "one", console)
    monkeypatch.setattr(cli, "_CHUNK_ROWS", 10)
    assert len(cli._user_chunks(frame)) == frame["user_id"].nunique()
    cli.run_inference(pipeline, frame, tmp_path / "chunked", console)
    for name in ("predictions.csv", "segments.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "chunked" / name).read_bytes()


@pytest.mark.slow
def test_infer_on_a_local_dask_cluster(work, features, bundle, predictions):
    """`--dask local`: Parquet predictions and the same segments as in memory."""
    frame = read_features(features)
    parquet = work / "parquet"
    users = sorted(frame["user_id"].unique())
    for i, user in enumerate(users):
        write_features(frame[frame["user_id"] == user], parquet / f"part-{i}.parquet")
    out = work / "dask-out"
    result = run(
        "infer", parquet, "--bundle", bundle, "--out", out, "--dask", "local", "--workers", 1,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out / "predictions")
    assert len(table) == len(frame)
    expected = pd.read_csv(predictions / "predictions.csv")
    merged = expected.assign(bucket_start_ts=pd.to_datetime(expected["bucket_start_ts"])).merge(
        table, on=["user_id", "bucket_start_ts"], suffixes=("", "_dask")
    )
    assert len(merged) == len(frame)
    assert (merged["predicted_label"] == merged["predicted_label_dask"]).all()
    in_memory = read_segments_json(predictions / "segments.json")
    assert read_segments_json(out / "segments.json") == in_memory


# Bad input (contract: a specific error naming the problem)

# --------------------------------------------------------------------------
# The command line: exit code 2, a message, no traceback, no output
# --------------------------------------------------------------------------


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``taskclf ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse refuses its arguments this way
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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
    "infer: a duplicate row": (
        ["infer", "{duplicates}", "--bundle", "{bundle}"],
        ("duplicate", "'user0'"),
    ),
    "infer: an unparseable timestamp": (
        ["infer", "{bad_timestamps}", "--bundle", "{bundle}"],
        ("'half past nine'",),
    ),
    "infer: another schema": (
        ["infer", "{v2_declared}", "--bundle", "{bundle}"],
        ("'v2'", "v1"),
    ),
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
        ("--sha256",),
    ),
    "infer: a threshold above 1": (
        ["infer", "{features}", "--bundle", "{bundle}", "--reject-threshold", "1.5"],
        ("--reject-threshold", "1.5"),
    ),
    "infer: a threshold that is no number": (
        ["infer", "{features}", "--bundle", "{bundle}", "--reject-threshold", "high"],
        ("--reject-threshold", "'high'"),
    ),
    "infer: a window of 0": (
        ["infer", "{features}", "--bundle", "{bundle}", "--smooth-window", "0"],
        ("--smooth-window", "0"),
    ),
    "infer: an unknown taxonomy label": (
        ["infer", "{features}", "--bundle", "{bundle}", "--taxonomy", "{taxonomy}"],
        ("taxonomy.yaml", "'Programming'"),
    ),
    "infer: a taxonomy that does not exist": (
        ["infer", "{features}", "--bundle", "{bundle}", "--taxonomy", "{root}/absent.yaml"],
        ("absent.yaml",),
    ),
    "train: no label column": (["train", "{features}"], ("'label'",)),
    "train: an unknown label": (["train", "{unlabelled_known}"], ("'Coding'",)),
    "train: missing columns": (["train", "{labelled_missing}"], ("'keys_per_min'", "'app_id'")),
    "train: no leaves": (["train", "{labelled_frame}", "--num-leaves", "0"], ("--num-leaves",)),
    "train: empty features": (["train", "{labelled_empty}"], ("no rows",)),
    "inspect: a damaged bundle": (["inspect", "{flipped}"], ("flipped.taskclf",)),
    "inspect: a feature file": (["inspect", "{features}"], ("not a taskclf bundle",)),
    "report: no predictions": (["report", "{root}"], ("segments.json",)),
}


@pytest.mark.parametrize(("args", "words"), CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_refuses_with_exit_2_and_leaves_nothing(args, words, cli_files, capsys, tmp_path):
    out = tmp_path / "out"
    command = [a.format(**cli_files) for a in args]
    if command[0] == "train":
        command += ["--out", str(out / "model.taskclf"), "--rounds", "2", "--threads", "1"]
    elif command[0] in ("infer", "report"):
        command += ["--out", str(out)]
    code, _, err = run_cli(capsys, *command)
    assert code == 2, err
    assert "Traceback" not in err
    assert "error" in err
    for word in words:
        assert word in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_cli_empty_features_give_empty_outputs(cli_files, capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        capsys, "infer", cli_files["empty"], "--bundle", cli_files["bundle"], "--out", out
    )
    assert code == 0, err
    assert "0 rows" in stdout
    assert len(pd.read_csv(out / "predictions.csv")) == 0
    assert json.loads((out / "segments.json").read_text()) == []


@pytest.mark.parametrize("bundle", ["bundle", "bundle_dir"])
def test_cli_unseen_values_are_not_errors(bundle, cli_files, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "infer", cli_files["unseen"], "--bundle", cli_files[bundle], "--out", out
    )
    assert code == 0, err
    assert len(pd.read_csv(out / "predictions.csv")) == len(read_features(cli_files["unseen"]))


def _subprocess_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "taskclf", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "case",
    ["infer: missing columns", "infer: a damaged bundle", "infer: a threshold above 1"],
)
def test_the_real_command_refuses_the_same_way(case, cli_files, tmp_path):
    args, words = CLI_CASES[case]
    out = tmp_path / "out"
    result = _subprocess_cli(*[a.format(**cli_files) for a in args], "--out", out)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    assert not out.exists()
