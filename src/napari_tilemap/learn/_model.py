"""The trained tile classifier: network, normalisation, class table and training record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from .._classes import ClassTable
from .._errors import TilemapInputError
from .._geometry import MapGeometry
from ._devices import resolve_device
from ._networks import (
    Architecture,
    build_network,
    fuse_for_inference,
    output_activation,
)


@dataclass
class TileClassifier:
    """A fully-convolutional network that scores T×T tiles, with all it needs to predict.

    Parameters
    ----------
    arch : Architecture
        Preset, tile size, channels, layer sizes and the output activation
        (``arch.activation``: ``"softmax"`` or ``"sigmoid"``).
    class_table : ClassTable
        Names, colours and painted label values of the output classes.
    mean, std : ndarray of shape (C,)
        Per-channel normalisation computed from the training tiles (after their images' own
        levels, with ``per_image``).
    network : torch.nn.Module
        The trained network, ending in logits (BatchNorm layers in eval mode at prediction).
    record : dict
        Training record: seed, versions, tile counts, parameters, final metrics.
    per_image : (float, float), optional
        Per-image normalisation (``TrainConfig(normalise="image")``): every image is first mapped by
        its own low and high percentiles per channel (these two) to [0, 1]; None: not
        (``normalise="dataset"``). :meth:`for_image` folds an image's levels into ``mean`` and ``std``.
    """

    arch: Architecture
    class_table: ClassTable
    mean: np.ndarray
    std: np.ndarray
    network: torch.nn.Module
    record: dict = field(default_factory=dict)
    per_image: tuple[float, float] | None = None

    @classmethod
    def create(cls, arch: Architecture, class_table: ClassTable, mean, std, record=None,
               per_image: tuple[float, float] | None = None) -> TileClassifier:
        """A new, untrained classifier for ``arch``."""
        return cls(
            arch, class_table,
            np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1),
            build_network(arch), dict(record or {}),
            None if per_image is None else (float(per_image[0]), float(per_image[1])),
        )

    @property
    def normalise(self) -> str:
        """``"image"`` when every image is first mapped by its own levels (:attr:`per_image`), else
        ``"dataset"``."""
        return "dataset" if self.per_image is None else "image"

    def for_image(self, image) -> TileClassifier:
        """The model as it applies to ``image``: with per-image normalisation, a copy whose ``mean`` and
        ``std`` hold the image's own levels (:func:`~napari_tilemap._levels.image_levels`), so that it
        takes the image's raw intensities; otherwise this model itself."""
        if self.per_image is None:
            return self
        from .._levels import image_levels

        return self.with_levels(*image_levels(image, self.per_image))

    def with_levels(self, low, high) -> TileClassifier:
        """A copy for an image whose levels are ``low`` and ``high`` (C,): per-image rescaling and the
        model's normalisation folded into one, ``(x - (low + mean·span)) / (std·span)``."""
        from .._levels import level_span

        low = np.asarray(low, np.float64).reshape(-1)
        span = level_span(low, high)
        return dataclasses.replace(self, mean=(low + self.mean * span).astype(np.float32),
                                   std=(self.std * span).astype(np.float32), per_image=None)

    @property
    def preset(self) -> str:
        return self.arch.preset

    @property
    def tile_size(self) -> int:
        """T, the tile side in pixels (the receptive field)."""
        return self.arch.tile_size

    @property
    def step(self) -> int:
        """S, the distance in pixels between neighbouring map cells."""
        return self.arch.step

    @property
    def in_channels(self) -> int:
        return self.arch.in_channels

    @property
    def activation(self) -> str:
        """How logits become scores: ``"softmax"`` (a tile's scores sum to 1) or ``"sigmoid"``
        (one independent score in [0, 1] per class; a tile unlike every class scores low for all)."""
        return self.arch.activation

    @property
    def min_score(self) -> dict[str, float] | None:
        """The min peak score training suggests per painted class, ``{class name: score}``, or None.

        With the tile prior (:attr:`TrainConfig.prior`, the default) and a background class, a region
        is kept when its peak cell would be called the class had the prior been the class's share of
        the painted area rather than of the tiles (:func:`~._training.area_min_score`): far fewer
        false alarms on a busy surface, each kept region at its full extent. ``predict``,
        ``evaluate``, ``tilemap predict`` / ``evaluate`` and the Predict and Evaluate tabs apply it
        unless told otherwise (``min_score="model"``, ``--min-score model`` name it).
        """
        cut = ((self.record or {}).get("prior") or {}).get("min_score")
        return dict(cut) if cut else None

    @property
    def halo(self) -> int:
        """(T - S) / 2: context a block reads beyond its own pixels on each side."""
        return (self.tile_size - self.step) // 2

    def geometry(self, image_shape: tuple[int, int]) -> MapGeometry:
        """The map geometry of this model on an image of ``image_shape`` (H, W)."""
        return MapGeometry(self.tile_size, self.step, (int(image_shape[0]), int(image_shape[1])))

    def inference_network(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """An eval-mode copy of the network, BatchNorm fused, from raw intensities to scores.

        ``Sequential(normalisation, fused network, activation)``: ``net[:2]`` gives logits,
        ``net`` the scores (softmax or sigmoid, as :attr:`activation` says).
        """
        dev = resolve_device(device)
        net = torch.nn.Sequential(
            _Normalise(self.mean, self.std), fuse_for_inference(self.network.eval()), output_activation(self.arch)
        )
        # channels_last lets oneDNN / cuDNN pick their fastest convolution kernels (about 3x on CPU).
        return net.to(dev, memory_format=torch.channels_last).eval()

    def classify_tiles(self, batch, device: str = "cpu", batch_size: int = 256, levels=None) -> np.ndarray:
        """Class scores of tiles classified one by one (the reference for dense maps).

        Parameters
        ----------
        batch : array of shape (N, T, T) or (N, T, T, C)
            Raw tiles, with the intensities of the images the model was trained on.
        device : str
            Torch device.
        levels : (low, high), optional
            With per-image normalisation (:attr:`per_image`), the levels of the image the tiles
            come from (:func:`~napari_tilemap._levels.image_levels`); required then.

        Returns
        -------
        ndarray of shape (N, classes), float32
            Scores, one row per tile: softmax probabilities (rows sum to 1) or, for a
            sigmoid model, one independent probability per class.
        """
        tiles = np.asarray(batch, dtype=np.float32)
        if tiles.ndim == 3:
            tiles = tiles[..., None]
        t = self.tile_size
        if tiles.ndim != 4 or tiles.shape[1:3] != (t, t) or tiles.shape[3] != self.in_channels:
            raise TilemapInputError(
                f"classify_tiles expects (N, {t}, {t}) or (N, {t}, {t}, {self.in_channels}) tiles, "
                f"got shape {np.shape(batch)}"
            )
        if self.per_image is not None:
            if levels is None:
                raise TilemapInputError(
                    "this model normalises each image by its own levels: pass levels=image_levels(image) "
                    "of the image the tiles come from"
                )
            return self.with_levels(*levels).classify_tiles(tiles, device, batch_size)
        net = self.inference_network(device)
        dev = next(net.parameters()).device
        out = []
        with torch.inference_mode():
            for i in range(0, len(tiles), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(tiles[i : i + batch_size])).permute(0, 3, 1, 2)
                out.append(net(x.to(dev))[:, :, 0, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.class_table)), np.float32)

    def save(self, path) -> None:
        """Write the model to a single ``.tilemap`` file (safetensors + JSON, no pickle)."""
        from ._modelwriter import save_model

        save_model(self, path)


class _Normalise(torch.nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("scale", 1.0 / torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale
