"""Friction of a first real run of the command line (issue #30): warnings, messages and batch progress."""

import gc
import re
import warnings

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from napari_tilemap import IntensityWarning, load_model
from napari_tilemap._cli_progress import EpochProgress, duration
from napari_tilemap.cli import _class_names_of, for_the_user, main
from napari_tilemap.io._sources import open_image

LONG_FLOAT = re.compile(r"\d\.\d{4,}")  # a number with more than 3 decimals


def _painting(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 96x96 uint8 image with two painted classes, 1 and 2, each in two places."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (96, 96)).astype(np.uint8)
    labels = np.zeros((96, 96), np.uint8)
    for value, (y, x) in [(1, (10, 10)), (1, (60, 60)), (2, (10, 60)), (2, (60, 10))]:
        image[y : y + 14, x : x + 14] = 200 if value == 1 else 20
        labels[y : y + 14, x : x + 14] = value
    return image, labels


@pytest.fixture
def painted_pairs(tmp_path) -> list[str]:
    """IMAGE LABELS file pairs as a user has them: PNG, JPEG and TIFF images, PNG and TIFF labels."""
    pairs = []
    for i, (image_suffix, labels_suffix) in enumerate([(".png", ".png"), (".jpg", ".png"), (".tif", ".tif")]):
        image, labels = _painting(i)
        paths = tmp_path / f"img{i}{image_suffix}", tmp_path / f"lab{i}{labels_suffix}"
        for path, array in zip(paths, (image, labels)):
            if path.suffix == ".tif":
                tifffile.imwrite(path, array)
            else:
                imsave(path, array, check_contrast=False)
        pairs += [str(p) for p in paths]
    return pairs


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".ome.tif", ".npy"])
def test_reading_an_image_file_leaves_no_file_open(tmp_path, suffix):
    path = tmp_path / f"image{suffix}"
    image = np.arange(64 * 80 * 2, dtype=np.uint16).reshape(2, 64, 80) % 251
    if suffix == ".ome.tif":  # channel-first, read through an axis view
        tifffile.imwrite(path, image.astype(np.uint8), metadata={"axes": "CYX"}, photometric="minisblack")
    elif suffix in (".tif", ".npy"):
        (tifffile.imwrite if suffix == ".tif" else np.save)(path, image[0].astype(np.uint8))
    else:
        imsave(path, image[0].astype(np.uint8), check_contrast=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        source = open_image(path)
        whole = np.asarray(source.array)
        source.read((0, 8), (0, 8))
        source.fingerprint()
        del source
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert whole.shape == ((64, 80, 2) if suffix == ".ome.tif" else (64, 80))


def test_a_tiff_read_from_many_threads_closes_its_file_after(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    image = np.random.default_rng(0).integers(0, 255, (256, 256)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "tiled.tif", image, tile=(32, 32), compression="zlib")
    source = open_image(tmp_path / "tiled.tif")
    windows = [((r, r + 40), (c, c + 40)) for r in range(0, 216, 24) for c in range(0, 216, 24)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda w: source.read(*w), windows))
        del source
        gc.collect()
    for ((r0, r1), (c0, c1)), window in zip(windows, got):
        np.testing.assert_array_equal(window[..., 0], image[r0:r1, c0:c1])
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_only_warnings_meant_for_the_user_are_shown(monkeypatch):
    import napari_tilemap.learn._split as split
    import torch

    monkeypatch.delenv("TILEMAP_DEBUG", raising=False)
    assert for_the_user(UserWarning, split.__file__)
    assert for_the_user(IntensityWarning, "/somewhere/else.py")  # its own category, wherever it is attributed
    assert not for_the_user(ResourceWarning, split.__file__)
    assert not for_the_user(DeprecationWarning, split.__file__)
    assert not for_the_user(UserWarning, torch.__file__)
    monkeypatch.setenv("TILEMAP_DEBUG", "1")
    assert for_the_user(ResourceWarning, torch.__file__)


def test_train_on_image_files_prints_no_python_warnings(tmp_path, painted_pairs, capsys, monkeypatch):
    epoch = EpochProgress.epoch

    def epoch_and_a_leak(self, report):  # a file some library left open, collected during training
        warnings.warn("unclosed file <_io.BufferedReader name='elsewhere.png'>", ResourceWarning)
        epoch(self, report)

    monkeypatch.setattr(EpochProgress, "epoch", epoch_and_a_leak)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as python -W always: nothing hidden before the CLI's own printer
        assert main(["train", *painted_pairs, "-o", str(tmp_path / "m.tilemap"), "--preset", "small",
                     "--tile-size", "24", "--epochs", "1", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "ResourceWarning" not in err and "unclosed file" not in err, err


def test_train_says_predict_applies_the_min_score_by_default(tmp_path, painted_pairs, capsys):
    from napari_tilemap.cli import _metrics_line

    assert main(["train", *painted_pairs[:2], "-o", str(tmp_path / "m.tilemap"), "--preset", "small",
                 "--tile-size", "24", "--epochs", "1", "--device", "cpu"]) == 0
    capsys.readouterr()
    model = load_model(tmp_path / "m.tilemap")
    model.record["prior"]["min_score"] = {model.class_table.names[1]: 0.7}
    line = next(s for s in _metrics_line(model).splitlines() if s.startswith("suggested min score"))
    assert line == (f"suggested min score: {model.class_table.names[1]}=0.700 (tilemap predict and evaluate apply "
                    "it by default; --min-score none turns it off)")
    assert "pass --min-score model" not in line


def test_batch_predict_prints_one_short_line_per_image(tmp_path, random_model, capsys):
    random_model("small", 24, 1).save(tmp_path / "m.tilemap")
    rng = np.random.default_rng(0)
    images = []
    for name in ("a", "b", "c"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 255, (80, 96)).astype(np.uint8))
        images.append(str(tmp_path / f"{name}.npy"))
    assert main(["predict", str(tmp_path / "m.tilemap"), *images, "-o", str(tmp_path / "maps"), "--device", "cpu",
                 "--chunk", "32", "--threshold", "0.41234567", "--min-score", "class 1=0.61234567"]) == 0
    said = capsys.readouterr()
    lines = said.out.splitlines()
    assert len(lines) == 3, lines
    for k, (line, name) in enumerate(zip(lines, ("a.npy", "b.npy", "c.npy")), 1):
        assert line.startswith(f"[{k}/3] {name}: ") and "cells unknown" in line, line
        assert re.search(r"\(\d+ s(, ~\d+ s left| in all)\)$", line), line
    assert "every map: threshold 0.412, min score class 1=0.612" in said.err
    assert not [line for line in said.err.splitlines() if line.startswith("predict ")]  # no block lines per image
    assert not LONG_FLOAT.search(said.out + said.err), said

    # one image: its short summary, rounded the same way
    assert main(["predict", str(tmp_path / "m.tilemap"), images[0], "-o", str(tmp_path / "one.zarr"), "--device",
                 "cpu", "--min-score", "class 1=0.61234567"]) == 0
    said = capsys.readouterr()
    assert "min score class 1=0.612: " in said.out and not LONG_FLOAT.search(said.out + said.err), said


def test_durations_are_short():
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == ["0 s", "42 s", "3 min 05 s", "2 h 07 min"]


def test_class_names_from_the_command_line(tmp_path, painted_pairs, capsys):
    base = ["train", *painted_pairs[:4], "--preset", "small", "--tile-size", "24", "--epochs", "1", "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "m.tilemap"), "--class-names", "1=hole, 2=crack"]) == 0
    assert load_model(tmp_path / "m.tilemap").class_table.names == ("background", "hole", "crack")
    labels = [np.array([[0, 2], [5, 0]])]
    assert _class_names_of(("hole", "crack"), labels, "unpainted") == {2: "hole", 5: "crack"}
    assert _class_names_of({5: "crack"}, labels, "none") == {5: "crack"}


@pytest.mark.parametrize(("names", "match"), [
    ("1=hole,3=crack", "--class-names names value(s) 3, which no labels file paints (painted: 1, 2)"),
    ("1=hole,crack", "mixes VALUE=NAME pairs and plain names"),
    ("1=hole,two=crack", "'two=crack' is not VALUE=NAME"),
    ("1=hole,2=hole", "'hole' names two classes"),
    ("hole", "--class-names gives 1 name(s) but the labels paint 2 value(s) (1, 2)"),
    ("1=background", "'background' would name two classes"),
])
def test_bad_class_names_fail_in_one_line(tmp_path, painted_pairs, capsys, names, match):
    out = tmp_path / "m.tilemap"
    assert main(["train", *painted_pairs[:2], "-o", str(out), "--device", "cpu", "--class-names", names]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tilemap train: error:") and match in err[0], err
    assert not out.exists()
