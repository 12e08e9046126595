"""A small live plot of training and validation loss and accuracy per epoch."""

from __future__ import annotations

from magicgui.widgets import Container
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class TrainingPlot(Container):
    """Two panels: loss (training, validation) and validation accuracy, redrawn every epoch."""

    def __init__(self) -> None:
        super().__init__(labels=False)
        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.native.layout().addWidget(self.canvas)
        self.loss_ax, self.acc_ax = self.figure.subplots(1, 2)
        self.history: list = []
        self.clear()

    def clear(self) -> None:
        self.history = []
        self._draw()

    def add(self, report) -> None:
        self.history.append(report)
        self._draw()

    def _draw(self) -> None:
        epochs = [r.epoch for r in self.history]
        self.loss_ax.clear()
        self.acc_ax.clear()
        self.loss_ax.plot(epochs, [r.train_loss for r in self.history], "o-", ms=3, label="training")
        self.loss_ax.plot(epochs, [r.val_loss for r in self.history], "o-", ms=3, label="validation")
        self.acc_ax.plot(epochs, [r.val_accuracy for r in self.history], "o-", ms=3, color="C2")
        self.loss_ax.set(title="loss", xlabel="epoch")
        self.acc_ax.set(title="validation accuracy", xlabel="epoch", ylim=(0, 1.02))
        if self.history:
            self.loss_ax.legend(fontsize=7)
        self.canvas.draw_idle()
