"""Validation split that never separates tiles sharing pixels."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def overlap_groups(image_index: np.ndarray, classes: np.ndarray, origins: np.ndarray, tile_size: int) -> np.ndarray:
    """Group id per tile: tiles of one class in one image that overlap, directly or in a chain."""
    n = len(classes)
    groups = np.full(n, -1, np.int64)
    next_id = 0
    for img in np.unique(image_index):
        for cls in np.unique(classes[image_index == img]):
            idx = np.flatnonzero((image_index == img) & (classes == cls))
            o = origins[idx]
            d = np.abs(o[:, None, :] - o[None, :, :])
            touching = np.all(d < tile_size, axis=-1)
            rows, cols = np.nonzero(touching)
            graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(idx), len(idx)))
            count, comp = connected_components(graph, directed=False)
            groups[idx] = comp + next_id
            next_id += count
    return groups


def grouped_split(
    classes: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation tiles, split by whole groups within each class.

    Each class sends about ``val_fraction`` of its tiles to validation, choosing whole
    groups at random; a class with a single group stays entirely in training.
    """
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for cls in np.unique(classes):
        cls_groups = np.unique(groups[classes == cls])
        if len(cls_groups) < 2 or val_fraction <= 0:
            continue
        rng.shuffle(cls_groups)
        target = val_fraction * np.count_nonzero(classes == cls)
        taken = 0
        for g in cls_groups[:-1]:  # at least one group stays for training
            if taken >= target:
                break
            members = np.flatnonzero(groups == g)
            val.append(members)
            taken += len(members)
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(classes)), val_idx)
    return train_idx, val_idx
