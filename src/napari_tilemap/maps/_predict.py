"""Dense prediction: the classification map of an image of any size, block by block.

Each block of map cells reads its own window of the image (halo included, reflected at
the borders), runs the network once and writes its own chunks of the map store, so peak
memory depends on the block size and the number of workers, never on the image. Blocks
run in local threads or, given a dask.distributed client or scheduler address, as one
task each on the cluster. A store records which blocks are done: running the same
prediction again resumes an interrupted one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import as_completed as local_as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import MapStoreError, TilemapInputError
from .._intensity import warn_intensity
from .._progress import Cancelled, CancelToken, is_cancelled
from ..io._sources import ImageSource, open_image
from ..learn._model import TileClassifier
from ._blockrun import (
    BlockPlan,
    block_grid,
    network_for,
    remote_run_blocks,
    run_blocks,
)
from ._dense import AS_IS, trained_orientations
from ._mapoutput import finish_output, prepare_output
from ._mapstore import ClassificationMap, open_map
from ._outputlock import OutputLock


@dataclass(frozen=True)
class BlockDone:
    """One block of the map has been computed (and written, when there is a store)."""

    rows: tuple[int, int]
    cols: tuple[int, int]
    done: int
    total: int
    map: ClassificationMap | None = None
    """The map being filled (in memory or backed by the store being written)."""


def iter_predict(
    model: TileClassifier,
    image,
    out=None,
    *,
    block_size: int = 1024,
    device: str = "auto",
    scores_dtype: str = "float32",
    overwrite: bool = False,
    workers: int | None = None,
    client=None,
    scheduler: str | None = None,
    gpu_batch: int = 8,
    pyramid: bool = True,
    tta: bool = False,
    min_score="model",
    threshold=None,
) -> Generator[BlockDone, None, ClassificationMap]:
    """Like :func:`predict`, as a generator of :class:`BlockDone` events.

    Closing the generator stops after the blocks in flight; a store written so far stays
    marked incomplete and resumes on the next run. The return value (``StopIteration.value``)
    is the :class:`ClassificationMap`. The events' maps are the best classes so far; the threshold
    and the min score apply to the returned map.
    """
    from ._threshold import normalize_threshold

    source = open_image(image)
    _check_fits(model, source)
    model = model.for_image(source)  # per-image normalisation: the image's levels, read once for every block
    cut = model_min_score(model, min_score)
    rule = None if cut is None else normalize_threshold(cut, model.class_table, "min_score")
    thr = None if threshold is None else normalize_threshold(threshold, model.class_table, "threshold")
    warn_intensity(model, source)
    from ..learn._devices import resolve_device
    from ..learn._modelfile import model_digest, model_to_bytes

    geometry = model.geometry(source.shape)
    orientations = trained_orientations(model) if tta else AS_IS
    cells = _block_cells(block_size, model.step)
    distributed = client is not None or scheduler is not None
    if distributed and out is None:
        raise TilemapInputError("distributed prediction writes to a map store: pass out='map.zarr' on a shared disk")
    device_name = str(device) if distributed else str(resolve_device(device))
    output = None if out is None else Path(out).absolute()  # absolute: workers elsewhere write the same store
    if output is not None and not output.parent.is_dir():
        raise MapStoreError(f"the folder of the output {str(out)!r} does not exist; create it first")
    blocks = block_grid(geometry.map_shape, cells)
    payload = model_to_bytes(model)
    digest = model_digest(payload)

    with contextlib.nullcontext() if output is None else OutputLock(output):
        if output is None:
            k = len(model.class_table)
            arrays = (np.zeros((k, *geometry.map_shape), np.dtype(scores_dtype)),
                      np.zeros(geometry.map_shape, np.uint8))
            work, todo, run = None, blocks, None
            partial = ClassificationMap(arrays[0], arrays[1], geometry, model.class_table, complete=False)
        else:
            arrays = None
            run = {"model_sha256": digest, "image": source.fingerprint(), "block_cells": cells,
                   "scores_dtype": str(np.dtype(scores_dtype))}
            if tta:  # recorded only when on, so that stores written before it existed still resume
                run["orientations"] = [[k, m] for k, m in orientations]
            work, todo = prepare_output(output, geometry, model.class_table, cells=cells, scores_dtype=scores_dtype,
                                        run=run, overwrite=overwrite, blocks=blocks)
            partial = open_map(work)
        plan = BlockPlan(geometry, cells, model.class_table.values, str(np.dtype(scores_dtype)),
                         None if work is None else str(work), device_name, orientations)
        per_task = gpu_batch if device_name.startswith("cuda") else 1
        tasks = [todo[i : i + per_task] for i in range(0, len(todo), per_task)]
        done = len(blocks) - len(todo)

        if distributed:
            finished = _run_distributed(tasks, source, plan, payload, digest, client, scheduler)
        else:
            finished = _run_local(tasks, source, plan, network_for(payload, digest, device_name), arrays, workers)
        for task in finished:
            for rows, cols in task:
                done += 1
                yield BlockDone(rows, cols, done, len(blocks), partial)

        if arrays is not None:
            partial.complete = True
            return partial._ruled(thr, rule)
        if finish_output(work, output, run, pyramid=pyramid, threshold=thr, min_score=rule):
            return open_map(output)
    from ._threshold import clear_threshold, write_threshold

    done_map = open_map(output)
    if (done_map.threshold, done_map.min_score) == (thr, rule):  # the finished store records these rules
        return done_map
    # a store finished by a run with other rules gets the rules asked for now
    return clear_threshold(output) if rule is None and thr is None else write_threshold(output, thr, min_score=rule)


def model_min_score(model: TileClassifier, min_score) -> dict | float | None:
    """The min score a map of ``model`` gets: ``"model"`` is :attr:`TileClassifier.min_score` (None when
    the model records none), None none, a float or a dict itself (checked against the model's classes)."""
    if isinstance(min_score, str) and min_score == "model":
        return model.min_score
    if min_score is None:
        return None
    from ._threshold import normalize_threshold

    normalize_threshold(min_score, model.class_table, "min_score")  # a bad value fails before any work
    return min_score


def predict(
    model: TileClassifier,
    image,
    out=None,
    *,
    block_size: int = 1024,
    device: str = "auto",
    scores_dtype: str = "float32",
    overwrite: bool = False,
    workers: int | None = None,
    client=None,
    scheduler: str | None = None,
    pyramid: bool = True,
    tta: bool = False,
    min_score="model",
    threshold=None,
    callback: Callable[[BlockDone], None] | None = None,
    cancel: CancelToken = None,
) -> ClassificationMap:
    """Compute the classification map of ``image`` densely, block by block.

    Parameters
    ----------
    model : TileClassifier
        A trained model.
    image : array_like or str or Path
        (Y, X) or (Y, X, C) image with the channels the model was trained on: numpy, dask
        or zarr array, or a path to TIFF/BigTIFF, PNG/JPEG, ``.npy``, zarr or OME-Zarr.
        Only the windows each block needs are read.
    out : str or Path, optional
        Write the map to this zarr store (docs/design.md layout) and return it backed by the
        store. Running again with the same arguments resumes an interrupted store.
    block_size : int
        Side of a work block in image pixels, rounded down to a multiple of the step.
    device : str
        'auto', 'cpu', 'cuda' or 'mps' (on a cluster each worker resolves 'auto' itself).
    scores_dtype : {'float32', 'float16'}
        Storage type of the scores.
    overwrite : bool
        Replace an existing, different map store at ``out``. The old store is removed only
        once the new one is complete; a path that is not a map store is never replaced.
    workers : int, optional
        Local threads; on the CPU torch gets ``cores // workers`` threads each, so that
        reading and writing overlap with the network. Default: 2 (or 1 on one core).
    client : distributed.Client, optional
        Run the blocks as tasks on this dask cluster (the store must be on a disk the
        workers share). The model is sent once to each worker.
    scheduler : str, optional
        Address of a dask scheduler to connect to instead of ``client``.
    pyramid : bool
        Add downsampled ``classes_i`` / ``scores_i`` levels for display.
    tta : bool
        Test-time augmentation: each cell's scores are the mean over its tile in every
        orientation the model was trained on (all eight quarter turns and mirrors with the
        ``flip`` and ``rot90`` augmentations), which steadies them on busy surfaces at that many
        times the work. Recorded in the store's ``run``.
    min_score : 'model', float, dict or None
        Regions whose peak score is below their class's min score become *unknown* (255), whole
        (:meth:`ClassificationMap.with_min_score`); a store records it and keeps the best classes
        beside (:func:`write_threshold`), in place of any rule an earlier run recorded.
        ``"model"`` (the default): the min score training suggested, :attr:`TileClassifier.min_score`
        (none for a model that records none, e.g. one trained with ``prior="balanced"``); None:
        none, every region as the network calls it.
    threshold : float or dict, optional
        Cells whose best score is below their class's threshold become *unknown* (255), before the
        min score applies (:meth:`ClassificationMap.with_threshold`); a store records it with the
        min score, both in the attribute write that marks the store complete.
    callback : callable, optional
        Called with a :class:`BlockDone` after every block.
    cancel : threading.Event or callable, optional
        Checked after every block; when set, :class:`Cancelled` is raised and a store
        written so far stays marked incomplete (run again to resume).

    Returns
    -------
    ClassificationMap

    Raises
    ------
    TilemapInputError
        Unreadable image, wrong dimensions or channel count, NaN values; ``tta`` with a model
        trained without ``flip`` and ``rot90``.
    MapStoreError
        ``out`` holds something else, or a different map and ``overwrite`` is false.

    Examples
    --------
    >>> cmap = predict(model, "wafer.tif", out="wafer-map.zarr")   # doctest: +SKIP
    >>> cmap.classes.shape, cmap.step                              # doctest: +SKIP
    ((6250, 6250), 8)
    """
    gen = iter_predict(
        model, image, out, block_size=block_size, device=device, scores_dtype=scores_dtype, overwrite=overwrite,
        workers=workers, client=client, scheduler=scheduler, pyramid=pyramid, tta=tta, min_score=min_score,
        threshold=threshold,
    )
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(event)
            if is_cancelled(cancel):
                raise Cancelled(f"prediction stopped after {event.done} of {event.total} blocks; run again to resume")
    finally:
        gen.close()  # whatever ended the loop (a cancel, a failing callback), the output's lock goes now


def predict_to_read(model: TileClassifier, image, stack: contextlib.ExitStack, *, block_size: int = 1024,
                    prefix: str = "tilemap-", **kwargs) -> ClassificationMap:
    """:func:`predict` for a caller that only reads the map: in memory when it fits in one block,
    else in a temporary store (folder name starting with ``prefix``) that closing ``stack`` removes.
    Other keyword arguments go to :func:`predict`; there is no display pyramid."""
    source = open_image(image)
    out = None
    if max(model.geometry(source.shape).map_shape) > max(1, block_size // model.step):
        out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix))) / "map.zarr"
    return predict(model, source, out, block_size=block_size, pyramid=False, **kwargs)


def _run_local(tasks, source: ImageSource, plan: BlockPlan, net_and_device, arrays, workers: int | None):
    import torch

    gpu = plan.device.startswith(("cuda", "mps"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, int(workers or min(2, cores)))
    threads_before = torch.get_num_threads()
    if not gpu:
        torch.set_num_threads(max(1, cores // workers))  # workers x torch threads <= cores
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tilemap-block")
    try:
        # keep a bounded number of tasks queued so cancelling is quick and memory flat
        pending, it = set(), iter(tasks)
        for task in it:
            pending.add(pool.submit(run_blocks, task, source, plan, net_and_device, arrays))
            if len(pending) >= 2 * workers:
                break
        while pending:
            future = next(local_as_completed(pending))
            pending.remove(future)
            yield future.result()
            for task in it:
                pending.add(pool.submit(run_blocks, task, source, plan, net_and_device, arrays))
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads_before)


def _run_distributed(tasks, source: ImageSource, plan: BlockPlan, payload: bytes, digest: str, client, scheduler):
    from distributed import as_completed

    own = client is None
    if own:
        client = _connect(scheduler)
    futures = []
    try:
        model_future = client.scatter(payload, broadcast=True, hash=False)
        source_future = client.scatter(source, broadcast=True, hash=False)
        futures = [
            client.submit(remote_run_blocks, task, source_future, plan, model_future, digest, pure=False)
            for task in tasks
        ]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.cancel(futures)
        if own:
            client.close()


def _connect(scheduler: str):
    """A client of the scheduler at ``scheduler``, or an OSError once the connect timeout has
    passed twice over: a port that accepts but never answers (a web server, the dashboard)
    would otherwise keep distributed's handshake, and the output's lock, waiting for ever."""
    import dask
    from dask.utils import parse_timedelta
    from distributed import Client

    limit = 2 * parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")) + 5
    result: Future = Future()

    def connect() -> None:
        try:
            result.set_result(Client(scheduler))
        except BaseException as err:  # handed to the caller below
            result.set_exception(err)

    threading.Thread(target=connect, name="tilemap-connect", daemon=True).start()
    try:
        return result.result(timeout=limit)
    except FutureTimeout:
        raise OSError(f"could not connect to the dask scheduler at {scheduler}: no answer in {limit:.0f} s") from None


def _block_cells(block_size: int, step: int) -> int:
    if block_size < step:
        raise TilemapInputError(f"block_size {block_size} is smaller than the model's step {step}")
    return int(block_size) // step


def _check_fits(model: TileClassifier, source: ImageSource) -> None:
    if source.channels != model.in_channels:
        raise TilemapInputError(
            f"the model expects {model.in_channels} channel(s) but the image has {source.channels}; "
            "predict on images like those the model was trained on"
        )
    if min(source.shape) < model.tile_size:
        raise TilemapInputError(
            f"image of {source.shape[0]}x{source.shape[1]} px is smaller than the model's {model.tile_size}px tile"
        )
