import numpy as np
import pytest

from napari_tilemap import ClassTable, TilemapInputError, extract_tiles, sample_surface


def discs_and_bar(shape=(200, 240)):
    """Labels with two small discs of class 1, one of class 2, and a long bar of class 2."""
    labels = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = {(50, 60): 1, (140, 50): 1, (60, 170): 2}
    for (y, x), v in centres.items():
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= 9] = v
    labels[170:173, 80:220] = 2  # a 140 px bar
    return labels, centres


def test_without_a_background_small_blobs_get_one_tile_centred_on_them_and_large_blobs_several():
    labels, centres = discs_and_bar()
    image = np.random.default_rng(0).integers(0, 255, labels.shape).astype(np.uint8)
    tiles = extract_tiles(image, labels, tile_size=24, margin=0, background="none")
    table = tiles.class_table
    assert table.values == (1, 2)
    blob_sizes = np.bincount(tiles.blob_ids)
    assert sorted(blob_sizes)[:3] == [1, 1, 1]
    for y, x in centres:
        hits = [c for c, k in zip(tiles.centers, tiles.classes) if np.abs(c - (y, x)).max() <= 1]
        assert len(hits) == 1, (y, x)
    bar = [(c, k) for c, k, b in zip(tiles.centers, tiles.classes, tiles.blob_ids) if blob_sizes[b] > 1]
    assert len(bar) >= 140 // 6 - 1  # one tile per T/4 = 6 px of bar
    for (y, x), k in bar:
        assert labels[y, x] == 2 and table.values[k] == 2
    assert tiles.counts() == {"class 1": 2, "class 2": 1 + len(bar)}


def test_with_a_background_every_grid_cell_a_blob_covers_gets_a_tile_on_its_pixel_nearest_the_cell_centre():
    labels, centres = discs_and_bar()
    image = np.random.default_rng(0).integers(0, 255, labels.shape).astype(np.uint8)
    tiles = extract_tiles(image, labels, tile_size=32, margin=0, background_tiles=5)
    s = 32 // 8  # the medium preset's map step at T = 32... and the grid of painted tiles
    from skimage.measure import label

    blobs = label(labels > 0, connectivity=2)
    expected = set()
    for b in range(1, blobs.max() + 1):  # independently: every cell, every pixel, the nearest
        ys, xs = np.nonzero(blobs == b)
        for cy, cx in {(y // s, x // s) for y, x in zip(ys, xs)}:
            inside = (ys // s == cy) & (xs // s == cx)
            d = (ys[inside] - (cy * s + s / 2)) ** 2 + (xs[inside] - (cx * s + s / 2)) ** 2
            nearest = np.flatnonzero(d == d.min())
            expected.add((b, frozenset((int(ys[inside][i]), int(xs[inside][i])) for i in nearest)))
    painted = tiles.blob_ids >= 0
    got = [(int(blobs[y, x]), (int(y), int(x))) for y, x in tiles.centers[painted]]
    assert len(got) == len(expected)
    for b, pixels in expected:
        assert sum(1 for gb, p in got if gb == b and p in pixels) == 1
    for (y, x), k in zip(tiles.centers[painted], tiles.classes[painted]):
        assert tiles.class_table.values[k] == labels[y, x]  # each tile is its pixel's class
    assert tiles.counts()["class 1"] == sum(1 for b, _ in expected if labels[blobs == b][0] == 1)
    with pytest.raises(TilemapInputError, match="painted_spacing must be at least 1"):
        extract_tiles(image, labels, tile_size=32, painted_spacing=0)


def test_tiles_are_the_image_pixels_at_their_origin_for_gray_rgb_and_any_dtype():
    labels, _ = discs_and_bar()
    rng = np.random.default_rng(1)
    for image in (
        rng.integers(0, 255, labels.shape).astype(np.uint8),
        rng.integers(0, 65535, labels.shape + (3,)).astype(np.uint16),
        rng.normal(0, 1, labels.shape).astype(np.float64),
    ):
        tiles = extract_tiles(image, labels, tile_size=32)
        img = image.reshape(*labels.shape, -1)
        assert tiles.tiles.shape[1:] == (32, 32, img.shape[2]) and tiles.tiles.dtype == np.float32
        padded = np.pad(img, ((64, 64), (64, 64), (0, 0)), mode="symmetric")
        for (y, x), tile in zip(tiles.origins, tiles.tiles):
            np.testing.assert_array_equal(tile, padded[y + 64 : y + 96, x + 64 : x + 96].astype(np.float32))


def test_tiles_near_the_edge_stay_centred_on_their_paint_with_reflected_pixels_outside():
    image = np.random.default_rng(0).integers(0, 255, (96, 128)).astype(np.uint8)
    labels = np.zeros(image.shape, np.uint8)
    labels[2:5, 3:6] = 1  # a dot in the corner
    labels[90:93, 60:63] = 1  # and one by the bottom edge
    labels[40:43, 60:63] = 2
    tiles = extract_tiles(image, labels, tile_size=32, seed=0)
    painted = tiles.classes > 0
    for cy, cx in tiles.centers[painted]:
        assert labels[cy, cx] > 0  # centred on the paint, not shifted inwards
    assert (tiles.origins[painted] < 0).any() and (tiles.origins[painted].max(0) + 32 > image.shape).any()
    m = tiles.margin
    padded = np.pad(image, 64, mode="symmetric").astype(np.float32)
    for (y, x), win in zip(tiles.origins, tiles.windows):
        np.testing.assert_array_equal(win[..., 0], padded[y - m + 64 : y + 32 + m + 64, x - m + 64 : x + 32 + m + 64])


@pytest.mark.parametrize("sampling", ["random", "grid"])
def test_background_tiles_keep_their_centre_away_from_paint_and_whole_windows_with_a_large_gap(sampling):
    labels, _ = discs_and_bar()
    tiles = extract_tiles(np.zeros(labels.shape), labels, tile_size=32, background_tiles=30,
                          background_sampling=sampling, seed=3)
    bg = tiles.classes == 0
    assert bg.sum() == 30 and (tiles.blob_ids[bg] == -1).all()
    g = tiles.background_gap
    for cy, cx in tiles.centers[bg]:
        assert labels[cy - g + 1 : cy + g, cx - g + 1 : cx + g].sum() == 0
    far = extract_tiles(np.zeros(labels.shape), labels, tile_size=32, background_tiles=30, margin=2,
                        background_gap=16 + 2 + 1, background_sampling=sampling, seed=3)
    m = far.margin
    reflected = np.pad(labels, 32, mode="symmetric")  # windows reaching outside the image
    for y, x in far.origins[far.classes == 0]:
        # neither the tile nor the margin used for shift augmentation touches paint
        assert reflected[y - m + 32 : y + 32 + m + 32, x - m + 32 : x + 32 + m + 32].sum() == 0


def test_many_images_keep_provenance():
    labels, _ = discs_and_bar()
    tiles = extract_tiles([np.zeros(labels.shape), np.ones(labels.shape)], [labels, labels[::-1].copy()],
                          tile_size=24)
    assert set(tiles.image_index) == {0, 1}
    assert len(np.unique(tiles.blob_ids[tiles.blob_ids >= 0])) == 8  # 4 blobs in each image
    assert (tiles.tiles[tiles.image_index == 1] == 1).all()


def test_background_none_uses_only_the_painted_classes():
    labels, _ = discs_and_bar()
    tiles = extract_tiles(np.zeros(labels.shape), labels, tile_size=24, background="none",
                          class_names={1: "rust", 2: "paint"})
    assert tiles.class_table.values == (1, 2)
    assert tiles.class_table.names == ("rust", "paint")
    assert (tiles.blob_ids >= 0).all()


def test_given_class_table_is_used_and_checked():
    labels, _ = discs_and_bar()
    table = ClassTable.from_values([1, 2, 5], names=["a", "b", "c"])
    tiles = extract_tiles(np.zeros(labels.shape), labels, tile_size=24, class_table=table)
    assert tiles.class_table is table and tiles.counts()["c"] == 0
    with pytest.raises(TilemapInputError, match=r"painted label values \[2\] are not in the class table"):
        extract_tiles(np.zeros(labels.shape), labels, tile_size=24, class_table=ClassTable.from_values([1]))


@pytest.mark.parametrize(
    "images, labels, kw, match",
    [
        (np.zeros((50, 60)), np.zeros((50, 61), int), {}, r"labels\[0\] shape \(50, 61\) differs from the image shape \(50, 60\)"),
        (np.zeros((50, 60)), np.zeros((50, 60), int), {}, "no painted pixels"),
        (np.zeros((50, 60)), np.ones((50, 60), int), {"background": "none"}, "only one class"),
        (np.zeros((50, 60)), np.ones((50, 60), int), {}, "no 24x24 tile has its centre 3 px or more away from paint"),
        (np.zeros((50, 60)), np.eye(50, 60, dtype=int), {"tile_size": 64}, "larger than image 0"),
        (np.zeros((2, 3, 50, 60)), np.eye(50, 60, dtype=int), {}, r"expected \(Y, X\) or \(Y, X, C\)"),
        (np.zeros((3, 50, 60)), np.eye(50, 60, dtype=int), {}, r"channel-first: use np.moveaxis"),
        (np.full((50, 60), np.nan), np.eye(50, 60, dtype=int), {}, "NaN"),
        ([np.zeros((50, 60))] * 2, [np.eye(50, 60, dtype=int)], {}, "got 2 images but 1 labels"),
        ([np.zeros((50, 60)), np.zeros((50, 60, 3))], [np.eye(50, 60, dtype=int)] * 2, {}, "same number of channels"),
        (np.zeros((50, 60)), np.eye(50, 60) * 0.5, {}, "whole numbers"),
        (np.zeros((50, 60)), np.eye(50, 60, dtype=int) * 300, {}, "0..255"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(images, labels, kw, match):
    kw = {"tile_size": 24, **kw}
    with pytest.raises(TilemapInputError, match=match):
        extract_tiles(images, labels, **kw)


def test_a_defect_free_image_given_without_labels_is_background_throughout():
    s = sample_surface((256, 256), seed=0)
    clean = np.full((200, 240), 120, np.uint8)
    tiles = extract_tiles([s.image, clean], [s.labels, None], tile_size=32, seed=0)
    from_clean = tiles.image_index == 1
    assert from_clean.sum() > 0 and (tiles.classes[from_clean] == 0).all()
    # as many as an all-zero labels image gives: None is that image, unpainted
    same = extract_tiles([s.image, clean], [s.labels, np.zeros((200, 240), np.uint8)], tile_size=32, seed=0)
    np.testing.assert_array_equal(tiles.origins, same.origins)


def test_a_painted_area_too_large_for_memory_is_thinned_over_every_blob(monkeypatch):
    from napari_tilemap.learn import _tiles

    labels, _ = discs_and_bar()
    image = np.random.default_rng(0).integers(0, 255, labels.shape).astype(np.uint8)
    full = extract_tiles(image, labels, tile_size=32, margin=0, background_tiles=5)
    painted = full.blob_ids >= 0
    monkeypatch.setattr(_tiles, "MAX_PAINTED_BYTES", 40 * 32 * 32 * 4)  # room for 40 windows
    with pytest.warns(UserWarning, match=f"{painted.sum()} painted tiles would take more than"):
        thin = extract_tiles(image, labels, tile_size=32, margin=0, background_tiles=5)
    kept = thin.blob_ids >= 0
    assert kept.sum() <= 40 and set(thin.blob_ids[kept]) == set(full.blob_ids[painted])  # every blob stays
    # what stays are tiles of the full set, spread over the bar from end to end
    assert {tuple(c) for c in thin.centers[kept]} <= {tuple(c) for c in full.centers[painted]}
    bar = thin.centers[kept & (thin.blob_ids == np.bincount(full.blob_ids[painted]).argmax())]
    assert bar[:, 1].min() < 90 and bar[:, 1].max() > 210
