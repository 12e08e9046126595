"""Model files (``*.tilemap``): safetensors weights with JSON metadata, loaded without pickle."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from ._classes import ClassTable
from ._errors import ModelFileError
from ._model import TileClassifier
from ._networks import Architecture

FORMAT = "napari-tilemap-model"
VERSION = 1


def model_to_bytes(model: TileClassifier) -> bytes:
    """The model as the bytes of a ``.tilemap`` file (also what dask workers receive)."""
    from safetensors.torch import save

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": model.arch.to_dict(),
        "class_table": model.class_table.to_dict(),
        "normalisation": {"mean": model.mean.tolist(), "std": model.std.tolist()},
        "record": model.record,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    return save(tensors, metadata={"tilemap": json.dumps(meta)})


def model_digest(payload: bytes) -> str:
    """SHA-256 of a model's bytes: identifies the model in a map store's run record."""
    return hashlib.sha256(payload).hexdigest()


def save_model(model: TileClassifier, path) -> None:
    """Write ``model`` to ``path`` atomically (a partial file never replaces a good one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(model_to_bytes(model))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_model(path) -> TileClassifier:
    """Read a ``.tilemap`` model file.

    Only JSON and raw tensor bytes are parsed: nothing stored in the file is executed.

    Parameters
    ----------
    path : str or Path
        A file written by :meth:`TileClassifier.save`.

    Raises
    ------
    ModelFileError
        If the file is missing, is not a napari-tilemap model (a pickle, a truncated
        or foreign file), or its contents do not match its own description.

    Examples
    --------
    >>> model = load_model("surface.tilemap")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    return model_from_bytes(path.read_bytes(), name=repr(str(path)))


def model_from_bytes(data: bytes, name: str = "model data") -> TileClassifier:
    """Inverse of :func:`model_to_bytes`; see :func:`load_model` for the errors."""
    from safetensors.torch import load

    try:
        meta = _metadata(data)
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error type and others on garbage
        raise ModelFileError(
            f"{name} is not a napari-tilemap model file (expected safetensors with tilemap metadata): "
            f"{type(err).__name__}: {err}"
        ) from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{name} is a safetensors file but not a napari-tilemap model")
    if meta.get("version", 0) > VERSION:
        raise ModelFileError(
            f"{name} has model format version {meta['version']}; this napari-tilemap reads up to {VERSION}: "
            "upgrade napari-tilemap"
        )
    try:
        model = TileClassifier.create(
            Architecture.from_dict(meta["architecture"]),
            ClassTable.from_dict(meta["class_table"]),
            np.asarray(meta["normalisation"]["mean"], np.float32),
            np.asarray(meta["normalisation"]["std"], np.float32),
            meta.get("record", {}),
        )
        model.network.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{name} holds an inconsistent napari-tilemap model: {err}") from None
    model.network.eval()
    return model


def _metadata(data: bytes) -> dict:
    """The ``tilemap`` JSON of a safetensors header (8-byte length, then JSON)."""
    if len(data) < 8:
        raise ValueError("file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(data[8 : 8 + n])
    raw = (header.get("__metadata__") or {}).get("tilemap")
    return json.loads(raw) if raw else {}
