"""Lazy inputs beyond (Y, X[, C]) arrays: named axes, OME-Zarr 0.5 and layouts, decoding errors.

``test_sources.py`` round-trips every format; this file covers how axes are recognised
(TIFF axes, zarr dimension names, OME metadata), what cannot be read, and that each of
these inputs predicts the in-memory map.
"""

import pickle

import numpy as np
import pytest
import tifffile
import zarr

from napari_tilemap import TilemapInputError, predict
from napari_tilemap.io._sources import open_image

RNG = np.random.default_rng(11)
RGB = RNG.integers(0, 255, (71, 93, 3)).astype(np.uint8)
CYX = np.ascontiguousarray(np.moveaxis(RGB, -1, 0))
WINDOWS = [((0, 71), (0, 93)), ((4, 50), (61, 93)), ((70, 71), (0, 1))]

OME_AXES = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, {"name": "z", "type": "space"},
            {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def write_ome_zarr_05(path, tczyx):
    """An OME-NGFF 0.5 image: zarr v3, metadata under the ``ome`` attribute."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("s0", data=tczyx, chunks=(1, 1, 1, 19, 23))
    group.create_array("s1", data=tczyx[..., ::2, ::2])
    datasets = [{"path": f"s{i}", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 2**i, 2**i]}]}
                for i in range(2)]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": OME_AXES, "datasets": datasets}]}
    return group


def named_inputs(tmp_path):
    """(name, source) pairs holding RGB with its channels anywhere but last, or under extra axes."""
    out = []
    tifffile.imwrite(tmp_path / "planar.tif", CYX, photometric="rgb", planarconfig="separate", tile=(32, 32))
    out.append(("planar RGB TIFF (SYX)", tmp_path / "planar.tif"))
    tifffile.imwrite(tmp_path / "img.ome.tif", CYX, metadata={"axes": "CYX"}, rowsperstrip=9)
    out.append(("OME-TIFF (CYX)", tmp_path / "img.ome.tif"))
    z3 = zarr.create_array(str(tmp_path / "cyx.zarr"), shape=CYX.shape, chunks=(1, 20, 30), dtype="u1",
                           dimension_names=("c", "y", "x"))
    z3[:] = CYX
    out += [("zarr v3 dimension_names", z3), ("zarr v3 dimension_names path", tmp_path / "cyx.zarr")]
    z2 = zarr.open_array(str(tmp_path / "v2.zarr"), mode="w", shape=CYX.shape, chunks=(3, 25, 25), dtype="u1",
                         zarr_format=2)
    z2[:] = CYX
    z2.attrs["_ARRAY_DIMENSIONS"] = ["band", "y", "x"]
    out.append(("zarr v2 _ARRAY_DIMENSIONS", tmp_path / "v2.zarr"))
    write_ome_zarr_05(tmp_path / "img05.ome.zarr", CYX[None, :, None])
    out += [("OME-Zarr 0.5", tmp_path / "img05.ome.zarr"), ("OME-Zarr 0.5 level path", tmp_path / "img05.ome.zarr/s0")]
    root = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    image = root.create_group("0")
    image.create_array("0", data=CYX[None, :, None], chunks=(1, 1, 1, 32, 32))
    image.attrs["multiscales"] = [{"version": "0.4", "axes": OME_AXES, "datasets": [{"path": "0"}]}]
    out.append(("bioformats2raw layout", tmp_path / "b2r.zarr"))
    out += [("numpy (1, 1, Y, X, C)", RGB[None, None])]
    import dask.array as da

    out.append(("dask (1, Y, X, C)", da.from_array(RGB[None], chunks=(1, 13, 17, 3))))
    return out


def test_named_axes_and_leading_singletons_become_y_x_channels(tmp_path):
    ref = RGB.astype(np.float32)
    for name, spec in named_inputs(tmp_path):
        src = open_image(spec)
        assert (src.shape, src.channels) == ((71, 93), 3), name
        for rows, cols in WINDOWS:
            np.testing.assert_array_equal(src.read(rows, cols), ref[slice(*rows), slice(*cols)], err_msg=name)
    gray = open_image(RGB[None, ..., 0])  # (1, Y, X): one channel, first
    assert (gray.shape, gray.channels) == ((71, 93), 1)


def test_path_sources_reopen_after_pickling(tmp_path):
    """Distributed workers get the path, not the open file, and read the same windows."""
    for name, spec in named_inputs(tmp_path)[:3]:
        src = open_image(spec)
        src.read((0, 1), (0, 1))
        clone = pickle.loads(pickle.dumps(src))
        np.testing.assert_array_equal(clone.read((3, 40), (7, 90)), src.read((3, 40), (7, 90)), err_msg=name)


def test_stacks_are_refused_naming_the_axis(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 40, 40), np.uint8))
    with pytest.raises(TilemapInputError, match="axis 'Q' has 5 planes.*export one plane first"):
        open_image(tmp_path / "stack.tif")
    z = zarr.create_array(str(tmp_path / "zyx.zarr"), shape=(3, 40, 40), dtype="u1", dimension_names=("z", "y", "x"))
    with pytest.raises(TilemapInputError, match="axis 'z' has 3 planes"):
        open_image(z)
    both = zarr.create_array(str(tmp_path / "cs.zarr"), shape=(3, 40, 40, 3), dtype="u1",
                             dimension_names=("c", "y", "x", "s"))
    with pytest.raises(TilemapInputError, match="more than one channel axis"):
        open_image(both)
    with pytest.raises(TilemapInputError, match=r"expected \(Y, X\) or \(Y, X, C\)"):
        open_image(np.zeros((2, 1, 40, 40)))
    (tmp_path / "plain-dir").mkdir()
    with pytest.raises(TilemapInputError, match="is a directory but not a zarr store"):
        open_image(tmp_path / "plain-dir")


def test_a_file_that_cannot_be_decoded_fails_at_open_or_read_with_the_fix(tmp_path):
    # a TIFF whose compression needs a codec this environment may lack (ZSTD, tag 50000)
    path = tmp_path / "codec.tif"
    tifffile.imwrite(path, np.zeros((40, 40), np.uint8), tile=(16, 16), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags["Compression"].valueoffset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write((50000).to_bytes(2, "little"))
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        with pytest.raises(TilemapInputError, match="install the 'imagecodecs' package"):
            open_image(path)
    # a truncated file opens (its first tile is intact) and fails on the window it cannot decode
    data = RNG.integers(0, 255, (256, 256)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "cut.tif", data, tile=(64, 64), compression="zlib")
    whole = (tmp_path / "cut.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 2])
    src = open_image(tmp_path / "cut.tif")
    with pytest.raises(TilemapInputError, match=r"cannot read rows \(192, 256\), columns \(192, 256\) of .*cut.tif"):
        src.read((192, 256), (192, 256))


def test_dask_windows_are_computed_in_the_calling_thread():
    """Block tasks already run in parallel: a dask input must not start a second thread pool."""
    import dask
    import dask.array as da

    def no_pool(*args, **kwargs):
        raise AssertionError("the default dask scheduler was used")

    src = open_image(da.from_array(RGB, chunks=(20, 20, 3)))
    with dask.config.set(scheduler=no_pool):
        np.testing.assert_array_equal(src.read((5, 60), (10, 80)), RGB[5:60, 10:80].astype(np.float32))


def test_named_inputs_predict_the_in_memory_map(random_model, tmp_path):
    model = random_model("small", 32, 3, seed=5)
    reference = predict(model, RGB, device="cpu")
    for i, (name, spec) in enumerate(named_inputs(tmp_path)):
        cmap = predict(model, spec, out=tmp_path / f"map-{i}.zarr", block_size=40, device="cpu", pyramid=False)
        np.testing.assert_allclose(np.asarray(cmap.scores), reference.scores, atol=1e-4, rtol=0, err_msg=name)
        np.testing.assert_array_equal(np.asarray(cmap.classes), reference.classes, err_msg=name)
