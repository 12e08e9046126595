"""Dense prediction: the classification map of an image, block by block."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._dense import dense_scores, read_window, window_indices
from ._devices import release_memory, resolve_device
from ._errors import TilemapInputError
from ._mapstore import ClassificationMap, create_store, mark_complete
from ._model import TileClassifier
from ._progress import CancelToken, Cancelled, is_cancelled


@dataclass(frozen=True)
class BlockDone:
    """One block of the map has been computed (and written, when there is a store)."""

    rows: tuple[int, int]
    cols: tuple[int, int]
    done: int
    total: int


def block_grid(map_shape: tuple[int, int], block_cells: int) -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    """Half-open (rows, cols) ranges of map cells, row-major, ``block_cells`` a side."""
    h, w = map_shape
    for r in range(0, h, block_cells):
        for c in range(0, w, block_cells):
            yield (r, min(r + block_cells, h)), (c, min(c + block_cells, w))


def iter_predict(
    model: TileClassifier,
    image,
    out=None,
    *,
    block_size: int = 1024,
    device: str = "auto",
    scores_dtype: str = "float32",
    overwrite: bool = False,
) -> Generator[BlockDone, None, ClassificationMap]:
    """Like :func:`predict`, as a generator of :class:`BlockDone` events.

    Closing the generator stops after the current block; a store written so far stays
    marked incomplete. The generator's return value is the :class:`ClassificationMap`.
    """
    from ._images import as_image

    img = as_image(image)
    _check_fits(model, img)
    geometry = model.geometry(img.shape[:2])
    cells = _block_cells(block_size, model.step)
    k = len(model.class_table)
    values = np.asarray(model.class_table.values, np.uint8)
    if out is not None:
        group = create_store(out, geometry, model.class_table, chunk=cells, scores_dtype=scores_dtype, overwrite=overwrite)
        scores, classes = group["scores"], group["classes"]
    else:
        group = None
        scores = np.zeros((k, *geometry.map_shape), np.dtype(scores_dtype))
        classes = np.zeros(geometry.map_shape, np.uint8)
    dev = resolve_device(device)
    net = model.inference_network(dev)
    blocks = list(block_grid(geometry.map_shape, cells))
    try:
        for n, (rows, cols) in enumerate(blocks, 1):
            ri, ci = window_indices(geometry, rows, cols)
            s = dense_scores(net, read_window(img, ri, ci), dev)
            scores[:, rows[0] : rows[1], cols[0] : cols[1]] = s.astype(scores_dtype)
            classes[rows[0] : rows[1], cols[0] : cols[1]] = values[s.argmax(0)]
            yield BlockDone(rows, cols, n, len(blocks))
    finally:
        release_memory(dev)
    if group is not None:
        mark_complete(group)
    return ClassificationMap(scores, classes, geometry, model.class_table, Path(out) if out is not None else None)


def predict(
    model: TileClassifier,
    image,
    out=None,
    *,
    block_size: int = 1024,
    device: str = "auto",
    scores_dtype: str = "float32",
    overwrite: bool = False,
    callback: Callable[[BlockDone], None] | None = None,
    cancel: CancelToken = None,
) -> ClassificationMap:
    """Compute the classification map of ``image`` densely, block by block.

    Parameters
    ----------
    model : TileClassifier
        A trained model.
    image : array_like
        (Y, X) or (Y, X, C) image with the channels the model was trained on.
    out : str or Path, optional
        Write the map to this zarr store (DESIGN.md layout); it must not exist unless
        ``overwrite`` is true.
    block_size : int
        Side of a work block in image pixels, rounded down to a multiple of the step.
    device : str
        'auto', 'cpu', 'cuda' or 'mps'.
    scores_dtype : {'float32', 'float16'}
        Storage type of the scores.
    overwrite : bool
        Replace an existing store at ``out``.
    callback : callable, optional
        Called with a :class:`BlockDone` after every block.
    cancel : threading.Event or callable, optional
        Checked after every block; when set, :class:`Cancelled` is raised and a store
        written so far stays marked incomplete.

    Returns
    -------
    ClassificationMap

    Examples
    --------
    >>> cmap = predict(model, image, out="map.zarr")   # doctest: +SKIP
    >>> cmap.classes.shape, cmap.step                  # doctest: +SKIP
    ((64, 64), 8)
    """
    gen = iter_predict(
        model, image, out, block_size=block_size, device=device, scores_dtype=scores_dtype, overwrite=overwrite
    )
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)
        if is_cancelled(cancel):
            gen.close()
            raise Cancelled(f"prediction stopped after {event.done} of {event.total} blocks")


def _block_cells(block_size: int, step: int) -> int:
    if block_size < step:
        raise TilemapInputError(f"block_size {block_size} is smaller than the model's step {step}")
    return int(block_size) // step


def _check_fits(model: TileClassifier, img: np.ndarray) -> None:
    if img.shape[2] != model.in_channels:
        raise TilemapInputError(
            f"the model expects {model.in_channels} channel(s) but the image has {img.shape[2]}; "
            "predict on images like those the model was trained on"
        )
    if min(img.shape[:2]) < model.tile_size:
        raise TilemapInputError(
            f"image of {img.shape[0]}x{img.shape[1]} px is smaller than the model's {model.tile_size}px tile"
        )
