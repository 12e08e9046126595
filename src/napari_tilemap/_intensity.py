"""Guards against images on another intensity scale than the model's training images, or each other's.

A model normalises pixels with the mean and spread of its training tiles. An image saved at
another bit depth (16-bit for 8-bit), or scaled (0-1 floats for 0-255), gives every cell a
confident class that means nothing, and training images on two scales make a model that fits
neither; nothing else would say so. Those mistakes move an image's intensity level by hundreds of
times, lighting and content by a few, so the limit is wide.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._errors import IntensityWarning
from .io._sources import ImageSource, _sample_windows, open_image

SCALE_LIMIT = 32.0
"""How many times higher or lower an image's intensity level (per channel, |mean| + 3·spread) may lie than
the reference's before it warns. Bit-depth and scaling mistakes move it 255-257 times (0-1 floats for
0-255, 16-bit for 8-bit); lighting, stains and empty or dark fields move it a few times, up to some 20
for a nearly empty fluorescence field against training on bright cells. A channel that is exactly
uniform never warns: it has no scale to be wrong about. Rescalings below the limit (12-bit data in a
16-bit file against 8-bit, 16 times) are not caught."""


def level(mean, std) -> np.ndarray:
    """(C,) the intensity level of statistics ``mean``, ``std``: |mean| + 3·std."""
    return np.abs(np.asarray(mean, np.float64)) + 3 * np.asarray(std, np.float64)


def off_scale(mean, std, ref_mean, ref_std) -> np.ndarray:
    """(C,) bool: channels whose level (:func:`level`) lies more than :data:`SCALE_LIMIT` times above or
    below the reference's, neither of the two being exactly uniform."""
    a, b = level(mean, std), level(ref_mean, ref_std)
    live = (np.asarray(std) > 0) & (np.asarray(ref_std) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return live & ((a > SCALE_LIMIT * b) | (b > SCALE_LIMIT * a))


def sampled_stats(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """(C,) mean and spread of ``source`` on a 4×4 grid of windows of up to 64² px."""
    pixels = np.concatenate([source.read(r, c).reshape(-1, source.channels) for r, c in _sample_windows(source.shape)])
    return pixels.mean(0, dtype=np.float64), pixels.std(0, dtype=np.float64)


def intensity_mismatch(mean, std, source: ImageSource) -> str | None:
    """Why ``source``'s intensities (:func:`sampled_stats`) do not fit training statistics ``mean`` and
    ``std`` (per channel); None when they fit."""
    m, s = np.asarray(mean, np.float64).reshape(-1), np.asarray(std, np.float64).reshape(-1)
    img_m, img_s = sampled_stats(source)
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


def warn_mixed_scales(images) -> None:
    """Warn (:class:`~napari_tilemap.IntensityWarning`) when two training images, (Y, X, C) arrays, are on
    different scales by :func:`off_scale`, each judged as a whole (:func:`sampled_stats`), not by what
    was painted on it."""
    if len(images) < 2:
        return
    stats = [sampled_stats(open_image(im)) for im in images]
    for a in range(len(images)):
        for b in range(a + 1, len(images)):
            (ma, sa), (mb, sb) = stats[a], stats[b]
            bad = off_scale(ma, sa, mb, sb)
            if bad.any():
                c = int(np.argmax(bad))
                where = f" in channel {c}" if len(ma) > 1 else ""
                warnings.warn(
                    f"training images {a} and {b} are on different intensity scales{where} (mean "
                    f"{ma[c]:.4g}, spread {sa[c]:.4g} against mean {mb[c]:.4g}, spread {sb[c]:.4g}): one model "
                    "normalises them alike and fits neither. If one was saved at another bit depth or scale "
                    "(16-bit for 8-bit, 0-1 for 0-255), convert it like the others", IntensityWarning, stacklevel=3)
                return
