"""``tilemap export``: one map or a batch, statistics printed, bad input in one line with exit 2."""

import argparse
import csv
import json

import numpy as np
import pytest

from napari_tilemap.analysis import _coco
from napari_tilemap.analysis._regions import regions

from .test_regions import hand_classes, make_map, write_store


@pytest.fixture
def tilemap(monkeypatch, capsys):
    """Run ``tilemap ARGS`` through ``cli.main``; returns (status, stdout, stderr)."""
    from napari_tilemap import cli
    from napari_tilemap._cli_export import add_export_parser

    def subcommands(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    if "export" not in subcommands(cli._parser()).choices:  # until cli.py adds it itself
        original = cli._parser

        def with_export():
            parser = original()
            add_export_parser(subcommands(parser))
            return parser

        monkeypatch.setattr(cli, "_parser", with_export)

    def run(*args):
        status = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def stores(tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    a = write_store(folder / "a.zarr", make_map(hand_classes()))
    b = write_store(folder / "b.zarr", make_map(hand_classes()[:, ::-1], image_shape=(45, 53), seed=1))
    return folder, a, b


def test_one_map_to_each_format_with_its_statistics_printed(tilemap, stores, tmp_path):
    folder, a, _ = stores
    status, out, err = tilemap("export", folder / "a.zarr", "-o", tmp_path / "a.geojson", "--min-area", 20)
    assert status == 0, err
    features = json.loads((tmp_path / "a.geojson").read_text())["features"]
    assert len(features) == len(regions(a, min_area=20)["region"])
    lines = out.splitlines()
    assert lines[0].split() == ["image", "class_value", "class_name", "regions", "cells", "area_px", "area_fraction"]
    assert [line.split()[2] for line in lines[1:5]] == ["background", "pit", "scratch", "unknown"]
    assert lines[-1] == f"wrote {tmp_path / 'a.geojson'}"
    for fmt, name in (("coco", "a.json"), ("csv", "table.txt"), ("tiff", "labels.tif")):
        status, _, err = tilemap("export", folder / "a.zarr", "-o", tmp_path / name, "--format", fmt,
                                 "--threshold", "pit=0.5")
        assert status == 0, err
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "table.txt", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(regions(a, threshold={"pit": 0.5})["region"])
    status, out, err = tilemap("export", folder / "a.zarr", "-o", tmp_path / "strong.csv", "--min-score", "0.9")
    assert status == 0, err
    with open(tmp_path / "strong.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert 0 < len(rows) == len(regions(a, min_score=0.9)["region"]) < len(regions(a)["region"])
    assert all(float(r["max_score"]) >= 0.9 for r in rows)
    status, _, err = tilemap("export", folder / "a.zarr", "-o", tmp_path / "bad.csv", "--min-score", "pit=2")
    assert status == 2 and "min_score for class 'pit' (1) is 2.0, outside [0, 1]" in err
    assert not (tmp_path / "bad.csv").exists()


def test_a_folder_of_maps_gives_one_file_per_map_and_one_statistics_table(tilemap, stores, tmp_path):
    folder = stores[0]
    out = tmp_path / "exports"
    status, stdout, err = tilemap("export", folder, "-o", out, "--format", "csv", "--pixel-size", 0.5, "--unit", "um")
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.csv", "statistics.csv"]
    with open(out / "statistics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["image"] for r in rows} == {"a.zarr", "b.zarr", "(all images)"}
    batch = [r for r in rows if r["image"] == "(all images)"]
    pits = [r for r in rows if r["class_name"] == "pit"]
    assert sum(int(r["area_px"]) for r in pits if r["image"] != "(all images)") == int(
        next(r for r in batch if r["class_name"] == "pit")["area_px"])
    assert float(pits[0]["area_physical"]) == int(pits[0]["area_px"]) * 0.25 and pits[0]["unit"] == "um"
    assert "wrote 2 csv files" in stdout.splitlines()[-1]
    before = (out / "statistics.csv").read_text()
    status, _, err = tilemap("export", folder / "a.zarr", folder / "b.zarr", "-o", out)
    assert status == 2 and "statistics.csv' already exists" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.csv", "statistics.csv"]
    status, _, err = tilemap("export", folder / "a.zarr", folder / "b.zarr", "-o", out, "--overwrite", "--min-area", 1e9)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "a.geojson", "b.csv", "b.geojson", "statistics.csv"]
    assert (out / "statistics.csv").read_text() != before  # no region is that large


@pytest.mark.parametrize("case", ["not a store", "missing", "unknown format", "no format", "existing", "odd threshold",
                                  "empty folder"])
def test_bad_input_gives_one_line_and_exit_2(tilemap, stores, tmp_path, case):
    folder, _, _ = stores
    (tmp_path / "plain").mkdir()
    (tmp_path / "existing.csv").write_text("keep me")
    args = {
        "not a store": [tmp_path / "existing.csv", "-o", tmp_path / "x.csv"],
        "missing": [tmp_path / "nothing.zarr", "-o", tmp_path / "x.csv"],
        "unknown format": [folder / "a.zarr", "-o", tmp_path / "x.csv", "--format", "shp"],
        "no format": [folder / "a.zarr", "-o", tmp_path / "x.txt"],
        "existing": [folder / "a.zarr", "-o", tmp_path / "existing.csv"],
        "odd threshold": [folder / "a.zarr", "-o", tmp_path / "x.csv", "--threshold", "pit=2"],
        "empty folder": [tmp_path / "plain", "-o", tmp_path / "out"],
    }[case]
    status, out, err = tilemap("export", *args)
    assert status == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("tilemap export: error:")
    assert (tmp_path / "existing.csv").read_text() == "keep me"
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "out").exists()


def test_an_interrupted_export_leaves_no_output(tilemap, stores, tmp_path, monkeypatch):
    folder, _, _ = stores

    def broken(cmap, table, f, image):
        f.write('{"images": [')
        raise KeyboardInterrupt

    monkeypatch.setattr(_coco, "write_coco", broken)
    status, _, err = tilemap("export", folder / "a.zarr", "-o", tmp_path / "a.json")
    assert status == 130 and "interrupted" in err
    status, _, err = tilemap("export", folder, "-o", tmp_path / "batch", "--format", "coco")
    assert status == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps"]  # no file, no partial file or folder
    assert np.array_equal(sorted(p.name for p in folder.iterdir()), ["a.zarr", "b.zarr"])
