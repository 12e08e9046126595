"""Accuracy of the default training on busy surfaces: defects on texture photographs, a texture mosaic.

Cases, all from data that installs with scikit-image (``skimage.data``) or is generated:

(a) ``defects-<surface>``: dark pits and bright scratches planted on a natural texture photograph
    (grass, gravel, brick). The top half is the training image with every defect painted; the bottom
    half, never seen, is the test image with full truth (20 pits, 16 scratches each). With ``--size S``,
    the issue's own scenario instead: an S² training surface and a (2S)² test surface, grown from the
    top and the bottom half by image quilting (patches in any of 8 orientations, joined along
    minimum-error seams), 40 pits and 40 scratches per 1024². Reports cell and object precision / recall
    / F1 per class at the default settings, then object F1 with the evaluation's suggested (cell)
    threshold, with its suggested min score (regions whose peak score is below it left out), and with every
    region (``min_score=0``; the defaults apply the min score training suggested, ``model.min_score``).
(b) ``mosaic``: regions of three textures; a few painted strokes per texture on a mosaic made of the
    photographs' top halves (``background="none"``), tested on another mosaic of their bottom halves.
    Reports cell accuracy away from region borders (farther than T/2).
(c) ``demo``: the built-in sample (partial painting, seed s; ``--painted-fraction`` of its defects
    painted, by default the sample's own share) tested on another sample (seed s + 1):
    the area of each painted class on the map against the truth (cells whose centre pixel holds
    the class), i.e. how much the map grows defects.

Every case runs once per seed (``--seeds``); the summary gives each figure's mean and minimum.

Run:
    python benchmarks/bench_accuracy.py [--threads 2] [--cases grass gravel brick mosaic demo]
        [--seeds 0 1] [--size 1024] [--more-paint K] [--painted-fraction F] [--tile 64] [--preset medium] [--epochs 20]
        [--prior {tiles,balanced}] [--hard-negatives N] [--augment flip rot90 ...] [--background-tiles N]
        [--samples-per-epoch N] [--val-fraction F] [--tta] [--normalise {dataset,image}]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_tilemap import evaluate, extract_tiles, predict, sample_surface, train

SURFACES = ("grass", "gravel", "brick")
PREDICT: dict = {}
"""Keyword arguments of every prediction (``tta=True`` with ``--tta``)."""


def plant_defects(texture: np.ndarray, rng: np.random.Generator, n_pits: int, n_scratches: int):
    """Dark pits and bright scratches on ``texture``; returns (image uint8, truth uint8)."""
    h, w = texture.shape
    img = texture.astype(np.float64)
    sigma = img.std()
    truth = np.zeros((h, w), np.uint8)
    taken = np.zeros((h, w), bool)
    # a defect changes pixels, and keeps others away, only within ``reach`` px of its curve (2·reach of a pit's
    # centre), so each is drawn in a window of the image: the same result as over the whole image, far faster
    border, reach = 12, 12
    placed = 0
    for _ in range(n_scratches * 50):
        if placed == n_scratches:
            break
        length, angle = rng.uniform(30, 80), rng.uniform(0, np.pi)
        d = np.array([np.sin(angle), np.cos(angle)]) * length
        start = rng.uniform([border, border], [h - border, w - border])
        end = start + d
        if not (border <= end[0] < h - border and border <= end[1] < w - border):
            continue
        t = np.linspace(0, 1, int(2 * length))[:, None]
        bend = np.array([-d[1], d[0]]) * rng.uniform(-0.1, 0.1)
        pts = np.round((1 - t) ** 2 * start + 2 * (1 - t) * t * ((start + end) / 2 + bend) + t**2 * end).astype(int)
        lo, hi = np.maximum(pts.min(0) - reach, 0), np.minimum(pts.max(0) + reach + 1, (h, w))
        win = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        seeds = np.ones(hi - lo, bool)
        seeds[pts[:, 0] - lo[0], pts[:, 1] - lo[1]] = False
        dist = ndi.distance_transform_edt(seeds)
        if taken[win][dist < 10].any():
            continue
        width = rng.uniform(0.8, 1.6)
        img[win] += rng.uniform(1.5, 2.5) * sigma * np.exp(-0.5 * (dist / width) ** 2)
        truth[win][dist <= width + 0.5] = 2
        taken[win] |= dist < 10
        placed += 1
    placed = 0
    for _ in range(n_pits * 50):
        if placed == n_pits:
            break
        r = rng.uniform(4.0, 7.0)
        y, x = rng.uniform(border, h - border), rng.uniform(border, w - border)
        y0, x0 = max(int(y) - 2 * reach, 0), max(int(x) - 2 * reach, 0)
        win = (slice(y0, min(int(y) + 2 * reach + 1, h)), slice(x0, min(int(x) + 2 * reach + 1, w)))
        yy, xx = np.mgrid[win]
        d = np.hypot(yy - y, xx - x)
        if taken[win][d < r + 8].any():
            continue
        img[win] -= rng.uniform(2.5, 3.5) * sigma / (1.0 + np.exp(np.minimum((d - r) / 0.7, 50.0)))
        truth[win][d <= r] = 1
        taken[win] |= d < r + 8
        placed += 1
    return np.clip(img, 0, 255).round().astype(np.uint8), truth


def quilt(source: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, patch: int = 128,
          overlap: int = 32, candidates: int = 400, tolerance: float = 0.1) -> np.ndarray:
    """A surface of ``shape`` grown from ``source`` by image quilting (Efros & Freeman, SIGGRAPH 2001).

    Patches are placed in raster order with ``overlap`` px of overlap. Each is drawn from ``candidates``
    random patches of ``source`` in any of its 8 orientations: one of those whose squared difference
    over the overlap is within ``1 + tolerance`` of the best. It then replaces what lies under it only
    beyond the minimum-error path through the overlap, so the seam follows where the two agree and
    structures (mortar lines, stalks) run on or end as they do in the photograph: neither blended
    ghosts nor cut-off line ends that would look like planted defects.
    """
    src = source.astype(np.float64)
    views = [v[:, ::-1] if flip else v for v in (np.rot90(src, k) for k in range(4)) for flip in (False, True)]
    stride = patch - overlap
    ny, nx = -(-(shape[0] - overlap) // stride), -(-(shape[1] - overlap) // stride)
    out = np.zeros((ny * stride + overlap, nx * stride + overlap))
    for i in range(ny):
        for j in range(nx):
            sl = (slice(i * stride, i * stride + patch), slice(j * stride, j * stride + patch))
            below = out[sl]
            # score candidates on the overlap only (the top rows, then the left columns below them)
            top, left = (overlap if i else 0), (overlap if j else 0)
            picks, err = [], np.zeros(candidates if i or j else 1)
            for k in range(len(err)):
                v = views[rng.integers(len(views))]
                y, x = rng.integers(0, v.shape[0] - patch + 1), rng.integers(0, v.shape[1] - patch + 1)
                picks.append((v, y, x))
                err[k] = (((v[y : y + top, x : x + patch] - below[:top]) ** 2).sum()
                          + ((v[y + top : y + patch, x : x + left] - below[top:, :left]) ** 2).sum())
            v, y, x = picks[rng.choice(np.flatnonzero(err <= err.min() * (1 + tolerance)))]
            new = v[y : y + patch, x : x + patch]
            keep = np.ones((patch, patch), bool)
            if j > 0:  # vertical seam: left of the cut, each row keeps what lay there
                cut = _min_cut((new[:, :overlap] - below[:, :overlap]) ** 2)
                keep[:, :overlap] &= np.arange(overlap) >= cut[:, None]
            if i > 0:  # horizontal seam: above the cut, each column keeps what lay there
                cut = _min_cut(((new[:overlap] - below[:overlap]) ** 2).T)
                keep[:overlap] &= np.arange(overlap)[:, None] >= cut[None, :]
            out[sl] = np.where(keep, new, below)
    return out[: shape[0], : shape[1]]


def _min_cut(error: np.ndarray) -> np.ndarray:
    """The column of the top-to-bottom path of least total ``error`` in each row (8-connected steps)."""
    cost = error.copy()
    for r in range(1, len(cost)):
        prev = np.pad(cost[r - 1], 1, constant_values=np.inf)
        cost[r] += np.minimum(np.minimum(prev[:-2], prev[1:-1]), prev[2:])
    path = np.empty(len(cost), np.int64)
    path[-1] = int(np.argmin(cost[-1]))
    for r in range(len(cost) - 2, -1, -1):
        c = path[r + 1]
        lo = max(c - 1, 0)
        path[r] = lo + int(np.argmin(cost[r, lo : c + 2]))
    return path


def defect_case(name: str, seed: int = 0, size: int | None = None, more_paint: int = 1):
    """Train image (every defect painted), test image and its truth.

    By default the photograph's top half trains and its bottom half tests (20 pits, 16 scratches each).
    With ``size``, the issue's scenario: a ``size``² training surface with 40 pits and 40 scratches per
    1024², quilted from the top half, and a (2·``size``)² test surface with as many per area, quilted
    from the bottom half. ``more_paint`` k > 1 (with ``size``) trains instead on a (k·``size``)² surface
    with k² times the painted defects (its own random stream), the test surface unchanged: what more
    painting would buy.
    """
    import skimage.data

    texture = getattr(skimage.data, name)()
    if texture.ndim == 3:
        texture = texture[..., :3].mean(-1)
    rng = np.random.default_rng(seed)
    h = texture.shape[0] // 2
    top, bottom = texture[:h], texture[h:]
    if size is None:
        return (*plant_defects(top, rng, 20, 16), *plant_defects(bottom, rng, 20, 16))
    n = round(40 * size**2 / 1024**2)
    train_img, train_truth = plant_defects(quilt(top, (size, size), rng), rng, n, n)
    test = plant_defects(quilt(bottom, (2 * size, 2 * size), rng), rng, 4 * n, 4 * n)
    if more_paint > 1:  # the 1x surface above is still drawn: the test surface comes after it in the stream
        k, rng = more_paint, np.random.default_rng(1000 + seed)
        train_img, train_truth = plant_defects(quilt(top, (k * size, k * size), rng), rng, k * k * n, k * k * n)
    return (train_img, train_truth, *test)


def mosaic(textures: list[np.ndarray], rng: np.random.Generator, regions: int = 9):
    """A Voronoi mosaic of the textures (all of one shape); returns (image, region class 1..K)."""
    h, w = textures[0].shape
    seeds = rng.uniform([0, 0], [h, w], (regions, 2))
    owner = np.zeros((h, w), np.int64)
    yy, xx = np.mgrid[:h, :w]
    dist = np.stack([np.hypot(yy - y, xx - x) for y, x in seeds])
    owner = dist.argmin(0)
    cls = np.arange(regions) % len(textures)
    rng.shuffle(cls)
    classes = cls[owner]
    image = np.choose(classes, textures)
    return image.astype(np.uint8), (classes + 1).astype(np.uint8)


def strokes(classes: np.ndarray, rng: np.random.Generator, per_class: int, keep_away: int) -> np.ndarray:
    """A few short painted strokes (41 px long, 5 px wide) per class, every painted pixel more than
    ``keep_away`` px from its region's border and from the image's edge."""
    painted = np.zeros_like(classes)
    h, w = classes.shape
    for c in np.unique(classes):
        inside = ndi.distance_transform_edt(ndi.binary_erosion(classes == c, border_value=0)) > keep_away
        ys, xs = np.nonzero(inside)
        for i in rng.choice(len(ys), min(per_class, len(ys)), replace=False):
            y, x = ys[i], xs[i]
            angle = rng.uniform(0, np.pi)
            for t in np.linspace(-20, 20, 41):
                py = min(max(round(y + t * np.sin(angle)), 0), h - 1)
                px = min(max(round(x + t * np.cos(angle)), 0), w - 1)
                sl = (slice(max(py - 2, 0), py + 3), slice(max(px - 2, 0), px + 3))
                painted[sl] = np.where(inside[sl], c, painted[sl])
    return painted


SUMMARY: dict[str, list[float]] = defaultdict(list)
"""Figure name -> its value for each seed, for the summary."""


def fit(images, labels, args, background="unpainted"):
    extra = {"background_tiles": args.background_tiles} if args.background_tiles and background == "unpainted" else {}
    tiles = extract_tiles(images, labels, tile_size=args.tile, background=background, seed=args.seed, **extra)
    kw = {"prior": args.prior} if args.prior else {}
    if args.hard_negatives and background == "unpainted":  # refused (and meaningless) without a background
        kw["hard_negative_rounds"] = args.hard_negatives
    if args.samples_per_epoch:
        kw["samples_per_epoch"] = args.samples_per_epoch
    if args.val_fraction is not None:
        kw["val_fraction"] = args.val_fraction
    if args.normalise:
        kw["normalise"] = args.normalise
    if args.augment is not None:
        kw["augment"] = tuple(args.augment) if args.augment != ["none"] else False
    t0, c0 = time.perf_counter(), time.process_time()
    model = train(tiles, preset=args.preset, epochs=args.epochs, device="cpu", seed=args.seed, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    SUMMARY["train seconds"].append(wall)
    print(f"  (train: {wall:.1f} s wall, {cpu:.1f} s CPU over {torch.get_num_threads()} threads, "
          f"{model.record['epochs_run']} epochs)")
    return model, wall, tiles


def fmt(x) -> str:
    return "  n/a" if x is None or not np.isfinite(x) else f"{x:5.3f}"


def run_defects(name: str, args) -> None:
    train_img, train_truth, test_img, test_truth = defect_case(name, args.seed, args.size, args.more_paint)
    model, seconds, tiles = fit(train_img, train_truth, args)
    ev = evaluate(model, test_img, test_truth, device="cpu", **PREDICT)
    thr = {k: v for k, v in ev.suggested_thresholds.items() if v is not None and k != "background"}
    ev_t = evaluate(model, test_img, test_truth, device="cpu", threshold=thr, **PREDICT) if thr else ev
    cut = {k: v for k, v in ev.suggested_min_scores.items() if v is not None}
    ev_m = evaluate(model, test_img, test_truth, device="cpu", min_score=cut, **PREDICT)
    ev_all = evaluate(model, test_img, test_truth, device="cpu", min_score=0, **PREDICT)
    own = model.min_score or {}
    counts = ", ".join(f"{k} {v}" for k, v in tiles.counts().items())
    print(f"\n[defects-{name}] train {seconds:.1f} s  tiles: {counts}  test objects: "
          f"{dict(zip(ev.object_class_names, ev.truth_objects.tolist()))}  the model's min score: "
          + ", ".join(f"{k} {v:.3f}" for k, v in own.items()))
    print("  class       cell P  cell R  cell F1 | obj P   obj R   obj F1  (pred) | thr    obj P   obj R   obj F1 "
          "| min score  obj F1 | every region: obj P  obj R  obj F1")
    for j, k in enumerate(ev.object_classes):
        n = ev.class_names[k]
        t = thr.get(n)
        SUMMARY[f"defects-{name} {n} object F1"].append(float(ev.object_f1[j]))
        SUMMARY[f"defects-{name} {n} object F1 at threshold"].append(float(ev_t.object_f1[j]))
        SUMMARY[f"defects-{name} {n} object F1 at min score"].append(float(ev_m.object_f1[j]))
        SUMMARY[f"defects-{name} {n} object F1, every region"].append(float(ev_all.object_f1[j]))
        print(f"  {n:10s}  {fmt(ev.precision[k])}   {fmt(ev.recall[k])}   {fmt(ev.f1[k])}  | "
              f"{fmt(ev.object_precision[j])}   {fmt(ev.object_recall[j])}   {fmt(ev.object_f1[j])}  "
              f"({int(ev.predicted_objects[j]):4d}) | {fmt(t)}  {fmt(ev_t.object_precision[j])}   "
              f"{fmt(ev_t.object_recall[j])}   {fmt(ev_t.object_f1[j])} | {fmt(cut.get(n))}      "
              f"{fmt(ev_m.object_f1[j])} | {fmt(ev_all.object_precision[j])}  {fmt(ev_all.object_recall[j])}  "
              f"{fmt(ev_all.object_f1[j])}")


def run_mosaic(args) -> None:
    import skimage.data

    rng = np.random.default_rng(args.seed)
    tex = [getattr(skimage.data, n)() for n in SURFACES]
    h = tex[0].shape[0] // 2
    train_img, train_cls = mosaic([t[:h] for t in tex], rng)
    test_img, test_cls = mosaic([t[h:] for t in tex], rng)
    painted = strokes(train_cls, rng, per_class=3, keep_away=8)
    model, seconds, tiles = fit(train_img, painted, args, background="none")
    # judge only cells farther than T/2 from a region border
    edge = np.zeros(test_cls.shape, bool)
    edge[:-1] |= test_cls[:-1] != test_cls[1:]
    edge[:, :-1] |= test_cls[:, :-1] != test_cls[:, 1:]
    interior = ndi.distance_transform_edt(~edge) > args.tile // 2
    truth = np.where(interior, test_cls, 0).astype(np.uint8)
    ev = evaluate(model, test_img, truth, unlabelled="ignore", device="cpu", **PREDICT)
    full = evaluate(model, test_img, test_cls, unlabelled="ignore", device="cpu", **PREDICT)
    SUMMARY["mosaic cell accuracy away from borders"].append(float(ev.accuracy))
    print(f"\n[mosaic] train {seconds:.1f} s  tiles: {tiles.counts()}")
    print(f"  cell accuracy away from borders {ev.accuracy:.4f} ({ev.cells} cells); everywhere {full.accuracy:.4f}; "
          "recall per texture " + ", ".join(f"{n} {fmt(r)}" for n, r in zip(ev.class_names, ev.recall)))


def run_demo(args) -> None:
    painting = {"painted_fraction": args.painted_fraction} if args.painted_fraction is not None else {}
    a = sample_surface((512, 512), seed=args.seed, **painting)
    b = sample_surface((512, 512), seed=args.seed + 1)
    model, seconds, tiles = fit(a.image, a.labels, args)
    cmap = predict(model, b.image, device="cpu", **PREDICT)
    classes = np.asarray(cmap.classes)
    s = cmap.step
    centre = b.truth[s // 2 :: s, s // 2 :: s][: classes.shape[0], : classes.shape[1]]
    ev = evaluate(model, b.image, b.truth, device="cpu", **PREDICT)
    ev_all = evaluate(model, b.image, b.truth, device="cpu", min_score=0, **PREDICT)
    print(f"\n[demo] train {seconds:.1f} s  tiles: {tiles.counts()}")
    for j, k in enumerate(ev.object_classes):
        v = ev.class_values[k]
        pred, true = int((classes == v).sum()), int((centre == v).sum())
        SUMMARY[f"demo {ev.class_names[k]} object F1"].append(float(ev.object_f1[j]))
        SUMMARY[f"demo {ev.class_names[k]} object F1 at min score"].append(float(ev.best_object_f1[j]))
        SUMMARY[f"demo {ev.class_names[k]} object F1, every region"].append(float(ev_all.object_f1[j]))
        SUMMARY[f"demo {ev.class_names[k]} map area / truth"].append(pred / max(true, 1))
        print(f"  {ev.class_names[k]:10s} map area {pred:5d} cells / truth {true:5d} cells = {pred / max(true, 1):4.2f}x;"
              f" object P {fmt(ev.object_precision[j])} R {fmt(ev.object_recall[j])} F1 {fmt(ev.object_f1[j])};"
              f" at suggested min score {fmt(ev.suggested_min_scores[ev.class_names[k]])}:"
              f" F1 {fmt(ev.best_object_f1[j])}; every region F1 {fmt(ev_all.object_f1[j])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=[*SURFACES, "mosaic", "demo"])
    p.add_argument("--size", type=int, default=None,
                   help="defect cases as in the issue: a SIZE² training surface, a (2·SIZE)² test surface, "
                        "40 pits and 40 scratches per 1024² (default: the photographs' halves)")
    p.add_argument("--more-paint", type=int, default=1, metavar="K",
                   help="with --size: train on a (K·SIZE)² surface with K² times the painted defects, same test "
                        "surface (what more painting buys)")
    p.add_argument("--painted-fraction", type=float, default=None,
                   help="share of the demo sample's defects that its painting covers (default: the sample's)")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--preset", default="medium")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--prior", choices=["tiles", "balanced"], default=None, help="default: the library's")
    p.add_argument("--background-tiles", type=int, default=None, help="default: the library's (cover the surface)")
    p.add_argument("--hard-negatives", type=int, default=0)
    p.add_argument("--samples-per-epoch", type=int, default=None, help="default: the library's")
    p.add_argument("--val-fraction", type=float, default=None, help="default: the library's")
    p.add_argument("--tta", action="store_true", help="predict with test-time augmentation")
    p.add_argument("--normalise", choices=["dataset", "image"], default=None, help="default: the library's")
    p.add_argument("--augment", nargs="+", default=None, help="augmentation names, or 'none'")
    args = p.parse_args()
    if args.more_paint != 1 and (args.size is None or args.more_paint < 1):
        p.error("--more-paint needs --size and a whole number K >= 1")
    PREDICT["tta"] = args.tta
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} torch threads, preset {args.preset}, T={args.tile}, epochs {args.epochs}, "
          f"prior {args.prior or 'default'}, hard negatives {args.hard_negatives}, augment {args.augment or 'default'}, "
          f"background tiles {args.background_tiles or 'default'}, "
          f"samples per epoch {args.samples_per_epoch or 'default'}, "
          f"val fraction {'default' if args.val_fraction is None else args.val_fraction}, "
          f"tta {args.tta}, normalise {args.normalise or 'default'}, seeds {args.seeds}, "
          "defect surfaces "
          + (f"{args.more_paint * args.size}² train, {2 * args.size}² test" if args.size else "halves"))
    t0 = time.perf_counter()
    for seed in args.seeds:
        args.seed = seed
        print(f"\n=== seed {seed}")
        for case in args.cases:
            if case in SURFACES:
                run_defects(case, args)
            elif case == "mosaic":
                run_mosaic(args)
            elif case == "demo":
                run_demo(args)
            else:
                raise SystemExit(f"unknown case {case!r}")
    print(f"\nsummary over seeds {args.seeds}: mean, min (each seed)")
    for name, values in SUMMARY.items():
        print(f"  {name:48s} {np.mean(values):7.3f} {np.min(values):7.3f}   ({', '.join(f'{v:.3f}' for v in values)})")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
