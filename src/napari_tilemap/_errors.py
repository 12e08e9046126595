"""Exception types raised for bad input, and the warning for input that is probably wrong.

Every one subclasses :class:`TilemapInputError`, itself a :class:`ValueError`, so
``except TilemapInputError`` catches all of them and ``except ValueError`` keeps
working for callers that do not care which part of the pipeline complained.
"""


class TilemapInputError(ValueError):
    """An image, a labels array or a parameter cannot be used as given."""


class ModelFileError(TilemapInputError):
    """A file is not a valid ``.tilemap`` model (wrong format, truncated, inconsistent or unsafe)."""


class MapStoreError(TilemapInputError):
    """A path cannot be used as a classification-map store, or holds an incompatible one."""


class OutputBusyError(MapStoreError):
    """Another run (process or thread) is writing the same output right now."""


class IntensityWarning(UserWarning):
    """An image's intensities lie so far from those of the model's training images that it was
    probably saved at another bit depth or scale; its map is likely wrong."""
