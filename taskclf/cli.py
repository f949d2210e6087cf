"""The ``taskclf`` command: synthetic data, training, inference, tuning, reports.

Every subcommand has ``--help`` with examples. Exit codes: 0 on success,
2 on bad input or usage (a short message naming the problem, no
traceback), 1 on an unexpected failure (a bug: ``--debug`` shows the
traceback). Output files are written atomically: after a failure none is
left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from taskclf.exceptions import InputError, TaskclfError

T = TypeVar("T")

PROG = "taskclf"
DEFAULT_DEMO_DIR = "taskclf-demo"
PREDICTIONS_FILE = "predictions.csv"
SEGMENTS_FILE = "segments.json"
_CHUNK_ROWS = 50_000
_USER_ERRORS = (
    TaskclfError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class UsageError(InputError):
    """A command-line argument is unusable (reported with exit code 2)."""


# ---------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------


class Console:
    """Where a command prints: messages to stdout, progress bars to stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def progress(
        self, items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it"
    ) -> Iterator[T]:
        """Iterate ``items`` with a tqdm bar (when installed and not quiet)."""
        if self.quiet:
            yield from items
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            yield from items
            return
        yield from tqdm(
            items, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, disable=None
        )

    def bar(self, *, total: int | None, desc: str, unit: str = "it", **options: Any) -> Any:
        """A tqdm bar to ``update`` by hand (on a terminal), or a silent stand-in."""
        if not self.quiet and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                return tqdm(
                    total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, **options
                )
        return _SilentBar()

    @contextlib.contextmanager
    def working(self, desc: str) -> Iterator[None]:
        """An elapsed-time bar while a step that reports no progress runs.

        LightGBM training inside ``pipeline.fit`` gives no progress events,
        so the bar shows that work goes on and for how long.
        """
        bar = self.bar(total=None, desc=desc, unit="s", bar_format="{desc}: {elapsed} elapsed")
        if isinstance(bar, _SilentBar):
            yield
            return
        done = threading.Event()

        def tick() -> None:
            while not done.wait(0.5):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            bar.close()


class _SilentBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _folds_count(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"cross-validation needs at least 2 folds, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _fraction_or_none(text: str) -> float | None:
    return None if text.strip().lower() == "none" else _fraction(text)


def _number_list(kind: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        values = [kind(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return values

    return parse


# ---------------------------------------------------------------------------
# Shared steps: load a model, read labelled features, run inference
# ---------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str], *, sha256: str | None = None) -> Any:
    """A pipeline from a bundle file (:func:`taskclf.load_bundle`) or directory."""
    from taskclf.bundle import load_bundle
    from taskclf.bundle_dir import load_bundle_dir

    path = Path(path)
    if path.is_dir():
        if sha256 is not None:
            raise UsageError("--sha256 pins bundle files; bundle directories carry their digests")
        return load_bundle_dir(path)
    return load_bundle(path, sha256=sha256)


def split_labels(frame: pd.DataFrame, source: object) -> tuple[pd.DataFrame, pd.Series]:
    """Features and the ``label`` column of a labelled frame."""
    if "label" not in frame.columns:
        raise InputError(
            f"{source}: training and tuning need a 'label' column with the true core "
            "label of each row (taskclf synth writes one)"
        )
    labels = frame["label"]
    if labels.isna().any():
        position = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise InputError(f"{source}: column 'label' is empty in row {position}")
    return frame.drop(columns="label"), labels


def _user_chunks(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of groups of whole users, about ``_CHUNK_ROWS`` rows each."""
    n = len(frame)
    if "user_id" not in frame.columns or n <= _CHUNK_ROWS:
        return [np.arange(n)]
    codes, _ = pd.factorize(frame["user_id"])
    if (codes < 0).any():  # missing user ids: let the pipeline report them
        return [np.arange(n)]
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    chunks, start = [], 0
    for end in range(1, len(bounds)):
        if bounds[end] - bounds[start] >= _CHUNK_ROWS or end == len(bounds) - 1:
            chunks.append(np.sort(order[bounds[start] : bounds[end]]))
            start = end
    return chunks


def transform_in_chunks(pipeline: Any, frame: pd.DataFrame, console: Console) -> list[Any]:
    """``pipeline.transform`` over groups of whole users, with a progress bar.

    Timelines never cross users, so the result equals one call on the whole
    frame. Returns the transformed chunks with their row positions.
    """
    chunks = _user_chunks(frame)
    results = []
    with console.bar(total=len(frame), desc="inference", unit="row") as bar:
        for rows in chunks:
            part = frame if len(chunks) == 1 else frame.iloc[rows]
            results.append((rows, pipeline.transform(part)))
            bar.update(len(rows))
    return results


def run_inference(
    pipeline: Any, frame: pd.DataFrame, out_dir: Path, console: Console
) -> tuple[Path, Path, int, int]:
    """Write ``predictions.csv`` and ``segments.json`` of ``frame`` to ``out_dir``.

    Both files are computed before either is written, and each is written
    atomically; if the second cannot be written the first is removed.
    """
    from taskclf._columns import CONFIDENCE, IS_REJECTED, LABEL, MAPPED_LABEL, PROBA_COLUMNS
    from taskclf.infer.batch import write_predictions_csv, write_segments_json
    from taskclf.stages.segment import frame_to_segments

    bucket_seconds = int(pipeline.get_params().get("segment__bucket_seconds", 60))
    pieces = transform_in_chunks(pipeline, frame, console)
    segments = [
        s for _, part in pieces for s in frame_to_segments(part, bucket_seconds=bucket_seconds)
    ]
    if len(pieces) == 1:
        out = pieces[0][1]
    else:
        out = pd.concat([part for _, part in pieces], ignore_index=True)
        positions = np.concatenate([rows for rows, _ in pieces])
        out = out.iloc[np.argsort(positions, kind="stable")].reset_index(drop=True)
    predictions, segments_path = out_dir / PREDICTIONS_FILE, out_dir / SEGMENTS_FILE
    write_predictions_csv(
        out,
        out[LABEL].astype(object).tolist(),
        predictions,
        confidences=out[CONFIDENCE].to_numpy(),
        is_rejected=out[IS_REJECTED].to_numpy(),
        mapped_labels=out[MAPPED_LABEL].astype(object).tolist() if MAPPED_LABEL in out else None,
        core_probs=out[list(PROBA_COLUMNS)].to_numpy(),
        include_user_id=True,
    )
    try:
        write_segments_json(segments, segments_path)
    except BaseException:
        predictions.unlink(missing_ok=True)
        raise
    return predictions, segments_path, len(out), len(segments)


def with_taxonomy(pipeline: Any, taxonomy_path: str) -> Any:
    """``pipeline`` mapping its labels with the taxonomy in a YAML file."""
    from sklearn.pipeline import Pipeline

    from taskclf.taxonomy import TaxonomyMapper, load_taxonomy

    config = load_taxonomy(taxonomy_path)
    steps = [(name, stage) for name, stage in pipeline.steps if name != "taxonomy"]
    return Pipeline([*steps, ("taxonomy", TaxonomyMapper(config))])


def set_postprocessing(
    pipeline: Any, reject_threshold: float | None, smooth_window: int | None
) -> None:
    """Set the reject threshold and smoothing window of ``pipeline`` when given."""
    params: dict[str, Any] = {}
    if reject_threshold is not None:
        params["reject__threshold"] = reject_threshold
    if smooth_window is not None:
        params["smooth__window"] = smooth_window
    if params:
        pipeline.set_params(**params)


def train_pipeline(
    X: pd.DataFrame,
    y: pd.Series,
    *,
    rounds: int,
    calibration: str,
    seed: int,
    reject_threshold: float | None,
    smooth_window: int | None,
    learning_rate: float | None = None,
    num_leaves: int | None = None,
    threads: int | None = None,
) -> Any:
    """Build and fit a pipeline on labelled rows, recording the data's fingerprint."""
    from taskclf.bundle import record_training
    from taskclf.pipeline import build_pipeline

    booster_params: dict[str, Any] = {}
    if learning_rate is not None:
        booster_params["learning_rate"] = learning_rate
    if num_leaves is not None:
        booster_params["num_leaves"] = num_leaves
    pipeline = build_pipeline(
        num_boost_round=rounds,
        calibration=calibration,
        random_state=seed,
        booster_params=booster_params or None,
        reject_threshold=reject_threshold,
        num_threads=threads,
    )
    if smooth_window is not None:
        pipeline.set_params(smooth__window=smooth_window)
    return record_training(pipeline.fit(X, y), X, y)


def save_model(pipeline: Any, out: Path, *, pickle_free: bool, extra: dict[str, Any]) -> str:
    """Save as a bundle file (returns its SHA-256) or a pickle-free directory."""
    from taskclf.bundle import read_bundle_info, save_bundle
    from taskclf.bundle_dir import export_bundle_dir

    if pickle_free:
        export_bundle_dir(pipeline, out, metadata=extra)
        return ""
    save_bundle(pipeline, out, metadata=extra)
    return read_bundle_info(out).file_sha256


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace, console: Console) -> int:
    from taskclf._readers import write_features
    from taskclf.synth import make_activity_frame

    frame = make_activity_frame(
        n_users=args.users, n_days=args.days, schema_version=args.schema, random_state=args.seed
    )
    write_features(frame, args.out)
    console.say(
        f"wrote {len(frame)} labelled rows ({args.users} users x {args.days} days, "
        f"schema {args.schema}) to {args.out}"
    )
    return 0


def _read(path: str, console: Console) -> pd.DataFrame:
    from taskclf._readers import feature_files, read_features

    files = feature_files(path)
    progress: Callable[[Iterable[Path]], Iterable[Path]] = (
        (lambda items: console.progress(items, total=len(files), desc="reading", unit="file"))
        if len(files) > 1
        else (lambda items: items)
    )
    return read_features(path, progress=progress)


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    frame = _read(args.features, console)
    X, y = split_labels(frame, f"features {args.features!r}")
    if len(X) == 0:
        raise InputError(f"features {args.features!r} hold no rows to train on")
    console.say(f"training on {len(X)} rows ({args.rounds} rounds) ...")
    started = time.perf_counter()
    with console.working("training"):
        pipeline = train_pipeline(
            X,
            y,
            rounds=args.rounds,
            calibration=args.calibration,
            seed=args.seed,
            reject_threshold=args.reject_threshold,
            smooth_window=args.smooth_window,
            learning_rate=args.learning_rate,
            num_leaves=args.num_leaves,
            threads=args.threads,
        )
    seconds = time.perf_counter() - started
    extra = {"trained_on": str(args.features), "rows": len(X)}
    digest = save_model(pipeline, Path(args.out), pickle_free=args.pickle_free, extra=extra)
    console.say(f"trained in {seconds:.1f} s; saved {args.out}")
    if digest:
        console.say(f"sha256 {digest}")
    return 0


def cmd_infer(args: argparse.Namespace, console: Console) -> int:
    pipeline = load_model(args.bundle, sha256=args.sha256)
    set_postprocessing(pipeline, args.reject_threshold, args.smooth_window)
    if args.taxonomy is not None:
        pipeline = with_taxonomy(pipeline, args.taxonomy)
    out_dir = Path(args.out)
    if args.dask is not None:
        from taskclf.distributed import infer_parquet_dir

        console.say(f"running on Dask ({args.dask}) ...")
        result = infer_parquet_dir(
            pipeline, args.features, out_dir, address=args.dask, n_workers=args.workers
        )
        console.say(f"wrote {out_dir / 'predictions'}/ (Parquet) and {out_dir / SEGMENTS_FILE}")
        for key, value in result.items():
            if isinstance(value, (int, float, str)):
                console.say(f"  {key}: {value}")
        return 0
    frame = _read(args.features, console)
    predictions, segments, n_rows, n_segments = run_inference(pipeline, frame, out_dir, console)
    console.say(f"{n_rows} rows -> {n_segments} segments")
    console.say(f"wrote {predictions}")
    console.say(f"wrote {segments}")
    return 0


def _format_table(frame: pd.DataFrame) -> str:
    return frame.to_string(index=False)


def frozen_copy(pipeline: Any) -> Any:
    """A pipeline predicting as ``pipeline`` does whose model steps never refit.

    The learned vocabulary, booster and calibration become given ones, so
    that cross-validation (which clones and fits) tunes only the later
    steps of a saved model instead of retraining it.
    """
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    from taskclf.calibration import IdentityCalibrator
    from taskclf.stages.calibrate import Calibrator
    from taskclf.stages.encode import CategoricalEncoder
    from taskclf.stages.model import BoosterPredictor

    steps = []
    for name, stage in pipeline.steps:
        if isinstance(stage, CategoricalEncoder):
            vocabulary = getattr(stage, "vocabulary_", None) or stage.categories
            stage = CategoricalEncoder(vocabulary, schema_version=stage.schema_version)
        elif isinstance(stage, BoosterPredictor):
            booster = getattr(stage, "booster_", None) or stage.booster
            stage = BoosterPredictor(booster, schema_version=stage.schema_version)
        elif isinstance(stage, Calibrator):
            calibrator = getattr(stage, "calibrator_", None) or stage.calibrator
            store = getattr(stage, "store_", None) or stage.calibrator_store
            if calibrator is None and store is None:
                calibrator = IdentityCalibrator()
            stage = Calibrator(calibrator, store)
        else:
            stage = clone(stage)
        steps.append((name, stage))
    return Pipeline(steps)


def _folds(X: pd.DataFrame, n_folds: int) -> tuple[Any, Any]:
    """Folds grouped by user when there are enough users, else contiguous."""
    from sklearn.model_selection import GroupKFold, KFold

    if "user_id" in X.columns and X["user_id"].nunique() >= n_folds:
        return GroupKFold(n_splits=n_folds), X["user_id"].to_numpy()
    return KFold(n_splits=n_folds), None


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from taskclf.metrics import get_scorer
    from taskclf.tune import PostprocessingSearchCV

    scorer = get_scorer(args.scoring)
    frame = _read(args.features, console)
    X, y = split_labels(frame, f"features {args.features!r}")
    if len(X) < args.cv:
        raise InputError(f"features {args.features!r}: {len(X)} rows cannot make {args.cv} folds")
    if args.bundle is not None:
        saved = load_model(args.bundle, sha256=args.sha256)
        candidate = frozen_copy(saved)
    else:
        from taskclf.pipeline import build_pipeline

        saved = None
        candidate = build_pipeline(
            num_boost_round=args.rounds,
            calibration=args.calibration,
            random_state=args.seed,
            num_threads=args.threads,
        )
    grid = {"reject__threshold": args.thresholds, "smooth__window": args.windows}
    cv, groups = _folds(X, args.cv)
    search = PostprocessingSearchCV(candidate, grid, scoring=scorer, cv=cv, refit=saved is None)
    console.say(
        f"searching {len(args.thresholds) * len(args.windows)} candidates x {args.cv} folds "
        f"on {len(X)} rows ..."
    )
    with console.working("searching"):
        search.fit(X, y, groups=groups)
    results = pd.DataFrame(search.cv_results_)
    table = results[
        [
            "param_reject__threshold",
            "param_smooth__window",
            "mean_test_score",
            "std_test_score",
            "rank_test_score",
        ]
    ].sort_values(["rank_test_score", "param_reject__threshold"], kind="stable")
    table.columns = ["reject_threshold", "smooth_window", "mean_score", "std_score", "rank"]
    console.say(_format_table(table.round(4)))
    best = {key: _plain(value) for key, value in search.best_params_.items()}
    console.say(f"best: {json.dumps(best)} ({args.scoring} {search.best_score_:.4f})")
    if args.out is not None:
        if saved is not None:
            tuned = saved.set_params(**best)
        else:
            from taskclf.bundle import record_training

            tuned = record_training(search.best_estimator_, X, y)
        digest = save_model(
            tuned,
            Path(args.out),
            pickle_free=args.pickle_free,
            extra={"tuned_on": str(args.features), "best_params": best},
        )
        console.say(f"saved {args.out}" + (f"\nsha256 {digest}" if digest else ""))
    return 0


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (for JSON and set_params)."""
    return value.item() if isinstance(value, np.generic) else value


def _inspect_dict(path: Path) -> dict[str, Any]:
    from taskclf.bundle import read_bundle_info
    from taskclf.bundle_dir import read_bundle_dir_info

    if path.is_dir():
        dir_info = read_bundle_dir_info(path)
        return {
            "path": str(path),
            "kind": "taskclf 0.4 model directory" if dir_info.legacy else "bundle directory",
            "files": dir_info.files,
            **dir_info.metadata.to_dict(),
        }
    info = read_bundle_info(path)
    return {
        "path": str(path),
        "kind": f"bundle file (format {info.format_version})",
        "file_sha256": info.file_sha256,
        "payload_sha256": info.payload_sha256,
        "payload_bytes": info.payload_bytes,
        **info.metadata.to_dict(),
    }


def cmd_inspect(args: argparse.Namespace, console: Console) -> int:
    facts = _inspect_dict(Path(args.bundle))
    if args.json:
        console.say(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if isinstance(value, dict) and not value:
            console.say(f"{key.ljust(width)}  {{}}")
        elif isinstance(value, dict):
            console.say(f"{key}:")
            for sub_key, sub_value in value.items():
                console.say(f"  {sub_key}: {json.dumps(sub_value)}")
        else:
            shown = ", ".join(value) if isinstance(value, list) else value
            console.say(f"{key.ljust(width)}  {shown}")
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from taskclf.report import write_report

    report = write_report(args.predictions_dir, args.out)
    console.say("time per label:")
    console.say(textwrap.indent(_format_table(report.summary), "  "))
    console.say(f"wrote {report.summary_csv}")
    for path in report.timelines:
        console.say(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from taskclf._readers import read_features, write_features
    from taskclf.report import write_report
    from taskclf.synth import make_activity_frame

    started = time.perf_counter()
    out = Path(args.out)
    features_dir = out / "features"
    console.say(f"taskclf demo -> {out}/")
    console.say(
        f"1. synthetic data: {args.users} users x {args.days} days to train on, "
        "1 more day of 2 users to predict"
    )
    train = make_activity_frame(n_users=args.users, n_days=args.days, random_state=args.seed)
    next_day = (train["bucket_start_ts"].max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    test = make_activity_frame(n_users=2, n_days=1, start=next_day, random_state=args.seed + 1)
    write_features(train, features_dir / "train.csv")
    write_features(test.drop(columns="label"), features_dir / "new-day.csv")
    console.say(f"   {features_dir / 'train.csv'} ({len(train)} rows)")
    console.say(f"   {features_dir / 'new-day.csv'} ({len(test)} rows)")

    console.say(f"2. training ({args.rounds} rounds) ...")
    X, y = split_labels(read_features(features_dir / "train.csv"), "train.csv")
    with console.working("training"):
        pipeline = train_pipeline(
            X,
            y,
            rounds=args.rounds,
            calibration="temperature",
            seed=args.seed,
            reject_threshold=0.4,
            smooth_window=None,
            threads=args.threads,
        )
    bundle = out / "model.taskclf"
    digest = save_model(pipeline, bundle, pickle_free=False, extra={"demo": True})
    save_model(pipeline, out / "model", pickle_free=True, extra={"demo": True})
    console.say(f"   {bundle} (sha256 {digest[:16]}...)")
    console.say(f"   {out / 'model'}/ (the same model, pickle-free)")

    console.say("3. inference on the new day ...")
    frame = read_features(features_dir / "new-day.csv")
    predictions, segments, n_rows, n_segments = run_inference(
        load_model(bundle, sha256=digest), frame, out / "predictions", console
    )
    predicted = pd.read_csv(predictions)["predicted_label"].to_numpy(dtype=object)
    accuracy = float(np.mean(predicted == test["label"].to_numpy(dtype=object)))
    console.say(f"   {predictions}\n   {segments}")
    console.say(
        f"   {n_rows} rows -> {n_segments} segments; {accuracy:.1%} of rows match the true labels"
    )

    console.say("4. report ...")
    report = write_report(out / "predictions", out / "report")
    console.say(textwrap.indent(_format_table(report.summary), "   "))
    console.say(f"   {report.summary_csv}")
    for path in report.timelines:
        console.say(f"   {path}")
    console.say(f"done in {time.perf_counter() - started:.1f} s. Next: taskclf inspect {bundle}")
    return 0


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------

_EPILOGS = {
    "main": """\
examples:
  taskclf demo                                  # everything, end to end, in ./taskclf-demo
  taskclf synth --out features.csv --users 4 --days 3
  taskclf train features.csv --out model.taskclf
  taskclf infer new.csv --bundle model.taskclf --out predictions/
  taskclf report predictions/ --out report/
  taskclf inspect model.taskclf

exit codes: 0 success, 2 bad input or usage, 1 unexpected failure (a bug)
""",
    "synth": """\
examples:
  taskclf synth --out features.csv
  taskclf synth --out features.parquet --users 10 --days 5 --schema v2 --seed 7
""",
    "train": """\
FEATURES is a CSV or Parquet file, or a directory of them, with a 'label'
column holding the true core label of each row.

examples:
  taskclf train features.csv --out model.taskclf
  taskclf train data/ --out model.taskclf --rounds 200 --calibration isotonic
  taskclf train features.csv --out model/ --pickle-free
""",
    "infer": """\
Writes DIR/predictions.csv (bucket_start_ts, user_id, predicted_label,
confidence, is_rejected, mapped_label with --taxonomy, core_probs) and
DIR/segments.json. With --dask, FEATURES is a directory of Parquet files and
the predictions go to DIR/predictions/ as Parquet.

BUNDLE is a bundle file (taskclf train) or a bundle directory (pickle-free,
or a taskclf 0.4 model directory). Loading a bundle file unpickles it, which
runs code: load only files you trust, pin them with --sha256, or use
pickle-free bundle directories.

examples:
  taskclf infer new.csv --bundle model.taskclf --out predictions/
  taskclf infer new.csv --bundle model/ --out predictions/ --reject-threshold 0.5
  taskclf infer new.csv --bundle model.taskclf --out out/ --taxonomy buckets.yaml
  taskclf infer parquet-dir/ --bundle model.taskclf --out out/ --dask local --workers 2
""",
    "tune": """\
Grid search of the reject threshold and the smoothing window on labelled
FEATURES, computing the model's probabilities once (PostprocessingSearchCV).

examples:
  taskclf tune labelled.csv --bundle model.taskclf
  taskclf tune labelled.csv --bundle model.taskclf --thresholds 0.3,0.4,0.5 --windows 1,3,5,7 \\
      --out tuned.taskclf
  taskclf tune labelled.csv --train --rounds 50
""",
    "inspect": """\
Prints a bundle's metadata without unpickling anything (versions, schema,
label set, parameters, training fingerprint and metrics, digests).

examples:
  taskclf inspect model.taskclf
  taskclf inspect model/ --json
""",
    "report": """\
Reads PREDICTIONS_DIR/segments.json (written by taskclf infer); writes
DIR/summary.csv (time per label) and DIR/timeline.png (segments per user
and day).

examples:
  taskclf report predictions/ --out report/
""",
    "demo": """\
Makes synthetic data, trains a model, saves it (as a bundle file and as a
pickle-free directory), predicts a new day and draws the report.

examples:
  taskclf demo
  taskclf demo --out /tmp/demo --rounds 60
""",
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``taskclf`` command."""
    from taskclf import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Task-type labels and time segments from per-minute activity features.",
        epilog=_EPILOGS["main"],
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"taskclf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOGS[name],
            formatter_class=formatter,
        )
        _add_common(sub)
        return sub

    synth = command("synth", "write a synthetic labelled feature file")
    synth.add_argument("--out", required=True, metavar="FILE", help=".csv or .parquet file")
    synth.add_argument("--users", type=_positive_int, default=3, help="default 3")
    synth.add_argument("--days", type=_positive_int, default=2, help="default 2")
    synth.add_argument("--schema", choices=("v1", "v2", "v3"), default="v1", help="default v1")
    synth.add_argument("--seed", type=int, default=0, help="default 0")
    synth.set_defaults(handler=cmd_synth)

    def training_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--rounds", type=_positive_int, default=100, help="boosting rounds (default 100)"
        )
        sub.add_argument(
            "--calibration",
            choices=("identity", "temperature", "isotonic"),
            default="temperature",
            help="calibration fitted on out-of-fold probabilities (default temperature)",
        )
        sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        sub.add_argument(
            "--threads",
            type=_positive_int,
            default=None,
            help="LightGBM threads (default: LightGBM's choice, all cores)",
        )

    def save_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--pickle-free",
            action="store_true",
            help="write a pickle-free bundle directory instead of a bundle file",
        )

    train = command("train", "train a pipeline on labelled features and save it")
    train.add_argument("features", metavar="FEATURES", help="CSV/Parquet file or directory")
    train.add_argument("--out", required=True, metavar="BUNDLE", help="bundle file to write")
    training_options(train)
    train.add_argument("--learning-rate", type=float, default=None, help="LightGBM learning rate")
    train.add_argument("--num-leaves", type=_positive_int, default=None, help="LightGBM leaves")
    train.add_argument("--reject-threshold", type=_fraction, default=None, metavar="X")
    train.add_argument("--smooth-window", type=_positive_int, default=None, metavar="N")
    save_options(train)
    train.set_defaults(handler=cmd_train)

    infer = command("infer", "predict labels and segments for a feature file")
    infer.add_argument("features", metavar="FEATURES", help="CSV/Parquet file or directory")
    infer.add_argument("--bundle", required=True, help="bundle file or directory")
    infer.add_argument("--out", required=True, metavar="DIR", help="output directory")
    infer.add_argument("--sha256", default=None, help="expected SHA-256 of the bundle file")
    infer.add_argument("--reject-threshold", type=_fraction, default=None, metavar="X")
    infer.add_argument("--smooth-window", type=_positive_int, default=None, metavar="N")
    infer.add_argument("--taxonomy", default=None, metavar="YAML", help="map to your buckets")
    infer.add_argument(
        "--dask", default=None, metavar="local|ADDRESS", help="run on a Dask cluster"
    )
    infer.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes of --dask local (default: one per core)",
    )
    infer.set_defaults(handler=cmd_infer)

    tune = command("tune", "grid-search the reject threshold and smoothing window")
    tune.add_argument("features", metavar="FEATURES", help="labelled CSV/Parquet file or dir")
    source = tune.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="tune a saved bundle file or directory")
    source.add_argument(
        "--train",
        action="store_true",
        help="train a pipeline in each fold (and, for --out, on all rows)",
    )
    tune.add_argument("--sha256", default=None, help="expected SHA-256 of the bundle file")
    training_options(tune)
    tune.add_argument(
        "--thresholds",
        type=_number_list(_fraction_or_none),
        default=[0.3, 0.4, 0.5, 0.55, 0.6],
        help="comma-separated; 'none' rejects nothing (default 0.3,0.4,0.5,0.55,0.6)",
    )
    tune.add_argument(
        "--windows",
        type=_number_list(_positive_int),
        default=[1, 3, 5, 7],
        help="comma-separated (default 1,3,5,7)",
    )
    tune.add_argument(
        "--scoring",
        default="macro_f1",
        help="a name of taskclf.metrics.SCORERS (default macro_f1)",
    )
    tune.add_argument("--cv", type=_folds_count, default=3, help="folds, >= 2 (default 3)")
    tune.add_argument("--out", default=None, metavar="BUNDLE", help="save the tuned pipeline")
    save_options(tune)
    tune.set_defaults(handler=cmd_tune)

    inspect = command("inspect", "print a bundle's metadata without unpickling it")
    inspect.add_argument("bundle", metavar="BUNDLE", help="bundle file or directory")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=cmd_inspect)

    report = command("report", "summarize and draw the segments of an inference output")
    report.add_argument("predictions_dir", metavar="PREDICTIONS_DIR")
    report.add_argument("--out", required=True, metavar="DIR")
    report.set_defaults(handler=cmd_report)

    demo = command("demo", "run the whole flow on synthetic data")
    demo.add_argument(
        "--out", default=DEFAULT_DEMO_DIR, metavar="DIR", help="default ./taskclf-demo"
    )
    demo.add_argument("--users", type=_positive_int, default=4, help="default 4")
    demo.add_argument("--days", type=_positive_int, default=3, help="default 3")
    demo.add_argument("--rounds", type=_positive_int, default=40, help="default 40")
    demo.add_argument("--seed", type=int, default=0, help="default 0")
    demo.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="LightGBM threads (default 1: the demo's data are small)",
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def _format_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"{PROG}: warning: {message}\n"


_OPTIONAL = {
    "dask": "dask",
    "distributed": "dask",
    "pyarrow": "parquet",
    "matplotlib": "report",
    "tqdm": "progress",
}
"""Optional dependency → the extra that installs it."""


def _unexpected(where: str, exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    print(
        f"{where}: unexpected error: {type(exc).__name__}: {exc}\n"
        "this is a bug in taskclf; re-run with --debug to see the traceback",
        file=sys.stderr,
    )
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskclf`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(quiet=args.quiet)
    where = f"{PROG} {args.command}"
    original_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return int(args.handler(args, console))
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        message = (
            str(exc) if isinstance(exc, TaskclfError) else f"{exc.strerror or exc}: {exc.filename}"
        )
        print(f"{where}: error: {message}", file=sys.stderr)
        return 2
    except ImportError as exc:
        extra = _OPTIONAL.get((exc.name or "").split(".")[0])
        if extra is None:
            return _unexpected(where, exc, args.debug)
        print(
            f"{where}: error: {exc}; install it with: pip install 'taskclf[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        return _unexpected(where, exc, args.debug)
    finally:
        warnings.formatwarning = original_format


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
