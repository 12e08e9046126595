"""Built-in sample data: a textured metal surface with pits and scratches, made from a seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .._classes import ClassTable

CLASS_NAMES = {1: "pit", 2: "scratch"}
CLASS_COLORS = {1: (0.95, 0.15, 0.15, 1.0), 2: (0.15, 0.55, 1.0, 1.0)}
BORDER = 40


@dataclass(frozen=True)
class SurfaceSample:
    """A procedural surface image with its painted labels and ground truth.

    Attributes
    ----------
    image : ndarray (H, W) uint8
        Brushed-metal texture with dark pits and bright scratches.
    labels : ndarray (H, W) uint8
        What a user painted: partial strokes on most, not all, defects (1 = pit, 2 = scratch).
    truth : ndarray (H, W) uint8
        Every planted defect with its class value.
    pits : list of (y, x, radius)
        Every pit.
    scratches : list of ndarray (n, 2)
        Every scratch as a polyline of (y, x) points.
    painted_pits, painted_scratches : tuple of int
        Indices of the defects that ``labels`` paints.
    """

    image: np.ndarray
    labels: np.ndarray
    truth: np.ndarray
    pits: list = field(default_factory=list)
    scratches: list = field(default_factory=list)
    painted_pits: tuple = ()
    painted_scratches: tuple = ()
    class_names: dict = field(default_factory=lambda: dict(CLASS_NAMES))
    colors: dict = field(default_factory=lambda: dict(CLASS_COLORS))

    @property
    def class_table(self) -> ClassTable:
        """Background, pit and scratch with the sample's names and colours."""
        return ClassTable.from_values([1, 2], names=self.class_names, colors=self.colors)


def sample_surface(
    shape: tuple[int, int] = (512, 512),
    seed: int = 0,
    n_pits: int | None = None,
    n_scratches: int | None = None,
    painted_fraction: float = 0.7,
) -> SurfaceSample:
    """Generate the textured-surface sample.

    Parameters
    ----------
    shape : (int, int)
        Image size; at least 128 px a side.
    seed : int
        Everything is drawn from ``numpy.random.default_rng(seed)``.
    n_pits, n_scratches : int, optional
        Defect counts; by default 30 pits and 12 scratches per 512×512 pixels.
    painted_fraction : float
        Share of the defects that the painted labels cover.

    Examples
    --------
    >>> s = sample_surface((256, 256), seed=1)
    >>> s.image.shape, s.image.dtype, int(s.labels.max())
    ((256, 256), dtype('uint8'), 2)
    """
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < 128:
        raise ValueError(f"sample shape must be at least 128x128, got {shape}")
    rng = np.random.default_rng(seed)
    area = h * w / 512**2
    n_pits = max(2, round(30 * area)) if n_pits is None else n_pits
    n_scratches = max(2, round(12 * area)) if n_scratches is None else n_scratches

    surface = _texture((h, w), rng)
    truth = np.zeros((h, w), np.uint8)
    painted = np.zeros((h, w), np.uint8)
    occupied = np.zeros((h, w), bool)

    scratches = []
    for _ in range(n_scratches * 20):
        if len(scratches) == n_scratches:
            break
        line = _scratch_path(rng, h, w)
        box = _box(line, pad=12, shape=(h, w))
        dist = _distance_to_path(line, box)
        width = rng.uniform(1.0, 2.2)
        if occupied[box][dist < 14].any():
            continue
        occupied[box] |= dist < 14
        surface[box] += rng.uniform(55, 75) * np.exp(-0.5 * (dist / width) ** 2)
        truth[box][dist <= width + 0.5] = 2
        scratches.append((line, box, dist, width))

    pits = []
    for _ in range(n_pits * 50):
        if len(pits) == n_pits:
            break
        r = rng.uniform(4.0, 9.0)
        y, x = rng.uniform(BORDER, h - BORDER), rng.uniform(BORDER, w - BORDER)
        box = (slice(int(y - 2 * r), int(y + 2 * r) + 2), slice(int(x - 2 * r), int(x + 2 * r) + 2))
        yy, xx = np.mgrid[box]
        d = np.hypot(yy - y, xx - x)
        if occupied[box][d < r + 10].any():
            continue
        occupied[box] |= d < r + 10
        crater = 1.0 / (1.0 + np.exp((d - r) / 0.8))
        # a dark crater lit from the top left: bright rim on the far side
        rim = np.exp(-0.5 * ((d - r) / 1.2) ** 2) * np.clip(((yy - y) + (xx - x)) / (r * 1.4), 0, 1)
        surface[box] += -rng.uniform(60, 85) * crater + 35 * rim
        truth[box][d <= r] = 1
        pits.append((y, x, r))

    painted_pits = tuple(sorted(rng.choice(len(pits), round(painted_fraction * len(pits)), replace=False).tolist()))
    painted_scratches = tuple(
        sorted(rng.choice(len(scratches), max(1, round(painted_fraction * len(scratches))), replace=False).tolist())
    )
    for i in painted_pits:
        y, x, r = pits[i]
        box = (slice(int(y - r), int(y + r) + 2), slice(int(x - r), int(x + r) + 2))
        yy, xx = np.mgrid[box]
        painted[box][(yy - y) ** 2 + (xx - x) ** 2 <= (0.7 * r) ** 2] = 1
    for i in painted_scratches:
        line, box, dist, width = scratches[i]
        # a stroke along the middle 70% of the scratch, narrower than the scratch itself
        inner = line[int(0.15 * len(line)) : int(0.85 * len(line))]
        stroke = _distance_to_path(inner, box) <= max(1.0, 0.6 * width)
        painted[box][stroke & (truth[box] == 2)] = 2

    image = np.clip(surface, 0, 255).round().astype(np.uint8)
    return SurfaceSample(
        image, painted, truth, pits, [s[0] for s in scratches], painted_pits, painted_scratches
    )


def make_sample_data():
    """napari sample-data provider: the surface image and its painted labels."""
    s = sample_surface()
    table = s.class_table
    colors = {v: c for v, c in zip(table.values, table.colors)}
    colors[None] = (0.0, 0.0, 0.0, 0.0)
    features = {"index": list(table.values), "class": list(table.names)}
    return [
        (s.image, {"name": "surface"}, "image"),
        (s.labels, {"name": "painted defects", "metadata": {"tilemap_class_table": table.to_dict()},
                    "features": features, "colormap": colors}, "labels"),
    ]


def _texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Brushed metal: streaks along x, fine grain, and a slow illumination gradient."""
    h, w = shape
    streaks = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma=(0.6, 12.0))
    grain = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma=1.0)
    blotches = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma=24.0)
    yy, xx = np.mgrid[:h, :w]
    light = 12 * np.cos(2 * np.pi * (yy / (2.5 * h) + xx / (3.0 * w)) + rng.uniform(0, 2 * np.pi))
    t = 14 * streaks / streaks.std() + 6 * grain / grain.std() + 8 * blotches / max(blotches.std(), 1e-9)
    return 128 + t + light


def _scratch_path(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gently curved polyline (quadratic Bezier) 40-200 px long, inside the border."""
    length = rng.uniform(60, min(200, 0.6 * min(h, w)))
    angle = rng.uniform(0, np.pi)
    d = np.array([np.sin(angle), np.cos(angle)]) * length
    lo = np.array([BORDER, BORDER]) + np.maximum(-d, 0)
    hi = np.array([h - BORDER, w - BORDER]) - np.maximum(d, 0)
    start = rng.uniform(lo, hi)
    end = start + d
    bend = np.array([-d[1], d[0]]) / length * rng.uniform(-0.12, 0.12) * length
    mid = (start + end) / 2 + bend
    t = np.linspace(0, 1, int(length * 2))[:, None]
    pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * mid + t**2 * end
    return np.clip(pts, BORDER / 2, [h - BORDER / 2, w - BORDER / 2])


def _box(points: np.ndarray, pad: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    lo = np.maximum(np.floor(points.min(0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(points.max(0)).astype(int) + pad + 1, shape)
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def _distance_to_path(points: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """Euclidean distance from every pixel of ``box`` to the densely sampled path."""
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    seeds = np.ones((h * 4, w * 4), bool)  # 4x supersampled so thin lines get sub-pixel distances
    idx = np.round((points - [box[0].start, box[1].start]) * 4 + 1.5).astype(int)
    idx = idx[(idx[:, 0] >= 0) & (idx[:, 0] < h * 4) & (idx[:, 1] >= 0) & (idx[:, 1] < w * 4)]
    seeds[idx[:, 0], idx[:, 1]] = False
    return ndi.distance_transform_edt(seeds)[::4, ::4][:h, :w] / 4.0
