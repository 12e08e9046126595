"""Classes: name and colour the classes, and create or adopt the Labels layer to paint them on."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container, Label, PushButton, Table
from napari.layers import Image, Labels
from napari.utils.colormaps.standardize_color import transform_color

from .._classes import ClassTable, default_color
from .._layerdata import labels_kwargs, table_from_metadata
from . import _notify
from ._layers import layer_combo, plane_shape, yx_transform


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


class ClassesPanel(Container):
    """Edit the class table (names, colours) and attach it to a Labels layer for painting."""

    def __init__(self, viewer, session) -> None:
        self.viewer, self.session = viewer, session
        self.image = layer_combo(viewer, Image, "image")
        self.table = Table(value={"name": ["pit", "scratch"], "color": [_hex(default_color(1)), _hex(default_color(2))]})
        self.add_class = PushButton(text="Add class")
        self.remove_class = PushButton(text="Remove last class")
        self.create = PushButton(text="Create labels layer for image")
        self.labels_layer = layer_combo(viewer, Labels, "labels")
        self.adopt = PushButton(text="Use these classes on labels layer")
        self.status = Label(value="Class 0 is background: never paint it.")
        super().__init__(widgets=[self.image, self.table, self.add_class, self.remove_class, self.create,
                                  self.labels_layer, self.adopt, self.status])
        self.add_class.clicked.connect(self._add_class)
        self.remove_class.clicked.connect(self._remove_class)
        self.create.clicked.connect(self.create_labels_layer)
        self.adopt.clicked.connect(self.adopt_labels_layer)

    def class_table(self) -> ClassTable:
        """The table as edited: painted values 1..K with their names and colours, plus background."""
        data = self.table.to_dict(orient="list")
        names = [str(n).strip() or f"class {i + 1}" for i, n in enumerate(data["name"])]
        colors = [tuple(float(c) for c in transform_color(str(col))[0]) for col in data["color"]]
        return ClassTable.from_values(range(1, len(names) + 1), names=names, colors=colors)

    def set_class_table(self, table: ClassTable) -> None:
        """Show ``table`` (e.g. a loaded model's) in the editor."""
        painted = [(n, c) for n, c, v in zip(table.names, table.colors, table.values) if v != 0]
        self.table.value = {"name": [n for n, _ in painted], "color": [_hex(c) for _, c in painted]}

    def _add_class(self) -> None:
        data = self.table.to_dict(orient="list")
        k = len(data["name"]) + 1
        self.table.value = {"name": [*data["name"], f"class {k}"], "color": [*data["color"], _hex(default_color(k))]}

    def _remove_class(self) -> None:
        data = self.table.to_dict(orient="list")
        if len(data["name"]) > 1:
            self.table.value = {key: values[:-1] for key, values in data.items()}

    def create_labels_layer(self) -> Labels | None:
        """Add an empty Labels layer aligned with the chosen image and carrying the class table."""
        image = self.image.value
        if image is None:
            _notify.error("Choose an image layer to paint on first.")
            return None
        try:
            table = self.class_table()
        except ValueError as err:
            _notify.error(f"Class table: {err}")
            return None
        scale, translate = yx_transform(image)
        layer = self.viewer.add_labels(
            np.zeros(plane_shape(image), np.uint8), name=f"{image.name} classes", scale=scale,
            translate=translate, **labels_kwargs(table),
        )
        layer.selected_label = 1
        layer.mode = "paint"
        self.session.class_table = table
        self.labels_layer.reset_choices()
        self.labels_layer.value = layer
        self.status.value = f"Paint classes 1..{len(table) - 1} on {layer.name!r}; 0 erases."
        return layer

    def adopt_labels_layer(self) -> None:
        """Give the chosen Labels layer the edited class table (colormap, features, metadata)."""
        layer = self.labels_layer.value
        if layer is None:
            _notify.error("Choose a labels layer first.")
            return
        try:
            table = self.class_table()
        except ValueError as err:
            _notify.error(f"Class table: {err}")
            return
        painted = set(np.unique(np.asarray(layer.data)).tolist()) - {0}
        unknown = sorted(painted - set(table.values))
        if unknown:
            _notify.warning(f"Layer {layer.name!r} has painted values {unknown} that the class table lacks.")
        kw = labels_kwargs(table)
        layer.colormap = kw["colormap"]
        layer.features = kw["features"]
        layer.metadata = {**layer.metadata, **kw["metadata"]}
        self.session.class_table = table
        self.status.value = f"{layer.name!r} now carries {len(table) - 1} classes."

    def table_for(self, layer: Labels) -> ClassTable | None:
        """The class table a labels layer carries, else the edited one."""
        return table_from_metadata(layer.metadata) or self.session.class_table
