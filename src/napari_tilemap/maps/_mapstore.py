"""Classification maps and their zarr v3 store (docs/design.md, "Map store")."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._classes import ClassTable
from .._errors import MapStoreError
from .._geometry import MapGeometry

STORE_VERSION = 1


@dataclass
class ClassificationMap:
    """Scores and best classes of every tile position on an image, with their geometry.

    Parameters
    ----------
    scores : array of shape (classes, H', W')
        Class probabilities (numpy in memory, or a zarr array backed by the store).
    classes : array of shape (H', W'), uint8
        Best class per cell, written as the label value painted for it (0 = background).
    geometry : MapGeometry
        Step, tile size, offset and image shape.
    class_table : ClassTable
        Names, colours and label values of the classes.
    path : Path, optional
        The map store the arrays live in, if any.
    complete : bool
        False while a store is still being written (or was interrupted).
    """

    scores: object
    classes: object
    geometry: MapGeometry
    class_table: ClassTable
    path: Path | None = None
    complete: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        """(H', W'): cells per image row and column."""
        return self.geometry.map_shape

    @property
    def step(self) -> int:
        return self.geometry.step

    @property
    def tile_size(self) -> int:
        return self.geometry.tile_size

    @property
    def offset(self) -> tuple[float, float]:
        return self.geometry.offset

    def layer_transform(self, image_scale=(1.0, 1.0), image_translate=(0.0, 0.0)):
        """``(scale, translate)`` for napari layers aligned with an image layer."""
        return self.geometry.layer_transform(image_scale, image_translate)

    def attrs(self) -> dict:
        """The store's ``tilemap`` group attribute."""
        return store_attrs(self.geometry, self.class_table, self.complete)


def store_attrs(geometry: MapGeometry, class_table: ClassTable, complete: bool, run: dict | None = None) -> dict:
    """The ``tilemap`` attribute for a store of ``geometry`` and ``class_table``.

    ``run`` records what produced the map (model digest, block size, dtype) so that an
    interrupted run can be recognised and resumed.
    """
    table = class_table.to_dict()
    return {
        "version": STORE_VERSION,
        **geometry.to_attrs(),
        "class_names": table["class_names"],
        "colors": table["colors"],
        "values": table["values"],
        "complete": bool(complete),
        "run": run or {},
        "pyramid_levels": 0,
    }


def chunk_codecs() -> dict:
    """Compression with a checksum for every chunk, so a damaged chunk fails to read instead
    of coming back as wrong numbers."""
    from zarr.codecs import ZstdCodec

    return {"compressors": ZstdCodec(level=3, checksum=True)}


def create_store(
    path,
    geometry: MapGeometry,
    class_table: ClassTable,
    *,
    chunk: int,
    scores_dtype: str = "float32",
    run: dict | None = None,
):
    """Create an empty map store at ``path`` (which must not exist), marked incomplete.

    Besides ``scores`` and ``classes`` it holds ``done``, one flag per work block, set
    only after that block's chunks are written, so an interrupted run can resume. The
    group is written with its ``tilemap`` attribute in one step, so a store that exists
    is always recognisable as a map store.
    """
    import zarr

    if np.dtype(scores_dtype) not in (np.float16, np.float32):
        raise MapStoreError(f"scores_dtype must be 'float16' or 'float32', got {scores_dtype!r}")
    h, w = geometry.map_shape
    k = len(class_table)
    attrs = {"tilemap": store_attrs(geometry, class_table, complete=False, run=run)}
    group = zarr.create_group(str(path), zarr_format=3, attributes=attrs)
    codecs = chunk_codecs()
    group.create_array(
        "scores", shape=(k, h, w), chunks=(k, min(chunk, h), min(chunk, w)), dtype=scores_dtype,
        fill_value=0, dimension_names=("class", "y", "x"), **codecs,
    )
    group.create_array(
        "classes", shape=(h, w), chunks=(min(chunk, h), min(chunk, w)), dtype="uint8",
        fill_value=0, dimension_names=("y", "x"), **codecs,
    )
    blocks = (-(-h // chunk), -(-w // chunk))
    group.create_array("done", shape=blocks, chunks=(1, 1), dtype="uint8", fill_value=0, **codecs)
    return group


def remove_store(path) -> None:
    """Delete a map store directory (callers check that it is one first).

    The group's ``zarr.json`` goes last, so a removal that is interrupted leaves a
    directory still recognisable as a map store (and removed by the next run).
    """
    path = Path(path)
    for child in path.iterdir():
        if child.name == "zarr.json":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (path / "zarr.json").unlink(missing_ok=True)
    path.rmdir()


def is_map_store(path) -> bool:
    """Whether ``path`` holds a napari-tilemap map store (complete or not)."""
    try:
        read_attrs(path)
    except MapStoreError:
        return False
    return True


def update_attrs(group, **changes) -> None:
    """Change fields of the store's ``tilemap`` attribute (e.g. ``complete=True``)."""
    attrs = dict(group.attrs["tilemap"])
    attrs.update(changes)
    group.attrs["tilemap"] = attrs


def read_attrs(path) -> dict:
    """The ``tilemap`` attribute of the store at ``path``.

    Raises
    ------
    MapStoreError
        If ``path`` is not a napari-tilemap map store.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise MapStoreError(f"map store {str(path)!r} does not exist")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs["tilemap"])
    except Exception as err:  # zarr raises several unrelated types for foreign paths
        raise MapStoreError(f"{str(path)!r} is not a napari-tilemap map store ({type(err).__name__}: {err})") from None
    if attrs.get("version", 0) > STORE_VERSION:
        raise MapStoreError(f"{str(path)!r} has map store version {attrs['version']}; upgrade napari-tilemap")
    return attrs


def open_map(path) -> ClassificationMap:
    """Open a map store lazily: arrays stay on disk as zarr arrays.

    Examples
    --------
    >>> cmap = open_map("map.zarr")   # doctest: +SKIP
    >>> cmap.classes[:10, :10]        # doctest: +SKIP
    """
    import zarr

    attrs = read_attrs(path)
    group = zarr.open_group(str(path), mode="r")
    geometry = MapGeometry(int(attrs["tile_size"]), int(attrs["step"]), tuple(attrs["image_shape"]))
    table = ClassTable.from_dict(attrs)
    return ClassificationMap(group["scores"], group["classes"], geometry, table, Path(path), bool(attrs.get("complete", True)))


def pyramid_levels(path) -> tuple[list, list]:
    """The ``classes`` and ``scores`` arrays of every stored resolution level, finest first."""
    import zarr

    attrs = read_attrs(path)
    group = zarr.open_group(str(path), mode="r")
    n = int(attrs.get("pyramid_levels", 0))
    names = [""] + [f"_{i}" for i in range(1, n + 1)]
    return [group["classes" + s] for s in names], [group["scores" + s] for s in names]
