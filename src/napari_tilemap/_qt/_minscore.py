"""The min peak score as the Predict and Evaluate tabs take it: ``model`` (the default), the min score
training suggested; empty or ``none`` for none; one value or ``NAME=VALUE`` pairs."""

from __future__ import annotations

from magicgui.widgets import LineEdit

from ..maps._predict import model_min_score
from ..maps._threshold import parse_threshold

MODEL = "model"


def min_score_edit(tooltip: str) -> LineEdit:
    """A text field for a min peak score, ``model`` by default."""
    edit = LineEdit(label="min peak score", value=MODEL)
    edit.tooltip = tooltip
    return edit


def read_min_score(text: str, model):
    """The min score ``text`` asks for with ``model``: ``model``'s own (None when it records none), None
    for empty or ``none``, else a float or a dict checked against the model's classes.

    Raises
    ------
    TilemapInputError
        Text that is no min score, or names a class the model does not have.
    """
    text = str(text).strip()
    if text.lower() in ("", "none"):
        return None
    return model_min_score(model, MODEL if text.lower() == MODEL else parse_threshold(text, "min score"))
