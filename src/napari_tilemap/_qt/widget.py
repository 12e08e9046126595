"""The main dock widget: Classes → Tiles → Train → Predict → Evaluate, one tab each."""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from .classes_panel import ClassesPanel
from .evaluate_panel import EvaluatePanel
from .predict_panel import PredictPanel
from .tiles_panel import TilesPanel
from .train_panel import TrainPanel


@dataclass
class Session:
    """What the tabs share: plain objects from the core, never widgets."""

    class_table: object = None
    tiles: object = None
    model: object = None
    map: object = None


class TilemapWidget(QWidget):
    """Paint classes, extract tiles, train, predict and evaluate, each in its own tab."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session()
        self.classes = ClassesPanel(napari_viewer, self.session)
        self.tiles = TilesPanel(napari_viewer, self.session, self.classes)
        self.training = TrainPanel(napari_viewer, self.session)
        self.prediction = PredictPanel(napari_viewer, self.session)
        self.evaluation = EvaluatePanel(napari_viewer, self.session)
        self.tabs = QTabWidget()
        for panel, title in ((self.classes, "Classes"), (self.tiles, "Tiles"), (self.training, "Train"),
                             (self.prediction, "Predict"), (self.evaluation, "Evaluate")):
            self.tabs.addTab(panel.native, title)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        events = napari_viewer.layers.events
        events.inserted.connect(self._refresh_choices)
        events.removed.connect(self._refresh_choices)
        events.reordered.connect(self._refresh_choices)
        self._refresh_choices()

    def _refresh_choices(self, _=None) -> None:
        for panel in (self.classes, self.tiles, self.training, self.prediction, self.evaluation):
            panel.reset_choices()
