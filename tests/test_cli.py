import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_tilemap import ClassificationMap, load_model, open_map, predict
from napari_tilemap.cli import main


def test_demo_writes_model_map_and_overlay(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--epochs", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "validation accuracy" in printed.out
    assert "epoch 1/2" in printed.err  # the progress bar goes to stderr
    assert "defects are painted, so the prior is 'balanced'" in printed.err
    assert "predict the sample" in printed.err and "[[" not in printed.err  # named, not an array's repr
    model = load_model(out / "model.tilemap")
    assert model.record["prior"]["mode"] == "balanced"  # the sample paints only some of its defects
    cmap = open_map(out / "map.zarr")
    assert cmap.complete and cmap.class_table == model.class_table
    from skimage.io import imread

    picture = imread(out / "overlay.png")
    assert picture.shape == (*cmap.geometry.image_shape, 3)


@pytest.fixture
def painted_files(tmp_path, sample):
    image, labels = tmp_path / "surface.tif", tmp_path / "labels.tif"
    tifffile.imwrite(image, sample.image)
    tifffile.imwrite(labels, sample.labels)
    return image, labels


def test_train_then_predict_from_files(tmp_path, painted_files, sample, capsys):
    image, labels = painted_files
    model_path, map_path = tmp_path / "m.tilemap", tmp_path / "map.zarr"
    args = ["train", str(image), str(labels), "-o", str(model_path), "--tile-size", "24", "--preset", "small",
            "--epochs", "1", "--device", "cpu", "--seed", "3", "--normalise", "image", "--max-time", "600"]
    assert main(args) == 0
    model = load_model(model_path)
    assert model.record["seed"] == 3 and model.per_image == (1.0, 99.0)  # each image by its own levels
    assert model.record["parameters"]["max_time"] == 600 and not model.record["timed_out"]
    printed = capsys.readouterr().out
    assert "validation confusion matrix (tiles):" in printed
    table = printed.split("validation confusion matrix (tiles):\n")[1].splitlines()[1 : 1 + len(model.class_table)]
    counts = [[int(v) for v in row.split()[-len(model.class_table):]] for row in table]
    assert counts == model.record["final"]["confusion"]
    cut = ",".join(f"{n}={v:.3f}" for n, v in model.min_score.items())
    assert (f"suggested min score: {cut} (tilemap predict and evaluate apply it by default; --min-score none "
            "turns it off)") in printed
    assert main(["predict", str(model_path), str(image), "-o", str(map_path), "--device", "cpu"]) == 0
    # by default the map gets the min score training suggested: weak regions are unknown, whole
    said = capsys.readouterr()
    assert f"min score from the model: {cut}" in said.err and "wrote" in said.out
    cmap = open_map(map_path)
    assert cmap.complete and cmap.shape == (128, 128)
    table = model.class_table
    assert cmap.min_score == {0: 0.0, **{table.values[table.names.index(n)]: v for n, v in model.min_score.items()}}
    expected = cmap.without_threshold().with_min_score(model.min_score)
    np.testing.assert_array_equal(np.asarray(cmap.classes), np.asarray(expected.classes))
    # 'none' keeps every region: a fresh store without a min score
    for raw_path in (tmp_path / "raw.zarr", map_path):  # a fresh store, and the one with the model's rule
        assert main(["predict", str(model_path), str(image), "-o", str(raw_path), "--device", "cpu",
                     "--min-score", "none"]) == 0
        raw = open_map(raw_path)
        assert raw.min_score is None and not capsys.readouterr().err.count("min score from the model")
        np.testing.assert_array_equal(np.asarray(raw.classes), np.asarray(cmap.best_classes))
    truth = tmp_path / "truth.tif"
    tifffile.imwrite(truth, sample.truth)
    assert main(["evaluate", str(model_path), str(image), str(truth), "--device", "cpu"]) == 0
    said = capsys.readouterr()
    assert f"min score from the model: {cut}" in said.err
    applied = ", ".join(f"{n} {v:g}" for n, v in model.min_score.items())
    assert f"regions with a peak score below min score left out: {applied}" in said.out


def _fails_with_one_line(args, capsys, match):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_defect_free_images_train_as_background_without_a_labels_file(tmp_path, capsys):
    from napari_tilemap import sample_surface

    small = sample_surface((256, 256), seed=0)
    image, labels, clean = tmp_path / "surface.tif", tmp_path / "labels.tif", tmp_path / "clean.tif"
    tifffile.imwrite(image, small.image)
    tifffile.imwrite(labels, small.labels)
    tifffile.imwrite(clean, np.full((160, 200), 110, np.uint8))
    base = ["train", str(image), str(labels), "--tile-size", "24", "--preset", "small", "--epochs", "1",
            "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "a.tilemap")]) == 0
    without = capsys.readouterr().err
    assert main([*base, "--clean", str(clean), "-o", str(tmp_path / "b.tilemap")]) == 0
    with_clean = capsys.readouterr().err

    def background(err: str) -> int:
        return int(err.split("tiles: {'background': ")[1].split(",")[0])

    assert background(with_clean) > background(without)  # the clean image's surface is background too
    _fails_with_one_line([*base, "--background", "none", "--clean", str(clean), "-o", str(tmp_path / "c.tilemap")],
                         capsys, "--clean needs --background unpainted")


def test_bad_input_prints_one_line_and_exits_2(tmp_path, painted_files, capsys, random_model):
    image, labels = painted_files
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.zeros((100, 100), np.uint8))
    _fails_with_one_line(["train", str(image), str(wrong), "-o", str(tmp_path / "m.tilemap")], capsys, "shape")
    _fails_with_one_line(["train", str(image), "-o", str(tmp_path / "m.tilemap")], capsys, "pairs")
    _fails_with_one_line(["train", str(image), str(labels), "-o", str(tmp_path / "m.tilemap"), "--max-time", "0"],
                         capsys, "max_time is a number of seconds above 0")
    _fails_with_one_line(["predict", str(tmp_path / "none.tilemap"), str(image), "-o", str(tmp_path / "x.zarr")],
                         capsys, "does not exist")
    model = tmp_path / "m.tilemap"
    random_model("small", 24, 1).save(model)
    existing = tmp_path / "old.zarr"
    existing.mkdir()
    (existing / "keep.txt").write_text("earlier result")
    for extra in ([], ["--overwrite"]):
        _fails_with_one_line(["predict", str(model), str(image), "-o", str(existing), *extra], capsys,
                             "is not a napari-tilemap map store; refusing to replace it")
    assert (existing / "keep.txt").read_text() == "earlier result"
    _fails_with_one_line(["predict", str(model), str(tmp_path / "nope.tif"), "-o", str(tmp_path / "y.zarr")],
                         capsys, "does not exist")
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8))
    _fails_with_one_line(["predict", str(model), str(rgb), "-o", str(tmp_path / "z.zarr")], capsys,
                         "expects 1 channel(s) but the image has 3")
    assert not (tmp_path / "y.zarr").exists() and not (tmp_path / "z.zarr").exists()
    assert not (tmp_path / "m2.tilemap").exists()


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "napari_tilemap.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
    result = subprocess.run([sys.executable, "-m", "napari_tilemap.cli", "train"], capture_output=True, text=True)
    assert result.returncode == 2


def test_evaluate_prints_the_figures_and_writes_a_report(tmp_path, sample, random_model, capsys):
    from napari_tilemap import evaluate

    model = random_model("small", 32, 1)
    model.save(tmp_path / "m.tilemap")
    image, truth = sample.image[:200, :240], sample.truth[:200, :240]
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    args = ["evaluate", str(tmp_path / "m.tilemap"), str(tmp_path / "img.tif"), str(tmp_path / "truth.tif"),
            "--threshold", "0.4", "--device", "cpu", "--chunk", "64"]
    assert main([*args, "--report", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    expected = evaluate(model, image, truth, threshold=0.4, device="cpu")
    assert expected.summary() in printed
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "confusion.png", "evaluation.json", "precision_recall.png", "scores.png"]
    _fails_with_one_line(args[:3], capsys, "pairs")
    _fails_with_one_line([*args[:4], "--threshold", "1.5"], capsys, "threshold")
    assert main([*args[:4], "--device", "cpu", "--min-score", "class 2=0.6"]) == 0
    assert evaluate(model, image, truth, min_score={"class 2": 0.6}, device="cpu").summary() in capsys.readouterr().out
    _fails_with_one_line([*args[:4], "--min-score", "1.5"], capsys, "min_score is 1.5")
    _fails_with_one_line([*args[:4], "--report", str(tmp_path / "no" / "dir")], capsys, "does not exist")


def test_predict_with_a_threshold_records_unknown_cells_beside_the_best_classes(tmp_path, random_model, capsys):
    model = random_model("small", 32, 1)
    model.save(tmp_path / "m.tilemap")
    image = np.random.default_rng(0).integers(0, 255, (160, 150)).astype(np.uint8)
    np.save(tmp_path / "img.npy", image)
    base = ["predict", str(tmp_path / "m.tilemap"), str(tmp_path / "img.npy"), "-o", str(tmp_path / "m.zarr"),
            "--device", "cpu"]
    assert main([*base, "--threshold", "class 1=0.36,class 2=0.4"]) == 0
    cmap = open_map(tmp_path / "m.zarr")
    scores, best = np.asarray(cmap.scores), np.asarray(cmap.best_classes)
    limit = np.array([0.0, 0.36, 0.4])[scores.argmax(0)]
    expected = np.where(scores.max(0) >= limit, best, 255)
    np.testing.assert_array_equal(np.asarray(cmap.classes), expected)
    assert f"{int((expected == 255).sum())} of {expected.size} cells unknown" in capsys.readouterr().out
    _fails_with_one_line([*base, "--threshold", "pit=high"], capsys, "is not a threshold")
    _fails_with_one_line([*base, "--threshold", "1.5"], capsys, "threshold")

    # a min score makes weak regions unknown on top of the threshold, recorded in the store
    assert main([*base, "--threshold", "0.4", "--min-score", "class 2=0.6"]) == 0
    cmap = open_map(tmp_path / "m.zarr")
    assert cmap.threshold == 0.4 and cmap.min_score == {0: 0.0, 1: 0.0, 2: 0.6}
    memory = ClassificationMap(scores, best, cmap.geometry, cmap.class_table)
    expected = np.asarray(memory.with_threshold(0.4).with_min_score({"class 2": 0.6}).classes)
    np.testing.assert_array_equal(np.asarray(cmap.classes), expected)
    assert "threshold 0.4, min score" in capsys.readouterr().out
    out = tmp_path / "fresh.zarr"  # a bad min score fails before any work: no store is left behind
    _fails_with_one_line([*base[:4], str(out), "--min-score", "crack=0.5"], capsys, "min_score key 'crack'")
    assert not out.exists()

    # test-time augmentation: the same scores as predict(tta=True), refused for a model that never turned
    assert main([*base[:4], str(out), "--device", "cpu", "--tta"]) == 0
    np.testing.assert_allclose(open_map(out).scores[...], predict(model, image, device="cpu", tta=True).scores,
                               atol=1e-6)
    capsys.readouterr()
    model.record = {"augment": ["shift"]}
    model.save(tmp_path / "upright.tilemap")
    _fails_with_one_line(["predict", str(tmp_path / "upright.tilemap"), *base[2:4], str(tmp_path / "no.zarr"),
                          "--tta"], capsys, "without 'flip' and 'rot90'")
    assert not (tmp_path / "no.zarr").exists()
