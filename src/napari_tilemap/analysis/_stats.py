"""Per-class statistics of maps: regions, cells, pixel area and area fraction, per image and batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._classes import UNKNOWN, UNKNOWN_NAME
from ..maps._mapstore import ClassificationMap
from ._regions import BLOCK_CELLS, RegionTable, map_image_name, scan_regions

BATCH = "(all images)"
"""The ``image`` of the rows that sum a batch of several maps."""

STAT_COLUMNS = ("image", "class_value", "class_name", "regions", "cells", "area_px", "area_fraction")
"""Columns of a statistics table (``area_physical`` and ``unit`` follow when a pixel size is given)."""


def statistics(
    maps: ClassificationMap | Sequence[ClassificationMap],
    threshold=None,
    min_area: float = 0,
    *,
    min_score=None,
    images: Sequence[str] | None = None,
    pixel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    block_cells: int = BLOCK_CELLS,
) -> RegionTable:
    """Regions, cells, area and area fraction of every class (and *unknown*) of each map.

    Parameters
    ----------
    maps : ClassificationMap or sequence of them
        One map per image; read block by block.
    threshold : float or dict, optional
        Reject threshold applied first (see :meth:`ClassificationMap.with_threshold`).
    min_area : float
        Regions smaller than this many image pixels are not counted in ``regions``
        (cells and areas count every cell).
    min_score : float or dict, optional
        Regions whose peak score is below this become unknown, their cells and area counted
        there (see :meth:`ClassificationMap.with_min_score`).
    images : sequence of str, optional
        Names of the images; default each map's :func:`~._regions.map_image_name`.
    pixel_size, unit : optional
        The images' physical pixel size (y, x) and its unit; adds ``area_physical`` and ``unit``.
    block_cells : int
        Side of the blocks the maps are read in, in cells.

    Returns
    -------
    dict of ndarray
        :data:`STAT_COLUMNS`: one row per class of each map's table (background included)
        and one for *unknown* (255); with several maps, rows with ``image`` :data:`BATCH`
        sum them (matched by class value and name). ``area_fraction`` is the class's share
        of the image's pixels (of all images' pixels for the batch rows).

    Examples
    --------
    >>> table = statistics([open_map("a.zarr"), open_map("b.zarr")], threshold=0.7)  # doctest: +SKIP
    >>> print(format_table(table))                                                  # doctest: +SKIP
    """
    many = not isinstance(maps, ClassificationMap)
    maps = list(maps) if many else [maps]
    if images is not None and len(images) != len(maps):
        from .._errors import TilemapInputError

        raise TilemapInputError(f"got {len(images)} image names for {len(maps)} maps; give one per map")
    rows: list[tuple] = []
    for i, cmap in enumerate(maps):
        legend = [*zip(cmap.class_table.values, cmap.class_table.names), (UNKNOWN, UNKNOWN_NAME)]
        scan = scan_regions(cmap, threshold, min_area, min_score=min_score, classes=[v for v, _ in legend],
                            block_cells=block_cells)
        name = images[i] if images is not None else map_image_name(cmap)
        counts = np.bincount(scan.table["class_value"], minlength=256)
        total = int(scan.pixels.sum())
        rows += [(name, int(v), n, int(counts[v]), int(scan.cells[v]), int(scan.pixels[v]), total, i) for v, n in legend]
    if len(maps) > 1:
        rows += _batch(rows)
    table = {
        "image": np.array([r[0] for r in rows], dtype=object),
        "class_value": np.array([r[1] for r in rows], np.int64),
        "class_name": np.array([r[2] for r in rows], dtype=object),
        "regions": np.array([r[3] for r in rows], np.int64),
        "cells": np.array([r[4] for r in rows], np.int64),
        "area_px": np.array([r[5] for r in rows], np.int64),
        "area_fraction": np.array([r[5] / r[6] if r[6] else 0.0 for r in rows], np.float64),
    }
    if pixel_size is not None:
        from ._regions import _pixel_size

        sy, sx = _pixel_size(pixel_size)
        table["area_physical"] = table["area_px"] * (sy * sx)
        table["unit"] = np.full(len(rows), unit or "", dtype=object)
    return table


def _batch(rows: list[tuple]) -> list[tuple]:
    totals: dict[tuple[int, str], list[int]] = {}
    for _, value, name, regions, cells, area, _, _ in rows:
        t = totals.setdefault((value, name), [0, 0, 0])
        t[0] += regions
        t[1] += cells
        t[2] += area
    pixels = sum({r[7]: r[6] for r in rows}.values())
    return [(BATCH, v, n, *t, pixels, -1) for (v, n), t in sorted(totals.items())]


def format_table(table: RegionTable, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A table (dict of columns) as aligned text, one line per row, for terminals and the dock."""
    columns = list(columns or table)
    cells = [[_text(table[c][i], digits) for c in columns] for i in range(len(table[columns[0]]))]
    widths = [max([len(c), *(len(row[k]) for row in cells)]) for k, c in enumerate(columns)]
    numeric = [np.issubdtype(np.asarray(table[c]).dtype, np.number) for c in columns]

    def line(row: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, widths, numeric)).rstrip()

    return "\n".join([line(columns), *(line(r) for r in cells)])


def _text(x, digits: int) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}g}" if abs(x) < 1e6 else f"{x:.0f}"
    return str(x)
