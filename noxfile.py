"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``.

Each session installs what it needs with pip from the package index into
its own virtual environment (nothing else is downloaded).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"

SOURCES = ["taskclf", "tests", "benchmarks", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, as CI runs it (two workers)."""
    session.install(".[test]")
    session.run("python", "-m", "pytest", "-n", "2", "tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package, with the libraries' stubs."""
    session.install(".[lint]")
    session.run("mypy", "taskclf")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly (any warning fails)."""
    session.install(".[docs]", "ruff")  # ruff formats the signatures
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        env={"NO_MKDOCS_2_WARNING": "1"},
    )
