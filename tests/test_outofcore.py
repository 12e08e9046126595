"""Block-wise prediction into a map store: same map as in memory, resumable, never destroys results."""

import threading

import numpy as np
import pytest
import zarr

from napari_tilemap import (
    Cancelled,
    MapStoreError,
    TilemapInputError,
    iter_predict,
    open_map,
    predict,
)
from napari_tilemap.maps._mapstore import pyramid_levels

from .test_sources import formats


def assert_same_map(a, b):
    np.testing.assert_allclose(np.asarray(a.scores), np.asarray(b.scores), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.asarray(a.classes), np.asarray(b.classes))


@pytest.mark.parametrize("channels, shape", [(1, (203, 157)), (3, (131, 190))])
def test_every_input_format_and_block_size_gives_the_in_memory_map(random_model, tmp_path, channels, shape):
    model = random_model("small", 34, channels, seed=channels)
    rng = np.random.default_rng(channels)
    image = rng.integers(0, 255, shape + ((channels,) if channels > 1 else ())).astype(np.uint8)
    reference = predict(model, image, block_size=4096, device="cpu")
    for i, (name, spec) in enumerate(formats(tmp_path, image)):
        for block in (40, 64, 1000):
            out = tmp_path / f"map-{i}-{block}.zarr"
            cmap = predict(model, spec, out=out, block_size=block, device="cpu", workers=2)
            assert cmap.complete and cmap.path == out, name
            assert_same_map(cmap, reference)
            reopened = open_map(out)
            assert reopened.geometry == reference.geometry
            assert reopened.class_table == model.class_table


def test_the_store_has_the_designed_layout(random_model, tmp_path):
    model = random_model("medium", 48, 1)
    predict(model, np.zeros((300, 200), np.uint8), out=tmp_path / "m.zarr", block_size=64, device="cpu",
            scores_dtype="float16")
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    attrs = group.attrs["tilemap"]
    assert attrs["version"] == 1 and attrs["step"] == 8 and attrs["tile_size"] == 48
    assert attrs["offset"] == [3.5, 3.5] and attrs["image_shape"] == [300, 200]
    assert attrs["class_names"] == list(model.class_table.names) and len(attrs["colors"]) == 3
    assert attrs["complete"] is True
    assert group["scores"].shape == (3, 38, 25) and group["scores"].dtype == np.float16
    assert group["classes"].shape == (38, 25) and group["classes"].dtype == np.uint8
    assert set(np.unique(group["classes"][:])) <= set(model.class_table.values)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(random_model, tmp_path):
    model = random_model("small", 32, 1)
    image = np.random.default_rng(3).integers(0, 255, (250, 230)).astype(np.uint8)
    full = predict(model, image, out=tmp_path / "full.zarr", block_size=48, device="cpu")
    out = tmp_path / "resumed.zarr"
    stop = threading.Event()
    seen = []

    def count(event):
        seen.append(event)
        if len(seen) == 5:
            stop.set()

    with pytest.raises(Cancelled, match="run again to resume"):
        predict(model, image, out=out, block_size=48, device="cpu", callback=count, cancel=stop)
    assert open_map(out).complete is False
    done_before = int(np.asarray(zarr.open_group(str(out))["done"]).sum())
    assert 5 <= done_before < seen[0].total
    events = list(_events(iter_predict(model, image, out, block_size=48, device="cpu")))
    assert len(events) == seen[0].total - done_before  # only the missing blocks ran
    resumed = open_map(out)
    assert resumed.complete
    assert_same_map(resumed, full)
    # a complete store with the same arguments is returned as it is
    assert list(_events(iter_predict(model, image, out, block_size=48, device="cpu"))) == []


def test_a_crash_midway_leaves_a_resumable_store(random_model, tmp_path, monkeypatch):
    import napari_tilemap.maps._blockrun as blockrun

    model = random_model("small", 32, 1)
    image = np.random.default_rng(4).integers(0, 255, (200, 200)).astype(np.uint8)
    real, calls = blockrun.run_blocks, []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise MemoryError("simulated crash")
        return real(*args, **kw)

    monkeypatch.setattr("napari_tilemap.maps._predict.run_blocks", flaky)
    with pytest.raises(MemoryError):
        predict(model, image, out=tmp_path / "m.zarr", block_size=40, device="cpu")
    monkeypatch.setattr("napari_tilemap.maps._predict.run_blocks", real)
    assert not open_map(tmp_path / "m.zarr").complete
    resumed = predict(model, image, out=tmp_path / "m.zarr", block_size=40, device="cpu")
    assert_same_map(resumed, predict(model, image, device="cpu"))


def test_existing_results_are_never_destroyed_unless_asked(random_model, tmp_path):
    a, b = random_model("small", 32, 1, seed=1), random_model("small", 32, 1, seed=2)
    image = np.random.default_rng(5).integers(0, 255, (100, 120)).astype(np.uint8)
    out = tmp_path / "m.zarr"
    first = np.asarray(predict(a, image, out=out, device="cpu").scores)
    with pytest.raises(MapStoreError, match="holds a map of another model"):
        predict(b, image, out=out, device="cpu")
    np.testing.assert_array_equal(np.asarray(open_map(out).scores), first)
    # an overwrite that is cancelled leaves the old map in place ...
    with pytest.raises(Cancelled):
        predict(b, image, out=out, device="cpu", overwrite=True, block_size=32, cancel=lambda: True)
    np.testing.assert_array_equal(np.asarray(open_map(out).scores), first)
    # ... and one that finishes replaces it
    second = predict(b, image, out=out, device="cpu", overwrite=True)
    assert not np.allclose(np.asarray(second.scores), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]
    # bad input never touches the store
    with pytest.raises(TilemapInputError, match="expects 1 channel"):
        predict(a, np.zeros((100, 120, 3)), out=out, overwrite=True)
    with pytest.raises(TilemapInputError, match="does not exist"):
        predict(a, tmp_path / "missing.tif", out=out, overwrite=True)
    np.testing.assert_array_equal(np.asarray(open_map(out).scores), np.asarray(second.scores))


def test_the_display_pyramid_is_built_from_the_stored_level(random_model, tmp_path):
    model = random_model("small", 18, 1)
    image = np.random.default_rng(6).integers(0, 255, (1100, 1300)).astype(np.uint8)
    predict(model, image, out=tmp_path / "m.zarr", block_size=512, device="cpu")
    classes, scores = pyramid_levels(tmp_path / "m.zarr")
    assert [c.shape for c in classes] == [(275, 325), (138, 163)]
    np.testing.assert_array_equal(classes[1][:], classes[0][:][::2, ::2])
    s0 = scores[0][:]
    np.testing.assert_allclose(scores[1][:, :137, :162], s0[:, :274, :324].reshape(3, 137, 2, 162, 2).mean((2, 4)),
                               atol=1e-6)


def test_a_local_cluster_gives_the_threaded_map(random_model, tmp_path):
    distributed = pytest.importorskip("distributed")
    model = random_model("small", 32, 3)
    image = np.random.default_rng(8).integers(0, 255, (150, 170, 3)).astype(np.uint8)
    np.save(tmp_path / "img.npy", image)
    threaded = predict(model, tmp_path / "img.npy", out=tmp_path / "threads.zarr", block_size=48, device="cpu")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        events = []
        cmap = predict(model, tmp_path / "img.npy", out=tmp_path / "cluster.zarr", block_size=48, device="cpu",
                       client=client, callback=events.append)
        assert len(events) == events[-1].total == 16
        workers_used = client.run(lambda: __import__("napari_tilemap.maps._blockrun", fromlist=["_NETS"])._NETS.__len__())
    assert sorted(workers_used.values()) == [1, 1]  # each worker built the network once
    assert_same_map(cmap, threaded)
    with pytest.raises(TilemapInputError, match="pass out="):
        predict(model, image, client=object())


def _events(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


def test_the_cli_runs_blocks_on_a_scheduler_address(random_model, tmp_path):
    distributed = pytest.importorskip("distributed")
    from napari_tilemap.cli import main

    model = random_model("small", 32, 1)
    model.save(tmp_path / "m.tilemap")
    image = np.random.default_rng(9).integers(0, 255, (120, 140)).astype(np.uint8)
    np.save(tmp_path / "img.npy", image)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as c:
        assert main(["predict", str(tmp_path / "m.tilemap"), str(tmp_path / "img.npy"), "-o", str(tmp_path / "c.zarr"),
                     "--chunk", "64", "--device", "cpu", "--scheduler", c.scheduler_address]) == 0
    assert_same_map(open_map(tmp_path / "c.zarr"), predict(model, image, device="cpu"))


def test_blocks_stacked_into_one_forward_pass_give_the_same_map(random_model):
    """The GPU path batches equal blocks per pass; the result must not depend on it."""
    from napari_tilemap.io._sources import open_image
    from napari_tilemap.maps._blockrun import BlockPlan, block_grid, run_blocks

    model = random_model("small", 32, 1)
    image = np.random.default_rng(10).integers(0, 255, (160, 160)).astype(np.uint8)
    geometry = model.geometry(image.shape)
    plan = BlockPlan(geometry, 10, model.class_table.values, "float32", None, "cpu")
    blocks = block_grid(geometry.map_shape, 10)
    assert len(blocks) == 16
    net = (model.inference_network("cpu"), __import__("torch").device("cpu"))
    out = (np.zeros((3, 40, 40), np.float32), np.zeros((40, 40), np.uint8))
    for i in range(0, 16, 8):
        run_blocks(blocks[i : i + 8], open_image(image), plan, net, out)
    reference = predict(model, image, device="cpu")
    np.testing.assert_allclose(out[0], reference.scores, atol=1e-4)
    np.testing.assert_array_equal(out[1], reference.classes)


def test_an_interrupted_overwrite_resumes_too(random_model, tmp_path):
    a, b = random_model("small", 32, 1, seed=1), random_model("small", 32, 1, seed=2)
    image = np.random.default_rng(12).integers(0, 255, (200, 180)).astype(np.uint8)
    out = tmp_path / "m.zarr"
    first = np.asarray(predict(a, image, out=out, device="cpu").scores)
    seen = []
    with pytest.raises(Cancelled):
        predict(b, image, out=out, device="cpu", overwrite=True, block_size=40, callback=seen.append,
                cancel=lambda: len(seen) == 7)
    np.testing.assert_array_equal(np.asarray(open_map(out).scores), first)
    events = list(_events(iter_predict(b, image, out, block_size=40, device="cpu", overwrite=True)))
    assert 0 < len(events) <= seen[0].total - 7
    assert_same_map(open_map(out), predict(b, image, device="cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]
