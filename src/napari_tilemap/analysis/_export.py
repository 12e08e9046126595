"""Exports of a map that other tools open: GeoJSON, COCO JSON, CSV and a label TIFF.

Every export is written under a temporary name beside the output (``.NAME.partial``) and
renamed into place only when complete, so an interrupted export never leaves a half-written
file, and an existing output is replaced only when asked (``overwrite``).
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from .._errors import TilemapInputError
from ..maps._mapstore import ClassificationMap
from ._regions import (
    BLOCK_CELLS,
    RegionTable,
    apply_rules,
    map_image_name,
    regions,
)

FORMATS = {"geojson": ".geojson", "coco": ".json", "csv": ".csv", "tiff": ".tif"}
"""Export formats and the file extension each is written with."""

_SUFFIXES = {".geojson": "geojson", ".json": "coco", ".csv": "csv", ".tif": "tiff", ".tiff": "tiff"}


class ExportError(TilemapInputError):
    """An export cannot be written as asked (unknown format, existing output, missing folder)."""


def format_for(path, format: str | None = None) -> str:
    """The export format: ``format`` checked, or guessed from the extension of ``path``.

    Raises
    ------
    ExportError
        An unknown format, or no format and an extension that names none.
    """
    if format is not None:
        if format not in FORMATS:
            raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ExportError(
            f"cannot tell the export format from {str(path)!r}; give the format "
            f"{'|'.join(FORMATS)} or end the name with {', '.join(_SUFFIXES)}"
        )
    return _SUFFIXES[suffix]


def export(
    cmap: ClassificationMap,
    path,
    format: str | None = None,
    *,
    threshold=None,
    min_area: float = 0,
    min_score=None,
    classes: Sequence[int | str] | None = None,
    overwrite: bool = False,
    pixel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    image: str | None = None,
    block_cells: int = BLOCK_CELLS,
) -> Path:
    """Write the regions or the label image of ``cmap`` to ``path``.

    Parameters
    ----------
    cmap : ClassificationMap
        The map (in memory or backed by a store).
    path : str or Path
        The file to write; its folder must exist.
    format : {"geojson", "coco", "csv", "tiff"}, optional
        ``geojson``: a FeatureCollection of region polygons in image pixel coordinates with
        QuPath's ``classification`` {name, color}, holes kept. ``coco``: COCO JSON with one
        annotation per region, its mask as compressed RLE at full image resolution.
        ``csv``: the regions table. ``tiff``: a tiled BigTIFF label image at full
        resolution, each cell filling its S×S block with its class value (255 unknown).
        Default: from the extension of ``path`` (.geojson, .json, .csv, .tif/.tiff).
    threshold : float or dict, optional
        Reject threshold applied first (cells below it are unknown, 255).
    min_area : float
        Regions smaller than this many image pixels are left out (not for ``tiff``).
    min_score : float or dict, optional
        Regions whose peak score is below this are *unknown*: left out of the regions, 255
        in the ``tiff`` (see :meth:`ClassificationMap.with_min_score`).
    classes : sequence of int or str, optional
        Classes whose regions are exported; default every class but background.
    overwrite : bool
        Replace an existing ``path``; otherwise an existing output is refused.
    pixel_size, unit, image : optional
        As for :func:`~._regions.regions`.
    block_cells : int
        Side of the blocks the map is read in, in cells.

    Returns
    -------
    Path
        ``path``, written completely.

    Raises
    ------
    ExportError
        Unknown format, ``path`` exists (without ``overwrite``) or its folder does not.
    TilemapInputError
        A bad threshold, ``min_area``, ``min_score`` or class.

    Examples
    --------
    >>> export(cmap, "regions.geojson", threshold=0.8, min_area=256)   # doctest: +SKIP
    >>> export(cmap, "labels.tif")                                      # doctest: +SKIP
    """
    path = Path(path)
    fmt = format_for(path, format)
    check_output(path, overwrite)
    cm = apply_rules(cmap, threshold, min_score)
    name = image if image is not None else map_image_name(cmap)
    if fmt == "tiff":
        from ._labeltiff import write_label_tiff

        with atomic_output(path) as tmp:
            write_label_tiff(cm, tmp)
        return path
    table = regions(cm, None, min_area, classes=classes, pixel_size=pixel_size, unit=unit, image=name,
                    block_cells=block_cells)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        write_table(table, out, fmt, cm, name)
    return path


def write_table(table: RegionTable, out: IO[str], fmt: str, cmap: ClassificationMap, image: str) -> None:
    """Write a regions ``table`` of ``cmap`` to the open text file ``out`` in format ``fmt``."""
    if fmt == "csv":
        write_csv(table, out)
    elif fmt == "geojson":
        from ._geojson import write_geojson

        write_geojson(cmap, table, out)
    else:
        from ._coco import write_coco

        write_coco(cmap, table, out, image=image)


def write_csv(table: RegionTable, out: IO[str]) -> None:
    """A table (dict of columns) as CSV with a header line; floats written exactly (``repr``)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(table))
    columns = [np.asarray(c).tolist() for c in table.values()]
    writer.writerows(zip(*columns))


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output (unless ``overwrite``) and an output whose folder is missing."""
    if not path.absolute().parent.is_dir():
        raise ExportError(f"the folder of the output {str(path)!r} does not exist; create it first")
    if path.is_dir():
        raise ExportError(f"{str(path)!r} is a folder; give a file name for the export")
    if path.exists() and not overwrite:
        raise ExportError(f"{str(path)!r} already exists; choose another output or pass overwrite=True")


def partial_path(path: Path) -> Path:
    """The temporary name an output is written under: ``.NAME.partial`` beside it."""
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success, delete it on failure."""
    tmp = partial_path(Path(path))
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, path)
