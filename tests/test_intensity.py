"""An image on another intensity scale than the training images warns, in Python and on the command line."""

import warnings

import numpy as np
import pytest

from napari_tilemap import IntensityWarning, open_map, predict
from napari_tilemap.cli import main


def _intensity_warnings(model, image) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict(model, image, device="cpu")
    return [str(w.message) for w in caught if issubclass(w.category, IntensityWarning)]


@pytest.fixture
def surface():
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(100, 40, (96, 80)), 0, 255).astype(np.uint8)  # the random model's mean and spread


def test_an_image_saved_at_another_bit_depth_or_scale_warns_and_names_the_fix(random_model, surface):
    model = random_model("small", 32, 1)
    for image in (surface.astype(np.uint16) * 257, surface / 255.0):
        (message,) = _intensity_warnings(model, image)
        assert "far from those the model was trained on (mean 100, spread 40)" in message
        assert "16-bit for 8-bit, 0-1 for 0-255" in message


def test_other_lighting_and_uniform_areas_do_not_warn(random_model, surface):
    model = random_model("small", 32, 1)
    for image in (surface, (surface * 0.6).astype(np.uint8), np.clip(surface.astype(int) + 60, 0, 255),
                  np.full_like(surface, 110), np.zeros_like(surface),  # uniform: an empty field of a batch
                  np.random.default_rng(1).poisson(4, surface.shape).astype(np.uint8)):  # a nearly empty dark one
        assert _intensity_warnings(model, image) == []


def test_each_channel_is_judged_and_named(random_model, surface):
    model = random_model("small", 32, 3)
    rgb = np.stack([surface, surface, surface.astype(np.float64) / 255], -1)
    (message,) = _intensity_warnings(model, rgb)
    assert "in channel 2" in message


def test_the_cli_prints_one_warning_line_and_still_writes_the_map(tmp_path, random_model, surface, capsys):
    model = random_model("small", 32, 1)
    model.save(tmp_path / "m.tilemap")
    np.save(tmp_path / "img.npy", surface.astype(np.uint16) * 257)
    assert main(["predict", str(tmp_path / "m.tilemap"), str(tmp_path / "img.npy"), "-o", str(tmp_path / "m.zarr"),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if "warning:" in line]
    assert len(lines) == 1 and lines[0].startswith("tilemap predict: warning: ")
    assert "far from those the model was trained on" in lines[0]
    assert open_map(tmp_path / "m.zarr").complete  # a warning, not a refusal: the user may know better


def test_training_images_on_two_scales_warn_and_name_both(sample):
    from napari_tilemap import extract_tiles

    image, labels = sample.image, sample.labels
    with pytest.warns(IntensityWarning, match="training images 0 and 1 are on different intensity scales") as said:
        extract_tiles([image, image.astype(np.uint16) * 257], [labels, labels], tile_size=32)
    assert "convert it like the others" in str(said[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntensityWarning)  # other lighting, one image: no warning
        extract_tiles([image, (image * 0.6).astype(np.uint8)], [labels, labels], tile_size=32)
        extract_tiles([image, (image // 6 + 3).astype(np.uint8)], [labels, labels], tile_size=32)  # dim, flat
        extract_tiles(image / 255.0, labels, tile_size=32)
