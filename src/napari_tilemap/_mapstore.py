"""Classification maps and their zarr v3 store (DESIGN.md "Map store")."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._classes import ClassTable
from ._errors import MapStoreError
from ._geometry import MapGeometry

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


def store_attrs(geometry: MapGeometry, class_table: ClassTable, complete: bool) -> dict:
    """The ``tilemap`` attribute for a store of ``geometry`` and ``class_table``."""
    table = class_table.to_dict()
    return {
        "version": STORE_VERSION,
        **geometry.to_attrs(),
        "class_names": table["class_names"],
        "colors": table["colors"],
        "values": table["values"],
        "complete": bool(complete),
    }


def create_store(
    path,
    geometry: MapGeometry,
    class_table: ClassTable,
    *,
    chunk: int,
    scores_dtype: str = "float32",
    overwrite: bool = False,
):
    """Create an empty map store at ``path`` marked incomplete; returns the zarr group.

    Raises
    ------
    MapStoreError
        If ``path`` exists and ``overwrite`` is false; nothing there is touched.
    """
    import zarr

    path = Path(path)
    if path.exists():
        if not overwrite:
            raise MapStoreError(
                f"{str(path)!r} already exists; choose another output or pass overwrite=True (--overwrite) "
                "to replace it"
            )
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if np.dtype(scores_dtype) not in (np.float16, np.float32):
        raise MapStoreError(f"scores_dtype must be 'float16' or 'float32', got {scores_dtype!r}")
    h, w = geometry.map_shape
    k = len(class_table)
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    group.create_array(
        "scores", shape=(k, h, w), chunks=(k, min(chunk, h), min(chunk, w)), dtype=scores_dtype,
        fill_value=0, dimension_names=("class", "y", "x"),
    )
    group.create_array(
        "classes", shape=(h, w), chunks=(min(chunk, h), min(chunk, w)), dtype="uint8",
        fill_value=0, dimension_names=("y", "x"),
    )
    group.attrs["tilemap"] = store_attrs(geometry, class_table, complete=False)
    return group


def mark_complete(group) -> None:
    """Flag a fully written store as complete."""
    attrs = dict(group.attrs["tilemap"])
    attrs["complete"] = True
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
