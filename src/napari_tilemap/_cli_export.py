"""``tilemap export``: regions, statistics and exports of map stores, one or a batch.

One map store and ``-o FILE`` writes FILE; several stores (or a folder of them) and
``-o FOLDER`` write one file per map, named after its store, and ``statistics.csv`` for
the batch. The statistics table is printed in both cases. Outputs are written under a
temporary name and renamed into place when complete; existing outputs are replaced only
with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._errors import MapStoreError, TilemapInputError

STATISTICS_FILE = "statistics.csv"
"""The batch statistics table written into an export folder."""


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to the ``tilemap`` command's ``subparsers``."""
    from .analysis._export import FORMATS
    from .cli import MIN_SCORE_HELP, THRESHOLD_HELP, _subparser, _threshold_arg

    x = _subparser(subparsers, "export",
                   "regions, per-class statistics and exports of map stores (GeoJSON, COCO, CSV, label TIFF)")
    x.description += (f" One map: -o is the file to write. Several maps or a folder of them: -o is a folder that "
                      f"gets one file per map and {STATISTICS_FILE}; the statistics are printed either way.")
    x.add_argument("maps", nargs="+", metavar="MAP", help="map store (MAP.zarr) or a folder of map stores")
    x.add_argument("-o", "--out", required=True,
                   help="file to write for one map; a folder for several (one file per map and "
                        f"{STATISTICS_FILE})")
    x.add_argument("--format", choices=list(FORMATS), default=None,
                   help="geojson: QuPath-ready polygons; coco: COCO JSON with RLE masks; csv: the regions table; "
                        "tiff: full-resolution label image (default: from the extension of --out, "
                        ".geojson/.json/.csv/.tif; geojson for a folder)")
    x.add_argument("--threshold", type=_threshold_arg, default=None, metavar="T", help=THRESHOLD_HELP)
    x.add_argument("--min-area", type=float, default=0.0, metavar="PIXELS",
                   help="leave out regions smaller than this many image pixels (default: %(default)s)")
    x.add_argument("--min-score", type=_threshold_arg, default=None, metavar="S", help=MIN_SCORE_HELP)
    x.add_argument("--pixel-size", type=float, default=None, metavar="SIZE",
                   help="physical size of an image pixel; adds area_physical to tables (default: none)")
    x.add_argument("--unit", default="", help="unit of --pixel-size, e.g. um (default: none)")
    x.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse them)")
    x.set_defaults(run=run_export)
    return x


def run_export(args) -> int:
    """Handler of ``tilemap export``: write the exports, print the statistics; 0 on success.

    Bad input raises :class:`TilemapInputError` (the command's ``main`` prints one line and
    exits with 2).
    """
    from .analysis._export import (
        FORMATS,
        atomic_output,
        check_output,
        format_for,
        write_csv,
    )
    from .analysis._regions import apply_rules
    from .analysis._stats import format_table, statistics
    from .maps._mapstore import open_map

    stores, batch = _map_stores(args.maps)
    out = Path(args.out)
    options = {"min_area": args.min_area}
    extra = {"pixel_size": args.pixel_size, "unit": args.unit or None}
    # the threshold and min score once per map: its exports and statistics then read the same classes
    maps = [apply_rules(_open_complete(p, open_map), args.threshold, args.min_score) for p in stores]
    if not batch:
        fmt = format_for(out, args.format)
        check_output(out, args.overwrite)
        maps[0].export(out, fmt, overwrite=args.overwrite, **options, **extra)
        print(format_table(statistics(maps[0], **options, **extra)))
        print(f"wrote {out}")
        return 0
    fmt = args.format or "geojson"
    names = [Path(p).name.removesuffix(".zarr") + FORMATS[fmt] for p in stores]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise TilemapInputError(f"two map stores would both be exported as {duplicate!r}; export them separately")
    folder = _batch_folder(out, [*names, STATISTICS_FILE], args.overwrite)
    try:
        for i, (cmap, name) in enumerate(zip(maps, names)):
            cmap.export(folder / name, fmt, overwrite=args.overwrite, **options, **extra)
            if folder == out:
                args.kept = f"{i + 1} of {len(names)} files in {out} were written completely"
        table = statistics(maps, **options, **extra)
        with atomic_output(folder / STATISTICS_FILE) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            write_csv(table, f)
    except BaseException:
        if folder != out:
            _remove_batch(folder, names)
        raise
    if folder != out:
        os.replace(folder, out)
    print(format_table(table))
    print(f"wrote {len(names)} {fmt} files and {STATISTICS_FILE} to {out}")
    return 0


def _map_stores(specs: list[str]) -> tuple[list[Path], bool]:
    """The map stores named (a store, or a folder holding stores) and whether it is a batch."""
    from .maps._mapstore import is_map_store

    stores: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if is_map_store(path):
            stores.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_dir() and is_map_store(p))
            if not found:
                raise MapStoreError(f"{spec!r} is neither a napari-tilemap map store nor a folder holding any")
            stores += found
        else:
            what = "does not exist" if not path.exists() else "is not a napari-tilemap map store"
            raise MapStoreError(f"{spec!r} {what}; give map stores (MAP.zarr) written by tilemap predict")
    return stores, len(specs) > 1 or not is_map_store(Path(specs[0]))


def _open_complete(path: Path, open_map):
    cmap = open_map(path)
    if not cmap.complete:
        raise MapStoreError(f"{str(path)!r} is not complete; run the same prediction again to finish it first")
    return cmap


def _batch_folder(out: Path, names: list[str], overwrite: bool) -> Path:
    """Where a batch is written: ``out`` itself if it exists, else a temporary folder renamed at the end."""
    from .analysis._export import ExportError, partial_path

    if out.exists() and not out.is_dir():
        raise ExportError(f"{str(out)!r} is a file; exporting several maps needs a folder for -o")
    if not out.absolute().parent.is_dir():
        raise ExportError(f"the folder of the output {str(out)!r} does not exist; create it first")
    if out.is_dir():
        taken = [n for n in names if (out / n).exists()]
        if taken and not overwrite:
            raise ExportError(f"{str(out / taken[0])!r} already exists; choose another folder or pass overwrite=True")
        return out
    work = partial_path(out)
    if work.exists():  # a batch killed before its rename
        _remove_batch(work, names)
    work.mkdir()
    return work


def _remove_batch(folder: Path, names: list[str]) -> None:
    """Remove a temporary batch folder holding only what a batch writes (its files, their partial names)."""
    from .analysis._export import ExportError, partial_path

    ours = {n for name in [*names, STATISTICS_FILE] for n in (name, partial_path(Path(name)).name)}
    strangers = [p.name for p in folder.iterdir() if p.name not in ours or not p.is_file()]
    if strangers:
        raise ExportError(f"{str(folder)!r} is in the way and holds {strangers[0]!r}; move it away")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
