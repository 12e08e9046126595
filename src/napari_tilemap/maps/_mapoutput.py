"""The life of a map store a run writes: claim, recover, create or resume, finish, swap.

For an output ``NAME`` three paths lie side by side:

- ``NAME``: the map the user asked for;
- ``.NAME.partial``: where a new store is created (then renamed to ``NAME``) and where an
  ``overwrite`` run writes its map while the old one stays in place;
- ``.NAME.old``: the old map for the moment of the swap.

Every run holds the output's lock (:mod:`._outputlock`) from before it looks at these
paths until after the swap, and first finishes or rolls back whatever an interrupted run
left, so a kill at any point recovers on the next run. Only map stores at these three
paths are ever removed, and never while another run holds the lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._errors import MapStoreError
from ._mapstore import (
    create_store,
    is_map_store,
    read_attrs,
    remove_store,
    set_threshold_attrs,
    store_attrs,
    update_attrs,
)

Block = tuple[tuple[int, int], tuple[int, int]]

# What a difference in each field of the ``tilemap`` attribute means to the user.
_DIFFERENCES = (
    ("model_sha256", "another model"),
    ("image", "another image (or the image changed since)"),
    ("block_cells", "another block size"),
    ("scores_dtype", "another scores dtype"),
)


def work_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial")


def old_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.old")


def run_difference(attrs: dict, expected: dict) -> str | None:
    """What makes the store with ``attrs`` another map than ``expected`` (None: the same)."""
    for key in ("step", "tile_size", "offset", "image_shape"):
        if attrs.get(key) != expected[key]:
            return "another image size or tile geometry"
    for key in ("class_names", "colors", "values"):
        if attrs.get(key) != expected[key]:
            return "another class table"
    run, want = attrs.get("run") or {}, expected["run"]
    for key, meaning in _DIFFERENCES:
        if run.get(key) != want.get(key):
            return meaning
    return None if run == want else "another run"


def prepare_output(output: Path, geometry, class_table, *, cells: int, scores_dtype: str, run: dict,
                   overwrite: bool, blocks: list[Block]) -> tuple[Path, list[Block]]:
    """Where this run writes (``output`` or its work store) and which blocks remain.

    Call with the output's lock held.

    Raises
    ------
    MapStoreError
        ``output`` is not a map store, holds another map and ``overwrite`` is false, or a
        path this run needs is taken by something that is not a map store.
    """
    recover(output)
    expected = store_attrs(geometry, class_table, complete=False, run=run)
    work = work_path(output)
    if output.exists():
        if not is_map_store(output):
            raise MapStoreError(
                f"{str(output)!r} exists and is not a napari-tilemap map store; refusing to replace it — "
                "choose another output path"
            )
        attrs = read_attrs(output)
        difference = run_difference(attrs, expected)
        if difference is None and not overwrite:
            todo = _remaining(output, blocks, cells, expected)
            if todo is None:
                raise MapStoreError(
                    f"{str(output)!r} is damaged (its arrays are missing or of the wrong shape); "
                    "pass overwrite=True to recompute it"
                )
            if todo and attrs.get("complete"):  # marked complete with blocks missing: finish it now
                import zarr

                group = zarr.open_group(str(output), mode="r+")
                set_threshold_attrs(group, None)  # its thresholded classes were made from the missing blocks
                update_attrs(group, complete=False)
            return output, todo
        if difference is not None and not overwrite:
            raise MapStoreError(
                f"{str(output)!r} holds a map of {difference}; choose another output or pass "
                "overwrite=True to replace it"
            )
    if work.exists():
        resumable = is_map_store(work) and run_difference(read_attrs(work), expected) is None
        todo = _remaining(work, blocks, cells, expected) if resumable else None
        if todo is not None:  # an interrupted overwrite or creation of this very map: go on with it
            if output.exists():
                return work, todo
            os.replace(work, output)
            return output, todo
        _remove_own(work)
    create_store(work, geometry, class_table, chunk=cells, scores_dtype=scores_dtype, run=run)
    if output.exists():
        return work, list(blocks)
    os.replace(work, output)  # a store appears at its name only complete with its attributes
    return output, list(blocks)


def finish_output(work: Path, output: Path, run: dict, *, pyramid: bool, threshold=None, min_score=None) -> bool:
    """Mark ``work`` complete once every block is done, then swap it into ``output``.

    With a ``threshold`` or a ``min_score`` (normalised, :func:`~._threshold.normalize_threshold`), a
    store that this call completes gets the rules' ``classes_unknown`` arrays first and their record in
    the same attribute write that marks it complete, so no reader ever finds it complete without its
    rules. Returns whether it did (False: the store was complete already; its rules are as they were).

    Raises
    ------
    MapStoreError
        Blocks are missing or the store's run record is not this run's: the store stays
        marked incomplete (run again to finish it).
    """
    import zarr

    group = zarr.open_group(str(work), mode="r+")
    attrs = dict(group.attrs["tilemap"])
    if (attrs.get("run") or {}) != run:
        raise MapStoreError(f"{str(output)!r} was changed by another run while this one wrote it; run again")
    done = read_done_flags(group, output)
    if not done.all():
        raise MapStoreError(
            f"{str(output)!r}: {int(done.size - done.sum())} of {done.size} blocks were not written; "
            "run the same command again to finish the map"
        )
    completed = not attrs.get("complete")
    if completed:
        levels = _build_pyramid(group) if pyramid else 0
        if threshold is not None or min_score is not None:
            from ._threshold import write_rule_arrays

            write_rule_arrays(group, work, threshold, min_score, levels=levels)
        set_threshold_attrs(group, threshold, min_score, complete=True, pyramid_levels=levels)
    if work != output:
        old = old_path(output)
        os.replace(output, old)
        os.replace(work, output)
        remove_store(old)
    return completed


def recover(output: Path) -> None:
    """Finish or roll back a swap that was interrupted, and remove what it left.

    Raises
    ------
    MapStoreError
        ``.NAME.old`` is in the way and is not a map store.
    """
    old = old_path(output)
    if not old.exists():
        return
    if output.exists():  # the swap was done; the old map's removal was not
        _remove_own(old)
        return
    work = work_path(output)
    if is_map_store(work) and read_attrs(work).get("complete"):
        os.replace(work, output)  # killed between the two renames: finish the swap
        remove_store(old)
    elif is_map_store(old):
        os.replace(old, output)  # nothing complete to swap in: put the old map back
    else:
        raise MapStoreError(f"{str(old)!r} is in the way and is not a napari-tilemap map store; move it away")


def _remove_own(path: Path) -> None:
    """Remove ``path`` if it is what a run of ours leaves: a map store, or a folder killed
    before its group metadata was in place (empty, or zarr's temporary ``*.partial`` files)."""
    if path.is_dir() and all(f.is_file() and f.name.endswith(".partial") for f in path.iterdir()):
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    elif is_map_store(path):
        remove_store(path)
    else:
        raise MapStoreError(
            f"{str(path)!r} is in the way and is not a napari-tilemap map store; move or delete it, then run again"
        )


def _remaining(store: Path, blocks: list[Block], cells: int, expected: dict) -> list[Block] | None:
    """Blocks of ``store`` still to compute, or None if its arrays are not those this run writes."""
    import zarr

    k = len(expected["class_names"])
    h, w = (-(-n // expected["step"]) for n in expected["image_shape"])
    try:
        group = zarr.open_group(str(store), mode="r")
        shapes = (group["scores"].shape, group["classes"].shape, group["done"].shape)
    except Exception:  # a store whose removal or creation was cut short
        return None
    if shapes != ((k, h, w), (h, w), (-(-h // cells), -(-w // cells))):
        return None
    done = read_done_flags(group, store)
    return [b for b in blocks if not done[b[0][0] // cells, b[1][0] // cells]]


def read_done_flags(group, path: Path) -> np.ndarray:
    """The store's ``done`` flags, or a MapStoreError naming ``path`` when they cannot be read."""
    try:
        return np.asarray(group["done"][...])
    except Exception as err:  # checksum or codec failure: the store was damaged on disk
        raise MapStoreError(
            f"{str(path)!r} is damaged ({type(err).__name__}: {err}); pass overwrite=True to recompute it"
        ) from None


def _build_pyramid(group) -> int:
    from ._pyramid import build_pyramid

    return build_pyramid(group)
