"""Training tiles cut around painted blobs (blob analysis) plus background tiles."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .._classes import ClassTable
from .._errors import TilemapInputError
from .._intensity import warn_mixed_scales
from ..io._images import as_image, as_labels, as_list
from ._augment import default_margin

BACKGROUND_CHOICES = ("unpainted", "none")
SAMPLING_CHOICES = ("random", "grid")
MAX_BACKGROUND_TILES = 4096
"""Most background tiles :func:`extract_tiles` keeps by default: a T/4 grid over 1024×1024 unpainted
pixels at T = 64. Larger areas get a random subset of the grid's cells, still spread over all of it."""
_SPACING = 4
"""Background grid spacing T/_SPACING."""
MAX_BACKGROUND_BYTES = 256 << 20
"""Memory bound of the background windows (float32); lowers the default count for wide windows."""
MAX_PAINTED_BYTES = 1 << 30
"""Memory bound of the painted windows (float32): beyond it, each blob keeps its share of its tiles, evenly
spread over it (a tile per map cell of a large painted area could otherwise take gigabytes)."""


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
        Top-left (y, x) of each tile in its image; its centre pixel is ``origin + T // 2``. A tile
        centred near the image's edge reaches outside it (an origin may be negative): those
        pixels are symmetric reflections of the image, as in maps.
    blob_ids : ndarray (N,) int64
        Globally unique id of the painted blob a tile covers, -1 for background tiles.
    class_table : ClassTable
    tile_size : int
    margin : int
        m, the context kept around each tile for shift and rotation augmentation.
    sources : tuple of (images, labels), optional
        The images (Y, X, C) and painted labels the tiles were cut from, kept by reference for
        hard-negative rounds (:func:`~napari_tilemap.learn._hardneg.mine_hard_negatives`); None
        for tile sets made otherwise.
    background_gap : int or None
        The rule background tiles were chosen by: their centre pixel lies at least this many
        pixels (Chebyshev) from every painted pixel; None without a background class.
    """

    windows: np.ndarray
    classes: np.ndarray
    image_index: np.ndarray
    origins: np.ndarray
    blob_ids: np.ndarray
    class_table: ClassTable
    tile_size: int
    margin: int = 0
    sources: tuple | None = field(default=None, repr=False, compare=False)
    background_gap: int | None = None

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
                       self.class_table, self.tile_size, self.margin, self.sources, self.background_gap)

    def extended(self, windows: np.ndarray, image_index: np.ndarray, origins: np.ndarray) -> TileSet:
        """These tiles plus background tiles cut at ``origins`` (same size and margin)."""
        n = len(windows)
        return TileSet(np.concatenate([self.windows, windows.astype(np.float32)]),
                       np.concatenate([self.classes, np.zeros(n, np.int64)]),
                       np.concatenate([self.image_index, np.asarray(image_index, np.int64)]),
                       np.concatenate([self.origins, np.asarray(origins, np.int64).reshape(-1, 2)]),
                       np.concatenate([self.blob_ids, np.full(n, -1, np.int64)]),
                       self.class_table, self.tile_size, self.margin, self.sources, self.background_gap)


def extract_tiles(
    images,
    labels,
    tile_size: int = 64,
    *,
    background: str = "unpainted",
    background_tiles: int | None = None,
    background_sampling: str = "random",
    background_gap: int | None = None,
    tiles_per_blob: int | None = None,
    painted_spacing: int | None = None,
    margin: int | None = None,
    class_table: ClassTable | None = None,
    class_names=None,
    colors=None,
    seed: int = 0,
) -> TileSet:
    """Cut training tiles around painted blobs, plus background tiles.

    Each painted class is split into blobs (``skimage.measure.label``, 8-connected). With a background
    class, every blob gets one tile per cell of a grid of spacing T/8 over the image that it covers,
    centred on its pixel nearest the cell's centre: at T = 64 the grid of the medium preset's map
    cells, so a defect is learnt from every cell it would colour in a map, small ones too. Without
    one (``background='none'``: a few strokes per region class), a blob that fits in half a tile gets
    one tile centred on its centroid and a larger one one tile per cell of a grid of spacing T/4.

    Background tiles (``background='unpainted'``) cover all unpainted area. A tile is labelled by
    what lies at its centre, as a map cell is by its centre block, so a background tile's centre
    pixel keeps ``background_gap`` pixels (Chebyshev) from every painted pixel while paint may lie
    elsewhere in the tile: tiles beside a defect, with the defect off-centre, are background too.
    By default there is one tile in every cell of a grid of spacing T/4 that holds such centres, at
    a random centre within the cell (``'random'``) or at the cell's corner (``'grid'``). Centres
    reach the image's edge, as map cells do; a window reaching outside holds symmetric reflections.

    Parameters
    ----------
    images : array or sequence of arrays
        (Y, X) or (Y, X, C) images; all with the same number of channels.
    labels : array or sequence of arrays
        Painted labels of the same (Y, X) shapes; 0 = unpainted. None for a defect-free image: with
        ``background='unpainted'`` all of it is background, which teaches the clean surface.
    tile_size : int
        T, the tile side in pixels.
    background : {'unpainted', 'none'}
        'unpainted' adds a background class sampled from unpainted pixels; 'none' uses only
        the painted classes (every class was painted).
    background_tiles : int, optional
        How many background tiles; default: one per occupied cell of the T/4 grid, at most
        :data:`MAX_BACKGROUND_TILES` (fewer for windows too large for
        :data:`MAX_BACKGROUND_BYTES`), chosen evenly over the cells.
    background_sampling : {'random', 'grid'}
        A random centre within each grid cell (stratified), or the grid points themselves.
    background_gap : int, optional
        Smallest Chebyshev distance in pixels from a background tile's centre pixel to paint;
        default T // 16 + 2: the half block of a medium-preset map cell (S/2 = 4 at T = 64) plus a
        2-pixel guard for strokes slightly narrower than what they paint. Training also drops the
        background tiles whose centre block, at the trained preset's step, holds paint.
        T // 2 + margin + 1 keeps paint out of the whole window.
    tiles_per_blob : int, optional
        Cap on the tiles covering one large blob (evenly chosen); default: no cap.
    painted_spacing : int, optional
        Spacing in pixels of the grid painted tiles are placed on, one per cell a blob covers, small
        blobs too; default T // 8 with a background class, and the rule above without.
    margin : int, optional
        Context kept around each tile for shift and rotation augmentation (a map cell's tile is
        centred on its block, not on a painted pixel); default T // 16 + ceil(0.21 T) (what
        :data:`DEFAULT_AUGMENT` needs), reduced where the images are too small.
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
    labs = [np.zeros(im.shape[:2], np.int64) if lb is None else as_labels(lb, im.shape, name=f"labels[{i}]")
            for i, (im, lb) in enumerate(zip(imgs, labs))]
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
    spacing = max(t // 8, 1) if painted_spacing is None and background == "unpainted" else painted_spacing
    if spacing is not None and int(spacing) < 1:
        raise TilemapInputError(f"painted_spacing must be at least 1 pixel, got {painted_spacing}")
    m = default_margin(t) if margin is None else int(margin)
    m = max(0, min(m, (smallest - t) // 2))
    w = t + 2 * m
    rng = np.random.default_rng(seed)
    centres, classes, image_index, blob_ids = [], [], [], []
    next_blob = 0
    for i, lb in enumerate(labs):
        for value in np.unique(lb):
            if value == 0:
                continue
            for blob_centres in _blob_centres(lb == value, t, tiles_per_blob, rng, spacing):
                centres.append(blob_centres)
                classes += [table.index_of_value(int(value))] * len(blob_centres)
                image_index += [i] * len(blob_centres)
                blob_ids += [next_blob] * len(blob_centres)
                next_blob += 1
    # every painted tile is centred on its pixel, also near the image's edge, where its window
    # reaches outside the image: those pixels are symmetric reflections, as in maps
    origins = (np.concatenate(centres).astype(np.int64) - t // 2).reshape(-1, 2)
    classes_arr = np.asarray(classes, np.int64)
    image_arr = np.asarray(image_index, np.int64)
    blob_arr = np.asarray(blob_ids, np.int64)
    window_bytes = w * w * 4 * imgs[0].shape[2]  # one float32 window
    most = max(1, MAX_PAINTED_BYTES // window_bytes)
    if len(origins) > most:  # a large painted area: every blob keeps its share, evenly over it, and at least one
        keep = np.concatenate([np.flatnonzero(blob_arr == b)[np.unique(np.linspace(
            0, n - 1, max(1, n * most // len(origins))).round().astype(int))]
            for b, n in enumerate(np.bincount(blob_arr))])
        warnings.warn(f"{len(origins)} painted tiles would take more than {MAX_PAINTED_BYTES >> 20} MB; kept "
                      f"{len(keep)} spread over every blob (paint smaller areas, or set painted_spacing larger)",
                      stacklevel=2)
        origins, classes_arr, image_arr, blob_arr = origins[keep], classes_arr[keep], image_arr[keep], blob_arr[keep]

    gap = None
    if background == "unpainted":
        gap = t // 16 + 2 if background_gap is None else int(background_gap)
        if gap < 1:
            raise TilemapInputError(f"background_gap must be at least 1 pixel (a background tile's centre "
                                    f"is never painted), got {background_gap}")
        if background_tiles is not None and int(background_tiles) < 1:
            raise TilemapInputError(f"background_tiles must be at least 1, got {background_tiles}")
        cap = max(8, min(MAX_BACKGROUND_TILES, MAX_BACKGROUND_BYTES // window_bytes))
        bg = background_origins(labs, t, gap, background_tiles, cap, background_sampling, rng)
        if len(bg) == 0:
            raise TilemapInputError(
                f"no {t}x{t} tile has its centre {gap} px or more away from paint, so there are no background "
                "tiles; paint less, use a smaller tile, or background='none' if every class is painted"
            )
        if background_tiles is not None and len(bg) < background_tiles:
            warnings.warn(f"found only {len(bg)} of {background_tiles} background tiles away from paint",
                          stacklevel=2)
        origins = np.concatenate([origins, bg[:, 1:]])
        classes_arr = np.concatenate([classes_arr, np.zeros(len(bg), np.int64)])
        image_arr = np.concatenate([image_arr, bg[:, 0]])
        blob_arr = np.concatenate([blob_arr, np.full(len(bg), -1, np.int64)])

    windows = np.stack([_window(imgs[i], y - m, x - m, w) for i, (y, x) in zip(image_arr, origins)])
    warn_mixed_scales(imgs)
    return TileSet(windows.astype(np.float32), classes_arr, image_arr, origins, blob_arr, table, t, m,
                   (tuple(imgs), tuple(labs)), gap)


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


def _blob_centres(mask: np.ndarray, t: int, cap: int | None, rng: np.random.Generator, grid: int | None = None):
    """For each blob of ``mask``: the (y, x) centres of the tiles placed on it: one per cell of the image's
    grid of spacing ``grid`` that the blob covers; without ``grid``, one at the centroid of a blob within
    half a tile, else one per cell of a T/4 grid laid from the blob's corner."""
    from skimage.measure import label, regionprops

    half, spacing = max(t // 2, 1), int(grid) if grid else max(t // 4, 1)
    for region in regionprops(label(mask, connectivity=2)):
        y0, x0, y1, x1 = region.bbox
        if not grid and y1 - y0 <= half and x1 - x0 <= half:
            yield np.round(np.asarray(region.centroid))[None].astype(np.int64)
            continue
        coords = region.coords
        if grid:  # the image's grid (the map's cells at spacing S)
            y0, x0 = 0, 0
        # one tile per occupied cell of the grid, on the blob pixel nearest the cell's centre
        cell = (coords - [y0, x0]) // spacing
        cell_centre = cell * spacing + spacing / 2 + [y0, x0]
        d = np.sum((coords - cell_centre) ** 2, axis=1)
        key = cell[:, 0] * (mask.shape[1] + 1) + cell[:, 1]
        order = np.lexsort((d, key))
        first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
        chosen = coords[first]
        if cap is not None and len(chosen) > cap:
            chosen = chosen[np.sort(rng.choice(len(chosen), cap, replace=False))]
        yield chosen.astype(np.int64)


def background_centres(lab: np.ndarray, gap: int) -> np.ndarray:
    """(Y, X) bool: pixels that may be the centre pixel of a background tile, those at least
    ``gap`` px (Chebyshev) from every painted pixel. Any pixel of the image qualifies, as every
    pixel is some map cell's centre: a tile near the edge reaches outside the image, where its
    pixels are symmetric reflections, as in maps."""
    # paint within the (2·gap − 1)-square around each pixel
    return ~(_window_sum(np.pad(lab > 0, gap - 1), 2 * gap - 1) > 0)


def background_origins(labs, t: int, gap: int, wanted: int | None, cap: int, sampling: str,
                       rng: np.random.Generator) -> np.ndarray:
    """(n, 3) rows of (image, y, x) background tile origins spread over all unpainted area.

    The images are divided into cells of a T/4 grid of centre pixels; each cell holding candidate
    centres (:func:`background_centres`) offers one: a random candidate (``'random'``) or the
    cell's corner when it is a candidate (``'grid'``). ``wanted`` (default: every cell, at most
    ``cap``) of them are kept, evenly at random over the cells; when more are wanted than there
    are cells, the rest are drawn among all candidates.
    """
    step = max(t // _SPACING, 1)
    offers, pool = [], []
    for i, lb in enumerate(labs):
        ys, xs = np.nonzero(background_centres(lb, gap))
        if len(ys) == 0:
            continue
        pool.append(np.stack([np.full(len(ys), i), ys - t // 2, xs - t // 2], 1))
        if sampling == "grid":
            on = (ys % step == 0) & (xs % step == 0)
            offers.append(pool[-1][on])
            continue
        cell = (ys // step) * (lb.shape[1] // step + 1) + xs // step
        order = np.lexsort((rng.random(len(ys)), cell))  # random order within each cell
        first = order[np.r_[True, cell[order][1:] != cell[order][:-1]]]
        offers.append(pool[-1][first])
    if not pool:
        return np.zeros((0, 3), np.int64)
    offered = np.concatenate(offers).astype(np.int64)
    n = min(len(offered), cap) if wanted is None else int(wanted)
    if n <= len(offered):
        return offered[np.sort(rng.choice(len(offered), n, replace=False))]
    everything = np.concatenate(pool).astype(np.int64)
    extra = everything[rng.choice(len(everything), min(n, len(everything)) - len(offered), replace=False)]
    return np.concatenate([offered, extra])


def _window(image: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """``image[y0 : y0 + size, x0 : x0 + size]``; pixels outside the image are symmetric reflections
    (``numpy.pad(mode="symmetric")``), the rule of maps."""
    h, w = image.shape[:2]
    if y0 >= 0 and x0 >= 0 and y0 + size <= h and x0 + size <= w:
        return image[y0 : y0 + size, x0 : x0 + size]
    return image[np.ix_(_reflect(np.arange(y0, y0 + size), h), _reflect(np.arange(x0, x0 + size), w))]


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into an axis of length ``n`` with those outside it reflected symmetrically."""
    index = np.mod(index, 2 * n)
    return np.where(index < n, index, 2 * n - 1 - index)


def _window_sum(mask: np.ndarray, t: int) -> np.ndarray:
    """Sum of ``mask`` over every t×t window, indexed by the window's top-left pixel."""
    s = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return s[t:, t:] - s[:-t, t:] - s[t:, :-t] + s[:-t, :-t]
