"""The work of one task: read blocks with their halo, run the network, write the map.

Everything here is picklable so the same function runs in a local thread or on a
dask.distributed worker; the network is built once per process and model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .._geometry import MapGeometry
from ._dense import AS_IS, Orientation, dense_scores, read_window, window_indices

Block = tuple[tuple[int, int], tuple[int, int]]

_NETS: dict = {}
_NETS_LOCK = threading.Lock()


@dataclass(frozen=True)
class BlockPlan:
    """What every block task needs besides the image and the model."""

    geometry: MapGeometry
    block_cells: int
    values: tuple[int, ...]
    scores_dtype: str
    store: str | None
    device: str
    orientations: tuple[Orientation, ...] = AS_IS
    """Orientations averaged per block (test-time augmentation); the window as it is by default."""


def block_grid(map_shape: tuple[int, int], block_cells: int) -> list[Block]:
    """Half-open (rows, cols) ranges of map cells, row-major, ``block_cells`` a side."""
    h, w = map_shape
    return [
        ((r, min(r + block_cells, h)), (c, min(c + block_cells, w)))
        for r in range(0, h, block_cells)
        for c in range(0, w, block_cells)
    ]


def network_for(payload: bytes, digest: str, device: str):
    """The inference network of a model's bytes, built once per process, model and device."""
    key = (digest, device)
    with _NETS_LOCK:
        if key not in _NETS:
            from ..learn._devices import resolve_device
            from ..learn._modelfile import model_from_bytes

            dev = resolve_device(device)
            _NETS.clear()  # one model at a time per process keeps worker memory flat
            _NETS[key] = (model_from_bytes(payload, name="the model").inference_network(dev), dev)
        return _NETS[key]


def run_blocks(blocks: list[Block], source, plan: BlockPlan, net_and_device, arrays=None) -> list[Block]:
    """Compute ``blocks`` (stacked into one forward pass when their windows are equal) and write them.

    ``arrays`` are in-memory (scores, classes) targets; without them the blocks go to the
    store in ``plan.store``, and each block's ``done`` flag is set after its chunks.
    """
    net, device = net_and_device
    windows = [read_window(source, *window_indices(plan.geometry, rows, cols)) for rows, cols in blocks]
    if len(windows) > 1 and len({w.shape for w in windows}) == 1:
        results = list(dense_scores(net, np.stack(windows), device, plan.orientations))
    else:
        results = [dense_scores(net, w, device, plan.orientations) for w in windows]
    if arrays is None:
        import zarr

        group = zarr.open_group(plan.store, mode="r+")
        scores, classes, done = group["scores"], group["classes"], group["done"]
    else:
        (scores, classes), done = arrays, None
    values = np.asarray(plan.values, np.uint8)
    for (rows, cols), s in zip(blocks, results):
        _check_scores(s, len(values), rows, cols)
        r, c = slice(*rows), slice(*cols)
        scores[:, r, c] = s.astype(plan.scores_dtype)
        classes[r, c] = values[s.argmax(0)]
        if done is not None:
            done[rows[0] // plan.block_cells, cols[0] // plan.block_cells] = 1
    return blocks


def remote_run_blocks(blocks: list[Block], source, plan: BlockPlan, payload: bytes, digest: str) -> list[Block]:
    """:func:`run_blocks` on a dask worker: the model arrives once per worker as ``payload``."""
    return run_blocks(blocks, source, plan, network_for(payload, digest, plan.device))


def _check_scores(scores: np.ndarray, classes: int, rows: tuple[int, int], cols: tuple[int, int]) -> None:
    """A block's scores must have its exact shape and be finite before anything is written:
    zarr would broadcast a wrong shape silently, and NaN would become class 0."""
    from .._errors import ModelFileError

    expected = (classes, rows[1] - rows[0], cols[1] - cols[0])
    if scores.shape != expected:
        raise ModelFileError(
            f"the model produced scores of shape {scores.shape} for a block of {expected}: its network does not "
            "match its tile size and classes; retrain or re-save the model"
        )
    if not np.isfinite(scores).all():
        raise ModelFileError(
            f"the model produced NaN or infinite scores for map rows {rows}, columns {cols}; its weights or "
            "normalisation are broken, or the image's values are far outside those it was trained on"
        )
