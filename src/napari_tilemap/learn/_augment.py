"""Training augmentation on batches of tile windows, in torch: geometry, intensity, noise, blur.

Every transform keeps a tile's class: it changes how the tile looks, never what lies at its
centre. Geometry is cut from the window's margin (the context kept around each tile), so a
rotated or shifted tile never holds padded pixels; intensity changes stay within the value range
of the training tiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .._errors import TilemapInputError

AUGMENTATIONS = ("flip", "rot90", "rotate", "shift", "intensity", "noise", "blur")
"""Names of the augmentations :attr:`TrainConfig.augment` can choose from:

- ``flip``: mirror left-right at random (with ``rot90`` this gives every flip and transpose);
- ``rot90``: rotate by a random multiple of 90°;
- ``rotate``: rotate by any angle in [-45°, 45°], as far as the tile's margin allows;
- ``shift``: move the tile by up to T/16 pixels (a map cell's tile is centred on its block,
  not on the painted pixel);
- ``intensity``: random gamma (×/÷1.4), contrast about the tile's mean (×/÷1.25) and brightness
  (±8% of the training tiles' value range);
- ``noise``: Gaussian noise, standard deviation up to 3% of the value range;
- ``blur``: a partial Gaussian blur (up to σ = 1.5 px) on a third of the tiles.
"""

DEFAULT_AUGMENT = ("flip", "rot90", "rotate", "shift", "noise", "blur")
"""The augmentations of ``augment=True`` (the default) with a background class (defects on a
surface): all but ``intensity``, which on the accuracy benchmark made the surface's darker and
brighter spots look like dark pits and faint scratches (more false alarms: grass pit/scratch object
F1 0.69/0.60 with it, 0.78/0.89 without). Add it when the images to classify are lit otherwise."""

DEFAULT_AUGMENT_REGIONS = ("flip", "rot90", "rotate", "shift", "intensity", "noise", "blur")
"""The augmentations of ``augment=True`` with ``background='none'`` (every region a class, e.g.
textures): all of them; ``intensity`` lets strokes from one part of an image stand for regions lit
otherwise (texture mosaic cell accuracy 0.76 without it, 0.94 with it, on the benchmark)."""


def default_augment(has_background: bool) -> tuple[str, ...]:
    """What ``augment=True`` means for tiles with (``True``) or without a background class."""
    return DEFAULT_AUGMENT if has_background else DEFAULT_AUGMENT_REGIONS


ROTATION_MARGIN = (math.sqrt(2.0) - 1.0) / 2.0
"""Margin, as a fraction of T, that any-angle rotation needs: a T×T tile turned by 45° spans T·√2."""

_BLUR_SHARE = 1 / 3
_BLUR_SIGMA = 1.5


def normalise_augment(value) -> tuple[str, ...]:
    """The augmentation names of ``value``, in the order of :data:`AUGMENTATIONS`.

    ``True`` is :data:`DEFAULT_AUGMENT_REGIONS` (every name a default may use; training resolves
    ``True`` with :func:`default_augment`), ``False`` or ``None`` none; a name or a sequence of names
    selects those.

    Raises
    ------
    TilemapInputError
        For a name not in :data:`AUGMENTATIONS`.
    """
    if value is True:
        return DEFAULT_AUGMENT_REGIONS
    if value is False or value is None:
        return ()
    names = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, Iterable) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise TilemapInputError(f"augment must be True, False or a sequence of names from {list(AUGMENTATIONS)}, "
                                f"got {value!r}")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise TilemapInputError(f"unknown augmentation(s) {unknown}; choose from {list(AUGMENTATIONS)}")
    return tuple(n for n in AUGMENTATIONS if n in names)


def default_margin(tile_size: int, augment=True) -> int:
    """The window margin that ``augment`` needs around a tile of side ``tile_size``: T/16 for
    shifts, plus what any-angle rotation needs when ``rotate`` is chosen."""
    names = normalise_augment(augment)
    m = max(1, tile_size // 16) if "shift" in names or not names else 0
    if "rotate" in names:
        m += math.ceil(ROTATION_MARGIN * tile_size)
    return max(m, 1)


class Augmenter:
    """Random augmentation of batches of windows into T×T tiles.

    Parameters
    ----------
    names : sequence of str
        Names from :data:`AUGMENTATIONS`.
    tile_size : int
        T, the side of the tiles made.
    low, high : sequence of float
        Per-channel value range of the training tiles; intensity changes and noise stay inside it.
    """

    def __init__(self, names, tile_size: int, low, high) -> None:
        self.names = normalise_augment(names)
        self.tile_size = int(tile_size)
        self.low = torch.as_tensor(low, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.high = torch.as_tensor(high, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.span = (self.high - self.low).clamp_min(1e-6)

    def __call__(self, windows: torch.Tensor, gen: torch.Generator,
                 shift_limit: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, W, W) float32 windows → (N, C, T, T) augmented tiles, W = T + 2·margin.

        ``shift_limit``: (N,) most pixels each tile may move, below the T/16 of ``shift`` (a
        background tile beside paint moves only as far as keeps paint out of its centre block)."""
        x = windows.float()
        on = set(self.names)
        x = random_geometry(x, self.tile_size, "shift" in on, "rotate" in on, gen, shift_limit)
        if "blur" in on:
            x = random_blur(x, gen)
        if "rot90" in on or "flip" in on:
            x = random_dihedral(x, gen, rot90="rot90" in on, flip="flip" in on)
        if "intensity" in on:
            x = random_intensity(x, self.low, self.span, gen)
        if "noise" in on:
            x = random_noise(x, self.low, self.span, gen)
        return x


def random_geometry(x: torch.Tensor, t: int, shift: bool, rotate: bool, gen: torch.Generator,
                    shift_limit: torch.Tensor | None = None) -> torch.Tensor:
    """The T×T tile of each window, shifted and/or rotated at random within the window's margin.

    Shifts are up to T/16 pixels along each axis (and up to ``shift_limit[i]`` for tile i).
    Without rotation the tile is an exact crop at a whole-pixel offset. With rotation, the angle
    is drawn from [-45°, 45°], limited so that the turned tile stays inside the window less the room
    kept for shifts; pixels are interpolated bilinearly.
    """
    n, w = x.shape[0], x.shape[-1]
    m = (w - t) // 2
    max_shift = min(m, max(1, t // 16)) if shift else 0
    limit = torch.full((n,), max_shift) if shift_limit is None else shift_limit.clamp(0, max_shift)
    if not rotate or m - max_shift <= 0:
        if max_shift == 0:
            return x[:, :, m : m + t, m : m + t]
        # a whole-pixel offset uniform in [-limit, limit] along each axis
        oy, ox = (torch.rand(2, n, generator=gen) * (2 * limit + 1)).floor().long() - limit + m
        r = torch.arange(t)
        rows = (oy[:, None] + r)[:, :, None]
        cols = (ox[:, None] + r)[:, None, :]
        return x.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    # largest angle whose turned tile, half-extent T/2·(|cos|+|sin|), fits in T/2 + m - max_shift
    reach = min((t / 2 + m - max_shift) / (t / 2) / math.sqrt(2.0), 1.0)
    max_angle = math.asin(reach) - math.pi / 4
    angle = (torch.rand(n, generator=gen) * 2 - 1) * max_angle
    offset = (torch.rand(n, 2, generator=gen) * 2 - 1) * limit[:, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    scale = (t - 1) / (w - 1)  # align_corners=True: ±1 are the centres of the outer pixels
    theta = torch.stack([
        torch.stack([cos * scale, -sin * scale, 2 * offset[:, 1] / (w - 1)], 1),
        torch.stack([sin * scale, cos * scale, 2 * offset[:, 0] / (w - 1)], 1),
    ], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], t, t], align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def random_dihedral(x: torch.Tensor, gen: torch.Generator, rot90: bool = True, flip: bool = True) -> torch.Tensor:
    """Each tile rotated by a random multiple of 90° and/or mirrored left-right at random."""
    out = x.clone()
    if rot90:
        rot = torch.randint(0, 4, (len(x),), generator=gen)
        for k in range(1, 4):
            sel = rot == k
            if sel.any():
                out[sel] = torch.rot90(x[sel], k, dims=(2, 3))
    if flip:
        mirror = torch.randint(0, 2, (len(x),), generator=gen).bool()
        out[mirror] = torch.flip(out[mirror], dims=(3,))
    return out


def random_intensity(x: torch.Tensor, low: torch.Tensor, span: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random gamma, contrast about each tile's mean and brightness; values stay in [low, low + span]."""
    n = len(x)
    u = ((x - low) / span).clamp(0, 1)
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * math.log(1.4))
    u = u.pow(gamma)
    contrast = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * math.log(1.25))
    mean = u.mean(dim=(1, 2, 3), keepdim=True)
    brightness = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.08
    u = ((u - mean) * contrast + mean + brightness).clamp(0, 1)
    return u * span + low


def random_noise(x: torch.Tensor, low: torch.Tensor, span: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise with a random standard deviation of up to 3% of the value range, per tile."""
    sigma = torch.rand(len(x), 1, 1, 1, generator=gen) * 0.03 * span
    noisy = x + torch.randn(x.shape, generator=gen) * sigma
    return torch.minimum(torch.maximum(noisy, low), low + span)


def random_blur(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A Gaussian blur on a random third of the tiles (the others are unchanged).

    Each chosen tile is mixed with its σ = 1.5 px blur by a random weight in [0.3, 1], which spans
    blurs from slight to σ = 1.5 px at the cost of one convolution.
    """
    n, c, h, w = x.shape
    chosen = torch.rand(n, generator=gen) < _BLUR_SHARE
    if not chosen.any():
        return x
    radius = 4
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / _BLUR_SIGMA) ** 2)
    k = k / k.sum()
    sel = x[chosen].reshape(-1, 1, h, w)
    blurred = F.pad(sel, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(F.conv2d(blurred, k.reshape(1, 1, -1, 1)), k.reshape(1, 1, 1, -1))
    mix = (0.3 + 0.7 * torch.rand(int(chosen.sum()), 1, 1, 1, generator=gen)).repeat_interleave(c, 0)
    out = x.clone()
    out[chosen] = (sel + mix * (blurred - sel)).reshape(-1, c, h, w)
    return out
