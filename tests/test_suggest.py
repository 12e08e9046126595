"""Suggestions: ranked by the margin between the two best scores, spaced, in image pixels."""

import numpy as np
import pytest

from napari_tilemap import ClassTable, TilemapInputError, predict
from napari_tilemap._geometry import MapGeometry
from napari_tilemap.analysis._suggest import suggest
from napari_tilemap.maps._mapstore import ClassificationMap

from .test_regions import write_store


def made_map(scores, step=8, tile=32):
    k, h, w = scores.shape
    table = ClassTable.from_values(range(1, k))
    classes = np.asarray(table.values, np.uint8)[scores.argmax(0)]
    return ClassificationMap(scores.astype(np.float32), classes, MapGeometry(tile, step, (h * step, w * step)), table)


def random_scores(shape=(3, 30, 40), seed=0):
    x = np.random.default_rng(seed).gamma(0.5, size=shape)
    return (x / x.sum(0)).astype(np.float32)


def test_suggestions_are_the_smallest_margins_spaced_apart():
    scores = random_scores()
    cmap = made_map(scores)
    s = suggest(cmap, n=15, spacing=40)
    top2 = np.sort(scores, axis=0)[-2:]
    margin = top2[1] - top2[0]
    assert len(s) == 15
    np.testing.assert_allclose(s.margins, margin[s.cells[:, 0], s.cells[:, 1]], rtol=1e-6)
    assert np.all(np.diff(s.margins) >= 0)
    d = np.hypot(*(s.positions[:, None] - s.positions[None]).transpose(2, 0, 1))
    assert d[~np.eye(15, dtype=bool)].min() >= 40
    # greedy: every cell with a smaller margin than a suggestion lies too close to an earlier suggestion
    for rank, (i, j) in enumerate(s.cells):
        smaller = np.argwhere(margin < s.margins[rank])
        for y, x in smaller:
            centre = cmap.geometry.cell_centers(y, x)
            assert np.hypot(*(s.positions[:rank] - centre).T).min() < 40
    # positions are the cells' centres in image pixels: offset + (i*S, j*S)
    np.testing.assert_allclose(s.positions, s.cells * 8 + 3.5)
    np.testing.assert_allclose(s.scores, scores[:, s.cells[:, 0], s.cells[:, 1]].T, rtol=1e-6)
    assert set(s.best) <= {0, 1, 2} and (s.best != s.runner_up).all()


def test_without_spacing_the_n_smallest_margins_are_taken_and_the_default_is_the_tile_size():
    scores = random_scores(seed=1)
    cmap = made_map(scores)
    top2 = np.sort(scores, axis=0)[-2:]
    margin = (top2[1] - top2[0]).ravel()
    s = suggest(cmap, n=25, spacing=0)
    np.testing.assert_allclose(np.sort(s.margins), np.sort(margin)[:25], rtol=1e-6)
    assert suggest(cmap, n=3).spacing == 32
    crowded = suggest(cmap, n=10_000, spacing=100)
    assert 0 < len(crowded) < 100  # the spacing leaves room for only so many


def test_features_name_the_classes_of_each_suggestion():
    s = suggest(made_map(random_scores()), n=5)
    f = s.features()
    assert list(f["rank"]) == [1, 2, 3, 4, 5]
    assert set(f["best"]) <= {"background", "class 1", "class 2"}
    np.testing.assert_allclose(f["margin"], s.margins)
    np.testing.assert_allclose(f["score class 1"], s.scores[:, 1])


def test_suggest_with_a_model_predicts_the_image(random_model):
    model = random_model("small", 32, 1, classes=3)
    image = np.random.default_rng(0).integers(0, 255, (96, 128)).astype(np.uint8)
    direct = suggest(model, image, n=6, device="cpu")
    via_map = suggest(predict(model, image, device="cpu"), n=6)
    np.testing.assert_array_equal(direct.cells, via_map.cells)
    assert (direct.positions < [96, 128]).all()


def test_a_map_read_block_by_block_gives_the_same_suggestions(tmp_path, random_model):
    scores = random_scores((3, 61, 47), seed=4)
    scores[:, 10:30, 5:40] = np.round(scores[:, 10:30, 5:40], 1)  # many equal margins: ties go row-major
    cmap = made_map(scores)
    whole = suggest(cmap, n=30, spacing=20, block_cells=1000)
    assert len(whole) == 30
    stored = write_store(tmp_path / "m.zarr", cmap, chunk=9, pyramid=False)
    for block in (5, 8, 13):
        for source in (cmap, stored):
            again = suggest(source, n=30, spacing=20, block_cells=block)
            np.testing.assert_array_equal(again.cells, whole.cells)
            np.testing.assert_allclose(again.scores, whole.scores)
    # a model's map larger than one block goes through a temporary store and gives the same suggestions
    model = random_model("small", 32, 1, classes=3)
    image = np.random.default_rng(0).integers(0, 255, (96, 128)).astype(np.uint8)
    np.testing.assert_array_equal(suggest(model, image, n=6, device="cpu", block_size=64).cells,
                                  suggest(predict(model, image, device="cpu"), n=6).cells)


@pytest.mark.parametrize("kw, match", [
    ({"n": 0}, "n must be a whole number"),
    ({"spacing": -1}, "spacing must be a distance"),
])
def test_bad_arguments_are_refused(kw, match):
    with pytest.raises(TilemapInputError, match=match):
        suggest(made_map(random_scores()), **kw)


def test_a_model_without_an_image_is_refused(random_model):
    with pytest.raises(TilemapInputError, match="needs the image"):
        suggest(random_model(), None)
