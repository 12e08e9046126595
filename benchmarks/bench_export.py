"""Time and peak memory of exporting the map of a >= 1 Gpx image to each format.

Builds a synthetic map store with the store-writing helpers that ``predict`` uses (no
network runs): by default a 32768 × 32768 px image at step 16, so a 2048 × 2048 map of 3
classes with blob-like regions. Each measurement runs in a fresh process, so its peak
resident memory (VmHWM) is its own; ``base`` is the peak of a process that only imports
the library and opens the store. A second run of each task under tracemalloc gives the
peak of the memory the task itself allocated (NumPy arrays included).

Usage::

    python benchmarks/bench_export.py [--size 32768] [--step 16] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TASKS = ("base", "regions", "statistics", "geojson", "coco", "csv", "tiff", "suggest", "min_score", "write_min_score")
"""``min_score``: the regions with a min peak score of 0.9 (the map's rule, then the table);
``write_min_score``: that rule written into the store (last: it changes the store); ``suggest``: the
20 most uncertain cells, spaced a tile apart."""


def build_store(path: Path, size: int, step: int, chunk: int = 64, seed: int = 0) -> None:
    """A complete 3-class map store of a ``size`` × ``size`` image, written chunk row by chunk row."""
    from scipy import ndimage as ndi

    from napari_tilemap import ClassTable
    from napari_tilemap._geometry import MapGeometry
    from napari_tilemap.maps._mapstore import create_store, update_attrs
    from napari_tilemap.maps._pyramid import build_pyramid

    table = ClassTable.from_values([1, 2], names=["pit", "scratch"])
    geometry = MapGeometry(4 * step, step, (size, size))
    h, w = geometry.map_shape
    group = create_store(path, geometry, table, chunk=chunk)
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 6)
    field /= field.std()
    for r in range(0, h, chunk):
        f = field[r : r + chunk]
        raw = np.stack([np.zeros_like(f), 3 * (f - 1.2), 3 * (-f - 1.5)])
        scores = np.exp(raw) / np.exp(raw).sum(0)
        group["scores"][:, r : r + chunk] = scores.astype(np.float32)
        group["classes"][r : r + chunk] = np.asarray(table.values, np.uint8)[scores.argmax(0)]
    group["done"][...] = 1
    levels = build_pyramid(group)
    update_attrs(group, complete=True, pyramid_levels=levels)


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM (Linux, reset by exec) or ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(task: str, store: Path, folder: Path, traced: bool = False) -> dict:
    """Run one task in this process: seconds and peak resident memory (MiB), or with ``traced``
    the peak of memory allocated during the task (tracemalloc; NumPy arrays included)."""
    import tracemalloc

    from napari_tilemap import open_map
    from napari_tilemap.analysis._export import FORMATS

    cmap = open_map(store)
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    info = ""
    if task == "regions":
        info = f"{len(cmap.regions()['region'])} regions"
    elif task == "suggest":
        from napari_tilemap import suggest

        info = f"{len(suggest(cmap, n=20))} suggestions"
    elif task == "min_score":
        info = f"{len(cmap.regions(min_score=0.9)['region'])} regions reach 0.9"
    elif task == "write_min_score":
        from napari_tilemap.maps._threshold import clear_threshold, write_threshold

        written = write_threshold(store, min_score=0.9)
        info = f"{int((np.asarray(written.classes[:512]) == 255).sum())} unknown cells in the first 512 rows"
        if traced:
            clear_threshold(store)
    elif task == "statistics":
        cmap.statistics()
    elif task != "base":
        out = cmap.export(folder / f"export{FORMATS[task]}", task, overwrite=True)
        info = f"{out.stat().st_size / 2**20:.1f} MiB file"
    seconds = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else None
    return {"task": task, "seconds": seconds, "peak_mib": peak_rss_mib(), "traced_mib": traced_peak, "info": info}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32768, help="image side in pixels (default: %(default)s)")
    p.add_argument("--step", type=int, default=16, help="map step S (default: %(default)s)")
    p.add_argument("--folder", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--task", default=None, help=argparse.SUPPRESS)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)
    p.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.task:  # one measurement, in a child process
        print(json.dumps(measure(args.task, Path(args.store), Path(args.folder), args.traced)))
        return
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        store = folder / "map.zarr"
        t0 = time.perf_counter()
        build_store(store, args.size, args.step)
        side = -(-args.size // args.step)
        print(f"image {args.size} x {args.size} px ({args.size**2 / 1e9:.2f} Gpx), step {args.step}: "
              f"map {side} x {side} cells, store built in {time.perf_counter() - t0:.1f} s")
        print(f"{'task':<15} {'seconds':>8} {'peak RSS MiB':>13} {'traced peak MiB':>16}  notes")
        for task in TASKS:
            r, t = (_child(task, store, folder, traced) for traced in (False, True))
            print(f"{r['task']:<15} {r['seconds']:>8.2f} {r['peak_mib']:>13.0f} {t['traced_mib']:>16.1f}  {r['info']}",
                  flush=True)


def _child(task: str, store: Path, folder: Path, traced: bool) -> dict:
    cmd = [sys.executable, __file__, "--task", task, "--store", str(store), "--folder", str(folder)]
    run = subprocess.run(cmd + ["--traced"] * traced, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
