"""Lazy image inputs: any array or file, read window by window, never whole.

An :class:`ImageSource` knows its shape and channels and reads (Y, X, C) float32
windows. It holds only a *spec* (an array or a path), so it can be pickled to a
dask worker and reopened there.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from .._errors import TilemapInputError
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
        if isinstance(spec, (str, Path)):
            # absolute, so that dask workers started in other folders open the same file
            self.label = str(spec)
            self.spec = str(Path(spec).expanduser().absolute())
        else:
            self.label, self.spec = None, spec
        self._array = None
        arr = self.array
        self.shape: tuple[int, int] = (int(arr.shape[0]), int(arr.shape[1]))
        self.channels: int = 1 if arr.ndim == 2 else int(arr.shape[2])
        self.dtype = np.dtype(arr.dtype)
        if self.dtype.kind not in "biuf":
            raise TilemapInputError(f"{self.name} has dtype {self.dtype}; pass a numeric image")
        if min(self.shape) == 0:
            raise TilemapInputError(f"{self.name} is empty (shape {tuple(arr.shape)})")
        if isinstance(self.spec, str):
            self._window((0, 1), (0, 1))  # decode one tile now: a missing codec fails here, not mid-run

    @property
    def name(self) -> str:
        return repr(self.label) if self.label is not None else "image"

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
        raw = self._window(rows, cols)
        raw = raw.reshape(raw.shape[0], raw.shape[1], self.channels)
        if self.dtype.kind != "f":
            return raw.astype(np.float32)
        where = f"near rows {rows}, columns {cols}"
        if not np.isfinite(raw).all():
            raise TilemapInputError(
                f"{self.name} contains NaN or infinite values {where}; replace them first (e.g. np.nan_to_num)"
            )
        with np.errstate(over="ignore"):
            win = raw.astype(np.float32, copy=False)
        if not np.isfinite(win).all():
            raise TilemapInputError(
                f"{self.name} has values beyond the float32 range (|value| up to {np.abs(raw).max():.3g}) {where}; "
                "rescale it first (e.g. divide by its maximum)"
            )
        return win

    def fingerprint(self) -> dict:
        """What identifies this image in a map store's run record.

        Shape, channels and dtype; for a file its absolute path, size and modification
        time, and for a folder (zarr, OME-Zarr, also behind a zarr array object) the count,
        total size and latest modification time of its files, so that a chunk rewritten in
        place is noticed; and a SHA-256 of the pixels: all of them for an in-memory numpy
        array, a grid of sampled windows for lazy sources. A map is resumed or reused only
        when the fingerprint of its image is the same. A dask array computed from sources
        outside any file is known by its sampled windows alone.
        """
        record: dict = {"shape": list(self.shape), "channels": self.channels, "dtype": self.dtype.str}
        path = Path(self.spec) if self.label is not None else _local_zarr_folder(self.spec)
        if path is not None:
            record["path"] = str(path.resolve())
            if path.is_file():
                st = path.stat()
                record["size"], record["mtime_ns"] = st.st_size, st.st_mtime_ns
            elif path.is_dir():
                record["files"], record["size"], record["mtime_ns"] = _folder_stat(path)
        digest = hashlib.sha256()
        arr = self.array
        whole = type(arr) is np.ndarray
        if whole:
            rows = max(1, (64 << 20) // max(1, arr[:1].nbytes))  # hash in pieces of about 64 MB
            for r in range(0, self.shape[0], rows):
                digest.update(np.ascontiguousarray(arr[r : r + rows]).data)
        else:
            for rows, cols in _sample_windows(self.shape):
                digest.update(np.ascontiguousarray(self._window(rows, cols)).data)
        record["pixels_sha256"] = digest.hexdigest()
        record["pixels_hashed"] = "all" if whole else "sampled"
        return record

    def _window(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        try:
            return _materialise(self.array[rows[0] : rows[1], cols[0] : cols[1]])
        except (TilemapInputError, MemoryError):
            raise
        except Exception as err:  # codecs, truncated files, vanished network mounts
            codec = isinstance(err, (ImportError, KeyError)) or "codec" in str(err).lower()
            hint = ("; its compression needs a codec: install the 'imagecodecs' package (pip install imagecodecs)"
                    if codec else "; check that the file is complete and readable")
            raise TilemapInputError(
                f"cannot read rows {rows}, columns {cols} of {self.name}: {type(err).__name__}: {err}{hint}"
            ) from err

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


def _local_zarr_folder(arr) -> Path | None:
    """The folder of a zarr array object stored on the local disk, if it is one."""
    root = getattr(getattr(arr, "store", None), "root", None)
    if root is None or not hasattr(arr, "path"):
        return None
    return Path(root) / str(arr.path)


def _folder_stat(folder: Path) -> tuple[int, int, int]:
    """(files, bytes, latest mtime_ns) of every file below ``folder``."""
    files = size = latest = 0
    stack = [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    st = entry.stat()
                    files, size, latest = files + 1, size + st.st_size, max(latest, st.st_mtime_ns)
    return files, size, latest


def _sample_windows(shape: tuple[int, int], grid: int = 4, side: int = 64) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """A ``grid``×``grid`` lattice of windows of up to ``side`` pixels, corners included."""
    spans = []
    for n in shape:
        starts = sorted({round(i * max(0, n - side) / (grid - 1)) for i in range(grid)})
        spans.append([(a, min(n, a + side)) for a in starts])
    return [(r, c) for r in spans[0] for c in spans[1]]


def _open(spec):
    if not isinstance(spec, str):
        if not hasattr(spec, "shape") or not hasattr(spec, "__getitem__"):
            spec = np.asarray(spec)
        return _yxc(spec, "image")
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

            # tifffile names the axes (YXS contiguous RGB, SYX planar, CYX OME-TIFF, QYX stacks)
            store = tifffile.imread(path, aszarr=True, level=0)
            return _ClosingReads(_yxc(zarr.open(store, mode="r"), repr(spec)), store)
        if suffix in IMAGE_SUFFIXES:
            from skimage.io import imread

            try:
                return imread(path)
            except Exception as err:  # imageio's own message suggests unrelated video plugins
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise TilemapInputError(
                    f"cannot read {spec}: not a valid {suffix[1:].upper()} image or the file is damaged ({first})"
                ) from None
        if path.is_dir():
            if not any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup")):
                raise TilemapInputError(
                    f"{spec} is a directory but not a zarr store; point to a zarr array, an OME-Zarr image "
                    "or an image file"
                )
            return _open_zarr(path)
    except TilemapInputError:
        raise
    except Exception as err:  # readers raise many types for corrupt files
        first = str(err).splitlines()[0] if str(err) else ""
        raise TilemapInputError(f"cannot read {spec}: {type(err).__name__}: {first}") from None
    raise TilemapInputError(
        f"cannot read {spec}: unknown format; use TIFF, PNG/JPEG, .npy, zarr or OME-Zarr"
    )


def _open_zarr(path: Path):
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        axes = _ome_axes_of_level(path)
        return _yxc(node, repr(str(path))) if axes is None else _to_yxc(node, axes, path)
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)
    if not ome.get("multiscales") and ome.get("bioformats2raw.layout") and "0" in node:
        node = node["0"]  # bioformats2raw / NGFF "transitional" layout: the first image lives in 0/
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
    if not axes and level0.ndim == 5:
        axes = ["t", "c", "z", "y", "x"]  # OME-NGFF 0.1-0.3 fixed the order to TCZYX
    if not axes:
        return _yxc(level0, repr(str(path)))
    if "y" not in [a.lower() for a in axes] or "x" not in [a.lower() for a in axes]:
        raise TilemapInputError(f"{path}: OME axes {axes} have no y and x")
    return _to_yxc(level0, axes, path)


def _ome_axes_of_level(path: Path) -> list[str] | None:
    """The OME axes of ``path`` when it is one resolution level inside an OME-Zarr image group."""
    import zarr

    try:
        attrs = dict(zarr.open_group(str(path.parent), mode="r").attrs)
    except Exception:  # no group above: a plain zarr array
        return None
    for ms in attrs.get("ome", attrs).get("multiscales") or []:
        if any(d.get("path") == path.name for d in ms.get("datasets", [])):
            axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
            return axes or None
    return None


_CHANNEL_NAMES = {"c", "s", "ch", "channel", "channels", "band", "bands"}


def _dimension_names(arr) -> list[str] | None:
    """Axis names a zarr array carries (v3 ``dimension_names``, v2 / tifffile ``_ARRAY_DIMENSIONS``)."""
    names = getattr(getattr(arr, "metadata", None), "dimension_names", None)
    if names is None:
        try:
            names = dict(arr.attrs).get("_ARRAY_DIMENSIONS")
        except Exception:  # arrays without zarr-like attrs
            names = None
    if not names or len(names) != len(arr.shape) or not all(isinstance(n, str) for n in names):
        return None
    lower = [n.lower() for n in names]
    return list(names) if "y" in lower and "x" in lower else None


def _yxc(arr, name: str):
    """``arr`` viewed lazily as (Y, X[, C]) when its axes say how, else as it is (checked later).

    Named axes (zarr dimension names, TIFF axes) put channels last and drop singleton
    others; unnamed arrays lose leading singleton axes, as in (1, 1, Y, X, C).
    """
    names = _dimension_names(arr)
    if names is not None:
        return _to_yxc(arr, names, name)
    shape = tuple(arr.shape)
    lead = 0
    while len(shape) - lead > 2 and shape[lead] == 1 and (len(shape) - lead > 3 or shape[-1] > MAX_CHANNELS):
        lead += 1
    if not lead or len(shape) - lead > 3:
        return arr
    rest = ["y", "x", "c"][: len(shape) - lead]
    return _to_yxc(arr, [f"_{i}" for i in range(lead)] + rest, name)


def _to_yxc(arr, names: list[str], where):
    """Index an array with named axes down to (Y, X[, C]): singleton others dropped, channels moved last."""
    axes = ["c" if n.lower() in _CHANNEL_NAMES else n.lower() for n in names]
    if axes.count("c") > 1:
        raise TilemapInputError(f"{where}: axes {list(names)} name more than one channel axis")
    key = []
    for name, axis, n in zip(names, axes, arr.shape):
        if axis in ("y", "x", "c"):
            key.append(slice(None))
        elif n == 1:
            key.append(0)
        else:
            raise TilemapInputError(
                f"{where}: axis {name!r} has {n} planes; napari-tilemap classifies 2-D images — "
                "export one plane first"
            )
    if axes == ["y", "x"] or axes == ["y", "x", "c"]:
        return arr
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
        return np.transpose(_materialise(self.arr[full]), self.perm)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[0 : self.shape[0], 0 : self.shape[1]], dtype)


class _ClosingReads:
    """A lazy (Y, X[, C]) TIFF array whose file is open only while windows are being read.

    tifffile's zarr store keeps the file it reopens for reading in a cache until the store
    is closed; closing it once no read is in flight leaves no handle behind (no
    ``ResourceWarning: unclosed file``). The next read opens the file again.
    """

    def __init__(self, arr, store) -> None:
        self.arr, self.store = arr, store
        self.shape = tuple(arr.shape)
        self.ndim = len(self.shape)
        self.dtype = arr.dtype
        self._lock = threading.Lock()
        self._reading = 0  # reads in flight, from any thread
        store.close()

    def __getitem__(self, item) -> np.ndarray:
        with self._lock:
            self._reading += 1
        try:
            return _materialise(self.arr[item])
        finally:
            with self._lock:
                self._reading -= 1
                if not self._reading:
                    self.store.close()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[0 : self.shape[0], 0 : self.shape[1]], dtype)


def _materialise(window) -> np.ndarray:
    """A window as numpy; a dask window is computed in the calling thread (no nested thread pool)."""
    if hasattr(window, "dask") and hasattr(window, "compute"):
        window = window.compute(scheduler="sync")
    return np.asarray(window)


def _check_axes(shape: tuple, name: str) -> None:
    if len(shape) == 3 and shape[2] > MAX_CHANNELS:
        hint = "; it looks channel-first: move the channel axis last (np.moveaxis(a, 0, -1))" if shape[0] <= MAX_CHANNELS else ""
        raise TilemapInputError(f"{name} has {shape[2]} channels in its last axis (at most {MAX_CHANNELS}){hint}")
    if len(shape) not in (2, 3):
        raise TilemapInputError(
            f"{name} has shape {tuple(shape)}; expected (Y, X) or (Y, X, C) — select one plane of a stack first"
        )

