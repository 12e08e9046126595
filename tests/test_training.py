import threading

import numpy as np
import pytest
import torch

from napari_tilemap import (
    BatchProgress,
    EpochReport,
    TilemapInputError,
    TrainingRun,
    extract_tiles,
    predict,
    train,
)
from napari_tilemap.learn._split import grouped_split, overlap_groups
from napari_tilemap.learn._training import (
    TrainConfig,
    _autocast,
    _evaluate,
    _loss_function,
    _random_dihedral,
)


def test_training_from_scratch_reaches_90_percent_validation_accuracy(trained):
    tiles, model, events = trained
    final = model.record["final"]
    assert final["val_accuracy"] >= 0.90, model.record
    assert set(final["per_class_recall"]) == set(tiles.class_table.names)
    reports = [e for e in events if isinstance(e, EpochReport)]
    assert reports and all(np.isfinite(r.train_loss) for r in reports)
    assert any(isinstance(e, BatchProgress) for e in events)
    rec = model.record
    assert rec["seed"] == 0 and rec["versions"]["torch"] == torch.__version__
    # background tiles overlapping a validation tile are left out of training
    assert sum(rec["tiles"]["train"].values()) + sum(rec["tiles"]["val"].values()) + rec["tiles"]["left_out"] \
        == len(tiles)


def test_the_map_finds_planted_defects_that_were_never_painted(sample, trained):
    _, model, _ = trained
    cmap = predict(model, sample.image, device="cpu")
    classes = np.asarray(cmap.classes)
    s = cmap.step
    unpainted_pits = [p for i, p in enumerate(sample.pits) if i not in set(sample.painted_pits)]
    assert unpainted_pits, "the sample must leave some pits unpainted"
    found = [classes[int(y) // s, int(x) // s] == 1 for y, x, _ in unpainted_pits]
    assert np.mean(found) >= 0.8, found
    # scratches: most map cells whose centre pixel lies on a scratch say "scratch"
    centre = sample.truth[s // 2 :: s, s // 2 :: s][: classes.shape[0], : classes.shape[1]]
    on_scratch = classes[np.nonzero(centre == 2)]
    assert np.mean(on_scratch == 2) >= 0.6, np.mean(on_scratch == 2)
    # far from every defect the map says background
    from scipy.ndimage import distance_transform_edt

    far = distance_transform_edt(sample.truth == 0)[::s, ::s][: classes.shape[0], : classes.shape[1]] > 24
    assert np.mean(classes[far] == 0) >= 0.95


def _small_tiles(sample):
    return extract_tiles(sample.image, sample.labels, tile_size=24, class_table=sample.class_table, seed=0)


def test_training_is_reproducible_on_cpu(sample):
    tiles = _small_tiles(sample)
    kw = dict(preset="small", epochs=2, samples_per_epoch=128, device="cpu")
    a, b = train(tiles, seed=5, **kw), train(tiles, seed=5, **kw)
    c = train(tiles, seed=6, **kw)
    for (name, wa), wb, wc in zip(a.network.state_dict().items(), b.network.state_dict().values(), c.network.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert any(not torch.equal(wa, wc) for wa, wc in zip(a.network.state_dict().values(), c.network.state_dict().values()))


def test_cancel_between_batches_returns_a_complete_model(sample):
    tiles = _small_tiles(sample)
    stop = threading.Event()
    seen = []

    def on_event(e):
        seen.append(e)
        if isinstance(e, BatchProgress) and e.epoch == 2 and e.batch == 2:
            stop.set()

    model = train(tiles, preset="small", epochs=50, samples_per_epoch=256, device="cpu", callback=on_event, cancel=stop)
    assert model.record["stopped"] is True
    assert model.record["epochs_run"] == 1
    assert isinstance(seen[-1], BatchProgress) and (seen[-1].epoch, seen[-1].batch) == (2, 2)
    assert not model.network.training
    cmap = predict(model, sample.image[:100, :100], device="cpu")
    assert np.isfinite(np.asarray(cmap.scores)).all()


def test_stop_from_another_thread_ends_training_run(sample):
    run = TrainingRun(_small_tiles(sample), preset="small", epochs=100, samples_per_epoch=64, device="cpu")
    n, stopper = 0, None
    for event in run:
        n += 1
        if isinstance(event, EpochReport) and stopper is None:
            stopper = threading.Thread(target=run.stop)
            stopper.start()
    assert run.stopped and run.model is not None and len(run.history) <= 2


def test_fine_tuning_starts_from_the_given_model_and_checks_compatibility(sample):
    tiles = _small_tiles(sample)
    base = train(tiles, preset="small", epochs=1, samples_per_epoch=64, device="cpu")
    tuned = train(tiles, init_model=base, epochs=1, samples_per_epoch=64, device="cpu")
    assert tuned.record["fine_tuned"] and tuned.arch == base.arch
    np.testing.assert_array_equal(tuned.mean, base.mean)
    other = extract_tiles(sample.image, sample.labels, tile_size=26, class_table=sample.class_table)
    with pytest.raises(TilemapInputError, match="cannot fine-tune"):
        train(other, init_model=base, epochs=1)


def test_overlapping_tiles_never_straddle_the_validation_split():
    rng = np.random.default_rng(0)
    n, t = 300, 16
    origins = rng.integers(0, 400, (n, 2))
    classes = rng.integers(0, 3, n)
    image_index = rng.integers(0, 2, n)
    groups = overlap_groups(image_index, classes, origins, t)
    train_idx, val_idx = grouped_split(classes, groups, 0.25, seed=0)
    assert len(val_idx) > 0 and len(np.intersect1d(train_idx, val_idx)) == 0
    assert len(train_idx) + len(val_idx) == n
    for i in train_idx:
        for j in val_idx:
            if image_index[i] == image_index[j] and classes[i] == classes[j]:
                assert np.any(np.abs(origins[i] - origins[j]) >= t), (i, j)


def test_augmentation_applies_a_dihedral_transform_to_each_tile():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(20, 1, 1, 1)
    out = _random_dihedral(x, torch.Generator().manual_seed(0))
    variants = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        variants += [r, torch.flip(r, dims=(3,))]
    for i in range(len(x)):
        assert any(torch.equal(out[i], v[i]) for v in variants)
    assert len({out[i].numpy().tobytes() for i in range(0, len(x), 2)}) > 1


def test_single_class_tiles_are_refused(sample):
    tiles = _small_tiles(sample)
    only = tiles.subset(np.flatnonzero(tiles.classes == 1))
    with pytest.raises(TilemapInputError, match="at least two classes"):
        train(only, epochs=1)


def test_the_record_keeps_the_validation_confusion_matrix_of_the_kept_epoch(trained):
    tiles, model, events = trained
    final = model.record["final"]
    confusion = np.array(final["confusion"])
    names = list(model.class_table.names)
    assert confusion.shape == (len(names), len(names))
    np.testing.assert_array_equal(confusion.sum(1), [model.record["tiles"]["val"][n] for n in names])
    assert np.trace(confusion) / confusion.sum() == pytest.approx(final["val_accuracy"])
    for i, n in enumerate(names):
        assert confusion[i, i] / confusion[i].sum() == pytest.approx(final["per_class_recall"][n])
    kept = next(e for e in events if isinstance(e, EpochReport) and e.epoch == final["epoch"])
    np.testing.assert_array_equal(kept.confusion, confusion)


def test_the_loss_defaults_to_softmax_and_sigmoid_is_one_vs_rest_binary_cross_entropy(trained):
    _, model, _ = trained
    assert TrainConfig().loss == "softmax"
    assert model.activation == "softmax" and model.record["parameters"]["loss"] == "softmax"
    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    y = torch.arange(50) % 3
    assert torch.equal(_loss_function("softmax", 3)(logits, y), torch.nn.functional.cross_entropy(logits, y))
    target = torch.nn.functional.one_hot(y, 3).float()
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    torch.testing.assert_close(_loss_function("sigmoid", 3)(logits, y), bce)
    # validation: the same loss, and accuracy / recall / confusion from the largest logit
    fn = _loss_function("sigmoid", 3)
    loss, acc, recall, confusion = _evaluate(torch.nn.Identity(), logits[:, :, None, None], y,
                                             torch.device("cpu"), _autocast(torch.device("cpu")), 3, fn)
    assert loss == pytest.approx(float(bce), rel=1e-6)
    assert acc == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert np.trace(confusion) == int((logits.argmax(1) == y).sum()) and len(recall) == 3
