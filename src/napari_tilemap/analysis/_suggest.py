""""Paint here next": the map cells where the model is least sure, spread over the image.

A cell's uncertainty is its *margin*: the best class score minus the second best. A small margin
means the model hesitates between two classes there (a likely false alarm or a likely miss), so
painting the truth there teaches it most. Suggestions are taken by increasing margin, skipping
cells closer than ``spacing`` pixels to one already taken, so they do not cluster on one spot.

The map is read block by block. Taking ``n`` suggestions looks at no more than ``n * (D + 1)``
cells in margin order, D being the cells a suggestion's spacing disc blocks, so each block gives
only its ``n * (D + 1)`` smallest margins (and their ties) and the greedy pass over the merged
candidates is exactly the one over the whole map; memory does not grow with the map.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from .._errors import TilemapInputError


@dataclass(frozen=True, eq=False)
class Suggestions:
    """Where to paint next, most uncertain first.

    Attributes
    ----------
    positions : ndarray (n, 2) float64
        Centre of each suggested cell in image pixels (y, x): ``offset + (i*S, j*S)``.
    cells : ndarray (n, 2) int64
        Map cell (i, j) of each suggestion.
    margins : ndarray (n,) float32
        Best score minus second-best score (ascending).
    scores : ndarray (n, K) float32
        All class scores of each suggested cell.
    best, runner_up : ndarray (n,) int64
        Label values of the best and second-best class of each cell.
    class_names : tuple of str
        Names of the K classes (the order of ``scores``' columns).
    class_values : tuple of int
        Label values of the K classes.
    spacing : float
        Smallest distance in pixels between two suggestions.
    """

    positions: np.ndarray
    cells: np.ndarray
    margins: np.ndarray
    scores: np.ndarray
    best: np.ndarray
    runner_up: np.ndarray
    class_names: tuple[str, ...]
    class_values: tuple[int, ...]
    spacing: float

    def __len__(self) -> int:
        return len(self.margins)

    def features(self) -> dict[str, np.ndarray]:
        """Columns for a napari Points layer's ``features``: rank, classes, margin and scores."""
        name = dict(zip(self.class_values, self.class_names))
        out = {
            "rank": np.arange(1, len(self) + 1),
            "best": np.array([name[v] for v in self.best], dtype=object),
            "runner_up": np.array([name[v] for v in self.runner_up], dtype=object),
            "margin": self.margins,
            "score": self.scores.max(1) if len(self) else np.zeros(0, np.float32),
        }
        for k, n in enumerate(self.class_names):
            out[f"score {n}"] = self.scores[:, k]
        return out


def suggest(model_or_map, image=None, n: int = 20, spacing: float | None = None, *, device: str = "auto",
            block_size: int = 1024, block_cells: int = 1024) -> Suggestions:
    """Rank map cells by uncertainty and return the ``n`` most uncertain, at least ``spacing`` apart.

    Parameters
    ----------
    model_or_map : TileClassifier or ClassificationMap
        A model (``image`` is predicted first) or a map already computed.
    image : array_like or path, optional
        The image to predict with a model; ignored with a map.
    n : int
        How many suggestions at most (fewer when the spacing leaves no room for more).
    spacing : float, optional
        Smallest distance in image pixels between two suggestions (Euclidean, between cell
        centres); default the tile size T, so that no two suggestions share their centre tile's area.
    device, block_size
        Passed to :func:`~napari_tilemap.predict` with a model (a map larger than one block
        goes to a temporary store, removed afterwards).
    block_cells : int
        Side, in map cells, of the blocks the map is read in.

    Returns
    -------
    Suggestions
        By increasing margin (best score minus second best); ties keep the map's row-major order.

    Raises
    ------
    TilemapInputError
        For ``n`` below 1, a negative spacing, a model without ``image``, a map with one class.

    Examples
    --------
    >>> s = suggest(model, image, n=10)          # doctest: +SKIP
    >>> s.positions[0], s.margins[0]             # doctest: +SKIP
    """
    from ..learn._model import TileClassifier
    from ..maps._mapstore import ClassificationMap
    from ..maps._predict import predict_to_read

    if isinstance(n, bool) or int(n) != n or n < 1:
        raise TilemapInputError(f"n must be a whole number of suggestions >= 1, got {n!r}")
    if not isinstance(model_or_map, (TileClassifier, ClassificationMap)):
        raise TilemapInputError(f"expected a TileClassifier or a ClassificationMap, got {type(model_or_map).__name__}")
    if isinstance(model_or_map, TileClassifier) and image is None:
        raise TilemapInputError("suggest with a model needs the image: suggest(model, image)")
    if spacing is not None and (not np.isfinite(float(spacing)) or float(spacing) < 0):
        raise TilemapInputError(f"spacing must be a distance in pixels >= 0, got {spacing!r}")
    with contextlib.ExitStack() as stack:
        if isinstance(model_or_map, TileClassifier):
            cmap = predict_to_read(model_or_map, image, stack, block_size=block_size, prefix="tilemap-suggest-",
                                   device=device, min_score=None)
        else:
            cmap = model_or_map
        return _suggest_on(cmap, int(n), spacing, int(block_cells))


def _suggest_on(cmap, n: int, spacing: float | None, block_cells: int) -> Suggestions:
    geometry, table = cmap.geometry, cmap.class_table
    spacing = float(geometry.tile_size if spacing is None else spacing)
    if cmap.scores.shape[0] < 2:
        raise TilemapInputError("suggestions need a map of at least two classes")
    radius = spacing / geometry.step
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    blocked = int((dy**2 + dx**2 < radius**2).sum())
    chosen = _spaced(_candidates(cmap.scores, n * (blocked + 1), block_cells), cmap.shape, radius, n)
    ci, cj = np.unravel_index(chosen, cmap.shape)
    k = cmap.scores.shape[0]
    cell_scores = np.array([np.asarray(cmap.scores[:, i, j], np.float32) for i, j in zip(ci, cj)],
                           np.float32).reshape(-1, k)
    ranked = np.argsort(-cell_scores, axis=1, kind="stable")
    values = np.asarray(table.values, np.int64)
    top2 = -np.sort(-cell_scores, axis=1)[:, :2] if len(ci) else np.zeros((0, 2), np.float32)
    return Suggestions(
        positions=geometry.cell_centers(ci, cj).astype(np.float64).reshape(-1, 2),
        cells=np.stack([ci, cj], 1).astype(np.int64).reshape(-1, 2),
        margins=(top2[:, 0] - top2[:, 1]).astype(np.float32),
        scores=cell_scores,
        best=values[ranked[:, 0]] if len(ci) else np.zeros(0, np.int64),
        runner_up=values[ranked[:, 1]] if len(ci) else np.zeros(0, np.int64),
        class_names=tuple(table.names), class_values=tuple(int(v) for v in table.values), spacing=spacing,
    )


def _candidates(scores, per_block: int, block_cells: int) -> np.ndarray:
    """Flat cell indices of each block's ``per_block`` smallest margins (ties included), ordered by
    margin, then by flat index (row-major)."""
    from ..maps._blockrun import block_grid

    h, w = scores.shape[1:]
    flats, margins = [], []
    for (r0, r1), (c0, c1) in block_grid((h, w), block_cells):
        block = np.asarray(scores[:, r0:r1, c0:c1], np.float32)
        top2 = -np.partition(-block, 1, axis=0)[:2]
        margin = (top2[0] - top2[1]).ravel()
        if per_block < margin.size:
            margin_keep = margin <= np.partition(margin, per_block - 1)[per_block - 1]
        else:
            margin_keep = np.ones(margin.size, bool)
        local = np.flatnonzero(margin_keep)
        flats.append((local // (c1 - c0) + r0) * w + local % (c1 - c0) + c0)
        margins.append(margin[local])
    flat = np.concatenate(flats)
    return flat[np.lexsort((flat, np.concatenate(margins)))]


def _spaced(order: np.ndarray, shape: tuple[int, int], radius: float, n: int) -> np.ndarray:
    """The first ``n`` flat cell indices of ``order`` that lie ``radius`` cells or more from every
    earlier pick (greedy)."""
    picks: list[int] = []
    ys, xs = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for flat in order:
        i, j = divmod(int(flat), shape[1])
        k = len(picks)
        if k and ((ys[:k] - i) ** 2 + (xs[:k] - j) ** 2 < radius**2).any():
            continue
        picks.append(int(flat))
        ys[k], xs[k] = i, j
        if len(picks) == n:
            break
    return np.asarray(picks, np.int64)
