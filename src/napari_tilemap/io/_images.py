"""Checking in-memory images and labels, with errors that say what to change."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._errors import TilemapInputError

MAX_CHANNELS = 4


def as_image(image, *, name: str = "image") -> np.ndarray:
    """``image`` as a float32 (H, W, C) array, checked.

    Parameters
    ----------
    image : array_like
        (Y, X) grayscale or (Y, X, C) with C ≤ 4; any integer, boolean or float type.
    name : str
        What to call the array in error messages.

    Raises
    ------
    TilemapInputError
        For wrong dimensions, channel-first arrays, empty or complex arrays, NaN or inf.

    Examples
    --------
    >>> as_image(np.zeros((4, 5), np.uint8)).shape
    (4, 5, 1)
    """
    arr = np.asarray(image)
    if arr.dtype.kind == "c":
        raise TilemapInputError(f"{name} is complex ({arr.dtype}); pass its magnitude, e.g. np.abs({name})")
    if arr.dtype.kind not in "biuf":
        raise TilemapInputError(f"{name} has dtype {arr.dtype}; pass a numeric array")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise TilemapInputError(
            f"{name} has shape {arr.shape}; expected (Y, X) or (Y, X, C) — select one plane of a stack first"
        )
    if arr.shape[2] > MAX_CHANNELS:
        hint = (
            f"; it looks channel-first: use np.moveaxis({name}, 0, -1)"
            if arr.shape[0] <= MAX_CHANNELS
            else ""
        )
        raise TilemapInputError(f"{name} has {arr.shape[2]} channels in its last axis (at most {MAX_CHANNELS}){hint}")
    if arr.size == 0:
        raise TilemapInputError(f"{name} is empty (shape {arr.shape})")
    out = arr.astype(np.float32, copy=False)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise TilemapInputError(
            f"{name} contains NaN or infinite values; replace them first, e.g. np.nan_to_num({name})"
        )
    return out


def as_labels(labels, image_shape: tuple[int, ...], *, name: str = "labels") -> np.ndarray:
    """``labels`` as an int64 (H, W) array of painted values 0..255 matching ``image_shape``."""
    arr = np.asarray(labels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise TilemapInputError(f"{name} has shape {arr.shape}; expected a 2-D (Y, X) labels array")
    if arr.shape != tuple(image_shape[:2]):
        raise TilemapInputError(
            f"{name} shape {arr.shape} differs from the image shape {tuple(image_shape[:2])}; "
            "paint on a labels layer of the image's size"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise TilemapInputError(f"{name} must hold whole numbers (label values), found fractions or NaN")
    elif arr.dtype.kind not in "biu":
        raise TilemapInputError(f"{name} has dtype {arr.dtype}; expected integer label values")
    out = arr.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() > 255):
        raise TilemapInputError(f"{name} values must lie in 0..255, found {out.min()}..{out.max()}")
    return out


def as_list(arrays, *, name: str) -> list:
    """One array or a sequence of arrays as a list (a single ndarray is one item)."""
    if isinstance(arrays, np.ndarray) or hasattr(arrays, "__array__") or hasattr(arrays, "shape"):
        return [arrays]
    if isinstance(arrays, Sequence) and not isinstance(arrays, (str, bytes)):
        return list(arrays)
    raise TilemapInputError(f"{name} must be an array or a list of arrays, got {type(arrays).__name__}")
