"""The napari/Qt layer of napari-tilemap: dock widgets that drive the headless core."""

from .widget import TilemapWidget

__all__ = ["TilemapWidget"]
