"""Predict: the classification map of an image layer, filling in block by block."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils import progress

from .._layerdata import labels_kwargs, map_layer_data
from ..analysis._regions import apply_rules
from ..maps._dense import trained_orientations
from ..maps._predict import iter_predict
from ..maps._threshold import clear_threshold, iter_write_threshold
from . import _notify
from ._controls import device_combo
from ._layers import check_2d, full_resolution, layer_combo, visible_box, yx_transform
from ._minscore import min_score_edit, read_min_score
from ._threadwarnings import thread_warnings

REDRAW_SECONDS = 0.25


@dataclass(frozen=True)
class PredictParams:
    """Frozen snapshot of the prediction controls."""

    region: str
    block_size: int
    device: str
    contours: bool
    out: str | None
    tta: bool = False
    min_score: float | dict | None = None
    """The min score the map gets (resolved from the text field with the model)."""
    threshold: float | None = None
    """The reject threshold the map gets (None: the slider at 0)."""


@thread_worker
def _predict_job(model, data, params: PredictParams):
    """Worker body: yields BlockDone events, and warnings (an image on another intensity scale) as
    text; returns the finished map. Stopping closes the prediction, which keeps a store resumable."""
    blocks = iter_predict(model, data, params.out, block_size=params.block_size, device=params.device,
                          tta=params.tta, min_score=params.min_score, threshold=params.threshold)
    with thread_warnings() as caught:
        try:
            while True:
                try:
                    event = next(blocks)
                except StopIteration as done:
                    result = done.value
                    break
                while caught:
                    yield f"Prediction: {caught.pop(0).message}"
                yield event
        finally:
            blocks.close()
    for warning in caught:
        yield f"Prediction: {warning.message}"
    return result


@thread_worker
def _save_rules_job(writing):
    """Worker body: drives a store write (``iter_write_threshold`` or :func:`_clear_rules`), yielding
    (regions written, regions in all), and returns the store's map. The panel closes ``writing``
    when the worker finishes: a stopped write removes what it wrote and keeps the earlier rules."""
    return (yield from writing)


def _clear_rules(path):
    """``clear_threshold`` as a write to drive (it renames and removes, with nothing to follow)."""
    yield from ()
    return clear_threshold(path)


class PredictPanel(Container):
    """Run the model over the whole image or the part in view; Stop keeps earlier maps intact."""

    def __init__(self, viewer, session) -> None:
        self.viewer, self.session = viewer, session
        self.image = layer_combo(viewer, Image, "image", tooltip="The image to classify; follows the layer you add "
                                                                 "or select")
        self.region = ComboBox(label="region", choices=["whole image", "in view"], value="whole image",
                               tooltip="Classify the whole image, or only the part the canvas shows (quick look)")
        self.block_size = SpinBox(label="block size", value=1024, min=64, max=16384, step=64,
                                  tooltip="Side in pixels of the blocks the image is classified in; memory grows "
                                          "with its square")
        self.device = device_combo()
        self.contours = CheckBox(label="draw classes as contours", value=False,
                                 tooltip="Outline the classes instead of filling them")
        self.tta = CheckBox(label="test-time augmentation", value=False,
                            tooltip="Average each tile's scores over the quarter turns and mirrors the model was "
                                    "trained on: steadier on busy surfaces, up to 8x the time")
        self.out = FileEdit(label="save map to (optional)", mode="w", filter="*.zarr",
                            tooltip="A map store (NAME.zarr) to write the map to, block by block; an interrupted "
                                    "run resumes. Empty: keep the map in memory")
        self.predict = PushButton(text="Predict", tooltip="Classify the image with the current model")
        self.stop = PushButton(text="Stop", enabled=False, tooltip="Stop; the blocks done so far are kept")
        self.status = Label(value="")
        self.threshold = FloatSlider(label="reject threshold", value=0.0, min=0.0, max=1.0, step=0.01)
        self.threshold.tooltip = ("Cells whose best score is below this are shown as 'unknown' (grey), without "
                                  "running the network again; 0 shows every cell's best class")
        self.min_score = min_score_edit(
            "Regions whose highest score is below this are shown as 'unknown' (grey), whole; confident regions "
            "keep every cell. 'model' (the default): the min score training suggested; one value in 0..1 or "
            "NAME=VALUE pairs ('Evaluate' suggests them); empty: none. Applied when you press Enter")
        self.save_rules = PushButton(
            text="Save rules to map", enabled=False,
            tooltip="Write the reject threshold and min peak score shown into the saved map (NAME.zarr), so that "
                    "it opens as you see it now; its best classes and scores are kept")
        super().__init__(widgets=[self.image, self.region, self.block_size, self.device, self.contours, self.tta,
                                  self.out, self.predict, self.stop, self.status, self.threshold, self.min_score,
                                  self.save_rules])
        self.worker = None
        self._result = None  # the finished map, as written (a slider moved before any run has nothing to do)
        self.rules_worker = None
        self._summary = ""
        self._shown = None  # the map as the layers show it
        self.layers: list = []
        self._bar = None
        self.predict.clicked.connect(self.start)
        self.stop.clicked.connect(self.request_stop)
        self.threshold.changed.connect(self.apply_threshold)
        self.min_score.native.editingFinished.connect(self.apply_threshold)
        self.save_rules.clicked.connect(self.start_saving_rules)
        self._model = None

    def params(self, model) -> PredictParams:
        """The controls' snapshot, the min score resolved with ``model`` (a bad one raises ValueError)."""
        out = str(self.out.value) if str(self.out.value) not in ("", ".") else None
        return PredictParams(self.region.value, int(self.block_size.value), self.device.value,
                             bool(self.contours.value), out, bool(self.tta.value),
                             read_min_score(self.min_score.value, model), self._threshold_value())

    def _threshold_value(self) -> float | None:
        t = float(self.threshold.value)
        return t if t > 0 else None

    def start(self):
        """Predict in a worker thread; the map layers appear with the first block."""
        model = self.session.model_or_say_so()
        if model is None:
            return None
        image = self.image.value
        if image is None:
            _notify.error("Choose an image layer to predict on.")
            return None
        try:
            p = self.params(model)
            check_2d(image)
            data = full_resolution(image)
            channels = data.shape[-1] if image.rgb else 1
            if channels != model.in_channels:
                raise ValueError(f"the model expects {model.in_channels} channel(s) but {image.name!r} has {channels}")
            origin = (0, 0)
            if p.region == "in view":
                y0, y1, x0, x1 = visible_box(self.viewer, image)
                s = model.step
                y0, x0 = y0 - y0 % s, x0 - x0 % s  # keep cells on the whole-image grid
                if min(y1 - y0, x1 - x0) < model.tile_size:
                    raise ValueError("the region in view is smaller than a tile; zoom out")
                model = model.for_image(data)  # per-image levels are the whole image's, as in its whole map
                data, origin = data[y0:y1, x0:x1], (y0, x0)
            if p.out is not None and Path(p.out).exists():
                raise ValueError(f"{p.out} already exists; choose a new file name for the map")
            if p.tta:
                trained_orientations(model)  # a model without flips and turns is told before any work
        except ValueError as err:
            _notify.error(f"Prediction: {err}")
            return None
        scale, translate = yx_transform(image)
        self._model = model
        self._placement = (scale, tuple(t + s * o for t, s, o in zip(translate, scale, origin)))
        self._name = f"{image.name} map" + (" (view)" if p.region == "in view" else "")
        self._contours = p.contours
        self.layers, self._pending, self._busy, self._last_draw, self._result = [], 0, False, 0.0, None
        self._shown = None
        self.save_rules.enabled = False
        self.worker = _predict_job(model, data, p, _ignore_errors=True)
        self.worker.yielded.connect(self._on_block)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: _notify.error(f"Prediction failed: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.predict.enabled, self.stop.enabled = False, True
        self.status.value = "Predicting…"
        self.worker.start()
        return self.worker

    def request_stop(self) -> None:
        for worker in (self.worker, self.rules_worker):
            if worker is not None:
                worker.quit()

    def _on_block(self, event) -> None:
        if isinstance(event, str):
            _notify.warning(event)
            return
        self._pending += 1
        now = time.monotonic()
        if self._busy or (self.layers and now - self._last_draw < REDRAW_SECONDS and event.done < event.total):
            return  # progress bars process Qt events: never redraw re-entrantly, and at most a few times a second
        self._busy, self._last_draw = True, now
        try:
            self._draw(event)
        finally:
            self._busy = False

    def _draw(self, event) -> None:
        if not self.layers:
            self._bar = progress(total=event.total, desc="tilemap: predicting")
            self._pending += event.done - 1
            for data, kwargs, kind in map_layer_data(event.map, *self._placement, name=self._name):
                kwargs = {k: v for k, v in kwargs.items() if k != "multiscale"}
                if kwargs["name"] in self.viewer.layers:
                    self.viewer.layers.remove(kwargs["name"])
                layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
                if kind == "labels" and self._contours:
                    layer.contour = 1
                self.layers.append(layer)
            if self._result is not None:  # the run ended while the progress bar was being made
                self.apply_threshold()
        else:
            for layer in self.layers:
                layer.refresh()
        if self._result is None:  # making the progress bar may have finished the run: keep its summary
            self.status.value = f"block {event.done}/{event.total}"
        pending, self._pending = self._pending, 0
        self._bar.update(pending)  # last: napari's progress processes Qt events, which may finish the run

    def _on_done(self, cmap) -> None:
        self._result = cmap
        self.session.map = cmap
        for layer in self.layers:
            layer.refresh()
        self._summary = f"Map of {cmap.shape[0]}x{cmap.shape[1]} cells (step {cmap.step})"
        self.status.value = self._summary
        self.apply_threshold()  # the layers were filled with the best classes

    def apply_threshold(self, _=None) -> None:
        """Re-colour the map's classes layer from its scores: cells below the threshold, and regions
        below the min peak score, become unknown."""
        cmap = self._result
        if cmap is None or not self.layers:
            return
        try:
            shown = self._shown_map(cmap)
        except ValueError as err:
            _notify.error(f"Threshold: {err}")
            return
        kwargs = labels_kwargs(cmap.class_table, unknown=shown.rejects)
        layer = self.layers[0]
        layer.data = shown.classes
        layer.colormap = kwargs["colormap"]
        layer.features = kwargs["features"]
        self.session.map = self._shown = shown
        self._show_saved_state(shown)

    def _shown_map(self, cmap):
        """``cmap`` with the rules of the controls (a bad min score raises ValueError)."""
        return apply_rules(cmap.without_threshold(), self._threshold_value(),
                           read_min_score(self.min_score.value, self._model))

    def _show_saved_state(self, shown) -> None:
        """Say whether the saved map records the rules shown, and offer to save them when not."""
        saved = self._result  # a map store returns the rules it records
        if saved is None or saved.path is None or self.rules_worker is not None:
            return
        unsaved = (shown.threshold, shown.min_score) != (saved.threshold, saved.min_score)
        self.save_rules.enabled = unsaved and self.worker is None
        self.status.value = (f"{self._summary}; the rules shown are not in {Path(shown.path).name}: "
                             "press 'Save rules to map'" if unsaved else self._summary)

    def start_saving_rules(self):
        """Write the rules shown into the saved map store in a worker; Stop keeps its earlier rules."""
        cmap = self._result
        if cmap is None or cmap.path is None or self.rules_worker is not None or self.worker is not None:
            return None
        try:
            shown = self._shown_map(cmap)
        except ValueError as err:
            _notify.error(f"Threshold: {err}")
            return None
        path = str(cmap.path)
        self._writing = (_clear_rules(path) if shown.threshold is None and shown.min_score is None
                         else iter_write_threshold(path, shown.threshold, min_score=shown.min_score))
        self._rules_saved = False
        self.rules_worker = _save_rules_job(self._writing, _ignore_errors=True)
        self._bar = progress(total=0, desc="tilemap: saving rules")
        self.rules_worker.yielded.connect(self._on_rules_progress)
        self.rules_worker.returned.connect(self._on_rules_saved)
        self.rules_worker.errored.connect(lambda err: _notify.error(f"Saving the rules failed: {err}"))
        self.rules_worker.finished.connect(self._on_rules_finished)
        self.predict.enabled, self.save_rules.enabled, self.stop.enabled = False, False, True
        self.status.value = f"Saving the rules to {Path(path).name}…"
        self.rules_worker.start()
        return self.rules_worker

    def _on_rules_progress(self, event) -> None:
        done, total = event
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def _on_rules_saved(self, cmap) -> None:
        self._rules_saved = True
        if self._result is not None and self._result.path == cmap.path:
            self._result = cmap

    def _on_rules_finished(self) -> None:
        self._writing.close()  # a stopped write removes what it wrote here and releases the store
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.rules_worker = None
        self.predict.enabled, self.stop.enabled = True, False
        saved, self._rules_saved = self._rules_saved, False
        if self._shown is not None:
            self._show_saved_state(self._shown)
        if not saved:
            self.status.value = "Saving stopped or failed; the saved map keeps its earlier rules."

    def _on_finished(self) -> None:
        if self._result is None and self.layers:  # stopped (or failed) before the last block
            for layer in self.layers:
                layer.name = f"{layer.name} (stopped)"
            self.status.value = "Stopped; the partial map is marked '(stopped)'."
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.predict.enabled, self.stop.enabled = True, False
        self.worker = None
        if self._shown is not None:
            self._show_saved_state(self._shown)  # offers to save rules changed while the map was written
