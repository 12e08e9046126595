"""The Train tab's augmentation choices and hard-negative round, driven through its controls."""

import numpy as np

from napari_tilemap.learn._augment import DEFAULT_AUGMENT

from .conftest import wait_for


def test_augmentations_and_hard_negatives_reach_the_model(dock, qtbot, small_sample, notifications):
    viewer, w = dock
    viewer.add_image(small_sample.image, name="surface")
    viewer.add_labels(small_sample.labels.copy(), name="painted")
    w.tiles.tile_size.value = 24
    w.tiles.extract.clicked()
    panel = w.training
    assert tuple(panel.augment.value) == DEFAULT_AUGMENT and not panel.hard_negatives.value
    assert panel.config().augment is True  # untouched: the default for the tiles' background mode
    panel.augment.value = ["shift", "intensity"]  # a direction-dependent defect: no flips or rotations
    panel.hard_negatives.value = True
    assert panel.prior.value == "tiles"
    panel.prior.value = "balanced"  # the sample paints only some of its defects
    assert panel.config().prior == "balanced"
    panel.prior.value = "tiles"  # hard negatives, though, take every unpainted place as background
    assert panel.normalise.value == "image"
    panel.normalise.value = "dataset"
    assert panel.config().normalise == "dataset"
    panel.normalise.value = "image"  # photographs under changing light
    config = panel.config()
    assert config.augment == ("shift", "intensity") and config.hard_negative_rounds == 1 and config.prior == "tiles"
    assert config.normalise == "image" and config.max_time is None
    panel.max_time.value = 30  # minutes
    assert panel.config().max_time == 1800
    panel.preset.value, panel.epochs.value, panel.device.value = "small", 2, "cpu"
    said = []
    panel.train.clicked()
    panel.worker.yielded.connect(lambda _: said.append(panel.status.value))  # after the panel's own handler
    wait_for(qtbot, panel)
    assert "hard-negative round 1: looking for false alarms on training image 1/1…" in said
    record = w.session.model.record
    assert tuple(record["parameters"]["augment"]) == ("shift", "intensity")
    assert len(record["hard_negatives"]) == 1 and record["prior"]["mode"] == "tiles"
    assert w.session.model.per_image == (1.0, 99.0)  # hard-negative rounds fine-tune with the same levels
    assert record["parameters"]["max_time"] == 1800 and not record["timed_out"]
    assert "hard negatives added per round" in panel.status.value
    assert not notifications["error"], notifications
    assert np.isfinite(record["final"]["train_loss"])
