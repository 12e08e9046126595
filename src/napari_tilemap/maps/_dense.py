"""The block function: one fully-convolutional pass over an image window with its halo.

With test-time augmentation the window is also turned by multiples of 90° and mirrored: a
window is the union of its cells' tiles, laid S apart, so every orientation of the window holds
every cell's tile in that orientation, and turning the scores back lines each cell up again.
"""

from __future__ import annotations

import numpy as np
import torch

from .._geometry import MapGeometry, reflect_indices


def window_indices(geometry: MapGeometry, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image row and column indices a block of map cells reads, halo and reflection included.

    Parameters
    ----------
    geometry : MapGeometry
        The map's geometry.
    rows, cols : (int, int)
        Half-open ranges of map cells the block computes.
    """
    s, h = geometry.step, geometry.halo
    height, width = geometry.image_shape
    return (
        reflect_indices(rows[0] * s - h, rows[1] * s + h, height),
        reflect_indices(cols[0] * s - h, cols[1] * s + h, width),
    )


def read_window(image, row_idx: np.ndarray, col_idx: np.ndarray) -> np.ndarray:
    """Gather ``image[row_idx][:, col_idx]`` reading only the bounding box from ``image``.

    ``image`` is anything sliceable as (Y, X, C): numpy, an :class:`ImageSource`, zarr.
    """
    r0, r1 = int(row_idx.min()), int(row_idx.max()) + 1
    c0, c1 = int(col_idx.min()), int(col_idx.max()) + 1
    box = np.asarray(image[slice(r0, r1), slice(c0, c1)])
    if len(row_idx) == r1 - r0 and len(col_idx) == c1 - c0 and row_idx[0] == r0 and col_idx[0] == c0 \
            and np.all(np.diff(row_idx) == 1) and np.all(np.diff(col_idx) == 1):
        return box  # an interior window: no reflection, no copy
    return box[np.ix_(row_idx - r0, col_idx - c0)]


Orientation = tuple[int, bool]
"""A quarter-turn count k (``np.rot90``) and whether the turned window is then mirrored left-right."""

AS_IS: tuple[Orientation, ...] = ((0, False),)
"""The window as it is: no test-time augmentation."""


def dense_scores(net: torch.nn.Module, window: np.ndarray, device: torch.device | None = None,
                 orientations: tuple[Orientation, ...] = AS_IS) -> np.ndarray:
    """Class scores for every tile position in ``window`` (or a stack of equal windows).

    Parameters
    ----------
    net : torch.nn.Module
        An inference network from :meth:`TileClassifier.inference_network`; it ends in the
        model's output activation (softmax or sigmoid), and its output is returned as it is.
    window : ndarray of shape ([N,] (rows-1)*S + T, (cols-1)*S + T, C)
        Raw image intensities including the halo.
    orientations : tuple of (int, bool)
        The orientations whose scores are averaged (test-time augmentation); default the window
        as it is.

    Returns
    -------
    ndarray of shape ([N,] classes, rows, cols), float32
    """
    if orientations == AS_IS:
        return _scores(net, window, device)
    total = None
    for k, mirror in orientations:
        turned = np.rot90(window, k, axes=(-3, -2))
        scores = _scores(net, turned[..., ::-1, :] if mirror else turned, device)
        scores = np.rot90(scores[..., ::-1] if mirror else scores, -k, axes=(-2, -1))
        total = scores.astype(np.float64) if total is None else total + scores
    return (total / len(orientations)).astype(np.float32)


def _scores(net: torch.nn.Module, window: np.ndarray, device: torch.device | None) -> np.ndarray:
    if device is None:
        device = next(net.parameters()).device
    batch = np.asarray(window).ndim == 4
    # (N, Y, X, C) memory viewed as (N, C, Y, X) is exactly torch's channels_last layout: no copy.
    x = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))
    x = x.permute(0, 3, 1, 2) if batch else x.permute(2, 0, 1)[None]
    with torch.inference_mode():
        out = net(x.to(device, non_blocking=True)).float().cpu().numpy()
    return out if batch else out[0]


def trained_orientations(model) -> tuple[Orientation, ...]:
    """The orientations ``model`` learnt to score alike: from the augmentations of its training
    (``rot90``: the four quarter turns; ``flip``: left-right mirrors; both: all eight). A model that
    records no augmentation (made before they were recorded) was trained with both.

    Raises
    ------
    TilemapInputError
        The model was trained without ``flip`` and ``rot90``: other orientations are new to it.
    """
    from .._errors import TilemapInputError

    recorded = (model.record or {}).get("augment")
    names = {"flip", "rot90"} if recorded is None else set(recorded)
    turns = range(4) if "rot90" in names else (0,)
    mirrors = (False, True) if "flip" in names else (False,)
    out = tuple((k, m) for k in turns for m in mirrors)
    if len(out) < 2:
        raise TilemapInputError(
            "test-time augmentation averages the orientations a model was trained on, and this one was trained "
            "without 'flip' and 'rot90' (a direction-dependent defect?): predict without it"
        )
    return out
