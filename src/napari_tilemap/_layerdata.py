"""napari layer data for class tables and classification maps, with no napari import.

Both the napari widgets and the reader build their layers here, so that a scripted
napari session (or ``tilemap demo --view``) gets the same layers with
``viewer.add_<kind>(data, **kwargs)``.
"""

from __future__ import annotations

from pathlib import Path

from ._classes import UNKNOWN, UNKNOWN_COLOR, UNKNOWN_NAME, ClassTable
from .maps._mapstore import ClassificationMap

TABLE_KEY = "tilemap_class_table"
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)


def labels_kwargs(table: ClassTable, unknown: bool = False) -> dict:
    """Labels-layer keyword arguments that carry ``table``: colormap, features and metadata.

    With ``unknown`` (a thresholded map) value 255 is drawn in the unknown colour and named
    ``"unknown"`` in the colormap and features; the metadata's class table stays the
    model's, one entry per class.

    Examples
    --------
    >>> kw = labels_kwargs(ClassTable.from_values([1, 2], names=["pit", "scratch"]))
    >>> kw["features"]["class"]
    ['background', 'pit', 'scratch']
    >>> labels_kwargs(ClassTable.from_values([1]), unknown=True)["features"]["class"]
    ['background', 'class 1', 'unknown']
    """
    colormap = {v: c for v, c in zip(table.values, table.colors)}
    colormap.setdefault(0, TRANSPARENT)
    values, names = list(table.values), list(table.names)
    if unknown:
        colormap[UNKNOWN] = UNKNOWN_COLOR
        values.append(UNKNOWN)
        names.append(UNKNOWN_NAME)
    colormap[None] = TRANSPARENT
    return {
        "colormap": colormap,
        "features": {"index": values, "class": names},
        "metadata": {TABLE_KEY: table.to_dict()},
    }


def table_from_metadata(metadata: dict) -> ClassTable | None:
    """The class table a labels layer carries, if any."""
    d = (metadata or {}).get(TABLE_KEY)
    return ClassTable.from_dict(d) if d else None


def map_layer_data(
    cmap: ClassificationMap,
    image_scale=(1.0, 1.0),
    image_translate=(0.0, 0.0),
    name: str = "map",
) -> list[tuple]:
    """Layer-data tuples for a map: its best classes (Labels) and one score image per class.

    The layers are aligned with an image layer of ``image_scale`` and ``image_translate``
    (docs/design.md: scale = image_scale·S, translate = image_translate + image_scale·offset).
    Maps in a store with a pyramid come as multiscale layers backed by the store. A
    map with a threshold or a min score draws value 255 in the unknown colour and names it
    ``"unknown"``.

    Parameters
    ----------
    cmap : ClassificationMap
        From :func:`predict` or :func:`open_map`.
    image_scale, image_translate : (float, float)
        The image layer's scale and translate (its last two axes).
    name : str
        Base name of the layers.
    """
    scale, translate = cmap.layer_transform(image_scale, image_translate)
    classes, scores = _levels(cmap)
    table = cmap.class_table
    multiscale = len(classes) > 1
    common = {"scale": scale, "translate": translate}
    kw = labels_kwargs(table, unknown=cmap.rejects)
    kw["metadata"] = {**kw["metadata"], MAP_KEY: cmap.attrs(), "tilemap_path": str(cmap.path or "")}
    layers = [(classes if multiscale else classes[0],
               {"name": f"{name} classes", "opacity": 0.6, "multiscale": multiscale, **kw, **common}, "labels")]
    for k, (cname, color, value) in enumerate(zip(table.names, table.colors, table.values)):
        if value == 0:
            continue
        data = [_plane(s, k) for s in scores]
        layers.append((data if multiscale else data[0],
                       {"name": f"{name} score {cname}", "colormap": _colormap(cname, color),
                        "contrast_limits": (0.0, 1.0), "blending": "additive", "opacity": 0.7,
                        "visible": False, "multiscale": multiscale, "metadata": {MAP_SCORE_KEY: cname}, **common},
                       "image"))
    return layers


MAP_KEY, MAP_SCORE_KEY = "tilemap_map", "tilemap_map_score"
"""Metadata keys of the layers that show a map (its classes; one class's scores)."""


def is_map_layer(layer) -> bool:
    """Whether ``layer`` shows a map (an output, never an input to tiles, training or prediction)."""
    metadata = getattr(layer, "metadata", None) or {}
    return MAP_KEY in metadata or MAP_SCORE_KEY in metadata


def read_map_store(path) -> list[tuple]:
    """napari reader function: the layers of the map store at ``path``."""
    from .maps._mapstore import open_map

    cmap = open_map(path)
    return map_layer_data(cmap, name=Path(path).stem)


def get_reader(path):
    """npe2 reader hook: a reader for napari-tilemap map stores, None for anything else."""
    from .maps._mapstore import is_map_store

    if isinstance(path, list) or not Path(str(path)).is_dir():
        return None
    return read_map_store if is_map_store(path) else None


def _levels(cmap: ClassificationMap):
    if cmap.path is not None:
        from .maps._mapstore import pyramid_levels

        return pyramid_levels(cmap.path, threshold=cmap.threshold, min_score=cmap.min_score)
    return [cmap.classes], [cmap.scores]


def _colormap(name: str, color) -> dict:
    """A napari colormap dict from black to the class colour."""
    return {"name": f"tilemap {name}", "colors": [[0.0, 0.0, 0.0, 1.0], [*color[:3], 1.0]]}


def _plane(scores, k: int):
    """Class plane ``scores[k]``; lazily (through dask) when the scores live in a store."""
    if isinstance(scores, __import__("numpy").ndarray):
        return scores[k]
    import dask.array as da

    return da.from_array(scores, chunks=scores.chunks)[k]
