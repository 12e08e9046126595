"""Bad states become notifications; reader, model files, multiscale and in-view prediction."""

import dask.array as da
import numpy as np
import pytest

from napari_tilemap import extract_tiles, open_map, predict, train

from .conftest import paint, wait_for


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from napari_tilemap import sample_surface

    s = sample_surface((320, 320), seed=2)
    tiles = extract_tiles(s.image, s.labels, tile_size=32, class_table=s.class_table)
    return train(tiles, preset="small", epochs=2, samples_per_epoch=128, device="cpu", normalise="image")


def test_bad_states_give_notifications_not_tracebacks(dock, small_sample, notifications, model):
    viewer, w = dock
    image = viewer.add_image(small_sample.image, name="surface")
    empty = viewer.add_labels(np.zeros_like(small_sample.labels), name="empty")
    w.tiles.image.value, w.tiles.labels_layer.value = image, empty
    w.tiles.extract.clicked()
    assert "no painted pixels" in notifications["error"][-1]

    wrong = viewer.add_labels(np.ones((100, 100), np.uint8), name="wrong size")
    w.tiles.labels_layer.value = wrong
    w.tiles.extract.clicked()
    assert "differs from the image shape" in notifications["error"][-1]

    w.prediction.image.value = image
    w.prediction.predict.clicked()
    assert "No model" in notifications["error"][-1]

    w.session.model = model
    rgb = viewer.add_image(np.zeros((200, 200, 3), np.uint8), name="rgb", rgb=True)
    w.prediction.image.value = rgb
    w.prediction.predict.clicked()
    assert "expects 1 channel(s) but 'rgb' has 3" in notifications["error"][-1]
    assert w.prediction.worker is None

    w.training.train.clicked()
    assert "Extract tiles first" in notifications["error"][-1]
    assert len(notifications["error"]) == 5


def test_imbalanced_tiles_warn(dock, small_sample, notifications):
    viewer, w = dock
    image = viewer.add_image(small_sample.image, name="surface")
    labels = viewer.add_labels(np.zeros_like(small_sample.labels), name="one pit")
    y, x, _ = small_sample.pits[0]
    labels.data[int(y) - 2 : int(y) + 2, int(x) - 2 : int(x) + 2] = 1
    w.tiles.image.value, w.tiles.labels_layer.value = image, labels
    w.tiles.tile_size.value = 32
    w.tiles.extract.clicked()
    assert any("imbalanced" in m for m in notifications["warning"])


def test_the_reader_opens_a_saved_map_as_the_same_layers(make_napari_viewer, model, small_sample, tmp_path):
    from napari_tilemap._layerdata import map_layer_data

    cmap = predict(model, small_sample.image, out=tmp_path / "surface-map.zarr", device="cpu")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "surface-map.zarr"), plugin="napari-tilemap")
    expected = map_layer_data(cmap, name="surface-map")
    assert [layer.name for layer in layers] == [kw["name"] for _, kw, _ in expected]
    classes = viewer.layers["surface-map classes"]
    np.testing.assert_array_equal(np.asarray(classes.data), np.asarray(open_map(tmp_path / "surface-map.zarr").classes))
    assert tuple(classes.scale) == (model.step, model.step)
    assert tuple(classes.translate) == ((model.step - 1) / 2,) * 2
    # a map with the model's min score also names 'unknown', the weak regions' value
    assert list(classes.features["class"]) == [*model.class_table.names, *(["unknown"] if cmap.rejects else [])]
    from napari_tilemap._layerdata import get_reader

    assert get_reader(str(tmp_path)) is None  # other folders are left to other readers


def test_save_load_and_fine_tune_through_the_widget(dock, qtbot, small_sample, model, tmp_path, notifications):
    viewer, w = dock
    w.session.model = model
    w.training.model_path.value = tmp_path / "m.tilemap"
    w.training.save.clicked()
    assert (tmp_path / "m.tilemap").exists()
    w.session.model = None
    w.training.load.clicked()
    assert w.session.model is not None and w.session.model.arch == model.arch

    image = viewer.add_image(small_sample.image, name="surface")
    labels = viewer.add_labels(np.zeros_like(small_sample.labels), name="painted")
    paint(labels, small_sample.labels)
    w.tiles.image.value, w.tiles.labels_layer.value = image, labels
    w.tiles.tile_size.value = 32
    w.tiles.extract.clicked()
    w.training.fine_tune.value = True
    w.training.epochs.value = 1
    w.training.device.value = "cpu"
    w.training.train.clicked()
    wait_for(qtbot, w.training)
    assert w.session.model.record["fine_tuned"]
    assert not notifications["error"], notifications


def test_predict_on_multiscale_dask_layers_and_only_the_region_in_view(dock, qtbot, small_sample, model,
                                                                      notifications):
    viewer, w = dock
    w.session.model = model
    big = np.tile(small_sample.image, (2, 2))
    levels = [da.from_array(big, chunks=100), da.from_array(big[::2, ::2], chunks=100)]
    image = viewer.add_image(levels, multiscale=True, name="pyramid", scale=(2.0, 2.0), translate=(5.0, 7.0))
    w.prediction.image.value = image
    w.prediction.device.value = "cpu"
    w.prediction.contours.value = True
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    layer = viewer.layers["pyramid map classes"]
    assert layer.data.shape == (160, 160) and layer.contour == 1
    assert tuple(layer.scale) == (8.0, 8.0) and tuple(layer.translate) == (5.0 + 3.0, 7.0 + 3.0)

    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (0, 5 + 2 * 300, 7 + 2 * 300)
    camera.zoom = 4
    qtbot.wait(50)
    w.prediction.region.value = "in view"
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    view = viewer.layers["pyramid map (view) classes"]
    assert view.data.shape[0] < 160 and view.data.shape[1] < 160
    # the cells of the view map coincide with those of the whole-image map
    cy, cx = (np.asarray(view.translate) - layer.translate) / layer.scale
    assert cy == int(cy) and cx == int(cx)
    m = -(-model.halo // model.step) + 1  # cells away from the crop's edges see the same pixels
    np.testing.assert_array_equal(view.data[m:-m, m:-m],
                                  layer.data[int(cy) + m : int(cy) + view.data.shape[0] - m,
                                             int(cx) + m : int(cx) + view.data.shape[1] - m])
    assert not notifications["error"], notifications


def test_demo_view_opens_the_result_in_napari(make_napari_viewer, monkeypatch, model, small_sample):
    import napari

    from napari_tilemap.cli import _view

    viewer = make_napari_viewer()
    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: viewer)
    monkeypatch.setattr(napari, "run", lambda *a, **k: None)
    _view(small_sample, predict(model, small_sample.image, device="cpu"))
    assert [layer.name for layer in viewer.layers][:3] == ["surface", "painted defects", "map classes"]


def test_class_names_and_colours_are_edited_in_the_widget_and_carried_by_the_layer(dock, small_sample, notifications):
    viewer, w = dock
    image = viewer.add_image(small_sample.image, name="surface")
    w.classes.add_class.clicked()
    w.classes.table.data[3, 0] = "stain"  # rows are headed by label values: row 0 is background
    w.classes.table.data[1, 1] = "yellow"
    w.classes.image.value = image
    layer = w.classes.create_labels_layer()
    assert list(layer.features["class"]) == ["background", "pit", "scratch", "stain"]
    assert np.ravel(layer.colormap.map(1)).tolist() == [1.0, 1.0, 0.0, 1.0]
    # adopting an existing layer gives it the table too; extraction uses the layer's names
    other = viewer.add_labels(small_sample.labels.copy(), name="other")
    w.classes.labels_layer.value = other
    w.classes.adopt.clicked()
    assert list(other.features["class"]) == ["background", "pit", "scratch", "stain"]
    w.tiles.image.value, w.tiles.labels_layer.value = image, other
    w.tiles.add_pair.clicked()
    w.tiles.add_pair.clicked()
    w.tiles.tile_size.value = 32
    tiles = w.tiles.run()
    assert set(tiles.image_index) == {0, 1}
    assert tiles.counts()["stain"] == 0 and tiles.class_table.names[1] == "pit"
    assert not notifications["error"], notifications


def test_test_time_augmentation_from_the_predict_tab(dock, qtbot, small_sample, random_model, notifications):
    viewer, w = dock
    model = random_model("small", 32, 1)
    w.session.model = model
    w.prediction.image.value = viewer.add_image(small_sample.image, name="surface")
    w.prediction.device.value = "cpu"
    w.prediction.tta.value = True
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    expected = predict(model, small_sample.image, device="cpu", tta=True)
    np.testing.assert_allclose(np.asarray(w.session.map.scores), expected.scores, atol=1e-5)
    model.record = {"augment": ["shift"]}  # a direction-dependent defect: trained without flips and turns
    w.prediction.predict.clicked()
    assert "without 'flip' and 'rot90'" in notifications["error"][-1] and w.prediction.worker is None


def test_training_pairs_on_two_scales_are_told_in_a_notification(dock, small_sample, notifications):
    viewer, w = dock
    eight = viewer.add_image(small_sample.image, name="8-bit")
    sixteen = viewer.add_image(small_sample.image.astype(np.uint16) * 257, name="16-bit")
    painted = viewer.add_labels(small_sample.labels.copy(), name="painted")
    for image in (eight, sixteen):
        w.tiles.image.value, w.tiles.labels_layer.value = image, painted
        w.tiles.add_pair.clicked()
    w.tiles.tile_size.value = 32
    assert w.tiles.run() is not None  # told, not refused
    (said,) = [m for m in notifications["warning"] if "different intensity scales" in m]
    assert said.startswith("Tiles: training images 0 and 1")
