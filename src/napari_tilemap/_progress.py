"""Progress reporting and cooperative cancellation shared by training and prediction."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import TypeVar, Union

CancelToken = Union[threading.Event, Callable[[], bool], None]


class Cancelled(RuntimeError):
    """Raised when long work was stopped on request; earlier results are left intact."""


def is_cancelled(cancel: CancelToken) -> bool:
    """Whether ``cancel`` (an Event, a callable returning bool, or None) asks to stop."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


_R = TypeVar("_R")


def run_to_end(work: Generator[object, None, _R]) -> _R:
    """Run a generator of progress events to its end, unwatched; return its return value."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            return done.value
