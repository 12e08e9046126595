"""Train: run training in a napari worker thread with a live plot, Stop, fine-tuning and model files."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    Select,
    SpinBox,
)
from napari.qt.threading import thread_worker
from napari.utils import progress

from ..learn._advice import advice, kept_epoch
from ..learn._augment import AUGMENTATIONS, DEFAULT_AUGMENT
from ..learn._hardneg import MiningProgress
from ..learn._networks import PRESETS, architecture
from ..learn._training import EpochReport, TrainConfig, TrainingRun
from . import _notify
from ._controls import device_combo
from ._threadwarnings import thread_warnings
from .plot import TrainingPlot


@thread_worker
def _train_job(run: TrainingRun):
    """Worker body: yields the run's events, and its warnings as text; returns the run."""
    with thread_warnings() as caught:
        said = 0
        for event in run:
            yield event
            while said < len(caught):
                yield f"Training: {caught[said].message}"
                said += 1
    return run


def training_summary(model) -> str:
    """Validation accuracy, recall per class and the kept epoch, in a few lines."""
    final = model.record.get("final") or {}
    acc = final.get("val_accuracy")
    recall = ", ".join(f"{name} {'n/a' if v is None else f'{v:.2f}'}"
                       for name, v in (final.get("per_class_recall") or {}).items())
    head = "Model ready" + (f": validation accuracy {acc:.3f}" if acc is not None else " (no validation tiles)")
    hard = model.record.get("hard_negatives")
    added = f"\nhard negatives added per round: {', '.join(map(str, hard))}" if hard else ""
    return f"{head}\nrecall: {recall}\n{kept_epoch(model.record)}{added}"


class TrainPanel(Container):
    """Preset, epochs, device and seed; Train / Stop; save and load model files."""

    def __init__(self, viewer, session) -> None:
        self.viewer, self.session = viewer, session
        self.preset = ComboBox(label="preset", choices=sorted(PRESETS), value="medium",
                               tooltip="Network size and map step S (pixels per map cell): small = step 4, fast, "
                                       "fine details; medium = step 8; large = step 16, more context")
        self.epochs = SpinBox(label="epochs", value=20, min=1, max=10000,
                              tooltip="Most passes over the tiles; training stops earlier when validation stops "
                                      "improving, and keeps the best epoch")
        self.max_time = FloatSpinBox(label="time limit (min)", value=0, min=0, max=24 * 60, step=1,
                                     tooltip="Most minutes training may take, 0 for none: after the first epoch the "
                                             "epochs are cut to those that fit, and training ends at the limit in "
                                             "any case, keeping the best epoch so far")
        self.device = device_combo()
        self.loss = ComboBox(label="scores", value="softmax",
                             choices=[("softmax (sum to 1)", "softmax"), ("sigmoid (one-vs-rest)", "sigmoid")])
        self.loss.tooltip = ("softmax: the scores of a cell sum to 1. sigmoid: each class is scored on its own, so "
                             "a tile unlike every class can score low for all and fall under a reject threshold")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="Random seed: the same seed and tiles give the same model")
        self.augment = Select(label="augment", choices=list(AUGMENTATIONS), value=list(DEFAULT_AUGMENT),
                              tooltip="Random changes to every training tile (hold Ctrl to pick several): flip, "
                                      "rot90 and rotate (any angle) - leave these out when a defect's direction "
                                      "matters; shift; intensity (brightness, contrast, gamma; left out by default "
                                      "with background 'unpainted', added with 'none'); noise; blur")
        self._augment_chosen = False  # until the user picks, training uses the default for the tiles
        self.augment.changed.connect(self._choose_augment)
        rows = self.augment.native.fontMetrics().height() + 4
        self.augment.native.setFixedHeight(len(AUGMENTATIONS) * rows + 2 * self.augment.native.frameWidth() + 4)
        self.hard_negatives = CheckBox(label="learn from false alarms (1 hard-negative round)", value=False,
                                       tooltip="After training, predict over the training images, add the unpainted "
                                               "places the model calls a painted class as background, and "
                                               "fine-tune. Needs background 'unpainted' and every defect of the "
                                               "training images painted")
        self.prior = ComboBox(label="class prior", value=TrainConfig.prior,
                              choices=[("tile shares (every defect painted)", "tiles"),
                                       ("balanced (some defects unpainted)", "balanced")],
                              tooltip="tile shares: each class as common as in the training tiles; far fewer "
                                      "false alarms on a busy surface, but an unpainted defect is learnt as "
                                      "background. balanced: every class equally likely; finds rare classes, "
                                      "also where you did not paint them, with more false alarms")
        self.normalise = ComboBox(label="normalise", value=TrainConfig.normalise,
                                  choices=[("each image by its own levels", "image"),
                                           ("over the training tiles", "dataset")],
                                  tooltip="each image by its own levels: every image is first mapped by its own "
                                          "1st-99th percentiles, in training and prediction, so that images under "
                                          "other lighting, gain or exposure look alike. over the training tiles: "
                                          "pixels are scaled by the mean and spread of the training tiles alone")
        self.fine_tune = CheckBox(label="fine-tune the current model", value=False,
                                  tooltip="Start from the model you trained or loaded (same tile size and classes) "
                                          "instead of random weights: for a few more painted corrections")
        self.train = PushButton(text="Train", tooltip="Train on the extracted tiles (Tiles tab) in the background")
        self.stop = PushButton(text="Stop", enabled=False, tooltip="Stop after this batch; the best epoch so far is "
                                                                   "kept")
        self.status = Label(value="No model yet.")
        self.plot = TrainingPlot()
        self.model_path = FileEdit(label="model file", mode="w", filter="*.tilemap",
                                   tooltip="A .tilemap file to save the model to, or to load one from")
        self.save = PushButton(text="Save model", tooltip="Write the model to the model file")
        self.load = PushButton(text="Load model", tooltip="Read a model from the model file")
        super().__init__(widgets=[self.preset, self.epochs, self.max_time, self.device, self.loss, self.seed, self.augment,
                                  self.hard_negatives, self.prior, self.normalise, self.fine_tune, self.train,
                                  self.stop, self.status, self.plot, self.model_path, self.save, self.load])
        self.worker = None
        self.run: TrainingRun | None = None
        self._bar = None
        self.train.clicked.connect(self.start)
        self.stop.clicked.connect(self.request_stop)
        self.save.clicked.connect(self.save_model)
        self.load.clicked.connect(self.load_model)

    def config(self) -> TrainConfig:
        """Frozen snapshot of the controls, handed to the worker."""
        return TrainConfig(preset=self.preset.value, epochs=int(self.epochs.value), device=self.device.value,
                           seed=int(self.seed.value), loss=self.loss.value,
                           augment=tuple(n for n in AUGMENTATIONS if n in self.augment.value)
                           if self._augment_chosen else True,
                           hard_negative_rounds=int(bool(self.hard_negatives.value)), prior=self.prior.value,
                           normalise=self.normalise.value,
                           max_time=float(self.max_time.value) * 60 if self.max_time.value else None)

    def _choose_augment(self, _value=None) -> None:
        self._augment_chosen = True

    def start(self):
        """Start training on the extracted tiles in a worker thread."""
        tiles = self.session.tiles
        if tiles is None:
            _notify.error("Extract tiles first (Tiles tab).")
            return None
        init = self.session.model if self.fine_tune.value else None
        if self.fine_tune.value and init is None:
            _notify.error("Fine-tuning needs a model: train or load one first.")
            return None
        cfg = self.config()
        try:
            if init is None:
                architecture(cfg.preset, tiles.tile_size, tiles.in_channels, len(tiles.class_table))
            self.run = TrainingRun(tiles, cfg, init_model=init)
        except ValueError as err:
            _notify.error(f"Training: {err}")
            return None
        self.plot.clear(tiles.class_table.names)
        self.worker = _train_job(self.run, _ignore_errors=True)
        self.worker.yielded.connect(self._on_event)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: _notify.error(f"Training failed: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.train.enabled, self.stop.enabled = False, True
        self.status.value = "Training…"
        self._bar = progress(total=cfg.epochs, desc="tilemap: training")
        self._round = 0
        self.worker.start()
        return self.worker

    def request_stop(self) -> None:
        """Stop after the current batch; the best model so far is kept."""
        if self.run is not None:
            self.run.stop()
            self.status.value = "Stopping after this batch…"

    def _on_event(self, event) -> None:
        if isinstance(event, str):
            _notify.warning(event)
        elif isinstance(event, EpochReport):
            self.plot.add(event)
            stage = f"hard-negative round {event.round}, " if event.round else ""
            self.status.value = (f"{stage}epoch {event.epoch}/{event.epochs}: loss {event.train_loss:.3f}, "
                                 f"val loss {event.val_loss:.3f}, val accuracy {event.val_accuracy:.3f}")
            if self._bar is not None and event.round != self._round:
                self._round = event.round
                self._bar.close()
                self._bar = progress(total=event.epochs, desc=f"tilemap: hard-negative round {event.round}")
            if self._bar is not None and self._bar.total != event.epochs:  # the plan cut to the time limit
                self._bar.total = event.epochs
            if self._bar is not None:
                self._bar.update(1)  # last: napari's progress processes Qt events
        elif isinstance(event, MiningProgress):
            self.status.value = (f"hard-negative round {event.round}: looking for false alarms on training image "
                                 f"{event.image}/{event.images}…")
        else:
            self.status.value = f"epoch {event.epoch}: batch {event.batch}/{event.batches}, loss {event.loss:.3f}"

    def _on_done(self, run: TrainingRun) -> None:
        if run.model is None:
            kept = "the previous model is kept" if self.session.model is not None else "no model was made"
            if run.timed_out:
                kept += "; allow more time"
            _notify.warning(f"{'The time limit ended training' if run.timed_out else 'Training stopped'} before the "
                            f"first epoch ended; {kept}.")
            self.status.value = f"Stopped before the first epoch ended; {kept}."
            return
        self.session.model = run.model
        self.status.value = training_summary(run.model)
        for text in advice(run.model):
            _notify.warning(text[0].upper() + text[1:] + ".")

    def _on_finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.train.enabled, self.stop.enabled = True, False
        self.worker, self.run = None, None  # drop references so GPU memory can go

    def save_model(self) -> None:
        if self.session.model is None:
            _notify.error("No model to save: train or load one first.")
            return
        path = Path(str(self.model_path.value))
        if path.suffix != ".tilemap":
            path = path.with_suffix(".tilemap")
        try:
            self.session.model.save(path)
        except OSError as err:
            _notify.error(f"Cannot save the model: {err}")
            return
        self.status.value = f"Saved {path}"

    def load_model(self) -> None:
        from ..learn._modelfile import load_model

        try:
            self.session.model = load_model(self.model_path.value)
        except ValueError as err:
            _notify.error(str(err))
            return
        self.session.class_table = self.session.model.class_table
        self.status.value = f"Loaded {self.model_path.value}: {', '.join(self.session.model.class_table.names)}"
