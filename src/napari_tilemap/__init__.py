"""napari-tilemap: tile classification ("coarse segmentation") of images of any size.

The public API is loaded lazily so that ``import napari_tilemap`` stays fast and does
not import torch, dask or zarr until they are needed.

Examples
--------
>>> import napari_tilemap as tm
>>> sample = tm.sample_surface(seed=0)
>>> tiles = tm.extract_tiles(sample.image, sample.labels, tile_size=48)  # doctest: +SKIP
>>> model = tm.train(tiles, epochs=5)                                      # doctest: +SKIP
>>> cmap = tm.predict(model, sample.image)                                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "ClassTable": "._classes",
    "MapGeometry": "._geometry",
    "TilemapInputError": "._errors",
    "ModelFileError": "._errors",
    "MapStoreError": "._errors",
    "OutputBusyError": "._errors",
    "SurfaceSample": "._sample",
    "sample_surface": "._sample",
    "TileSet": "._tiles",
    "extract_tiles": "._tiles",
    "PRESETS": "._networks",
    "TileClassifier": "._model",
    "load_model": "._modelfile",
    "TrainingRun": "._training",
    "EpochReport": "._training",
    "BatchProgress": "._training",
    "train": "._training",
    "ClassificationMap": "._mapstore",
    "open_map": "._mapstore",
    "predict": "._predict",
    "iter_predict": "._predict",
    "Cancelled": "._progress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover
    from ._classes import ClassTable
    from ._errors import (
        MapStoreError,
        ModelFileError,
        OutputBusyError,
        TilemapInputError,
    )
    from ._geometry import MapGeometry
    from ._mapstore import ClassificationMap, open_map
    from ._model import TileClassifier
    from ._modelfile import load_model
    from ._networks import PRESETS
    from ._predict import iter_predict, predict
    from ._progress import Cancelled
    from ._sample import SurfaceSample, sample_surface
    from ._tiles import TileSet, extract_tiles
    from ._training import BatchProgress, EpochReport, TrainingRun, train
