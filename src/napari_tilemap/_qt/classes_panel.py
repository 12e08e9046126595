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

IMAGE_TIP = "The image layer to paint on and classify; follows the layer you add or select"
LABELS_TIP = "The labels layer you paint the classes on; follows the labels layer you add or select"
BACKGROUND_COLOR = "transparent"


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


def _table_value(names: list, colors: list) -> dict:
    """Table rows headed by label values: background (0), then the painted classes 1..K."""
    return {"data": [["background", BACKGROUND_COLOR], *([n, c] for n, c in zip(names, colors))],
            "index": [str(v) for v in range(len(names) + 1)], "columns": ["name", "color"]}


class ClassesPanel(Container):
    """Edit the class table (names, colours) and attach it to a Labels layer for painting."""

    def __init__(self, viewer, session) -> None:
        self.viewer, self.session = viewer, session
        self.image = layer_combo(viewer, Image, "image", tooltip=IMAGE_TIP)
        self.table = Table(value=_table_value(["pit", "scratch"], [_hex(default_color(1)), _hex(default_color(2))]))
        self.table.tooltip = ("One row per class, headed by the label value you paint it with. Double-click a name "
                              "or a colour (#rrggbb) to change it. Row 0, background, is what you leave unpainted.")
        self.add_class = PushButton(text="Add class", tooltip="Add a class with the next label value")
        self.remove_class = PushButton(text="Remove last class", tooltip="Remove the class with the highest value")
        self.create = PushButton(text="Create labels layer for image",
                                 tooltip="Add an empty labels layer over the image, with these classes, "
                                         "ready to paint")
        self.labels_layer = layer_combo(viewer, Labels, "labels", tooltip=LABELS_TIP)
        self.adopt = PushButton(text="Use these classes on labels layer",
                                tooltip="Give the chosen labels layer these names and colours (its painted "
                                        "values stay)")
        self.status = Label(value="Paint classes 1, 2, …; leave background (0) unpainted.")
        super().__init__(widgets=[self.image, self.table, self.add_class, self.remove_class, self.create,
                                  self.labels_layer, self.adopt, self.status])
        self._show_swatches()
        self.table.changed.connect(self._show_swatches)
        self.add_class.clicked.connect(self._add_class)
        self.remove_class.clicked.connect(self._remove_class)
        self.create.clicked.connect(self.create_labels_layer)
        self.adopt.clicked.connect(self.adopt_labels_layer)

    def _painted_rows(self) -> dict[str, list]:
        data = self.table.to_dict(orient="list")
        return {key: values[1:] for key, values in data.items()}  # row 0 is background

    def class_table(self) -> ClassTable:
        """The table as edited: painted values 1..K with their names and colours, plus background."""
        data = self._painted_rows()
        names = [str(n).strip() or f"class {i + 1}" for i, n in enumerate(data["name"])]
        colors = [tuple(float(c) for c in transform_color(str(col))[0]) for col in data["color"]]
        return ClassTable.from_values(range(1, len(names) + 1), names=names, colors=colors)

    def set_class_table(self, table: ClassTable) -> None:
        """Show ``table`` (e.g. a loaded model's) in the editor."""
        painted = [(n, c) for n, c, v in zip(table.names, table.colors, table.values) if v != 0]
        self.table.value = _table_value([n for n, _ in painted], [_hex(c) for _, c in painted])

    def _add_class(self) -> None:
        data = self._painted_rows()
        k = len(data["name"]) + 1
        self.table.value = _table_value([*data["name"], f"class {k}"], [*data["color"], _hex(default_color(k))])

    def _remove_class(self) -> None:
        data = self._painted_rows()
        if len(data["name"]) > 1:
            self.table.value = _table_value(data["name"][:-1], data["color"][:-1])

    def _show_swatches(self, _=None) -> None:
        """Colour each colour cell with its colour; background's row cannot be edited."""
        from qtpy.QtCore import Qt
        from qtpy.QtGui import QBrush, QColor

        native = self.table.native
        native.blockSignals(True)
        try:
            for row in range(native.rowCount()):
                for col in range(native.columnCount()):
                    item = native.item(row, col)
                    if item is None:
                        continue
                    if row == 0:
                        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                    if col == 1 and row > 0:
                        color = QColor(str(item.text()))
                        if color.isValid():
                            item.setBackground(QBrush(color))
                            dark = color.lightness() < 128
                            item.setForeground(QBrush(QColor("white" if dark else "black")))
        finally:
            native.blockSignals(False)
        rows = native.verticalHeader().length()
        native.setFixedHeight(native.horizontalHeader().sizeHint().height() + rows + 2 * native.frameWidth() + 4)
        native.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

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
