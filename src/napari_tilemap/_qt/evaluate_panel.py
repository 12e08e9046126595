"""Evaluate: measure the model against a labels layer of truth, in a worker thread with Stop."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils import progress

from ..analysis._evaluate import evaluate
from ..analysis._report import write_report
from ..maps._dense import trained_orientations
from . import _notify
from ._controls import device_combo, read_only_text
from ._layers import check_2d, full_resolution, layer_combo, plane_shape
from ._minscore import min_score_edit, read_min_score
from .plot import EvaluationPlot


@dataclass(frozen=True)
class EvaluateParams:
    """Frozen snapshot of the evaluation controls."""

    unlabelled: str
    threshold: float | None
    block_size: int
    device: str
    min_score: float | dict | None = None
    """None: every region judged (the text field's 'model' is resolved with the model first)."""
    tta: bool = False


@thread_worker
def _evaluate_job(model, image, truth, params: EvaluateParams, cancel: threading.Event):
    """Worker body: yields progress events while ``evaluate`` runs; returns the Evaluation."""
    events: queue.Queue = queue.Queue()
    with ThreadPoolExecutor(1, thread_name_prefix="tilemap-evaluate") as pool:
        future = pool.submit(
            evaluate, model, image, truth, unlabelled=params.unlabelled, threshold=params.threshold,
            min_score=0.0 if params.min_score is None else params.min_score, block_size=params.block_size,
            device=params.device, tta=params.tta,
            callback=events.put, cancel=cancel,
        )
        while not (future.done() and events.empty()):
            try:
                yield events.get(timeout=0.05)
            except queue.Empty:
                pass
        return future.result()


class EvaluatePanel(Container):
    """Image and truth layers, how to read the truth, a reject threshold; tables, plots and a report."""

    def __init__(self, viewer, session) -> None:
        self.viewer, self.session = viewer, session
        self.image = layer_combo(viewer, Image, "image")
        self.truth = layer_combo(viewer, Labels, "truth labels")
        self.unlabelled = ComboBox(
            label="unlabelled pixels", value="background",
            choices=[("are background (full truth)", "background"), ("are ignored (sparse painting)", "ignore")],
        )
        self.threshold = FloatSpinBox(label="reject threshold", value=0.0, min=0.0, max=1.0, step=0.05)
        self.min_score = min_score_edit("")
        self.block_size = SpinBox(label="block size", value=1024, min=64, max=16384, step=64)
        self.device = device_combo()
        self.tta = CheckBox(label="test-time augmentation", value=False)
        self.evaluate = PushButton(text="Evaluate")
        self.stop = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")
        self.summary = read_only_text()
        self.plot = EvaluationPlot()
        self.report_dir = FileEdit(label="report folder", mode="d")
        self.save = PushButton(text="Save report")
        super().__init__(widgets=[
            self.image, self.truth, self.unlabelled, self.threshold, self.min_score, self.block_size, self.device,
            self.tta, self.evaluate, self.stop, self.status, self.plot, self.summary, self.report_dir, self.save,
        ])
        self.tooltips()
        self.plot.visible = self.summary.visible = False  # shown with the first result, not as empty frames
        self.worker = None
        self.result = None
        self._cancel = threading.Event()
        self._bar = None
        self.evaluate.clicked.connect(self.start)
        self.stop.clicked.connect(self.request_stop)
        self.save.clicked.connect(self.save_report)

    def tooltips(self) -> None:
        self.truth.tooltip = "A labels layer with the true class values (as painted) for every pixel that counts"
        self.unlabelled.tooltip = ("Full truth: value 0 is background and is scored. Sparse painting: only "
                                   "painted pixels are scored")
        self.threshold.tooltip = "Cells whose best score is below this are 'unknown' (0: no threshold)"
        self.min_score.tooltip = ("Regions whose highest score is below this are 'unknown', whole, as the Predict "
                                  "tab shows them: 'model' (the default) the min score training suggested, one "
                                  "value or NAME=VALUE pairs, empty none; the suggested min score is of every region")
        self.tta.tooltip = "Predict with test-time augmentation, as the Predict tab's checkbox does (up to 8x the time)"
        self.image.tooltip = "The image to classify and compare with the truth; follows the layer you add or select"
        self.block_size.tooltip = "Side in pixels of the blocks the image is classified in; memory grows with its square"
        self.evaluate.tooltip = "Classify the image and compare every cell and object with the truth"
        self.stop.tooltip = "Stop the evaluation; nothing is measured"
        self.report_dir.tooltip = "A folder for evaluation.json and the pictures"
        self.save.tooltip = "Write the report of the last evaluation into the report folder"

    def params(self, model) -> EvaluateParams:
        """The controls' snapshot, the min score resolved with ``model`` (a bad one raises ValueError)."""
        threshold = float(self.threshold.value)
        return EvaluateParams(self.unlabelled.value, threshold if threshold > 0 else None,
                              int(self.block_size.value), self.device.value,
                              read_min_score(self.min_score.value, model), bool(self.tta.value))

    def start(self):
        """Evaluate the current model on the chosen image against the chosen truth."""
        model = self.session.model_or_say_so()
        if model is None:
            return None
        image, truth = self.image.value, self.truth.value
        if image is None or truth is None:
            _notify.error("Choose an image layer and a labels layer holding the truth.")
            return None
        try:
            check_2d(image)
            check_2d(truth)
            if plane_shape(image) != plane_shape(truth):
                raise ValueError(f"the truth {truth.name!r} has shape {plane_shape(truth)} but the image "
                                 f"{image.name!r} has {plane_shape(image)}; choose the labels drawn on this image")
            if self.tta.value:
                trained_orientations(model)  # a model without flips and turns is told before any work
            params = self.params(model)
        except ValueError as err:
            _notify.error(f"Evaluation: {err}")
            return None
        self._cancel = threading.Event()
        self.result = None
        self.worker = _evaluate_job(model, full_resolution(image), truth.data, params, self._cancel,
                                    _ignore_errors=True)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: _notify.error(f"Evaluation failed: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.evaluate.enabled, self.stop.enabled = False, True
        self.status.value = "Evaluating…"
        self.worker.start()
        return self.worker

    def request_stop(self) -> None:
        self._cancel.set()
        self.status.value = "Stopping…"

    def _on_progress(self, event) -> None:
        self.status.value = f"{event.stage}: {event.done}/{event.total}"
        if self._bar is None or self._bar.desc != f"tilemap: {event.stage}":
            if self._bar is not None:
                self._bar.close()
            self._bar = progress(total=event.total, desc=f"tilemap: {event.stage}")  # may run _on_finished
        if self.worker is None:
            self._bar.close()
            self._bar = None
            return
        self._bar.n = event.done
        self._bar.refresh()  # last: napari's progress processes Qt events

    def _on_done(self, result) -> None:
        self.result = result
        self.summary.value = result.summary()
        self.plot.show(result)
        self.plot.visible = self.summary.visible = True

    def _on_finished(self) -> None:
        # set last: a progress event handled while a progress bar processed Qt events may come after _on_done
        if self.result is not None:
            self.status.value = "Evaluated: " + self.result.headline()
        elif self._cancel.is_set():
            self.status.value = "Stopped; nothing was measured."
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.evaluate.enabled, self.stop.enabled = True, False
        self.worker = None

    def save_report(self) -> None:
        if self.result is None:
            _notify.error("Evaluate first, then save the report.")
            return
        folder = str(self.report_dir.value)
        if folder in ("", "."):
            _notify.error("Choose a report folder.")
            return
        try:
            paths = write_report(self.result, Path(folder))
        except (ValueError, OSError) as err:
            _notify.error(f"Report: {err}")
            return
        self.status.value = f"Wrote {len(paths)} files to {folder}"
        _notify.info(self.status.value)
