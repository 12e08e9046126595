"""Where the time of a prediction block goes: network GFLOP/s against the machine's ceilings.

For one work block (default 1024 px a side plus its halo) this prints

* the machine's fp32 matrix-multiply GFLOP/s and memory copy GB/s (the two ceilings);
* the whole network's achieved GFLOP/s, with 1 torch thread (what each of the local
  block workers gets) and with all threads, and the Mpx/s that alone would allow;
* every layer's FLOPs, time, GFLOP/s, arithmetic intensity and share of the time, so it is
  visible which layers are compute-bound and which are bound by memory traffic;
* the block's read (zarr decode + float32), network and write (scores + classes) times,
  which is what bounds the end-to-end rate of ``bench_outofcore.py``.

    python benchmarks/bench_flops.py                      # medium preset, T = 64
    python benchmarks/bench_flops.py --preset large --tile 96 --block 2048
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(threads: int, n: int = 2048) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_of(lambda: a @ b, 5) / 1e9


def copy_gbs() -> float:
    src = np.ones(64 * 2**20, np.float32)  # 256 MB, far beyond the caches
    dst = np.empty_like(src)
    return 2 * src.nbytes / best_of(lambda: np.copyto(dst, src), 3) / 1e9


def make_model(preset: str, tile: int, channels: int):
    from napari_tilemap import ClassTable
    from napari_tilemap.learn._model import TileClassifier
    from napari_tilemap.learn._networks import architecture

    torch.manual_seed(0)
    arch = architecture(preset, tile, channels, 3)
    model = TileClassifier.create(arch, ClassTable.from_values([1, 2]), [128.0] * channels, [40.0] * channels)
    model.network.eval()
    return model


def layer_table(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[dict]:
    """Time each layer of the (normalise, fused network) sequence on ``x``."""
    layers = [net[0], *net[1]]
    rows = []
    with torch.inference_mode():
        for layer in layers:
            y = layer(x)
            seconds = best_of(lambda layer=layer, x=x: layer(x), repeats)
            flops = 0
            if isinstance(layer, torch.nn.Conv2d):
                k = layer.kernel_size[0] * layer.kernel_size[1]
                flops = 2 * y.shape[2] * y.shape[3] * layer.in_channels * layer.out_channels * k
            traffic = (x.numel() + y.numel()) * 4
            name = type(layer).__name__.lstrip("_")
            if isinstance(layer, torch.nn.Conv2d):
                name = f"Conv {layer.in_channels}->{layer.out_channels} {layer.kernel_size[0]}x{layer.kernel_size[1]}"
            rows.append({"name": name, "out": tuple(y.shape[1:]), "flops": flops, "seconds": seconds,
                         "intensity": flops / traffic})
            x = y
    return rows


def io_times(model, block: int, repeats: int) -> tuple[float, float]:
    """Seconds to read one block window from a zarr image and to write its map chunks."""
    import zarr

    from napari_tilemap.io._sources import open_image
    from napari_tilemap.maps._dense import read_window, window_indices
    from napari_tilemap.maps._mapstore import create_store

    side = 2 * block + model.tile_size
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        z = zarr.open_array(f"{tmp}/img.zarr", mode="w", shape=(side, side), chunks=(1024, 1024), dtype="uint8")
        z[:] = (rng.random((side, side)) * 60 + np.linspace(0, 180, side)[:, None]).astype(np.uint8)
        src = open_image(f"{tmp}/img.zarr")
        geometry = model.geometry(src.shape)
        cells = block // model.step
        rows, cols = (cells // 2, cells // 2 + cells), (cells // 2, cells // 2 + cells)  # an interior block
        read = best_of(lambda: read_window(src, *window_indices(geometry, rows, cols)), repeats)
        group = create_store(f"{tmp}/map.zarr", geometry, model.class_table, chunk=cells)
        k = len(model.class_table)
        scores = np.random.default_rng(1).random((k, cells, cells)).astype(np.float32)
        values = np.asarray(model.class_table.values, np.uint8)

        def write():
            group["scores"][:, :cells, :cells] = scores
            group["classes"][:cells, :cells] = values[scores.argmax(0)]
            group["done"][0, 0] = 1

        return read, best_of(write, repeats)


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="medium")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--block", type=int, default=1024, help="work block side in pixels (as predict's block_size)")
    p.add_argument("--threads", type=int, default=cores)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    from napari_tilemap.learn._networks import flops_per_output
    from napari_tilemap.maps._dense import dense_scores

    model = make_model(a.preset, a.tile, a.channels)
    cells = a.block // model.step
    side = (cells - 1) * model.step + model.tile_size
    window = np.random.default_rng(0).integers(0, 255, (side, side, a.channels)).astype(np.float32)
    net = model.inference_network("cpu")
    flops = flops_per_output(model.arch, cells, cells)
    px = (cells * model.step) ** 2

    mm1, mmn, bw = matmul_gflops(1), matmul_gflops(a.threads), copy_gbs()
    print(f"machine: fp32 matmul {mm1:.0f} GFLOP/s on 1 thread, {mmn:.0f} GFLOP/s on {a.threads}; "
          f"memory copy {bw:.1f} GB/s; balance {mmn / bw:.0f} FLOP/byte")
    print(f"block: {a.preset} preset, T={model.tile_size}, S={model.step}, {cells}x{cells} cells = "
          f"{px / 1e6:.2f} Mpx from a {side}x{side} window; {flops / 1e9:.1f} GFLOP "
          f"({flops / px:.0f} FLOP/px)")
    rates = {}
    for threads in sorted({1, a.threads}):
        torch.set_num_threads(threads)
        seconds = best_of(lambda: dense_scores(net, window), a.repeats)
        rates[threads] = seconds
        mm = mm1 if threads == 1 else mmn
        print(f"network, {threads} thread(s): {seconds * 1e3:7.0f} ms/block, {flops / seconds / 1e9:6.1f} GFLOP/s "
              f"({100 * flops / seconds / 1e9 / mm:.0f}% of matmul), {px / seconds / 1e6:5.2f} Mpx/s")
    workers = max(1, min(2, cores))  # predict's local default
    per_worker = max(1, cores // workers)
    torch.set_num_threads(per_worker)
    t_worker = rates.get(per_worker) or best_of(lambda: dense_scores(net, window), a.repeats)
    with ThreadPoolExecutor(workers) as pool:
        def together():
            list(pool.map(lambda _: dense_scores(net, window), range(workers)))

        t_together = best_of(together, a.repeats)
    print(f"predict's local layout, {workers} block workers x {per_worker} torch thread(s) at once: "
          f"{workers * px / t_together / 1e6:.2f} Mpx/s, {workers * flops / t_together / 1e9:.1f} GFLOP/s "
          f"({100 * workers * flops / t_together / 1e9 / mmn:.0f}% of matmul; "
          f"{workers * t_worker / t_together:.2f}x the rate of one worker alone)")

    torch.set_num_threads(a.threads)
    x = torch.from_numpy(window).permute(2, 0, 1)[None]
    rows = layer_table(net, x, a.repeats)
    total = sum(r["seconds"] for r in rows)
    print(f"\nper layer ({a.threads} threads; intensity = FLOP per byte of input+output activations):")
    print(f"  {'layer':<22}{'output':>18}{'GFLOP':>8}{'ms':>8}{'GFLOP/s':>9}{'FLOP/B':>8}{'time':>7}")
    for r in rows:
        rate = f"{r['flops'] / r['seconds'] / 1e9:9.1f}" if r["flops"] else f"{'':>9}"
        print(f"  {r['name']:<22}{r['out']!s:>18}{r['flops'] / 1e9:8.2f}{r['seconds'] * 1e3:8.1f}{rate}"
              f"{r['intensity']:8.1f}{100 * r['seconds'] / total:6.0f}%")

    torch.set_num_threads(per_worker)
    read, write = io_times(model, a.block, a.repeats)
    t = read + t_together + write
    print(f"\none block per worker, {workers} workers at once: read {read * 1e3:.0f} ms ({100 * read / t:.0f}%), "
          f"network {t_together * 1e3:.0f} ms ({100 * t_together / t:.0f}%), write {write * 1e3:.0f} ms "
          f"({100 * write / t:.0f}%): at most {workers * px / t / 1e6:.2f} Mpx/s end to end")


if __name__ == "__main__":
    main()
