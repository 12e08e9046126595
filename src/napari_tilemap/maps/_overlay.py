"""A picture of a classification map drawn over its image (for reports and the README)."""

from __future__ import annotations

import numpy as np

from ._mapstore import ClassificationMap


def map_to_pixels(cmap: ClassificationMap) -> np.ndarray:
    """The map's best classes upsampled to image pixels: each cell fills its S×S block."""
    s = cmap.step
    h, w = cmap.geometry.image_shape
    classes = np.asarray(cmap.classes)
    return np.repeat(np.repeat(classes, s, axis=0), s, axis=1)[:h, :w]


def overlay(image: np.ndarray, cmap: ClassificationMap, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 picture: ``image`` (scaled to 0..255) with painted classes tinted in their colours.

    Background cells are left untinted; each class edge is outlined in full colour.
    """
    from skimage.segmentation import find_boundaries

    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = img[..., None]
    lo, hi = np.percentile(img, (0.5, 99.5))
    gray = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(gray, 3, axis=2) if gray.shape[2] == 1 else gray[..., :3]
    labels = map_to_pixels(cmap)
    edges = find_boundaries(labels, mode="inner")
    for value, color in zip(cmap.class_table.values, cmap.class_table.colors):
        if value == 0:
            continue
        mask = labels == value
        c = np.asarray(color[:3], np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * c
        rgb[mask & edges] = c
    return (rgb * 255 + 0.5).astype(np.uint8)
