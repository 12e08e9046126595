"""Connected regions of a classification map and the pixel area of every class.

A *region* is a connected set (8-connectivity) of map cells holding the same class. Cell
(i, j) stands for the pixels ``[i*S, (i+1)*S) x [j*S, (j+1)*S)`` of the image, clipped
to the image (docs/design.md, "Map geometry"), so every figure of a region is that of its
full-resolution mask: areas count image pixels, centroids are pixel-centre coordinates
(pixel (y, x) has its centre at (y, x), as in napari and scikit-image) and bounding boxes
are half-open pixel ranges.

The map is read block by block (``block_cells`` a side). Each block is labelled with
:func:`skimage.measure.label`; regions that meet across a block border are merged with a
union of the labels that touch there (:func:`scipy.sparse.csgraph.connected_components`),
so memory depends on the block size and the map's width, never on the map's area. A map
that fits in one block is labelled in one piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._classes import UNKNOWN, UNKNOWN_NAME, ClassTable
from .._errors import TilemapInputError
from ..maps._mapstore import ClassificationMap

BLOCK_CELLS = 1024
"""Default side, in map cells, of the blocks the map is read in."""

REGION_COLUMNS = (
    "region", "image", "class_value", "class_name", "cells", "area_px", "centroid_y", "centroid_x",
    "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "mean_score", "max_score", "first_row", "first_col",
)
"""Columns of a regions table, in order (``area_physical`` and ``unit`` follow when the image has a
pixel size)."""

RegionTable = dict[str, np.ndarray]
"""A table as a dict of equal-length NumPy columns (``pandas.DataFrame(table)`` makes a data frame)."""


@dataclass(frozen=True, eq=False)
class RegionScan:
    """What one pass over a map gives: its regions and the pixel area of every value.

    Attributes
    ----------
    table : dict of ndarray
        The regions (:data:`REGION_COLUMNS`).
    cells, pixels : ndarray (256,) int64
        Map cells and image pixels of every value of ``classes`` (0..254 classes, 255 unknown).
    """

    table: RegionTable
    cells: np.ndarray
    pixels: np.ndarray


def regions(
    cmap: ClassificationMap,
    threshold=None,
    min_area: float = 0,
    *,
    min_score=None,
    classes: Sequence[int | str] | None = None,
    pixel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    image: str | None = None,
    block_cells: int = BLOCK_CELLS,
) -> RegionTable:
    """One row per connected region (8-connectivity) of each class of the map.

    Parameters
    ----------
    cmap : ClassificationMap
        In memory or backed by a store (read block by block).
    threshold : float or dict, optional
        A reject threshold applied first (cells below it are unknown, 255, and belong to no
        region of a class); None uses the map's classes as they are.
    min_area : float
        Regions smaller than this many image pixels are left out.
    min_score : float or dict, optional
        Regions whose peak score (``max_score``) is below this are *unknown*: a float in
        [0, 1] for every class or ``{class name or label value: float}``, applied to the map
        after the threshold as :meth:`ClassificationMap.with_min_score` does (replacing the
        map's own). Unlike a reject threshold, which trims every cell below it, this drops
        weak regions whole and keeps confident ones at their full extent (docs/design.md,
        "Peak score").
    classes : sequence of int or str, optional
        The label values or names whose regions are wanted; default every class but
        background (value 0). ``255`` or ``"unknown"`` asks for the unknown regions.
    pixel_size : float or (float, float), optional
        The image's physical pixel size (y, x); adds ``area_physical`` and ``unit``.
    unit : str, optional
        The unit of ``pixel_size`` (e.g. ``"µm"``); ``area_physical`` is in ``unit``².
    image : str, optional
        The image name written in the ``image`` column; default :func:`map_image_name`.
    block_cells : int
        Side of the blocks the map is read in, in cells.

    Returns
    -------
    dict of ndarray
        Columns :data:`REGION_COLUMNS`: ``region`` (1..n, by class value then position),
        ``image``, ``class_value``, ``class_name``, ``cells`` (map cells), ``area_px`` (image
        pixels), ``centroid_y``/``centroid_x`` (pixel-centre coordinates), ``bbox_y0``,
        ``bbox_x0``, ``bbox_y1``, ``bbox_x1`` (half-open pixel ranges), ``mean_score`` and
        ``max_score`` (the score of the region's class over its cells), ``first_row``,
        ``first_col`` (the region's first cell in raster order, which identifies it in the
        map); then ``area_physical`` and ``unit`` when ``pixel_size`` is given.

    Raises
    ------
    TilemapInputError
        A bad threshold, ``min_area``, class, pixel size or block size.

    Examples
    --------
    >>> table = regions(cmap, threshold=0.8, min_area=500)   # doctest: +SKIP
    >>> import pandas as pd; pd.DataFrame(table).head()       # doctest: +SKIP
    """
    return scan_regions(cmap, threshold, min_area, min_score=min_score, classes=classes, pixel_size=pixel_size,
                        unit=unit, image=image, block_cells=block_cells).table


def scan_regions(
    cmap: ClassificationMap,
    threshold=None,
    min_area: float = 0,
    *,
    min_score=None,
    classes: Sequence[int | str] | None = None,
    pixel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    image: str | None = None,
    block_cells: int = BLOCK_CELLS,
) -> RegionScan:
    """:func:`regions` and the area of every value, in one pass over the map (same parameters)."""
    cm = apply_rules(cmap, threshold, min_score)
    min_area = _non_negative(min_area, "min_area")
    size = _pixel_size(pixel_size)
    if isinstance(block_cells, bool) or not isinstance(block_cells, (int, np.integer)) or block_cells < 1:
        raise TilemapInputError(f"block_cells must be a positive number of cells, got {block_cells!r}")
    wanted = class_values(cm, classes)
    acc = _Accumulator(cm, wanted, int(block_cells))
    acc.run()
    table = acc.table(min_area, image if image is not None else map_image_name(cmap))
    if size is not None:
        table["area_physical"] = table["area_px"] * (size[0] * size[1])
        table["unit"] = np.full(len(table["region"]), unit or "", dtype=object)
    return RegionScan(table, acc.value_cells, acc.value_pixels)


def apply_rules(cmap: ClassificationMap, threshold, min_score=None) -> ClassificationMap:
    """``cmap`` thresholded by ``threshold`` and with ``min_score``'s rule; as it is for None."""
    if not isinstance(cmap, ClassificationMap):
        raise TilemapInputError(f"expected a ClassificationMap (from predict or open_map), got {type(cmap).__name__}")
    cm = cmap if threshold is None else cmap.with_threshold(threshold)
    return cm if min_score is None else cm.with_min_score(min_score)


def peak_score_floor(table: ClassTable, min_score) -> np.ndarray:
    """The least peak score a region of each label value (0..255) must reach; -inf: any (always *unknown*)."""
    from ..maps._threshold import normalize_threshold, threshold_lut

    if min_score is None:
        return np.full(256, -np.inf)
    floor = threshold_lut(normalize_threshold(min_score, table, "min_score"))
    floor[UNKNOWN] = -np.inf
    return floor


def class_values(cmap: ClassificationMap, classes) -> np.ndarray:
    """The label values named by ``classes`` (names or values); default every class but background."""
    table = cmap.class_table
    if classes is None:
        return np.array([v for v in table.values if v != 0], np.int64)
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    out = []
    for c in classes:
        if isinstance(c, str):
            if c == UNKNOWN_NAME:
                out.append(UNKNOWN)
                continue
            if c not in table.names:
                raise TilemapInputError(f"{c!r} is not a class of this map; classes: {', '.join(table.names)}")
            out.append(table.values[table.names.index(c)])
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and (int(c) in table.values or c == UNKNOWN):
            out.append(int(c))
        else:
            raise TilemapInputError(f"{c!r} is not a class name or label value of this map; values: {table.values}")
    return np.unique(np.asarray(out, np.int64))


def value_name(cmap: ClassificationMap, value: int) -> str:
    """The class name of label ``value`` (``"unknown"`` for 255)."""
    table = cmap.class_table
    return UNKNOWN_NAME if value == UNKNOWN else table.names[table.index_of_value(value)]


def map_image_name(cmap: ClassificationMap) -> str:
    """The image a map was computed from, as recorded in its store (its file), else the store's name."""
    if cmap.path is None:
        return ""
    from ..maps._mapstore import read_attrs

    try:
        recorded = ((read_attrs(cmap.path).get("run") or {}).get("image") or {}).get("path")
    except TilemapInputError:
        recorded = None
    return str(recorded) if recorded else Path(cmap.path).name


def cell_extent(index: np.ndarray, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First pixel and pixel count of cells ``index`` along an axis of ``size`` pixels."""
    start = np.asarray(index, np.int64) * step
    return start, np.minimum(start + step, size) - start


def read_block(array, rows: slice, cols: slice) -> np.ndarray:
    """``array[..., rows, cols]`` as NumPy (zarr, dask or NumPy arrays)."""
    return np.asarray(array[..., rows, cols])


class _Accumulator:
    """Per-label sums of every block, the label pairs that touch across block borders, and
    their merge into regions."""

    def __init__(self, cmap: ClassificationMap, wanted: np.ndarray, block_cells: int) -> None:
        self.cmap, self.block = cmap, block_cells
        self.keep = np.zeros(256, bool)
        self.keep[wanted] = True
        table = cmap.class_table
        self.index_of = np.zeros(256, np.int64)
        self.index_of[list(table.values)] = np.arange(len(table))
        self.parts: list[dict[str, np.ndarray]] = []
        self.pairs: list[np.ndarray] = []
        self.count = 0
        self.offsets: dict[tuple[int, int], int] = {}
        """Global label of each block's local label 0, by the block's first (row, column)."""
        self.value_cells = np.zeros(256, np.int64)
        self.value_pixels = np.zeros(256, np.int64)

    def run(self) -> None:
        h, w = self.cmap.shape
        above = None  # (labels, classes) of the last row of the previous block row
        for r0 in range(0, h, self.block):
            r1 = min(r0 + self.block, h)
            top = np.zeros((2, w), np.int64)
            bottom = np.zeros((2, w), np.int64)
            left = None
            for c0 in range(0, w, self.block):
                c1 = min(c0 + self.block, w)
                labels, classes = self._block(r0, r1, c0, c1)
                top[:, c0:c1] = labels[0], classes[0]
                bottom[:, c0:c1] = labels[-1], classes[-1]
                if left is not None:
                    self._touching(left, (labels[:, 0], classes[:, 0]))
                left = labels[:, -1], classes[:, -1]
            if above is not None:
                self._touching(above, top)
            above = bottom

    def label_block(self, classes: np.ndarray) -> np.ndarray:
        """Local labels (1..n, 0 elsewhere) of the wanted classes' regions within one block."""
        from skimage.measure import label

        return label(np.where(self.keep[classes], classes.astype(np.int16) + 1, 0), background=0, connectivity=2)

    def _block(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Label one block and add up its labels' figures; its global labels and classes."""
        from scipy import ndimage as ndi

        g = self.cmap.geometry
        rows, cols = slice(r0, r1), slice(c0, c1)
        classes = read_block(self.cmap.classes, rows, cols).astype(np.uint8, copy=False)
        self.offsets[(r0, c0)] = self.count
        ys, hs = cell_extent(np.arange(r0, r1), g.step, g.image_shape[0])
        xs, ws = cell_extent(np.arange(c0, c1), g.step, g.image_shape[1])
        area = np.outer(hs, ws)
        self.value_cells += np.bincount(classes.ravel(), minlength=256)
        self.value_pixels += np.bincount(classes.ravel(), weights=area.ravel(), minlength=256).astype(np.int64)
        local = self.label_block(classes)
        n = int(local.max())
        if n == 0:
            return np.zeros(classes.shape, np.int64), classes
        flat = local.ravel()
        index = np.arange(1, n + 1)
        scores = read_block(self.cmap.scores, rows, cols)
        own = np.take_along_axis(scores, self.index_of[classes][None], 0)[0].astype(np.float64)
        own[~self.keep[classes]] = 0.0
        boxes = ndi.find_objects(local)
        uniq, first = np.unique(flat, return_index=True)
        first = first[uniq > 0]
        ymid = (ys + (hs - 1) / 2.0)[:, None]
        xmid = (xs + (ws - 1) / 2.0)[None, :]
        part = {
            "value": classes.ravel()[first].astype(np.int64),
            "cells": np.bincount(flat, minlength=n + 1)[1:].astype(np.int64),
            "pixels": np.bincount(flat, weights=area.ravel(), minlength=n + 1)[1:].astype(np.int64),
            "sum_y": np.bincount(flat, weights=(area * ymid).ravel(), minlength=n + 1)[1:],
            "sum_x": np.bincount(flat, weights=(area * xmid).ravel(), minlength=n + 1)[1:],
            "score_sum": np.bincount(flat, weights=own.ravel(), minlength=n + 1)[1:],
            "score_max": np.asarray(ndi.maximum(own, local, index), np.float64).reshape(n),
            "r0": np.array([b[0].start for b in boxes], np.int64) + r0,
            "r1": np.array([b[0].stop for b in boxes], np.int64) + r0,
            "c0": np.array([b[1].start for b in boxes], np.int64) + c0,
            "c1": np.array([b[1].stop for b in boxes], np.int64) + c0,
            "first": (first // (c1 - c0) + r0) * self.cmap.shape[1] + first % (c1 - c0) + c0,
        }
        self.parts.append(part)
        out = np.where(local > 0, local.astype(np.int64) + self.count, 0)
        self.count += n
        return out, classes

    def _touching(self, a, b) -> None:
        """Pairs of labels of the same class in two lines of cells that face each other across a
        border; ``a`` and ``b`` are (labels, classes) of the two lines."""
        (la, ca), (lb, cb) = a, b
        n = len(la)
        for shift in (-1, 0, 1):
            i = slice(max(0, -shift), n - max(0, shift))
            j = slice(max(0, shift), n - max(0, -shift))
            hit = (la[i] > 0) & (lb[j] > 0) & (ca[i] == cb[j])
            if hit.any():
                self.pairs.append(np.stack([la[i][hit], lb[j][hit]], 1) - 1)

    def merge(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The region of every global label (0..m-1, labels counted from 0) and each region's
        figures: ``value``, ``cells``, ``pixels``, ``sum_y``, ``sum_x``, ``score_sum``,
        ``score_max``, ``r0``, ``r1``, ``c0``, ``c1``, ``first``."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.count
        cols = {k: np.concatenate([p[k] for p in self.parts]) if self.parts else np.zeros(0) for k in
                ("value", "cells", "pixels", "sum_y", "sum_x", "score_sum", "score_max", "r0", "r1", "c0", "c1",
                 "first")}
        if self.pairs and n:
            e = np.concatenate(self.pairs)
            graph = coo_matrix((np.ones(len(e), np.int8), (e[:, 0], e[:, 1])), shape=(n, n))
            m, comp = connected_components(graph, directed=False)
        else:
            m, comp = n, np.arange(n)
        merged = {k: np.bincount(comp, weights=cols[k], minlength=m) for k in
                  ("cells", "pixels", "sum_y", "sum_x", "score_sum")}
        for k, fn, init in (("score_max", np.maximum, -np.inf), ("r0", np.minimum, np.iinfo(np.int64).max),
                            ("c0", np.minimum, np.iinfo(np.int64).max), ("first", np.minimum, np.iinfo(np.int64).max),
                            ("r1", np.maximum, -1), ("c1", np.maximum, -1)):
            out = np.full(m, init, np.float64 if k == "score_max" else np.int64)
            fn.at(out, comp, cols[k].astype(out.dtype))
            merged[k] = out
        value = np.zeros(m, np.int64)
        value[comp] = cols["value"].astype(np.int64)
        merged["value"] = value
        return comp, merged

    def table(self, min_area: float, image: str) -> RegionTable:
        _, merged = self.merge()
        value = merged["value"]
        pixels = merged["pixels"].round().astype(np.int64)
        order = np.lexsort((merged["first"], value))
        order = order[pixels[order] >= min_area] if len(order) else order
        g = self.cmap.geometry
        (h, w), s = g.image_shape, g.step
        r0, r1, c0, c1 = (merged[k][order] for k in ("r0", "r1", "c0", "c1"))
        first = merged["first"][order]
        cells = merged["cells"][order].round().astype(np.int64)
        names = np.array([value_name(self.cmap, int(v)) for v in value[order]], dtype=object)
        return {
            "region": np.arange(1, len(order) + 1, dtype=np.int64),
            "image": np.full(len(order), image, dtype=object),
            "class_value": value[order],
            "class_name": names,
            "cells": cells,
            "area_px": pixels[order],
            "centroid_y": merged["sum_y"][order] / np.maximum(pixels[order], 1),
            "centroid_x": merged["sum_x"][order] / np.maximum(pixels[order], 1),
            "bbox_y0": r0 * s,
            "bbox_x0": c0 * s,
            "bbox_y1": np.minimum(r1 * s, h),
            "bbox_x1": np.minimum(c1 * s, w),
            "mean_score": merged["score_sum"][order] / np.maximum(cells, 1),
            "max_score": merged["score_max"][order],
            "first_row": first // self.cmap.shape[1],
            "first_col": first % self.cmap.shape[1],
        }


def _non_negative(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not np.isfinite(x) or x < 0:
        raise TilemapInputError(f"{what} must be a number of image pixels >= 0, got {x!r}")
    return float(x)


def _pixel_size(pixel_size) -> tuple[float, float] | None:
    if pixel_size is None:
        return None
    values = np.atleast_1d(np.asarray(pixel_size, dtype=object))
    try:
        size = tuple(float(v) for v in (values if len(values) == 2 else np.repeat(values, 2)))
    except (TypeError, ValueError):
        size = ()
    if len(values) not in (1, 2) or len(size) != 2 or not all(np.isfinite(v) and v > 0 for v in size):
        raise TilemapInputError(f"pixel_size must be one positive number or (y, x), got {pixel_size!r}")
    return size  # type: ignore[return-value]
