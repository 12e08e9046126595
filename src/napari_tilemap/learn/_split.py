"""Validation split that never lets a training tile share pixels with a validation tile of its class."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

BACKGROUND_BLOCK = 4
"""Background tiles are split for validation by squares of this many tile sides (halved, down to
two, while the background spans fewer than :data:`MIN_BACKGROUND_BLOCKS` squares)."""
MIN_BACKGROUND_BLOCKS = 4
"""Fewest squares the background is split into for validation, where the image allows."""
MAX_VAL_SHARE = 0.5
"""Validation never takes more than this share of a class's tiles (unless ``val_fraction`` is more),
nor more than twice ``val_fraction``."""


def places_to_validate(val_fraction: float) -> int:
    """Fewest separate painted places (groups of overlapping tiles) a class needs, without a background
    class, before validation takes one: 1 / ``val_fraction`` (5 at 0.2), so that one whole place is at
    most its share; 0 without validation.

    With ``background="none"`` every class is usually a few strokes on a region, and holding one of three
    out costs the network a third of what it can learn from (texture mosaic of the accuracy benchmark:
    cell accuracy 0.944 with one held out, 0.975 without, seeds 0-2), so such a class trains on all of
    its places. With a background class the held-out places still validate: they are what tells whether
    the background can be told apart from the painted classes at all."""
    return math.ceil(1.0 / val_fraction - 1e-9) if val_fraction > 0 else 0


def trains_whole(tiles, places: int, val_fraction: float) -> bool:
    """Whether a painted class of ``tiles`` found in ``places`` separate places keeps all of them in
    training (see :func:`places_to_validate`)."""
    return not tiles.class_table.has_background and places < places_to_validate(val_fraction)


def overlap_groups(image_index: np.ndarray, classes: np.ndarray, origins: np.ndarray, tile_size: int) -> np.ndarray:
    """Group id per tile: tiles of one class in one image that overlap, directly or in a chain."""
    n = len(classes)
    groups = np.full(n, -1, np.int64)
    next_id = 0
    for img in np.unique(image_index):
        for cls in np.unique(classes[image_index == img]):
            idx = np.flatnonzero((image_index == img) & (classes == cls))
            # origins are whole pixels: sharing a pixel is lying less than a tile apart on both axes
            pairs = cKDTree(origins[idx]).query_pairs(tile_size - 1, p=np.inf, output_type="ndarray")
            graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(idx), len(idx)))
            count, comp = connected_components(graph, directed=False)
            groups[idx] = comp + next_id
            next_id += count
    return groups


def split_tiles(tiles, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices; no training tile shares pixels with a validation tile of its class.

    Painted tiles are split by groups of overlapping tiles (a blob's tiles stay together). Background
    tiles cover the surface and would all chain into one group, so they are split by squares of
    :data:`BACKGROUND_BLOCK` tiles a side (smaller on small images), and the training tiles that
    overlap a validation tile are left out. No group takes validation past twice ``val_fraction``
    or :data:`MAX_VAL_SHARE` of its class (see :func:`grouped_split`). Without a background class, a
    class with fewer than :func:`places_to_validate` groups keeps all of them in training.
    """
    bg = tiles.classes == 0 if tiles.class_table.has_background else np.zeros(len(tiles), bool)
    groups = np.zeros(len(tiles), np.int64)
    # only painted tiles: the pairwise overlap test over thousands of background tiles costs hundreds of MB
    painted = ~bg
    groups[painted] = overlap_groups(tiles.image_index[painted], tiles.classes[painted], tiles.origins[painted],
                                     tiles.tile_size)
    if bg.any():
        block = BACKGROUND_BLOCK * tiles.tile_size
        while True:
            cell = tiles.origins[bg] // block
            key = (tiles.image_index[bg] * 1_000_003 + cell[:, 0]) * 1_000_003 + cell[:, 1]
            blocks, inverse = np.unique(key, return_inverse=True)
            # a small image holds few large squares, too few to send val_fraction to validation
            if len(blocks) >= MIN_BACKGROUND_BLOCKS or block <= 2 * tiles.tile_size:
                break
            block //= 2
        groups[bg] = groups.max() + 1 + inverse.ravel()
    few = [int(c) for c in np.unique(tiles.classes[painted])
           if trains_whole(tiles, len(np.unique(groups[tiles.classes == c])), val_fraction)]
    train_idx, val_idx = grouped_split(tiles.classes, groups, val_fraction, seed, train_only=few)
    val_bg = val_idx[bg[val_idx]]
    if len(val_bg):
        train_bg = train_idx[bg[train_idx]]
        # tiles of different images are set far apart, so that only tiles of one image can touch
        far = int(tiles.origins.max()) + 2 * tiles.tile_size

        def points(idx):
            return tiles.origins[idx] + np.outer(tiles.image_index[idx], (far, 0))

        nearest, _ = cKDTree(points(val_bg)).query(points(train_bg), p=np.inf)
        train_idx = np.setdiff1d(train_idx, train_bg[nearest < tiles.tile_size])
    return train_idx, val_idx


def grouped_split(classes: np.ndarray, groups: np.ndarray, val_fraction: float,
                   seed: int, train_only=()) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices, by whole groups within each class.

    Groups are taken in random order until validation holds ``val_fraction`` of the class; a group
    that would take validation past twice that, or past :data:`MAX_VAL_SHARE` of the class, is
    passed over (and a smaller one tried), so that one long chain of overlapping tiles (the tiles of
    neighbouring scratches, a large stretch of background) never leaves training with a small
    minority of a class. At least one group of each class stays in training, and every tile of the
    classes in ``train_only``. Each class draws from its own random stream, so adding background
    tiles never changes which blobs validate."""
    val: list[np.ndarray] = []
    if val_fraction > 0:
        for cls in np.setdiff1d(np.unique(classes), np.asarray(train_only, classes.dtype)):
            # one random stream per class: a class's split does not change with the others' tiles
            rng = np.random.default_rng([seed, int(cls)])
            members = classes == cls
            ids, sizes = np.unique(groups[members], return_counts=True)
            n = int(members.sum())
            target = val_fraction * n
            limit = max(target, min(2 * target, MAX_VAL_SHARE * n))
            taken, in_training = 0, len(ids)
            for j in rng.permutation(len(ids)):
                if taken >= target:
                    break
                if taken + sizes[j] > limit or in_training == 1:  # one group at least stays in training
                    continue
                val.append(np.flatnonzero(members & (groups == ids[j])))
                taken += sizes[j]
                in_training -= 1
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(classes)), val_idx), val_idx


def warn_unvalidated(tiles, train_idx: np.ndarray, val_idx: np.ndarray, val_fraction: float) -> None:
    """Warn when the validation split cannot measure some class: a class painted in too few places,
    or as blobs so close together that their tiles chain into groups too large to hold out. Nothing
    to say when the user asked for no validation (``val_fraction`` 0)."""
    if val_fraction <= 0:
        return
    k = len(tiles.class_table)
    in_val = np.bincount(tiles.classes[val_idx], minlength=k)
    in_train = np.bincount(tiles.classes[train_idx], minlength=k)
    missing = [c for c in range(k) if in_val[c] == 0 and in_train[c] > 0]
    names = tiles.class_table.names
    if tiles.class_table.has_background and 0 in missing:
        warnings.warn("the background covers too little area to hold part of it out for validation (its "
                      "recall is n/a); paint on a larger image or use a smaller tile", stacklevel=3)
        missing = missing[1:]
    whole, alone, crowded = [], [], []
    for c in missing:
        of_c = tiles.classes == c
        groups = len(np.unique(overlap_groups(tiles.image_index[of_c], tiles.classes[of_c], tiles.origins[of_c],
                                              tiles.tile_size)))
        if trains_whole(tiles, groups, val_fraction):
            whole.append(names[c])
        else:
            (crowded if len(np.unique(tiles.blob_ids[of_c])) > groups else alone).append(names[c])
    if whole:
        warnings.warn(f"class(es) {', '.join(map(repr, whole))} have too few separate painted blobs to "
                      "validate: all their tiles train, and their recall is n/a; paint each class in at least "
                      f"{places_to_validate(val_fraction)} places more than a tile ({tiles.tile_size} px) apart "
                      "to validate it", stacklevel=3)
    if alone:
        # with blobs of about equal size, one of three is the smallest share validation may take
        warnings.warn(f"class(es) {', '.join(map(repr, alone))} have too few separate painted blobs to "
                      "validate (their recall is n/a); paint each class in at least three places apart",
                      stacklevel=3)
    if crowded:
        warnings.warn(f"class(es) {', '.join(map(repr, crowded))} cannot be validated (their recall is n/a): "
                      "their painted blobs lie so close together that their tiles overlap into a few large "
                      "groups, and holding one out would share pixels with training; paint a few blobs more "
                      f"than a tile ({tiles.tile_size} px) away from the others", stacklevel=3)
