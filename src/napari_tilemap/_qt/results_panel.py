"""Results: a map's regions as a Shapes layer and a table, per-class statistics, and exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Table,
)
from napari.layers import Labels
from napari.qt.threading import thread_worker
from napari.utils import progress

from .._layerdata import is_map_layer, table_from_metadata
from ..analysis._export import FORMATS, export
from ..analysis._polygons import region_outlines
from ..analysis._regions import apply_rules, regions
from ..analysis._stats import format_table, statistics
from ..maps._threshold import normalize_threshold, parse_threshold
from . import _notify
from ._controls import read_only_text
from ._layers import camera_of, yx_transform

SHOWN_COLUMNS = ("region", "class_name", "area_px", "mean_score", "max_score")
"""Columns of the regions table shown in the dock (the Shapes layer's features hold them all)."""


def _physical(layer, image_scale: tuple[float, float]) -> dict:
    """``pixel_size`` and ``unit`` for the tables when the image layer has a scale (else none)."""
    if image_scale == (1.0, 1.0):
        return {}
    units = getattr(layer, "units", None)
    unit = str(units[-1]) if units is not None and len(units) else ""
    return {"pixel_size": image_scale, "unit": "" if unit in ("pixel", "px") else unit}


@thread_worker
def _regions_job(found):
    """Worker body: the regions, statistics and outlines (napari layers are drawn back in the GUI thread)."""
    return ResultsPanel._compute(found)


@thread_worker
def _export_job(cmap, path: Path, fmt: str, options: dict) -> Path:
    """Worker body: write one export (the map is read block by block)."""
    return export(cmap, path, fmt, **options)


def _is_map_layer(layer) -> bool:
    """A map's classes layer (its score layers are map layers too, but hold no regions)."""
    return isinstance(layer, Labels) and is_map_layer(layer)


class ResultsPanel(Container):
    """Regions of a map layer (Shapes + table), statistics per class, and an Export button.

    Clicking a row of the table or a shape of the layer centres the view on that region.
    """

    def __init__(self, viewer, session) -> None:
        self.viewer, self.session = viewer, session
        self.map_layer = ComboBox(label="map", nullable=True,
                                  choices=lambda _=None: [x for x in viewer.layers if _is_map_layer(x)])
        self.threshold = FloatSpinBox(label="reject threshold", value=0.0, min=0.0, max=1.0, step=0.05)
        self.min_area = FloatSpinBox(label="min area (px)", value=0.0, min=0.0, max=1e12, step=16)
        self.min_score = LineEdit(label="min peak score", value="")
        self.show = PushButton(text="Show regions")
        self.status = Label(value="")
        self.stats = read_only_text()
        self.table = Table(value={c: [] for c in SHOWN_COLUMNS})
        self.table.read_only = True
        self.format = ComboBox(label="format", choices=list(FORMATS), value="geojson")
        self.out = FileEdit(label="export to", mode="w")
        self.overwrite = CheckBox(text="replace an existing file", value=False)
        self.export_button = PushButton(text="Export")
        super().__init__(widgets=[
            self.map_layer, self.threshold, self.min_area, self.min_score, self.show, self.status, self.stats,
            self.table, self.format, self.out, self.overwrite, self.export_button,
        ])
        self.map_layer.tooltip = "A map layer made by Predict or opened from a map store"
        self.threshold.tooltip = "Cells whose best score is below this are 'unknown' and in no region (0: none)"
        self.min_area.tooltip = "Leave out regions smaller than this many image pixels"
        self.min_score.tooltip = ("Leave out regions whose highest score is below this, whole; confident regions "
                                  "stay whole. One value (0.9) or one per class (pit=0.9,scratch=0.95), as "
                                  "Evaluate suggests them; empty: none")
        self.show.tooltip = "Find the map's regions: a 'regions' shapes layer, the table below and statistics"
        self.stats.tooltip = "Regions, cells, area and area fraction of each class (and unknown)"
        self.table.tooltip = "One row per region; click a row to centre the view on it"
        self.format.tooltip = ("geojson: polygons for QuPath; coco: JSON with RLE masks; csv: the regions table; "
                               "tiff: a full-resolution label image")
        self.out.tooltip = "The file to export to"
        self.overwrite.tooltip = "Replace the file if it exists (otherwise an existing file is never touched)"
        self.export_button.tooltip = "Write the regions (or the label image) in the chosen format"
        self.regions: dict | None = None
        self.shapes = None
        self._placement = ((1.0, 1.0), (0.0, 0.0))
        self.worker = None
        self._bar = None
        self.show.clicked.connect(self.start)
        self.export_worker = None
        self.export_button.clicked.connect(self.start_export)
        self.table.native.itemSelectionChanged.connect(self._on_row)

    def reset_choices(self, *_) -> None:
        """Refresh the map layers; with none chosen yet, choose the newest."""
        super().reset_choices()
        choices = [c for c in self.map_layer.choices if c is not None]
        if self.map_layer.value is None and choices:
            self.map_layer.value = choices[-1]

    def current_map(self):
        """The ClassificationMap of the chosen map layer (its store, or the session's map), or None."""
        layer = self.map_layer.value
        if layer is None:
            return None
        path = (layer.metadata or {}).get("tilemap_path") or ""
        if path and Path(path).exists():
            from ..maps._mapstore import open_map

            return open_map(path)
        cmap = self.session.map
        table = table_from_metadata(layer.metadata)
        if cmap is not None and tuple(cmap.shape) == tuple(np.shape(layer.data)[-2:]) and cmap.class_table == table:
            return cmap
        return None

    def _params(self, cmap) -> dict | None:
        """The table options for ``cmap``, or None after telling the user what is wrong with the min score."""
        t = float(self.threshold.value)
        try:
            m = parse_threshold(str(self.min_score.value), "min score")
            if m is not None:
                normalize_threshold(m, cmap.class_table, "min_score")
        except ValueError as err:
            _notify.error(f"Results: {err}")
            return None
        return {"threshold": t if t > 0 else None, "min_area": float(self.min_area.value), "min_score": m}

    def show_regions(self) -> dict | None:
        """Compute the regions and statistics of the chosen map and draw them, here and now."""
        found = self._inputs()
        if found is None:
            return None
        try:
            return self._present(self._compute(found))
        except ValueError as err:
            _notify.error(f"Results: {err}")
            return None

    def start(self):
        """What the Show regions button does: compute in a worker thread, draw when done."""
        found = self._inputs()
        if found is None:
            return None
        self.show.enabled = False
        self.status.value = "Finding regions…"
        self._bar = progress(total=0, desc="tilemap: regions")  # indeterminate: regions come in one pass
        self.worker = _regions_job(found, _ignore_errors=True)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: _notify.error(f"Results: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.worker.start()
        return self.worker

    def _on_done(self, found) -> None:
        self._present(found)

    def _on_finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.show.enabled = True
        self.worker = None

    def _inputs(self):
        """The chosen layer, its map and the table options, or None after telling the user why not."""
        layer = self.map_layer.value
        cmap = self.current_map()
        if cmap is None:
            _notify.error("Results: choose a map layer (predict one, or open a map store).")
            return None
        scale, translate = yx_transform(layer)
        image_scale = tuple(s / cmap.step for s in scale)
        image_translate = tuple(t - s * o for t, s, o in zip(translate, image_scale, cmap.offset))
        params = self._params(cmap)
        if params is None:
            return None
        self._placement = (image_scale, image_translate)
        return layer.name, cmap, params, _physical(layer, image_scale)

    @staticmethod
    def _compute(found):
        """Regions, statistics and outlines of ``found`` (from :meth:`_inputs`); no napari calls, any thread."""
        name, cmap, params, physical = found
        shown = apply_rules(cmap, params["threshold"], params["min_score"])  # once for the table and the statistics
        table = regions(shown, min_area=params["min_area"], image=name, **physical)
        stats = statistics(shown, min_area=params["min_area"], images=[name], **physical)
        outlines = [ring - 0.5 for ring in region_outlines(shown, table)]  # pixel edges -> napari pixel centres
        return name, cmap, table, stats, outlines

    def _present(self, found) -> dict:
        name, cmap, table, stats, outlines = found
        self.regions = table
        self._draw(name, outlines, table, cmap)
        self.stats.value = format_table(stats)
        self.table.value = {c: np.asarray(table[c]).tolist() for c in SHOWN_COLUMNS}
        self.status.value = f"{len(table['region'])} regions"
        return table

    def _draw(self, name: str, outlines: list, table: dict, cmap) -> None:
        colors = {v: np.asarray(c) for v, _, c in cmap.legend()}
        from .._classes import UNKNOWN, UNKNOWN_COLOR

        colors.setdefault(UNKNOWN, np.asarray(UNKNOWN_COLOR))
        edge = np.array([colors[int(v)] for v in table["class_value"]]).reshape(-1, 4)
        face = edge.copy()
        face[:, 3] = 0.35
        title = f"{name} regions"
        if title in self.viewer.layers:
            self.viewer.layers.remove(title)
        self.shapes = self.viewer.add_shapes(
            outlines, shape_type="polygon", features={k: np.asarray(v) for k, v in table.items()},
            edge_color=edge if len(edge) else "white", face_color=face if len(face) else "white", edge_width=1,
            scale=self._placement[0], translate=self._placement[1], name=title,
        )
        self.shapes.selected_data.events.items_changed.connect(self._on_shape)

    def centre_on(self, row: int) -> None:
        """Centre the view on region ``row`` of the table (its centroid)."""
        (sy, sx), (ty, tx) = self._placement
        y, x = self.regions["centroid_y"][row], self.regions["centroid_x"][row]
        camera = camera_of(self.viewer)
        camera.center = (ty + sy * y, tx + sx * x)

    def _on_row(self) -> None:
        row = self.table.native.currentRow()
        if self.regions is None or row < 0 or row >= len(self.regions["region"]):
            return
        self.centre_on(row)
        if self.shapes is not None and set(self.shapes.selected_data) != {row}:
            self.shapes.selected_data = {row}

    def _on_shape(self, _=None) -> None:
        chosen = sorted(self.shapes.selected_data) if self.shapes is not None else []
        if len(chosen) != 1 or self.regions is None:
            return
        self.centre_on(chosen[0])
        if self.table.native.currentRow() != chosen[0]:
            self.table.native.selectRow(chosen[0])

    def _export_inputs(self):
        """(map, path, format, options) of the chosen export, or None after telling the user why not."""
        cmap = self.current_map()
        if cmap is None:
            _notify.error("Export: choose a map layer first.")
            return None
        out = str(self.out.value)
        if out in ("", "."):
            _notify.error("Export: choose a file to write.")
            return None
        path = Path(out)
        if path.suffix.lower() not in (".geojson", ".json", ".csv", ".tif", ".tiff"):
            path = path.with_name(path.name + FORMATS[self.format.value])
        layer = self.map_layer.value
        scale = yx_transform(layer)[0]
        physical = _physical(layer, tuple(v / cmap.step for v in scale))
        params = self._params(cmap)
        if params is None:
            return None
        options = {"overwrite": bool(self.overwrite.value), "image": layer.name, **params, **physical}
        return cmap, path, self.format.value, options

    def export(self) -> Path | None:
        """Export the chosen map in the chosen format to the chosen file, here and now."""
        found = self._export_inputs()
        if found is None:
            return None
        try:
            return self._on_exported(export(found[0], found[1], found[2], **found[3]))
        except (ValueError, OSError) as err:
            _notify.error(f"Export: {err}")
            return None

    def start_export(self):
        """What the Export button does: write the export in a worker thread, the dock stays live."""
        found = self._export_inputs()
        if found is None:
            return None
        self.export_button.enabled = False
        self.status.value = f"Writing {found[1].name}…"
        bar = progress(total=0, desc=f"tilemap: export {found[2]}")  # indeterminate: one pass over the map
        self.export_worker = _export_job(*found, _ignore_errors=True)
        self.export_worker.returned.connect(self._on_exported)
        self.export_worker.errored.connect(lambda err: self._export_failed(err))
        self.export_worker.finished.connect(lambda: self._export_finished(bar))
        self.export_worker.start()
        return self.export_worker

    def _on_exported(self, path: Path) -> Path:
        self.status.value = f"Wrote {path.name}"
        _notify.info(f"Wrote {path}")
        return path

    def _export_failed(self, err) -> None:
        self.status.value = "Export failed"
        _notify.error(f"Export: {err}")

    def _export_finished(self, bar) -> None:
        bar.close()
        self.export_button.enabled = True
        self.export_worker = None
