"""COCO run-length encoding of full-resolution region masks, computed from map cells.

COCO RLE runs through the image column by column (Fortran order), alternating runs of 0
and 1 starting with 0. A region's full-resolution mask repeats each cell's column ``S``
times across and each cell ``S`` times down, so its runs follow from the cells without
ever making the full-resolution mask.
"""

from __future__ import annotations

import numpy as np


def region_rle_counts(mask: np.ndarray, origin: tuple[int, int], step: int, image_shape: tuple[int, int]) -> np.ndarray:
    """COCO (uncompressed) RLE counts of the full-resolution mask of a region.

    Parameters
    ----------
    mask : ndarray of bool (h, w)
        The region's cells in a window of the map.
    origin : (int, int)
        The map cell of ``mask[0, 0]``.
    step : int
        S, pixels per cell side.
    image_shape : (int, int)
        (H, W) of the image; cells past its edge are clipped.

    Returns
    -------
    ndarray of int64
        Run lengths, the first one of 0s (possibly 0); they sum to H * W.
    """
    h_img, w_img = image_shape
    m = np.asarray(mask, bool)
    padded = np.zeros((m.shape[0] + 2, m.shape[1]), np.int8)
    padded[1:-1] = m
    change = np.diff(padded, axis=0)
    s_col, s_row = np.nonzero(change.T == 1)  # sorted by column, then row
    _, e_row = np.nonzero(change.T == -1)
    y0 = (s_row + origin[0]) * step
    y1 = np.minimum((e_row + origin[0]) * step, h_img)
    x_first = (s_col + origin[1]) * step
    widths = np.minimum(x_first + step, w_img) - x_first
    # one run per pixel column: repeat each cell run over the pixel columns of its cell column
    reps = np.repeat(np.arange(len(y0)), widths)
    within = np.arange(len(reps)) - np.repeat(np.cumsum(widths) - widths, widths)
    x = x_first[reps] + within
    order = np.lexsort((y0[reps], x))
    x, ys, ye = x[order], y0[reps][order], y1[reps][order]
    edges = np.empty(2 * len(x), np.int64)
    edges[0::2] = x * h_img + ys
    edges[1::2] = x * h_img + ye
    # a run ending at the bottom of one column and one starting at the top of the next join up
    joined = np.nonzero(edges[2::2] == edges[1:-1:2])[0]
    drop = np.concatenate([2 * joined + 1, 2 * joined + 2])
    edges = np.delete(edges, drop)
    counts = np.diff(np.concatenate([[0], edges, [h_img * w_img]])).astype(np.int64)
    return counts[:-1] if len(counts) > 1 and counts[-1] == 0 else counts


def compress_counts(counts: np.ndarray) -> str:
    """COCO's compressed string form of RLE counts (as ``pycocotools.mask.encode`` writes it).

    Each count from the fourth on is stored as its difference to the count two before; each
    number is written in 5-bit groups, least significant first, as characters from 48 on,
    with 0x20 set on every group but the last.
    """
    c = np.asarray(counts, np.int64)
    x = c.copy()
    if len(c) > 3:
        x[3:] -= c[1:-2]
    groups = []
    more = np.ones(len(x), bool)
    for _ in range(14):  # 64-bit numbers need at most 13 groups
        if not more.any():
            break
        chunk = x & 0x1F
        x = x >> 5
        last = np.where(chunk & 0x10, x == -1, x == 0)
        groups.append(np.where(more, chunk | np.where(last, 0, 0x20), -1))
        more = more & ~last
    chars = np.stack(groups, 1).ravel()
    return (chars[chars >= 0] + 48).astype(np.uint8).tobytes().decode("ascii")
