"""Lazy image inputs: any array or file, read window by window, never whole.

An :class:`ImageSource` knows its shape and channels and reads (Y, X, C) float32
windows. It holds only a *spec* (an array or a path), so it can be pickled to a
dask worker and reopened there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._errors import TilemapInputError
from ._images import MAX_CHANNELS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")


class ImageSource:
    """A 2-D grayscale or colour image read in windows.

    Parameters
    ----------
    spec : array_like or str or Path
        numpy (incl. memmap), dask or zarr array of shape (Y, X) or (Y, X, C); or a path to
        TIFF/BigTIFF, PNG/JPEG, ``.npy``, a zarr array, or a zarr / OME-Zarr group (level 0).
    """

    def __init__(self, spec) -> None:
        self.spec = str(spec) if isinstance(spec, Path) else spec
        self._array = None
        arr = self.array
        self.shape: tuple[int, int] = (int(arr.shape[0]), int(arr.shape[1]))
        self.channels: int = 1 if arr.ndim == 2 else int(arr.shape[2])
        self.dtype = np.dtype(arr.dtype)
        if self.dtype.kind not in "biuf":
            raise TilemapInputError(f"{self.name} has dtype {self.dtype}; pass a numeric image")
        if min(self.shape) == 0:
            raise TilemapInputError(f"{self.name} is empty (shape {tuple(arr.shape)})")

    @property
    def name(self) -> str:
        return repr(self.spec) if isinstance(self.spec, str) else "image"

    @property
    def array(self):
        """The underlying lazily indexable (Y, X[, C]) array, opened on first use."""
        if self._array is None:
            self._array = _open(self.spec)
            _check_axes(self._array.shape, self.name)
        return self._array

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(self.spec, str):
            state["_array"] = None  # file handles stay behind; the worker reopens the path
        return state

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Pixels ``[rows[0]:rows[1], cols[0]:cols[1]]`` as float32 (h, w, C).

        Raises
        ------
        TilemapInputError
            If the window holds NaN or infinite values.
        """
        win = np.asarray(self.array[rows[0] : rows[1], cols[0] : cols[1]])
        win = win.reshape(win.shape[0], win.shape[1], self.channels).astype(np.float32, copy=False)
        if self.dtype.kind == "f" and not np.isfinite(win).all():
            raise TilemapInputError(
                f"{self.name} contains NaN or infinite values near rows {rows}, columns {cols}; "
                "replace them first (e.g. np.nan_to_num)"
            )
        return win

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        return self.read((rows.start, rows.stop), (cols.start, cols.stop))


def open_image(source) -> ImageSource:
    """Open ``source`` lazily as an :class:`ImageSource` (an ImageSource passes through).

    Examples
    --------
    >>> src = open_image(np.zeros((40, 30, 3), np.uint8))
    >>> src.shape, src.channels, src.read((0, 2), (0, 2)).shape
    ((40, 30), 3, (2, 2, 3))
    """
    return source if isinstance(source, ImageSource) else ImageSource(source)


def _open(spec):
    if not isinstance(spec, str):
        if not hasattr(spec, "shape") or not hasattr(spec, "__getitem__"):
            spec = np.asarray(spec)
        return spec
    path = Path(spec)
    if not path.exists():
        raise TilemapInputError(f"{spec} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if suffix in TIFF_SUFFIXES:
            import tifffile
            import zarr

            return zarr.open(tifffile.imread(path, aszarr=True, level=0), mode="r")
        if suffix in IMAGE_SUFFIXES:
            from skimage.io import imread

            return imread(path)
        if path.is_dir():
            return _open_zarr(path)
    except TilemapInputError:
        raise
    except Exception as err:  # readers raise many types for corrupt files
        raise TilemapInputError(f"cannot read {spec}: {type(err).__name__}: {err}") from None
    raise TilemapInputError(
        f"cannot read {spec}: unknown format; use TIFF, PNG/JPEG, .npy, zarr or OME-Zarr"
    )


def _open_zarr(path: Path):
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        raise TilemapInputError(
            f"{path} is a zarr group without OME-Zarr multiscales metadata; point to one of its arrays "
            f"({', '.join(arrays) or 'none found'})"
        )
    ms = multiscales[0]
    level0 = node[ms["datasets"][0]["path"]]
    axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    return _to_yxc(level0, [a.lower() for a in axes], path)


def _to_yxc(arr, axes: list[str], path: Path):
    """Index an OME array down to (Y, X[, C]): singleton t/z dropped, channels moved last."""
    if not axes:
        return arr
    if "y" not in axes or "x" not in axes:
        raise TilemapInputError(f"{path}: OME axes {axes} have no y and x")
    key = []
    for name, n in zip(axes, arr.shape):
        if name in ("y", "x", "c"):
            key.append(slice(None))
        elif n == 1:
            key.append(0)
        else:
            raise TilemapInputError(
                f"{path}: axis {name!r} has {n} planes; napari-tilemap classifies 2-D images — "
                "export one plane first"
            )
    return _AxisView(arr, axes, tuple(key))


class _AxisView:
    """A lazy (Y, X[, C]) view of an OME array with other axes fixed and channels moved last."""

    def __init__(self, arr, axes: list[str], key: tuple) -> None:
        self.arr, self.axes, self.key = arr, axes, key
        kept = [a for a, k in zip(axes, key) if not isinstance(k, int)]
        self.perm = [kept.index(a) for a in ("y", "x", "c") if a in kept]
        sizes = dict(zip(axes, arr.shape))
        self.shape = tuple(sizes[a] for a in ("y", "x", "c") if a in kept)
        self.ndim = len(self.shape)
        self.dtype = arr.dtype

    def __getitem__(self, item) -> np.ndarray:
        rows, cols = item
        window = {"y": rows, "x": cols}
        full = tuple(k if isinstance(k, int) else window.get(a, slice(None)) for a, k in zip(self.axes, self.key))
        return np.transpose(np.asarray(self.arr[full]), self.perm)


def _check_axes(shape: tuple, name: str) -> None:
    if len(shape) == 3 and shape[2] > MAX_CHANNELS:
        hint = "; it looks channel-first: move the channel axis last (np.moveaxis(a, 0, -1))" if shape[0] <= MAX_CHANNELS else ""
        raise TilemapInputError(f"{name} has {shape[2]} channels in its last axis (at most {MAX_CHANNELS}){hint}")
    if len(shape) not in (2, 3):
        raise TilemapInputError(
            f"{name} has shape {tuple(shape)}; expected (Y, X) or (Y, X, C) — select one plane of a stack first"
        )


def describe(spec) -> str:
    """A short JSON-able description of an image spec for the map store's run record."""
    return json.dumps(spec if isinstance(spec, str) else f"<{type(spec).__name__} {tuple(spec.shape)}>")
