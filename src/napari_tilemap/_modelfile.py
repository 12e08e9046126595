"""Model files (``*.tilemap``): safetensors weights with JSON metadata, loaded without pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ._classes import ClassTable
from ._errors import ModelFileError
from ._model import TileClassifier
from ._networks import Architecture

FORMAT = "napari-tilemap-model"
VERSION = 1


def save_model(model: TileClassifier, path) -> None:
    """Write ``model`` to ``path`` atomically (a partial file never replaces a good one)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": model.arch.to_dict(),
        "class_table": model.class_table.to_dict(),
        "normalisation": {"mean": model.mean.tolist(), "std": model.std.tolist()},
        "record": model.record,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    tmp = path.with_name(f".{path.name}.partial")
    try:
        save_file(tensors, str(tmp), metadata={"tilemap": json.dumps(meta)})
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
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("tilemap")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(
            f"{str(path)!r} is not a napari-tilemap model file (expected safetensors with "
            f"tilemap metadata): {err}"
        ) from None
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is a safetensors file but not a napari-tilemap model")
    if meta.get("version", 0) > VERSION:
        raise ModelFileError(
            f"{str(path)!r} has model format version {meta['version']}; this napari-tilemap reads "
            f"up to {VERSION}: upgrade napari-tilemap"
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
        raise ModelFileError(f"{str(path)!r} holds an inconsistent napari-tilemap model: {err}") from None
    model.network.eval()
    return model
