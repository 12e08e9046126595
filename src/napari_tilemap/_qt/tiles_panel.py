"""Tiles: cut training tiles from image/labels pairs and preview them as rectangles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, SpinBox
from napari.layers import Image, Labels

from .._layerdata import table_from_metadata
from ..learn._tiles import extract_tiles
from . import _notify
from ._layers import camera_of, check_2d, full_resolution, layer_combo, yx_transform
from ._threadwarnings import thread_warnings

IMBALANCE = 5.0
BACKGROUND_OUTLINE = (1.0, 1.0, 1.0, 0.12)
NO_PAIRS = "training set: the image and labels above (add more to train on several images)"
BACKGROUND_TIP = ("unpainted: everything you did not paint is one more class, 'background' - for defects on a "
                  "surface, paint only the defects. none: every region of the image is one of the painted classes "
                  "and unpainted pixels are ignored - for textures or tissue types, paint a few strokes of each")


@dataclass(frozen=True)
class TileParams:
    """Frozen snapshot of the tile controls (what :func:`extract_tiles` receives)."""

    tile_size: int
    background: str
    background_sampling: str
    seed: int


class TilesPanel(Container):
    """Extract tiles by blob analysis from one or more image/labels pairs."""

    def __init__(self, viewer, session, classes_panel) -> None:
        self.viewer, self.session, self.classes_panel = viewer, session, classes_panel
        self.preset_name = "medium"
        self.image = layer_combo(viewer, Image, "image", tooltip="The painted image; follows the layer you add "
                                                                 "or select")
        self.labels_layer = layer_combo(viewer, Labels, "labels", tooltip="The labels layer painted on that image")
        self.add_pair = PushButton(text="Add image + labels to the training set",
                                   tooltip="Train on several images: add each painted image with its labels")
        self.clear_pairs = PushButton(text="Clear the training set", tooltip="Forget the added image/labels pairs")
        self.pairs_label = Label(value=NO_PAIRS)
        self.tile_size = SpinBox(label="tile size", value=64, min=18, max=1024, step=2,
                                 tooltip="T, the side of a tile in pixels: the network's receptive field. A map "
                                         "cell's class is decided from the T x T tile around it; choose T a bit "
                                         "larger than what you paint. Even; at least 18 (small), 38 (medium), "
                                         "78 (large preset)")
        self.background = ComboBox(label="background", choices=["unpainted", "none"], value="unpainted",
                                   tooltip=BACKGROUND_TIP)
        self.sampling = ComboBox(label="background tiles", choices=["random", "grid"], value="random",
                                 tooltip="Where background tiles are cut in the unpainted area: at random, or on "
                                         "a regular grid")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="Random seed: the same seed and painting give the same tiles")
        self.preview = CheckBox(label="show tiles", value=True, tooltip="Outline the extracted tiles in a "
                                                                        "'tiles' layer, coloured by class")
        self.show_tile = CheckBox(label="show one tile at the view centre", value=False,
                                  tooltip="A T x T square in a 'tile size' layer, to compare with what you paint")
        self.geometry = Label(value="")
        self.extract = PushButton(text="Extract tiles", tooltip="Cut tiles around every painted blob, plus "
                                                                "background tiles")
        self.counts = Label(value="")
        super().__init__(widgets=[self.image, self.labels_layer, self.tile_size, self.geometry, self.show_tile,
                                  self.background, self.sampling, self.seed, self.preview, self.add_pair,
                                  self.clear_pairs, self.pairs_label, self.extract, self.counts])
        self.pairs: list[tuple[Image, Labels]] = []
        self.add_pair.clicked.connect(self._add_pair)
        self.clear_pairs.clicked.connect(self._clear_pairs)
        self.extract.clicked.connect(self.run)
        self.tile_size.changed.connect(self.show_geometry)
        self.show_tile.changed.connect(self.show_geometry)
        self.show_geometry()

    def set_preset(self, preset: str) -> None:
        """The Train tab's preset, whose step the geometry line states."""
        self.preset_name = preset
        self.show_geometry()

    def show_geometry(self, _=None) -> None:
        """State the tile size and the map step; draw one tile at the view centre when asked."""
        from ..learn._networks import PRESETS, architecture

        t = int(self.tile_size.value)
        try:
            step = architecture(self.preset_name, t, 1, 2).step
            fits = ""
        except ValueError:
            step = None
            fits = f" (too small for this preset: at least {PRESETS[self.preset_name].min_tile_size})"
        cell = f"one map cell per {step} x {step} px" if step else "no map"
        self.geometry.value = f"tile {t} x {t} px; {cell} with the {self.preset_name!r} preset (Train tab){fits}"
        name = "tile size"
        if not self.show_tile.value:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            return
        image = self.image.value
        scale = yx_transform(image)[0] if image is not None else (1.0, 1.0)
        centre = np.asarray(camera_of(self.viewer).center[-2:], float)
        half = np.asarray(scale) * t / 2
        square = np.array([centre - half, centre + half])
        if name in self.viewer.layers:
            self.viewer.layers[name].data = [square]
        else:
            self.viewer.add_shapes([square], shape_type="rectangle", edge_color="yellow", face_color="transparent",
                                   edge_width=max(1.0, float(np.max(half)) / 16), name=name)

    def params(self) -> TileParams:
        return TileParams(int(self.tile_size.value), self.background.value, self.sampling.value, int(self.seed.value))

    def _add_pair(self) -> None:
        if self.image.value is None or self.labels_layer.value is None:
            _notify.error("Choose an image and its labels layer first.")
            return
        self.pairs.append((self.image.value, self.labels_layer.value))
        self.pairs_label.value = "training set: " + "; ".join(f"{i.name} / {lb.name}" for i, lb in self.pairs)

    def _clear_pairs(self) -> None:
        self.pairs = []
        self.pairs_label.value = NO_PAIRS

    def run(self):
        """Extract tiles with the current controls; shows a notification instead of raising."""
        pairs = self.pairs or [(self.image.value, self.labels_layer.value)]
        if any(i is None or lb is None for i, lb in pairs):
            _notify.error("Choose an image layer and the labels layer painted on it.")
            return None
        p = self.params()
        try:
            for image, labels in pairs:
                check_2d(image)
            images = [np.asarray(full_resolution(i)) for i, _ in pairs]
            labels = [np.asarray(lb.data) for _, lb in pairs]
            table = self._table(pairs, labels, p.background)
            with thread_warnings() as caught:
                tiles = extract_tiles(images, labels, p.tile_size, background=p.background,
                                      background_sampling=p.background_sampling, class_table=table, seed=p.seed)
        except ValueError as err:
            _notify.error(f"Tiles: {err}")
            return None
        for warning in caught:
            _notify.warning(f"Tiles: {warning.message}")
        self.session.tiles = tiles
        self.session.class_table = tiles.class_table
        counts = tiles.counts()
        self.counts.value = ", ".join(f"{k}: {v}" for k, v in counts.items())
        present = [v for v in counts.values() if v > 0]
        if max(present) > IMBALANCE * min(present):
            _notify.warning(
                f"Classes are imbalanced ({self.counts.value}); training balances them, but painting more of "
                "the rare classes helps."
            )
        if self.preview.value:
            self._show(tiles, pairs)
        return tiles

    def _table(self, pairs, labels, background):
        table = table_from_metadata(pairs[0][1].metadata)
        if table is None:
            edited = self.classes_panel.class_table()
            painted = set().union(*(np.unique(lb).tolist() for lb in labels)) - {0}
            table = edited if painted <= set(edited.values) else None
        if table is not None and not table.has_background and background == "unpainted":
            return None
        if table is not None and background == "none":
            from .._classes import ClassTable

            keep = [k for k, v in enumerate(table.values) if v != 0]
            table = ClassTable(tuple(table.names[k] for k in keep), tuple(table.colors[k] for k in keep),
                               tuple(table.values[k] for k in keep))
        return table

    def _show(self, tiles, pairs) -> None:
        """A Shapes layer of tile outlines coloured by class, in world coordinates of each image."""
        t = tiles.tile_size
        rects, colors = [], []
        painted = np.asarray(tiles.class_table.values)[tiles.classes] != 0
        order = np.argsort(painted, kind="stable")  # background first, painted classes drawn on top
        for (y, x), k, i in zip(tiles.origins[order], tiles.classes[order], tiles.image_index[order]):
            scale, translate = yx_transform(pairs[i][0])
            corners = np.array([[y, x], [y + t, x + t]], float) - 0.5
            rects.append(corners * scale + translate)
            # background tiles cover the whole surface: faint, so the painted classes' tiles stay readable
            colors.append(tiles.class_table.colors[k] if tiles.class_table.values[k] else BACKGROUND_OUTLINE)
        name = "tiles"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_shapes(rects, shape_type="rectangle", edge_color=colors, face_color="transparent",
                               edge_width=max(1.0, t / 32), name=name, opacity=0.8,
                               features={"class": [tiles.class_table.names[k] for k in tiles.classes[order]]})
