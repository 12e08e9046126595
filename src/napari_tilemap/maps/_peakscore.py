"""Min peak score: regions of a map that never reach a confident score become *unknown* (255).

A region is a connected set (8-connectivity) of cells of one class other than background
(analysis/_regions.py). Its *peak score* is the highest score of its class over its cells.
With a min score ``m`` every cell of a region whose peak is below ``m`` (of the region's
class) becomes :data:`~._classes.UNKNOWN`; every other cell keeps its class. Unlike a
reject threshold, which trims every weak cell, a confident region keeps its full extent and
a weak one goes whole: the two-level rule of hysteresis thresholding, applied to regions.

The map is read block by block: a first pass labels every block and merges the regions that
meet across block borders (the regions table's own pass), a second labels each block again
and looks up whether each of its regions is weak, so memory does not grow with the map.
"""

from __future__ import annotations

import numpy as np

from .._classes import UNKNOWN
from ._blockrun import block_grid


def min_score_classes(cmap, min_score, block_cells: int | None = None):
    """``cmap.classes`` with the cells of every region whose peak score is below ``min_score``
    set to unknown (255).

    Parameters
    ----------
    cmap : ClassificationMap
        The map, thresholded or not; its ``classes`` and ``scores`` are read.
    min_score : float or dict
        A normalised min score (:func:`~._threshold.normalize_threshold`); 0 for a class
        never makes its regions unknown.
    block_cells : int, optional
        Side of the blocks the map is read in, in cells; default that of the regions table.

    Returns
    -------
    ndarray or dask array
        uint8 classes: numpy when ``cmap.classes`` is numpy, otherwise a lazy dask array in
        blocks of ``block_cells`` (the regions are found when this is called).
    """
    from ..analysis._regions import BLOCK_CELLS, _Accumulator, class_values, peak_score_floor

    floor = peak_score_floor(cmap.class_table, min_score)
    acc = _Accumulator(cmap, class_values(cmap, None), int(block_cells or BLOCK_CELLS))
    acc.run()
    comp, merged = acc.merge()
    weak = (merged["score_max"] < floor[merged["value"]])[comp] if acc.count else np.zeros(0, bool)

    def rule(classes: np.ndarray, r0: int, c0: int) -> np.ndarray:
        classes = np.asarray(classes).astype(np.uint8, copy=False)
        local = acc.label_block(classes)
        hit = local > 0
        hit[hit] = weak[local[hit] - 1 + acc.offsets[(r0, c0)]]
        return np.where(hit, np.uint8(UNKNOWN), classes)

    if isinstance(cmap.classes, np.ndarray):
        out = np.array(cmap.classes, np.uint8)
        if weak.any():
            for (r0, r1), (c0, c1) in block_grid(out.shape, acc.block):
                out[r0:r1, c0:c1] = rule(out[r0:r1, c0:c1], r0, c0)
        return out
    from ._threshold import _as_dask

    classes = _as_dask(cmap.classes).astype(np.uint8)
    if not weak.any():
        return classes

    def one(block: np.ndarray, block_info=None) -> np.ndarray:
        (r0, _), (c0, _) = block_info[0]["array-location"]
        return rule(block, r0, c0)

    return classes.rechunk((acc.block, acc.block)).map_blocks(one, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
