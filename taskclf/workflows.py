"""File-level workflows: what the ``taskclf`` command does, as library functions.

The command line parses its arguments, calls these and prints what they
return (docs/cli.md). Bad input is refused before the expensive work.
"""

from __future__ import annotations

import os
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import pandas as pd
from sklearn.model_selection import PredefinedSplit
from sklearn.pipeline import Pipeline

from taskclf._columns import (
    BUCKET_START_TS,
    CONFIDENCE,
    IS_REJECTED,
    LABEL,
    MAPPED_LABEL,
    MAPPED_PROBA_PREFIX,
    PROBA_COLUMNS,
    SEGMENT_ID,
    TRUE_LABEL,
    USER_ID,
)
from taskclf._folds import group_folds
from taskclf._io import atomic_directory, check_replaceable
from taskclf._readers import (
    PREDICTIONS_FILE,
    SEGMENTS_FILE,
    read_features,
    write_predictions_csv,
    write_segments_json,
)
from taskclf.core.defaults import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_IDLE_GAP_SECONDS,
    DEFAULT_SMOOTH_WINDOW,
    MIN_BLOCK_DURATION_SECONDS,
)
from taskclf.exceptions import InputError, InvalidParameterError, MissingColumnsError
from taskclf.stages.segment import frame_to_segments

RUN_FILES: Final = (PREDICTIONS_FILE, SEGMENTS_FILE)
"""The files of one inference run, all that its directory holds."""
VIEWS: Final = ("core", "mapped")
"""What segments and reports count: the core labels, or a taxonomy's buckets."""
MODEL_SHA256: Final = "model_sha256"
"""Bundle metadata (``extra``) key of the digest of the booster's model text."""
TRAINING_DAYS: Final = "training_days"
"""Bundle metadata (``extra``) key of the digests of the training user-days."""
DEFAULT_WINDOWS: Final = (1, 3, 5, 7)
"""Majority windows :func:`tune` tries by default."""


def load_model(path: str | os.PathLike[str], *, sha256: str | None = None) -> Pipeline:
    """A pipeline from a bundle file (:func:`taskclf.load_bundle`) or directory.

    ``sha256`` pins files only: a directory's manifest carries its digests
    (InvalidParameterError).
    """
    from taskclf.bundle import load_bundle
    from taskclf.bundle_dir import load_bundle_dir

    if Path(path).is_dir():
        if sha256 is not None:
            raise InvalidParameterError(
                f"sha256 pins bundle files; {str(path)!r} is a bundle directory, whose "
                "manifest carries the digests of its files"
            )
        return load_bundle_dir(path)
    return load_bundle(path, sha256=sha256)


def read_rows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Feature rows of a file or directory; refused at once without ``bucket_start_ts``."""
    frame = read_features(path)
    if BUCKET_START_TS not in frame.columns:
        raise MissingColumnsError([BUCKET_START_TS], where=f"features {str(path)!r}")
    return frame


def read_labelled(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.Series]:
    """Features and the ``label`` column of labelled rows (see :func:`read_rows`).

    Raises
    ------
    InputError
        Without a ``label`` column, with an empty label, or without rows.
    """
    frame = read_rows(path)
    where = f"features {str(path)!r}"
    if LABEL not in frame.columns:
        raise InputError(
            f"{where}: training and tuning need a 'label' column with the true core "
            "label of each row (taskclf synth writes one)"
        )
    if len(frame) == 0:
        raise InputError(f"{where} hold no rows to learn from")
    empty = np.flatnonzero(frame[LABEL].isna().to_numpy())
    if len(empty):
        raise InputError(f"{where}: column 'label' is empty in row {int(empty[0])}")
    return frame.drop(columns=LABEL), frame[LABEL]


def _writable(path: Path) -> None:
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidParameterError(
            f"cannot write {str(path)!r}: directory {str(ancestor)!r} is not writable"
        )


def _is_run(directory: Path) -> bool:
    """Whether ``directory`` holds only the files of an earlier inference run."""
    entries = list(directory.iterdir())
    if any(p.name not in RUN_FILES or p.is_symlink() or not p.is_file() for p in entries):
        return False
    predictions = directory / PREDICTIONS_FILE
    if not predictions.exists():
        return True
    with open(predictions, "rb") as handle:
        return handle.read(len(BUCKET_START_TS) + 1) == f"{BUCKET_START_TS},".encode()


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuse an output directory neither absent, empty nor a run's, or not writable."""
    target = Path(path)
    check_replaceable(target, _is_run, "taskclf inference output")
    _writable(target)
    return target


def threshold_source(bundle: str | os.PathLike[str], given: float | None) -> str:
    """Where the reject threshold of a run comes from, in words."""
    if given is not None:
        return "given on the command line"
    if Path(bundle).is_dir():
        source = _info(bundle).metadata.extra.get("reject_threshold_source")
        if source:
            return str(source)
    return "saved in the bundle"


def _info(bundle: str | os.PathLike[str]) -> Any:
    """The ``BundleInfo`` or ``BundleDirInfo`` of a bundle, read without unpickling."""
    from taskclf.bundle import read_bundle_info
    from taskclf.bundle_dir import read_bundle_dir_info

    return (read_bundle_dir_info if Path(bundle).is_dir() else read_bundle_info)(bundle)


def check_output_file(path: str | os.PathLike[str], *, directory: bool = False) -> Path:
    """Refuse an output path of the wrong kind (a directory for a file) or not writable."""
    target = Path(path)
    if target.exists() and target.is_dir() != directory:
        kind = "a directory" if target.is_dir() else "a file"
        raise InvalidParameterError(f"cannot write {str(target)!r}: it is {kind}")
    if directory:  # refused now, not after training: someone else's directory stays theirs
        from taskclf.bundle_dir import is_bundle_dir

        check_replaceable(target, is_bundle_dir, "taskclf bundle directory")
    _writable(target)
    return target


def configure(
    pipeline: Pipeline,
    *,
    reject_threshold: float | None = None,
    smooth_window: int | None = None,
    smoother: str | None = None,
    taxonomy: str | os.PathLike[str] | None = None,
    calibrator_store: str | os.PathLike[str] | None = None,
    backend: str | None = None,
) -> Pipeline:
    """Override the post-processing of ``pipeline`` where an argument is given.

    Parameters
    ----------
    pipeline : Pipeline
        A taskclf pipeline (fitted or not); changed in place.
    smooth_window : int, optional
        The majority smoother's window; refused with ``smoother="viterbi"``.
    smoother : {"majority", "viterbi"}, optional
        Keeps the step's ``max_gap_seconds``, and a smoother of that kind.
    taxonomy, calibrator_store : path-like, optional
        A taxonomy YAML file (its buckets' step replaces any taxonomy step);
        a calibrator store directory (taskclf 0.4's layout) for the calibration.
    backend : {"lightgbm", "compiled"}, optional

    Returns
    -------
    Pipeline
        ``pipeline``, or a new one with its steps (new calibration, model or taxonomy).
    """
    if smoother is not None:  # a smoother of that kind already in place is kept
        from taskclf.pipeline import SMOOTHERS
        from taskclf.stages.smooth import MajoritySmoother
        from taskclf.stages.viterbi import ViterbiSmoother

        if smoother not in SMOOTHERS:
            raise InvalidParameterError(f"smoother must be one of {SMOOTHERS}, got {smoother!r}")
        current = pipeline.named_steps["smooth"]
        if smoother == "viterbi" and not isinstance(current, ViterbiSmoother):
            pipeline.set_params(
                smooth=ViterbiSmoother(
                    max_gap_seconds=current.max_gap_seconds, timelines=current.timelines
                )
            )
        elif smoother == "majority" and not isinstance(current, MajoritySmoother):
            window, gap = DEFAULT_SMOOTH_WINDOW, current.max_gap_seconds
            pipeline.set_params(smooth=MajoritySmoother(window, gap, current.timelines))
    if reject_threshold is not None:
        pipeline.set_params(reject__threshold=reject_threshold)
    if smooth_window is not None:
        if "window" not in pipeline.named_steps["smooth"].get_params():
            raise InvalidParameterError("smooth_window sets the majority smoother's window")
        pipeline.set_params(smooth__window=smooth_window)
    from sklearn.frozen import FrozenEstimator

    from taskclf.pipeline import TaskPipeline

    steps: dict[str, Any] = dict(pipeline.steps)
    if calibrator_store is not None:
        from taskclf.calibration import load_calibrator_store
        from taskclf.stages.calibrate import Calibrator

        store = load_calibrator_store(calibrator_store)
        steps["calibrate"] = FrozenEstimator(Calibrator.from_maps(store.global_calibrator, store))
    if backend is not None:
        model = steps["predict"]
        if isinstance(model, FrozenEstimator) or hasattr(model, "booster_"):
            from taskclf.stages.model import BoosterPredictor

            stage = getattr(model, "estimator", model)
            steps["predict"] = FrozenEstimator(
                BoosterPredictor.from_booster(
                    stage.booster_,
                    stage.schema_.version,
                    user_vocabulary=stage.user_vocabulary_,
                    backend=backend,
                )
            )
        else:
            model.set_params(backend=backend)
    if taxonomy is not None:
        from taskclf.taxonomy import TaxonomyMapper, load_taxonomy

        steps["taxonomy"] = TaxonomyMapper(load_taxonomy(taxonomy))
    if calibrator_store is None and backend is None and taxonomy is None:
        return pipeline
    return TaskPipeline(list(steps.items()))


def new_pipeline(
    *,
    rounds: int = 100,
    calibration: str = "temperature",
    seed: int = 0,
    threads: int | None = None,
    learning_rate: float | None = None,
    num_leaves: int | None = None,
    reject_threshold: float | None = None,
    smooth_window: int | None = None,
    smoother: str = "majority",
    per_user_calibration: bool = False,
    backend: str = "lightgbm",
) -> Pipeline:
    """An unfitted pipeline with the training options of ``taskclf train``."""
    from taskclf.pipeline import build_pipeline

    booster_params = {"learning_rate": learning_rate, "num_leaves": num_leaves}
    pipeline = build_pipeline(
        num_boost_round=rounds,
        calibration=calibration,
        random_state=seed,
        booster_params={k: v for k, v in booster_params.items() if v is not None} or None,
        reject_threshold=reject_threshold,
        num_threads=threads,
        per_user_calibration=per_user_calibration,
        smoother=smoother,
        backend=backend,
    )
    return configure(pipeline, smooth_window=smooth_window)


def train(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series) -> Pipeline:
    """Fit ``pipeline`` and record the training data's fingerprint in it."""
    from taskclf.bundle import record_training

    return record_training(pipeline.fit(X, y), X, y)


def training_days(X: pd.DataFrame) -> dict[str, list[str]]:
    """Bundle metadata naming the user-days ``X`` holds, by digest (see :func:`tune`)."""
    from taskclf.tune import day_fingerprints

    return {TRAINING_DAYS: sorted(day_fingerprints(X))}


def warn_if_trained_on(bundle: str | os.PathLike[str], X: pd.DataFrame) -> list[Any]:
    """Warn when the rows ``X`` include user-days the bundle trained on; return those.

    Scores on a model's own training rows are optimistic and hardly differ
    between candidates, so a search on them picks nothing useful.
    """
    from taskclf.tune import training_overlap

    recorded = _info(bundle).metadata.extra.get(TRAINING_DAYS)
    overlap = training_overlap(recorded, X)
    if overlap:
        shown = ", ".join(f"{user} {day}" for user, day in overlap[:3])
        warnings.warn(
            f"{len(overlap)} user-days of these rows trained {str(bundle)!r} ({shown}"
            f"{', ...' if len(overlap) > 3 else ''}): their scores are optimistic and do not "
            "show which candidate works on new data; tune on other users' or later days' "
            "labelled rows, or use --train to train a model in each fold",
            stacklevel=2,
        )
    return overlap


def save_model(
    pipeline: Pipeline,
    path: str | os.PathLike[str],
    *,
    pickle_free: bool = False,
    extra: dict[str, Any] | None = None,
) -> str | None:
    """Save a bundle file (returns its SHA-256) or a pickle-free directory (returns None)."""
    from taskclf.bundle import read_bundle_info, save_bundle
    from taskclf.bundle_dir import export_bundle_dir
    from taskclf.stages._compiled import model_sha256

    text = pipeline.named_steps["predict"].booster_.model_to_string()
    extra = {**(extra or {}), MODEL_SHA256: model_sha256(text)}
    if pickle_free:
        export_bundle_dir(pipeline, path, metadata=extra)
        return None
    save_bundle(pipeline, path, metadata=extra)
    return read_bundle_info(path).file_sha256


@attrs.frozen
class InferenceRun:
    """What :func:`infer_to_directory` published: where, and how many rows and segments."""

    directory: Path
    rows: int
    segments: int

    @property
    def files(self) -> tuple[Path, ...]:
        """``predictions.csv`` and ``segments.json`` in :attr:`directory`."""
        return tuple(self.directory / name for name in RUN_FILES)


def _widths(pipeline: Pipeline) -> dict[str, Any]:
    """The merge step's ``bucket_seconds``, ``min_block_seconds``, ``max_gap_seconds`` and
    ``timelines`` (the defaults for a pipeline without one)."""
    merge = pipeline.named_steps.get("merge")
    defaults = {
        "bucket_seconds": DEFAULT_BUCKET_SECONDS,
        "min_block_seconds": MIN_BLOCK_DURATION_SECONDS,
        "max_gap_seconds": DEFAULT_IDLE_GAP_SECONDS,
        "timelines": "per_user",
    }
    return {name: getattr(merge, name, value) for name, value in defaults.items()}


def run_columns(columns: Sequence[str]) -> list[str]:
    """The columns of a transformed frame that :func:`infer_to_directory` writes."""
    wanted = [BUCKET_START_TS, USER_ID, LABEL, CONFIDENCE, IS_REJECTED, MAPPED_LABEL]
    return [c for c in [*wanted, *PROBA_COLUMNS, SEGMENT_ID] if c in columns]


def infer_to_directory(
    pipeline: Pipeline,
    features: Any,
    out_dir: str | os.PathLike[str],
    *,
    transform: Callable[[Any], pd.DataFrame] | None = None,
    view: str = "core",
    mapped_probs: bool = False,
) -> InferenceRun:
    """Transform ``features``; publish ``predictions.csv`` and ``segments.json`` together.

    ``out_dir`` must be absent, empty or an earlier run's output
    (:func:`check_output_dir`); it is replaced as one unit
    (``taskclf._io.atomic_directory``): a reader sees the old run or the new
    one, and an error, Ctrl-C or SIGTERM leaves the old output. A ``label``
    column of a features frame is not given to the pipeline: it is written
    as ``true_label``.

    Parameters
    ----------
    pipeline : Pipeline
        A fitted taskclf pipeline.
    transform : callable, optional
        Turns ``features`` into the transformed pandas frame; by default
        ``pipeline.transform``.
    view : {"core", "mapped"}, default "core"
        Segments of the core labels, or of the taxonomy's buckets.
    mapped_probs : bool, default False
        Also write each bucket's probability as a ``mapped_proba_<bucket>``
        column (4 decimals).
    """
    if view not in VIEWS:
        raise InvalidParameterError(f"view must be one of {VIEWS}, got {view!r}")
    if (view == "mapped" or mapped_probs) and "taxonomy" not in pipeline.named_steps:
        raise InvalidParameterError("buckets need a taxonomy: give one with --taxonomy")
    target = check_output_dir(out_dir)
    truth = None
    if isinstance(features, pd.DataFrame) and LABEL in features.columns:
        truth, features = features[LABEL].astype(str), features.drop(columns=LABEL)
    with atomic_directory(target, _is_run, "taskclf inference output") as staging:
        out = (transform or pipeline.transform)(features)
        label = MAPPED_LABEL if view == "mapped" else LABEL
        widths = _widths(pipeline)
        segments = frame_to_segments(
            out,
            bucket_seconds=widths["bucket_seconds"],
            label_column=label,
            timelines=widths["timelines"],
        )
        mapped = out[MAPPED_LABEL].astype(str).tolist() if MAPPED_LABEL in out else None
        extra = {} if truth is None else {TRUE_LABEL: truth.to_numpy()}
        if mapped_probs:
            names = [c for c in out.columns if str(c).startswith(MAPPED_PROBA_PREFIX)]
            extra.update({c: out[c].to_numpy(dtype=np.float64).round(4) for c in names})
        write_predictions_csv(
            out,
            out[LABEL].astype(str).tolist(),
            staging / PREDICTIONS_FILE,
            confidences=out[CONFIDENCE].to_numpy(),
            is_rejected=out[IS_REJECTED].to_numpy(),
            mapped_labels=mapped,
            core_probs=out[list(PROBA_COLUMNS)].to_numpy(),
            include_user_id=True,
            extra_columns=extra,
        )
        write_segments_json(segments, staging / SEGMENTS_FILE)
    return InferenceRun(target, len(out), len(segments))


@attrs.frozen
class Tuned:
    """What :func:`tune` found.

    ``table`` has one row per candidate, best first: its parameters,
    ``mean_score``, ``std_score`` and ``rank``. ``pipeline`` is the given one
    with ``best_params`` set, or (``retrain``) the best candidate refitted on
    all rows.
    """

    table: pd.DataFrame
    best_params: dict[str, Any]
    best_score: float
    pipeline: Pipeline


def tune(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    thresholds: Sequence[float | None],
    windows: Sequence[int] | None = None,
    scoring: str = "macro_f1",
    n_folds: int = 3,
    retrain: bool = False,
) -> Tuned:
    """Grid-search the reject threshold (and the majority window) on labelled rows.

    With :class:`taskclf.tune.PostprocessingSearchCV` over folds grouped
    by user (or day; :func:`taskclf._folds.group_folds`). A progress step
    advances once per candidate and fold.

    Parameters
    ----------
    pipeline : Pipeline
        Fitted (a saved model, whose model steps stay frozen:
        :func:`taskclf.pipeline.freeze`), or unfitted with ``retrain``
        (each fold trains its own model).
    thresholds : sequence of float or None
        Reject thresholds to try (``None`` rejects nothing).
    windows : sequence of int, optional
        Majority smoothing windows to try (default :data:`DEFAULT_WINDOWS`);
        refused when the pipeline smooths by Viterbi decoding.
    scoring : str
        A name of :data:`taskclf.metrics.SCORERS`.
    """
    from taskclf.bundle import record_training
    from taskclf.metrics import get_scorer
    from taskclf.pipeline import freeze
    from taskclf.tune import PostprocessingSearchCV

    scorer = get_scorer(scoring)
    grid: dict[str, Sequence[Any]] = {"reject__threshold": list(thresholds)}
    if "window" in pipeline.named_steps["smooth"].get_params():
        grid["smooth__window"] = list(windows or DEFAULT_WINDOWS)
    elif windows:
        raise InvalidParameterError("windows tune the majority smoother; this one is Viterbi's")
    folds = group_folds(X, n_folds)
    candidate = pipeline if retrain else freeze(pipeline)
    search = PostprocessingSearchCV(
        candidate, grid, scoring=scorer, cv=PredefinedSplit(folds), refit=retrain
    ).fit(X, y)
    results = pd.DataFrame(search.cv_results_)
    names = {f"param_{key}": key.replace("__", "_") for key in grid}
    names.update(mean_test_score="mean_score", std_test_score="std_score", rank_test_score="rank")
    table = results[list(names)].rename(columns=names)
    table = table.sort_values(["rank", *list(names.values())[:1]], kind="stable")
    best = {k: v.item() if isinstance(v, np.generic) else v for k, v in search.best_params_.items()}
    tuned = (
        record_training(search.best_estimator_, X, y) if retrain else pipeline.set_params(**best)
    )
    return Tuned(table.reset_index(drop=True), best, float(search.best_score_), tuned)


def bundle_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A bundle's metadata, read without unpickling anything: kind, digests, metadata."""
    from taskclf.stages._compiled import is_cached

    path, info = Path(path), _info(path)
    if path.is_dir():
        kind = "taskclf 0.4 model directory" if info.legacy else "bundle directory"
        facts = {"path": str(path), "kind": kind, "files": info.files}
    else:
        facts = {"path": str(path), "kind": f"bundle file (format {info.format_version})"}
        facts |= {k: getattr(info, k) for k in ("file_sha256", "payload_sha256", "payload_bytes")}
    facts |= info.metadata.to_dict()
    digest = (facts.get("extra") or {}).get(MODEL_SHA256)
    cached = None if digest is None else is_cached(str(digest))
    facts["compiled_model"] = {
        None: "unknown (saved without its model digest, or the fast extra is not installed)",
        True: "cached: --backend compiled predicts at once",
        False: "not cached: --backend compiled compiles it at first use",
    }[cached]
    return facts


def demo(
    out: str | os.PathLike[str],
    *,
    users: int = 4,
    days: int = 3,
    rounds: int = 40,
    seed: int = 0,
    threads: int | None = 1,
    say: Callable[[str], None] = print,
) -> None:
    """The whole flow on synthetic data under ``out``, telling ``say`` every step and path."""
    from taskclf._readers import write_features
    from taskclf.report import write_report
    from taskclf.synth import make_activity_frame

    started = time.perf_counter()
    out = Path(out)
    say(f"taskclf demo -> {out}/")
    say(f"1. synthetic data: {users} users x {days} days to train on, 1 more day of 2 users")
    labelled = make_activity_frame(n_users=users, n_days=days, random_state=seed)
    next_day = (labelled[BUCKET_START_TS].max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    test = make_activity_frame(n_users=2, n_days=1, start=next_day, random_state=seed + 1)
    for name, frame in (("train.csv", labelled), ("new-day.csv", test)):
        say(f"   {write_features(frame, out / 'features' / name)} ({len(frame)} rows)")

    say(f"2. training ({rounds} rounds) ...")
    X, y = read_labelled(out / "features" / "train.csv")
    pipeline = new_pipeline(rounds=rounds, seed=seed, threads=threads, reject_threshold=0.4)
    train(pipeline, X, y)
    bundle = out / "model.taskclf"
    extra = {"demo": True, **training_days(X)}
    digest = save_model(pipeline, bundle, extra=extra)
    save_model(pipeline, out / "model", pickle_free=True, extra=extra)
    say(f"   {bundle} (sha256 {(digest or '')[:16]}...)")
    say(f"   {out / 'model'}/ (the same model, pickle-free)")

    say("3. inference on the new day ...")
    run = infer_to_directory(
        load_model(bundle, sha256=digest),
        read_rows(out / "features" / "new-day.csv"),
        out / "predictions",
    )
    table = pd.read_csv(run.files[0])
    accuracy = table["predicted_label"].eq(table[TRUE_LABEL]).mean()
    say("\n".join(f"   {path}" for path in run.files))
    say(f"   {run.rows} rows -> {run.segments} segments; {accuracy:.1%} match the true labels")
    say(f"   (the file's predicted_label against its {TRUE_LABEL}, from the features' label)")

    say("4. report ...")
    written = write_report(run.directory, out / "report")
    say(textwrap.indent(written.summary.to_string(index=False), "   "))
    say("\n".join(f"   {path}" for path in written.files))

    say("5. evaluation of the new day against its labels ...")
    X_new, y_new = read_labelled(out / "features" / "new-day.csv")
    pooled = evaluate_to_directory(load_model(bundle), X_new, y_new, out / "evaluation")["pooled"]
    say("   " + ", ".join(f"{key} {pooled[key]:.3f}" for key in HEADLINE))
    say(f"   {out / 'evaluation'}/ (evaluation.json, per_user.csv, pictures)")
    say(f"done in {time.perf_counter() - started:.1f} s. Next: taskclf inspect {bundle}")


EVALUATION_FILES: Final = ("evaluation.json", "per_user.csv", "confusion.png",
                           "reliability.png", "coverage.png")  # fmt: skip
HEADLINE: Final = ("accuracy", "macro_f1", "segmental_f1@50", "edit_score", "flap_rate")


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """The final labels' figures at the top, beside the probability figures."""
    label = result["label"]
    top = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    return {**top, **{k: v for k, v in label.items() if not isinstance(v, dict)}, **result}


def evaluate_to_directory(
    pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Evaluate ``pipeline`` on labelled rows; publish the figures and pictures together.

    Returns what ``evaluation.json`` holds: ``pooled`` and ``per_user``, the
    final labels' figures at the top level of each, the raw labels' under
    ``raw_label``. ``per_user.csv`` and three pictures (confusion matrix,
    reliability diagram, coverage-accuracy curve) go beside it.
    """
    import json

    from taskclf.metrics import evaluate
    from taskclf.report import draw_evaluation

    target = Path(out_dir)
    check_replaceable(target, _is_evaluation, "taskclf evaluation")
    widths = _widths(pipeline)
    del widths["timelines"]  # evaluate finds timelines per user
    result = evaluate(pipeline.transform(X), y, **widths)
    report = {
        "pooled": _headline(result["pooled"]),
        "per_user": {str(u): _headline(r) for u, r in result["per_user"].items()},
    }
    table = pd.DataFrame(
        [{"user_id": u, **{k: r[k] for k in ("rows", *HEADLINE, "ece", "reject_rate")}}
         for u, r in report["per_user"].items()]
    )  # fmt: skip
    with atomic_directory(target, _is_evaluation, "taskclf evaluation") as staging:
        (staging / "evaluation.json").write_text(json.dumps(report, indent=1, default=str))
        table.to_csv(staging / "per_user.csv", index=False)
        draw_evaluation(report["pooled"], staging)
    return report


def _is_evaluation(directory: Path) -> bool:
    return {p.name for p in directory.iterdir()} <= set(EVALUATION_FILES)
