"""Training with ``loss="sigmoid"``: one independent score per class, so "none of these" can score low."""

import dataclasses
import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from napari_tilemap import (
    TilemapInputError,
    TrainingRun,
    extract_tiles,
    load_model,
    predict,
    train,
)
from napari_tilemap.learn._model import TileClassifier
from napari_tilemap.learn._modelfile import model_from_bytes, model_to_bytes
from napari_tilemap.learn._networks import architecture

from .test_dense import reference_map

# tiles scored one by one (classify_tiles) need no image levels: scaled over the training tiles
_TRAIN = dict(preset="small", epochs=8, samples_per_epoch=512, device="cpu", seed=0, normalise="dataset")


@pytest.fixture(scope="module")
def models(sample):
    """Tiles of the built-in sample (24 px), and a softmax and a sigmoid model trained alike on them."""
    tiles = extract_tiles(sample.image, sample.labels, tile_size=24, class_table=sample.class_table, seed=0)
    return tiles, train(tiles, **_TRAIN), train(tiles, loss="sigmoid", **_TRAIN)


def _metadata(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["tilemap"])


def _with_metadata(data: bytes, meta: dict) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["tilemap"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def _logits(model: TileClassifier, tiles: np.ndarray) -> torch.Tensor:
    """The logits of ``model.network`` (not the fused inference network) on raw tiles (N, T, T, C)."""
    x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).permute(0, 3, 1, 2)
    x = (x - torch.from_numpy(model.mean).view(1, -1, 1, 1)) / torch.from_numpy(model.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        return model.network.eval()(x)[:, :, 0, 0]


def test_a_sigmoid_model_trains_predicts_saves_and_loads_to_the_same_map(models, sample, tmp_path):
    tiles, _, model = models
    assert model.activation == "sigmoid" and model.arch.activation == "sigmoid"
    assert model.record["parameters"]["loss"] == "sigmoid"
    assert model.record["final"]["val_accuracy"] >= 0.8, model.record["final"]
    image = sample.image[:160, :200]
    cmap = predict(model, image, device="cpu")
    path = tmp_path / "sigmoid.tilemap"
    model.save(path)
    meta = _metadata(path.read_bytes())
    assert meta["version"] == (3 if model.per_image else 2) and meta["architecture"]["activation"] == "sigmoid"
    loaded = load_model(path)
    assert loaded.activation == "sigmoid" and loaded.arch == model.arch
    again = predict(loaded, image, device="cpu")
    np.testing.assert_array_equal(np.asarray(again.scores), np.asarray(cmap.scores))
    np.testing.assert_array_equal(np.asarray(again.classes), np.asarray(cmap.classes))
    assert model_to_bytes(loaded) == path.read_bytes()


def test_sigmoid_scores_are_independent_per_class_and_are_the_sigmoid_of_the_logits(models):
    tiles, softmax_model, model = models
    t, m = tiles.tile_size, tiles.margin
    batch = tiles.windows[::7, m : m + t, m : m + t]
    scores = model.classify_tiles(batch)
    assert scores.shape == (len(batch), 3) and ((scores >= 0) & (scores <= 1)).all()
    assert np.abs(scores.sum(1) - 1).max() > 0.05, "sigmoid rows should not be forced to sum to 1"
    # an independent reference: the unfused network, normalised by hand, then torch.sigmoid / torch.softmax
    np.testing.assert_allclose(scores, torch.sigmoid(_logits(model, batch)).numpy(), atol=1e-5, rtol=0)
    soft = softmax_model.classify_tiles(batch)
    np.testing.assert_allclose(soft, torch.softmax(_logits(softmax_model, batch), 1).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "preset, tile, shape, block, channels",
    [("small", 34, (77, 101), 40, 1), ("medium", 48, (90, 61), 64, 3)],
)
def test_dense_map_equals_tiles_classified_alone_for_a_sigmoid_model(random_model, preset, tile, shape, block, channels):
    model = random_model(preset, tile, channels, classes=3, seed=tile)
    model.arch = dataclasses.replace(model.arch, activation="sigmoid")
    image = np.random.default_rng(tile).uniform(0, 255, shape + ((channels,) if channels > 1 else ())).astype(np.float32)
    cmap = predict(model, image, block_size=block, device="cpu")
    ref = reference_map(model, image)
    assert cmap.scores.shape == ref.shape == (3, -(-shape[0] // model.step), -(-shape[1] // model.step))
    np.testing.assert_allclose(cmap.scores, ref, atol=1e-4, rtol=0)
    assert np.array_equal(cmap.classes, np.asarray(model.class_table.values)[ref.argmax(0)])
    assert np.abs(np.asarray(cmap.scores).sum(0) - 1).max() > 0.05


# The metadata of a model file as napari-tilemap wrote it before the activation existed.
_OLD_METADATA = (
    '{"format": "napari-tilemap-model", "version": 1, "architecture": {"preset": "small", "tile_size": 18, '
    '"in_channels": 1, "num_classes": 3, "stem_kernel": 3, "head_kernel": 1, "widths": [8, 16], '
    '"convs_per_stage": 2, "head_width": 32}, "class_table": {"class_names": ["background", "pit", "scratch"], '
    '"colors": [[0.5, 0.5, 0.5, 0.0], [0.9, 0.1, 0.1, 1.0], [0.1, 0.45, 0.95, 1.0]], "values": [0, 1, 2]}, '
    '"normalisation": {"mean": [100.0], "std": [40.0]}, "record": {"seed": 1}}'
)


def _header_length(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


def test_an_old_format_file_loads_as_softmax_and_softmax_files_keep_the_old_layout(random_model):
    from safetensors.torch import save

    model = random_model("small", 18, 1)
    tensors = {k: v.contiguous() for k, v in model.network.state_dict().items()}
    old = save(tensors, metadata={"tilemap": _OLD_METADATA})
    loaded = model_from_bytes(old, name="old")
    assert loaded.activation == "softmax"
    # written back, the same metadata (plus a checksum of the weights, which old files lack) and the same weights
    again = model_to_bytes(loaded)
    assert again[-len(old) + 8 + _header_length(old):] == old[8 + _header_length(old):]
    meta = json.loads(json.loads(again[8 : 8 + _header_length(again)])["__metadata__"]["tilemap"])
    assert meta.pop("weights_sha256") == hashlib.sha256(old[8 + _header_length(old):]).hexdigest()
    assert meta == json.loads(_OLD_METADATA)

    tiles = np.random.default_rng(0).uniform(0, 255, (20, 18, 18, 1)).astype(np.float32)
    expected = torch.softmax(_logits(model, tiles), 1).numpy()
    np.testing.assert_allclose(loaded.classify_tiles(tiles), expected, atol=1e-5, rtol=0)

    # a sigmoid file stripped of its activation (and marked version 1) is read as softmax on the same weights
    sigmoid = dataclasses.replace(model, arch=dataclasses.replace(model.arch, activation="sigmoid"))
    data = model_to_bytes(sigmoid)
    meta = _metadata(data)
    assert meta["version"] == 2 and meta["architecture"]["activation"] == "sigmoid"
    del meta["architecture"]["activation"]
    as_old = model_from_bytes(_with_metadata(data, {**meta, "version": 1}))
    assert as_old.activation == "softmax"
    np.testing.assert_array_equal(as_old.classify_tiles(tiles), model.classify_tiles(tiles))
    # an explicit "softmax" is accepted too
    explicit = model_from_bytes(_with_metadata(data, {**meta, "architecture": {**meta["architecture"], "activation": "softmax"}}))
    np.testing.assert_array_equal(explicit.classify_tiles(tiles), model.classify_tiles(tiles))


def test_an_invalid_loss_or_activation_is_refused(models):
    tiles, softmax_model, sigmoid_model = models
    for bad in ("softmx", "Sigmoid", None, 1):
        with pytest.raises(TilemapInputError, match=r"loss must be one of \['softmax', 'sigmoid'\], got"):
            train(tiles, loss=bad, epochs=1)
    with pytest.raises(TilemapInputError, match="loss must be one of"):
        TrainingRun(tiles, loss="bce")
    with pytest.raises(TilemapInputError, match=r"unknown activation 'tanh'; choose one of \['softmax', 'sigmoid'\]"):
        architecture("small", 24, 1, 3, activation="tanh")
    with pytest.raises(TilemapInputError, match=r"cannot fine-tune a model trained with loss='sigmoid' with loss='softmax'"):
        train(tiles, init_model=sigmoid_model, epochs=1)
    with pytest.raises(TilemapInputError, match=r"loss='softmax' with loss='sigmoid'; pass loss='softmax'"):
        train(tiles, init_model=softmax_model, loss="sigmoid", epochs=1)
    tuned = train(tiles, init_model=sigmoid_model, loss="sigmoid", epochs=1, samples_per_epoch=64, device="cpu")
    assert tuned.activation == "sigmoid" and tuned.record["fine_tuned"]


def _unseen_texture(like: np.ndarray) -> np.ndarray:
    """``skimage.data.grass()``, a texture the models never saw, cropped and scaled to ``like``'s intensity range."""
    import skimage.data

    grass = skimage.data.grass()[:256, :256].astype(np.float32)
    lo, hi = float(like.min()), float(like.max())
    return ((grass - grass.min()) / np.ptp(grass) * (hi - lo) + lo).astype(like.dtype)


def test_what_softmax_and_sigmoid_models_score_on_a_texture_never_painted(models, sample):
    _, softmax_model, sigmoid_model = models
    seen, unseen = sample.image[:256, :256], _unseen_texture(sample.image)
    figures = {}
    for name, model in (("softmax", softmax_model), ("sigmoid", sigmoid_model)):
        best_seen = np.asarray(predict(model, seen, device="cpu").scores).max(0)
        best_unseen = np.asarray(predict(model, unseen, device="cpu").scores).max(0)
        figures[name] = best_seen, best_unseen
        print(
            f"{name}: cells with best score < 0.5: {np.mean(best_unseen < 0.5):.3f} on unseen grass, "
            f"{np.mean(best_seen < 0.5):.3f} on the sample; mean best score {best_unseen.mean():.3f} on grass, "
            f"{best_seen.mean():.3f} on the sample"
        )
    # Robust for both: a texture never painted scores lower than the one trained on. Whether sigmoid
    # scores it lower than softmax depends on the seed with this small network (see the report).
    for name, (best_seen, best_unseen) in figures.items():
        assert best_unseen.mean() < best_seen.mean() - 0.03, name
