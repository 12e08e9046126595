"""Per-image normalisation: each image mapped by its own percentiles, in training and in every map."""

import numpy as np
import pytest

from napari_tilemap import TilemapInputError, TrainConfig, extract_tiles, load_model, predict, sample_surface, train
from napari_tilemap._errors import ModelFileError
from napari_tilemap._levels import image_levels
from napari_tilemap.learn._modelfile import model_from_bytes, model_to_bytes
from napari_tilemap.learn._training import per_image_windows

from .test_modelfile import _edit, _split
from .test_outofcore import assert_same_map


@pytest.fixture(scope="module")
def surface():
    return sample_surface((256, 256), seed=0)


@pytest.fixture(scope="module")
def own(surface):
    """A small model trained with per-image normalisation."""
    tiles = extract_tiles(surface.image, surface.labels, tile_size=32, seed=0)
    return train(tiles, preset="small", epochs=2, normalise="image", device="cpu", seed=0)


def _scores(cmap) -> np.ndarray:
    return np.asarray(cmap.scores)


def test_levels_are_the_percentiles_of_each_channel():
    image = np.random.default_rng(0).normal((10, 200, 3000), (1, 20, 300), (64, 80, 3))
    low, high = image_levels(image)
    np.testing.assert_allclose(low, np.percentile(image, 1, axis=(0, 1)))
    np.testing.assert_allclose(high, np.percentile(image, 99, axis=(0, 1)))


def test_levels_of_a_large_image_come_from_windows_over_all_of_it():
    # a ramp: any window set that misses a part of the image gets its percentiles wrong
    ramp = np.broadcast_to(np.linspace(0, 1000, 2500, dtype=np.float32), (2500, 2500))
    low, high = image_levels(ramp)
    assert low[0] == pytest.approx(10, abs=15) and high[0] == pytest.approx(990, abs=15)


def test_a_per_image_model_maps_an_image_under_other_gain_and_offset_alike(own):
    image = sample_surface((256, 256), seed=3).image.astype(np.float32)
    brighter = 3.5 * image + 700
    reference = _scores(predict(own, image, device="cpu", min_score=None))
    assert reference.std(axis=(1, 2)).max() > 0.01  # scores that follow the image, so that alike means something
    np.testing.assert_allclose(_scores(predict(own, brighter, device="cpu", min_score=None)), reference, atol=1e-4)
    # the same network held to the first image's levels is thrown by the change: the test can tell
    fixed = own.with_levels(*image_levels(image))
    np.testing.assert_allclose(_scores(predict(fixed, image, device="cpu", min_score=None)), reference, atol=1e-4)
    assert np.abs(_scores(predict(fixed, brighter, device="cpu", min_score=None)) - reference).max() > 0.1


def test_the_dense_map_equals_each_tile_classified_alone_with_its_image_levels(own, surface):
    model = own
    image = (surface.image[40:115, 60:150].astype(np.uint16) * 16)[..., None]
    scores = _scores(predict(model, image, device="cpu", block_size=40))
    t, s = model.tile_size, model.step
    half = (t - s) // 2
    padded = np.pad(image.astype(np.float32), ((half, half + s), (half, half + s), (0, 0)), mode="symmetric")
    cells = [(i, j) for i in range(scores.shape[1]) for j in range(scores.shape[2])]
    tiles = np.stack([padded[i * s : i * s + t, j * s : j * s + t] for i, j in cells])
    alone = model.classify_tiles(tiles, levels=image_levels(image))
    np.testing.assert_allclose(alone, np.stack([scores[:, i, j] for i, j in cells]), atol=1e-4)
    with pytest.raises(TilemapInputError, match="levels=image_levels"):
        model.classify_tiles(tiles)


def test_threads_and_a_dask_cluster_give_the_same_map(own, surface, tmp_path):
    distributed = pytest.importorskip("distributed")
    model = own
    image = surface.image[:130, :150].astype(np.float32) * 0.5 + 9
    np.save(tmp_path / "img.npy", image)
    threaded = predict(model, tmp_path / "img.npy", out=tmp_path / "threads.zarr", block_size=48, device="cpu")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        clustered = predict(model, tmp_path / "img.npy", out=tmp_path / "cluster.zarr", block_size=48, device="cpu",
                            client=client)
    assert_same_map(clustered, threaded)  # float kernels may differ in the last bits between processes
    assert_same_map(threaded, predict(model, image * 7 - 40, device="cpu"))  # the image's own levels, both ways


def test_the_model_file_records_it_and_reads_it_back(own, random_model, tmp_path):
    model = own
    model.save(tmp_path / "m.tilemap")
    back = load_model(tmp_path / "m.tilemap")
    assert back.per_image == (1.0, 99.0) and back.normalise == "image"
    image = np.random.default_rng(4).normal(0, 1, (64, 80)).astype(np.float32)
    np.testing.assert_array_equal(_scores(predict(back, image, device="cpu")), _scores(predict(model, image, device="cpu")))
    data = model_to_bytes(model)
    import json

    assert json.loads(_split(data)[1])["version"] == 3
    assert json.loads(_split(model_to_bytes(random_model("small", 32, 1)))[1])["version"] == 1  # unchanged bytes
    with pytest.raises(ModelFileError, match="per_image must be two percentiles"):
        model_from_bytes(_edit(data, "normalisation", "per_image", [99, 1]))
    with pytest.raises(ModelFileError, match="has unknown entries"):
        model_from_bytes(_edit(_edit(data, "version", 2), "normalisation", "per_image", [1, 99]))


def test_training_sees_each_tile_through_its_own_image_levels():
    a = sample_surface((256, 256), seed=0)
    b = sample_surface((256, 256), seed=1)
    dark = (b.image.astype(np.float32) * 0.25 + 3).astype(np.float32)
    tiles = extract_tiles([a.image.astype(np.float32), dark], [a.labels, b.labels], tile_size=32, seed=0)
    windows = per_image_windows(tiles, (1.0, 99.0))
    for i, image in enumerate([a.image.astype(np.float32), dark]):
        low, high = np.percentile(image, [1, 99])
        sel = tiles.image_index == i
        np.testing.assert_allclose(windows[sel], (tiles.windows[sel] - low) / (high - low), rtol=1e-5, atol=1e-5)



def test_the_trained_model_records_it(own):
    assert own.per_image == (1.0, 99.0) and own.record["parameters"]["normalise"] == "image"
    assert 0.2 < float(own.mean[0]) < 0.8  # statistics of the rescaled tiles, not of raw intensities


def test_a_bad_choice_is_refused_by_name():
    with pytest.raises(TilemapInputError, match=r"normalise must be one of \['dataset', 'image'\], got 'percentile'"):
        TrainConfig(normalise="percentile")


def test_a_uniform_image_maps_without_dividing_by_zero(own):
    for value in (0, 200):
        cmap = predict(own, np.full((96, 120), value, np.uint8), device="cpu", min_score=None)
        assert np.isfinite(_scores(cmap)).all()
    # every pixel at the low level: as a uniform image at the low level of any other
    np.testing.assert_allclose(_scores(predict(own, np.zeros((96, 120), np.float32), device="cpu")),
                               _scores(predict(own, np.full((96, 120), 7.0, np.float32), device="cpu")), atol=1e-4)
