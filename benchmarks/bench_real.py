"""Accuracy on real photographs with pixel masks: the library's defaults against a random-forest peer.

Each data set is split once into training and test images (the authors' split where the folder has one,
else every other image of each kind: by name, within the images of each dominant defect class and within
the defect-free ones). The training images are painted exactly as their masks say (every defect, as
``background="unpainted"`` declares), a model is trained with the library's defaults, and each test image
is predicted with the defaults (the model's min score). Beside it the peer: a per-pixel random forest
(scikit-learn) on scikit-image's multiscale features, trained on the same pixels and judged on the same
cell grid (a cell's probability is the mean over its S×S block).

Figures, per defect class, on the map's cell grid (cell (i, j) = the S×S block at (i·S, j·S); the truth of a
cell is whether its block holds the class):
- object recall, precision and F1: connected regions (8-connected cells) matched one to one with the truth's
  within one cell (``napari_tilemap.analysis._objects.match_objects``, as ``evaluate`` does);
- cell F1 ±1: a predicted cell is right when a truth cell of its class lies within one cell, a truth cell is
  found when a predicted cell lies within one cell;
- per image: how many defective and how many defect-free images get a defect region (flag rates), and the
  balanced accuracy of that flag, where the set has defect-free images;
- train and predict seconds.

Layouts of DATASET_DIR:
- CrackForest (``image/NNN.jpg`` and ``groundTruth/NNN.mat``; a .mat's ``Segmentation`` value 2 is crack,
  values 1, 3 and 4 are taken as background): one class, ``crack``.
- flat: ``images/STEM.{png,jpg,jpeg,bmp,tif,tiff}`` and ``masks/STEM.png`` (0 = no defect, 1..K = the
  defect class; an image without a mask is defect-free), optional ``classes.txt`` ("value name" lines)
  and ``split.txt`` ("STEM train" / "STEM test" lines).

Data is never downloaded: name the folders (``prepare_bsdata.py`` lays out the BSData subset of the README). Needs scikit-learn for the peer (``pip install scikit-learn``),
or pass ``--no-peer``.

Run:
    python benchmarks/bench_real.py DATASET_DIR [DATASET_DIR ...] [--seeds 0 1 2] [--threads 2]
        [--no-peer] [--max-images N] [--epochs N] [--tile 64] [--preset medium]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_tilemap import extract_tiles, predict, train
from napari_tilemap.analysis._objects import match_objects

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class DataSet:
    name: str
    class_names: dict[int, str]
    train: list[tuple[str, np.ndarray, np.ndarray]]
    """(stem, image, mask) of each training image."""
    test: list[tuple[str, np.ndarray, np.ndarray]]


def read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and np.all(image == image[..., :1]):
        image = image[..., 0]  # greyscale stored as RGB
    return image


def load(folder: Path, max_images: int | None) -> DataSet:
    """The data set in ``folder`` (either layout), split into training and test images."""
    if (folder / "groundTruth").is_dir():
        import scipy.io

        pairs = []
        for mat in sorted((folder / "groundTruth").glob("*.mat")):
            seg = scipy.io.loadmat(mat)["groundTruth"][0, 0]["Segmentation"]
            image = read_image(folder / "image" / f"{mat.stem}.jpg")
            pairs.append((mat.stem, image, (seg == 2).astype(np.uint8)))
        names, split = {1: "crack"}, {}
    elif (folder / "images").is_dir():
        pairs = []
        for path in sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image = read_image(path)
            mask_path = folder / "masks" / f"{path.stem}.png"
            mask = read_image(mask_path).astype(np.uint8) if mask_path.exists() else np.zeros(image.shape[:2], np.uint8)
            if mask.ndim == 3:
                mask = mask[..., 0]
            pairs.append((path.stem, image, mask))
        names = {}
        if (folder / "classes.txt").exists():
            for line in (folder / "classes.txt").read_text().splitlines():
                if line.strip():
                    value, name = line.split(maxsplit=1)
                    names[int(value)] = name.strip()
        split = {}
        if (folder / "split.txt").exists():
            split = dict(line.split() for line in (folder / "split.txt").read_text().splitlines() if line.strip())
    else:
        raise SystemExit(f"{folder}: neither a CrackForest folder (groundTruth/*.mat) nor a flat one (images/, masks/)")
    values = sorted(set().union(*(np.unique(m).tolist() for _, _, m in pairs)) - {0})
    names = {v: names.get(v, f"class {v}") for v in values}
    if split:
        train_set = [p for p in pairs if split.get(p[0]) == "train"]
        test_set = [p for p in pairs if split.get(p[0]) == "test"]
    else:  # every other image of each kind: the dominant defect class, or defect-free
        kinds = defaultdict(list)
        for p in pairs:
            v, n = np.unique(p[2][p[2] > 0], return_counts=True)
            kinds[int(v[np.argmax(n)]) if len(v) else 0].append(p)
        train_set = [p for k in sorted(kinds) for p in kinds[k][0::2]]
        test_set = [p for k in sorted(kinds) for p in kinds[k][1::2]]
    if max_images:
        train_set, test_set = train_set[:max_images], test_set[:max_images]
    return DataSet(folder.name, names, train_set, test_set)


def block_presence(mask: np.ndarray, value: int, step: int, shape: tuple[int, int]) -> np.ndarray:
    """(H', W') bool: cells whose S×S block holds ``value``."""
    h, w = shape
    padded = np.zeros((h * step, w * step), bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask == value
    return padded.reshape(h, step, w, step).any(axis=(1, 3))


def block_mean(prob: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """(K, H', W'): the mean of each (K, Y, X) probability over each cell's S×S block (edge blocks: their pixels)."""
    k, (h, w) = len(prob), shape
    total = np.zeros((k, h * step, w * step))
    count = np.zeros((h * step, w * step))
    total[:, : prob.shape[1], : prob.shape[2]] = prob
    count[: prob.shape[1], : prob.shape[2]] = 1
    return (total.reshape(k, h, step, w, step).sum(axis=(2, 4))
            / np.maximum(count.reshape(h, step, w, step).sum(axis=(1, 3)), 1))


class Tally:
    """Counts over the test images of one method."""

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.n = defaultdict(int)

    def add(self, cells: np.ndarray, scores: dict[int, np.ndarray], mask: np.ndarray, step: int) -> None:
        """``cells``: (H', W') predicted label value per cell (0 background, 255 unknown); ``scores``: value ->
        (H', W') score of that class."""
        flagged = bool(np.isin(cells, self.values).any())
        defective = bool((mask > 0).any())
        self.n[("images", defective)] += 1
        self.n[("flagged", defective)] += flagged
        near = np.ones((3, 3), bool)
        for v in self.values:
            pred = cells == v
            truth = block_presence(mask, v, step, cells.shape)
            m = match_objects(pred, scores[v], truth, distance=1)
            self.n[("obj tp", v)] += int(m.matched.sum())
            self.n[("obj pred", v)] += int(m.predicted_objects)
            self.n[("obj true", v)] += int(m.truth_objects)
            self.n[("cell pred", v)] += int(pred.sum())
            self.n[("cell pred right", v)] += int((pred & ndi.binary_dilation(truth, near)).sum())
            self.n[("cell true", v)] += int(truth.sum())
            self.n[("cell true found", v)] += int((truth & ndi.binary_dilation(pred, near)).sum())

    def figures(self) -> dict[str, float]:
        out = {}
        for v in self.values:
            n = self.n
            r = n[("obj tp", v)] / max(n[("obj true", v)], 1)
            p = n[("obj tp", v)] / n[("obj pred", v)] if n[("obj pred", v)] else float("nan")
            cp = n[("cell pred right", v)] / n[("cell pred", v)] if n[("cell pred", v)] else float("nan")
            cr = n[("cell true found", v)] / max(n[("cell true", v)], 1)
            out[f"{v} object recall"], out[f"{v} object precision"] = r, p
            out[f"{v} object F1"] = f1(p, r)
            out[f"{v} cell F1 ±1"] = f1(cp, cr)
        bad, good = self.n[("images", True)], self.n[("images", False)]
        out["defective images flagged"] = self.n[("flagged", True)] / bad if bad else float("nan")
        out["defect-free images flagged"] = self.n[("flagged", False)] / good if good else float("nan")
        if bad and good:
            out["image balanced accuracy"] = (out["defective images flagged"] + 1 - out["defect-free images flagged"]) / 2
        return out


def f1(p: float, r: float) -> float:
    if not np.isfinite(p) or p + r == 0:
        return 0.0 if np.isfinite(p) else float("nan")
    return 2 * p * r / (p + r)


def run_tilemap(data: DataSet, args, seed: int) -> tuple[dict[str, float], int]:
    fit_set, held = data.train, []
    if args.calibrate:  # experiment: every k-th training image of each kind chooses the min scores instead
        k = round(1 / args.calibrate)
        kinds = defaultdict(list)
        for p in data.train:
            kinds[bool((p[2] > 0).any())].append(p)
        fit_set = [p for group in kinds.values() for i, p in enumerate(group) if i % k != k - 1]
        held = [p for group in kinds.values() for i, p in enumerate(group) if i % k == k - 1]
    images = [im for _, im, _ in fit_set]
    masks = [m for _, _, m in fit_set]
    t0 = time.perf_counter()
    bg = {"background_tiles": args.background_tiles} if args.background_tiles else {}
    if args.blob_spacing:
        dense_blob_centres(args.blob_spacing)
    tiles = extract_tiles(images, masks, tile_size=args.tile, class_names=data.class_names, seed=seed, **bg)
    extra = {"normalise": args.normalise} if args.normalise else {}
    for name in ("hard_negative_rounds", "samples_per_epoch"):
        if getattr(args, name):
            extra[name] = getattr(args, name)
    model = train(tiles, preset=args.preset, epochs=args.epochs, device="cpu", seed=seed, **extra)
    min_score = "model"
    if args.cell_prior:
        model, min_score = with_cell_prior(model, masks), None
    if held:
        min_score = held_out_min_score(model, [(im, m) for _, im, m in held], data)
    train_s = time.perf_counter() - t0
    final = model.record.get("final") or {}
    print(f"  tilemap: {len(tiles)} tiles {tiles.counts()}, {model.record['epochs_run']} epochs, kept epoch "
          f"{final.get('epoch')} (val accuracy {final.get('val_accuracy')}), model's min score "
          + ", ".join(f"{k} {v:.3f}" for k, v in (model.min_score or {}).items())
          + (f", held-out min score {min_score}" if held else ""))
    tally = Tally(list(data.class_names))
    t0 = time.perf_counter()
    for _, image, mask in data.test:
        cmap = predict(model, image, device="cpu", workers=1, min_score=min_score, tta=args.tta)
        scores = np.asarray(cmap.scores)
        values = list(cmap.class_table.values)
        tally.add(np.asarray(cmap.classes), {v: scores[values.index(v)] for v in data.class_names}, mask, model.step)
    predict_s = time.perf_counter() - t0
    return {**tally.figures(), "train seconds": train_s, "predict seconds": predict_s}, model.step


def dense_blob_centres(spacing: int):
    """Experiment: painted tiles on every blob pixel nearest each cell of a ``spacing`` grid, small blobs too."""
    from napari_tilemap.learn import _tiles

    def centres(mask, t, cap, rng):
        from skimage.measure import label, regionprops

        for region in regionprops(label(mask, connectivity=2)):
            coords = region.coords
            cell = coords // spacing
            d = np.sum((coords - (cell * spacing + spacing / 2)) ** 2, axis=1)
            key = cell[:, 0] * (mask.shape[1] // spacing + 1) + cell[:, 1]
            order = np.lexsort((d, key))
            first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
            yield coords[first].astype(np.int64)

    _tiles._blob_centres = centres


def with_cell_prior(model, masks):
    """Experiment: the model with its prior set to each class's share of the training images' map cells (a cell
    is a class when its S×S block holds it) instead of its share of the tiles."""
    import torch

    from napari_tilemap.learn._training import logit_adjustment, without_prior

    values = list(model.class_table.values)
    counts = np.zeros(len(values))
    for mask in masks:
        shape = (-(-mask.shape[0] // model.step), -(-mask.shape[1] // model.step))
        seen = np.zeros(shape, bool)
        for i, v in enumerate(values[1:], 1):
            cells = block_presence(mask, v, model.step, shape) & ~seen
            counts[i] += cells.sum()
            seen |= cells
        counts[0] += (~seen).sum()
    out = without_prior(model)
    adj = logit_adjustment(counts, out.activation, "tiles", True)
    with torch.no_grad():
        out.network[-1].bias += torch.as_tensor(adj, dtype=out.network[-1].bias.dtype)
    print(f"  cell prior: cells {dict(zip(model.class_table.names, counts.astype(int).tolist()))}")
    return out


def held_out_min_score(model, pairs, data: DataSet) -> dict[str, float]:
    """Per class, the min peak score with the best object F1 on ``pairs`` of (image, mask) training never saw."""
    from napari_tilemap.analysis._evaluate import best_cut
    from napari_tilemap.analysis._objects import ObjectMatch

    values = list(model.class_table.values)
    found = defaultdict(list)
    for image, mask in pairs:
        cmap = predict(model, image, device="cpu", workers=1, min_score=None)
        best, scores = np.asarray(cmap.best_classes), np.asarray(cmap.scores)
        for v in data.class_names:
            truth = block_presence(mask, v, model.step, best.shape)
            found[v].append(match_objects(best == v, scores[values.index(v)], truth, distance=1))
    cuts = {}
    for v, matches in found.items():
        cut, _ = best_cut(ObjectMatch.concatenate(matches))
        cuts[data.class_names[v]] = 0.0 if cut is None else cut
    return cuts


def features(image: np.ndarray) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    image = image.astype(np.float32) / max(float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0, 1.0)
    return multiscale_basic_features(image, channel_axis=-1 if image.ndim == 3 else None, sigma_min=1, sigma_max=16)


def run_peer(data: DataSet, args, seed: int, step: int) -> dict[str, float]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    xs, ys = [], []
    per_class = args.peer_pixels // max(len(data.train), 1)
    for _, image, mask in data.train:
        f = features(image)
        for v in [0, *data.class_names]:
            where = np.flatnonzero(mask.ravel() == v)
            pick = rng.choice(where, min(len(where), per_class), replace=False) if len(where) else where
            xs.append(f.reshape(-1, f.shape[-1])[pick])
            ys.append(np.full(len(pick), v))
    forest = RandomForestClassifier(n_estimators=50, max_depth=16, n_jobs=args.threads, random_state=seed,
                                    class_weight="balanced")
    forest.fit(np.concatenate(xs), np.concatenate(ys))
    train_s = time.perf_counter() - t0
    tally = Tally(list(data.class_names))
    t0 = time.perf_counter()
    for _, image, mask in data.test:
        f = features(image)
        prob = forest.predict_proba(f.reshape(-1, f.shape[-1])).T.reshape(-1, *image.shape[:2])
        shape = (-(-image.shape[0] // step), -(-image.shape[1] // step))
        cell = block_mean(prob, step, shape)
        cells = np.asarray(forest.classes_)[cell.argmax(0)]
        tally.add(cells, {v: cell[list(forest.classes_).index(v)] for v in data.class_names}, mask, step)
    predict_s = time.perf_counter() - t0
    return {**tally.figures(), "train seconds": train_s, "predict seconds": predict_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", type=Path, metavar="DATASET_DIR")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-peer", action="store_true", help="skip the random-forest peer")
    p.add_argument("--peer-pixels", type=int, default=200_000, help="training pixels per class of the peer, in all")
    p.add_argument("--max-images", type=int, default=None, help="use at most N training and N test images")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--preset", default="medium")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--calibrate", type=float, default=None, metavar="F",
                   help="experiment: hold out a share F of the training images to choose each class's min score")
    p.add_argument("--tta", action="store_true", help="predict with test-time augmentation")
    p.add_argument("--blob-spacing", type=int, default=None,
                   help="experiment: painted tiles every SPACING px over every blob (default: the library's)")
    p.add_argument("--cell-prior", action="store_true",
                   help="experiment: prior from the share of map cells of each class, no min score")
    p.add_argument("--background-tiles", type=int, default=None, help="default: the library's")
    p.add_argument("--hard-negative-rounds", type=int, default=0)
    p.add_argument("--samples-per-epoch", type=int, default=None, help="default: the library's")
    p.add_argument("--normalise", choices=["dataset", "image"], default=None, help="default: the library's")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    summary: dict[tuple, list[float]] = defaultdict(list)
    names: dict[str, dict[int, str]] = {}
    for folder in args.datasets:
        data = load(folder, args.max_images)
        names[data.name] = data.class_names
        def kind(s): return sum(bool((m > 0).any()) == s for _, _, m in data.train), sum(bool((m > 0).any()) == s for _, _, m in data.test)
        print(f"\n##### {data.name}: classes {data.class_names}; train {len(data.train)} images "
              f"({kind(True)[0]} defective), test {len(data.test)} ({kind(True)[1]} defective)")
        for seed in args.seeds:
            print(f"=== {data.name}, seed {seed}")
            ours, step = run_tilemap(data, args, seed)
            rows = {"tilemap": ours}
            if not args.no_peer:
                rows["random forest"] = run_peer(data, args, seed, step)
            for method, figs in rows.items():
                for key, value in figs.items():
                    summary[(data.name, method, key)].append(value)
                print(f"  {method}: " + "; ".join(f"{_label(k, data)} {v:.3f}" for k, v in figs.items()))
    print(f"\nsummary over seeds {args.seeds}: mean, min (each seed)")
    for (name, method, key), values in summary.items():
        label = _label(key, DataSet(name, names[name], [], []))
        if not np.isfinite(values).any():
            continue
        print(f"  {name:14s} {method:14s} {label:36s} {np.nanmean(values):7.3f} {np.nanmin(values):7.3f}   "
              f"({', '.join(f'{v:.3f}' for v in values)})")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


def _label(key: str, data: DataSet) -> str:
    head, _, rest = key.partition(" ")
    return f"{data.class_names.get(int(head), 'class ' + head)} {rest}" if head.isdigit() else key


if __name__ == "__main__":
    main()
