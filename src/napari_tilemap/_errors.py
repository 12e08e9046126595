"""Exception types raised for bad input.

Both subclass :class:`ValueError`, so ``except ValueError`` keeps working for callers
that do not care which part of the pipeline complained.
"""


class TilemapInputError(ValueError):
    """An image, a labels array or a parameter cannot be used as given."""


class ModelFileError(ValueError):
    """A file is not a valid ``.tilemap`` model (wrong format, truncated, or unsafe)."""


class MapStoreError(ValueError):
    """A path cannot be used as a classification-map store, or holds an incompatible one."""
