"""Out-of-core prediction, zarr to zarr: throughput, peak memory, scaling and arithmetic rate.

For each image size a zarr image is generated on disk (once, kept in --dir), then a fresh
process predicts its map into a zarr store and reports wall time and peak resident memory.
Prints Mpx/s, peak RSS, the peak-memory ratio largest/smallest, a linear fit of time
against pixels, and the network's achieved GFLOP/s next to this machine's fp32 matmul rate.

    python benchmarks/bench_outofcore.py                    # 16 Mpx, 270 Mpx, 1.07 Gpx
    python benchmarks/bench_outofcore.py --sizes 4096 8192  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_image(path: Path, side: int, chunk: int = 2048) -> None:
    """A side×side uint8 zarr image tiled from the sample surface (compressible like real data)."""
    import zarr

    from napari_tilemap import sample_surface

    if (path / "zarr.json").exists():
        return
    tile = sample_surface((2048, 2048), seed=1).image
    z = zarr.open_array(str(path), mode="w", shape=(side, side), chunks=(chunk, chunk), dtype="uint8")
    rng = np.random.default_rng(0)
    for r in range(0, side, chunk):
        for c in range(0, side, chunk):
            block = np.rot90(tile, rng.integers(4))[: min(chunk, side - r), : min(chunk, side - c)]
            z[r : r + block.shape[0], c : c + block.shape[1]] = block


def child(image: str, out: str, preset: str, tile: int, block: int, threads: int) -> None:
    """Runs in a fresh process: predict once and print a JSON line of figures."""
    import torch

    from napari_tilemap import ClassTable, predict
    from napari_tilemap.learn._model import TileClassifier
    from napari_tilemap.learn._networks import architecture, flops_per_output

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    arch = architecture(preset, tile, 1, 3)
    model = TileClassifier.create(arch, ClassTable.from_values([1, 2]), [128.0], [40.0])
    model.network.eval()
    t0 = time.perf_counter()
    cmap = predict(model, image, out=out, block_size=block, device="cpu", overwrite=True)
    seconds = time.perf_counter() - t0
    rows, cols = cmap.shape
    cells = block // arch.step
    flops = sum(
        flops_per_output(arch, min(cells, rows - r), min(cells, cols - c))
        for r in range(0, rows, cells) for c in range(0, cols, cells)
    )
    h, w = cmap.geometry.image_shape
    print(json.dumps({"pixels": h * w, "seconds": seconds, "flops": flops,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def matmul_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t0, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - t0) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768], help="image sides in pixels")
    p.add_argument("--dir", default="/tmp/tilemap-bench", help="where the images and maps go")
    p.add_argument("--preset", default="medium")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child[0], a.child[1], a.preset, a.tile, a.block, a.threads)

    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in a.sizes:
        image = root / f"image-{side}.zarr"
        t0 = time.perf_counter()
        make_image(image, side)
        made = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--child", str(image), str(root / f"map-{side}.zarr"), "--preset", a.preset,
               "--tile", str(a.tile), "--block", str(a.block), "--threads", str(a.threads)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append(result)
        print(f"{side:>6}² = {result['pixels'] / 1e6:8.1f} Mpx: {result['seconds']:8.1f} s, "
              f"{result['pixels'] / 1e6 / result['seconds']:6.2f} Mpx/s, peak RSS {result['peak_rss_mb']:7.0f} MB, "
              f"network {result['flops'] / result['seconds'] / 1e9:6.1f} GFLOP/s   (image written in {made:.0f} s)",
              flush=True)
    if len(rows) > 1:
        px = np.array([r["pixels"] for r in rows], float)
        sec = np.array([r["seconds"] for r in rows])
        slope, intercept = np.polyfit(px, sec, 1)
        pred = slope * px + intercept
        r2 = 1 - np.sum((sec - pred) ** 2) / np.sum((sec - sec.mean()) ** 2)
        print(f"peak memory largest/smallest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}x")
        print(f"time = {slope * 1e9:.2f} s/Gpx * pixels + {intercept:.1f} s   (R² = {r2:.4f})")
    mm = matmul_gflops(a.threads)
    best = max(r["flops"] / r["seconds"] / 1e9 for r in rows)
    print(f"fp32 matmul on this machine: {mm:.1f} GFLOP/s with {a.threads} threads; "
          f"network during prediction: {best:.1f} GFLOP/s ({100 * best / mm:.0f}% of matmul)")


if __name__ == "__main__":
    main()
