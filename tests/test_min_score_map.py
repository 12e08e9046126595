"""Min peak score on the map itself: weak regions become unknown, in memory, block by block and in a store."""

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi
from skimage.measure import label

from napari_tilemap import ClassificationMap, ClassTable, TilemapInputError, open_map
from napari_tilemap._classes import UNKNOWN
from napari_tilemap._geometry import MapGeometry
from napari_tilemap._layerdata import map_layer_data
from napari_tilemap.analysis._regions import regions
from napari_tilemap.maps._mapstore import create_store, pyramid_levels, update_attrs
from napari_tilemap.maps._peakscore import min_score_classes
from napari_tilemap.maps._pyramid import build_pyramid
from napari_tilemap.maps._threshold import clear_threshold, write_threshold

TABLE = ClassTable.from_values([0, 1, 2], names=["pit", "scratch"])
VALUES = np.asarray(TABLE.values, np.uint8)


def blob_map(shape=(70, 90), seed=0) -> ClassificationMap:
    """Smooth softmax scores (regions of many cells, some across any block grid) and their best classes."""
    rng = np.random.default_rng(seed)
    raw = ndi.gaussian_filter(rng.normal(size=(3, *shape)), (0, 2.5, 2.5)) * 12
    raw[0] += 1.0  # mostly background, as on a surface with a few defects
    scores = (np.exp(raw) / np.exp(raw).sum(0)).astype(np.float32)
    return ClassificationMap(scores, VALUES[scores.argmax(0)], MapGeometry(16, 4, (shape[0] * 4, shape[1] * 4)),
                             TABLE)


def reference(classes: np.ndarray, scores: np.ndarray, floor: dict[int, float]) -> np.ndarray:
    """Whole-map labelling with scikit-image, one class at a time: cells of regions whose peak own-class
    score is below the class's floor become 255."""
    out = classes.copy()
    for k, v in enumerate(TABLE.values):
        if v == 0 or floor.get(v, 0) <= 0:
            continue
        lab = label(classes == v, connectivity=2)
        for r in range(1, lab.max() + 1):
            if scores[k][lab == r].max() < floor[v]:
                out[lab == r] = UNKNOWN
    return out


def store_of(path, cmap: ClassificationMap, chunk: int = 16) -> ClassificationMap:
    group = create_store(path, cmap.geometry, cmap.class_table, chunk=chunk)
    group["scores"][...] = cmap.scores
    group["classes"][...] = cmap.classes
    group["done"][...] = 1
    update_attrs(group, complete=True, pyramid_levels=build_pyramid(group, min_size=16, chunk=chunk))
    return open_map(path)


def test_weak_regions_become_unknown_whole_strong_ones_keep_every_cell():
    cmap = blob_map()
    classes, scores = np.asarray(cmap.classes), np.asarray(cmap.scores)
    peaks = regions(cmap)["max_score"]
    cut = float(np.median(peaks))
    want = reference(classes, scores, {1: cut, 2: cut})
    assert 0 < (want == UNKNOWN).sum() < (classes > 0).sum()  # some regions go, some stay
    ruled = cmap.with_min_score(cut)
    assert ruled.min_score == cut and ruled.threshold is None and ruled.rejects
    np.testing.assert_array_equal(ruled.classes, want)
    np.testing.assert_array_equal(ruled.best_classes, classes)
    assert (ruled.legend()[-1][0], ruled.attrs()["min_score"]) == (UNKNOWN, cut)
    # the same cells, whatever the blocks the map is read in (regions cross block borders)
    for block in (7, 16, 1000):
        np.testing.assert_array_equal(min_score_classes(cmap, cut, block_cells=block), want)
    # its regions are the strong ones of the plain map, at full size
    kept = regions(ruled)
    strong = regions(cmap, min_score=cut)
    every = regions(cmap)
    np.testing.assert_array_equal(kept["first_row"], every["first_row"][every["max_score"] >= cut])
    np.testing.assert_array_equal(kept["cells"], strong["cells"])
    # per class, after a threshold, and removed again
    np.testing.assert_array_equal(cmap.with_min_score({"scratch": 0.99}).classes,
                                  reference(classes, scores, {2: 0.99}))
    both = cmap.with_threshold(0.6).with_min_score(0.95)
    np.testing.assert_array_equal(both.classes, reference(np.asarray(cmap.with_threshold(0.6).classes), scores,
                                                          {1: 0.95, 2: 0.95}))
    assert both.with_threshold(0.5).min_score == 0.95  # a new threshold keeps the min score
    np.testing.assert_array_equal(both.with_min_score(None).classes, cmap.with_threshold(0.6).classes)
    plain = both.without_threshold()
    assert plain.threshold is None and plain.min_score is None and not plain.rejects
    np.testing.assert_array_equal(plain.classes, classes)
    np.testing.assert_array_equal(cmap.with_min_score(0).classes, classes)  # 0: never unknown


def test_a_min_score_is_checked_by_name():
    cmap = blob_map((20, 20))
    with pytest.raises(TilemapInputError, match="min_score is 1.5, outside"):
        cmap.with_min_score(1.5)
    with pytest.raises(TilemapInputError, match="min_score key 'crack'"):
        cmap.with_min_score({"crack": 0.5})


def test_a_stored_map_gets_the_same_cells_lazily_and_can_record_them(tmp_path):
    memory = blob_map((90, 70), seed=1)
    path = tmp_path / "m.zarr"
    stored = store_of(path, memory)
    want = np.asarray(memory.with_threshold(0.55).with_min_score({"pit": 0.97, "scratch": 0.9}).classes)
    lazy = stored.with_threshold(0.55).with_min_score({"pit": 0.97, "scratch": 0.9})
    assert not isinstance(lazy.classes, np.ndarray)
    np.testing.assert_array_equal(np.asarray(lazy.classes), want)
    assert open_map(path).min_score is None  # the store is untouched

    written = write_threshold(path, 0.55, min_score={"pit": 0.97, "scratch": 0.9})
    attrs = zarr.open_group(str(path), mode="r").attrs["tilemap"]
    assert attrs["threshold"] == 0.55 and attrs["min_score"] == {"0": 0, "1": 0.97, "2": 0.9}
    assert attrs["unknown"]["value"] == UNKNOWN
    reopened = open_map(path)
    assert reopened.min_score == {0: 0.0, 1: 0.97, 2: 0.9} and reopened.threshold == 0.55
    for cmap in (written, reopened):
        np.testing.assert_array_equal(np.asarray(cmap.classes[...]), want)
        np.testing.assert_array_equal(np.asarray(cmap.best_classes[...]), memory.classes)
    levels, _ = pyramid_levels(path)
    assert len(levels) > 2
    for i, level in enumerate(levels):  # the display pyramid's rule: every 2**i-th cell
        np.testing.assert_array_equal(np.asarray(level[...]), want[:: 2**i, :: 2**i])
    other, _ = pyramid_levels(path, min_score=0.99)  # another min score: computed lazily
    np.testing.assert_array_equal(np.asarray(other[1]), np.asarray(
        memory.with_threshold(0.55).with_min_score(0.99).classes)[::2, ::2])
    layer = map_layer_data(reopened)[0]
    assert layer[1]["metadata"]["tilemap_map"]["min_score"] == {"0": 0, "1": 0.97, "2": 0.9}
    assert layer[1]["features"]["class"][-1] == "unknown" and layer[1]["colormap"][UNKNOWN] is not None

    # a min score alone; bad input never touches the store; clearing removes both
    only = write_threshold(path, min_score=0.9)
    assert only.threshold is None and only.min_score == 0.9
    np.testing.assert_array_equal(np.asarray(only.classes[...]), np.asarray(memory.with_min_score(0.9).classes))
    with pytest.raises(TilemapInputError, match="min_score is 2.0, outside"):
        write_threshold(path, min_score=2)
    with pytest.raises(TilemapInputError, match="give a threshold or a min_score"):
        write_threshold(path)
    assert open_map(path).min_score == 0.9
    plain = clear_threshold(path)
    assert plain.min_score is None and zarr.open_group(str(path), mode="r").attrs["tilemap"]["min_score"] is None
    np.testing.assert_array_equal(np.asarray(plain.classes[...]), memory.classes)


def test_predict_applies_the_min_score_training_suggested_unless_told_otherwise(tmp_path, sample, trained):
    import copy

    from napari_tilemap import predict

    model = copy.deepcopy(trained[1])
    image = sample.image[:256, :256]
    raw = predict(model, image, device="cpu", min_score=None)
    assert raw.min_score is None and model.min_score is None  # a balanced model suggests none
    best, top = np.asarray(raw.best_classes), np.asarray(raw.scores).max(0)
    peaks = [top[regions == r].max() for k in (1, 2) for regions in [label(best == k, connectivity=2)]
             for r in range(1, regions.max() + 1)]
    ordered = np.sort(peaks)  # a cut in the widest gap between regions' peaks, clear of rounding
    gap = int(np.argmax(np.diff(ordered)))
    assert ordered[gap + 1] - ordered[gap] > 1e-3
    cut = dict.fromkeys(model.class_table.names[1:], float(ordered[gap : gap + 2].mean()))
    model.record = {**model.record, "prior": {**model.record["prior"], "min_score": cut}}  # as training writes it
    expected = np.asarray(raw.with_min_score(cut).classes)
    assert (expected == UNKNOWN).any() and ((expected > 0) & (expected != UNKNOWN)).any()

    in_memory = predict(model, image, device="cpu")
    np.testing.assert_array_equal(np.asarray(in_memory.classes), expected)
    stored = predict(model, image, tmp_path / "m.zarr", device="cpu", block_size=128)
    np.testing.assert_array_equal(np.asarray(open_map(tmp_path / "m.zarr").classes), expected)
    assert stored.min_score == open_map(tmp_path / "m.zarr").min_score == {0: 0.0, 1: cut["pit"], 2: cut["scratch"]}
    np.testing.assert_array_equal(np.asarray(stored.best_classes), best)  # the best classes are kept beside
    # run again on the finished store, asking for every region: the earlier rule goes
    again = predict(model, image, tmp_path / "m.zarr", device="cpu", block_size=128, min_score=None)
    assert again.min_score is None and open_map(tmp_path / "m.zarr").min_score is None
    np.testing.assert_array_equal(np.asarray(open_map(tmp_path / "m.zarr").classes), best)
    # a min score of one's own replaces the model's; a bad one fails before any work
    np.testing.assert_array_equal(np.asarray(predict(model, image, device="cpu", min_score=0.99).classes),
                                  np.asarray(raw.with_min_score(0.99).classes))
    with pytest.raises(TilemapInputError, match="min_score key 'crack'"):
        predict(model, image, tmp_path / "bad.zarr", device="cpu", min_score={"crack": 0.5})
    assert not (tmp_path / "bad.zarr").exists()


def test_a_store_is_never_complete_without_the_min_score_it_was_written_with(tmp_path, sample, trained, monkeypatch):
    import copy

    import napari_tilemap.maps._threshold as threshold_module
    from napari_tilemap import predict

    model = copy.deepcopy(trained[1])
    cut = {"pit": 0.9, "scratch": 0.9}
    model.record = {**model.record, "prior": {**model.record["prior"], "min_score": cut}}
    image = sample.image[:128, :128]
    expected = np.asarray(predict(model, image, device="cpu", min_score=None).with_min_score(cut).classes)

    def killed(*args, **kwargs):  # a kill once the map is finished, before a separate rule write
        raise KeyboardInterrupt

    monkeypatch.setattr(threshold_module, "write_threshold", killed)
    monkeypatch.setattr(threshold_module, "clear_threshold", killed)
    for overwrite in (False, True):  # a new store, then one written beside the old and swapped in
        path = tmp_path / "m.zarr"
        predict(model, image, path, device="cpu", block_size=64, overwrite=overwrite)
        stored = open_map(path)
        assert stored.complete and stored.min_score == {0: 0.0, 1: 0.9, 2: 0.9} and stored.threshold is None
        np.testing.assert_array_equal(np.asarray(stored.classes), expected)
    # run again on the finished store with the same rules: they stand as recorded, nothing is rewritten
    again = predict(model, image, path, device="cpu", block_size=64)
    assert again.min_score == {0: 0.0, 1: 0.9, 2: 0.9} and again.threshold is None
    np.testing.assert_array_equal(np.asarray(again.classes), expected)
    # a threshold too: recorded with the min score as the store is finished, the same map as in memory
    in_memory = predict(model, image, device="cpu", threshold=0.7)
    assert in_memory.threshold == 0.7 and in_memory.min_score == {0: 0.0, 1: 0.9, 2: 0.9}
    raw = predict(model, image, device="cpu", min_score=None)
    np.testing.assert_array_equal(np.asarray(in_memory.classes),
                                  np.asarray(raw.with_threshold(0.7).with_min_score(cut).classes))
    predict(model, image, tmp_path / "t.zarr", device="cpu", block_size=64, threshold=0.7)
    stored = open_map(tmp_path / "t.zarr")
    assert stored.complete and stored.threshold == 0.7 and stored.min_score == in_memory.min_score
    np.testing.assert_array_equal(np.asarray(stored.classes), np.asarray(in_memory.classes))
    with pytest.raises(TilemapInputError, match="threshold"):
        predict(model, image, tmp_path / "bad.zarr", device="cpu", threshold=1.5)
    assert not (tmp_path / "bad.zarr").exists()
