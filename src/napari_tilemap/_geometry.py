"""Map geometry: how cells of a classification map sit on the image (docs/design.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MapGeometry:
    """Where the cells of a classification map lie on its image.

    Cell ``(i, j)`` stands for the ``step``-sized pixel block starting at
    ``(i*step, j*step)`` and holds the scores of the ``tile_size`` tile centred on it.

    Parameters
    ----------
    tile_size : int
        T, the tile (receptive field) side in pixels.
    step : int
        S, the distance between neighbouring cells in pixels.
    image_shape : (int, int)
        (H, W) of the image the map was computed on.
    """

    tile_size: int
    step: int
    image_shape: tuple[int, int]

    def __post_init__(self) -> None:
        if (self.tile_size - self.step) % 2:
            raise ValueError(f"tile_size - step must be even, got T={self.tile_size}, S={self.step}")

    @property
    def halo(self) -> int:
        """Pixels of context a block reads on each side: (T - S) / 2."""
        return (self.tile_size - self.step) // 2

    @property
    def map_shape(self) -> tuple[int, int]:
        """(ceil(H/S), ceil(W/S))."""
        return tuple(math.ceil(n / self.step) for n in self.image_shape)  # type: ignore[return-value]

    @property
    def offset(self) -> tuple[float, float]:
        """Image pixel coordinate of the centre of cell (0, 0)."""
        o = (self.step - 1) / 2
        return (o, o)

    def cell_centers(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Image coordinates (y, x) of the centres of cells ``(rows, cols)``."""
        return np.stack([np.asarray(rows) * self.step, np.asarray(cols) * self.step], -1) + self.offset

    def cell_of_pixel(self, y: float, x: float) -> tuple[int, int]:
        """The map cell whose block contains image pixel ``(y, x)``."""
        return int(y // self.step), int(x // self.step)

    def layer_transform(
        self,
        image_scale: tuple[float, float] = (1.0, 1.0),
        image_translate: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` of a napari map layer aligned with an image layer."""
        scale = tuple(float(s) * self.step for s in image_scale)
        translate = tuple(float(t) + float(s) * o for t, s, o in zip(image_translate, image_scale, self.offset))
        return scale, translate  # type: ignore[return-value]

    def to_attrs(self) -> dict:
        """The geometry part of the map store's ``tilemap`` attribute."""
        return {
            "step": self.step,
            "tile_size": self.tile_size,
            "offset": list(self.offset),
            "image_shape": list(self.image_shape),
        }


def reflect_indices(start: int, stop: int, n: int) -> np.ndarray:
    """Indices ``start..stop-1`` into an axis of length ``n``, reflected symmetrically.

    Matches ``numpy.pad(mode="symmetric")``: the edge pixel is repeated, so index -1
    maps to 0 and index n maps to n-1, with as many reflections as needed.
    """
    idx = np.arange(start, stop) % (2 * n)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)
