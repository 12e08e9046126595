"""Reject threshold: cells whose best score is too low become *unknown* (value 255).

A threshold is applied to a map's stored scores and best classes; the network never runs
again. A cell keeps its best class when that class's score is at least the threshold of
the class, and becomes :data:`~._classes.UNKNOWN` otherwise. Nothing assumes the scores
sum to 1 (one-vs-rest scores work the same way).

A threshold is a float in [0, 1] for every class, or a dict of per-class thresholds keyed
by class name or label value; the threshold that counts is the one of the *predicted*
class, and classes missing from the dict get 0 (never unknown). Thresholds are
normalised to a float or to a dict ``{label value: float}`` holding every class.

In a map store (docs/design.md), :func:`write_threshold` writes the thresholded classes
beside the best ones, as ``classes_unknown`` and its display pyramid ``classes_unknown_i``,
and then records the threshold in the ``tilemap`` attribute. ``classes`` is never changed.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Generator, Iterator, Mapping
from numbers import Real
from pathlib import Path

import numpy as np

from .._classes import UNKNOWN, ClassTable
from .._errors import MapStoreError, TilemapInputError
from .._progress import run_to_end

UNKNOWN_ARRAY = "classes_unknown"
"""Name of the thresholded classes in a map store (``classes_unknown_i`` for pyramid level i)."""
STAGED_ARRAY = "classes_unknown.staged"
"""Where :func:`write_threshold` writes the next thresholded classes before it swaps them in."""
RETIRED_ARRAY = "classes_unknown.retired"
"""Where :func:`write_threshold` moves the replaced thresholded classes before it removes them."""

Threshold = float | dict[int, float]
"""A normalised threshold: one float, or a float for every label value of the class table."""


def normalize_threshold(threshold, table: ClassTable, what: str = "threshold") -> Threshold:
    """``threshold`` checked and normalised for ``table``.

    Parameters
    ----------
    threshold : float or dict
        A float in [0, 1], or ``{class name or label value: float in [0, 1]}``. A string key
        is a class name; a decimal string that names no class is read as a label value (so a
        threshold read back from a store's attributes can be passed again).
    table : ClassTable
        The classes of the map.
    what : str
        The parameter's name in error messages (the same form serves ``min_score``).

    Returns
    -------
    float or dict
        The float, or ``{label value: float}`` with every class of ``table`` (0.0 where the
        dict gave none).

    Raises
    ------
    TilemapInputError
        Not a number or dict, a value outside [0, 1] or not a number, a key that is no class
        of the table, or a class given twice.
    """
    if isinstance(threshold, Mapping):
        out = {int(v): 0.0 for v in table.values}
        given: dict[int, object] = {}
        for key, value in threshold.items():
            v = _class_value(key, table, what)
            if v in given:
                raise TilemapInputError(
                    f"{what} for class {_describe(v, table)} is given twice (as {given[v]!r} and {key!r})"
                )
            given[v] = key
            out[v] = _fraction(value, f"{what} for class {_describe(v, table)}")
        return out
    if isinstance(threshold, (str, bytes)) or not _is_number(threshold):
        raise TilemapInputError(
            f"{what} must be a number in [0, 1] or a dict {{class name or label value: number}}, "
            f"got {_short(threshold)}"
        )
    return _fraction(threshold, what)


def parse_threshold(text: str, what: str = "threshold"):
    """A threshold or min score typed as text: ``"0.7"`` or ``"pit=0.9,scratch=0.6"`` (class names or
    label values), as a float or a dict; ``""`` gives None. The values are checked by
    :func:`normalize_threshold` against the map's classes.

    Raises
    ------
    TilemapInputError
        Text that is neither a number nor ``NAME=VALUE`` pairs.
    """
    text = text.strip()
    if not text:
        return None
    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise TilemapInputError(
            f"{text!r} is not a {what}: give one number in 0..1 or NAME=VALUE pairs such as pit=0.9,scratch=0.6"
        ) from None


def threshold_to_attr(threshold: Threshold | None):
    """JSON form of a normalised threshold, as in the store's ``tilemap.threshold``."""
    if threshold is None or not isinstance(threshold, dict):
        return threshold
    return {str(v): t for v, t in sorted(threshold.items())}


def threshold_from_attr(stored, table: ClassTable, where: str = "the map store",
                        what: str = "threshold") -> Threshold | None:
    """The normalised threshold (or min score: ``what``) recorded in a store's attributes (None: none).

    Raises
    ------
    MapStoreError
        The record is not a threshold for the store's classes.
    """
    if stored is None:
        return None
    try:
        if isinstance(stored, Mapping):
            stored = {int(k): v for k, v in stored.items()}
        return normalize_threshold(stored, table, what)
    except (TilemapInputError, TypeError, ValueError) as err:
        raise MapStoreError(f"{where} records an invalid {what} ({err}); write the threshold again") from None


def threshold_lut(threshold: Threshold) -> np.ndarray:
    """(256,) float64 minimum best score per label value; -inf where nothing becomes unknown.

    A threshold of 0 never makes a cell unknown, whatever the scores.
    """
    lut = np.full(256, -np.inf)
    if isinstance(threshold, dict):
        for v, t in threshold.items():
            lut[int(v)] = t if t > 0 else -np.inf
    elif threshold > 0:
        lut[:] = threshold
    return lut


def apply_threshold(classes, scores, lut: np.ndarray) -> np.ndarray:
    """Thresholded classes of one block: ``classes`` (H, W) best classes, ``scores`` (C, H, W).

    The best score is the maximum over the class axis, compared in float64 with the
    threshold of the predicted class (no rounding of the threshold to float16 scores).
    """
    classes = np.asarray(classes)
    best = np.asarray(scores).max(axis=0)
    return np.where(best >= lut[classes], classes, np.uint8(UNKNOWN)).astype(np.uint8, copy=False)


def threshold_classes(classes, scores, threshold: Threshold):
    """Thresholded classes: numpy for numpy inputs, otherwise a lazy dask array.

    The dask array has the chunks of ``classes`` (a store's chunks) and reads each chunk of
    ``classes`` and ``scores`` only when that block is computed.
    """
    lut = threshold_lut(threshold)
    if isinstance(classes, np.ndarray) and isinstance(scores, np.ndarray):
        return apply_threshold(classes, scores, lut)
    import dask.array as da

    c = _as_dask(classes)
    s = _as_dask(scores)
    if s.shape[1:] != c.shape:
        raise TilemapInputError(f"scores of shape {s.shape} do not match classes of shape {c.shape}")
    if s.chunks[1:] != c.chunks or len(s.chunks[0]) != 1:
        s = s.rechunk((-1, *c.chunks))
    return da.blockwise(
        apply_threshold, "yx", c, "yx", s, "kyx", lut=lut, concatenate=True, dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
    )


def unknown_levels(group, attrs: dict) -> list | None:
    """The stored thresholded classes of every pyramid level, or None when they cannot be used.

    They are used only for a complete store that records a threshold and holds every level
    with the shape of its ``classes`` level.
    """
    if (attrs.get("threshold") is None and attrs.get("min_score") is None) or not attrs.get("complete", True):
        return None
    n = int(attrs.get("pyramid_levels", 0))
    suffixes = _suffixes(n)
    try:
        levels = [group[UNKNOWN_ARRAY + s] for s in suffixes]
        shapes = [group["classes" + s].shape for s in suffixes]
    except KeyError:
        return None
    if [a.shape for a in levels] != shapes or any(a.dtype != np.uint8 for a in levels):
        return None
    return levels


def lazy_levels(classes0, levels: int) -> list:
    """Display levels of thresholded classes ``classes0``: level i is ``classes0[::2**i, ::2**i]``,
    exactly as the stored pyramid picks the top-left cell of each 2×2 group."""
    return [classes0] + [classes0[:: 2**i, :: 2**i] for i in range(1, levels + 1)]


def write_threshold(path, threshold=None, *, min_score=None):
    """Threshold the map store at ``path`` on disk, block by block, and record the threshold.

    The thresholded classes go to ``classes_unknown`` (and ``classes_unknown_i`` for every
    pyramid level) beside ``classes``, which is never changed; the threshold is recorded in
    the ``tilemap`` attribute last. The new arrays are written beside the old ones and renamed
    into place at the end, so an interrupted write leaves the store as it was.
    Afterwards :func:`~._mapstore.open_map` returns the thresholded map and the napari reader
    shows value 255 as *unknown*. Writing another threshold replaces the previous one (and
    its min score).

    Parameters
    ----------
    path : str or Path
        A complete map store.
    threshold : float or dict, optional
        As for :meth:`ClassificationMap.with_threshold`.
    min_score : float or dict, optional
        As for :meth:`ClassificationMap.with_min_score`, applied after ``threshold``; at
        least one of the two must be given.

    Returns
    -------
    ClassificationMap
        The thresholded map, backed by the store.

    Raises
    ------
    TilemapInputError
        A bad threshold (the store is not touched).
    MapStoreError
        ``path`` is not a complete map store.
    OutputBusyError
        A prediction (or another threshold) is writing the store right now.

    See Also
    --------
    iter_write_threshold : the same, with progress, and stoppable.
    """
    return run_to_end(iter_write_threshold(path, threshold, min_score=min_score))


def iter_write_threshold(path, threshold=None, *, min_score=None) -> Generator[tuple[int, int], None, object]:
    """Like :func:`write_threshold`, as a generator of ``(regions written, regions in all)``.

    Closing the generator stops the write: what it wrote is removed and the store keeps its
    earlier rules. The return value (``StopIteration.value``) is the thresholded map. Bad input
    raises on the first ``next``, before the store is touched.
    """
    import zarr

    from ._mapstore import open_map, read_attrs, set_threshold_attrs
    from ._outputlock import OutputLock

    path = Path(path)
    if threshold is None and min_score is None:
        raise TilemapInputError("give a threshold or a min_score to write (clear_threshold removes both)")
    table = ClassTable.from_dict(read_attrs(path))
    rules = [None if x is None else normalize_threshold(x, table, what)  # bad input fails before the lock
             for x, what in ((threshold, "threshold"), (min_score, "min_score"))]
    with OutputLock(path.absolute()):
        group = _complete_group(path, zarr)
        levels = int(dict(group.attrs["tilemap"]).get("pyramid_levels", 0))
        for name in (STAGED_ARRAY, RETIRED_ARRAY):  # what an interrupted write left
            _remove_arrays(path, name)
        # the new arrays are written beside the old ones, which keep serving the old record meanwhile;
        # only renames lie between taking that record away and writing the new one
        try:
            yield from iter_rule_arrays(group, path, *rules, levels=levels, name=STAGED_ARRAY)
        except GeneratorExit:
            _remove_arrays(path, STAGED_ARRAY)
            raise
        set_threshold_attrs(group, None)
        _move_arrays(path, UNKNOWN_ARRAY, RETIRED_ARRAY)
        _move_arrays(path, STAGED_ARRAY, UNKNOWN_ARRAY)
        set_threshold_attrs(group, *rules)
        _remove_arrays(path, RETIRED_ARRAY)
    return open_map(path)


def _suffixes(levels: int) -> list[str]:
    return [""] + [f"_{i}" for i in range(1, levels + 1)]


def _array_dirs(path: Path, name: str) -> dict[str, Path]:
    """The arrays ``name`` and ``name_i`` of the store at ``path``: suffix ("" or "_i") -> directory."""
    found = {}
    for entry in path.iterdir():
        suffix = entry.name[len(name):]
        if entry.is_dir() and entry.name.startswith(name) and (suffix == "" or re.fullmatch(r"_\d+", suffix)):
            found[suffix] = entry
    return found


def _move_arrays(path: Path, name: str, to: str) -> None:
    """Rename the arrays ``name`` and ``name_i`` of the store at ``path`` to ``to`` and ``to_i``."""
    for suffix, entry in _array_dirs(path, name).items():
        os.replace(entry, path / (to + suffix))


def _remove_arrays(path: Path, name: str) -> None:
    """Remove the arrays ``name`` and ``name_i`` of the store at ``path``."""
    for entry in _array_dirs(path, name).values():
        shutil.rmtree(entry)


def write_rule_arrays(group, path: Path, threshold: Threshold | None, min_score: Threshold | None, *,
                      levels: int, name: str = UNKNOWN_ARRAY) -> None:
    """Write ``classes_unknown`` (or ``name``; and its ``levels`` display levels) of the store ``group``
    at ``path``, whose blocks are all written, for normalised rules; records nothing. The caller
    records the rules after this returns (:func:`write_threshold`, or a prediction that finishes
    its store with its rules in the same attribute write that marks it complete)."""
    run_to_end(iter_rule_arrays(group, path, threshold, min_score, levels=levels, name=name))


def iter_rule_arrays(group, path: Path, threshold: Threshold | None, min_score: Threshold | None, *,
                     levels: int, name: str = UNKNOWN_ARRAY) -> Iterator[tuple[int, int]]:
    """:func:`write_rule_arrays`, yielding ``(regions written, regions in all)`` after each region."""
    from ._mapstore import chunk_codecs, open_map

    ruled = open_map(path)._ruled(threshold, min_score).classes
    codecs = chunk_codecs()
    plan = [(suffix, group["classes" + suffix]) for suffix in _suffixes(levels)]
    plan = [(suffix, best, list(_regions(best.shape, best.chunks))) for suffix, best in plan]
    total, done = sum(len(regions) for *_, regions in plan), 0
    prev = None
    for suffix, best, regions in plan:
        target = group.create_array(
            name + suffix, shape=best.shape, chunks=best.chunks, dtype="uint8", fill_value=0,
            dimension_names=("y", "x"), overwrite=True, **codecs,
        )
        for r, c in regions:
            if prev is None:
                target[r, c] = np.asarray(ruled[r, c])
            else:  # the stored pyramid's rule: the top-left cell of each 2x2 group
                target[r, c] = np.asarray(prev[2 * r.start : 2 * r.stop, 2 * c.start : 2 * c.stop])[::2, ::2]
            done += 1
            yield done, total
        prev = target


def clear_threshold(path):
    """Remove the threshold of the map store at ``path``: its record and ``classes_unknown*``.

    ``classes`` and ``scores`` are untouched. Returns the unthresholded map.

    Raises
    ------
    MapStoreError
        ``path`` is not a map store.
    OutputBusyError
        A prediction (or a threshold) is writing the store right now.
    """
    import zarr

    from ._mapstore import open_map, read_attrs, set_threshold_attrs
    from ._outputlock import OutputLock

    path = Path(path)
    read_attrs(path)
    with OutputLock(path.absolute()):
        group = zarr.open_group(str(path), mode="r+")
        set_threshold_attrs(group, None)
        for name in (UNKNOWN_ARRAY, STAGED_ARRAY, RETIRED_ARRAY):
            _remove_arrays(path, name)
    return open_map(path)


def _complete_group(path: Path, zarr):
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs["tilemap"])
    if not attrs.get("complete"):
        raise MapStoreError(
            f"{str(path)!r} is not complete; run the same prediction again to finish it before thresholding it"
        )
    from ._mapoutput import read_done_flags

    done = read_done_flags(group, path)
    if not done.all():
        raise MapStoreError(
            f"{str(path)!r}: {int(done.size - done.sum())} of {done.size} blocks were not written; "
            "run the same prediction again to finish it before thresholding it"
        )
    return group


def _regions(shape, chunks, cells: int = 1024):
    """Chunk-aligned (rows, cols) slices of about ``cells`` a side covering ``shape``."""
    steps = [ch * max(1, cells // ch) for ch in chunks]
    for r in range(0, shape[0], steps[0]):
        for c in range(0, shape[1], steps[1]):
            yield slice(r, min(r + steps[0], shape[0])), slice(c, min(c + steps[1], shape[1]))


def _as_dask(a):
    import dask.array as da

    if isinstance(a, da.Array):
        return a
    chunks = getattr(a, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == len(a.shape) and all(isinstance(n, int) for n in chunks)):
        chunks = "auto"
    return da.from_array(a, chunks=chunks)


def _class_value(key, table: ClassTable, what: str = "threshold") -> int:
    if isinstance(key, str):
        matches = [v for n, v in zip(table.names, table.values) if n == key]
        if len(matches) > 1:
            raise TilemapInputError(
                f"{what} key {key!r} names {len(matches)} classes (values {matches}); key them by label value"
            )
        if matches:
            return int(matches[0])
        if key.strip().isdecimal() and int(key) in table.values:
            return int(key)
    elif isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if int(key) in table.values:
            return int(key)
    else:
        raise TilemapInputError(f"{what} keys are class names or label values, got {_short(key)}")
    classes = ", ".join(f"{n!r} ({v})" for n, v in zip(table.names, table.values))
    raise TilemapInputError(f"{what} key {key!r} is not a class name or label value of this map; classes: {classes}")


def _describe(value: int, table: ClassTable) -> str:
    return f"{table.names[table.index_of_value(value)]!r} ({value})"


def _is_number(x) -> bool:
    return isinstance(x, (Real, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _fraction(x, what: str) -> float:
    if not _is_number(x):
        raise TilemapInputError(f"{what} must be a number in [0, 1], got {_short(x)}")
    t = float(x)
    if math.isnan(t):
        raise TilemapInputError(f"{what} is NaN; give a number in [0, 1]")
    if not 0.0 <= t <= 1.0:
        raise TilemapInputError(f"{what} is {t}, outside [0, 1]")
    return t


def _short(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."
