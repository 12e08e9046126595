import numpy as np
import pytest


@pytest.fixture
def notifications(monkeypatch):
    """Every message the widgets show the user, by kind."""
    from napari_tilemap._qt import _notify

    seen = {"error": [], "warning": [], "info": []}
    for kind in seen:
        monkeypatch.setattr(_notify, kind, seen[kind].append)
    return seen


@pytest.fixture
def small_sample():
    from napari_tilemap import sample_surface

    return sample_surface((320, 320), seed=2)


@pytest.fixture
def dock(make_napari_viewer):
    """A viewer with the plugin's widget docked through napari's plugin machinery."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-tilemap", "Tilemap")
    return viewer, widget


def wait_for(qtbot, panel, timeout=120_000):
    qtbot.waitUntil(lambda: panel.worker is None, timeout=timeout)


def paint(layer, labels: np.ndarray) -> None:
    """What a user's brush does: set pixels of the labels layer."""
    layer.data[labels > 0] = labels[labels > 0]
    layer.refresh()
