"""Training a tile classifier: grouped validation, balanced sampling, augmentation, early stopping."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .._errors import TilemapInputError
from .._progress import Cancelled, CancelToken, is_cancelled
from ._devices import release_memory, resolve_device
from ._model import TileClassifier, _Normalise
from ._networks import ACTIVATIONS, architecture
from ._split import grouped_split, overlap_groups


@dataclass(frozen=True)
class BatchProgress:
    """One training batch finished."""

    epoch: int
    batch: int
    batches: int
    loss: float


@dataclass(frozen=True)
class EpochReport:
    """Metrics after one epoch (validation metrics are NaN without a validation split)."""

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
    augment: bool = True
    samples_per_epoch: int = 1024
    device: str = "auto"
    seed: int = 0
    loss: str = "softmax"
    """``"softmax"``: cross-entropy, a tile's scores sum to 1 (every tile is one of the classes).
    ``"sigmoid"``: one-vs-rest binary cross-entropy on one-hot targets; each class scores on its
    own, so a tile unlike every painted class scores low for all (and a reject threshold can call
    it unknown). The model's output activation is the loss's name."""


LOSSES = ACTIVATIONS
"""The choices of :attr:`TrainConfig.loss`: ``("softmax", "sigmoid")``."""


class TrainingRun:
    """Training as an iterator of progress events that can be stopped between batches.

    Iterating yields :class:`BatchProgress` after every batch and :class:`EpochReport`
    after every epoch. :meth:`stop` (from any thread) ends training after the current
    batch; :attr:`model` then holds the best checkpoint so far, always a complete model, or
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
        _check_config(self.config)
        _check_tiles(tiles, init_model, self.config.loss)
        self.tiles = tiles
        self.init_model = init_model
        self.model: TileClassifier | None = None
        self.history: list[EpochReport] = []
        self._stop = False

    def stop(self) -> None:
        """Ask training to end after the current batch."""
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop

    def __iter__(self) -> Iterator[BatchProgress | EpochReport]:
        cfg, tiles = self.config, self.tiles
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)

        groups = overlap_groups(tiles.image_index, tiles.classes, tiles.origins, tiles.tile_size)
        train_idx, val_idx = grouped_split(tiles.classes, groups, cfg.val_fraction, cfg.seed)
        k = len(tiles.class_table)
        if len(val_idx) == 0:
            warnings.warn("too few separate blobs for a validation split; validation metrics are NaN", stacklevel=2)

        if self.init_model is not None:
            model = copy.deepcopy(self.init_model)
        else:
            x = tiles.windows[train_idx]
            mean = x.mean(axis=(0, 1, 2))
            std = np.maximum(x.std(axis=(0, 1, 2)), 1e-6 * np.maximum(1.0, np.abs(mean)))
            arch = architecture(cfg.preset, tiles.tile_size, tiles.in_channels, k, activation=cfg.loss)
            model = TileClassifier.create(arch, tiles.class_table, mean, std)
        self.model = model
        net = nn.Sequential(_Normalise(model.mean, model.std), model.network).to(device, memory_format=torch.channels_last)

        x_all = torch.from_numpy(np.ascontiguousarray(tiles.windows, dtype=np.float32)).permute(0, 3, 1, 2)
        t, m = tiles.tile_size, tiles.margin
        x_centre = x_all[:, :, m : m + t, m : m + t]
        y_all = torch.from_numpy(tiles.classes.astype(np.int64))
        counts = np.bincount(tiles.classes[train_idx], minlength=k).astype(np.float64)
        weights = torch.from_numpy(1.0 / np.maximum(counts, 1.0))[y_all[train_idx]]

        n_samples = max(len(train_idx), cfg.samples_per_epoch)
        batches = math.ceil(n_samples / cfg.batch_size)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * batches)
        amp = _autocast(device)
        loss_fn = _loss_function(cfg.loss, k)

        best_loss, best_state, since_best = math.inf, None, 0
        try:
            for epoch in range(1, cfg.epochs + 1):
                t0 = time.perf_counter()
                net.train()
                picks = train_idx[torch.multinomial(weights, n_samples, replacement=True, generator=gen).numpy()]
                total = 0.0
                for b in range(batches):
                    if self._stop:
                        return
                    sel = picks[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    if cfg.augment:
                        xb = _random_dihedral(_random_crop(x_all, sel, t, gen), gen)
                    else:
                        xb = x_centre[sel]
                    xb, yb = xb.to(device, non_blocking=True), y_all[sel].to(device, non_blocking=True)
                    with amp:
                        loss = loss_fn(net(xb)[:, :, 0, 0].float(), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    value = float(loss.detach())
                    total += value * len(sel)
                    yield BatchProgress(epoch, b + 1, batches, value)
                train_loss = total / n_samples
                val_loss, acc, recall, confusion = _evaluate(
                    net, x_centre[val_idx], y_all[val_idx], device, amp, k, loss_fn
                )
                score = val_loss if len(val_idx) else train_loss
                best = score < best_loss
                if best:
                    best_loss, since_best = score, 0
                    best_state = copy.deepcopy(model.network.state_dict())
                else:
                    since_best += 1
                report = EpochReport(
                    epoch, cfg.epochs, train_loss, val_loss, acc,
                    {tiles.class_table.names[c]: r for c, r in enumerate(recall)},
                    float(sched.get_last_lr()[0]), best, time.perf_counter() - t0,
                    tuple(tuple(int(v) for v in row) for row in confusion),
                )
                self.history.append(report)
                yield report
                if since_best >= cfg.patience:
                    break
        finally:
            if best_state is not None:
                model.network.load_state_dict(best_state)
            model.network.to("cpu").eval()
            model.record = _record(cfg, tiles, train_idx, val_idx, self.history, self._stop, device, self.init_model)
            if not self.history:  # stopped before any epoch was validated: half-trained weights are no model
                self.model = None
            release_memory(device)


def train(
    tiles,
    *,
    callback: Callable[[BatchProgress | EpochReport], None] | None = None,
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
        Called with every :class:`BatchProgress` and :class:`EpochReport`.
    cancel : threading.Event or callable, optional
        Checked between batches; when set, training stops and the best model so far is returned.
        Stopped before the first epoch ends, there is no model: :class:`Cancelled` is raised.
    init_model : TileClassifier, optional
        Fine-tune this model (same tile size, channels and classes).
    **kw
        Fields of :class:`TrainConfig`: ``preset`` ({'small', 'medium', 'large'}),
        ``epochs`` (20), ``batch_size``, ``lr``, ``weight_decay``, ``val_fraction``,
        ``patience``, ``augment``, ``samples_per_epoch``, ``device`` ('auto'), ``seed`` (0),
        ``loss`` ({'softmax', 'sigmoid'}, 'softmax'; 'sigmoid' trains one-vs-rest so that tiles
        unlike every class score low for all of them).

    Returns
    -------
    TileClassifier
        The best checkpoint by validation loss, in eval mode on the CPU.

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
    if run.model is None:
        raise Cancelled("training was stopped before its first epoch ended; no model was made")
    return run.model


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def _random_crop(x: torch.Tensor, sel: np.ndarray, t: int, gen: torch.Generator) -> torch.Tensor:
    """A t×t crop of each window ``x[sel]`` at a random offset (shift augmentation)."""
    span = x.shape[2] - t + 1
    if span == 1:
        return x[sel]
    oy, ox = torch.randint(0, span, (2, len(sel)), generator=gen)
    r = torch.arange(t)
    rows = (oy[:, None] + r)[:, :, None]
    cols = (ox[:, None] + r)[:, None, :]
    idx = torch.as_tensor(sel)[:, None, None]
    return x.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)


def _random_dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each tile rotated by a random multiple of 90° and randomly flipped."""
    rot = torch.randint(0, 4, (len(x),), generator=gen)
    flip = torch.randint(0, 2, (len(x),), generator=gen).bool()
    out = x.clone()
    for k in range(1, 4):
        sel = rot == k
        if sel.any():
            out[sel] = torch.rot90(x[sel], k, dims=(2, 3))
    out[flip] = torch.flip(out[flip], dims=(3,))
    return out


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


def _evaluate(net, x, y, device, amp, k: int, loss_fn=None) -> tuple[float, float, list[float], np.ndarray]:
    """Validation loss (``loss_fn``, cross-entropy by default), accuracy, recall per class and the
    confusion matrix (true × predicted); the predicted class is the largest logit."""
    if len(x) == 0:
        return math.nan, math.nan, [math.nan] * k, np.zeros((k, k), np.int64)
    net.eval()
    logits = []
    with torch.inference_mode(), amp:
        for i in range(0, len(x), 256):
            logits.append(net(x[i : i + 256].to(device))[:, :, 0, 0].float().cpu())
    logits_t = torch.cat(logits)
    loss = float((loss_fn or nn.functional.cross_entropy)(logits_t, y))
    pred = logits_t.argmax(1)
    recall = [
        float((pred[y == c] == c).float().mean()) if bool((y == c).any()) else math.nan for c in range(k)
    ]
    confusion = np.bincount(y.numpy() * k + pred.numpy(), minlength=k * k).reshape(k, k)
    return loss, float((pred == y).float().mean()), recall, confusion


def _check_config(cfg: TrainConfig) -> None:
    if cfg.epochs < 1:
        raise TilemapInputError(f"epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 2:
        raise TilemapInputError(f"batch_size must be at least 2 (BatchNorm needs it), got {cfg.batch_size}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise TilemapInputError(f"val_fraction must lie in [0, 1), got {cfg.val_fraction}")
    if cfg.lr <= 0:
        raise TilemapInputError(f"lr must be positive, got {cfg.lr}")
    if not isinstance(cfg.loss, str) or cfg.loss not in LOSSES:
        raise TilemapInputError(f"loss must be one of {list(LOSSES)}, got {cfg.loss!r}")


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


def _record(cfg, tiles, train_idx, val_idx, history, stopped, device, init_model) -> dict:
    import numpy
    import skimage

    from .. import __version__

    names = tiles.class_table.names
    k = len(names)
    last = history[-1] if history else None
    best = min(history, key=lambda r: (r.val_loss if not math.isnan(r.val_loss) else r.train_loss), default=None)
    return {
        "seed": cfg.seed,
        "parameters": asdict(cfg),
        "device": str(device),
        "versions": {"napari_tilemap": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
                     "scikit_image": skimage.__version__},
        "tiles": {
            "train": dict(zip(names, np.bincount(tiles.classes[train_idx], minlength=k).tolist())),
            "val": dict(zip(names, np.bincount(tiles.classes[val_idx], minlength=k).tolist())),
        },
        "epochs_run": len(history),
        "stopped": bool(stopped),
        "fine_tuned": init_model is not None,
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
