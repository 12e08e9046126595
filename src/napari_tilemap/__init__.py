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
    "IntensityWarning": "._errors",
    "SurfaceSample": ".io._sample",
    "sample_surface": ".io._sample",
    "TileSet": ".learn._tiles",
    "extract_tiles": ".learn._tiles",
    "PRESETS": ".learn._networks",
    "TileClassifier": ".learn._model",
    "load_model": ".learn._modelfile",
    "TrainingRun": ".learn._training",
    "EpochReport": ".learn._training",
    "BatchProgress": ".learn._training",
    "MiningProgress": ".learn._hardneg",
    "train": ".learn._training",
    "TrainConfig": ".learn._training",
    "AUGMENTATIONS": ".learn._augment",
    "DEFAULT_AUGMENT": ".learn._augment",
    "suggest": ".analysis._suggest",
    "Suggestions": ".analysis._suggest",
    "ClassificationMap": ".maps._mapstore",
    "open_map": ".maps._mapstore",
    "predict": ".maps._predict",
    "iter_predict": ".maps._predict",
    "write_threshold": ".maps._threshold",
    "clear_threshold": ".maps._threshold",
    "Cancelled": "._progress",
    "evaluate": ".analysis._evaluate",
    "Evaluation": ".analysis._evaluate",
    "write_report": ".analysis._report",
    "regions": ".analysis._regions",
    "statistics": ".analysis._stats",
    "export": ".analysis._export",
    "ExportError": ".analysis._export",
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
        IntensityWarning,
        MapStoreError,
        ModelFileError,
        OutputBusyError,
        TilemapInputError,
    )
    from ._geometry import MapGeometry
    from ._progress import Cancelled
    from .analysis._evaluate import Evaluation, evaluate
    from .analysis._export import ExportError, export
    from .analysis._regions import regions
    from .analysis._report import write_report
    from .analysis._stats import statistics
    from .analysis._suggest import Suggestions, suggest
    from .learn._augment import AUGMENTATIONS, DEFAULT_AUGMENT
    from .learn._hardneg import MiningProgress
    from .io._sample import SurfaceSample, sample_surface
    from .learn._model import TileClassifier
    from .learn._modelfile import load_model
    from .learn._networks import PRESETS
    from .learn._tiles import TileSet, extract_tiles
    from .learn._training import BatchProgress, EpochReport, TrainConfig, TrainingRun, train
    from .maps._mapstore import ClassificationMap, open_map
    from .maps._predict import iter_predict, predict
    from .maps._threshold import clear_threshold, write_threshold
