"""Hard-negative rounds add only unpainted cells, and only where unpainted means background."""

import numpy as np
import pytest

from napari_tilemap import (
    EpochReport,
    TilemapInputError,
    TrainingRun,
    extract_tiles,
    train,
)
from napari_tilemap.learn._hardneg import MiningProgress, hard_negative_origins, mine_hard_negatives
from napari_tilemap.learn._tiles import TileSet

T = 32


@pytest.fixture
def painted():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, (160, 192))
    labels = np.zeros(image.shape, np.uint8)
    for y, x in ((40, 40), (50, 140), (120, 60), (110, 150)):
        image[y - 3 : y + 4, x - 3 : x + 4] = 10
        labels[y - 2 : y + 3, x - 2 : x + 3] = 1
    image[80:83, 20:170] = 220
    labels[81, 40:150] = 2
    return image, labels


def test_mined_tiles_are_unpainted_cells_called_painted_by_the_model(painted, random_model):
    image, labels = painted
    model = random_model("small", T, 1, classes=3)
    model.network[-1].weight.data *= 50  # confident, so that many cells score high for some class
    tiles = extract_tiles(image, labels, tile_size=T, class_table=model.class_table, seed=0)
    rows = hard_negative_origins(model, tiles, min_score=0.5, max_tiles=10_000, device="cpu")
    assert len(rows) > 10
    from napari_tilemap import predict

    scores = np.asarray(predict(model, image, device="cpu").scores)
    s, gap, m = model.step, tiles.background_gap, tiles.margin
    for _, y, x in rows:
        cy, cx = y + T // 2, x + T // 2
        i, j = (cy - s // 2) // s, (cx - s // 2) // s
        assert (cy - s // 2) % s == 0 and (cx - s // 2) % s == 0  # the centre of a map cell's block
        assert scores[:, i, j].argmax() != 0 and scores[:, i, j].max() >= 0.5  # called a painted class
        assert labels[max(cy - gap + 1, 0) : cy + gap, max(cx - gap + 1, 0) : cx + gap].sum() == 0  # unpainted
        assert 0 <= cy < image.shape[0] and 0 <= cx < image.shape[1]
    best = [scores[:, (y + T // 2) // s, (x + T // 2) // s].max() for _, y, x in rows]
    assert np.all(np.diff(best) <= 1e-6)  # highest scores first
    more = mine_hard_negatives(model, tiles, min_score=0.5, max_tiles=7, device="cpu")
    assert len(more) == len(tiles) + 7
    new = slice(len(tiles), None)
    assert (more.classes[new] == 0).all() and (more.blob_ids[new] == -1).all()
    reflected = np.pad(image, T, mode="symmetric").astype(np.float32)  # windows reaching outside the image
    for (y, x), window in zip(more.origins[new], more.windows[new]):
        np.testing.assert_array_equal(window[..., 0], reflected[y - m + T : y + T + m + T, x - m + T : x + T + m + T])


def test_rounds_fine_tune_on_the_added_tiles(painted):
    image, labels = painted
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    run = TrainingRun(tiles, preset="small", epochs=2, samples_per_epoch=128, device="cpu",
                      hard_negative_rounds=1, hard_negative_score=0.34)
    events = list(run)
    reports = [e for e in events if isinstance(e, EpochReport)]
    searching = [i for i, e in enumerate(events) if isinstance(e, MiningProgress)]
    assert [(events[i].round, events[i].image, events[i].images) for i in searching] == [(1, 1, 1)]
    assert events[searching[0] - 1].round == 0 and events[-1].round == 1  # between the main fit and round 1
    assert run.hard_negatives and run.hard_negatives[0] > 0
    assert len(run.tiles) == len(tiles) + run.hard_negatives[0]
    assert {r.round for r in reports} == {0, 1}
    assert run.model.record["hard_negatives"] == run.hard_negatives
    assert (run.tiles.classes[len(tiles) :] == 0).all()


def test_a_stop_while_searching_for_hard_negatives_keeps_the_trained_model(painted):
    image, labels = painted
    tiles = extract_tiles(image, labels, tile_size=T, seed=0)
    run = TrainingRun(tiles, preset="small", epochs=2, samples_per_epoch=128, device="cpu",
                      hard_negative_rounds=2, hard_negative_score=0.34)
    events = []
    for event in run:
        events.append(event)
        if isinstance(event, MiningProgress):
            run.stop()
    assert isinstance(events[-1], MiningProgress)  # nothing after the stop: no fine-tuning
    assert run.model is not None and run.hard_negatives == [] and len(run.tiles) == len(tiles)
    assert run.model.record["final"]["epoch"] >= 1


def test_hard_negatives_are_refused_without_a_declared_background(painted):
    image, labels = painted
    none = extract_tiles(image, labels, tile_size=T, background="none")
    with pytest.raises(TilemapInputError, match="hard negatives need background='unpainted'"):
        train(none, hard_negative_rounds=1, epochs=1, device="cpu")
    tiles = extract_tiles(image, labels, tile_size=T)
    bare = TileSet(tiles.windows, tiles.classes, tiles.image_index, tiles.origins, tiles.blob_ids,
                   tiles.class_table, tiles.tile_size, tiles.margin, background_gap=tiles.background_gap)
    with pytest.raises(TilemapInputError, match="hard negatives need the training images"):
        TrainingRun(bare, hard_negative_rounds=1)
    with pytest.raises(TilemapInputError, match="hard_negative_rounds must be a whole number"):
        TrainingRun(tiles, hard_negative_rounds=-1)
