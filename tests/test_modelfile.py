import os
import pickle

import numpy as np
import pytest
import torch

from napari_tilemap import ModelFileError, load_model, predict


def test_save_then_load_gives_identical_predictions(random_model, tmp_path):
    model = random_model("medium", 48, 3, classes=4)
    model.record = {"seed": 3, "final": {"val_accuracy": 0.9}}
    path = tmp_path / "m.tilemap"
    model.save(path)
    loaded = load_model(path)
    assert loaded.arch == model.arch
    assert loaded.class_table == model.class_table
    assert loaded.record == model.record
    np.testing.assert_array_equal(loaded.mean, model.mean)
    image = np.random.default_rng(1).uniform(0, 255, (70, 90, 3))
    a = predict(model, image, device="cpu")
    b = predict(loaded, image, device="cpu")
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not list(tmp_path.glob(".*partial")), "the temporary file was left behind"


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.tilemap"
    hostile.write_bytes(pickle.dumps(_Exploit(str(marker))))
    torch.save({"x": _Exploit(str(marker))}, tmp_path / "torch.tilemap")
    for path in (hostile, tmp_path / "torch.tilemap"):
        with pytest.raises(ModelFileError, match="not a napari-tilemap model file"):
            load_model(path)
    assert not marker.exists()
    # the payload is live: unpickling it would have created the file
    pickle.loads(hostile.read_bytes()).close()
    assert marker.exists()


def test_truncated_foreign_and_missing_files_are_refused(random_model, tmp_path):
    path = tmp_path / "m.tilemap"
    random_model().save(path)
    data = path.read_bytes()
    (tmp_path / "cut.tilemap").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a napari-tilemap model file"):
        load_model(tmp_path / "cut.tilemap")
    (tmp_path / "text.tilemap").write_text("hello")
    with pytest.raises(ModelFileError, match="not a napari-tilemap model file"):
        load_model(tmp_path / "text.tilemap")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a napari-tilemap model"):
        load_model(tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.tilemap")
    assert isinstance(ModelFileError("x"), ValueError)


def test_saving_over_a_model_is_atomic(random_model, tmp_path, monkeypatch):
    path = tmp_path / "m.tilemap"
    random_model(seed=1).save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        random_model(seed=2).save(path)
    assert path.read_bytes() == before
