"""One writer per output: an exclusive lock file held for the whole run.

The lock is an OS file lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows), so it
is released by the operating system when the process dies, however it dies: a killed
run never leaves an output locked for ever. Each holder opens the file itself, so two
threads of one process exclude each other as two processes do.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import OutputBusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``.NAME.lock`` beside it."""
    return output.with_name(f".{output.name}.lock")


class OutputLock:
    """An exclusive, non-blocking lock on an output path, usable as a context manager.

    Parameters
    ----------
    output : Path
        The output the lock protects (the lock file lies beside it).

    Raises
    ------
    OutputBusyError
        On entry, when another run holds the lock.
    """

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _lock(fd)
            except OSError:
                os.close(fd)
                raise OutputBusyError(
                    f"{str(self.output)!r} is being written by another tilemap run right now; wait for it to "
                    "finish or choose another output"
                ) from None
            # The holder before us may have unlinked the file after we opened it: then we hold
            # a lock nobody else can see, and must lock the file that is there now instead.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        if fcntl is not None:
            self.path.unlink(missing_ok=True)  # while still held: no one can lock the old file after us
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
