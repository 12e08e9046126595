"""The dock as a new user meets it: obvious layers chosen, a class table that reads right, help on every
control, and training that says what it kept and warns when the data do not fit the settings."""

import numpy as np
import pytest
from magicgui.widgets import Container, Label, TextEdit
from qtpy.QtCore import Qt

from ..cases import two_textures
from .conftest import paint, wait_for


def test_the_first_buttons_work_with_no_layer_chosen_by_hand(dock, qtbot, small_sample, notifications):
    viewer, w = dock
    image = viewer.add_image(small_sample.image, name="surface")
    assert w.classes.image.value is image and w.prediction.image.value is image
    labels = w.classes.create.clicked() or viewer.layers["surface classes"]
    assert w.tiles.labels_layer.value is labels and w.tiles.image.value is image
    paint(labels, small_sample.labels)
    w.tiles.tile_size.value = 32
    w.tiles.extract.clicked()
    assert w.session.tiles is not None, notifications
    w.training.preset.value, w.training.epochs.value, w.training.device.value = "small", 1, "cpu"
    w.training.train.clicked()
    wait_for(qtbot, w.training)
    w.prediction.device.value = "cpu"
    w.prediction.predict.clicked()
    wait_for(qtbot, w.prediction)
    assert "surface map classes" in viewer.layers
    # map layers are outputs: they never become an input choice
    assert all(not layer.name.startswith("surface map") for layer in w.prediction.image.choices if layer)
    assert w.prediction.image.value is image and w.tiles.labels_layer.value is labels
    assert not notifications["error"], notifications


def test_the_sample_opens_ready_to_use(dock, notifications):
    viewer, w = dock
    viewer.open_sample("napari-tilemap", "surface")
    assert w.classes.image.value is viewer.layers["surface"]
    assert w.tiles.labels_layer.value is viewer.layers["painted defects"]
    w.classes.create.clicked()
    assert "surface classes" in viewer.layers and not notifications["error"]


def test_choices_follow_the_selection_and_carry_across_tabs(dock, small_sample):
    viewer, w = dock
    first = viewer.add_image(small_sample.image, name="first")
    second = viewer.add_image(small_sample.image[:100, :100], name="second")
    assert {c.value.name for c in w.image_choices} == {"second"}
    viewer.layers.selection.active = first
    assert all(c.value is first for c in w.image_choices)
    w.prediction.image.value = second  # a choice made in one tab
    assert w.classes.image.value is second and w.evaluation.image.value is second
    truth = viewer.add_labels(np.zeros((100, 100), np.uint8), name="truth")
    w.tabs.setCurrentWidget(w.evaluation.native)
    viewer.layers.selection.active = truth
    assert w.evaluation.truth.value is truth


def test_the_class_table_shows_label_values_swatches_and_a_fixed_background_row(dock, small_sample):
    viewer, w = dock
    table = w.classes.table
    native = table.native
    assert [native.verticalHeaderItem(r).text() for r in range(native.rowCount())] == ["0", "1", "2"]
    assert native.item(0, 0).text() == "background"
    assert not native.item(0, 0).flags() & Qt.ItemFlag.ItemIsEditable
    assert native.item(1, 0).flags() & Qt.ItemFlag.ItemIsEditable
    assert native.item(1, 1).background().color().name() == native.item(1, 1).text()
    w.classes.add_class.clicked()
    assert native.rowCount() == 4 and native.verticalHeaderItem(3).text() == "3"
    native.item(1, 0).setText("rust")  # what a user's typing does
    native.item(3, 1).setText("#00ff00")
    assert native.item(3, 1).background().color().name() == "#00ff00"
    image = viewer.add_image(small_sample.image, name="surface")
    w.classes.create.clicked()
    labels = viewer.layers["surface classes"]
    assert list(labels.features["class"]) == ["background", "rust", "scratch", "class 3"]
    paint(labels, small_sample.labels)
    w.tiles.image.value, w.tiles.labels_layer.value = image, labels
    w.tiles.tile_size.value = 32
    w.tiles.extract.clicked()
    assert w.session.tiles.class_table.names[:3] == ("background", "rust", "scratch")


def _controls(container):
    for widget in container:
        if isinstance(widget, Container) and not hasattr(widget, "value"):
            yield from _controls(widget)
        elif not isinstance(widget, (Label, TextEdit)) and widget.widget_type != "TrainingPlot":
            yield widget  # Labels and read-only text show results, they take no input


def test_every_dock_control_has_a_tooltip(dock):
    _, w = dock
    missing = [f"{type(panel).__name__}.{control.label or control.name}" for panel in w.panels
               for control in _controls(panel) if not control.tooltip]
    assert not missing


def test_the_tiles_tab_states_tile_and_step_and_shows_a_tile(dock, small_sample):
    viewer, w = dock
    viewer.add_image(small_sample.image, name="surface")
    w.tiles.tile_size.value = 48
    assert "tile 48 x 48 px; one map cell per 8 x 8 px with the 'medium' preset" in w.tiles.geometry.value
    w.training.preset.value = "small"
    assert "one map cell per 4 x 4 px with the 'small' preset" in w.tiles.geometry.value
    w.tiles.show_tile.value = True
    (y0, x0), (y1, x1) = np.asarray(viewer.layers["tile size"].data[0])[[0, 2]]
    assert (y1 - y0, x1 - x0) == pytest.approx((48, 48))
    w.tiles.tile_size.value = 64
    assert np.ptp(np.asarray(viewer.layers["tile size"].data[0])[:, 0]) == pytest.approx(64)
    w.tiles.show_tile.value = False
    assert "tile size" not in viewer.layers


def test_training_says_what_it_kept_and_warns_when_background_cannot_be_told_apart(dock, qtbot, notifications):
    viewer, w = dock
    image, labels = two_textures()
    viewer.add_image(image, name="two textures")
    painted = viewer.add_labels(labels, name="strokes")
    assert w.tiles.labels_layer.value is painted
    w.tiles.tile_size.value = 24
    w.tiles.extract.clicked()
    w.training.preset.value, w.training.epochs.value, w.training.device.value = "small", 4, "cpu"
    w.training.train.clicked()
    wait_for(qtbot, w.training)
    status = w.training.status.value
    assert "recall: background" in status and "kept: epoch" in status and "of 4 planned" in status
    assert any("background='none'" in m for m in notifications["warning"]), notifications


def test_a_class_too_small_to_validate_is_named_in_a_warning(dock, qtbot, small_sample, notifications):
    viewer, w = dock
    viewer.add_image(small_sample.image, name="surface")
    labels = np.zeros_like(small_sample.labels)
    for y, x, _ in small_sample.pits[:6]:
        labels[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 1
    y, x, _ = small_sample.pits[7]
    labels[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 2  # one 3x3 blob of class 2
    viewer.add_labels(labels, name="tiny")
    w.tiles.tile_size.value = 32
    w.tiles.extract.clicked()
    w.training.preset.value, w.training.epochs.value, w.training.device.value = "small", 1, "cpu"
    w.training.train.clicked()
    wait_for(qtbot, w.training)
    assert any("too few separate painted blobs to validate" in m and "'scratch'" in m
               for m in notifications["warning"]), notifications
