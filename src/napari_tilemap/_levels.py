"""Per-image normalisation: each image's own robust intensity range.

A model trained with ``normalise="image"`` sees every image, in training and in prediction alike,
mapped by its own low and high percentiles per channel to about [0, 1] before its usual
normalisation. Photographs taken under other lighting, gain or exposure then look alike to it. The
levels of an image are read once, before any block, so a map is the same in threads and on dask.
"""

from __future__ import annotations

import numpy as np

from .io._sources import ImageSource, open_image

NORMALISATIONS = ("dataset", "image")
"""Choices of :attr:`~napari_tilemap.TrainConfig.normalise`: ``"dataset"`` (the mean and spread of the
training tiles only) or ``"image"`` (first each image's own percentiles, :func:`image_levels`)."""
PERCENTILES = (1.0, 99.0)
"""The low and high percentiles that per-image normalisation maps to 0 and 1."""
WHOLE_IMAGE_PIXELS = 1 << 22
"""Images of up to this many pixels (4 Mpx) are read whole for their levels; larger ones on a grid of
windows (:data:`GRID` × :data:`GRID` windows of :data:`WINDOW`² px), so that a slide of any size costs a
few megabytes of reading."""
GRID, WINDOW = 16, 128


def image_levels(image, percentiles: tuple[float, float] = PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """(C,) low and high ``percentiles`` of each channel of ``image``.

    Parameters
    ----------
    image : array_like, path or ImageSource
        (Y, X) or (Y, X, C) image, as :func:`~napari_tilemap.predict` takes it.
    percentiles : (float, float)
        The low and high percentile, 0 ≤ low < high ≤ 100.

    Returns
    -------
    (low, high) : tuple of ndarray (C,) float64

    Examples
    --------
    >>> lo, hi = image_levels(np.arange(10000.0).reshape(100, 100))
    >>> float(lo[0]), float(hi[0])
    (99.99, 9899.01)
    """
    source = image if isinstance(image, ImageSource) else open_image(image)
    h, w = source.shape
    if h * w <= WHOLE_IMAGE_PIXELS:
        pixels = source.read((0, h), (0, w)).reshape(-1, source.channels)
    else:
        pixels = np.concatenate([source.read(r, c).reshape(-1, source.channels) for r, c in _grid(h, w)])
    lo, hi = np.percentile(pixels.astype(np.float64), percentiles, axis=0)
    return lo, hi


SPAN_FLOOR = 1e-3
"""Smallest span, relative to the levels' magnitude (at least 1): a uniform or nearly uniform channel is
amplified at most 1000 times (a uniform one maps to 0), never divided by zero."""


def level_span(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(C,) ``high - low``, at least :data:`SPAN_FLOOR` times the larger of 1, ``|low|`` and ``|high|``."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    return np.maximum(high - low, SPAN_FLOOR * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high))))


def rescale(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``x`` (..., C) mapped so that ``low`` goes to 0 and ``high`` to 1 in each channel (float32)."""
    # float32 throughout: a float64 copy of a training set's windows would double its memory
    low32, span32 = np.asarray(low, np.float32), level_span(low, high).astype(np.float32)
    return (np.asarray(x, np.float32) - low32) / span32


def _grid(h: int, w: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """:data:`GRID`² windows of up to :data:`WINDOW`² px spread evenly over an h×w image."""
    def starts(n: int) -> np.ndarray:
        side = min(WINDOW, n)
        return np.unique(np.linspace(0, n - side, GRID).round().astype(int)), side

    (ys, sy), (xs, sx) = starts(h), starts(w)
    return [((int(y), int(y) + sy), (int(x), int(x) + sx)) for y in ys for x in xs]
