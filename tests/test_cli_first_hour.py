"""What a new user hit on a first try of the command line, each checked the way they met it."""

import argparse

import numpy as np
import pytest
import torch

from napari_tilemap import load_model, open_map
from napari_tilemap._cli_progress import EpochProgress, Steps
from napari_tilemap.cli import _parser, main


def _one_line(args, capsys, match, status=2):
    """The command fails with ``status`` and ends with one line saying ``match`` (after any progress)."""
    assert main(args) == status
    err = capsys.readouterr().err.strip().splitlines()
    said = [line for line in err if line.startswith(f"tilemap {args[0]}:")]
    assert len(said) == 1 and said[0] == err[-1] and match in said[0], err
    return said[0]


@pytest.fixture
def files(tmp_path, sample):
    np.save(tmp_path / "img.npy", sample.image[:160, :160])
    np.save(tmp_path / "lab.npy", sample.labels[:160, :160])
    return str(tmp_path / "img.npy"), str(tmp_path / "lab.npy")


def test_outputs_are_checked_before_any_image_is_read(tmp_path, capsys):
    missing = ["no-image.tif", "no-labels.tif"]  # never read: the output is refused first
    _one_line(["train", *missing, "-o", str(tmp_path / "missing" / "m.tilemap")], capsys,
              "the folder of the output")
    (tmp_path / "m.tilemap").write_bytes(b"earlier model")
    _one_line(["train", *missing, "-o", str(tmp_path / "m.tilemap")], capsys, "already exists; choose another "
              "output or pass --overwrite")
    assert (tmp_path / "m.tilemap").read_bytes() == b"earlier model"
    _one_line(["predict", "m.tilemap", "img.tif", "-o", str(tmp_path / "missing" / "x.zarr")], capsys,
              "does not exist; create it first")
    _one_line(["predict", "m.tilemap", "a.tif", "b.tif", "-o", str(tmp_path / "missing" / "maps")], capsys,
              "does not exist; create it first")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(("options", "match"), [
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--tile-size", "20"], ("below the 'medium' preset's minimum of 38; use --tile-size 38 or larger, or --preset "
                             "small")),
    (["--tile-size", "37"], "try --tile-size 38"),
    (["--tile-size", "15", "--preset", "small"], "try --tile-size 18"),
    (["--tile-size", "65"], "try --tile-size 66"),
])
def test_training_options_are_checked_before_tiles_are_cut(tmp_path, capsys, options, match):
    line = _one_line(["train", "no-image.tif", "no-labels.tif", "-o", str(tmp_path / "m.tilemap"), *options],
                     capsys, match)
    if "try --tile-size" in line:  # the advice names a size the preset accepts
        from napari_tilemap.learn._networks import architecture

        size = int(line.split("try --tile-size ")[1].split()[0])
        preset = options[options.index("--preset") + 1] if "--preset" in options else "medium"
        architecture(preset, size, 1, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_work(tmp_path, capsys):
    _one_line(["train", "no-image.tif", "no-labels.tif", "-o", str(tmp_path / "m.tilemap"), "--device", "cuda"],
              capsys, "no CUDA GPU is available")
    _one_line(["demo", "-o", str(tmp_path / "d"), "--device", "cuda"], capsys, "no CUDA GPU is available")
    assert not (tmp_path / "d").exists()


def test_demo_view_without_a_display_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    _one_line(["demo", "-o", str(tmp_path / "d"), "--view"], capsys, "--view needs a display")
    assert not (tmp_path / "d").exists()


def test_demo_refuses_to_replace_earlier_results(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "model.tilemap").write_bytes(b"an earlier demo")
    _one_line(["demo", "-o", str(out)], capsys, "already holds demo results; choose another folder or pass "
                                                "--overwrite")
    assert (out / "model.tilemap").read_bytes() == b"an earlier demo"


def test_ctrl_c_in_training_keeps_the_best_model_so_far(tmp_path, files, capsys, monkeypatch):
    out = tmp_path / "m.tilemap"
    args = ["train", *files, "-o", str(out), "--preset", "small", "--tile-size", "24", "--epochs", "3",
            "--device", "cpu"]
    epoch = EpochProgress.epoch

    def interrupt_after_first(self, report):
        epoch(self, report)
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochProgress, "epoch", interrupt_after_first)
    line = _one_line(args, capsys, "interrupted; the best model so far (epoch 1 of 1 run) was written to", 130)
    assert str(out) in line
    assert load_model(out).record["epochs_run"] == 1

    def interrupt_at_once(self, event):
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochProgress, "batch", interrupt_at_once)
    monkeypatch.setattr("napari_tilemap._cli_progress.interactive", lambda: True)
    other = tmp_path / "other.tilemap"
    _one_line([*args[:4], str(other), *args[5:]], capsys,
              "interrupted; training stopped before its first epoch ended; no model was written", 130)
    assert not other.exists()


def test_ctrl_c_in_predict_says_the_store_resumes(tmp_path, random_model, capsys, monkeypatch):
    random_model("small", 24, 1).save(tmp_path / "m.tilemap")
    np.save(tmp_path / "img.npy", np.random.default_rng(0).integers(0, 255, (160, 160)).astype(np.uint8))

    def interrupt(self, done, **postfix):
        raise KeyboardInterrupt

    monkeypatch.setattr(Steps, "update_to", interrupt)
    store = tmp_path / "map.zarr"
    _one_line(["predict", str(tmp_path / "m.tilemap"), str(tmp_path / "img.npy"), "-o", str(store), "--chunk", "64",
               "--device", "cpu"], capsys, f"interrupted; {store} keeps its finished blocks: run the same command "
                                           "again to resume", 130)
    monkeypatch.undo()
    assert main(["predict", str(tmp_path / "m.tilemap"), str(tmp_path / "img.npy"), "-o", str(store),
                 "--chunk", "64", "--device", "cpu"]) == 0
    assert open_map(store).complete


def test_messages_name_the_options_of_the_interface_in_use(tmp_path, random_model, capsys):
    from napari_tilemap import MapStoreError, predict

    a, b = random_model("small", 24, 1, seed=0), random_model("small", 24, 1, seed=1)
    a.save(tmp_path / "a.tilemap")
    image = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    np.save(tmp_path / "img.npy", image)
    predict(b, image, tmp_path / "map.zarr", device="cpu")
    with pytest.raises(MapStoreError, match=r"pass overwrite=True to replace it$"):
        predict(a, image, tmp_path / "map.zarr", device="cpu")
    line = _one_line(["predict", str(tmp_path / "a.tilemap"), str(tmp_path / "img.npy"), "-o",
                      str(tmp_path / "map.zarr"), "--device", "cpu"], capsys, "pass --overwrite to replace it")
    assert "overwrite=True" not in line


def test_progress_in_a_log_is_one_line_per_epoch(tmp_path, files, capsys):
    assert main(["train", *files, "-o", str(tmp_path / "m.tilemap"), "--preset", "small", "--tile-size", "24",
                 "--epochs", "2", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    epochs = [line for line in captured.err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "val accuracy" in epochs[0]
    # this crop has two small painted blobs of class 1: training says so exactly when it cannot judge that class
    warned = [line for line in captured.err.splitlines() if line.startswith("tilemap train: warning:")]
    unjudged = load_model(tmp_path / "m.tilemap").record["tiles"]["val"]["class 1"] < 5
    assert unjudged == any("'class 1'" in line and ("too few separate painted blobs" in line or "too few "
                                                    "validation tiles" in line) for line in warned), warned
    assert "--background none" not in captured.err  # too little evidence to blame the background mode
    assert "kept: epoch " in captured.out and "of 2 run (of 2 planned)" in captured.out
    np.save(tmp_path / "big.npy", np.zeros((400, 400), np.uint8))
    assert main(["predict", str(tmp_path / "m.tilemap"), str(tmp_path / "big.npy"), "-o", str(tmp_path / "b.zarr"),
                 "--chunk", "64", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("predict big.npy:")]
    assert 2 <= len(lines) <= 11 and lines[-1].startswith("predict big.npy: 49/49 blocks")


def test_every_option_has_help_and_shows_its_default():
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest} has no help"
            if action.option_strings and not action.required and action.default is not None \
                    and action.default is not False:  # a default of 0 is shown too
                assert f"default: {action.default}" in " ".join(text.split()), (name, action.dest)
    assert "unpainted: everything you did not paint" in commands.choices["train"].format_help()


def test_batch_predict_writes_one_store_per_image(tmp_path, random_model, capsys):
    random_model("small", 24, 1).save(tmp_path / "m.tilemap")
    rng = np.random.default_rng(0)
    for name in ("wafer1", "wafer2"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 255, (80, 96)).astype(np.uint8))
    images = [str(tmp_path / "wafer1.npy"), str(tmp_path / "wafer2.npy")]
    assert main(["predict", str(tmp_path / "m.tilemap"), *images, "-o", str(tmp_path / "maps"), "--device",
                 "cpu"]) == 0
    assert capsys.readouterr().out.count("wrote ") == 2
    for name in ("wafer1", "wafer2"):
        assert open_map(tmp_path / "maps" / f"{name}.zarr").complete
    (tmp_path / "other").mkdir()
    np.save(tmp_path / "other" / "wafer1.npy", np.zeros((80, 96), np.uint8))
    _one_line(["predict", str(tmp_path / "m.tilemap"), images[0], str(tmp_path / "other" / "wafer1.npy"), "-o",
               str(tmp_path / "maps2")], capsys, "would both write")
    assert not (tmp_path / "maps2").exists()


def test_evaluate_refuses_to_replace_a_report(tmp_path, capsys):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "evaluation.json").write_text("{}")
    _one_line(["evaluate", "m.tilemap", "img.tif", "truth.tif", "--report", str(tmp_path / "report")], capsys,
              "already holds a report; choose another folder or pass --overwrite")
    assert (tmp_path / "report" / "evaluation.json").read_text() == "{}"


def test_augmentation_and_hard_negatives_from_the_command_line(tmp_path, files, capsys):
    from napari_tilemap.cli import AUGMENT_NAMES, DEFAULT_PRIOR, PRIOR_NAMES
    from napari_tilemap.learn._augment import AUGMENTATIONS
    from napari_tilemap.learn._training import PRIORS, TrainConfig

    assert AUGMENT_NAMES == AUGMENTATIONS
    assert PRIOR_NAMES == PRIORS and DEFAULT_PRIOR == TrainConfig.prior
    base = ["train", *files, "--preset", "small", "--tile-size", "24", "--epochs", "2", "--device", "cpu"]
    _one_line([*base, "-o", str(tmp_path / "a.tilemap"), "--augment", "flip,spin"], capsys,
              "unknown augmentation(s) spin")
    _one_line([*base, "-o", str(tmp_path / "a.tilemap"), "--hard-negatives", "1", "--background", "none"], capsys,
              "--hard-negatives needs --background unpainted")
    _one_line([*base, "-o", str(tmp_path / "a.tilemap"), "--hard-negatives", "-1"], capsys,
              "hard_negative_rounds must be a whole number >= 0")
    assert not (tmp_path / "a.tilemap").exists()
    assert main([*base, "-o", str(tmp_path / "a.tilemap"), "--augment", "flip,shift", "--hard-negatives", "1"]) == 0
    record = load_model(tmp_path / "a.tilemap").record
    assert tuple(record["parameters"]["augment"]) == ("flip", "shift")
    assert record["parameters"]["hard_negative_rounds"] == 1 and len(record["hard_negatives"]) == 1
    said = capsys.readouterr()
    assert "hard negatives added per round:" in said.out
    assert "hard-negative round 1: looking for false alarms on training image 1/1" in said.err
    assert record["prior"]["mode"] == DEFAULT_PRIOR == "tiles"
    assert any(a != 0 for a in record["prior"]["logit_adjustment"])
    assert main([*base, "-o", str(tmp_path / "b.tilemap"), "--augment", "none", "--prior", "balanced"]) == 0
    record = load_model(tmp_path / "b.tilemap").record
    assert tuple(record["parameters"]["augment"]) == () and record["prior"]["mode"] == "balanced"
    assert all(a == 0 for a in record["prior"]["logit_adjustment"])
