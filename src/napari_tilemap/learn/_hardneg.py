"""Hard negatives: unpainted cells that a model calls a painted class, added as background tiles.

With ``background='unpainted'`` the user declares everything unpainted to be background, so an
unpainted cell that the model scores as a painted class is a mistake on the training image itself
(a false alarm), and a tile centred on it is a valid background tile under the same centre rule as
every other background tile.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from .._errors import TilemapInputError
from .._progress import run_to_end
from ._tiles import TileSet, _window, background_centres

MAX_HARD_NEGATIVES = 512
"""Most hard negatives one round adds: the highest-scoring ones."""


@dataclass(frozen=True)
class MiningProgress:
    """A hard-negative round starts looking for false alarms on training image ``image`` of ``images``."""

    round: int
    image: int
    images: int


def check_minable(tiles: TileSet) -> None:
    """Refuse tiles that cannot give hard negatives, saying why and what to do.

    Raises
    ------
    TilemapInputError
        Without a background class (``background='none'``: unpainted pixels are not declared
        background), or without the source images (tiles not made by :func:`extract_tiles`).
    """
    if not tiles.class_table.has_background or tiles.background_gap is None:
        raise TilemapInputError(
            "hard negatives need background='unpainted' (unpainted pixels declared background); with "
            "background='none' unpainted pixels may be any class: use hard_negative_rounds=0"
        )
    if tiles.sources is None:
        raise TilemapInputError(
            "hard negatives need the training images: use tiles made by extract_tiles (they keep their "
            "images and labels), or hard_negative_rounds=0"
        )


def hard_negative_origins(model, tiles: TileSet, *, min_score: float = 0.5, max_tiles: int = MAX_HARD_NEGATIVES,
                          device: str = "auto") -> np.ndarray:
    """(n, 3) rows of (image, y, x) origins of the hard negatives of ``model`` on the training images.

    A map cell is a hard negative when its best class is a painted class with score at least
    ``min_score`` and its tile would be a background tile: its centre pixel (``i*S + S//2``, clipped
    to the image) keeps ``tiles.background_gap`` pixels from paint.
    The ``max_tiles`` highest-scoring ones are returned, best first.
    """
    return run_to_end(search_hard_negatives(model, tiles, min_score=min_score, max_tiles=max_tiles, device=device))


def search_hard_negatives(model, tiles: TileSet, *, min_score: float = 0.5, max_tiles: int = MAX_HARD_NEGATIVES,
                          device: str = "auto", round: int = 1,
                          cancel=None) -> Generator[MiningProgress, None, np.ndarray]:
    """:func:`hard_negative_origins` as a generator: yields a :class:`MiningProgress` before each
    training image is predicted and returns the rows; ``cancel`` (checked after every block of the
    prediction) raises :class:`~napari_tilemap._progress.Cancelled`."""
    from ..maps._predict import predict

    check_minable(tiles)
    images, labels = tiles.sources
    t, s = tiles.tile_size, model.step
    found, scores = [], []
    for i, (image, lab) in enumerate(zip(images, labels)):
        yield MiningProgress(round, i + 1, len(images))
        cmap = predict(model, image, device=device, pyramid=False, min_score=None, cancel=cancel)
        probs = np.asarray(cmap.scores, np.float32)
        best = probs.argmax(0)
        top = probs.max(0)
        ci, cj = np.nonzero((best != 0) & (top >= min_score))
        cy, cx = np.minimum(ci * s + s // 2, lab.shape[0] - 1), np.minimum(cj * s + s // 2, lab.shape[1] - 1)
        keep = background_centres(lab, tiles.background_gap)[cy, cx]
        origins = np.stack([cy, cx], 1)[keep] - t // 2
        found.append(np.c_[np.full(len(origins), i), origins])
        scores.append(top[ci[keep], cj[keep]])
    rows = np.concatenate(found).astype(np.int64) if found else np.zeros((0, 3), np.int64)
    order = np.argsort(-np.concatenate(scores), kind="stable")[:max_tiles] if found else []
    return rows[order]


def mine_hard_negatives(model, tiles: TileSet, *, min_score: float = 0.5, max_tiles: int = MAX_HARD_NEGATIVES,
                        device: str = "auto") -> TileSet:
    """``tiles`` plus background tiles at the hard negatives of ``model`` (see :func:`hard_negative_origins`).

    Parameters
    ----------
    model : TileClassifier
        A model trained on ``tiles`` (same tile size and classes).
    tiles : TileSet
        Tiles from :func:`extract_tiles` with ``background='unpainted'``; they keep their images.
    min_score : float
        Smallest painted-class score that makes an unpainted cell a hard negative.
    max_tiles : int
        Most tiles added, highest scores first.
    device : str
        Device of the prediction over the training images.

    Returns
    -------
    TileSet
        The same tiles followed by the new background tiles (class 0, blob id -1).

    Raises
    ------
    TilemapInputError
        For tiles without a background class or without their source images.
    """
    return with_hard_negatives(tiles, hard_negative_origins(model, tiles, min_score=min_score, max_tiles=max_tiles,
                                                            device=device))


def with_hard_negatives(tiles: TileSet, rows: np.ndarray) -> TileSet:
    """``tiles`` followed by background tiles at ``rows`` of (image, y, x) tile origins."""
    images = tiles.sources[0]
    t, m = tiles.tile_size, tiles.margin
    windows = [_window(images[i], y - m, x - m, t + 2 * m) for i, y, x in rows]
    shape = (0, t + 2 * m, t + 2 * m, tiles.in_channels)
    return tiles.extended(np.stack(windows) if windows else np.zeros(shape, np.float32), rows[:, 0], rows[:, 1:])
