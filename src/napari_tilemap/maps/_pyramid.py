"""Display pyramid of a map store: coarser levels built from the stored level, block by block."""

from __future__ import annotations

import numpy as np


def build_pyramid(group, *, min_size: int = 256, chunk: int = 512) -> int:
    """Add 2× downsampled levels ``classes_i`` and ``scores_i`` until the map fits ``min_size``.

    ``classes`` levels take the top-left cell of each 2×2 group (labels stay labels);
    ``scores`` levels average each 2×2 group. Every level is computed from the one
    before it, one chunk at a time, so memory stays flat. The store's OME-Zarr ``ome``
    attribute then lists every level. Returns the number of levels.
    """
    from ._mapstore import chunk_codecs, set_ome_attrs

    codecs = chunk_codecs()
    level, prev_classes, prev_scores = 0, group["classes"], group["scores"]
    while max(prev_classes.shape) > min_size:
        level += 1
        h, w = (-(-n // 2) for n in prev_classes.shape)
        k = prev_scores.shape[0]
        classes = group.create_array(
            f"classes_{level}", shape=(h, w), chunks=(min(chunk, h), min(chunk, w)), dtype="uint8",
            fill_value=0, dimension_names=("y", "x"), overwrite=True, **codecs,
        )
        scores = group.create_array(
            f"scores_{level}", shape=(k, h, w), chunks=(k, min(chunk, h), min(chunk, w)), dtype=prev_scores.dtype,
            fill_value=0, dimension_names=("class", "y", "x"), overwrite=True, **codecs,
        )
        for r in range(0, h, chunk):
            for c in range(0, w, chunk):
                rs, cs = slice(2 * r, 2 * (r + chunk)), slice(2 * c, 2 * (c + chunk))
                classes[r : r + chunk, c : c + chunk] = np.asarray(prev_classes[rs, cs])[::2, ::2]
                scores[:, r : r + chunk, c : c + chunk] = _mean2x2(np.asarray(prev_scores[:, rs, cs]))
        prev_classes, prev_scores = classes, scores
    set_ome_attrs(group, level)
    return level


def _mean2x2(a: np.ndarray) -> np.ndarray:
    """Mean over 2×2 groups of the last two axes (odd edges averaged over what exists)."""
    h, w = a.shape[-2:]
    padded = np.pad(a.astype(np.float32), [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)], mode="edge")
    out = padded.reshape(*a.shape[:-2], padded.shape[-2] // 2, 2, padded.shape[-1] // 2, 2).mean(axis=(-3, -1))
    return out.astype(a.dtype)
