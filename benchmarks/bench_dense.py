"""Dense map vs classifying tiles one batch at a time, on the same model and image.

Prints the time of each method, their ratio, and Mpx/s; then the dense map with test-time
augmentation (every orientation of each tile averaged). Run:
    python benchmarks/bench_dense.py [--size 1024] [--preset medium] [--tile 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_tilemap import ClassTable, predict
from napari_tilemap.learn._model import TileClassifier
from napari_tilemap.learn._networks import architecture


def per_patch(model: TileClassifier, image: np.ndarray, batch: int) -> np.ndarray:
    """The method most tools use: cut every tile of the map and classify the tiles in batches."""
    t, s = model.tile_size, model.step
    halo = (t - s) // 2
    h, w = image.shape
    rows, cols = -(-h // s), -(-w // s)
    padded = np.pad(image, ((halo, halo + rows * s - h), (halo, halo + cols * s - w)), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (t, t))[::s, ::s][:rows, :cols]
    flat = windows.reshape(-1, t, t)
    out = [model.classify_tiles(flat[i : i + batch], batch_size=batch) for i in range(0, len(flat), batch)]
    return np.concatenate(out).reshape(rows, cols, -1).transpose(2, 0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--preset", default="medium")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    arch = architecture(a.preset, a.tile, 1, 3)
    model = TileClassifier.create(arch, ClassTable.from_values([1, 2]), [128.0], [40.0])
    model.network.eval()
    image = np.random.default_rng(0).integers(0, 255, (a.size, a.size)).astype(np.uint8)
    mpx = a.size * a.size / 1e6

    predict(model, image[:256, :256], device="cpu")  # warm-up
    t0 = time.perf_counter()
    dense = predict(model, image, device="cpu").scores
    t_dense = time.perf_counter() - t0
    t0 = time.perf_counter()
    patches = per_patch(model, image, a.batch)
    t_patch = time.perf_counter() - t0
    err = float(np.abs(dense - patches).max())
    print(f"image {a.size}x{a.size} ({mpx:.2f} Mpx), preset {a.preset}, T={a.tile}, S={model.step}, "
          f"{torch.get_num_threads()} torch threads, {dense.shape[1] * dense.shape[2]} tiles")
    print(f"dense map      : {t_dense:8.2f} s  {mpx / t_dense:8.2f} Mpx/s")
    print(f"per-tile ({a.batch}/batch): {t_patch:8.2f} s  {mpx / t_patch:8.2f} Mpx/s")
    print(f"speed-up       : {t_patch / t_dense:8.1f}x   (max |difference| {err:.2e})")
    t0 = time.perf_counter()
    predict(model, image, device="cpu", tta=True)  # a model that records no augmentation: all eight orientations
    t_tta = time.perf_counter() - t0
    print(f"dense, 8-way test-time augmentation: {t_tta:8.2f} s  {mpx / t_tta:8.2f} Mpx/s  ({t_tta / t_dense:.1f}x)")


if __name__ == "__main__":
    main()
