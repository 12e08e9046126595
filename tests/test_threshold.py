"""Reject threshold: cells whose best score is too low become unknown (255), without the network."""

import shutil

import numpy as np
import pytest
import zarr

from napari_tilemap import (
    ClassificationMap,
    ClassTable,
    MapStoreError,
    TilemapInputError,
    clear_threshold,
    open_map,
    predict,
    write_threshold,
)
from napari_tilemap._classes import UNKNOWN, UNKNOWN_COLOR, UNKNOWN_NAME
from napari_tilemap._geometry import MapGeometry
from napari_tilemap._layerdata import map_layer_data
from napari_tilemap.maps._mapstore import create_store, pyramid_levels, update_attrs
from napari_tilemap.maps._threshold import unknown_levels

TABLE = ClassTable.from_values([1, 3, 7], names=["pit", "scratch", "stain"])
VALUES = np.asarray(TABLE.values, np.uint8)


def random_map(shape=(37, 53), seed=0, dtype=np.float32, softmax=True):
    """An in-memory map of random scores: softmax-like, or one-vs-rest (not summing to 1)."""
    rng = np.random.default_rng(seed)
    raw = rng.random((len(TABLE), *shape))
    scores = (np.exp(4 * raw) / np.exp(4 * raw).sum(0) if softmax else raw).astype(dtype)
    geometry = MapGeometry(32, 4, (shape[0] * 4, shape[1] * 4))
    return ClassificationMap(scores, VALUES[scores.argmax(0)], geometry, TABLE)


def expected(cmap, per_value):
    """Plain numpy: best class where its best score >= the threshold of that class, else 255."""
    scores = np.asarray(cmap.scores).astype(np.float64)
    best_class = VALUES[scores.argmax(0)]
    minimum = np.vectorize(lambda v: per_value.get(int(v), 0.0))(best_class)
    return np.where(scores.max(0) >= minimum, best_class, UNKNOWN).astype(np.uint8)


@pytest.mark.parametrize("softmax", [True, False])
def test_cells_below_the_threshold_become_unknown_and_nothing_else_changes(softmax):
    cmap = random_map(softmax=softmax)
    best = cmap.classes.copy()
    for threshold, per_value in [
        (0.55, dict.fromkeys(TABLE.values, 0.55)),
        ({"pit": 0.6, 7: 0.8}, {1: 0.6, 7: 0.8}),  # by name and by value; missing classes get 0
        ({"background": 0.3, "3": 0.9}, {0: 0.3, 3: 0.9}),  # a decimal string names a label value
    ]:
        out = cmap.with_threshold(threshold)
        want = expected(cmap, per_value)
        assert 0 < (want == UNKNOWN).sum() < want.size
        assert isinstance(out.classes, np.ndarray) and out.classes.dtype == np.uint8
        np.testing.assert_array_equal(out.classes, want)
        kept = out.classes != UNKNOWN
        np.testing.assert_array_equal(out.classes[kept], best[kept])
        assert out.scores is cmap.scores and out.best_classes is cmap.classes
        assert out.threshold == (threshold if isinstance(threshold, float) else {v: per_value.get(v, 0.0)
                                                                                 for v in TABLE.values})
    # a new threshold applies to the best classes, not to the thresholded ones
    np.testing.assert_array_equal(cmap.with_threshold(0.9).with_threshold(0.55).classes,
                                  cmap.with_threshold(0.55).classes)
    np.testing.assert_array_equal(cmap.with_threshold(0.9).without_threshold().classes, best)
    np.testing.assert_array_equal(cmap.classes, best)  # the original is untouched


def test_zero_and_one_and_float16_scores():
    cmap = random_map(dtype=np.float16)
    cmap.scores[:, :3] = 0
    cmap.scores[1, :3] = 1.0  # certain cells
    cmap.classes[:3] = TABLE.values[1]
    zero = cmap.with_threshold(0)
    np.testing.assert_array_equal(zero.classes, cmap.classes)
    np.testing.assert_array_equal(cmap.with_threshold({}).classes, cmap.classes)  # every class gets 0
    one = cmap.with_threshold(1)
    assert (one.classes[:3] == TABLE.values[1]).all() and (one.classes[3:] == UNKNOWN).all()
    # the threshold is compared in float64: float16 0.2998 is below 0.3 (float16(0.3) is not)
    cmap.scores[:] = 0
    cmap.scores[2] = np.float16(0.2998)
    cmap.classes[:] = TABLE.values[2]
    assert (cmap.with_threshold(0.3).classes == UNKNOWN).all()
    assert (cmap.with_threshold(float(np.float16(0.2998))).classes == TABLE.values[2]).all()


@pytest.mark.parametrize("threshold, match", [
    (1.5, r"threshold is 1.5, outside \[0, 1\]"),
    (-0.01, r"outside \[0, 1\]"),
    (float("nan"), "NaN"),
    ("0.5", "must be a number in .0, 1. or a dict"),
    (None, "must be a number"),
    ([0.5, 0.5], "must be a number"),
    (True, "must be a number"),
    ({"crack": 0.5}, "'crack' is not a class name or label value"),
    ({255: 0.5}, "255 is not a class name or label value"),
    ({"pit": 1.2}, r"threshold for class 'pit' \(1\) is 1.2, outside"),
    ({"pit": "high"}, r"threshold for class 'pit' \(1\) must be a number"),
    ({1: 0.5, "pit": 0.6}, "given twice"),
    ({0.5: 0.5}, "keys are class names or label values"),
])
def test_bad_thresholds_are_refused(threshold, match):
    with pytest.raises(TilemapInputError, match=match):
        random_map().with_threshold(threshold)


def test_the_class_table_refuses_the_unknown_value():
    with pytest.raises(TilemapInputError, match=r"label value 255 is reserved for unknown; paint with 1\.\.254"):
        ClassTable.from_values([1, 255])
    with pytest.raises(TilemapInputError, match="reserved for unknown"):
        ClassTable.from_dict({"class_names": ["a", "b"], "colors": [[0, 0, 0], [1, 1, 1]], "values": [0, 255]})
    with pytest.raises(TilemapInputError, match=r"0\.\.254"):
        ClassTable(("a",), ((0.0, 0.0, 0.0, 1.0),), (300,))
    assert ClassTable.from_values([254]).values == (0, 254)


def _reads(monkeypatch):
    """Chunk keys read from any local zarr store from now on."""
    from zarr.storage import LocalStore

    real, keys = LocalStore.get, []

    async def get(self, key, *args, **kw):
        if "/c/" in key:
            keys.append(key)
        return await real(self, key, *args, **kw)

    monkeypatch.setattr(LocalStore, "get", get)
    return keys


def test_a_stored_map_is_thresholded_lazily_block_by_block_like_in_memory(random_model, tmp_path, monkeypatch):
    import dask.array as da

    model = random_model("small", 32, 1)
    image = np.random.default_rng(1).integers(0, 255, (150, 170)).astype(np.uint8)
    memory = predict(model, image, device="cpu")
    stored = predict(model, image, out=tmp_path / "m.zarr", block_size=64, device="cpu")
    threshold = float(np.quantile(memory.scores.max(0), 0.4))
    per_class = {model.class_table.names[1]: threshold, 0: threshold / 2}

    reads = _reads(monkeypatch)
    lazy = stored.with_threshold(threshold)
    assert reads == []  # nothing is read until indexed
    assert isinstance(lazy.classes, da.Array)
    assert lazy.classes.chunks == ((16, 16, 6), (16, 16, 11))  # the store's chunks (64 px / step 4)
    assert zarr.open_group(str(tmp_path / "m.zarr"))["classes"].chunks == (16, 16)
    window = np.asarray(lazy.classes[2:10, 20:30])
    assert sorted(reads) == ["classes/c/0/1", "scores/c/0/0/1"]  # only the chunks of that window
    np.testing.assert_array_equal(window, memory.with_threshold(threshold).classes[2:10, 20:30])
    reads.clear()

    for t in (threshold, per_class, 0.0, 1.0):
        want = memory.with_threshold(t).classes
        got = stored.with_threshold(t)
        np.testing.assert_array_equal(np.asarray(got.classes), want)
        assert got.threshold == memory.with_threshold(t).threshold and got.path == stored.path
    assert 0 < (np.asarray(lazy.classes) == UNKNOWN).sum() < lazy.classes.size
    # the store itself is untouched
    assert not [k for k in reads if not k.startswith(("classes/", "scores/"))]
    assert open_map(tmp_path / "m.zarr").threshold is None


def synthetic_store(path, shape=(600, 300), chunk=128, seed=2):
    """A complete map store with a display pyramid, written without a network (fast)."""
    from napari_tilemap.maps._pyramid import build_pyramid

    cmap = random_map(shape, seed)
    group = create_store(path, cmap.geometry, TABLE, chunk=chunk)
    group["scores"][...] = cmap.scores
    group["classes"][...] = cmap.classes
    group["done"][...] = 1
    update_attrs(group, complete=True, pyramid_levels=build_pyramid(group))
    return cmap


def test_write_threshold_records_it_beside_the_best_classes(tmp_path):
    path = tmp_path / "m.zarr"
    memory = synthetic_store(path)
    before = {name: np.asarray(a[...]) for name, a in zarr.open_group(str(path), mode="r").arrays()}
    assert open_map(path).attrs()["threshold"] is None

    cmap = write_threshold(path, 0.6)
    attrs = zarr.open_group(str(path), mode="r").attrs["tilemap"]
    assert attrs["threshold"] == 0.6 and attrs["unknown"] == {"value": 255, "name": UNKNOWN_NAME,
                                                              "color": list(UNKNOWN_COLOR)}
    assert attrs["class_names"] == list(TABLE.names) and attrs["values"] == list(TABLE.values)  # the model's
    after = zarr.open_group(str(path), mode="r")
    for name, array in before.items():  # best classes, scores and pyramid unchanged
        np.testing.assert_array_equal(np.asarray(after[name][...]), array, err_msg=name)
    want = memory.with_threshold(0.6).classes
    assert cmap.threshold == 0.6 and cmap.attrs()["threshold"] == 0.6 and cmap.attrs()["unknown"]["value"] == 255
    np.testing.assert_array_equal(np.asarray(cmap.classes[...]), want)
    np.testing.assert_array_equal(np.asarray(cmap.best_classes[...]), memory.classes)
    classes, scores = pyramid_levels(path)
    assert len(classes) == 3 == attrs["pyramid_levels"] + 1
    for i, level in enumerate(classes):
        np.testing.assert_array_equal(np.asarray(level[...]), want[:: 2**i, :: 2**i])
    best, _ = pyramid_levels(path, threshold=None)
    np.testing.assert_array_equal(np.asarray(best[1][...]), before["classes_1"])

    # another threshold replaces it (keys by name and value are recorded by value)
    cmap = write_threshold(path, {"pit": 0.7, 7: 0.5})
    assert zarr.open_group(str(path), mode="r").attrs["tilemap"]["threshold"] == {"0": 0, "1": 0.7, "3": 0, "7": 0.5}
    assert cmap.threshold == {0: 0.0, 1: 0.7, 3: 0.0, 7: 0.5}
    np.testing.assert_array_equal(np.asarray(cmap.classes[...]), memory.with_threshold({1: 0.7, 7: 0.5}).classes)
    # a recorded threshold can be passed again as read from the attributes
    np.testing.assert_array_equal(np.asarray(open_map(path).with_threshold(attrs["threshold"]).classes), want)

    # bad input and incomplete stores never touch the store
    with pytest.raises(TilemapInputError, match="outside"):
        write_threshold(path, 2)
    assert open_map(path).threshold == {0: 0.0, 1: 0.7, 3: 0.0, 7: 0.5}
    with pytest.raises(MapStoreError, match="does not exist"):
        write_threshold(tmp_path / "missing.zarr", 0.5)

    plain = clear_threshold(path)
    assert plain.threshold is None and plain.attrs()["threshold"] is None
    np.testing.assert_array_equal(np.asarray(plain.classes[...]), memory.classes)
    assert sorted(n for n, _ in zarr.open_group(str(path), mode="r").arrays()) == sorted(before)
    assert "unknown" not in zarr.open_group(str(path), mode="r").attrs["tilemap"]


def test_old_stores_and_interrupted_or_refused_writes(tmp_path, monkeypatch):
    import napari_tilemap.maps._threshold as threshold_module

    path = tmp_path / "m.zarr"
    memory = synthetic_store(path, shape=(90, 70), chunk=32)
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs["tilemap"])
    del attrs["threshold"]  # as written before thresholds existed
    group.attrs["tilemap"] = attrs
    old = open_map(path)
    assert old.threshold is None and old.attrs()["threshold"] is None and "unknown" not in old.attrs()
    assert old.classes is old.best_classes
    np.testing.assert_array_equal(np.asarray(old.classes[...]), memory.classes)

    write_threshold(path, 0.5)

    def crash(*args, **kwargs):
        raise MemoryError("killed while writing classes_unknown")

    monkeypatch.setattr(threshold_module, "apply_threshold", crash)
    with pytest.raises(MemoryError):
        write_threshold(path, 0.8)
    monkeypatch.undo()
    reopened = open_map(path)  # the earlier threshold and its arrays stay as they were
    assert reopened.threshold == 0.5
    np.testing.assert_array_equal(np.asarray(reopened.classes[...]), memory.with_threshold(0.5).classes)
    assert unknown_levels(zarr.open_group(str(path), mode="r"), reopened.attrs()) is not None  # read, not recomputed
    assert any(p.name.startswith("classes_unknown.staged") for p in path.iterdir())  # the interrupted write's
    # the next write clears what the interrupted one left, and leaves nothing of its own beside the map
    arrays_before = sorted(p.name for p in path.iterdir())
    shutil.copytree(path / "classes_unknown", path / "classes_unknown.retired")  # killed before its removal
    rewritten = write_threshold(path, 0.8)
    np.testing.assert_array_equal(np.asarray(rewritten.classes[...]), memory.with_threshold(0.8).classes)
    assert sorted(p.name for p in path.iterdir()) == [n for n in arrays_before if ".staged" not in n]
    clear_threshold(path)
    write_threshold(path, 0.5)

    # a record whose arrays are missing is computed lazily instead
    update_attrs(zarr.open_group(str(path), mode="r+"), threshold=0.8)
    del zarr.open_group(str(path), mode="r+")["classes_unknown"]
    np.testing.assert_array_equal(np.asarray(open_map(path).classes), memory.with_threshold(0.8).classes)
    update_attrs(zarr.open_group(str(path), mode="r+"), threshold={"2": 0.5})
    with pytest.raises(MapStoreError, match="invalid threshold"):
        open_map(path)

    update_attrs(zarr.open_group(str(path), mode="r+"), complete=False, threshold=None)
    with pytest.raises(MapStoreError, match="is not complete"):
        write_threshold(path, 0.5)


def test_a_stopped_write_reports_progress_and_keeps_the_earlier_rules(tmp_path):
    from napari_tilemap.maps._threshold import iter_write_threshold

    path = tmp_path / "m.zarr"
    memory = synthetic_store(path, shape=(1100, 300), chunk=128)
    write_threshold(path, 0.5)
    before = sorted(p.name for p in path.iterdir())
    levels = zarr.open_group(str(path), mode="r").attrs["tilemap"]["pyramid_levels"]
    writing = iter_write_threshold(path, 0.8, min_score=0.9)
    assert levels >= 1 and next(writing) == (1, 2 + levels)  # regions of up to 1024² cells: two on level 0
    writing.close()  # Stop, between two regions
    reopened = open_map(path)
    assert reopened.threshold == 0.5 and reopened.min_score is None
    np.testing.assert_array_equal(np.asarray(reopened.classes[...]), memory.with_threshold(0.5).classes)
    assert sorted(p.name for p in path.iterdir()) == before  # nothing of the stopped write left beside the map
    steps = list(iter_write_threshold(path, 0.8))  # and the store is free for the next write
    assert [d for d, _ in steps] == list(range(1, steps[0][1] + 1))
    assert open_map(path).threshold == 0.8


def test_map_layers_draw_and_name_unknown(tmp_path):
    cmap = random_map().with_threshold(0.6)
    (data, kw, kind), *scores = map_layer_data(cmap, name="m")
    assert kind == "labels" and (np.asarray(data) == UNKNOWN).any()
    assert kw["colormap"][UNKNOWN] == UNKNOWN_COLOR and kw["colormap"][1] == TABLE.colors[1]
    assert dict(zip(kw["features"]["index"], kw["features"]["class"]))[UNKNOWN] == UNKNOWN_NAME
    assert kw["metadata"]["tilemap_map"]["threshold"] == 0.6
    assert ClassTable.from_dict(kw["metadata"]["tilemap_class_table"]) == TABLE  # the model's table
    assert [k["name"] for _, k, _ in scores] == ["m score pit", "m score scratch", "m score stain"]
    _, plain_kw, _ = map_layer_data(random_map())[0]
    assert UNKNOWN not in plain_kw["colormap"] and UNKNOWN not in plain_kw["features"]["index"]

    # stored: the written pyramid, or lazy levels for a threshold that is not stored
    path = tmp_path / "m.zarr"
    memory = synthetic_store(path)
    write_threshold(path, 0.6)
    (levels, kw, _), *_ = map_layer_data(open_map(path))
    assert kw["multiscale"] and all(isinstance(a, zarr.Array) for a in levels)
    assert kw["colormap"][UNKNOWN] == UNKNOWN_COLOR
    (levels, kw, _), *_ = map_layer_data(open_map(path).with_threshold(0.7))
    want = memory.with_threshold(0.7).classes
    assert len(levels) == 3
    for i, level in enumerate(levels):
        np.testing.assert_array_equal(np.asarray(level), want[:: 2**i, :: 2**i])
    (levels, kw, _), *_ = map_layer_data(open_map(path).without_threshold())
    assert UNKNOWN not in kw["colormap"]
    np.testing.assert_array_equal(np.asarray(levels[1][...]), memory.classes[::2, ::2])

    napari = pytest.importorskip("napari")
    layer = napari.layers.Labels(np.asarray(data), **{k: v for k, v in map_layer_data(cmap)[0][1].items()
                                                      if k not in ("multiscale",)})
    np.testing.assert_allclose(layer.colormap.map(np.array([UNKNOWN]))[0], UNKNOWN_COLOR)
    assert layer.features.set_index("index").loc[UNKNOWN, "class"] == UNKNOWN_NAME
