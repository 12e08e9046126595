"""Lazy image inputs: every format reads the same windows as the array it was written from."""

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_tilemap import TilemapInputError
from napari_tilemap.io._sources import open_image

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 65535, (83, 67)).astype(np.uint16)
RGB = RNG.integers(0, 255, (83, 67, 3)).astype(np.uint8)


def write_ome_zarr(path, data_czyx_or_yx, axes):
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=data_czyx_or_yx, chunks=(1,) * (data_czyx_or_yx.ndim - 2) + (17, 23))
    root.create_array("1", data=data_czyx_or_yx[..., ::2, ::2])
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in axes],
                                  "datasets": [{"path": "0"}, {"path": "1"}]}]


def formats(tmp_path, image):
    """(name, source) pairs, each holding ``image``."""
    out = [("numpy", image)]
    import dask.array as da

    out.append(("dask", da.from_array(image, chunks=(19, 13) + image.shape[2:])))
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=image.shape, chunks=(29, 31) + image.shape[2:],
                        dtype=image.dtype)
    z[:] = image
    out += [("zarr array", z), ("zarr path", tmp_path / "a.zarr")]
    tifffile.imwrite(tmp_path / "tiled.tif", image, tile=(32, 32), compression="zlib")
    tifffile.imwrite(tmp_path / "striped.tif", image, rowsperstrip=7)
    tifffile.imwrite(tmp_path / "big.tif", image, bigtiff=True, tile=(16, 16))
    out += [("tiled tiff", tmp_path / "tiled.tif"), ("striped tiff", tmp_path / "striped.tif"),
            ("bigtiff", tmp_path / "big.tif")]
    np.save(tmp_path / "a.npy", image)
    out.append(("npy", str(tmp_path / "a.npy")))
    if image.dtype == np.uint8:
        from skimage.io import imsave

        imsave(tmp_path / "a.png", image, check_contrast=False)
        out.append(("png", tmp_path / "a.png"))
    if image.ndim == 3:
        write_ome_zarr(tmp_path / "ome.zarr", np.moveaxis(image, -1, 0)[None], ["t", "c", "y", "x"])
    else:
        write_ome_zarr(tmp_path / "ome.zarr", image[None, None], ["c", "z", "y", "x"])
    out.append(("ome-zarr", tmp_path / "ome.zarr"))
    return out


@pytest.mark.parametrize("image", [GRAY, RGB], ids=["gray-uint16", "rgb-uint8"])
def test_every_format_reads_the_same_windows(tmp_path, image):
    ref = image.reshape(*image.shape[:2], -1).astype(np.float32)
    for name, spec in formats(tmp_path, image):
        src = open_image(spec)
        assert src.shape == image.shape[:2] and src.channels == ref.shape[2], name
        for rows, cols in [((0, 83), (0, 67)), ((5, 40), (30, 67)), ((82, 83), (0, 1))]:
            np.testing.assert_array_equal(src.read(rows, cols), ref[slice(*rows), slice(*cols)], err_msg=name)


def test_tiff_is_read_window_by_window_not_whole(tmp_path):
    big = np.zeros((4096, 4096), np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", big, tile=(256, 256))
    src = open_image(tmp_path / "big.tif")
    assert not isinstance(src.array, np.ndarray)  # a lazy zarr view over the TIFF tiles
    assert src.read((100, 110), (4000, 4010)).shape == (10, 10, 1)


def test_bad_inputs_are_refused_with_the_fix(tmp_path):
    with pytest.raises(TilemapInputError, match="does not exist"):
        open_image(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(TilemapInputError, match="cannot read"):
        open_image(tmp_path / "junk.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TilemapInputError, match="unknown format"):
        open_image(tmp_path / "notes.txt")
    with pytest.raises(TilemapInputError, match=r"expected \(Y, X\) or \(Y, X, C\)"):
        open_image(np.zeros((2, 3, 40, 40)))
    with pytest.raises(TilemapInputError, match="channel-first"):
        open_image(np.zeros((3, 40, 40)))
    write_ome_zarr(tmp_path / "stack.zarr", np.zeros((5, 40, 40), np.uint8), ["z", "y", "x"])
    with pytest.raises(TilemapInputError, match="axis 'z' has 5 planes"):
        open_image(tmp_path / "stack.zarr")
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w").create_array("img", shape=(4, 4), dtype="u1")
    with pytest.raises(TilemapInputError, match="without OME-Zarr multiscales metadata; point to one of its arrays"):
        open_image(tmp_path / "group.zarr")
    nan = np.zeros((40, 40), np.float32)
    nan[30, 30] = np.nan
    with pytest.raises(TilemapInputError, match="NaN"):
        open_image(nan).read((0, 40), (0, 40))
    assert json.dumps("ok")
