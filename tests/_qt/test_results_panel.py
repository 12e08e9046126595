"""The Results panel in a real viewer: regions as shapes and a table, statistics, centring, export."""

import csv
from types import SimpleNamespace

import numpy as np
import pytest

from napari_tilemap import open_map
from napari_tilemap._layerdata import map_layer_data
from napari_tilemap.analysis._regions import regions
from napari_tilemap.analysis._stats import format_table, statistics

from ..test_regions import hand_classes, make_map, write_store

SCALE, TRANSLATE = (0.5, 0.5), (10.0, -4.0)


@pytest.fixture
def panel(make_napari_viewer, tmp_path, notifications):
    from napari_tilemap._qt.results_panel import ResultsPanel

    viewer = make_napari_viewer()
    cmap = write_store(tmp_path / "map.zarr", make_map(hand_classes(), step=4, image_shape=(45, 53)))
    viewer.add_image(np.zeros((45, 53), np.float32), name="surface", scale=SCALE, translate=TRANSLATE)
    for data, kwargs, kind in map_layer_data(open_map(tmp_path / "map.zarr"), SCALE, TRANSLATE, name="surface map"):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    p = ResultsPanel(viewer, SimpleNamespace(map=None))
    viewer.window.add_dock_widget(p, name="Results")
    p.reset_choices()
    assert p.map_layer.value is viewer.layers["surface map classes"]  # the newest map layer, chosen for the user
    return viewer, p, cmap


def centre(viewer):
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    return camera.center[-2:]


def world(y, x):
    return (TRANSLATE[0] + SCALE[0] * y, TRANSLATE[1] + SCALE[1] * x)


def test_regions_become_shapes_over_the_image_with_the_table_as_features(panel, notifications):
    viewer, p, cmap = panel
    p.min_area.value = 20
    table = p.show_regions()
    assert not notifications["error"], notifications
    expected = regions(cmap, min_area=20, image="surface map classes", pixel_size=SCALE, unit="")
    shapes = viewer.layers["surface map classes regions"]
    assert len(shapes.data) == len(expected["region"]) == len(table["region"]) > 0
    assert list(shapes.features.columns) == list(expected)
    np.testing.assert_array_equal(shapes.features["area_px"], expected["area_px"])
    np.testing.assert_allclose(shapes.features["area_physical"], expected["area_px"] * 0.25)
    for i, ring in enumerate(shapes.data):  # outlines along pixel edges: half a pixel around the pixel centres
        lo, hi = ring.min(0) + 0.5, ring.max(0) + 0.5
        box = [expected[k][i] for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")]
        assert box[0] <= lo[0] and box[1] <= lo[1] and hi[0] <= box[2] and hi[1] <= box[3]
        if expected["first_row"][i] == 1:  # the pit ring: one piece, whose outline is its bounding box
            assert [*lo, *hi] == box == [4, 4, 24, 24]
    assert tuple(shapes.scale) == SCALE and tuple(shapes.translate) == TRANSLATE
    pit = cmap.class_table.colors[1]
    first = list(expected["class_value"]).index(1)
    np.testing.assert_allclose(shapes.edge_color[first], pit)
    assert p.stats.value == format_table(statistics(cmap, min_area=20, images=["surface map classes"],
                                                    pixel_size=SCALE, unit=""))
    shown = p.table.value
    assert list(shown["columns"]) == ["region", "class_name", "area_px", "mean_score", "max_score"]
    assert [row[0] for row in shown["data"]] == expected["region"].tolist()


def test_clicking_a_row_or_a_shape_centres_the_view_on_the_region(panel):
    viewer, p, _ = panel
    table = p.show_regions()
    shapes = viewer.layers["surface map classes regions"]
    p.table.native.selectRow(2)
    np.testing.assert_allclose(centre(viewer), world(table["centroid_y"][2], table["centroid_x"][2]))
    assert set(shapes.selected_data) == {2}
    shapes.selected_data = {1}
    np.testing.assert_allclose(centre(viewer), world(table["centroid_y"][1], table["centroid_x"][1]))
    assert p.table.native.currentRow() == 1


def test_export_writes_the_chosen_format_and_never_overwrites_unasked(panel, tmp_path, notifications):
    _, p, cmap = panel
    p.threshold.value = 0.3
    p.format.value = "csv"
    p.out.value = tmp_path / "regions"
    path = p.export()
    assert path == tmp_path / "regions.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(regions(cmap, threshold=0.3)["region"]) and rows[0]["image"] == "surface map classes"
    before = path.read_text()
    p.threshold.value = 0.0
    assert p.export() is None and "already exists" in notifications["error"][-1]
    assert path.read_text() == before
    p.overwrite.value = True
    assert p.export() == path and path.read_text() != before


def test_min_peak_score_leaves_weak_regions_out_of_the_shapes_the_table_and_the_export(panel, tmp_path):
    viewer, p, cmap = panel
    p.min_score.value = "0.9"
    table = p.show_regions()
    expected = regions(cmap, min_score=0.9, image="surface map classes", pixel_size=SCALE, unit="")
    assert 0 < len(table["region"]) == len(expected["region"]) < len(regions(cmap)["region"])
    assert len(viewer.layers["surface map classes regions"].data) == len(expected["region"])
    assert (viewer.layers["surface map classes regions"].features["max_score"] >= 0.9).all()
    assert p.stats.value == format_table(statistics(cmap, min_score=0.9, images=["surface map classes"],
                                                    pixel_size=SCALE, unit=""))
    p.format.value = "csv"
    p.out.value = tmp_path / "strong.csv"
    with open(p.export(), newline="") as f:
        assert [int(r["first_row"]) for r in csv.DictReader(f)] == expected["first_row"].tolist()


def test_a_min_peak_score_per_class_and_bad_ones_told_in_a_notification(panel, notifications, tmp_path):
    viewer, p, cmap = panel
    p.out.value = tmp_path / "regions.csv"
    p.min_score.value = "pit=0.95, scratch=0.2"  # as Evaluate suggests them, one per class
    table = p.show_regions()
    expected = regions(cmap, min_score={"pit": 0.95, "scratch": 0.2}, image="surface map classes",
                       pixel_size=SCALE, unit="")
    assert table["first_row"].tolist() == expected["first_row"].tolist()
    assert len(regions(cmap, min_score=0.95)["region"]) < len(table["region"]) < len(regions(cmap)["region"])
    for text, said in (("high", "'high' is not a min score"), ("crack=0.5", "min_score key 'crack'"),
                       ("1.5", "min_score is 1.5, outside [0, 1]")):
        p.min_score.value = text
        assert p.show_regions() is None and said in notifications["error"][-1]
        assert p.export() is None and said in notifications["error"][-1]
    assert not (tmp_path / "regions.csv").exists()


def test_without_a_map_layer_the_panel_says_what_to_do(panel, notifications):
    _, p, _ = panel
    p.map_layer.value = None
    assert p.show_regions() is None and "choose a map layer" in notifications["error"][-1]


def test_the_show_button_finds_regions_in_a_worker_and_draws_them(panel, qtbot, notifications):
    viewer, p, cmap = panel
    p.show.clicked()
    assert p.worker is not None and not p.show.enabled  # the viewer stays usable meanwhile
    qtbot.waitUntil(lambda: p.worker is None, timeout=60_000)
    expected = regions(cmap, image="surface map classes", pixel_size=SCALE, unit="")
    assert len(viewer.layers["surface map classes regions"].data) == len(expected["region"])
    assert p.status.value == f"{len(expected['region'])} regions" and p.show.enabled
    assert not notifications["error"], notifications


def test_the_export_button_writes_in_a_worker_and_reports_errors(panel, qtbot, tmp_path, notifications):
    _, p, cmap = panel
    p.format.value = "tiff"
    p.min_score.value = "0.9"
    p.out.value = tmp_path / "labels"
    p.export_button.clicked()
    assert p.export_worker is not None and not p.export_button.enabled  # the viewer stays usable meanwhile
    qtbot.waitUntil(lambda: p.export_worker is None, timeout=60_000)
    import tifffile

    from napari_tilemap.maps._overlay import map_to_pixels

    written = tifffile.imread(tmp_path / "labels.tif")
    np.testing.assert_array_equal(written, map_to_pixels(cmap.with_min_score(0.9)))  # weak regions: 255
    assert p.status.value == "Wrote labels.tif" and p.export_button.enabled and not notifications["error"]
    p.export_button.clicked()  # the file exists now: refused in the worker, said in a notification
    qtbot.waitUntil(lambda: p.export_worker is None, timeout=60_000)
    assert "already exists" in notifications["error"][-1] and p.status.value == "Export failed"
