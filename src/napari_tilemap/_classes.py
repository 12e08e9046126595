"""The class table: names, colours and painted label values of the classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import TilemapInputError

RGBA = tuple[float, float, float, float]

# A qualitative palette (RGBA 0..1) for painted classes; background is transparent grey.
_PALETTE: tuple[RGBA, ...] = (
    (0.90, 0.10, 0.10, 1.0),
    (0.10, 0.45, 0.95, 1.0),
    (1.00, 0.75, 0.00, 1.0),
    (0.20, 0.75, 0.25, 1.0),
    (0.70, 0.25, 0.85, 1.0),
    (0.00, 0.80, 0.80, 1.0),
    (1.00, 0.45, 0.00, 1.0),
    (0.95, 0.40, 0.70, 1.0),
)
BACKGROUND_COLOR: RGBA = (0.5, 0.5, 0.5, 0.0)

# The reserved label value of map cells whose best score is below the reject threshold
# (docs/design.md, "Reject threshold"). It is never a class: painted values are 1..254.
UNKNOWN = 255
UNKNOWN_NAME = "unknown"
UNKNOWN_COLOR: RGBA = (0.6, 0.6, 0.6, 1.0)
MAX_LABEL_VALUE = UNKNOWN - 1


def unknown_entry() -> dict:
    """How value :data:`UNKNOWN` is named and drawn, as recorded in a thresholded map store."""
    return {"value": UNKNOWN, "name": UNKNOWN_NAME, "color": list(UNKNOWN_COLOR)}


def default_color(value: int) -> RGBA:
    """Colour of painted label ``value`` (1, 2, ...) in the default palette."""
    return _PALETTE[(int(value) - 1) % len(_PALETTE)]


@dataclass(frozen=True)
class ClassTable:
    """Names, colours and label values of the classes a model knows.

    Index ``k`` of every field describes class ``k`` of the network output. When
    ``has_background`` is true, class 0 is *background* (label value 0, never painted);
    the other classes are the painted label values in increasing order. Value
    :data:`UNKNOWN` (255) is reserved for thresholded maps and is never a class.

    Parameters
    ----------
    names : tuple of str
        Class names, one per class.
    colors : tuple of RGBA tuples
        Display colours, RGBA floats in 0..1.
    values : tuple of int
        The label value painted for each class (0 for background).
    """

    names: tuple[str, ...]
    colors: tuple[RGBA, ...]
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.colors) != n or len(self.values) != n:
            raise TilemapInputError(
                f"class table needs one name, colour and value per class; got "
                f"{len(self.names)} names, {len(self.colors)} colours, {len(self.values)} values"
            )
        if len(set(self.values)) != n:
            raise TilemapInputError(f"class label values must be unique, got {self.values}")
        if UNKNOWN in self.values:
            raise TilemapInputError(
                f"label value {UNKNOWN} is reserved for {UNKNOWN_NAME}; paint with 1..{MAX_LABEL_VALUE}"
            )
        if any(v < 0 or v > MAX_LABEL_VALUE for v in self.values):
            raise TilemapInputError(
                f"class label values must lie in 0..{MAX_LABEL_VALUE} (0 = background), got {self.values}"
            )
        if 0 in self.values[1:]:
            raise TilemapInputError("label value 0 (background) may only be class 0")

    @property
    def has_background(self) -> bool:
        """Whether class 0 is the unpainted background."""
        return self.values[0] == 0

    def __len__(self) -> int:
        return len(self.names)

    def index_of_value(self, value: int) -> int:
        """Class index of painted label ``value``."""
        return self.values.index(int(value))

    @classmethod
    def from_values(
        cls,
        values: Sequence[int],
        names: Sequence[str] | dict[int, str] | None = None,
        colors: Sequence[Sequence[float]] | dict[int, Sequence[float]] | None = None,
        background: bool = True,
    ) -> ClassTable:
        """Build a table for the painted label ``values`` (background added when asked).

        ``names`` and ``colors`` may be sequences aligned with ``values`` or dicts keyed
        by label value; missing entries get ``"class <value>"`` and the default palette.
        """
        painted = sorted({int(v) for v in values if int(v) != 0})
        names_by_value = _by_value(names, values)
        colors_by_value = _by_value(colors, values)
        out_values = ([0] if background else []) + painted
        out_names = [
            str(names_by_value.get(v, "background" if v == 0 else f"class {v}")) for v in out_values
        ]
        out_colors = [
            _rgba(colors_by_value.get(v, BACKGROUND_COLOR if v == 0 else default_color(v)))
            for v in out_values
        ]
        return cls(tuple(out_names), tuple(out_colors), tuple(out_values))

    def to_dict(self) -> dict:
        """JSON-ready form, as stored in model files and map stores."""
        return {
            "class_names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "values": list(self.values),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassTable:
        """Inverse of :meth:`to_dict`."""
        names = tuple(str(n) for n in d["class_names"])
        values = tuple(int(v) for v in d.get("values", range(len(names))))
        return cls(names, tuple(_rgba(c) for c in d["colors"]), values)


def _by_value(spec, values: Sequence[int]) -> dict:
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {int(k): v for k, v in spec.items()}
    painted = sorted({int(v) for v in values if int(v) != 0})
    if len(spec) != len(painted):
        raise TilemapInputError(
            f"got {len(spec)} names/colours for {len(painted)} painted classes {painted}; "
            "give one per painted class, or a dict keyed by label value"
        )
    return dict(zip(painted, spec))


def _rgba(c: Sequence[float]) -> RGBA:
    c = [float(x) for x in c]
    if len(c) == 3:
        c.append(1.0)
    if len(c) != 4 or not all(0.0 <= x <= 1.0 for x in c):
        raise TilemapInputError(f"colours are RGB or RGBA floats in 0..1, got {c}")
    return (c[0], c[1], c[2], c[3])
