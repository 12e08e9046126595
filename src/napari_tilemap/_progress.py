"""Progress reporting and cooperative cancellation shared by training and prediction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Union

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
