"""Exports read back by independent tools: skimage rasterisation, pycocotools, tifffile, csv."""

import csv
import json

import numpy as np
import pytest
from skimage.draw import polygon2mask
from skimage.measure import label

from napari_tilemap import TilemapInputError
from napari_tilemap._classes import UNKNOWN
from napari_tilemap.analysis import _geojson
from napari_tilemap.analysis._export import export, partial_path
from napari_tilemap.analysis._regions import regions
from napari_tilemap.maps._overlay import map_to_pixels

from .test_regions import TABLE, hand_classes, make_map, write_store


def rasterise(geometry: dict, shape, scale: float = 1.0) -> np.ndarray:
    """Pixels (``scale`` 1) or cells (``scale`` S) of ``shape`` inside a GeoJSON (Multi)Polygon, holes subtracted."""
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    out = np.zeros(shape, bool)
    for rings in polygons:
        for k, ring in enumerate(rings):
            # pixel (y, x) has its centre at (y + .5, x + .5); at map scale, a cell is tested at the
            # centre of its first pixel, which lies in the image even for cells the image edge clips
            yx = (np.asarray(ring, float)[:, ::-1] - 0.5) / scale
            inside = polygon2mask(shape, yx)
            out = out | inside if k == 0 else out & ~inside
    return out


def iou(a, b) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("image_shape", [None, (45, 53)])
def test_geojson_polygons_rasterise_back_to_the_class_masks_holes_included(tmp_path, image_shape):
    cmap = make_map(hand_classes(), step=4, image_shape=image_shape)
    path = export(cmap, tmp_path / "regions.geojson")
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(regions(cmap)["region"])
    full = map_to_pixels(cmap)
    for value, name in zip(TABLE.values[1:], TABLE.names[1:]):
        features = [f for f in doc["features"] if f["properties"]["classification"]["name"] == name]
        at_map = np.zeros(cmap.shape, bool)
        at_pixels = np.zeros(full.shape, bool)
        for f in features:
            at_map |= rasterise(f["geometry"], cmap.shape, scale=cmap.step)
            at_pixels |= rasterise(f["geometry"], full.shape)
        assert iou(at_map, cmap.classes == value) >= 0.99
        np.testing.assert_array_equal(at_map, cmap.classes == value)  # exact, in fact
        np.testing.assert_array_equal(at_pixels, full == value)
    props = doc["features"][0]["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"] == {"name": "pit", "color": [230, 26, 26]}
    ring = next(f for f in doc["features"] if f["properties"]["tilemap"]["first_row"] == 1)
    assert ring["geometry"]["type"] == "Polygon" and len(ring["geometry"]["coordinates"]) == 2  # the hole
    corner = next(f for f in doc["features"] if f["properties"]["tilemap"]["first_row"] == 7
                  and f["properties"]["classification"]["name"] == "scratch")
    assert corner["geometry"]["type"] == "MultiPolygon"  # cells touching at a corner: one region, two pieces
    exterior = np.asarray(ring["geometry"]["coordinates"][0], float)
    assert exterior[0].tolist() == exterior[-1].tolist()
    x, y = exterior[:, 0], exterior[:, 1]
    assert np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) > 0  # exterior counter-clockwise (RFC 7946)


def test_geojson_of_random_maps_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    for seed in range(4):
        classes = rng.integers(0, 3, (23, 19)).astype(np.uint8)
        cmap = make_map(classes, step=3, image_shape=(67, 56), seed=seed)
        doc = json.loads(export(cmap, tmp_path / f"r{seed}.geojson").read_text())
        for value in (1, 2):
            got = np.zeros(cmap.shape, bool)
            for f in doc["features"]:
                if f["properties"]["tilemap"]["class_value"] == value:
                    got |= rasterise(f["geometry"], cmap.shape, scale=3)
            np.testing.assert_array_equal(got, classes == value)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_coco_rle_decodes_to_each_full_resolution_region(tmp_path):
    mask_utils = pytest.importorskip("pycocotools.mask")
    cmap = make_map(hand_classes(), step=4, image_shape=(45, 53))
    doc = json.loads(export(cmap, tmp_path / "regions.json", threshold=0.3).read_text())
    thresholded = cmap.with_threshold(0.3)
    full = map_to_pixels(thresholded)
    h, w = full.shape
    assert doc["images"] == [{"id": 1, "file_name": "", "height": h, "width": w}]
    assert {c["id"]: c["name"] for c in doc["categories"]} == {1: "pit", 2: "scratch"}
    table = regions(cmap, threshold=0.3)
    assert len(doc["annotations"]) == len(table["region"]) > 3
    for ann in doc["annotations"]:
        row = ann["id"] - 1
        value = ann["category_id"]
        lab = label(full == value, connectivity=2)
        want = lab == lab[table["first_row"][row] * 4, table["first_col"][row] * 4]
        got = mask_utils.decode(ann["segmentation"])
        np.testing.assert_array_equal(got.astype(bool), want)
        assert ann["area"] == want.sum() == mask_utils.area(ann["segmentation"])
        ys, xs = np.nonzero(want)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["bbox"] == mask_utils.toBbox(ann["segmentation"]).tolist()
        assert ann["score"] == pytest.approx(float(table["max_score"][row]))


def test_the_label_tiff_equals_the_map_in_pixels_window_by_window(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    import zarr

    rng = np.random.default_rng(2)
    classes = rng.integers(0, 3, (140, 90)).astype(np.uint8)
    classes[5:9, 5:9] = UNKNOWN
    cmap = write_store(tmp_path / "map.zarr", make_map(classes, step=8, image_shape=(1117, 713)), chunk=32)
    path = export(cmap, tmp_path / "labels.tif")
    full = map_to_pixels(cmap)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.shape == (1117, 713) and page.dtype == np.uint8
        assert page.shape[0] > 512 and page.shape[1] > 512  # more than one tile each way
        stored = zarr.open(tif.aszarr(), mode="r")
        for y in range(0, 1117, 300):
            for x in range(0, 713, 250):
                np.testing.assert_array_equal(stored[y : y + 300, x : x + 250], full[y : y + 300, x : x + 250])
    assert (full == UNKNOWN).sum() == 32 * 32


def test_the_csv_holds_the_regions_table(tmp_path):
    cmap = make_map(hand_classes())
    table = regions(cmap, pixel_size=0.5, unit="mm")
    path = export(cmap, tmp_path / "regions.csv", pixel_size=0.5, unit="mm")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(table) and len(rows) == len(table["region"])
    for key in ("area_px", "centroid_y", "mean_score", "area_physical"):
        np.testing.assert_array_equal([float(r[key]) for r in rows], table[key])
    assert rows[0]["class_name"] == "pit" and rows[0]["unit"] == "mm"


def test_existing_outputs_are_kept_and_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    cmap = make_map(hand_classes())
    out = tmp_path / "regions.geojson"
    out.write_text("mine")
    with pytest.raises(TilemapInputError, match="already exists"):
        export(cmap, out)
    assert out.read_text() == "mine"
    export(cmap, out, overwrite=True)
    assert json.loads(out.read_text())["type"] == "FeatureCollection"

    def broken(cmap, table, f):
        f.write('{"type": "FeatureCollection", "features": [')
        raise OSError("disk full")

    monkeypatch.setattr(_geojson, "write_geojson", broken)
    fresh = tmp_path / "fresh.geojson"
    with pytest.raises(OSError, match="disk full"):
        export(cmap, fresh)
    with pytest.raises(OSError, match="disk full"):
        export(cmap, out, overwrite=True)
    assert not fresh.exists() and not partial_path(fresh).exists() and not partial_path(out).exists()
    assert json.loads(out.read_text())["type"] == "FeatureCollection"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regions.geojson"]


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "shp"}, "unknown export format 'shp'"),
    ({"path": "regions.txt"}, "cannot tell the export format"),
    ({"path": "missing/regions.csv"}, "does not exist; create it first"),
])
def test_bad_exports_are_refused(tmp_path, kwargs, message):
    path = tmp_path / kwargs.pop("path", "regions.csv")
    with pytest.raises(TilemapInputError, match=message):
        make_map(hand_classes()).export(path, **kwargs)


def test_maps_too_large_to_label_at_once_give_the_same_exports_region_by_region(tmp_path, monkeypatch):
    from napari_tilemap.analysis import _polygons

    rng = np.random.default_rng(4)
    classes = rng.integers(0, 3, (21, 18)).astype(np.uint8)
    classes[5:15, 3:16] = 1
    cmap = write_store(tmp_path / "map.zarr", make_map(classes, step=4, image_shape=(81, 70)), chunk=8)
    whole = [export(cmap, tmp_path / f"whole{ext}", threshold=0.2).read_text() for ext in (".geojson", ".json")]
    monkeypatch.setattr(_polygons, "IN_MEMORY_CELLS", 0)
    parts = [export(cmap, tmp_path / f"parts{ext}", threshold=0.2, block_cells=8).read_text()
             for ext in (".geojson", ".json")]
    assert parts == whole
