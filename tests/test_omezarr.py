"""Map stores carry OME-Zarr (NGFF 0.5) metadata that an NGFF validator accepts and that places the map."""

import numpy as np
import pytest
import zarr

from napari_tilemap import open_map, predict
from napari_tilemap._layerdata import map_layer_data
from napari_tilemap.maps._mapstore import pyramid_levels

from .test_regions import make_map, write_store

models = pytest.importorskip("ome_zarr_models.v05")


def transforms(dataset) -> list[list[float]]:
    scale, translation = dataset.coordinateTransformations
    assert (scale.type, translation.type) == ("scale", "translation")
    return [list(scale.scale), list(translation.translation)]


def check_store(path, cmap, levels: int) -> None:
    group = zarr.open_group(str(path), mode="r")
    image = models.Image.from_zarr(group)  # validates metadata, paths, shapes and dimension names
    labels = models.ImageLabel.from_zarr(group)
    classes, scores = image.attributes.ome.multiscales
    assert image.attributes.ome.version == "0.5"
    assert [a.name for a in classes.axes] == ["y", "x"] and [a.type for a in scores.axes] == ["channel", "space", "space"]
    assert [d.path for d in classes.datasets] == ["classes"] + [f"classes_{i}" for i in range(1, levels + 1)]
    assert [d.path for d in scores.datasets] == ["scores"] + [f"scores_{i}" for i in range(1, levels + 1)]
    scale, translate = cmap.layer_transform()
    assert transforms(classes.datasets[0]) == [list(scale), list(translate)]
    assert transforms(scores.datasets[0]) == [[1.0, *scale], [0.0, *translate]]
    s, o = cmap.step, cmap.offset[0]
    for i, (c, sc) in enumerate(zip(classes.datasets, scores.datasets)):
        level = group[c.path]
        # cell (r, q) of level i is the level-0 cell (r * 2**i, q * 2**i): the NGFF transform puts it on its centre
        r, q = np.array(level.shape) - 1
        cell_scale, cell_shift = transforms(c)
        np.testing.assert_allclose(np.array([r, q]) * cell_scale + cell_shift,
                                   cmap.geometry.cell_centers(r * 2**i, q * 2**i))
        assert transforms(sc)[0][1:] == [2**i * s] * 2
        assert transforms(sc)[1][1:] == [o + (2**i - 1) * s / 2] * 2  # the mean of a 2**i group sits at its centre
    colors = {c.label_value: list(c.rgba) for c in labels.attributes.ome.image_label.colors}
    assert colors[1] == [round(255 * v) for v in cmap.class_table.colors[1]]
    names = {p.label_value: p.model_extra.get("class") for p in labels.attributes.ome.image_label.properties}
    assert names == dict(zip(cmap.class_table.values, cmap.class_table.names))


def test_a_written_store_is_valid_ome_zarr_with_the_map_geometry(tmp_path):
    rng = np.random.default_rng(0)
    cmap = make_map(rng.integers(0, 3, (37, 50)).astype(np.uint8), step=8, image_shape=(290, 397))
    stored = write_store(tmp_path / "map.zarr", cmap, chunk=8)
    levels = zarr.open_group(str(tmp_path / "map.zarr"), mode="r").attrs["tilemap"]["pyramid_levels"]
    assert levels == 4
    check_store(tmp_path / "map.zarr", cmap, levels)
    np.testing.assert_array_equal(np.asarray(stored.classes), cmap.classes)  # our reader is unchanged


def test_predict_writes_ome_metadata(tmp_path, random_model):
    model = random_model("small", 32, 1)
    image = np.random.default_rng(1).normal(100, 40, (150, 170)).astype(np.float32)
    cmap = predict(model, image, tmp_path / "map.zarr", device="cpu", block_size=64)
    check_store(tmp_path / "map.zarr", cmap, 0)


def test_stores_without_ome_metadata_still_open(tmp_path):
    cmap = make_map(np.random.default_rng(2).integers(0, 3, (40, 30)).astype(np.uint8))
    write_store(tmp_path / "old.zarr", cmap, chunk=8)
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="r+")
    group.attrs.pop("ome")  # a store written before this metadata existed
    assert "ome" not in dict(zarr.open_group(str(tmp_path / "old.zarr"), mode="r").attrs)
    old = open_map(tmp_path / "old.zarr")
    np.testing.assert_array_equal(np.asarray(old.classes), cmap.classes)
    classes, _ = pyramid_levels(tmp_path / "old.zarr")
    assert len(classes) == 5
    layers = map_layer_data(old)
    assert layers[0][1]["scale"] == cmap.layer_transform()[0]
    assert old.regions()["cells"].sum() == np.isin(cmap.classes, [1, 2]).sum()
