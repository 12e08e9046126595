"""The background advice: warns when unpainted area cannot be told from the painted classes, not otherwise."""

import warnings

import numpy as np
import pytest

from napari_tilemap import extract_tiles, train
from napari_tilemap.learn._advice import (
    background_advice,
    background_separation,
    kept_epoch,
)

from .cases import two_textures


def test_two_textures_with_unpainted_background_warn_and_name_the_fix():
    image, labels = two_textures()
    tiles = extract_tiles(image, labels, tile_size=24, background="unpainted", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = train(tiles, preset="small", epochs=4, device="cpu", seed=0)
    j, background_recall, painted_recall = background_separation(model)
    confusion = np.asarray(model.record["final"]["confusion"], float)
    assert background_recall == pytest.approx(confusion[0, 0] / confusion[0].sum())
    assert painted_recall == pytest.approx(confusion[1:, 1:].sum() / confusion[1:].sum())
    assert j == pytest.approx(background_recall + painted_recall - 1)
    assert "background='none'" in background_advice(model)
    none = train(extract_tiles(image, labels, tile_size=24, background="none", seed=0), preset="small", epochs=4,
                 device="cpu", seed=0)
    assert background_separation(none) is None and background_advice(none) is None


def test_defects_on_a_surface_do_not_warn(trained):
    _, model, _ = trained
    assert background_separation(model)[0] >= 0.5
    assert background_advice(model) is None
    text = kept_epoch(model.record)
    assert text.startswith(f"kept: epoch {model.record['final']['epoch']} of {model.record['epochs_run']} run")


def test_classes_with_few_validation_tiles_are_named():
    from types import SimpleNamespace

    from napari_tilemap import ClassTable
    from napari_tilemap.learn._advice import advice, validation_advice

    model = SimpleNamespace(record={"tiles": {"val": {"background": 40, "pit": 2, "scratch": 9}}},
                            class_table=ClassTable.from_values([1, 2], names=["pit", "scratch"]))
    assert validation_advice(model) == ("too few validation tiles to judge some classes ('pit' 2); their recall "
                                        "says little: paint each class in more places apart")
    model.record["tiles"]["val"]["pit"] = 5
    assert validation_advice(model) is None and advice(model) == []
