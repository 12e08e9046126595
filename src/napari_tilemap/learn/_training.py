"""Training a tile classifier: grouped validation, balanced sampling, augmentation, early stopping."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from time import monotonic
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .._errors import TilemapInputError
from .._levels import NORMALISATIONS, PERCENTILES
from .._progress import Cancelled, CancelToken, is_cancelled
from ._augment import (  # noqa: F401 (re-exported)
    AUGMENTATIONS,
    DEFAULT_AUGMENT,
    Augmenter,
    default_augment,
    normalise_augment,
    random_dihedral,
)
from ._averaging import WeightAverage
from ._devices import release_memory, resolve_device
from ._hardneg import MiningProgress, check_minable, search_hard_negatives, with_hard_negatives
from ._model import TileClassifier, _Normalise
from ._networks import ACTIVATIONS, PRESETS, architecture
from ._split import split_tiles, warn_unvalidated
from ._tiles import _window_sum


@dataclass(frozen=True)
class BatchProgress:
    """One training batch finished."""

    epoch: int
    batch: int
    batches: int
    loss: float


@dataclass(frozen=True)
class EpochReport:
    """Metrics after one epoch (validation metrics are NaN without a validation split).

    ``val_loss`` is class-balanced: the mean over classes of each class's mean loss, the figure
    the kept checkpoint minimises."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    per_class_recall: dict[str, float]
    lr: float
    best: bool
    seconds: float
    confusion: tuple[tuple[int, ...], ...] = ()
    """Validation confusion matrix: row = true class, column = predicted class (tile counts)."""
    round: int = 0
    """0 for the main training, r for the fine-tuning of hard-negative round r."""


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters; a frozen snapshot that widgets pass to workers."""

    preset: str = "medium"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    patience: int = 5
    """Stop after this many epochs without a better validation loss. Checkpoints count from half the
    epochs on (the annealing half of the one-cycle schedule), so training runs at least that long."""
    augment: bool | tuple[str, ...] = True
    """Names from :data:`AUGMENTATIONS` applied to training tiles, fresh every draw, stored as a tuple
    in the order of ``AUGMENTATIONS``; ``False`` none. ``True`` (kept as ``True``): the default for
    the tiles, :data:`DEFAULT_AUGMENT` with a background class and
    :data:`~napari_tilemap.learn._augment.DEFAULT_AUGMENT_REGIONS` (``intensity`` added) without;
    the record's ``augment`` names what was used."""
    samples_per_epoch: int | None = None
    """Tiles drawn per epoch; default: as many as there are training tiles, within
    [:data:`MIN_SAMPLES`, :data:`MAX_SAMPLES`], so more background means longer epochs."""
    device: str = "auto"
    seed: int = 0
    loss: str = "softmax"
    """``"softmax"``: cross-entropy, a tile's scores sum to 1 (every tile is one of the classes).
    ``"sigmoid"``: one-vs-rest binary cross-entropy on one-hot targets; each class scores on its
    own, so a tile unlike every painted class scores low for all (and a reject threshold can call
    it unknown). The model's output activation is the loss's name."""
    hard_negative_rounds: int = 0
    """After training, this many rounds of: predict over the training images, add the unpainted
    cells the model calls a painted class (score >= ``hard_negative_score``) as background tiles,
    fine-tune. Needs tiles from :func:`extract_tiles` with ``background='unpainted'``."""
    hard_negative_score: float = 0.5
    """Smallest painted-class score that makes an unpainted cell a hard negative."""
    weight_average: float = 0.99
    """Decay of the exponential moving average of the weights (BatchNorm statistics included) that
    validation judges and the model keeps: about the last (t + 10) / 9 of the t batches so far, up to
    1 / (1 − decay) (:class:`~napari_tilemap.learn._averaging.WeightAverage`), so about the last 70 at the
    default 20 epochs, where 0.99 is not reached yet; 0 keeps the weights of the last batch of the kept
    epoch instead. Averaging steadies the kept network's
    calibration, which otherwise moves from batch to batch."""
    prior: str = "tiles"
    """The class frequencies the scores assume, with a background class. Training draws every class
    equally often, so that a class painted 20 times learns as much as a surface of 500 background
    tiles. ``"tiles"`` (the default, for ``background="unpainted"``'s contract that every defect of
    the training images is painted): after training the output is moved to each class's share of the
    training tiles (Bayes' rule: the logits gain log(K·share)), so a rare class is called on the
    evidence it needs at its real frequency, with far fewer false alarms on a busy background.
    ``"balanced"``: the network as trained, every class equally likely: more recall of rare classes,
    also of defects left unpainted, and more false alarms; for a painting that shows only some of the
    defects. Without a background class the painted tile counts measure effort, not frequency: always
    balanced."""
    max_time: float | None = None
    """A time limit in seconds for the whole training (hard-negative rounds included); None: none. After
    the first epoch, the epochs still planned are cut to those that fit in the time left (the learning-rate
    schedule follows), and training ends after the batch that reaches the limit in any case, keeping the
    best epoch so far (``record["timed_out"]``)."""
    normalise: str = "image"
    """How pixels are scaled before the network: ``"image"`` (the default) first by each image's own 1st
    and 99th percentiles per channel (:func:`~napari_tilemap._levels.image_levels`), in training and in
    every prediction, so that images under other lighting, gain or exposure look alike to the model;
    ``"dataset"`` by the mean and spread of the training tiles alone. Recorded in the model
    (:attr:`TileClassifier.per_image`). Fine-tuning keeps the model's own."""

    def __post_init__(self) -> None:
        if self.augment is not True:
            object.__setattr__(self, "augment", normalise_augment(self.augment))
        _check_config(self)


LOSSES = ACTIVATIONS
"""The choices of :attr:`TrainConfig.loss`: ``("softmax", "sigmoid")``."""
PRIORS = ("tiles", "balanced")
"""The choices of :attr:`TrainConfig.prior`."""
MIN_SAMPLES, MAX_SAMPLES = 1024, 2048
"""Bounds of the default :attr:`TrainConfig.samples_per_epoch`."""
HARD_NEGATIVE_SHARE = 0.5
"""Share of the background draws that go to hard negatives once there are some."""


class TrainingRun:
    """Training as an iterator of progress events that can be stopped between batches.

    Iterating yields :class:`BatchProgress` after every batch and :class:`EpochReport`
    after every epoch, and with hard-negative rounds a :class:`MiningProgress` before each
    training image is searched. :meth:`stop` (from any thread) ends training after the current
    batch (or block of that search); :attr:`model` then holds the best checkpoint so far, always a complete model, or
    None when training stopped before its first epoch ended.

    Parameters
    ----------
    tiles : TileSet
        Training tiles from :func:`extract_tiles`.
    config : TrainConfig, optional
        Parameters; keyword arguments override its fields.
    init_model : TileClassifier, optional
        Fine-tune this model instead of starting from random weights.

    Examples
    --------
    >>> run = TrainingRun(tiles, epochs=5)               # doctest: +SKIP
    >>> for event in run:                                # doctest: +SKIP
    ...     print(event)
    >>> model = run.model                                # doctest: +SKIP
    """

    def __init__(self, tiles, config: TrainConfig | None = None, *, init_model: TileClassifier | None = None, **kw) -> None:
        self.config = TrainConfig(**{**asdict(config or TrainConfig()), **kw})
        _check_tiles(tiles, init_model, self.config.loss)
        if self.config.hard_negative_rounds:
            check_minable(tiles)
        self.tiles = tiles
        """The tiles trained on; after hard-negative rounds, with the hard negatives added."""
        self.init_model = init_model
        self.model: TileClassifier | None = None
        self.history: list[EpochReport] = []
        self.hard_negatives: list[int] = []
        """Background tiles added by each hard-negative round."""
        self._stop = False
        self._deadline = math.inf
        self.timed_out = False
        """Whether the time limit (:attr:`TrainConfig.max_time`) ended training."""

    def stop(self) -> None:
        """Ask training to end after the current batch."""
        self._stop = True

    def _out_of_time(self) -> bool:
        if monotonic() >= self._deadline:
            self.timed_out = True
        return self.timed_out

    @property
    def stopped(self) -> bool:
        return self._stop

    def __iter__(self) -> Iterator[BatchProgress | EpochReport | MiningProgress]:
        # the prior is that of the tiles the user's painting gave, before any hard negatives
        counts = np.bincount(self.tiles.classes, minlength=len(self.tiles.class_table))
        area = painted_area(self.tiles)
        if self.config.max_time is not None:
            self._deadline = monotonic() + self.config.max_time
        try:
            yield from self._rounds()
        finally:
            if self.model is not None and self.model is not self.init_model:
                set_prior(self.model, counts, self.config.prior, area)

    def _rounds(self) -> Iterator[BatchProgress | EpochReport | MiningProgress]:
        cfg = self.config
        yield from self._fit(self.tiles, self.init_model, cfg.epochs, cfg.lr, 0, None)
        hard = np.zeros(len(self.tiles), bool)
        for r in range(1, cfg.hard_negative_rounds + 1):
            if self._stop or self.model is None or self._out_of_time():
                return
            before = len(self.tiles)
            try:
                rows = yield from search_hard_negatives(self.model, self.tiles, min_score=cfg.hard_negative_score,
                                                        device=cfg.device, round=r, cancel=lambda: self._stop)
            except Cancelled:
                return  # stopped while looking: the model of the last round is kept
            self.tiles = with_hard_negatives(self.tiles, rows)
            added = len(self.tiles) - before
            self.hard_negatives.append(added)
            if added == 0:
                break
            hard = np.r_[hard, np.ones(added, bool)]
            yield from self._fit(self.tiles, self.model, max(2, cfg.epochs // 4), cfg.lr / 3, r, hard)

    def _fit(self, tiles, init_model, epochs: int, lr: float, round_: int,
             hard: np.ndarray | None) -> Iterator[BatchProgress | EpochReport | MiningProgress]:
        """Train (or fine-tune ``init_model``) for ``epochs``; ``hard`` marks hard-negative tiles."""
        cfg = self.config
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed + round_)
        gen = torch.Generator().manual_seed(cfg.seed + round_)

        train_idx, val_idx = split_tiles(tiles, cfg.val_fraction, cfg.seed)
        step = init_model.step if init_model is not None else PRESETS[cfg.preset].step
        painted = painted_centre_blocks(tiles, step)
        train_idx, val_idx = train_idx[~painted[train_idx]], val_idx[~painted[val_idx]]
        k = len(tiles.class_table)
        if round_ == 0:
            warn_unvalidated(tiles, train_idx, val_idx, cfg.val_fraction)
        # a validation loss blind to a trained class would pick the epoch that suits the others
        judged = set(tiles.classes[train_idx].tolist()) <= set(tiles.classes[val_idx].tolist())

        per_image = (init_model.per_image if init_model is not None
                     else PERCENTILES if cfg.normalise == "image" else None)
        windows = tiles.windows if per_image is None else per_image_windows(tiles, per_image)
        x_train = windows[train_idx]
        if init_model is not None:
            model = without_prior(init_model)
        else:
            mean = x_train.mean(axis=(0, 1, 2))
            std = np.maximum(x_train.std(axis=(0, 1, 2)), 1e-6 * np.maximum(1.0, np.abs(mean)))
            arch = architecture(cfg.preset, tiles.tile_size, tiles.in_channels, k, activation=cfg.loss)
            model = TileClassifier.create(arch, tiles.class_table, mean, std, per_image=per_image)
        previous = self.model
        self.model = model
        net = nn.Sequential(_Normalise(model.mean, model.std), model.network).to(device, memory_format=torch.channels_last)

        x_all = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).permute(0, 3, 1, 2)
        t, m = tiles.tile_size, tiles.margin
        x_centre = x_all[:, :, m : m + t, m : m + t]
        y_all = torch.from_numpy(tiles.classes.astype(np.int64))
        names = default_augment(tiles.class_table.has_background) if cfg.augment is True else cfg.augment
        augment = Augmenter(names, t, x_train.min(axis=(0, 1, 2)), x_train.max(axis=(0, 1, 2))) if names else None
        room = torch.from_numpy(np.minimum(shift_room(tiles, step), t))
        weights = torch.from_numpy(_sampling_weights(tiles.classes, train_idx, k, hard))

        n_samples = cfg.samples_per_epoch or int(np.clip(len(train_idx), MIN_SAMPLES, MAX_SAMPLES))
        n_samples = max(n_samples, cfg.batch_size)
        batches = math.ceil(n_samples / cfg.batch_size)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
        sched = _one_cycle(opt, lr, epochs * batches)
        amp = _autocast(device)
        loss_fn = _loss_function(cfg.loss, k)
        average = WeightAverage(net, cfg.weight_average) if cfg.weight_average else None
        judged_net = average.module if average is not None else net

        best_loss, best_state, since_best, reports = math.inf, None, 0, 0
        try:
            for epoch in range(1, epochs + 1):
                t0, started = time.perf_counter(), monotonic()
                net.train()
                picks = train_idx[torch.multinomial(weights, n_samples, replacement=True, generator=gen).numpy()]
                total = 0.0
                for b in range(batches):
                    if self._stop or self._out_of_time():
                        return
                    sel = picks[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    xb = augment(x_all[sel], gen, room[sel]) if augment is not None else x_centre[sel]
                    xb = xb.contiguous(memory_format=torch.channels_last)
                    xb, yb = xb.to(device, non_blocking=True), y_all[sel].to(device, non_blocking=True)
                    with amp:
                        loss = loss_fn(net(xb)[:, :, 0, 0].float(), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    if average is not None:
                        average.update()
                    value = float(loss.detach())
                    total += value * len(sel)
                    yield BatchProgress(epoch, b + 1, batches, value)
                train_loss = total / n_samples
                val_loss, acc, recall, confusion = _evaluate(
                    judged_net, x_centre[val_idx], y_all[val_idx], device, amp, k, loss_fn, balanced=True
                )
                score = val_loss if judged else train_loss
                # checkpoints count from the second half of the one-cycle schedule, where the
                # learning rate anneals; earlier ones win on a noisy validation loss too often
                best = score < best_loss or epoch == max(epochs // 2, 1)
                if best:
                    best_loss, since_best = score, 0
                    best_state = copy.deepcopy(judged_net[1].state_dict())
                else:
                    since_best += 1
                report = EpochReport(
                    epoch, epochs, train_loss, val_loss, acc,
                    {tiles.class_table.names[c]: r for c, r in enumerate(recall)},
                    float(sched.get_last_lr()[0]), best, time.perf_counter() - t0,
                    tuple(tuple(int(v) for v in row) for row in confusion), round_,
                )
                self.history.append(report)
                reports += 1
                if reports == 1 and epochs > 1 and math.isfinite(self._deadline):
                    fit = 1 + int((self._deadline - monotonic()) // max(monotonic() - started, 1e-3))
                    if fit < epochs:  # plan only the epochs that fit, with the schedule to match
                        epochs = max(fit, 1)
                        sched = _one_cycle(opt, lr, epochs * batches, done=batches)
                        report = dataclasses.replace(report, epochs=epochs)
                        self.history[-1] = report
                yield report
                if since_best >= cfg.patience and epoch >= epochs // 2:
                    break
                if epoch >= epochs:  # the plan may have been cut to the time limit
                    break
        finally:
            if best_state is not None:
                model.network.load_state_dict(best_state)
            model.network.to("cpu").eval()
            model.record = _record(cfg, tiles, train_idx, val_idx, self.history, self._stop, device,
                                   self.init_model, self.hard_negatives, names, self.timed_out)
            if not reports:  # stopped before any epoch was validated: half-trained weights are no model
                self.model = previous
                if previous is not None:
                    previous.record = {**previous.record, "stopped": True}
            release_memory(device)


def train(
    tiles,
    *,
    callback: Callable[[BatchProgress | EpochReport | MiningProgress], None] | None = None,
    cancel: CancelToken = None,
    init_model: TileClassifier | None = None,
    **kw,
) -> TileClassifier:
    """Train a tile classifier on ``tiles``.

    Parameters
    ----------
    tiles : TileSet
        Tiles from :func:`extract_tiles`.
    callback : callable, optional
        Called with every :class:`BatchProgress`, :class:`EpochReport` and (with hard-negative
        rounds) :class:`MiningProgress`.
    cancel : threading.Event or callable, optional
        Checked between batches; when set, training stops and the best model so far is returned.
        Stopped before the first epoch ends, there is no model: :class:`Cancelled` is raised.
    init_model : TileClassifier, optional
        Fine-tune this model (same tile size, channels and classes).
    **kw
        Fields of :class:`TrainConfig`: ``preset`` ({'small', 'medium', 'large'}),
        ``epochs`` (20), ``batch_size``, ``lr``, ``weight_decay``, ``val_fraction``,
        ``patience``, ``augment`` (names from :data:`AUGMENTATIONS`; True = the default for the tiles:
        :data:`DEFAULT_AUGMENT` with a background class, ``intensity`` added without; False = none),
        ``samples_per_epoch`` (None: the number of training tiles within [1024, 2048]), ``device``
        ('auto'), ``seed`` (0), ``loss`` ({'softmax', 'sigmoid'}, 'softmax'; 'sigmoid' trains
        one-vs-rest so that tiles unlike every class score low for all of them),
        ``hard_negative_rounds`` (0; needs ``background='unpainted'`` tiles from
        :func:`extract_tiles`), ``hard_negative_score`` (0.5), ``weight_average`` (0.99: decay of
        the moving average of the weights that is validated and kept; 0 none), ``prior`` ({'tiles', 'balanced'},
        'tiles': scores at the classes' shares of the tiles rather than the balanced draws of
        training; 'balanced' when only some of the defects are painted).

    Returns
    -------
    TileClassifier
        The best checkpoint by validation loss (by training loss when the validation split holds no
        tile of some trained class), in eval mode on the CPU.

    Examples
    --------
    >>> model = train(tiles, epochs=10, seed=0)   # doctest: +SKIP
    >>> model.record["final"]["val_accuracy"]     # doctest: +SKIP
    0.97
    """
    run = TrainingRun(tiles, init_model=init_model, **kw)
    for event in run:
        if callback is not None:
            callback(event)
        if is_cancelled(cancel):
            run.stop()
    if run.model is None and run.timed_out:
        raise TilemapInputError(f"max_time={run.config.max_time:g} s ended training before its first epoch was "
                                "done, so there is no model; allow more time, or train on fewer tiles")
    if run.model is None:
        raise Cancelled("training was stopped before its first epoch ended; no model was made")
    return run.model


def per_image_windows(tiles, percentiles: tuple[float, float]) -> np.ndarray:
    """``tiles.windows``, each mapped by its image's own levels (:func:`~napari_tilemap._levels.image_levels`
    at ``percentiles``), as predictions map every image."""
    from .._levels import image_levels, rescale

    if tiles.sources is None:
        raise TilemapInputError(
            "per-image normalisation needs the images the tiles were cut from: use tiles from extract_tiles, "
            "or normalise='dataset'"
        )
    out = np.empty(tiles.windows.shape, np.float32)
    for i, image in enumerate(tiles.sources[0]):
        sel = tiles.image_index == i
        if sel.any():
            out[sel] = rescale(tiles.windows[sel], *image_levels(image, percentiles))
    return out


def logit_adjustment(counts, activation: str, prior: str, has_background: bool) -> np.ndarray:
    """(K,) what :attr:`TrainConfig.prior` adds to the logits of a network trained on balanced draws.

    With ``prior="tiles"`` and a background class, class c's share is π_c = n_c / Σn (at least one
    tile each); balanced draws gave every class 1/K. Softmax logits gain log(K·π_c); sigmoid logits,
    each a one-vs-rest log-odds, gain logit(π_c) − logit(1/K). Otherwise zeros.
    """
    counts = np.maximum(np.asarray(counts, np.float64), 1.0)
    k = len(counts)
    if prior != "tiles" or not has_background or k < 2:
        return np.zeros(k)
    share = counts / counts.sum()
    if activation == "sigmoid":
        return np.log(share / (1 - share)) - np.log((1 / k) / (1 - 1 / k))
    return np.log(k * share)


def set_prior(model: TileClassifier, counts, prior: str, area=None) -> None:
    """Move ``model``'s output (trained on balanced draws, no prior set) to ``prior``: the bias of its
    last layer gains :func:`logit_adjustment`, recorded in ``record["prior"]``. With the tile prior and
    ``area`` (pixels per class, :func:`painted_area`), the record also holds the
    :func:`area_min_score` of the painted classes."""
    table = model.class_table
    adj = logit_adjustment(counts, model.activation, prior, table.has_background)
    with torch.no_grad():
        model.network[-1].bias += torch.as_tensor(adj, dtype=model.network[-1].bias.dtype)
    record = {
        "mode": prior if table.has_background else "balanced",
        "tiles": dict(zip(table.names, np.asarray(counts).tolist())),
        "logit_adjustment": [float(a) for a in adj],
    }
    if area is not None and adj.any():
        cut = area_min_score(counts, area, model.activation)
        record["area"] = dict(zip(table.names, np.asarray(area).tolist()))
        record["min_score"] = {n: float(v) for n, v in zip(table.names[1:], cut[1:]) if v > 0}
    model.record = {**(model.record or {}), "prior": record}


def painted_area(tiles) -> np.ndarray | None:
    """(K,) pixels of each class in the images ``tiles`` were cut from (unpainted pixels count as
    background); None for tiles without their sources or without a background class."""
    if tiles.sources is None or not tiles.class_table.has_background:
        return None
    values = np.asarray(tiles.class_table.values)
    area = np.zeros(len(values), np.int64)
    for lab in tiles.sources[1]:
        present, n = np.unique(lab, return_counts=True)
        for v, c in zip(present.tolist(), n.tolist()):
            area[0 if v == 0 else int(np.flatnonzero(values == v)[0])] += c
    return area


def area_min_score(counts, area, activation: str) -> np.ndarray:
    """(K,) the min peak score that asks of a region the evidence of its class's share of the painted area.

    The tile prior sets each class at its share π_c of the training tiles; a painted class has more
    tiles for its area than the surface (a pit is one tile, a scratch one every T/4 along it, against
    one per (T/4)² of background), so the cells its regions grow from are called on less evidence than
    the class's share α_c of the pixels asks. A region is kept when its peak cell would still be called
    the class had the prior been the area's: against background, on odds moved by ρ_c / ρ_0 with
    ρ = α / π, a score of at least ``sigmoid(log(ρ_0 / ρ_c))`` (softmax; sigmoid outputs compare the
    class's log-odds of α_c and π_c). Its extent stays the tile prior's (hysteresis: a strong peak, a
    weaker reach). 0 (no cut) for background and for classes no rarer in area than in tiles.
    """
    counts = np.maximum(np.asarray(counts, np.float64), 1.0)
    area = np.maximum(np.asarray(area, np.float64), 1.0)
    pi, alpha = counts / counts.sum(), area / area.sum()
    if activation == "sigmoid":
        gap = np.log(pi / (1 - pi)) - np.log(alpha / (1 - alpha))
    else:
        rho = alpha / pi
        gap = np.log(rho[0] / rho)
    cut = np.where(gap > 0, 1.0 / (1.0 + np.exp(-gap)), 0.0)
    cut[0] = 0.0
    return cut


def without_prior(model: TileClassifier) -> TileClassifier:
    """A copy of ``model`` with the prior's logit adjustment taken back out: the balanced network
    that fine-tuning continues from."""
    out = copy.deepcopy(model)
    adj = ((model.record or {}).get("prior") or {}).get("logit_adjustment")
    if adj:
        with torch.no_grad():
            out.network[-1].bias -= torch.as_tensor(adj, dtype=out.network[-1].bias.dtype)
    return out


def _one_cycle(opt, lr: float, total: int, done: int = 0):
    """The one-cycle learning-rate schedule over ``total`` steps, already ``done`` steps into it."""
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    for _ in range(done):
        sched.step()
    return sched


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


_random_dihedral = random_dihedral


def _loss_function(loss: str, k: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss on (N, k) float32 logits and (N,) int64 classes.

    ``"softmax"``: cross-entropy. ``"sigmoid"``: binary cross-entropy of every logit against the
    one-hot target, averaged over tiles and classes. The sampler draws every class equally often,
    so each output sees 1/k positives; no ``pos_weight`` is added, as raising the positives'
    weight would lift every class's score on tiles unlike all of them.
    """
    if loss == "softmax":
        return nn.CrossEntropyLoss()
    bce = nn.BCEWithLogitsLoss()
    return lambda logits, y: bce(logits, nn.functional.one_hot(y, k).to(logits.dtype))


def _evaluate(net, x, y, device, amp, k: int, loss_fn=None,
              balanced: bool = False) -> tuple[float, float, list[float], np.ndarray]:
    """Validation loss (``loss_fn``, cross-entropy by default), accuracy, recall per class and the
    confusion matrix (true × predicted); the predicted class is the largest logit.

    ``balanced``: the loss is the mean of the per-class mean losses, so that every class weighs
    alike in the choice of the checkpoint however many validation tiles it has."""
    if len(x) == 0:
        return math.nan, math.nan, [math.nan] * k, np.zeros((k, k), np.int64)
    net.eval()
    logits = []
    with torch.inference_mode(), amp:
        for i in range(0, len(x), 256):
            logits.append(net(x[i : i + 256].to(device))[:, :, 0, 0].float().cpu())
    logits_t = torch.cat(logits)
    fn = loss_fn or nn.functional.cross_entropy
    if balanced:
        loss = float(np.mean([float(fn(logits_t[y == c], y[y == c])) for c in torch.unique(y).tolist()]))
    else:
        loss = float(fn(logits_t, y))
    pred = logits_t.argmax(1)
    recall = [
        float((pred[y == c] == c).float().mean()) if bool((y == c).any()) else math.nan for c in range(k)
    ]
    confusion = np.bincount(y.numpy() * k + pred.numpy(), minlength=k * k).reshape(k, k)
    return loss, float((pred == y).float().mean()), recall, confusion


def painted_centre_blocks(tiles, step: int) -> np.ndarray:
    """(N,) bool: background tiles whose centre block, the S×S block a map cell of step S stands
    for, holds a painted pixel. A map would not call such a cell background, so neither does training."""
    return _at_background_centres(tiles, lambda lab: _window_sum(lab > 0, step) > 0, np.False_, step // 2)


def shift_room(tiles, step: int) -> np.ndarray:
    """(N,) int: how many pixels each tile may be shifted by augmentation along each axis and keep
    its class under the centre rule. A background tile whose centre pixel lies d px (Chebyshev)
    from paint may move d - S/2 - 1 px, which keeps paint out of its S×S centre block; every other
    tile may move as far as ``shift`` allows (T/16, at most S/2 at the presets' smallest tiles)."""
    from scipy import ndimage as ndi

    def room(lab: np.ndarray) -> np.ndarray:
        return np.maximum(ndi.distance_transform_cdt(lab == 0, metric="chessboard") - step // 2 - 1, 0)

    return _at_background_centres(tiles, room, np.int64(np.iinfo(np.int32).max))


def _at_background_centres(tiles, per_image, fill, offset: int = 0) -> np.ndarray:
    """(N,): for each background tile, ``per_image(labels)`` of its image read at the tile's centre
    pixel less ``offset`` (clipped to the array); ``fill`` for the other tiles and for images
    without paint."""
    out = np.full(len(tiles), fill)
    if tiles.sources is None or not tiles.class_table.has_background:
        return out
    for i, lab in enumerate(tiles.sources[1]):
        sel = np.flatnonzero((tiles.classes == 0) & (tiles.image_index == i))
        if len(sel) and (lab > 0).any():
            grid = per_image(lab)
            y = np.clip(tiles.centers[sel, 0] - offset, 0, grid.shape[0] - 1)
            x = np.clip(tiles.centers[sel, 1] - offset, 0, grid.shape[1] - 1)
            out[sel] = grid[y, x]
    return out


def _sampling_weights(classes: np.ndarray, train_idx: np.ndarray, k: int, hard: np.ndarray | None) -> np.ndarray:
    """Draw weight of each training tile: every class is drawn equally often; within background,
    hard negatives (``hard``) get :data:`HARD_NEGATIVE_SHARE` of the draws once there are some."""
    y = classes[train_idx]
    counts = np.bincount(y, minlength=k).astype(np.float64)
    w = 1.0 / np.maximum(counts, 1.0)[y]
    if hard is not None:
        h = hard[train_idx]
        rest = (y == 0) & ~h
        if h.any() and rest.any():
            w[h] = HARD_NEGATIVE_SHARE / h.sum()  # each class's weights sum to 1
            w[rest] = (1 - HARD_NEGATIVE_SHARE) / rest.sum()
    return w


def _check_config(cfg: TrainConfig) -> None:
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise TilemapInputError(f"epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 2:
        raise TilemapInputError(f"batch_size must be at least 2 (BatchNorm needs it), got {cfg.batch_size}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise TilemapInputError(f"val_fraction must lie in [0, 1), got {cfg.val_fraction}")
    if cfg.lr <= 0:
        raise TilemapInputError(f"lr must be positive, got {cfg.lr}")
    if not isinstance(cfg.weight_average, (int, float)) or not 0 <= cfg.weight_average < 1:
        raise TilemapInputError(f"weight_average must be in [0, 1) (0: no averaging), got {cfg.weight_average!r}")
    if not isinstance(cfg.normalise, str) or cfg.normalise not in NORMALISATIONS:
        raise TilemapInputError(f"normalise must be one of {list(NORMALISATIONS)}, got {cfg.normalise!r}")
    if not isinstance(cfg.prior, str) or cfg.prior not in PRIORS:
        raise TilemapInputError(f"prior must be one of {list(PRIORS)}, got {cfg.prior!r}")
    if not isinstance(cfg.loss, str) or cfg.loss not in LOSSES:
        raise TilemapInputError(f"loss must be one of {list(LOSSES)}, got {cfg.loss!r}")
    if not isinstance(cfg.hard_negative_rounds, int) or cfg.hard_negative_rounds < 0:
        raise TilemapInputError(f"hard_negative_rounds must be a whole number >= 0, got {cfg.hard_negative_rounds!r}")
    if not 0.0 < cfg.hard_negative_score <= 1.0:
        raise TilemapInputError(f"hard_negative_score must lie in (0, 1], got {cfg.hard_negative_score}")
    if cfg.max_time is not None and (isinstance(cfg.max_time, bool) or not isinstance(cfg.max_time, (int, float))
                                     or not cfg.max_time > 0):
        raise TilemapInputError(f"max_time is a number of seconds above 0 (or None: no limit), got {cfg.max_time!r}")
    if cfg.samples_per_epoch is not None and cfg.samples_per_epoch < 1:
        raise TilemapInputError(f"samples_per_epoch must be at least 1 (or None: automatic), got {cfg.samples_per_epoch}")
    if cfg.preset not in PRESETS:
        raise TilemapInputError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    resolve_device(cfg.device)


def _check_tiles(tiles, init_model: TileClassifier | None, loss: str = "softmax") -> None:
    present = np.unique(tiles.classes)
    if len(present) < 2:
        raise TilemapInputError(
            "training needs tiles of at least two classes; paint a second class or keep background sampling on"
        )
    if init_model is not None:
        if init_model.tile_size != tiles.tile_size or init_model.in_channels != tiles.in_channels:
            raise TilemapInputError(
                f"cannot fine-tune a model for {init_model.tile_size}px tiles with {init_model.in_channels} "
                f"channel(s) on {tiles.tile_size}px tiles with {tiles.in_channels} channel(s)"
            )
        if init_model.class_table.values != tiles.class_table.values:
            raise TilemapInputError(
                f"cannot fine-tune: the model's classes {init_model.class_table.values} differ from the "
                f"tiles' classes {tiles.class_table.values}; extract tiles with class_table=model.class_table"
            )
        if init_model.activation != loss:
            raise TilemapInputError(
                f"cannot fine-tune a model trained with loss={init_model.activation!r} with loss={loss!r}; "
                f"pass loss={init_model.activation!r}, or train a new model"
            )


def _record(cfg, tiles, train_idx, val_idx, history, stopped, device, init_model, hard_negatives=(),
            augment=(), timed_out: bool = False) -> dict:
    import numpy
    import skimage

    from .. import __version__

    names = tiles.class_table.names
    k = len(names)
    last = history[-1] if history else None
    this_round = [r for r in history if r.round == (history[-1].round if history else 0)]
    best = next((r for r in reversed(this_round) if r.best), None)  # the checkpoint kept
    return {
        "seed": cfg.seed,
        "parameters": asdict(cfg),
        "device": str(device),
        "versions": {"napari_tilemap": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
                     "scikit_image": skimage.__version__},
        "tiles": {
            "train": dict(zip(names, np.bincount(tiles.classes[train_idx], minlength=k).tolist())),
            "val": dict(zip(names, np.bincount(tiles.classes[val_idx], minlength=k).tolist())),
            "left_out": int(len(tiles) - len(train_idx) - len(val_idx)),
        },
        "epochs_run": len(history),  # all rounds
        "stopped": bool(stopped),
        "timed_out": bool(timed_out),
        "fine_tuned": init_model is not None,
        "hard_negatives": list(hard_negatives),
        "augment": list(augment),
        "final": None if best is None else {
            "epoch": best.epoch, "train_loss": best.train_loss, "val_loss": _json_float(best.val_loss),
            "val_accuracy": _json_float(best.val_accuracy),
            "per_class_recall": {n: _json_float(v) for n, v in best.per_class_recall.items()},
            "confusion": [list(row) for row in best.confusion],
        },
        "last_epoch": None if last is None else last.epoch,
    }


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else float(v)
