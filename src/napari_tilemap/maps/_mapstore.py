"""Classification maps and their zarr v3 store (docs/design.md, "Map store")."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._classes import (
    RGBA,
    UNKNOWN,
    UNKNOWN_COLOR,
    UNKNOWN_NAME,
    ClassTable,
    unknown_entry,
)
from .._errors import MapStoreError
from .._geometry import MapGeometry
from ._threshold import (
    Threshold,
    lazy_levels,
    normalize_threshold,
    threshold_classes,
    threshold_from_attr,
    threshold_to_attr,
    unknown_levels,
)

STORE_VERSION = 1


@dataclass
class ClassificationMap:
    """Scores and best classes of every tile position on an image, with their geometry.

    Parameters
    ----------
    scores : array of shape (classes, H', W')
        Class probabilities (numpy in memory, or a zarr array backed by the store).
    classes : array of shape (H', W'), uint8
        Class per cell, written as the label value painted for it (0 = background): the
        best class, or :data:`~._classes.UNKNOWN` (255) where a threshold or the min
        score rejected it.
    geometry : MapGeometry
        Step, tile size, offset and image shape.
    class_table : ClassTable
        Names, colours and label values of the classes.
    path : Path, optional
        The map store the arrays live in, if any.
    complete : bool
        False while a store is still being written (or was interrupted).
    threshold : float or dict, optional
        The reject threshold applied to ``classes`` (normalised: a float, or
        ``{label value: float}`` for every class); None when not thresholded.
    best_classes : array of shape (H', W'), uint8, optional
        The best class per cell before any threshold (the store's ``classes``); defaults
        to ``classes``.
    min_score : float or dict, optional
        The min peak score applied to ``classes`` after the threshold (normalised like it):
        regions that never reach it are unknown (docs/design.md, "Peak score"); None when
        not applied.

    Examples
    --------
    >>> strict = cmap.with_threshold(0.8)                  # doctest: +SKIP
    >>> np.asarray(strict.classes[:100, :100])              # doctest: +SKIP
    """

    scores: object
    classes: object
    geometry: MapGeometry
    class_table: ClassTable
    path: Path | None = None
    complete: bool = True
    threshold: Threshold | None = None
    best_classes: object = None
    min_score: Threshold | None = None

    def __post_init__(self) -> None:
        if self.best_classes is None:
            self.best_classes = self.classes

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

    @property
    def rejects(self) -> bool:
        """Whether ``classes`` may hold *unknown* (255): a threshold or a min score is applied."""
        return self.threshold is not None or self.min_score is not None

    def attrs(self) -> dict:
        """The store's ``tilemap`` group attribute (``threshold``, ``min_score`` None when not applied)."""
        return store_attrs(self.geometry, self.class_table, self.complete, threshold=self.threshold,
                           min_score=self.min_score)

    def with_threshold(self, threshold) -> ClassificationMap:
        """This map with cells whose best score is below ``threshold`` set to *unknown* (255).

        The network does not run again: a cell keeps its best class when the best score
        (the maximum over classes; scores need not sum to 1) is at least the threshold of
        that predicted class, and becomes :data:`~._classes.UNKNOWN` otherwise. ``scores``
        are unchanged. A threshold replaces any earlier one (it applies to the best
        classes, never to already thresholded ones).

        Parameters
        ----------
        threshold : float or dict
            A float in [0, 1] for every class, or per-class thresholds
            ``{class name or label value: float in [0, 1]}``; classes missing from the dict
            get 0 (never unknown). A threshold of 0 never makes a cell unknown.

        Returns
        -------
        ClassificationMap
            With ``threshold`` recorded. In memory ``classes`` is numpy; for a map backed by
            a store it is a lazy dask array with the store's chunks: nothing is read until it
            is indexed, and then only the chunks of ``classes`` and ``scores`` it covers.
            :func:`write_threshold` stores a threshold in the store itself.

        Raises
        ------
        TilemapInputError
            ``threshold`` is not a number or dict, lies outside [0, 1], or names no class.

        Examples
        --------
        >>> strict = cmap.with_threshold(0.8)                      # doctest: +SKIP
        >>> per_class = cmap.with_threshold({"pit": 0.9, 2: 0.6})  # doctest: +SKIP
        """
        return self._ruled(normalize_threshold(threshold, self.class_table), self.min_score)

    def with_min_score(self, min_score) -> ClassificationMap:
        """This map with every region whose peak score is below ``min_score`` set to *unknown* (255).

        A region is a connected set of cells of one class other than background; its peak
        score is its class's highest score over its cells (docs/design.md, "Peak score").
        Confident regions keep their full extent, weak ones go whole. The rule applies after
        the map's threshold, and replaces any earlier min score; the network does not run
        again.

        Parameters
        ----------
        min_score : float or dict or None
            A float in [0, 1] for every class, or ``{class name or label value: float}``
            (classes missing from the dict get 0: never unknown). None removes the rule.

        Returns
        -------
        ClassificationMap
            With ``min_score`` recorded. The regions are found now, in one pass over the map;
            for a map backed by a store ``classes`` is then a lazy dask array.

        Raises
        ------
        TilemapInputError
            ``min_score`` is not a number or dict, lies outside [0, 1], or names no class.

        Examples
        --------
        >>> confident = cmap.with_min_score(0.9)                 # doctest: +SKIP
        >>> per_class = cmap.with_min_score({"pit": 0.95})       # doctest: +SKIP
        """
        norm = None if min_score is None else normalize_threshold(min_score, self.class_table, "min_score")
        return self._ruled(self.threshold, norm)

    def without_threshold(self) -> ClassificationMap:
        """This map with its best classes: no threshold and no min score."""
        return self._ruled(None, None)

    def _ruled(self, threshold: Threshold | None, min_score: Threshold | None) -> ClassificationMap:
        """The best classes, thresholded by ``threshold``, then with ``min_score``'s rule (both normalised)."""
        best = self.best_classes
        if threshold == self.threshold and self.min_score is None:  # already thresholded so (or stored so)
            classes = self.classes
        else:
            classes = best if threshold is None else threshold_classes(best, self.scores, threshold)
        out = dataclasses.replace(self, classes=classes, threshold=threshold, best_classes=best, min_score=None)
        if min_score is None:
            return out
        from ._peakscore import min_score_classes

        return dataclasses.replace(out, classes=min_score_classes(out, min_score), min_score=min_score)

    def legend(self) -> list[tuple[int, str, RGBA]]:
        """``(label value, name, colour)`` of every value ``classes`` may hold: the classes of
        the table, then *unknown* (255) when the map is thresholded or has a min score."""
        t = self.class_table
        entries = list(zip(t.values, t.names, t.colors))
        if self.rejects:
            entries.append((UNKNOWN, UNKNOWN_NAME, UNKNOWN_COLOR))
        return entries

    def regions(self, threshold=None, min_area: float = 0, **kwargs) -> dict:
        """One row per connected region of each class: see :func:`napari_tilemap.analysis._regions.regions`.

        Examples
        --------
        >>> table = cmap.regions(threshold=0.8, min_area=256)   # doctest: +SKIP
        """
        from ..analysis._regions import regions

        return regions(self, threshold, min_area, **kwargs)

    def statistics(self, threshold=None, min_area: float = 0, **kwargs) -> dict:
        """Regions, cells, area and area fraction per class: see :func:`napari_tilemap.analysis._stats.statistics`."""
        from ..analysis._stats import statistics

        return statistics(self, threshold, min_area, **kwargs)

    def export(self, path, format: str | None = None, **kwargs) -> Path:
        """Write GeoJSON, COCO JSON, CSV or a label TIFF: see :func:`napari_tilemap.analysis._export.export`.

        Examples
        --------
        >>> cmap.export("regions.geojson", threshold=0.8)   # doctest: +SKIP
        """
        from ..analysis._export import export

        return export(self, path, format, **kwargs)


def store_attrs(
    geometry: MapGeometry,
    class_table: ClassTable,
    complete: bool,
    run: dict | None = None,
    threshold: Threshold | None = None,
    min_score: Threshold | None = None,
) -> dict:
    """The ``tilemap`` attribute for a store of ``geometry`` and ``class_table``.

    ``run`` records what produced the map (model digest, block size, dtype) so that an
    interrupted run can be recognised and resumed. ``threshold`` (normalised) is the reject
    threshold of the stored ``classes_unknown`` arrays and ``min_score`` their min peak score,
    None for none; a map with either also names value 255 in ``unknown``. The class table itself (``class_names``,
    ``colors``, ``values``) is always the model's: one entry per network output.
    """
    table = class_table.to_dict()
    attrs = {
        "version": STORE_VERSION,
        **geometry.to_attrs(),
        "class_names": table["class_names"],
        "colors": table["colors"],
        "values": table["values"],
        "complete": bool(complete),
        "run": run or {},
        "pyramid_levels": 0,
        "threshold": threshold_to_attr(threshold),
        "min_score": threshold_to_attr(min_score),
    }
    if threshold is not None or min_score is not None:
        attrs["unknown"] = unknown_entry()
    return attrs


OME_VERSION = "0.5"
"""The OME-Zarr (NGFF) version of the ``ome`` attribute a map store carries."""


def ome_attrs(geometry: MapGeometry, class_table: ClassTable, levels: int = 0) -> dict:
    """The store's ``ome`` attribute: OME-Zarr (NGFF 0.5) metadata of its pyramid levels.

    Two multiscales, in image pixel coordinates: ``classes`` (first, the one most readers
    show; with ``image-label`` colours and names) and ``scores``. Level i of ``classes``
    picks the top-left cell of each 2^i × 2^i group, so its transform is ``scale =
    2^i · S`` and ``translation = offset``; level i of ``scores`` averages the group, whose
    centre lies ``(2^i - 1) · S / 2`` further on. At level 0 both equal
    :meth:`MapGeometry.layer_transform`, so an NGFF reader lays the map over its image.
    """
    (s, _), (o, _) = geometry.layer_transform()
    yx = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]

    def datasets(name: str, centred: bool, channel: bool) -> list[dict]:
        out = []
        for i in range(levels + 1):
            f = 2**i
            shift = o + (f - 1) * s / 2 if centred else o
            out.append({"path": name + (f"_{i}" if i else ""), "coordinateTransformations": [
                {"type": "scale", "scale": [1.0] * channel + [f * s, f * s]},
                {"type": "translation", "translation": [0.0] * channel + [shift, shift]},
            ]})
        return out

    table = class_table.to_dict()
    return {
        "version": OME_VERSION,
        "multiscales": [
            {"name": "classes", "axes": yx, "datasets": datasets("classes", False, False), "type": "nearest",
             "metadata": {"description": "best class per map cell, as its label value (napari-tilemap)"}},
            {"name": "scores", "axes": [{"name": "class", "type": "channel"}, *yx],
             "datasets": datasets("scores", True, True), "type": "mean",
             "metadata": {"description": "class scores per map cell", "classes": table["class_names"]}},
        ],
        "image-label": {
            "version": OME_VERSION,
            "colors": [{"label-value": int(v), "rgba": [round(255 * c) for c in color]}
                       for v, color in zip(class_table.values, class_table.colors)],
            "properties": [{"label-value": int(v), "class": n} for v, n in zip(class_table.values, class_table.names)],
        },
    }


def set_ome_attrs(group, levels: int) -> None:
    """Write the ``ome`` attribute of a store whose pyramid has ``levels`` levels above level 0."""
    attrs = dict(group.attrs["tilemap"])
    geometry = MapGeometry(int(attrs["tile_size"]), int(attrs["step"]), tuple(attrs["image_shape"]))
    group.attrs["ome"] = ome_attrs(geometry, ClassTable.from_dict(attrs), levels)


def set_threshold_attrs(group, threshold: Threshold | None, min_score: Threshold | None = None, **changes) -> None:
    """Record ``threshold`` and ``min_score`` (normalised; None: none) in the store's ``tilemap`` attribute,
    with any other field ``changes`` in the same write."""
    attrs = dict(group.attrs["tilemap"])
    attrs.update(changes)
    attrs["threshold"] = threshold_to_attr(threshold)
    attrs["min_score"] = threshold_to_attr(min_score)
    attrs.pop("unknown", None)
    if threshold is not None or min_score is not None:
        attrs["unknown"] = unknown_entry()
    group.attrs["tilemap"] = attrs


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
    attrs = {"tilemap": store_attrs(geometry, class_table, complete=False, run=run),
             "ome": ome_attrs(geometry, class_table)}
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

    A store thresholded with :func:`write_threshold` opens thresholded: ``classes`` holds
    255 (*unknown*) where the recorded ``threshold`` or ``min_score`` rejected the best
    class, and ``best_classes`` the store's ``classes``. Stores without such a record
    (older ones included) open with their best classes, ``threshold`` and ``min_score`` None.

    Examples
    --------
    >>> cmap = open_map("map.zarr")   # doctest: +SKIP
    >>> cmap.classes[:10, :10]        # doctest: +SKIP
    """
    import zarr

    attrs = read_attrs(path)
    group = zarr.open_group(str(path), mode="r")
    cmap = _best_map(path, attrs, group)
    threshold, min_score = _recorded_rules(attrs, cmap.class_table, path)
    if threshold is None and min_score is None:
        return cmap
    stored = unknown_levels(group, attrs)
    if stored is None:  # not (yet) written, or the store is being finished: compute it lazily
        return cmap._ruled(threshold, min_score)
    return dataclasses.replace(cmap, classes=stored[0], threshold=threshold, best_classes=cmap.classes,
                               min_score=min_score)


def _best_map(path, attrs: dict, group) -> ClassificationMap:
    """The store's map with its best classes, before any recorded threshold or min score."""
    geometry = MapGeometry(int(attrs["tile_size"]), int(attrs["step"]), tuple(attrs["image_shape"]))
    return ClassificationMap(group["scores"], group["classes"], geometry, ClassTable.from_dict(attrs), Path(path),
                             bool(attrs.get("complete", True)))


def _recorded_rules(attrs: dict, table: ClassTable, path) -> tuple[Threshold | None, Threshold | None]:
    """The store's recorded (threshold, min_score), normalised."""
    where = repr(str(path))
    return (threshold_from_attr(attrs.get("threshold"), table, where),
            threshold_from_attr(attrs.get("min_score"), table, where, "min_score"))


STORED = "stored"
"""For :func:`pyramid_levels`: the classes as the store records them (thresholded or not)."""


def pyramid_levels(path, threshold=STORED, min_score=STORED) -> tuple[list, list]:
    """The ``classes`` and ``scores`` arrays of every stored resolution level, finest first.

    Parameters
    ----------
    path : str or Path
        A map store.
    threshold : "stored", None, float or dict
        Which classes: ``"stored"`` (the default) those :func:`open_map` gives, thresholded
        when the store records a threshold; None the best classes; a threshold those
        thresholded by it: the stored ``classes_unknown_i`` when the store records this
        very threshold, otherwise lazy dask arrays (level i is level 0 at every 2**i-th
        cell, the rule of the stored pyramid).
    min_score : "stored", None, float or dict
        Likewise for the min peak score, applied after the threshold.
    """
    import zarr

    attrs = read_attrs(path)
    group = zarr.open_group(str(path), mode="r")
    n = int(attrs.get("pyramid_levels", 0))
    names = [""] + [f"_{i}" for i in range(1, n + 1)]
    best, scores = [group["classes" + s] for s in names], [group["scores" + s] for s in names]
    table = ClassTable.from_dict(attrs)
    recorded = _recorded_rules(attrs, table, path)
    wanted = tuple(
        old if isinstance(new, str) and new == STORED else (
            None if new is None else normalize_threshold(new, table, what))
        for old, new, what in zip(recorded, (threshold, min_score), ("threshold", "min_score"))
    )
    if wanted == (None, None):
        return best, scores
    stored = unknown_levels(group, attrs) if wanted == recorded else None
    if stored is not None:
        return stored, scores
    return lazy_levels(_best_map(path, attrs, group)._ruled(*wanted).classes, n), scores
