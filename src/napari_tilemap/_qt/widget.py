"""The main dock widget: Classes → Tiles → Train → Predict → Suggest → Evaluate → Results, one tab each."""

from __future__ import annotations

from dataclasses import dataclass

from magicgui.widgets import Label
from napari.layers import Image, Labels
from qtpy.QtWidgets import QSizePolicy, QTabWidget, QVBoxLayout, QWidget

from .._layerdata import is_map_layer
from . import _notify
from .classes_panel import ClassesPanel
from .evaluate_panel import EvaluatePanel
from .predict_panel import PredictPanel
from .results_panel import ResultsPanel
from .suggest_panel import SuggestPanel
from .tiles_panel import TilesPanel
from .train_panel import TrainPanel


@dataclass
class Session:
    """What the tabs share: plain objects from the core, never widgets."""

    class_table: object = None
    tiles: object = None
    model: object = None
    map: object = None

    def model_or_say_so(self):
        """The model, or None after telling the user how to get one."""
        if self.model is None:
            _notify.error("No model: train one (Train tab) or load a model file first.")
        return self.model


class TilemapWidget(QWidget):
    """Paint classes, extract tiles, train, predict and evaluate, each in its own tab.

    The image and labels choices of every tab start on the layer the user added or selected
    last, and a choice made in one tab carries to the others.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session()
        self.classes = ClassesPanel(napari_viewer, self.session)
        self.tiles = TilesPanel(napari_viewer, self.session, self.classes)
        self.training = TrainPanel(napari_viewer, self.session)
        self.prediction = PredictPanel(napari_viewer, self.session)
        self.suggestion = SuggestPanel(napari_viewer, self.session)
        self.evaluation = EvaluatePanel(napari_viewer, self.session)
        self.results = ResultsPanel(napari_viewer, self.session)
        self.panels = (self.classes, self.tiles, self.training, self.prediction, self.suggestion, self.evaluation,
                       self.results)
        self.tabs = QTabWidget()
        for panel, title in zip(self.panels, ("Classes", "Tiles", "Train", "Predict", "Suggest", "Evaluate",
                                                   "Results")):
            self.tabs.addTab(panel.native, title)
            panel.native.layout().addStretch(1)  # controls stay together at the top, not spread over the tab
            for control in panel:
                if isinstance(control, Label):
                    control.native.setWordWrap(True)  # long messages wrap instead of widening the dock
                    control.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        self.image_choices = [p.image for p in self.panels if hasattr(p, "image")]
        self.paint_choices = [self.classes.labels_layer, self.tiles.labels_layer]
        for group in (self.image_choices, self.paint_choices):
            for combo in group:
                combo.changed.connect(lambda value, group=group: self._carry(group, value))
        self.training.preset.changed.connect(self.tiles.set_preset)
        events = napari_viewer.layers.events
        events.inserted.connect(self._refresh_choices)
        events.removed.connect(self._refresh_choices)
        events.reordered.connect(self._refresh_choices)
        napari_viewer.layers.selection.events.active.connect(self._follow_selection)
        self._refresh_choices()

    def _refresh_choices(self, _=None) -> None:
        for panel in self.panels:
            panel.reset_choices()
        self._follow_selection()

    def _follow_selection(self, _=None) -> None:
        """Point the choices at the active layer when it is an input of theirs."""
        layer = self.viewer.layers.selection.active
        if layer is None:
            return
        if is_map_layer(layer):
            self.results.map_layer.reset_choices()
            if layer in self.results.map_layer.choices:
                self.results.map_layer.value = layer
            return
        if isinstance(layer, Image):
            self._carry(self.image_choices, layer)
        elif isinstance(layer, Labels):
            if self.tabs.currentWidget() is self.evaluation.native:
                self.evaluation.truth.value = layer
            else:
                self._carry(self.paint_choices, layer)

    @staticmethod
    def _carry(combos, value) -> None:
        for combo in combos:
            if value is not None and combo.value is not value and value in combo.choices:
                combo.value = value
