"""Writing model files (``*.tilemap``): safetensors weights with JSON metadata.

Reading and checking them is :mod:`._modelfile`'s job; this module knows nothing of
:class:`TileClassifier` beyond its attributes, so the model can save itself without an
import circle.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ._model import TileClassifier

FORMAT = "napari-tilemap-model"


def model_to_bytes(model: TileClassifier) -> bytes:
    """The model as the bytes of a ``.tilemap`` file (also what dask workers receive)."""
    from safetensors.torch import save

    arch = model.arch.to_dict()
    if arch["activation"] == "softmax":
        del arch["activation"]  # the version-1 layout: softmax models' bytes did not change
    normalisation = {"mean": model.mean.tolist(), "std": model.std.tolist()}
    if model.per_image is not None:
        normalisation["per_image"] = list(model.per_image)
    meta = {
        "format": FORMAT,
        # the oldest version that holds the model, so that files older readers could read do not change
        "version": 3 if model.per_image is not None else 1 if "activation" not in arch else 2,
        "architecture": arch,
        "class_table": model.class_table.to_dict(),
        "normalisation": normalisation,
        "record": model.record,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    meta["weights_sha256"] = weights_digest(save(tensors))  # the tensor data does not depend on the header
    return save(tensors, metadata={"tilemap": json.dumps(meta)})


def weights_digest(data: bytes) -> str:
    """SHA-256 of the tensor data of safetensors bytes (all that follows the header)."""
    (n,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(memoryview(data)[8 + n :]).hexdigest()


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
