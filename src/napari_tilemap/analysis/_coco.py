"""COCO JSON of map regions: one image, its classes as categories, one annotation per region.

Each annotation's ``segmentation`` is the compressed RLE of the region's mask at full image
resolution (``pycocotools.mask.decode`` gives it back), with its ``area`` in pixels, its
``bbox`` ``[x, y, width, height]`` and the region's ``score`` (its class's highest score).
Category ids are the class label values.
"""

from __future__ import annotations

import json
from typing import IO

from ..maps._mapstore import ClassificationMap
from ._polygons import region_masks
from ._regions import RegionTable, value_name
from ._rle import compress_counts, region_rle_counts


def write_coco(cmap: ClassificationMap, table: RegionTable, out: IO[str], *, image: str) -> None:
    """Write the COCO dataset of the regions of ``table`` (from ``regions(cmap)``) to ``out``."""
    h, w = cmap.geometry.image_shape
    values = sorted({int(v) for v in cmap.class_table.values if v != 0} | {int(v) for v in table["class_value"]})
    head = {
        "info": {"description": "napari-tilemap regions", "version": "1.0"},
        "images": [{"id": 1, "file_name": image, "height": int(h), "width": int(w)}],
        "categories": [{"id": v, "name": value_name(cmap, v), "supercategory": "tilemap"} for v in values],
    }
    text = json.dumps(head)
    out.write(text[:-1] + ', "annotations": [\n')
    for n, (row, origin, mask) in enumerate(region_masks(cmap, table)):
        counts = region_rle_counts(mask, origin, cmap.step, (h, w))
        x0, y0 = int(table["bbox_x0"][row]), int(table["bbox_y0"][row])
        annotation = {
            "id": int(table["region"][row]),
            "image_id": 1,
            "category_id": int(table["class_value"][row]),
            "segmentation": {"size": [int(h), int(w)], "counts": compress_counts(counts)},
            "area": int(table["area_px"][row]),
            "bbox": [x0, y0, int(table["bbox_x1"][row]) - x0, int(table["bbox_y1"][row]) - y0],
            "iscrowd": 0,
            "score": float(table["max_score"][row]),
        }
        out.write((",\n" if n else "") + json.dumps(annotation, separators=(",", ":")))
    out.write("\n]}\n")
