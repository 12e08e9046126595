"""Training tiles cut around painted blobs (blob analysis) plus background tiles."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._classes import ClassTable
from .._errors import TilemapInputError
from ..io._images import as_image, as_labels, as_list

BACKGROUND_CHOICES = ("unpainted", "none")
SAMPLING_CHOICES = ("random", "grid")


@dataclass
class TileSet:
    """Tiles with their classes and provenance.

    Attributes
    ----------
    windows : ndarray (N, T + 2m, T + 2m, C) float32
        Raw intensities (not normalised) of each tile with a margin of m pixels around it,
        from which training cuts randomly shifted tiles.
    classes : ndarray (N,) int64
        Index into ``class_table`` (0 is background when the table has one).
    image_index : ndarray (N,) int64
        Which input image each tile comes from.
    origins : ndarray (N, 2) int64
        Top-left (y, x) of each tile in its image; its centre pixel is ``origin + T // 2``.
    blob_ids : ndarray (N,) int64
        Globally unique id of the painted blob a tile covers, -1 for background tiles.
    class_table : ClassTable
    tile_size : int
    margin : int
        m, the context kept around each tile for shift augmentation.
    """

    windows: np.ndarray
    classes: np.ndarray
    image_index: np.ndarray
    origins: np.ndarray
    blob_ids: np.ndarray
    class_table: ClassTable
    tile_size: int
    margin: int = 0

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def tiles(self) -> np.ndarray:
        """(N, T, T, C) the tiles themselves: ``image[y0:y0+T, x0:x0+T]`` for each origin."""
        m, t = self.margin, self.tile_size
        return self.windows[:, m : m + t, m : m + t]

    @property
    def in_channels(self) -> int:
        return int(self.tiles.shape[3])

    @property
    def centers(self) -> np.ndarray:
        """(N, 2) centre pixel (y, x) of each tile: ``origins + T // 2``."""
        return self.origins + self.tile_size // 2

    def counts(self) -> dict[str, int]:
        """Tiles per class name, every class listed."""
        n = np.bincount(self.classes, minlength=len(self.class_table))
        return {name: int(c) for name, c in zip(self.class_table.names, n)}

    def subset(self, indices) -> TileSet:
        """The tiles at ``indices``, same class table."""
        i = np.asarray(indices)
        return TileSet(self.windows[i], self.classes[i], self.image_index[i], self.origins[i], self.blob_ids[i],
                       self.class_table, self.tile_size, self.margin)


def extract_tiles(
    images,
    labels,
    tile_size: int = 64,
    *,
    background: str = "unpainted",
    background_tiles: int | None = None,
    background_sampling: str = "random",
    tiles_per_blob: int | None = None,
    margin: int | None = None,
    class_table: ClassTable | None = None,
    class_names=None,
    colors=None,
    seed: int = 0,
) -> TileSet:
    """Cut training tiles around painted blobs, plus background tiles.

    Each painted class is split into blobs (``skimage.measure.label``, 8-connected). A blob
    that fits in half a tile gets one tile centred on its centroid; a larger one gets tiles
    on its pixels, one per cell of a grid of spacing T/4. Background tiles come from unpainted areas and
    never overlap a painted pixel of any class.

    Parameters
    ----------
    images : array or sequence of arrays
        (Y, X) or (Y, X, C) images; all with the same number of channels.
    labels : array or sequence of arrays
        Painted labels of the same (Y, X) shapes; 0 = unpainted.
    tile_size : int
        T, the tile side in pixels.
    background : {'unpainted', 'none'}
        'unpainted' adds a background class sampled from unpainted pixels; 'none' uses only
        the painted classes (every class was painted).
    background_tiles : int, optional
        How many background tiles; default: as many as the largest painted class, at least 8.
    background_sampling : {'random', 'grid'}
        Random positions, or a systematic grid of spacing T/2 in random order.
    tiles_per_blob : int, optional
        Cap on the tiles covering one large blob (evenly chosen); default: no cap.
    margin : int, optional
        Context kept around each tile so that training can shift it by up to this many
        pixels (a map cell's tile is centred on its block, not on a painted pixel);
        default T // 16, reduced where the images are too small.
    class_table : ClassTable, optional
        Use this table (e.g. ``model.class_table`` to fine-tune); every painted value must be in it.
    class_names, colors : sequence or dict, optional
        Names and colours of the painted values when no ``class_table`` is given.
    seed : int
        Seed of the random choices.

    Returns
    -------
    TileSet

    Examples
    --------
    >>> from napari_tilemap import sample_surface
    >>> s = sample_surface((256, 256))
    >>> tiles = extract_tiles(s.image, s.labels, tile_size=32)
    >>> tiles.tiles.shape[1:], sorted(tiles.counts())
    ((32, 32, 1), ['background', 'class 1', 'class 2'])
    """
    if background not in BACKGROUND_CHOICES:
        raise TilemapInputError(f"background must be one of {BACKGROUND_CHOICES}, got {background!r}")
    if background_sampling not in SAMPLING_CHOICES:
        raise TilemapInputError(f"background_sampling must be one of {SAMPLING_CHOICES}, got {background_sampling!r}")
    imgs = [as_image(im, name=f"images[{i}]") for i, im in enumerate(as_list(images, name="images"))]
    labs = as_list(labels, name="labels")
    if len(imgs) != len(labs):
        raise TilemapInputError(f"got {len(imgs)} images but {len(labs)} labels arrays; give one labels array per image")
    labs = [as_labels(lb, im.shape, name=f"labels[{i}]") for i, (im, lb) in enumerate(zip(imgs, labs))]
    channels = {im.shape[2] for im in imgs}
    if len(channels) > 1:
        raise TilemapInputError(f"all images need the same number of channels, got {sorted(channels)}")
    t = int(tile_size)
    if t < 2:
        raise TilemapInputError(f"tile_size must be at least 2, got {tile_size}")
    for i, im in enumerate(imgs):
        if min(im.shape[:2]) < t:
            raise TilemapInputError(
                f"tile_size {t} is larger than image {i} ({im.shape[0]}x{im.shape[1]}); use a smaller tile"
            )
    painted_values = sorted(set().union(*(np.unique(lb).tolist() for lb in labs)) - {0})
    if not painted_values:
        raise TilemapInputError("no painted pixels: paint at least one class (label value 1 or more) on the labels")
    table = _class_table(painted_values, background, class_table, class_names, colors)
    if len(table) < 2:
        raise TilemapInputError(
            f"only one class ({table.names[0]!r}) to learn; paint a second class or use background='unpainted'"
        )

    smallest = min(min(im.shape[:2]) for im in imgs)
    m = max(1, t // 16) if margin is None else int(margin)
    m = max(0, min(m, (smallest - t) // 2))
    w = t + 2 * m
    rng = np.random.default_rng(seed)
    centres, classes, image_index, blob_ids = [], [], [], []
    next_blob = 0
    for i, lb in enumerate(labs):
        for value in np.unique(lb):
            if value == 0:
                continue
            for blob_centres in _blob_centres(lb == value, t, tiles_per_blob, rng):
                centres.append(blob_centres)
                classes += [table.index_of_value(int(value))] * len(blob_centres)
                image_index += [i] * len(blob_centres)
                blob_ids += [next_blob] * len(blob_centres)
                next_blob += 1
    # tiles keep their margin inside the image: near a border they shift inwards
    origins = [
        np.clip(c - t // 2, m, np.array(labs[i].shape) - t - m) for c, i in zip(np.concatenate(centres), image_index)
    ]
    origins = np.asarray(origins, np.int64).reshape(-1, 2)
    classes_arr = np.asarray(classes, np.int64)
    image_arr = np.asarray(image_index, np.int64)
    blob_arr = np.asarray(blob_ids, np.int64)

    if background == "unpainted":
        wanted = background_tiles
        if wanted is None:
            wanted = max(8, int(np.bincount(classes_arr).max()))
        bg = _background_origins(labs, w, wanted, background_sampling, rng)
        bg[:, 1:] += m
        if len(bg) == 0:
            raise TilemapInputError(
                f"no {t}x{t} area is free of painted pixels, so there are no background tiles; "
                "paint less, use a smaller tile, or background='none' if every class is painted"
            )
        if len(bg) < wanted:
            warnings.warn(f"found only {len(bg)} of {wanted} background tiles free of painted pixels", stacklevel=2)
        origins = np.concatenate([origins, bg[:, 1:]])
        classes_arr = np.concatenate([classes_arr, np.zeros(len(bg), np.int64)])
        image_arr = np.concatenate([image_arr, bg[:, 0]])
        blob_arr = np.concatenate([blob_arr, np.full(len(bg), -1, np.int64)])

    windows = np.stack([imgs[i][y - m : y + t + m, x - m : x + t + m] for i, (y, x) in zip(image_arr, origins)])
    return TileSet(windows.astype(np.float32), classes_arr, image_arr, origins, blob_arr, table, t, m)


def _class_table(painted_values, background, class_table, class_names, colors) -> ClassTable:
    if class_table is None:
        return ClassTable.from_values(painted_values, class_names, colors, background=background == "unpainted")
    unknown = sorted(set(painted_values) - set(class_table.values))
    if unknown:
        raise TilemapInputError(
            f"painted label values {unknown} are not in the class table {class_table.values}; "
            "add them to the table or erase them"
        )
    if class_table.has_background != (background == "unpainted"):
        raise TilemapInputError(
            f"background={background!r} does not match the class table "
            f"({'with' if class_table.has_background else 'without'} a background class)"
        )
    return class_table


def _blob_centres(mask: np.ndarray, t: int, cap: int | None, rng: np.random.Generator):
    """For each blob of ``mask``: the (y, x) centres of the tiles placed on it."""
    from skimage.measure import label, regionprops

    half, spacing = max(t // 2, 1), max(t // 4, 1)
    for region in regionprops(label(mask, connectivity=2)):
        y0, x0, y1, x1 = region.bbox
        if y1 - y0 <= half and x1 - x0 <= half:
            yield np.round(np.asarray(region.centroid))[None].astype(np.int64)
            continue
        coords = region.coords
        # one tile per occupied cell of a T/4 grid, on the blob pixel nearest the cell's centre
        cell = (coords - [y0, x0]) // spacing
        cell_centre = cell * spacing + spacing / 2 + [y0, x0]
        d = np.sum((coords - cell_centre) ** 2, axis=1)
        key = cell[:, 0] * (x1 - x0 + 1) + cell[:, 1]
        order = np.lexsort((d, key))
        first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
        chosen = coords[first]
        if cap is not None and len(chosen) > cap:
            chosen = chosen[np.sort(rng.choice(len(chosen), cap, replace=False))]
        yield chosen.astype(np.int64)


def _background_origins(labs, t: int, wanted: int, sampling: str, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) rows of (image, y, x) tile origins whose windows hold no painted pixel."""
    free = []
    for i, lb in enumerate(labs):
        ok = _window_sum(lb > 0, t) == 0
        if sampling == "grid":
            step = max(t // 2, 1)
            grid = np.zeros_like(ok)
            grid[::step, ::step] = True
            ok &= grid
        ys, xs = np.nonzero(ok)
        free.append(np.stack([np.full(len(ys), i), ys, xs], 1))
    candidates = np.concatenate(free).astype(np.int64)
    if len(candidates) <= wanted:
        return candidates[rng.permutation(len(candidates))]
    return candidates[rng.choice(len(candidates), wanted, replace=False)]


def _window_sum(mask: np.ndarray, t: int) -> np.ndarray:
    """Sum of ``mask`` over every t×t window, indexed by the window's top-left pixel."""
    s = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return s[t:, t:] - s[:-t, t:] - s[t:, :-t] + s[:-t, :-t]
