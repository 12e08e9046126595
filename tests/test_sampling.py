"""Background tiles cover the unpainted area, obey the centre rule, and training balances the classes."""

import numpy as np
import pytest

from napari_tilemap import TilemapInputError, extract_tiles
from napari_tilemap.learn import _tiles
from napari_tilemap.learn._split import split_tiles
from napari_tilemap.learn._tiles import background_centres
from napari_tilemap.learn._training import (
    MAX_SAMPLES,
    MIN_SAMPLES,
    BatchProgress,
    TrainingRun,
    _sampling_weights,
    shift_room,
)

T = 32


def two_blobs(shape=(256, 320)):
    labels = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels[(yy - 80) ** 2 + (xx - 90) ** 2 <= 16] = 1
    labels[180:183, 150:260] = 2
    image = np.random.default_rng(0).normal(100, 10, shape)
    return image, labels


def test_background_tiles_cover_every_cell_of_the_unpainted_area():
    image, labels = two_blobs()
    tiles = extract_tiles(image, labels, tile_size=T, seed=1)
    bg = tiles.classes == 0
    step = T // 4
    ok = background_centres(labels, tiles.background_gap)
    cells_y, cells_x = ok.shape[0] // step + 1, ok.shape[1] // step + 1
    count = np.zeros((cells_y, cells_x), int)
    np.add.at(count, tuple((tiles.centers[bg] // step).T), 1)
    offered = np.zeros_like(count, bool)
    ys, xs = np.nonzero(ok)
    offered[ys // step, xs // step] = True
    # one tile in every grid cell that holds a valid origin, none elsewhere
    np.testing.assert_array_equal(count, offered.astype(int))
    assert bg.sum() == offered.sum() > 1000
    # up to the image's edge, as map cells: the edge rows and columns of the grid have their tiles
    last_y, last_x = (ok.shape[0] - 1) // step, (ok.shape[1] - 1) // step
    assert count[0, : last_x + 1].all() and count[last_y, : last_x + 1].all()
    assert count[: last_y + 1, 0].all() and count[: last_y + 1, last_x].all()
    # spread: every quarter of the image has its share
    centres = tiles.centers[bg]
    for half_y in (centres[:, 0] < 128, centres[:, 0] >= 128):
        for half_x in (centres[:, 1] < 160, centres[:, 1] >= 160):
            assert (half_y & half_x).sum() > 0.15 * bg.sum()


def test_background_tiles_obey_the_centre_rule_and_include_near_paint_negatives():
    image, labels = two_blobs()
    tiles = extract_tiles(image, labels, tile_size=T, seed=2)
    gap = tiles.background_gap
    assert gap == T // 16 + 2
    bg = tiles.classes == 0
    near = 0
    for (cy, cx), (y, x) in zip(tiles.centers[bg], tiles.origins[bg]):
        # no paint within gap - 1 (Chebyshev) of the centre: the centre block is unpainted
        assert labels[max(cy - gap + 1, 0) : cy + gap, max(cx - gap + 1, 0) : cx + gap].sum() == 0
        near += labels[y : y + T, x : x + T].any()
    assert near > 20  # tiles with paint off-centre are background too
    # and the tiles right at the rule's edge are there: centres exactly gap px from the disc
    disc = np.argwhere(labels == 1)
    d = np.abs(tiles.centers[bg][:, None] - disc[None]).max(-1).min(1)
    assert d.min() == gap


def test_a_larger_gap_keeps_paint_out_of_the_whole_window():
    image, labels = two_blobs()
    tiles = extract_tiles(image, labels, tile_size=T, margin=2, background_gap=T // 2 + 3, seed=0)
    m, p = tiles.margin, T
    reflected = np.pad(labels, p, mode="symmetric")  # what windows reaching outside the image hold
    for y, x in tiles.origins[tiles.classes == 0]:
        assert reflected[y - m + p : y + T + m + p, x - m + p : x + T + m + p].sum() == 0
    with pytest.raises(TilemapInputError, match="background_gap must be at least 1"):
        extract_tiles(image, labels, tile_size=T, background_gap=0)


def test_the_default_count_is_capped_and_still_spread(monkeypatch):
    image, labels = two_blobs()
    monkeypatch.setattr(_tiles, "MAX_BACKGROUND_TILES", 60)
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    centres = tiles.centers[tiles.classes == 0]
    assert len(centres) == 60
    assert np.ptp(centres[:, 0]) > 150 and np.ptp(centres[:, 1]) > 200


def test_an_explicit_count_and_grid_sampling():
    image, labels = two_blobs()
    tiles = extract_tiles(image, labels, tile_size=T, background_tiles=40, seed=0)
    assert tiles.counts()["background"] == 40
    grid = extract_tiles(image, labels, tile_size=T, background_sampling="grid", seed=0)
    assert (grid.origins[grid.classes == 0] % (T // 4) == 0).all()


def test_sampling_weights_balance_the_classes_and_give_hard_negatives_their_share():
    classes = np.array([0] * 90 + [1] * 5 + [2] * 5)
    idx = np.arange(100)
    w = _sampling_weights(classes, idx, 3, None)
    np.testing.assert_allclose([w[classes == c].sum() for c in range(3)], 1.0)
    hard = np.zeros(100, bool)
    hard[80:90] = True
    w = _sampling_weights(classes, idx, 3, hard)
    np.testing.assert_allclose([w[classes == c].sum() for c in range(3)], 1.0)
    assert w[hard].sum() == pytest.approx(0.5)


def test_background_is_split_by_blocks_and_never_shares_pixels_across_the_split():
    image, labels = two_blobs((512, 512))
    # two images: a tile touches only tiles of its own image
    tiles = extract_tiles([image, image[::-1]], [labels, labels[::-1]], tile_size=T, seed=0)
    train_idx, val_idx = split_tiles(tiles, 0.2, seed=0)
    bg = np.flatnonzero(tiles.classes == 0)
    bg_val = np.intersect1d(bg, val_idx)
    bg_train = np.intersect1d(bg, train_idx)
    assert len(bg_val) > 0.1 * len(bg) and len(bg_train) > len(bg_val)
    same = tiles.image_index[bg][:, None] == tiles.image_index[bg_val][None]
    near_val = (same & (np.abs(tiles.origins[bg][:, None] - tiles.origins[bg_val][None]).max(-1) < T)).any(1)
    # training keeps exactly the background tiles that share no pixel with a validation tile of their image
    np.testing.assert_array_equal(np.isin(bg, bg_train), ~near_val)


def test_samples_per_epoch_grow_with_the_tiles_within_bounds():
    image, labels = two_blobs((512, 512))
    few = extract_tiles(image, labels, tile_size=T, background_tiles=30, seed=0)
    many = extract_tiles(image, labels, tile_size=T, seed=0)

    def batches(tiles):
        run = TrainingRun(tiles, preset="small", epochs=1, device="cpu", batch_size=256, val_fraction=0.2)
        first = next(e for e in run if isinstance(e, BatchProgress))
        run.stop()
        return first.batches

    assert batches(few) == MIN_SAMPLES // 256
    n_train = len(split_tiles(many, 0.2, 0)[0])
    assert n_train > MIN_SAMPLES
    assert batches(many) == -(-min(n_train, MAX_SAMPLES) // 256) > batches(few)


def test_training_drops_background_tiles_whose_centre_block_holds_paint():
    image, labels = two_blobs()
    tiles = extract_tiles(image, labels, tile_size=T, background_gap=1, seed=0)
    from napari_tilemap.learn._training import painted_centre_blocks

    for step in (4, 8):
        dropped = painted_centre_blocks(tiles, step)
        assert dropped.any() and (tiles.classes[dropped] == 0).all()
        for k in range(len(tiles)):
            if tiles.classes[k] == 0:
                cy, cx = tiles.centers[k]
                block = labels[cy - step // 2 : cy + step // 2, cx - step // 2 : cx + step // 2]
                assert dropped[k] == block.any()
    run = TrainingRun(tiles, preset="small", epochs=1, samples_per_epoch=64, device="cpu")
    for _ in run:
        pass
    kept = sum(run.model.record["tiles"]["train"].values()) + sum(run.model.record["tiles"]["val"].values())
    assert kept + run.model.record["tiles"]["left_out"] == len(tiles)
    assert run.model.record["tiles"]["left_out"] >= painted_centre_blocks(tiles, 4).sum()


def test_one_long_chain_of_tiles_never_takes_most_of_a_class_to_validation():
    # a long stroke whose tiles chain into one group, plus two small dots of the same class
    image = np.random.default_rng(0).normal(100, 10, (256, 512))
    labels = np.zeros((256, 512), np.uint8)
    labels[120:123, 20:490] = 1
    labels[40:43, 60:63] = 1
    labels[200:203, 400:403] = 1
    labels[60:63, 300:303] = 2
    labels[200:203, 100:103] = 2
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    for seed in range(6):
        _, val_idx = split_tiles(tiles, 0.2, seed)
        for c in (0, 1):
            n = (tiles.classes == c).sum()
            assert (tiles.classes[val_idx] == c).sum() <= 0.5 * n
        # a small image still gives the background its validation share
        assert (tiles.classes[val_idx] == 0).sum() >= 0.1 * (tiles.classes == 0).sum()


def test_augmentation_never_shifts_paint_into_a_background_tiles_centre_block():
    image, labels = two_blobs()
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    step = 4  # the small preset's
    room = shift_room(tiles, step)
    painted = np.argwhere(labels > 0)
    bg = np.flatnonzero(tiles.classes == 0)
    d = np.abs(tiles.centers[bg][:, None] - painted[None]).max(-1).min(1)  # Chebyshev distance to paint
    np.testing.assert_array_equal(room[bg], np.maximum(d - step // 2 - 1, 0))
    assert room[bg].min() == tiles.background_gap - step // 2 - 1 < T // 16 <= room[bg].max()
    assert (room[tiles.classes > 0] >= T // 16).all()  # painted tiles move freely
    # every allowed shift keeps the shifted centre block free of paint
    for i in bg[d <= 8]:
        r = room[i]
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                cy, cx = tiles.centers[i] + (dy, dx)
                assert not labels[max(cy - step // 2, 0) : cy + step // 2, max(cx - step // 2, 0) : cx + step // 2].any()


def test_a_validation_blind_to_a_trained_class_does_not_choose_the_checkpoint():
    image, labels = two_blobs()  # one blob of each painted class: only background can validate
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    run = TrainingRun(tiles, preset="small", epochs=6, samples_per_epoch=128, device="cpu")
    with pytest.warns(UserWarning, match="too few separate painted blobs"):
        reports = [e for e in run if not isinstance(e, BatchProgress)]
    assert all(np.isfinite(r.val_loss) for r in reports)  # background validates ...
    best = np.inf
    for r in reports:  # ... but the kept epoch is the one with the lowest training loss
        expected = r.train_loss < best or r.epoch == 3
        best = r.train_loss if expected else best
        assert r.best == expected, (r.epoch, r.train_loss, r.val_loss)


def test_without_background_a_class_painted_in_fewer_than_five_places_trains_on_all_of_them():
    # class 1 dotted in four places, class 2 in five, each more than a tile from the others
    image = np.random.default_rng(0).normal(100, 10, (256, 320))
    labels = np.zeros((256, 320), np.uint8)
    for k, y in enumerate((20, 70, 120, 170, 220)):
        labels[y : y + 3, 60:63] = 1 if k < 4 else 0
        labels[y : y + 3, 250:253] = 2
    tiles = extract_tiles(image, labels, tile_size=T, background="none", seed=0)
    assert tiles.counts() == {"class 1": 4, "class 2": 5}
    for seed in range(3):
        train_idx, val_idx = split_tiles(tiles, 0.2, seed)
        assert (tiles.classes[train_idx] == 0).sum() == 4  # class 1 (index 0): all four train
        assert (tiles.classes[val_idx] == 1).sum() == 1  # class 2: one place of five validates
    run = TrainingRun(tiles, preset="small", epochs=1, samples_per_epoch=64, device="cpu")
    with pytest.warns(UserWarning) as caught:
        for _ in run:
            pass
    alone = [str(w.message) for w in caught if "too few separate painted blobs" in str(w.message)]
    assert len(alone) == 1 and "'class 1'" in alone[0] and "'class 2'" not in alone[0]
    assert "all their tiles train" in alone[0] and f"at least 5 places more than a tile ({T} px) apart" in alone[0]
    assert run.model.record["tiles"]["train"]["class 1"] == 4 and run.model.record["tiles"]["val"]["class 2"] == 1
    # with a background class, the held-out places tell background from paint: four places validate one
    with_bg = extract_tiles(image, labels, tile_size=T, seed=0)
    _, val_idx = split_tiles(with_bg, 0.2, 0)
    assert len(np.unique(with_bg.blob_ids[val_idx][with_bg.classes[val_idx] == 1])) == 1
    # blobs that chain into few places are told the same: they train whole, not "cannot be validated"
    labels[:, 60:63] = 0
    for y in (30, 40, 50, 180, 190, 200):
        labels[y : y + 2, 100:160] = 1
    run = TrainingRun(extract_tiles(image, labels, tile_size=T, background="none", seed=0), preset="small",
                      epochs=1, samples_per_epoch=64, device="cpu")
    with pytest.warns(UserWarning) as caught:
        for _ in run:
            pass
    messages = [str(w.message) for w in caught]
    assert any("'class 1'" in m and "all their tiles train" in m for m in messages), messages
    assert not any("cannot be validated" in m for m in messages)


def test_crowded_blobs_are_told_apart_from_a_single_blob_and_no_validation_asked_means_no_warning():
    # class 1: two groups of three short strokes 12 px apart, whose tiles chain into two groups
    # too large to hold out; class 2: two dots far apart, each too large a share to hold out
    image = np.random.default_rng(0).normal(100, 10, (256, 320))
    labels = np.zeros((256, 320), np.uint8)
    for y0 in (40, 190):
        for k in range(3):
            labels[y0 + 12 * k : y0 + 12 * k + 2, 40:100] = 1
    labels[60:63, 250:253] = 2
    labels[200:203, 250:253] = 2
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    assert len(np.unique(tiles.blob_ids[tiles.classes == 1])) == 6
    run = TrainingRun(tiles, preset="small", epochs=1, samples_per_epoch=64, device="cpu")
    with pytest.warns(UserWarning) as caught:
        for _ in run:
            pass
    messages = [str(w.message) for w in caught]
    crowded = [m for m in messages if "cannot be validated" in m]
    assert len(crowded) == 1 and "'class 1'" in crowded[0] and "'class 2'" not in crowded[0]
    assert f"more than a tile ({T} px) away" in crowded[0]
    alone = [m for m in messages if "too few separate painted blobs" in m]
    assert len(alone) == 1 and "'class 2'" in alone[0] and "'class 1'" not in alone[0]
    assert "at least three places apart" in alone[0]
    assert np.isnan(run.history[-1].per_class_recall["class 1"])
    # a third dot lets class 2 validate, and its warning goes
    labels[130:133, 250:253] = 2
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    run = TrainingRun(tiles, preset="small", epochs=1, samples_per_epoch=64, device="cpu")
    with pytest.warns(UserWarning) as caught:
        for _ in run:
            pass
    assert not any("too few separate painted blobs" in str(w.message) for w in caught)
    assert np.isfinite(run.history[-1].per_class_recall["class 2"])

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # val_fraction=0 was asked for: nothing to warn about
        run = TrainingRun(tiles, preset="small", epochs=1, samples_per_epoch=64, device="cpu", val_fraction=0)
        for _ in run:
            pass
    assert run.model is not None and np.isnan(run.history[-1].val_loss)
