"""GeoJSON of map regions in image pixel coordinates, as QuPath imports annotations.

One Feature per region: a Polygon (or a MultiPolygon when the region's cells touch only at
corners) along the edges of its cells, clipped to the image, holes kept. Coordinates are
``[x, y]`` with pixel (x, y) covering ``[x, x+1) × [y, y+1)``, QuPath's convention. The
properties carry QuPath's ``objectType`` and ``classification`` ({name, color}), the
region's figures under ``measurements``, and its row of the regions table.
"""

from __future__ import annotations

import json
from typing import IO

import numpy as np

from ..maps._mapstore import ClassificationMap
from ._polygons import mask_polygons, pixel_polygon, region_masks
from ._regions import RegionTable

MEASUREMENTS = ("area_px", "cells", "mean_score", "max_score", "centroid_x", "centroid_y")


def write_geojson(cmap: ClassificationMap, table: RegionTable, out: IO[str]) -> None:
    """Write a FeatureCollection of the regions of ``table`` (from ``regions(cmap)``) to ``out``."""
    colors = class_colors_255(cmap)
    out.write('{"type": "FeatureCollection", "features": [\n')
    for n, (row, origin, mask) in enumerate(region_masks(cmap, table)):
        polygons = [pixel_polygon(p, origin, cmap.step, cmap.geometry.image_shape) for p in mask_polygons(mask)]
        feature = {
            "type": "Feature",
            "id": f"region-{int(table['region'][row])}",
            "geometry": _geometry(polygons),
            "properties": _properties(table, row, colors),
        }
        out.write((",\n" if n else "") + json.dumps(feature, separators=(",", ":")))
    out.write("\n]}\n")


def class_colors_255(cmap: ClassificationMap) -> dict[int, list[int]]:
    """RGB 0..255 of every label value of the map (unknown included)."""
    return {int(v): [round(255 * c) for c in color[:3]] for v, _, color in _legend(cmap)}


def _legend(cmap: ClassificationMap):
    from .._classes import UNKNOWN, UNKNOWN_COLOR, UNKNOWN_NAME

    t = cmap.class_table
    return [*zip(t.values, t.names, t.colors), (UNKNOWN, UNKNOWN_NAME, UNKNOWN_COLOR)]


def _ring(ring: np.ndarray) -> list[list[int]]:
    xy = ring[:, ::-1].astype(int).tolist()
    return [*xy, xy[0]]


def _geometry(polygons: list) -> dict:
    coords = [[_ring(r) for r in p] for p in polygons]
    if len(coords) == 1:
        return {"type": "Polygon", "coordinates": coords[0]}
    return {"type": "MultiPolygon", "coordinates": coords}


def _properties(table: RegionTable, row: int, colors: dict[int, list[int]]) -> dict:
    value = int(table["class_value"][row])
    name = str(table["class_name"][row])
    return {
        "objectType": "annotation",
        "name": f"{name} {int(table['region'][row])}",
        "classification": {"name": name, "color": colors[value]},
        "isLocked": False,
        "measurements": {k: _plain(table[k][row]) for k in MEASUREMENTS},
        "tilemap": {k: _plain(table[k][row]) for k in table},
    }


def _plain(x):
    """A JSON-ready Python scalar."""
    if isinstance(x, np.generic):
        return x.item()
    return x
