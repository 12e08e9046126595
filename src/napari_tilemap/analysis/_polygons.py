"""Exact outlines of map regions: polygons along cell edges, holes kept, and the region masks.

A region's outline follows the edges of its cells, so rasterising the polygons gives back
the region exactly. A region is split into its 4-connected pieces (cells that touch only
at a corner belong to different pieces), each piece one polygon: an exterior ring and one
ring per hole. Rings are simple; a hole may touch its exterior, and two pieces may touch,
only at a vertex (valid OGC / GeoJSON geometry).

Vertices are ``(y, x)`` in cell units: cell (i, j) is the unit square from (i, j) to
(i + 1, j + 1). Exterior rings run counter-clockwise and holes clockwise in the (x, y)
plane, as GeoJSON asks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..maps._mapstore import ClassificationMap
from ._regions import RegionTable, read_block

IN_MEMORY_CELLS = 1 << 23
"""Maps with up to this many cells are labelled in one piece to cut out region masks; larger
maps are read one region window at a time."""

Polygon = list[np.ndarray]
"""An exterior ring, then its holes: (N, 2) arrays of (y, x) vertices, not repeating the first."""


def mask_polygons(mask: np.ndarray) -> list[Polygon]:
    """Polygons whose union is exactly the True cells of ``mask``, one per 4-connected piece.

    Parameters
    ----------
    mask : ndarray of bool (H, W)

    Returns
    -------
    list of Polygon
        Largest piece first; vertices in cell units of ``mask``.

    Examples
    --------
    >>> [ring.tolist() for ring in mask_polygons(np.ones((1, 2), bool))[0]]
    [[[1, 2], [1, 0], [0, 0], [0, 2]]]
    """
    from skimage.measure import label

    pieces = label(np.asarray(mask, bool), connectivity=1)
    rings = _rings(np.pad(pieces, 1))
    polygons: dict[int, Polygon] = {}
    holes: dict[int, list[np.ndarray]] = {}
    areas: dict[int, float] = {}
    for owner, ring in rings:
        ring = ring[::-1] - 1  # traced with the piece on the left (y down): reversed, exteriors turn positive
        area = _signed_area(ring)
        if area > 0:
            polygons[owner] = [ring]
            areas[owner] = area
        else:
            holes.setdefault(owner, []).append(ring)
    order = sorted(polygons, key=lambda k: (-areas[k], k))
    return [polygons[k] + holes.get(k, []) for k in order]


def _rings(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Closed boundary rings of every label of a zero-padded label image, as (label, vertices)."""
    seg = _segments(labels)
    if not len(seg["owner"]):
        return []
    owner, sy, sx, ey, ex, dy, dx = (seg[k] for k in ("owner", "sy", "sx", "ey", "ex", "dy", "dx"))
    width = labels.shape[1] + 1
    start_key = (owner * (labels.shape[0] + 1) + sy) * width + sx
    end_key = (owner * (labels.shape[0] + 1) + ey) * width + ex
    order = np.argsort(start_key, kind="stable")
    lo = np.searchsorted(start_key[order], end_key, "left")
    hi = np.searchsorted(start_key[order], end_key, "right")
    nxt = order[np.minimum(lo, len(order) - 1)]
    pinch = np.nonzero(hi - lo == 2)[0]
    if len(pinch):
        # Two ways on at a vertex where a piece touches itself at a corner: turn right, which
        # keeps the piece's cells together and leaves the corner-touching hole as its own ring.
        a, b = order[lo[pinch]], order[lo[pinch] + 1]
        right_a = (dy[a] == dx[pinch]) & (dx[a] == -dy[pinch])
        nxt[pinch] = np.where(right_a, a, b)
    seen = np.zeros(len(nxt), bool)
    out = []
    nxt_list = nxt.tolist()
    for i in range(len(nxt)):
        if seen[i]:
            continue
        cycle = [i]
        seen[i] = True
        j = nxt_list[i]
        while j != i:
            cycle.append(j)
            seen[j] = True
            j = nxt_list[j]
        idx = np.asarray(cycle)
        out.append((int(owner[i]), np.stack([sy[idx], sx[idx]], 1)))
    return out


def _segments(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Maximal straight boundary segments of every label, directed with the label on the left.

    With x to the right and y down, the top edge of a cell runs right to left, its left edge
    downwards, its bottom edge left to right and its right edge upwards.
    """
    parts = []
    above, below = labels[:-1], labels[1:]
    # horizontal edges on row line y = i + 1 between cell rows i and i + 1
    for owner_side, sign in ((below, -1), (above, 1)):
        owner = np.where(above != below, owner_side, 0)
        parts.append(_runs(owner, horizontal=True, sign=sign, offset=1))
    left, right = labels[:, :-1], labels[:, 1:]
    for owner_side, sign in ((right, 1), (left, -1)):
        owner = np.where(left != right, owner_side, 0)
        parts.append(_runs(owner.T, horizontal=False, sign=sign, offset=1))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _runs(owner: np.ndarray, *, horizontal: bool, sign: int, offset: int) -> dict[str, np.ndarray]:
    """Runs of equal non-zero owners along each line of ``owner`` as directed segments.

    Line ``k`` of ``owner`` lies on grid line ``k + offset``; a run covering entries a..b-1
    spans grid points a..b along the line, walked from a to b (``sign`` 1) or b to a (-1).
    """
    n, m = owner.shape
    padded = np.zeros((n, m + 2), owner.dtype)
    padded[:, 1:-1] = owner
    change = padded[:, 1:] != padded[:, :-1]
    line, pos = np.nonzero(change)
    before = padded[line, pos]
    after = padded[line, pos + 1]
    starts = after != 0
    ends = before != 0
    s_line, s_pos, s_owner = line[starts], pos[starts], after[starts]
    e_pos = pos[ends]
    a, b = s_pos, e_pos
    grid = s_line + offset
    if sign > 0:
        p0, p1 = a, b
    else:
        p0, p1 = b, a
    d = np.full(len(a), sign, np.int64)
    zero = np.zeros(len(a), np.int64)
    if horizontal:
        return {"owner": s_owner.astype(np.int64), "sy": grid, "sx": p0, "ey": grid, "ex": p1, "dy": zero, "dx": d}
    return {"owner": s_owner.astype(np.int64), "sy": p0, "sx": grid, "ey": p1, "ex": grid, "dy": d, "dx": zero}


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area in the (x, y) plane: positive for counter-clockwise rings."""
    y, x = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2


def region_masks(cmap: ClassificationMap, table: RegionTable) -> Iterator[tuple[int, tuple[int, int], np.ndarray]]:
    """``(row, (r0, c0), mask)`` for every row of a regions table of ``cmap``.

    ``mask`` is the region's cells in the window of its bounding box, whose first cell is
    ``(r0, c0)``. ``table`` must come from :func:`~._regions.regions` of this very map
    (thresholded the same way).
    """
    from skimage.measure import label

    h, w = cmap.shape
    s = cmap.step
    n = len(table["region"])
    if n == 0:
        return
    if h * w <= IN_MEMORY_CELLS:
        classes = read_block(cmap.classes, slice(0, h), slice(0, w))
        keep = np.zeros(256, bool)
        keep[np.unique(table["class_value"])] = True
        labels = label(np.where(keep[classes], classes.astype(np.int16) + 1, 0), background=0, connectivity=2)
        from scipy import ndimage as ndi

        boxes = ndi.find_objects(labels)
        for row in range(n):
            lab = labels[table["first_row"][row], table["first_col"][row]]
            box = boxes[lab - 1]
            yield row, (box[0].start, box[1].start), labels[box] == lab
        return
    for row in range(n):
        r0, c0 = int(table["bbox_y0"][row]) // s, int(table["bbox_x0"][row]) // s
        r1, c1 = -(-int(table["bbox_y1"][row]) // s), -(-int(table["bbox_x1"][row]) // s)
        window = read_block(cmap.classes, slice(r0, r1), slice(c0, c1))
        labels = label(window == table["class_value"][row], background=0, connectivity=2)
        yield row, (r0, c0), labels == labels[table["first_row"][row] - r0, table["first_col"][row] - c0]


def pixel_polygon(polygon: Polygon, origin: tuple[int, int], step: int, image_shape: tuple[int, int]) -> Polygon:
    """A polygon of a mask window in image pixel-edge coordinates (pixel (y, x) spans [y, y+1) x [x, x+1)),
    clipped to the image."""
    h, w = image_shape
    out = []
    for ring in polygon:
        y = np.minimum((ring[:, 0] + origin[0]) * step, h)
        x = np.minimum((ring[:, 1] + origin[1]) * step, w)
        out.append(np.stack([y, x], 1))
    return out


def region_outlines(cmap: ClassificationMap, table: RegionTable) -> list[np.ndarray]:
    """The exterior ring of every region's largest piece, in image pixel-edge coordinates (y, x).

    For drawing tools without holes or multi-part shapes (napari Shapes): one ring per row
    of ``table``, in its order.
    """
    out: list[np.ndarray] = [np.zeros((0, 2))] * len(table["region"])
    for row, origin, mask in region_masks(cmap, table):
        out[row] = pixel_polygon(mask_polygons(mask)[0][:1], origin, cmap.step, cmap.geometry.image_shape)[0]
    return out
