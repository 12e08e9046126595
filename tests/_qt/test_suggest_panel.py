"""The suggest panel, driven through its own controls in a real viewer."""

import numpy as np

from napari_tilemap._qt.suggest_panel import SuggestPanel
from napari_tilemap._qt.widget import Session
from napari_tilemap.analysis._suggest import suggest

from .conftest import wait_for


def camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def test_suggest_adds_points_with_features_and_next_previous_visit_them(make_napari_viewer, qtbot, small_sample,
                                                                        random_model, notifications):
    viewer = make_napari_viewer()
    session = Session(model=random_model("small", 32, 1))
    panel = SuggestPanel(viewer, session)
    image = viewer.add_image(small_sample.image, name="surface", scale=(0.5, 0.5), translate=(10, 20))
    panel.reset_choices()
    panel.image.value = image
    panel.n.value, panel.spacing.value, panel.device.value = 5, 40, "cpu"
    panel.run.clicked()
    assert panel.worker is not None
    wait_for(qtbot, panel)
    assert not notifications["error"], notifications
    expected = suggest(session.model, small_sample.image, n=5, spacing=40, device="cpu")
    layer = viewer.layers["surface suggestions"]
    np.testing.assert_allclose(layer.data, expected.positions)
    np.testing.assert_allclose(layer.features["margin"], expected.margins)
    assert list(layer.features["rank"]) == [1, 2, 3, 4, 5]
    world = lambda k: np.asarray(layer.data_to_world(expected.positions[k]))
    np.testing.assert_allclose(camera(viewer).center[-2:], world(0))  # the first suggestion is shown
    assert panel.status.value.startswith("1/5:")
    panel.next.clicked()
    panel.next.clicked()
    np.testing.assert_allclose(camera(viewer).center[-2:], world(2))
    assert layer.selected_data == {2} and panel.status.value.startswith("3/5:")
    for _ in range(3):
        panel.previous.clicked()
    np.testing.assert_allclose(camera(viewer).center[-2:], world(4))  # wraps around
    # suggesting again replaces the layer
    panel.run.clicked()
    wait_for(qtbot, panel)
    assert [x.name for x in viewer.layers].count("surface suggestions") == 1


def test_suggest_without_a_model_says_so(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    panel = SuggestPanel(viewer, Session())
    assert panel.start() is None
    assert "No model" in notifications["error"][-1]
    assert not panel.next.enabled
