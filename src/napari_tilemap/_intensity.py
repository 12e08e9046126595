"""Guards against images on another intensity scale than the model's training images, or each other's.

A model normalises pixels with the mean and spread of its training tiles. An image saved at
another bit depth (16-bit for 8-bit), or scaled (0-1 floats for 0-255), gives every cell a
confident class that means nothing, and training images on two scales make a model that fits
neither; nothing else would say so. Textures, lighting and empty areas move an image's statistics
by a few spreads; these mistakes move them by orders of magnitude, so the limits are wide.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._errors import IntensityWarning
from .io._sources import ImageSource, _sample_windows

SCALE_LIMIT = 8.0
"""An image warns when, in some channel, its mean lies more than this many training spreads from the
training mean, or its spread is more than this many times the training spread, or less than its
1/``SCALE_LIMIT``-th while the mean is also more than two spreads off (a nearly uniform area of the
training images' kind does not warn). A channel that is exactly uniform never warns."""


def off_scale(mean, std, ref_mean, ref_std) -> np.ndarray:
    """(C,) bool: channels whose ``mean`` and ``std`` are off the scale of ``ref_mean`` and ``ref_std``
    (the rule of :data:`SCALE_LIMIT`)."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    ref_std = np.maximum(np.asarray(ref_std, np.float64), 1e-12)
    off, ratio = np.abs(mean - ref_mean) / ref_std, std / ref_std
    bad = (off > SCALE_LIMIT) | (ratio > SCALE_LIMIT) | ((ratio < 1 / SCALE_LIMIT) & (off > 2))
    return bad & (std > 0)  # a uniform image (an empty field of a batch) has no scale to be wrong about


def intensity_mismatch(mean, std, source: ImageSource) -> str | None:
    """Why ``source``'s intensities do not fit training statistics ``mean`` and ``std`` (per channel),
    judged on a 4×4 grid of windows of up to 64² px; None when they fit."""
    pixels = np.concatenate([source.read(r, c).reshape(-1, source.channels) for r, c in _sample_windows(source.shape)])
    m, s = np.asarray(mean, np.float64).reshape(-1), np.asarray(std, np.float64).reshape(-1)
    img_m, img_s = pixels.mean(0, dtype=np.float64), pixels.std(0, dtype=np.float64)
    bad = off_scale(img_m, img_s, m, s)
    if not bad.any():
        return None
    c = int(np.argmax(bad))
    where = f" in channel {c}" if source.channels > 1 else ""
    return (f"{source.name}'s intensities{where} (mean {img_m[c]:.4g}, spread {img_s[c]:.4g}) are far from those the "
            f"model was trained on (mean {m[c]:.4g}, spread {s[c]:.4g}): its map is likely wrong. If the image was "
            "saved at another bit depth or scale (16-bit for 8-bit, 0-1 for 0-255), convert it as the training "
            "images were")


def warn_intensity(model, source: ImageSource) -> None:
    """Warn (:class:`~napari_tilemap.IntensityWarning`) when ``source`` does not fit ``model``'s training
    intensities (:func:`intensity_mismatch`)."""
    message = intensity_mismatch(model.mean, model.std, source)
    if message is not None:
        warnings.warn(message, IntensityWarning, stacklevel=3)


def warn_mixed_scales(windows: np.ndarray, image_index: np.ndarray) -> None:
    """Warn (:class:`~napari_tilemap.IntensityWarning`) when the tiles' windows (N, W, W, C) of two training
    images (``image_index``) are on different scales by :func:`off_scale`, either way round."""
    images = np.unique(image_index)
    if len(images) < 2:
        return
    stats = [(w.mean((0, 1, 2), dtype=np.float64), w.std((0, 1, 2), dtype=np.float64))
             for w in (windows[image_index == i] for i in images)]
    for a in range(len(images)):
        for b in range(a + 1, len(images)):
            (ma, sa), (mb, sb) = stats[a], stats[b]
            bad = off_scale(ma, sa, mb, sb) & (sb > 0) | off_scale(mb, sb, ma, sa) & (sa > 0)
            if bad.any():
                c = int(np.argmax(bad))
                where = f" in channel {c}" if len(ma) > 1 else ""
                warnings.warn(
                    f"training images {images[a]} and {images[b]} are on different intensity scales{where} (mean "
                    f"{ma[c]:.4g}, spread {sa[c]:.4g} against mean {mb[c]:.4g}, spread {sb[c]:.4g}): one model "
                    "normalises them alike and fits neither. If one was saved at another bit depth or scale "
                    "(16-bit for 8-bit, 0-1 for 0-255), convert it like the others", IntensityWarning, stacklevel=3)
                return
