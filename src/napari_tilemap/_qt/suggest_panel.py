"""Paint here next: the model's most uncertain cells as a Points layer, visited with Next / Previous."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import Container, Label, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import thread_worker

from ..analysis._suggest import suggest
from . import _notify
from ._controls import device_combo
from ._layers import camera_of, check_2d, full_resolution, layer_combo, yx_transform


@dataclass(frozen=True)
class SuggestParams:
    """Frozen snapshot of the suggestion controls (spacing None: the model's tile size)."""

    n: int
    spacing: float | None
    device: str


@thread_worker
def _suggest_job(model, image, params: SuggestParams):
    return suggest(model, image, n=params.n, spacing=params.spacing, device=params.device)


class SuggestPanel(Container):
    """Suggest where to paint next on an image; Next / Previous centre the view on each suggestion."""

    def __init__(self, viewer, session) -> None:
        self.viewer, self.session = viewer, session
        self.image = layer_combo(viewer, Image, "image")
        self.n = SpinBox(label="suggestions", value=20, min=1, max=1000)
        self.spacing = SpinBox(label="spacing (px, 0: tile size)", value=0, min=0, max=100_000)
        self.device = device_combo()
        self.run = PushButton(text="Suggest")
        self.previous = PushButton(text="Previous", enabled=False)
        self.next = PushButton(text="Next", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.image, self.n, self.spacing, self.device, self.run, self.previous,
                                  self.next, self.status])
        self.run.tooltip = ("Find the cells where the model hesitates most between two classes (smallest "
                            "margin between its two best scores), spread at least 'spacing' apart")
        self.image.tooltip = "The image to look for uncertain places in; follows the layer you add or select"
        self.n.tooltip = "How many places to suggest"
        self.spacing.tooltip = "Least distance in image pixels between two suggestions (0: one tile size)"
        self.previous.tooltip = "Centre the view on the previous suggestion"
        self.next.tooltip = ("Centre the view on the next suggestion: paint what is there, then fine-tune in the "
                             "Train tab")
        self.worker = None
        self.result = None
        self.layer = None
        self.index = -1
        self.run.clicked.connect(self.start)
        self.next.clicked.connect(lambda: self.go(+1))
        self.previous.clicked.connect(lambda: self.go(-1))

    def params(self) -> SuggestParams:
        spacing = float(self.spacing.value)
        return SuggestParams(int(self.n.value), spacing if spacing > 0 else None, self.device.value)

    def start(self):
        """Compute suggestions for the chosen image with the session's model, in a worker thread."""
        model = self.session.model_or_say_so()
        if model is None:
            return None
        image = self.image.value
        if image is None:
            _notify.error("Choose the image to suggest on.")
            return None
        try:
            check_2d(image)
        except ValueError as err:
            _notify.error(f"Suggest: {err}")
            return None
        self.worker = _suggest_job(model, full_resolution(image), self.params(), _ignore_errors=True)
        self.worker.returned.connect(lambda result: self.show(result, image))
        self.worker.errored.connect(lambda err: _notify.error(f"Suggest failed: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.run.enabled = False
        self.status.value = "Suggesting…"
        self.worker.start()
        return self.worker

    def _on_finished(self) -> None:
        self.run.enabled = True
        self.worker = None

    def show(self, result, image) -> None:
        """Put ``result`` in a Points layer over ``image`` (replacing an earlier one) and go to the first."""
        self.result = result
        name = f"{image.name} suggestions"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        scale, translate = yx_transform(image)
        self.layer = self.viewer.add_points(
            result.positions, name=name, features=result.features(), scale=scale, translate=translate,
            size=max(8.0, float(result.spacing) / 4), face_color="transparent", border_color="yellow",
            text={"string": "{rank}", "color": "yellow", "anchor": "upper_left"},
        )
        self.index = -1
        self.previous.enabled = self.next.enabled = len(result) > 0
        if len(result):
            self.go(+1)
        else:
            self.status.value = "No suggestions."

    def go(self, direction: int) -> None:
        """Centre the view on the next (+1) or previous (-1) suggestion, wrapping around."""
        if self.result is None or not len(self.result) or self.layer is None:
            return
        self.index = (self.index + direction) % len(self.result)
        world = self.layer.data_to_world(self.result.positions[self.index])
        camera = camera_of(self.viewer)
        camera.center = tuple(np.asarray(world, float)[-2:])
        self.layer.selected_data = {self.index}
        r = self.result
        names = dict(zip(r.class_values, r.class_names))
        self.status.value = (f"{self.index + 1}/{len(r)}: {names[int(r.best[self.index])]} or "
                             f"{names[int(r.runner_up[self.index])]}? margin {float(r.margins[self.index]):.3f}")
