"""The dense contract: every map cell equals the scores of its tile classified alone."""

import numpy as np
import pytest

from napari_tilemap import TilemapInputError, predict


def hand_cut_tiles(model, image):
    """Every tile of the map cut by hand (numpy symmetric padding), row-major; and the map's shape."""
    img = image if image.ndim == 3 else image[..., None]
    h, w = img.shape[:2]
    t, s = model.tile_size, model.step
    halo = (t - s) // 2
    rows, cols = -(-h // s), -(-w // s)
    padded = np.pad(img, ((halo, halo + rows * s - h), (halo, halo + cols * s - w), (0, 0)), mode="symmetric")
    return np.stack([padded[i * s : i * s + t, j * s : j * s + t] for i in range(rows) for j in range(cols)]), rows, cols


def reference_map(model, image):
    """Cut every tile of the map by hand and classify them one by one."""
    tiles, rows, cols = hand_cut_tiles(model, image)
    return model.classify_tiles(tiles).reshape(rows, cols, -1).transpose(2, 0, 1)


@pytest.mark.parametrize(
    "preset, tile, shape, block",
    [
        ("small", 32, (64, 64), 1024),
        ("small", 34, (77, 101), 40),  # sizes not divisible by S, blocks smaller than the image
        ("medium", 48, (90, 61), 64),
        ("medium", 64, (129, 200), 1024),
        ("large", 80, (97, 150), 96),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_dense_map_equals_tiles_classified_alone(random_model, preset, tile, shape, block, channels):
    model = random_model(preset, tile, channels, classes=3, seed=len(shape) + tile)
    rng = np.random.default_rng(tile)
    image = rng.uniform(0, 255, shape + ((channels,) if channels > 1 else ())).astype(np.float32)
    cmap = predict(model, image, block_size=block, device="cpu")
    ref = reference_map(model, image)
    assert cmap.scores.shape == ref.shape == (3, -(-shape[0] // model.step), -(-shape[1] // model.step))
    np.testing.assert_allclose(cmap.scores, ref, atol=1e-4, rtol=0)
    assert np.array_equal(cmap.classes, np.asarray(model.class_table.values)[ref.argmax(0)])


def test_map_geometry_is_recorded(random_model):
    model = random_model("medium", 48, 1)
    cmap = predict(model, np.zeros((100, 70), np.uint8), device="cpu")
    assert cmap.step == 8 and cmap.tile_size == 48
    assert cmap.offset == (3.5, 3.5)
    assert cmap.geometry.image_shape == (100, 70)
    assert cmap.shape == (13, 9)
    scale, translate = cmap.layer_transform(image_scale=(2.0, 0.5), image_translate=(10.0, -4.0))
    assert scale == (16.0, 4.0)
    assert translate == (17.0, -2.25)


def test_uint8_uint16_and_float_images_give_the_same_map(random_model):
    model = random_model("small", 32, 1)
    image = np.random.default_rng(0).integers(0, 255, (50, 60)).astype(np.uint8)
    maps = [predict(model, image.astype(dt), device="cpu").scores for dt in (np.uint8, np.uint16, np.float64)]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-6)


def test_predict_refuses_images_that_do_not_fit_the_model(random_model):
    model = random_model("small", 32, 1)
    with pytest.raises(TilemapInputError, match="expects 1 channel"):
        predict(model, np.zeros((64, 64, 3)), device="cpu")
    with pytest.raises(TilemapInputError, match="smaller than the model's 32px tile"):
        predict(model, np.zeros((20, 64)), device="cpu")
    with pytest.raises(TilemapInputError, match="NaN"):
        predict(model, np.full((64, 64), np.nan), device="cpu")


ALL_EIGHT = [(k, m) for k in range(4) for m in (False, True)]


def reference_in_orientations(model, image, orientations):
    """Every tile cut by hand and classified alone in each orientation; the mean of its scores."""
    tiles, rows, cols = hand_cut_tiles(model, image)
    total = 0.0
    for k, mirror in orientations:
        turned = np.rot90(tiles, k, axes=(1, 2))
        total = total + model.classify_tiles(np.ascontiguousarray(turned[:, :, ::-1] if mirror else turned))
    return (total / len(orientations)).reshape(rows, cols, -1).transpose(2, 0, 1)


@pytest.mark.parametrize("augment, orientations", [
    (None, ALL_EIGHT),  # a model that records no augmentation was trained with flips and turns
    (["flip", "rot90", "shift"], ALL_EIGHT),
    (["rot90", "noise"], [(k, False) for k in range(4)]),
    (["flip"], [(0, False), (0, True)]),  # training mirrored left-right only
])
def test_test_time_augmentation_averages_each_tile_in_the_orientations_it_was_trained_on(
        random_model, augment, orientations, tmp_path):
    model = random_model("small", 34, 1, classes=3, seed=5)
    model.record = {} if augment is None else {"augment": augment}
    image = np.random.default_rng(1).uniform(0, 255, (77, 101)).astype(np.float32)  # not a multiple of S
    cmap = predict(model, image, block_size=40, device="cpu", tta=True)  # several blocks, edges reflected
    np.testing.assert_allclose(cmap.scores, reference_in_orientations(model, image, orientations), atol=1e-4, rtol=0)
    assert np.array_equal(cmap.classes, np.asarray(model.class_table.values)[np.asarray(cmap.scores).argmax(0)])
    plain = predict(model, image, device="cpu")
    assert np.abs(np.asarray(cmap.scores) - plain.scores).max() > 1e-3  # an untrained net is not invariant
    # a store records it, and a run without it is another map, not a resume
    from napari_tilemap import MapStoreError, open_map
    from napari_tilemap.maps._mapstore import read_attrs

    predict(model, image, tmp_path / "tta.zarr", block_size=40, device="cpu", tta=True)
    assert read_attrs(tmp_path / "tta.zarr")["run"]["orientations"] == [list(o) for o in orientations]
    np.testing.assert_allclose(open_map(tmp_path / "tta.zarr").scores[...], cmap.scores, atol=1e-6)
    with pytest.raises(MapStoreError):
        predict(model, image, tmp_path / "tta.zarr", block_size=40, device="cpu")


def test_test_time_augmentation_is_refused_for_a_model_trained_without_flips_and_turns(random_model):
    model = random_model("small", 32, 1)
    model.record = {"augment": ["shift", "intensity"]}
    with pytest.raises(TilemapInputError, match="without 'flip' and 'rot90'"):
        predict(model, np.zeros((64, 64), np.float32), device="cpu", tta=True)
