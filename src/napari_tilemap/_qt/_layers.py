"""Helpers for napari layers: image data at full resolution, 2-D transforms, world boxes."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Image

from .._layerdata import is_map_layer


def full_resolution(layer: Image):
    """The layer's full-resolution array (level 0 of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


def plane_shape(layer) -> tuple[int, int]:
    """(Y, X) of an image or labels layer (RGB channels dropped)."""
    data = full_resolution(layer) if isinstance(layer, Image) else layer.data
    shape = tuple(data.shape)
    return shape[-3:-1] if isinstance(layer, Image) and layer.rgb else shape[-2:]


def yx_transform(layer) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, translate) of the layer's last two (Y, X) axes."""
    return tuple(float(s) for s in layer.scale[-2:]), tuple(float(t) for t in layer.translate[-2:])


def check_2d(layer) -> None:
    """Raise ValueError for image layers with stacks (napari-tilemap classifies 2-D planes)."""
    data = full_resolution(layer) if isinstance(layer, Image) else layer.data
    extra = data.ndim - (3 if isinstance(layer, Image) and layer.rgb else 2)
    if extra > 0:
        raise ValueError(f"layer {layer.name!r} has {data.ndim} dimensions; napari-tilemap works on 2-D images")


def visible_box(viewer, layer) -> tuple[int, int, int, int]:
    """Pixel box (y0, y1, x0, x1) of ``layer`` that the canvas shows, clipped to the layer.

    Computed from the camera (centre, zoom) and the canvas size; the whole layer when the
    viewer has no canvas.
    """
    h, w = plane_shape(layer)
    canvas = getattr(viewer, "canvas", None)
    if canvas is None:  # napari < 0.9 keeps no canvas model
        return 0, h, 0, w
    size = np.asarray(canvas.size, float)  # (height, width) in screen pixels
    camera = camera_of(viewer)
    center = np.asarray(camera.center[-2:], float)
    half = size / float(camera.zoom) / 2
    corners = [layer.world_to_data(np.r_[center + d * half])[-2:] for d in ((-1, -1), (1, 1))]
    lo, hi = np.minimum(*corners), np.maximum(*corners)
    y0, x0 = np.floor(lo).astype(int)
    y1, x1 = np.ceil(hi).astype(int) + 1
    y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return 0, h, 0, w
    return y0, y1, x0, x1


def input_layers(viewer, kind) -> list:
    """The viewer's layers of type ``kind`` that can be inputs: map layers are outputs, left out."""
    return [x for x in viewer.layers if isinstance(x, kind) and not is_map_layer(x)]


def layer_combo(viewer, kind, label: str, tooltip: str = ""):
    """A ComboBox of the viewer's input layers of type ``kind`` (refreshed by reset_choices).

    It starts on, and after each refresh falls back to, the selected layer of that type, else
    the only one; the dock also moves it to every layer the user adds or selects.
    """
    combo = ComboBox(label=label, choices=lambda _=None: input_layers(viewer, kind), nullable=True,
                     tooltip=tooltip)
    _reset = combo.reset_choices

    def reset_choices(*_args) -> None:
        _reset()
        if combo.value is None:
            combo.value = obvious_layer(viewer, kind)

    combo.reset_choices = reset_choices
    reset_choices()
    return combo


def obvious_layer(viewer, kind):
    """The selected input layer of type ``kind``, else the only one, else None."""
    candidates = input_layers(viewer, kind)
    active = viewer.layers.selection.active
    if active in candidates:
        return active
    return candidates[0] if len(candidates) == 1 else None


def camera_of(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 on, ``viewer.camera`` before."""
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
