"""The Predict tab writes the rules it shows into the saved map, so the map reopens as the user saw it."""

import numpy as np

from napari_tilemap import open_map

from .conftest import wait_for


def test_the_saved_map_records_the_rules_shown_once_the_user_saves_them(dock, qtbot, small_sample, random_model,
                                                                          tmp_path, notifications):
    viewer, w = dock
    model = random_model("small", 32, 1)
    model.network[-1].weight.data *= 100  # spread the untrained model's scores (all near 1/3 otherwise)
    w.session.model = model
    p = w.prediction
    p.image.value = viewer.add_image(small_sample.image, name="surface")
    p.device.value, p.min_score.value = "cpu", ""
    path = tmp_path / "surface.zarr"
    p.out.value = path
    p.threshold.value = 0.6  # set before the run: the store is written with it
    p.predict.clicked()
    wait_for(qtbot, p)
    layer = viewer.layers["surface map classes"]
    saved = open_map(path)
    assert saved.threshold == 0.6 and saved.min_score is None
    np.testing.assert_array_equal(np.asarray(saved.classes), np.asarray(layer.data))
    assert not p.save_rules.enabled and "not in" not in p.status.value

    p.threshold.value = 0.8  # shown at once; the file is told apart until saved
    assert open_map(path).threshold == 0.6
    assert p.save_rules.enabled and "the rules shown are not in surface.zarr" in p.status.value
    p.min_score.value = "0.95"
    p.min_score.native.editingFinished.emit()
    shown = np.asarray(layer.data).copy()
    p.save_rules.clicked()
    assert p.rules_worker is not None and not p.predict.enabled and p.stop.enabled
    qtbot.waitUntil(lambda: p.rules_worker is None, timeout=60_000)
    saved = open_map(path)
    assert saved.threshold == 0.8 and saved.min_score == 0.95
    np.testing.assert_array_equal(np.asarray(saved.classes), shown)
    assert (shown == 255).any()
    layers = viewer.open(str(path), plugin="napari-tilemap")  # reopened, it shows what the tab showed
    np.testing.assert_array_equal(np.asarray(layers[0].data), shown)
    assert not p.save_rules.enabled and p.predict.enabled and not p.stop.enabled and "not in" not in p.status.value

    p.threshold.value, p.min_score.value = 0.0, ""  # no rule at all: the saved map's rules are cleared
    p.min_score.native.editingFinished.emit()
    assert p.save_rules.enabled
    p.save_rules.clicked()
    qtbot.waitUntil(lambda: p.rules_worker is None, timeout=60_000)
    saved = open_map(path)
    assert saved.threshold is None and saved.min_score is None
    np.testing.assert_array_equal(np.asarray(saved.classes), np.asarray(layer.data))
    assert not notifications["error"], notifications


def test_a_map_kept_in_memory_has_nothing_to_save(dock, qtbot, small_sample, random_model, notifications):
    viewer, w = dock
    w.session.model = random_model("small", 32, 1)
    p = w.prediction
    p.image.value = viewer.add_image(small_sample.image, name="surface")
    p.device.value = "cpu"
    p.predict.clicked()
    wait_for(qtbot, p)
    assert p.status.value.startswith("Map of ")  # the run's summary, not the last block's count
    p.threshold.value = 0.5
    assert not p.save_rules.enabled and p.start_saving_rules() is None
    assert w.session.map.threshold == 0.5 and not notifications["error"]


def test_stop_ends_a_save_and_the_tab_says_the_map_keeps_its_rules(dock, qtbot, small_sample, random_model,
                                                                     tmp_path, monkeypatch, notifications):
    import time

    from napari_tilemap._qt import predict_panel

    viewer, w = dock
    w.session.model = random_model("small", 32, 1)
    p = w.prediction
    p.image.value = viewer.add_image(small_sample.image, name="surface")
    p.device.value, p.min_score.value, p.out.value = "cpu", "", tmp_path / "surface.zarr"
    p.predict.clicked()
    wait_for(qtbot, p)
    closed = []

    def endless_write(path, threshold, min_score=None):  # a write of a huge map, region after region
        try:
            while True:
                time.sleep(0.01)
                yield 1, 10**6
        finally:
            closed.append(path)

    monkeypatch.setattr(predict_panel, "iter_write_threshold", endless_write)
    p.threshold.value = 0.5
    p.save_rules.clicked()
    qtbot.waitUntil(lambda: p._bar is not None and p._bar.total == 10**6, timeout=10_000)
    p.stop.clicked()
    qtbot.waitUntil(lambda: p.rules_worker is None, timeout=10_000)
    assert closed == [str(tmp_path / "surface.zarr")]  # the write was closed: it cleans up and frees the store
    assert p.status.value == "Saving stopped or failed; the saved map keeps its earlier rules."
    assert p.save_rules.enabled and p.predict.enabled and not p.stop.enabled
    assert open_map(tmp_path / "surface.zarr").threshold is None and not notifications["error"]
