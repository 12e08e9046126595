"""Progress of the command line on stderr: bars on a terminal, plain lines in logs.

On a terminal, work shows as tqdm bars. When stderr is a file or a pipe (batch jobs, CI
logs), the same work prints one line per epoch, or one line per tenth of the blocks, so
logs carry no carriage returns. A batch prints its own line per item; the blocks of each
item are then a bar on a terminal only (``Steps(..., transient=True)``).
"""

from __future__ import annotations

import sys


def interactive() -> bool:
    """Whether stderr is a terminal (bars) rather than a log (lines)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def duration(seconds: float) -> str:
    """``seconds`` as a short duration: ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Steps:
    """Countable work (blocks): a bar on a terminal, else a line at every tenth done.

    A ``transient`` one (a step of a batch that prints its own line per item) is a bar on a
    terminal that goes when closed, and prints nothing in a log.
    """

    def __init__(self, total: int, desc: str, unit: str, *, transient: bool = False) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self._bar = None
        self._said = 0
        self._lines = not transient
        if interactive():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                             leave=not transient)

    def update_to(self, done: int, **postfix: str) -> None:
        """Record that ``done`` of ``total`` are finished."""
        self.done = done
        if self._bar is not None:
            self._bar.n = done
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.refresh()
            return
        tenth = done * 10 // max(self.total, 1)
        if self._lines and tenth > self._said:  # a line per tenth, the last one at done == total
            self._said = tenth
            extra = "".join(f", {k} {v}" for k, v in postfix.items())
            print(f"{self.desc}: {done}/{self.total} {self.unit}s{extra}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class EpochProgress:
    """Training: a bar of batches per epoch on a terminal, else one line per epoch."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._bar = None
        self._tty = interactive()

    def batch(self, event) -> None:
        """A :class:`~napari_tilemap.learn._training.BatchProgress`."""
        if not self._tty:
            return
        if self._bar is None or event.batch == 1:
            self.close()
            from tqdm import tqdm

            self._bar = tqdm(total=event.batches, desc=f"epoch {event.epoch}/{self.epochs}", unit="batch",
                             file=sys.stderr, dynamic_ncols=True, leave=True)
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{event.loss:.3f}")

    def epoch(self, report) -> None:
        """An :class:`~napari_tilemap.learn._training.EpochReport`."""
        self.epochs = report.epochs  # a time limit may cut the plan
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{report.train_loss:.3f}", val_loss=f"{report.val_loss:.3f}",
                                  val_acc=f"{report.val_accuracy:.3f}")
            return
        if not self._tty:
            best = " (best so far)" if report.best else ""
            print(f"epoch {report.epoch}/{report.epochs}: loss {report.train_loss:.3f}, val loss "
                  f"{report.val_loss:.3f}, val accuracy {report.val_accuracy:.3f}, {report.seconds:.1f} s{best}",
                  file=sys.stderr, flush=True)

    def mining(self, event) -> None:
        """A :class:`~napari_tilemap.learn._hardneg.MiningProgress`: one line, on a terminal too."""
        self.close()
        print(f"hard-negative round {event.round}: looking for false alarms on training image "
              f"{event.image}/{event.images}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
