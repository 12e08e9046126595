"""A full-resolution label image of a map: a tiled BigTIFF written tile by tile.

Every map cell fills its S×S block of pixels (clipped to the image) with its class value,
exactly ``map_to_pixels`` of the map geometry; unknown cells are 255. Only one row of
tiles' worth of map cells is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..maps._mapstore import ClassificationMap
from ._regions import read_block

TIFF_TILE = 512
"""Side of the TIFF tiles in pixels (a multiple of 16, as TIFF requires)."""


def write_label_tiff(cmap: ClassificationMap, path: Path, *, tile: int = TIFF_TILE, level: int = 1) -> None:
    """Write the label image of ``cmap`` (thresholded as wanted) to ``path``.

    Parameters
    ----------
    cmap : ClassificationMap
        The map; its ``classes`` are written.
    path : Path
        The TIFF file to write (overwritten).
    tile : int
        TIFF tile side in pixels, a multiple of 16.
    level : int
        Deflate compression level (1 fast .. 9 small).
    """
    import tifffile

    h, w = cmap.geometry.image_shape
    tifffile.imwrite(
        path, data=_tiles(cmap, tile), shape=(h, w), dtype=np.uint8, tile=(tile, tile), bigtiff=True,
        photometric="minisblack", compression="zlib", compressionargs={"level": level}, metadata=None,
        software="napari-tilemap",
    )


def _tiles(cmap: ClassificationMap, tile: int) -> Iterator[np.ndarray]:
    """The TIFF tiles in row-major order, each ``tile`` × ``tile`` (edge tiles padded with 0)."""
    s = cmap.step
    h, w = cmap.geometry.image_shape
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        r0, r1 = y0 // s, -(-y1 // s)
        strip = read_block(cmap.classes, slice(r0, r1), slice(0, cmap.shape[1])).astype(np.uint8, copy=False)
        rows = strip[np.arange(y0, y1) // s - r0]
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            out = np.zeros((tile, tile), np.uint8)
            out[: y1 - y0, : x1 - x0] = rows[:, np.arange(x0, x1) // s]
            yield out
