"""The whole workflow driven through the widget's own controls, in a real viewer."""

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from .conftest import paint, wait_for


def test_the_plugin_is_discovered_and_docks(dock):
    viewer, widget = dock
    assert type(widget).__name__ == "TilemapWidget"
    assert [widget.tabs.tabText(i) for i in range(widget.tabs.count())] == [
        "Classes", "Tiles", "Train", "Predict", "Suggest", "Evaluate", "Results"]


@pytest.mark.parametrize("scale, translate", [((1.0, 1.0), (0.0, 0.0)), ((0.5, 2.0), (100.0, -40.0))])
def test_paint_extract_train_predict_finds_a_defect_at_its_world_position(dock, qtbot, small_sample, notifications,
                                                                          scale, translate):
    viewer, w = dock
    image = viewer.add_image(small_sample.image, name="surface", scale=scale, translate=translate)
    w.classes.image.value = image
    w.classes.create.clicked()
    labels = viewer.layers["surface classes"]
    assert labels.data.shape == image.data.shape and tuple(labels.scale) == scale
    assert list(labels.features["class"]) == ["background", "pit", "scratch"]
    paint(labels, small_sample.labels)

    w.tiles.image.value, w.tiles.labels_layer.value = image, labels
    w.tiles.tile_size.value = 48
    w.tiles.extract.clicked()
    counts = w.session.tiles.counts()
    assert counts["pit"] > 0 and counts["scratch"] > 0 and counts["background"] > 0
    assert len(viewer.layers["tiles"].data) == sum(counts.values())

    w.training.epochs.value = 8
    w.training.device.value = "cpu"
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    w.training.train.clicked()
    assert w.training.worker is not None
    wait_for(qtbot, w.training)
    timer.stop()
    assert len(ticks) > 20, "the Qt event loop stalled while training ran"
    assert w.session.model is not None and len(w.training.plot.history) >= 1
    assert not notifications["error"], notifications
    # the Train tab shows the validation confusion matrix of the epoch the model keeps
    np.testing.assert_array_equal(w.training.plot.confusion, w.session.model.record["final"]["confusion"])
    assert w.training.plot.class_names == ("background", "pit", "scratch")

    w.prediction.image.value = image
    w.prediction.device.value = "cpu"
    w.prediction.block_size.value = 128
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    classes_layer = viewer.layers["surface map classes"]
    assert np.ravel(classes_layer.colormap.map(1)).tolist() == pytest.approx(list(w.session.model.class_table.colors[1]), abs=1e-6)
    assert w.session.model.min_score  # the tile prior's, which the map gets by default: weak regions are unknown
    assert list(classes_layer.features["class"]) == ["background", "pit", "scratch", "unknown"]
    assert "surface map score pit" in viewer.layers
    # a painted pit, taken to world coordinates through the image layer, lies under a "pit" cell
    y, x, _ = small_sample.pits[small_sample.painted_pits[0]]
    world = image.data_to_world((y, x))
    cell = np.round(classes_layer.world_to_data(world)).astype(int)
    assert classes_layer.data[tuple(cell)] == 1
    s = w.session.model.step
    assert tuple(cell) == (int(y) // s, int(x) // s)


def test_stopping_training_and_prediction_keeps_the_viewer_usable_and_earlier_results(dock, qtbot, small_sample,
                                                                                      notifications):
    viewer, w = dock
    image = viewer.add_image(small_sample.image, name="surface")
    labels = viewer.add_labels(small_sample.labels.copy(), name="painted")
    w.tiles.image.value, w.tiles.labels_layer.value = image, labels
    w.tiles.tile_size.value = 32
    w.tiles.extract.clicked()
    w.training.preset.value, w.training.epochs.value, w.training.device.value = "small", 2, "cpu"
    w.training.train.clicked()
    wait_for(qtbot, w.training)
    first_model = w.session.model
    assert first_model is not None

    # stop a long training within a batch: the worker ends promptly, the old model stays
    w.training.epochs.value = 500
    w.training.train.clicked()
    qtbot.waitUntil(lambda: "batch" in w.training.status.value, timeout=30_000)
    w.training.stop.clicked()
    wait_for(qtbot, w.training, timeout=20_000)
    assert w.session.model is first_model or w.session.model.record["stopped"]
    assert w.training.train.enabled

    w.prediction.image.value = image
    w.prediction.device.value = "cpu"
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    earlier = viewer.layers["surface map classes"].data.copy()

    big = viewer.add_image(np.tile(small_sample.image, (8, 8)), name="big")
    w.prediction.image.value = big
    w.prediction.block_size.value = 64
    w.prediction.predict.clicked()
    qtbot.waitUntil(lambda: "block" in w.prediction.status.value, timeout=30_000)
    w.prediction.stop.clicked()
    wait_for(qtbot, w.prediction, timeout=30_000)
    assert "Stopped" in w.prediction.status.value
    assert "big map classes (stopped)" in viewer.layers
    np.testing.assert_array_equal(viewer.layers["surface map classes"].data, earlier)
    # the viewer still works
    viewer.add_points([[10, 10]])
    viewer.layers.selection.active = image
    assert not notifications["error"], notifications


def test_predicting_an_image_on_another_intensity_scale_warns_in_a_notification_and_still_maps(
        dock, qtbot, small_sample, random_model, notifications):
    viewer, w = dock
    w.session.model = random_model("small", 32, 1)  # trained, as far as it knows, on mean 100, spread 40
    w.prediction.image.value = viewer.add_image(small_sample.image.astype(np.uint16) * 257, name="16-bit")
    w.prediction.device.value = "cpu"
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    (said,) = [m for m in notifications["warning"] if "far from those the model was trained on" in m]
    assert said.startswith("Prediction: ") and "16-bit for 8-bit" in said
    assert w.session.map is not None and w.session.map.complete and not notifications["error"]
