"""Regions and per-class statistics of a map, against independent scikit-image computations."""

import numpy as np
import pytest
from skimage.measure import label, regionprops_table

from napari_tilemap import ClassificationMap, ClassTable, TilemapInputError, open_map
from napari_tilemap._classes import UNKNOWN
from napari_tilemap._geometry import MapGeometry
from napari_tilemap.analysis._regions import REGION_COLUMNS, regions
from napari_tilemap.analysis._stats import BATCH, format_table, statistics
from napari_tilemap.maps._mapstore import create_store, update_attrs
from napari_tilemap.maps._overlay import map_to_pixels
from napari_tilemap.maps._pyramid import build_pyramid

TABLE = ClassTable.from_values([1, 2], names=["pit", "scratch"])


def hand_classes() -> np.ndarray:
    """A 12 x 14 map: a pit ring with a hole, scratches touching at a corner, a lone pit, edge regions."""
    c = np.zeros((12, 14), np.uint8)
    c[1:6, 1:6] = 1
    c[3, 3] = 0  # hole in the ring
    c[7, 1], c[8, 2] = 2, 2  # corner-touching: one region (8-connectivity)
    c[7:9, 3:5] = 1  # pit beside the scratch
    c[10:12, 10:14] = 2  # at the bottom-right edge, clipped in the image
    c[0, 8:14] = 1
    c[5, 10] = UNKNOWN
    return c


def make_map(classes, step=4, image_shape=None, seed=0, table=TABLE) -> ClassificationMap:
    rng = np.random.default_rng(seed)
    h, w = classes.shape
    image_shape = image_shape or (h * step, w * step)
    scores = rng.random((len(table), h, w)).astype(np.float32)
    return ClassificationMap(scores, np.asarray(classes, np.uint8), MapGeometry(step * 3, step, image_shape), table)


def write_store(path, cmap: ClassificationMap, chunk: int = 8, pyramid: bool = True):
    """A complete map store holding ``cmap``, written with the store helpers predict uses."""
    group = create_store(path, cmap.geometry, cmap.class_table, chunk=chunk)
    group["scores"][...] = np.asarray(cmap.scores)
    group["classes"][...] = np.asarray(cmap.classes)
    group["done"][...] = 1
    levels = build_pyramid(group, min_size=4, chunk=chunk) if pyramid else 0
    update_attrs(group, complete=True, pyramid_levels=levels)
    return open_map(path)


def reference(cmap: ClassificationMap, value: int) -> dict:
    """Figures of the regions of one class from the full-resolution mask (regionprops), sorted by first pixel."""
    full = map_to_pixels(cmap) == value
    lab = label(full, connectivity=2)
    k = cmap.class_table.index_of_value(value)
    props = regionprops_table(lab, properties=("label", "area", "centroid", "bbox"))
    cell_lab = label(np.asarray(cmap.classes) == value, connectivity=2)
    cell_props = regionprops_table(cell_lab, intensity_image=np.asarray(cmap.scores[k]),
                                   properties=("area", "intensity_mean", "intensity_max"))
    # both labellings number regions by their first pixel in raster order, the table's order too
    return {**props, **{f"cell_{key}": v for key, v in cell_props.items()}}


@pytest.mark.parametrize("image_shape", [None, (45, 53)])  # whole cells, and the last cells clipped
def test_counts_areas_centroids_and_boxes_equal_an_independent_computation(image_shape):
    cmap = make_map(hand_classes(), step=4, image_shape=image_shape)
    table = regions(cmap)
    assert tuple(table)[: len(REGION_COLUMNS)] == REGION_COLUMNS
    assert (table["region"] == np.arange(1, len(table["region"]) + 1)).all()
    for value, n in ((1, 3), (2, 2)):
        rows = table["class_value"] == value
        ref = reference(cmap, value)
        assert rows.sum() == n == len(ref["label"])
        np.testing.assert_array_equal(table["area_px"][rows], ref["area"])
        np.testing.assert_allclose(table["centroid_y"][rows], ref["centroid-0"])
        np.testing.assert_allclose(table["centroid_x"][rows], ref["centroid-1"])
        for i, key in enumerate(("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")):
            np.testing.assert_array_equal(table[key][rows], ref[f"bbox-{i}"])
        np.testing.assert_array_equal(table["cells"][rows], ref["cell_area"])
        np.testing.assert_allclose(table["mean_score"][rows], ref["cell_intensity_mean"], rtol=1e-6)
        np.testing.assert_allclose(table["max_score"][rows], ref["cell_intensity_max"], rtol=1e-6)
        assert set(table["class_name"][rows]) == {TABLE.names[TABLE.index_of_value(value)]}
    ring = table["first_row"] == 1
    assert table["cells"][ring].tolist() == [24] and table["area_px"][ring].tolist() == [24 * 16]


def test_a_threshold_min_area_classes_and_pixel_size():
    cmap = make_map(hand_classes())
    t = 0.5
    table = regions(cmap, threshold=t, pixel_size=(0.5, 0.25), unit="µm", image="slide 1")
    kept = np.where(cmap.scores.max(0) >= t, cmap.classes, UNKNOWN)
    assert table["cells"].sum() == np.isin(kept, [1, 2]).sum()
    np.testing.assert_allclose(table["area_physical"], table["area_px"] * 0.125)
    assert set(table["unit"]) == {"µm"} and set(table["image"]) == {"slide 1"}
    big = regions(cmap, min_area=5 * 16)
    assert (big["area_px"] >= 80).all() and len(big["region"]) == (regions(cmap)["cells"] >= 5).sum()
    unknown = regions(cmap, classes=["unknown"])
    assert unknown["class_name"].tolist() == ["unknown"] and unknown["cells"].tolist() == [1]
    assert set(regions(cmap, classes=[2])["class_value"]) == {2}


def test_min_score_drops_weak_regions_whole_and_keeps_strong_ones_at_full_size(tmp_path):
    cmap = make_map(hand_classes())
    every = regions(cmap)
    peak = every["max_score"]
    cut = float(np.median(peak))
    strong = regions(cmap, min_score=cut)
    keep = peak >= cut
    assert 0 < keep.sum() < len(keep)
    for column in ("class_value", "cells", "area_px", "first_row", "first_col"):
        np.testing.assert_array_equal(strong[column], every[column][keep])
    assert strong["region"].tolist() == list(range(1, keep.sum() + 1))
    # per class: scratches need more than any of them has, pits nothing
    pits_only = regions(cmap, min_score={"scratch": 1.0})
    np.testing.assert_array_equal(pits_only["first_row"], every["first_row"][every["class_value"] == 1])
    # the weak regions' cells become unknown, and the statistics count them there
    ruled = np.asarray(cmap.with_min_score(cut).classes)
    before = np.asarray(cmap.classes)
    assert (ruled == UNKNOWN).sum() == (before == UNKNOWN).sum() + every["cells"][~keep].sum()
    np.testing.assert_array_equal(ruled[ruled != UNKNOWN], before[ruled != UNKNOWN])
    stats = statistics(cmap, min_score=cut)
    for value in (1, 2, UNKNOWN):
        row = stats["class_value"].tolist().index(value)
        assert stats["cells"][row] == (ruled == value).sum()
        if value != UNKNOWN:
            assert stats["regions"][row] == (strong["class_value"] == value).sum()
    # a stored map read block by block gives the same rows
    stored = write_store(tmp_path / "m.zarr", cmap, chunk=5)
    np.testing.assert_array_equal(regions(stored, min_score=cut, block_cells=5)["first_row"], strong["first_row"])


def test_block_wise_regions_of_a_stored_map_equal_the_in_memory_ones(tmp_path):
    rng = np.random.default_rng(3)
    classes = (rng.random((41, 35)) < 0.45).astype(np.uint8) * rng.integers(1, 3, (41, 35)).astype(np.uint8)
    classes[12:32, :] = 1  # a region across many blocks, holes and all
    classes[15:20, 5:30:7] = 0
    cmap = make_map(classes, step=4, image_shape=(41 * 4 - 3, 35 * 4 - 1))
    whole = regions(cmap, threshold=0.2)
    stored = write_store(tmp_path / "map.zarr", cmap, chunk=8)
    for block in (6, 16):  # not aligned with the store's chunks, and aligned
        parts = regions(stored, threshold=0.2, block_cells=block, image="")
        assert parts.keys() == whole.keys()
        for key in whole:
            if whole[key].dtype == object:
                assert parts[key].tolist() == whole[key].tolist(), key
            else:
                np.testing.assert_allclose(parts[key], whole[key], rtol=1e-12, err_msg=key)
    crossing = (whole["bbox_y1"] - whole["bbox_y0"] > 16 * 4) & (whole["bbox_x1"] - whole["bbox_x0"] > 16 * 4)
    assert crossing.any()  # merged across block borders in both directions
    assert regions(stored)["image"][0] == "map.zarr"


def test_statistics_per_image_and_for_a_batch():
    a, b = make_map(hand_classes()), make_map(hand_classes()[::-1], step=4, image_shape=(45, 53), seed=1)
    one = statistics(a)
    full = map_to_pixels(a)
    assert one["class_name"].tolist() == ["background", "pit", "scratch", "unknown"]
    for value in (0, 1, 2, UNKNOWN):
        row = one["class_value"] == value
        assert one["area_px"][row] == (full == value).sum()
        assert one["cells"][row] == (a.classes == value).sum()
        assert one["regions"][row] == label(a.classes == value, connectivity=2).max()
    np.testing.assert_allclose(one["area_fraction"].sum(), 1.0)
    both = statistics([a, b], images=["a", "b"], pixel_size=2.0, unit="nm")
    total = both["image"] == BATCH
    assert total.sum() == 4
    for value in (0, 1, 2, UNKNOWN):
        rows = both["class_value"] == value
        assert both["area_px"][rows & total] == both["area_px"][rows & ~total].sum()
        pixels = (map_to_pixels(a) == value).sum() + (map_to_pixels(b) == value).sum()
        np.testing.assert_allclose(both["area_fraction"][rows & total], pixels / (a.geometry.image_shape[0]
                                   * a.geometry.image_shape[1] + 45 * 53))
    np.testing.assert_allclose(both["area_physical"], both["area_px"] * 4.0)
    text = format_table(both)
    assert text.splitlines()[0].split() == list(both) and len(text.splitlines()) == 13


def test_methods_of_the_map_delegate():
    cmap = make_map(hand_classes())
    assert cmap.regions(min_area=32)["region"].tolist() == regions(cmap, min_area=32)["region"].tolist()
    assert cmap.statistics()["cells"].tolist() == statistics(cmap)["cells"].tolist()


@pytest.mark.parametrize("kwargs, message", [
    ({"min_area": -1}, "min_area"),
    ({"classes": ["nope"]}, "'nope' is not a class"),
    ({"classes": [7]}, "7 is not a class"),
    ({"pixel_size": (1, 2, 3)}, "pixel_size"),
    ({"pixel_size": 0}, "pixel_size"),
    ({"threshold": 2.0}, "outside [0, 1]"),
    ({"min_score": 1.5}, "min_score is 1.5, outside [0, 1]"),
    ({"min_score": {"nope": 0.5}}, "min_score key 'nope' is not a class"),
    ({"block_cells": 0}, "block_cells"),
])
def test_bad_input_is_refused_with_a_message(kwargs, message):
    with pytest.raises(TilemapInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        regions(make_map(hand_classes()), **kwargs)
