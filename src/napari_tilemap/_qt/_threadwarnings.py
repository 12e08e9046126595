"""The warnings one thread raises, collected for the user without touching other threads' warnings.

``warnings.catch_warnings`` swaps process-wide state: in a worker thread it would take in the warnings
of every other thread while it runs, and two workers that overlap (a training and a prediction) would
restore each other's state out of order and leave a dead recorder that swallows every later warning.
Here one dispatcher, installed once, hands each warning to the list of the thread that raised it, or,
for a thread that collects nothing, to whatever showed warnings before.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()
_lock = threading.Lock()
_OURS = r"napari_tilemap(\.|$)"
"""The modules whose warnings the plugin says every time."""
_previous = [warnings.showwarning]
"""What showed warnings before the dispatcher was installed (a list: set under the lock)."""


def _dispatch(message, category, filename, lineno, file=None, line=None) -> None:
    sink = getattr(_local, "sink", None)
    if sink is None:
        _previous[0](message, category, filename, lineno, file, line)
    else:
        sink.append(warnings.WarningMessage(message, category, filename, lineno, file, line))


def _install() -> None:
    with _lock:
        if warnings.showwarning is not _dispatch:  # first use, or someone (a test harness) swapped it out
            _previous[0] = warnings.showwarning
            warnings.showwarning = _dispatch
        # the plugin's own warnings are about the data of each action: say them every time, not once
        # (checked each time: the filters may have been reset since)
        if not any(f[0] == "always" and f[3] is not None and f[3].pattern == _OURS for f in warnings.filters):
            warnings.filterwarnings("always", module=_OURS, append=True)


@contextmanager
def thread_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings the calling thread raises inside the block into the list it yields.

    Warnings of other threads go where they went before. The process's warning filters apply as they
    are, with one added after them all: warnings raised from this package's own code, which no earlier
    filter settles, are shown every time rather than once.
    """
    _install()
    outer = getattr(_local, "sink", None)
    caught: list[warnings.WarningMessage] = []
    _local.sink = caught
    try:
        yield caught
    finally:
        _local.sink = outer
