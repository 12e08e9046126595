"""A small live plot of training: loss, validation accuracy and the validation confusion matrix."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class TrainingPlot(Container):
    """Loss (training, validation) and validation accuracy per epoch, redrawn every epoch, and
    the confusion matrix of the best epoch so far (the one training keeps)."""

    def __init__(self) -> None:
        super().__init__(labels=False)
        self.figure = Figure(figsize=(4, 4.4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(330)
        self.native.layout().addWidget(self.canvas)
        axes = self.figure.subplot_mosaic([["loss", "acc"], ["confusion", "confusion"]], height_ratios=[1, 1.25])
        self.loss_ax, self.acc_ax, self.confusion_ax = axes["loss"], axes["acc"], axes["confusion"]
        self.history: list = []
        self.class_names: tuple[str, ...] = ()
        self.confusion: np.ndarray | None = None
        """The confusion matrix on display (true × predicted tile counts), or None."""
        self.clear()

    def clear(self, class_names=()) -> None:
        self.history, self.confusion, self.class_names = [], None, tuple(class_names)
        self._draw()

    def add(self, report) -> None:
        self.history.append(report)
        if report.best and report.confusion:
            self.confusion = np.array(report.confusion)
        self._draw()

    def _draw(self) -> None:
        epochs = [r.epoch for r in self.history]
        self.loss_ax.clear()
        self.acc_ax.clear()
        self.loss_ax.plot(epochs, [r.train_loss for r in self.history], "o-", ms=3, label="training")
        self.loss_ax.plot(epochs, [r.val_loss for r in self.history], "o-", ms=3, label="validation")
        self.acc_ax.plot(epochs, [r.val_accuracy for r in self.history], "o-", ms=3, color="C2")
        self.loss_ax.set_title("loss", fontsize=9)
        self.acc_ax.set_title("validation accuracy", fontsize=9)
        self.loss_ax.set_xlabel("epoch", fontsize=8)
        self.acc_ax.set_xlabel("epoch", fontsize=8)
        self.acc_ax.set_ylim(0, 1.02)
        if self.history:
            self.loss_ax.legend(fontsize=7)
        self._draw_confusion()
        self.canvas.draw_idle()

    def _draw_confusion(self) -> None:
        ax = self.confusion_ax
        ax.clear()
        if self.confusion is None:
            ax.set_axis_off()
            return
        ax.set_axis_on()
        counts = self.confusion
        rows = np.maximum(counts.sum(1, keepdims=True), 1)
        ax.imshow(counts / rows, cmap="Blues", vmin=0, vmax=1)
        names = self.class_names or tuple(str(i) for i in range(len(counts)))
        for (i, j), v in np.ndenumerate(counts):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v / rows[i, 0] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        best = max((r for r in self.history if r.best), key=lambda r: r.epoch, default=None)
        title = "validation confusion (tiles)" + (f", epoch {best.epoch}" if best else "")
        ax.set_title(title, fontsize=9)


class EvaluationPlot(Container):
    """The evaluation report's pictures (confusion matrix, score histograms, precision–recall), one tab each."""

    def __init__(self) -> None:
        from qtpy.QtWidgets import QTabWidget

        super().__init__(labels=False)
        self.tabs = QTabWidget()
        self.tabs.setMinimumHeight(300)
        self.native.layout().addWidget(self.tabs)
        self.figures: dict = {}

    def show(self, evaluation) -> None:
        from ..analysis._report import figures

        self.tabs.clear()
        self.figures = figures(evaluation)
        for title, figure in self.figures.items():
            self.tabs.addTab(FigureCanvasQTAgg(figure), title)
