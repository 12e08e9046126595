"""The Evaluate tab, driven through its own controls in a real viewer."""

import json

import numpy as np

from napari_tilemap.analysis._evaluate import evaluate

from .conftest import wait_for


def test_evaluate_shows_the_figures_of_the_api_and_saves_a_report(dock, qtbot, small_sample, random_model,
                                                                  notifications, tmp_path, monkeypatch):
    viewer, w = dock
    model = random_model("small", 32, 1)
    w.session.model = model
    image = viewer.add_image(small_sample.image, name="surface")
    truth = viewer.add_labels(small_sample.truth, name="truth")
    panel = w.evaluation
    panel.image.value, panel.truth.value = image, truth
    panel.device.value = "cpu"
    panel.threshold.value = 0.4
    panel.evaluate.clicked()
    assert panel.worker is not None
    wait_for(qtbot, panel)
    assert not notifications["error"], notifications
    expected = evaluate(model, small_sample.image, small_sample.truth, threshold=0.4, device="cpu")
    np.testing.assert_array_equal(panel.result.confusion, expected.confusion)
    assert panel.summary.value == expected.summary()
    assert panel.status.value == "Evaluated: " + expected.headline()
    assert list(panel.plot.figures) == ["confusion", "scores", "precision–recall"]
    assert panel.plot.tabs.count() == 3

    panel.report_dir.value = tmp_path / "report"
    panel.save.clicked()
    saved = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert saved == json.loads(json.dumps(expected.to_dict()))
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 0

    # a min peak score and test-time augmentation, as 'tilemap evaluate --min-score S --tta' gives them
    import napari_tilemap._qt.evaluate_panel as evaluate_panel

    asked = []
    monkeypatch.setattr(evaluate_panel, "evaluate", lambda *a, **kw: asked.append(kw) or evaluate(*a, **kw))
    panel.threshold.value, panel.min_score.value, panel.tta.value = 0.0, "0.9", True
    panel.evaluate.clicked()
    wait_for(qtbot, panel)
    assert (asked[-1]["threshold"], asked[-1]["min_score"], asked[-1]["tta"]) == (None, 0.9, True)
    again = evaluate(model, small_sample.image, small_sample.truth, min_score=0.9, tta=True, device="cpu")
    assert panel.result.min_scores == again.min_scores == (0.0, 0.9, 0.9) and panel.summary.value == again.summary()
    np.testing.assert_array_equal(panel.result.confusion, again.confusion)
    model.record = {"augment": ["shift"]}  # trained upright: refused before any work
    assert panel.start() is None and "without 'flip' and 'rot90'" in notifications["error"][-1]


def test_evaluate_refuses_a_truth_of_another_shape_with_a_notification(dock, small_sample, random_model,
                                                                       notifications):
    viewer, w = dock
    w.session.model = random_model("small", 32, 1)
    panel = w.evaluation
    panel.image.value = viewer.add_image(small_sample.image, name="surface")
    panel.truth.value = viewer.add_labels(small_sample.truth[:100], name="truth")
    assert panel.start() is None
    assert "has shape (100, 320)" in notifications["error"][-1]


def test_the_threshold_slider_recolours_the_map_from_its_scores(dock, qtbot, small_sample, random_model,
                                                                notifications):
    from napari_tilemap._classes import UNKNOWN, UNKNOWN_COLOR

    viewer, w = dock
    model = random_model("small", 32, 1)
    model.network[-1].weight.data *= 100  # spread the untrained model's scores (all near 1/3 otherwise)
    w.session.model = model
    w.prediction.image.value = viewer.add_image(small_sample.image, name="surface")
    w.prediction.device.value = "cpu"
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    layer = viewer.layers["surface map classes"]
    best = np.asarray(layer.data).copy()
    scores = np.asarray(w.session.map.scores)
    t = round(float(np.median(scores.max(0))), 2)
    w.prediction.threshold.value = t
    expected = np.where(scores.max(0) >= t, best, UNKNOWN)
    assert (expected == UNKNOWN).any() and (expected != UNKNOWN).any()
    np.testing.assert_array_equal(np.asarray(layer.data), expected)
    np.testing.assert_allclose(np.ravel(layer.colormap.map(UNKNOWN)), UNKNOWN_COLOR, atol=1e-6)
    assert "unknown" in list(layer.features["class"])
    w.prediction.threshold.value = 0.0
    np.testing.assert_array_equal(np.asarray(layer.data), best)

    # the min peak score makes weak regions of the thresholded map unknown whole, on the layer and the session's map
    from skimage.measure import label

    w.prediction.threshold.value = t
    cut = np.asarray(layer.data).copy()
    masks = [regions == r for k in np.unique(cut[(cut > 0) & (cut != UNKNOWN)])
             for regions in [label(cut == k, connectivity=2)] for r in range(1, regions.max() + 1)]
    peaks = np.array([scores.max(0)[mask].max() for mask in masks])
    m = float(np.ceil(np.median(peaks) * 100) / 100)
    w.prediction.min_score.value = f"{m}"
    w.prediction.min_score.native.editingFinished.emit()  # as pressing Enter does
    expected = cut.copy()
    for mask in [mask for mask, peak in zip(masks, peaks) if peak < m]:
        expected[mask] = UNKNOWN
    assert 0 < (peaks < m).sum() < len(peaks)
    np.testing.assert_array_equal(np.asarray(layer.data), expected)
    assert w.session.map.min_score == m and w.session.map.threshold == t
    w.prediction.threshold.value = 0.0
    w.prediction.min_score.value = ""
    w.prediction.min_score.native.editingFinished.emit()
    np.testing.assert_array_equal(np.asarray(layer.data), best)
    assert w.session.map.min_score is None
    assert not notifications["error"], notifications
    w.prediction.min_score.value = "crack=0.5"
    w.prediction.min_score.native.editingFinished.emit()
    assert "min_score key 'crack'" in notifications["error"][-1]


def test_predict_and_evaluate_tabs_apply_the_min_score_training_suggested(dock, qtbot, sample, trained,
                                                                         notifications):
    import copy

    from skimage.measure import label

    from napari_tilemap._classes import UNKNOWN
    from napari_tilemap.maps._predict import predict

    viewer, w = dock
    model = copy.deepcopy(trained[1])
    raw = predict(model, sample.image, device="cpu", min_score=None)
    best, top = np.asarray(raw.best_classes), np.asarray(raw.scores).max(0)
    painted = model.class_table.values[1:]
    peaks = [top[regions == r].max() for k in painted for regions in [label(best == k, connectivity=2)]
             for r in range(1, regions.max() + 1)]
    ordered = np.sort(peaks)  # a cut in the widest gap between regions' peaks, clear of rounding
    gap = int(np.argmax(np.diff(ordered)))
    assert ordered[gap + 1] - ordered[gap] > 1e-3
    cut = float(ordered[gap : gap + 2].mean())
    names = model.class_table.names[1:]
    model.record = {**model.record, "prior": {"mode": "tiles", "min_score": dict.fromkeys(names, cut)}}  # as training
    assert model.min_score == dict.fromkeys(names, cut)
    w.session.model = model
    w.prediction.image.value = viewer.add_image(sample.image, name="surface")
    w.prediction.device.value = "cpu"
    assert w.prediction.min_score.value == "model"  # the default
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    expected = np.asarray(raw.with_min_score(cut).classes)
    assert (expected == UNKNOWN).any() and ((expected > 0) & (expected != UNKNOWN)).any()
    np.testing.assert_array_equal(np.asarray(viewer.layers["surface map classes"].data), expected)
    assert w.session.map.min_score == {0: 0.0, **dict.fromkeys(painted, cut)}

    panel = w.evaluation
    panel.image.value = w.prediction.image.value
    panel.truth.value = viewer.add_labels(sample.truth, name="truth")
    panel.device.value = "cpu"
    panel.evaluate.clicked()
    wait_for(qtbot, panel)
    assert panel.result.min_scores == (0.0, *[cut] * len(names))
    panel.min_score.value = ""  # every region judged
    panel.evaluate.clicked()
    wait_for(qtbot, panel)
    assert panel.result.min_scores == (0.0,) * len(model.class_table)
    assert not notifications["error"], notifications
