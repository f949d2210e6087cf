"""The ``taskclf`` command: synthetic data, training, inference, tuning, reports.

It parses arguments, calls library functions (mostly
:mod:`taskclf.workflows`) and prints. Exit codes: 0 on success, 2 on bad
input or usage (a one-line message naming the problem, no traceback), 1 on
an unexpected failure (a bug: ``--debug`` shows the traceback), 130 when
interrupted (Ctrl-C or SIGTERM during a write). Libraries are imported
inside the commands, so ``taskclf --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

import typer

PROG = "taskclf"
_EXTRAS = {"dask": "dask", "distributed": "dask", "pyarrow": "parquet", "matplotlib": "report"}
"""Optional dependency → the extra that installs it."""

app = typer.Typer(
    name=PROG,
    epilog=(
        "Examples:\n\ntaskclf demo (everything, end to end, in ./taskclf-demo)\n\n"
        "taskclf train features.csv --out model.taskclf\n\n"
        "taskclf infer new.csv --bundle model.taskclf --out predictions/\n\n"
        "taskclf report predictions/ --out report/\n\n"
        "Exit codes: 0 success, 2 bad input or usage, 1 unexpected failure (a bug)."
    ),
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich would double the time --help takes
    context_settings={"help_option_names": ["-h", "--help"]},
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")]
Features = Annotated[
    Path, typer.Argument(metavar="FEATURES", help="CSV or Parquet file, or a directory of them.")
]
Bundle = Annotated[Path, typer.Option(help="Bundle file or directory.")]
Sha256 = Annotated[str | None, typer.Option(help="Expected SHA-256 of the bundle file.")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
Rounds = Annotated[int, typer.Option(min=1, help="Boosting rounds.")]
Threads = Annotated[int | None, typer.Option(min=1, help="LightGBM threads (default: all cores).")]
Calibration = Annotated[
    Literal["identity", "temperature", "isotonic"],
    typer.Option(help="Calibration fitted on out-of-fold probabilities."),
]
Threshold = Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Reject threshold.")]
Window = Annotated[int | None, typer.Option(min=1, help="Majority smoothing window.")]
Smoother = Annotated[
    Literal["majority", "viterbi"],
    typer.Option(help="Smoothing: rolling majority, or Viterbi decoding of the probabilities."),
]
KeptSmoother = Annotated[
    Literal["majority", "viterbi"] | None,
    typer.Option(help="Smoothing: majority or viterbi (default: the model's)."),
]
Backend = Annotated[
    Literal["lightgbm", "compiled"],
    typer.Option(help="What predicts: LightGBM, or the model compiled (the fast extra)."),
]
KeptBackend = Annotated[
    Literal["lightgbm", "compiled"] | None,
    typer.Option(help="What predicts: lightgbm or compiled (default: the model's)."),
]
View = Annotated[
    Literal["core", "mapped"],
    typer.Option(help="Segments of the core labels, or of the taxonomy's buckets."),
]
PickleFree = Annotated[
    bool,
    typer.Option("--pickle-free", help="Write a pickle-free bundle directory, not a file."),
]


def _print_version(value: bool) -> None:
    if value:
        from taskclf import __version__

        print(f"taskclf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Task-type labels and time segments from per-minute activity features."""
    if ctx.invoked_subcommand is None:  # `taskclf` alone: the overview, exit 0
        print(ctx.get_help())
        raise typer.Exit()


@contextlib.contextmanager
def _progress_bars(quiet: bool) -> Iterator[None]:
    """Draw the library's progress steps as rich bars, on a terminal only."""
    if quiet or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from taskclf._progress import listening

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # printed lines go above the bars on a terminal, and as they are into a pipe or file
    redirect = sys.stdout.isatty()
    with Progress(
        *columns, console=Console(stderr=True), transient=True, redirect_stdout=redirect
    ) as bars:

        def bar(description: str, total: int) -> Any:
            task = bars.add_task(description, total=total)
            return SimpleNamespace(
                advance=lambda amount=1: bars.advance(task, amount),
                close=lambda: bars.remove_task(task),
            )

        with listening(bar):
            yield


def _fail(message: str, code: int) -> typer.Exit:
    print(message, file=sys.stderr)
    return typer.Exit(code)


@contextlib.contextmanager
def _session(command: str, quiet: bool, debug: bool) -> Iterator[None]:
    """Run a command's body: progress bars, warnings and errors as exit codes."""
    where = f"{PROG} {command}"

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        print(f"{where}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings(), _progress_bars(quiet):
            warnings.showwarning = show
            yield
    except KeyboardInterrupt:
        raise _fail(f"{where}: interrupted", 130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        raise _exit_for(where, exc, debug) from None


def _exit_for(where: str, exc: Exception, debug: bool) -> typer.Exit:
    """Report ``exc``: bad input (exit 2, one line) or a bug (exit 1)."""
    from taskclf.exceptions import TaskclfError

    if isinstance(exc, (TaskclfError, OSError)):
        message = str(exc)
        if not isinstance(exc, TaskclfError) and exc.filename:
            message = f"{exc.strerror or exc}: {exc.filename}"
        return _fail(f"{where}: error: {message}", 2)
    extra = _EXTRAS.get((getattr(exc, "name", None) or "").split(".")[0])
    if isinstance(exc, ImportError) and extra is not None:
        return _fail(f'{where}: error: {exc}; install it with: pip install ".[{extra}]"', 2)
    if debug:
        traceback.print_exception(exc)
    return _fail(
        f"{where}: unexpected error: {type(exc).__name__}: {exc}\n"
        "this is a bug in taskclf; re-run with --debug to see the traceback",
        1,
    )


def _numbers(option: str, text: str, parse: Any) -> list[Any]:
    """The comma-separated values of ``option``; ``parse`` raises ValueError on a bad one."""
    from taskclf.exceptions import InvalidParameterError

    try:
        return [parse(part.strip().lower()) for part in text.split(",")]
    except ValueError:
        raise InvalidParameterError(f"{option}: cannot use {text!r}") from None


def _threshold(text: str) -> float | None:
    if text != "none" and not 0.0 <= float(text) <= 1.0:
        raise ValueError(text)
    return None if text == "none" else float(text)


def _window(text: str) -> int:
    if int(text) < 1:
        raise ValueError(text)
    return int(text)


@app.command(
    epilog="Examples:\n\ntaskclf synth --out features.csv\n\n"
    "taskclf synth --out features.parquet --users 10 --days 5 --schema v2 --seed 7"
)
def synth(
    out: Annotated[Path, typer.Option(metavar="FILE", help=".csv or .parquet file to write.")],
    users: Annotated[int, typer.Option(min=1, help="Users.")] = 3,
    days: Annotated[int, typer.Option(min=1, help="Days per user.")] = 2,
    schema: Annotated[Literal["v1", "v2", "v3"], typer.Option(help="Feature schema.")] = "v1",
    seed: Seed = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write a synthetic labelled feature file (a 'label' column holds the truth)."""
    with _session("synth", quiet, debug):
        from taskclf._readers import write_features
        from taskclf.synth import make_activity_frame

        frame = make_activity_frame(
            n_users=users, n_days=days, schema_version=schema, random_state=seed
        )
        write_features(frame, out)
        shape = f"{users} users x {days} days, schema {schema}"
        print(f"wrote {len(frame)} labelled rows ({shape}) to {out}")


@app.command(
    epilog="Examples:\n\ntaskclf train features.csv --out model.taskclf\n\n"
    "taskclf train data/ --out model.taskclf --rounds 200 --calibration isotonic\n\n"
    "taskclf train features.csv --out model/ --pickle-free --smoother viterbi"
)
def train(
    features: Features,
    out: Annotated[
        Path, typer.Option(metavar="BUNDLE", help="Bundle file (directory with --pickle-free).")
    ],
    rounds: Rounds = 100,
    calibration: Calibration = "temperature",
    learning_rate: Annotated[
        float | None, typer.Option(min=0.0, help="LightGBM learning rate (default 0.05).")
    ] = None,
    num_leaves: Annotated[
        int | None, typer.Option(min=2, help="LightGBM leaves per tree (default 31).")
    ] = None,
    reject_threshold: Threshold = None,
    smooth_window: Window = None,
    smoother: Smoother = "majority",
    seed: Seed = 0,
    threads: Threads = None,
    pickle_free: PickleFree = False,
    per_user_calibration: Annotated[
        bool, typer.Option(help="Also calibrate each user with enough labelled days.")
    ] = False,
    calibrator_store_out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Also write the calibrator store in taskclf 0.4's layout."
        ),
    ] = None,
    backend: Backend = "lightgbm",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a pipeline on labelled features and save it; prints the file's SHA-256."""
    with _session("train", quiet, debug):
        from taskclf import workflows

        workflows.check_output_file(out, directory=pickle_free)
        X, y = workflows.read_labelled(features)
        pipeline = workflows.new_pipeline(
            rounds=rounds,
            calibration=calibration,
            seed=seed,
            threads=threads,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            reject_threshold=reject_threshold,
            smooth_window=smooth_window,
            smoother=smoother,
            per_user_calibration=per_user_calibration,
            backend=backend,
        )
        print(f"training on {len(X)} rows ({rounds} rounds) ...")
        started = time.perf_counter()
        workflows.train(pipeline, X, y)
        if backend == "compiled":  # compile now, so that the first prediction is fast
            from taskclf.stages._compiled import compiled_model

            compiled_model(pipeline.named_steps["predict"].booster_)
        extra = {"trained_on": str(features), "rows": len(X), **workflows.training_days(X)}
        digest = workflows.save_model(pipeline, out, pickle_free=pickle_free, extra=extra)
        print(f"trained in {time.perf_counter() - started:.1f} s; saved {out}")
        stage = pipeline.named_steps["calibrate"]
        if math.isfinite(getattr(stage, "accuracy_", math.nan)):
            print(f"out of fold: accuracy {stage.accuracy_:.3f}, macro-F1 {stage.macro_f1_:.3f} "
                  "(top class, before rejection and smoothing)")  # fmt: skip
        if digest:
            print(f"sha256 {digest}")
        if calibrator_store_out is not None:
            from taskclf.calibration import CalibratorStore, save_calibrator_store

            stage = pipeline.named_steps["calibrate"]
            store = stage.store_ or CalibratorStore(stage.calibrator_, method=stage.method)
            print(f"wrote {save_calibrator_store(store, calibrator_store_out)}")


@app.command(
    epilog="Writes DIR/predictions.csv and DIR/segments.json together. Loading a bundle "
    "file unpickles it, which runs code: load only files you trust, pin them with --sha256, "
    "or use pickle-free bundle directories.\n\n"
    "Examples:\n\ntaskclf infer new.csv --bundle model.taskclf --out predictions/\n\n"
    "taskclf infer new.csv --bundle model/ --out out/ --taxonomy buckets.yaml\n\n"
    "taskclf infer parquet-dir/ --bundle model.taskclf --out out/ --dask local --workers 2"
)
def infer(
    features: Features,
    bundle: Bundle,
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Output directory: new, empty or a former run's.")
    ],
    sha256: Sha256 = None,
    reject_threshold: Threshold = None,
    smooth_window: Window = None,
    smoother: KeptSmoother = None,
    taxonomy: Annotated[
        Path | None, typer.Option(metavar="YAML", help="Map the labels to your buckets.")
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(metavar="local|ADDRESS", help="Run on Dask (FEATURES: Parquet files)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Workers of --dask local (default: one per core).")
    ] = None,
    calibrator_store: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Calibrate with this store (taskclf 0.4's layout)."),
    ] = None,
    backend: KeptBackend = None,
    view: View = "core",
    mapped_probs: Annotated[
        bool,
        typer.Option("--mapped-probs", help="Also write each bucket's probability (--taxonomy)."),
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Predict labels and segments for feature rows."""
    with _session("infer", quiet, debug):
        from taskclf import workflows
        from taskclf.exceptions import InvalidParameterError

        workflows.check_output_dir(out)
        pipeline = workflows.configure(
            workflows.load_model(bundle, sha256=sha256),
            reject_threshold=reject_threshold,
            smooth_window=smooth_window,
            smoother=smoother,
            taxonomy=taxonomy,
            calibrator_store=calibrator_store,
            backend=backend,
        )
        threshold = pipeline.get_params().get("reject__threshold")
        source = workflows.threshold_source(bundle, reject_threshold)
        print(f"reject threshold {threshold} ({source})")
        if dask is not None:
            from taskclf.distributed import infer_parquet_dir

            if view != "core" or mapped_probs:
                raise InvalidParameterError("--view mapped and --mapped-probs run without --dask")

            print(f"running on Dask ({dask}) ...")
            run = infer_parquet_dir(pipeline, features, out, address=dask, n_workers=workers)
        else:
            rows = workflows.read_rows(features)
            run = workflows.infer_to_directory(
                pipeline, rows, out, view=view, mapped_probs=mapped_probs
            )
        print(f"{run.rows} rows -> {run.segments} segments")
        for path in run.files:
            print(f"wrote {path}")


@app.command(
    epilog="With --bundle the saved model stays frozen and only its post-processing is "
    "tuned; with --train each fold trains its own model. Folds are grouped by user.\n\n"
    "Examples:\n\ntaskclf tune labelled.csv --bundle model.taskclf --out tuned.taskclf\n\n"
    "taskclf tune labelled.csv --train --rounds 50 --thresholds none,0.3,0.5 --windows 1,5"
)
def tune(
    features: Features,
    bundle: Annotated[
        Path | None, typer.Option(help="Tune a saved bundle file or directory.")
    ] = None,
    train: Annotated[
        bool, typer.Option("--train", help="Train a pipeline in each fold instead.")
    ] = False,
    sha256: Sha256 = None,
    thresholds: Annotated[
        str, typer.Option(help="Reject thresholds, comma-separated; 'none' rejects nothing.")
    ] = "0.3,0.4,0.5,0.55,0.6",
    windows: Annotated[
        str | None, typer.Option(help="Majority windows, comma-separated (default 1,3,5,7).")
    ] = None,
    scoring: Annotated[str, typer.Option(help="A name of taskclf.metrics.SCORERS.")] = "macro_f1",
    cv: Annotated[int, typer.Option(min=2, help="Folds.")] = 3,
    smoother: KeptSmoother = None,
    out: Annotated[
        Path | None, typer.Option(metavar="BUNDLE", help="Save the tuned pipeline.")
    ] = None,
    pickle_free: PickleFree = False,
    rounds: Rounds = 100,
    calibration: Calibration = "temperature",
    seed: Seed = 0,
    threads: Threads = None,
    backend: KeptBackend = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Grid-search the reject threshold and smoothing window on labelled features."""
    with _session("tune", quiet, debug):
        from taskclf import workflows
        from taskclf.exceptions import InvalidParameterError

        if (bundle is None) == (not train):
            raise InvalidParameterError("give either --bundle or --train")
        grid = _numbers("--thresholds", thresholds, _threshold)
        tried = None if windows is None else _numbers("--windows", windows, _window)
        if out is not None:
            workflows.check_output_file(out, directory=pickle_free)
        if bundle is not None:
            pipeline = workflows.load_model(bundle, sha256=sha256)
        else:
            pipeline = workflows.new_pipeline(
                rounds=rounds, calibration=calibration, seed=seed, threads=threads
            )
        pipeline = workflows.configure(pipeline, smoother=smoother, backend=backend)
        X, y = workflows.read_labelled(features)
        if bundle is not None:
            workflows.warn_if_trained_on(bundle, X)
        print(f"searching on {len(X)} rows, {cv} folds ...")
        tuned = workflows.tune(
            pipeline, X, y, thresholds=grid, windows=tried, scoring=scoring, n_folds=cv,
            retrain=train,
        )  # fmt: skip
        print(tuned.table.round(4).to_string(index=False))
        print(f"best: {json.dumps(tuned.best_params)} ({scoring} {tuned.best_score:.4f})")
        if out is not None:
            extra = {"tuned_on": str(features), "best_params": tuned.best_params}
            if train:
                extra.update(workflows.training_days(X))
            digest = workflows.save_model(tuned.pipeline, out, pickle_free=pickle_free, extra=extra)
            print(f"saved {out}" + (f"\nsha256 {digest}" if digest else ""))


@app.command(epilog="Examples:\n\ntaskclf schema v1\n\ntaskclf schema v3 --markdown")
def schema(
    version: Annotated[
        Literal["v1", "v2", "v3"], typer.Argument(help="Feature schema version.")
    ] = "v1",
    markdown: Annotated[bool, typer.Option(help="Print the docs page (every schema).")] = False,
) -> None:
    """Print the columns of a feature schema: type, role, meaning and unit."""
    with _session("schema", True, False):
        from taskclf.core.schema import describe_schema, schema_markdown

        print(schema_markdown() if markdown else describe_schema(version).to_string(index=False))


@app.command(
    epilog="Examples:\n\ntaskclf validate features.csv\n\ntaskclf validate data/ --schema v3"
)
def validate(
    features: Features,
    schema_version: Annotated[
        str | None, typer.Option("--schema", help="Schema to check against (default: the file's).")
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Check feature rows against their schema and report every problem at once (no model)."""
    with _session("validate", quiet, debug):
        from taskclf import workflows
        from taskclf.core.schema import validate_features

        problems = validate_features(workflows.read_rows(features), schema_version)
        for problem in problems:
            print(f"- {problem}")
        if problems:
            raise _fail(f"{features}: {len(problems)} problem(s)", 2)
        print(f"{features}: no problem found")


@app.command(
    epilog="Writes DIR/evaluation.json, DIR/per_user.csv and pictures together.\n\n"
    "Examples:\n\ntaskclf evaluate model.taskclf labelled.csv --out evaluation/\n\n"
    "taskclf evaluate model/ labelled.csv --out eval/ --fail-under macro_f1=0.6"
)
def evaluate(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle file or directory.")],
    features: Annotated[
        Path, typer.Argument(metavar="LABELLED_FEATURES", help="Features with a label column.")
    ],
    out: Annotated[Path, typer.Option(metavar="DIR", help="Output directory.")],
    fail_under: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Exit 1 when a pooled figure is below VALUE."),
    ] = None,
    sha256: Sha256 = None,
    backend: KeptBackend = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Measure a model on labelled rows: per row, per segment, pooled and per user."""
    with _session("evaluate", quiet, debug):
        from taskclf import workflows

        gates = {}
        for item in fail_under or []:
            key, _, value = item.partition("=")
            gates[key] = _numbers("--fail-under", value, float)[0]
        pipeline = workflows.configure(workflows.load_model(bundle, sha256=sha256), backend=backend)
        X, y = workflows.read_labelled(features)
        pooled = workflows.evaluate_to_directory(pipeline, X, y, out)["pooled"]
        for key in (*workflows.HEADLINE, "ece", "reject_rate", "accepted_accuracy"):
            print(f"{key:>18}  {pooled[key]:.4f}")
        print(f"wrote {out}")
        unknown = [key for key in gates if key not in pooled]
        if unknown:
            raise _fail(f"--fail-under: no pooled figure named {unknown[0]!r}", 2)
        below = [f"{k} {pooled[k]:.4f} < {v}" for k, v in gates.items() if not pooled[k] >= v]
        if below:
            raise _fail("below the bar: " + "; ".join(below), 1)


@app.command(
    epilog="Feature rows come as JSON lines on standard input; final rows and segments go "
    "out as JSON lines as soon as no later row can change them. SIGTERM or Ctrl-C saves "
    "the state (with --state) and exits cleanly; run again with the rest of the input.\n\n"
    "Examples:\n\ntracker | taskclf stream --bundle model/ --state live.state\n\n"
    "taskclf stream --bundle model.taskclf --provisional < rows.jsonl"
)
def stream(
    bundle: Bundle,
    state: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Resume from and save the stream here.")
    ] = None,
    provisional: Annotated[
        bool, typer.Option(help="Also write each row's label as if the stream ended now.")
    ] = False,
    sha256: Sha256 = None,
    backend: KeptBackend = None,
    debug: Debug = False,
) -> None:
    """Label a live feed of feature rows; results equal batch inference on all rows."""
    with _session("stream", True, debug):
        from taskclf import workflows
        from taskclf.stream import run_stream

        pipeline = workflows.configure(workflows.load_model(bundle, sha256=sha256), backend=backend)

        def write(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        if not run_stream(pipeline, sys.stdin, write, state_path=state, provisional=provisional):
            raise _fail("taskclf stream: stopped; the state is saved", 0)


@app.command(epilog="Examples:\n\ntaskclf inspect model.taskclf\n\ntaskclf inspect model/ --json")
def inspect(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle file or directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Print a bundle's metadata without unpickling anything."""
    with _session("inspect", quiet, debug):
        from taskclf.workflows import bundle_facts

        facts = bundle_facts(bundle)
        if as_json:
            print(json.dumps(facts, indent=2, sort_keys=True))
            return
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            if isinstance(value, dict) and value:
                print(f"{key}:")
                for sub_key, sub_value in value.items():
                    print(f"  {sub_key}: {json.dumps(sub_value)}")
            else:
                shown = ", ".join(value) if isinstance(value, list) else value
                print(f"{key.ljust(width)}  {shown}")


@app.command(
    epilog="Writes summary.csv, per_user.csv, per_day.csv and timeline.png together.\n\n"
    "Examples:\n\ntaskclf report predictions/ --out report/\n\n"
    "taskclf report predictions/ --out report/ --view mapped"
)
def report(
    predictions_dir: Annotated[
        Path, typer.Argument(metavar="PREDICTIONS_DIR", help="Output of taskclf infer.")
    ],
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Directory for the tables and pictures.")
    ],
    view: View = "core",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Tables per user and day, and timeline pictures, of an inference output."""
    with _session("report", quiet, debug):
        from taskclf.report import write_report

        written = write_report(predictions_dir, out, view=view)
        print("time per label:")
        print(textwrap.indent(written.summary.to_string(index=False), "  "))
        print("per user and day:")
        columns = [c for c in written.per_day.columns if not c.startswith(("minutes_", "share_"))]
        print(textwrap.indent(written.per_day[columns].to_string(index=False), "  "))
        for path in written.files:
            print(f"wrote {path}")


@app.command(epilog="Examples:\n\ntaskclf demo\n\ntaskclf demo --out /tmp/demo --rounds 60")
def demo(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where the files go.")] = Path(
        "taskclf-demo"
    ),
    users: Annotated[int, typer.Option(min=1, help="Users to train on.")] = 4,
    days: Annotated[int, typer.Option(min=1, help="Days per user.")] = 3,
    rounds: Rounds = 40,
    seed: Seed = 0,
    threads: Annotated[int, typer.Option(min=1, help="LightGBM threads.")] = 1,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Run the whole flow on synthetic data: train, save, predict a new day, report."""
    with _session("demo", quiet, debug):
        from taskclf.workflows import demo as run_demo

        run_demo(out, users=users, days=days, rounds=rounds, seed=seed, threads=threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskclf`` command with ``argv`` (default: the process's); return its exit code."""
    try:
        app(args=None if argv is None else list(argv), prog_name=PROG)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return 0
