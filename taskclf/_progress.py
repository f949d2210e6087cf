"""Progress of long work: library code advances a :func:`step`; a caller that installed a
listener with :func:`listening` (the command line draws bars) sees it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Protocol


class Bar(Protocol):
    """What a listener returns for one step: advanced, then closed."""

    def advance(self, amount: int = 1) -> None: ...

    def close(self) -> None: ...


Listener = Callable[[str, int], Bar]
"""Called with a step's description and its total count; returns its bar."""

_listener: ContextVar[Listener | None] = ContextVar("taskclf_progress", default=None)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Report the steps started inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def _ignore(amount: int = 1) -> None:
    """Advance nothing."""


@contextlib.contextmanager
def step(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A step of ``total`` units; yields the function that advances it.

    Examples
    --------
    >>> with step("rounds", 3) as advance:
    ...     for _ in range(3):
    ...         advance(1)
    """
    listener = _listener.get()
    if listener is None:
        yield _ignore
        return
    bar = listener(description, total)
    try:
        yield bar.advance
    finally:
        bar.close()
