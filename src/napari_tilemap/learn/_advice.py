"""What to tell the user after training: which epoch was kept, and did the background mode fit?

With ``background="unpainted"`` everything the user did not paint is one more class. That is
right for defects on a surface, and wrong when every region of the image belongs to one of
the painted classes (two textures, tissue types): then the unpainted area is made of the
same textures as the painted strokes, the network cannot tell "background" from them, and
the map is full of holes. The validation confusion matrix shows it: as a two-way decision,
background against any painted class, the network does no better than chance.
"""

from __future__ import annotations

import numpy as np

SEPARATION_NEEDED = 0.5
"""Least background/painted separation (Youden's J on validation tiles) that passes unwarned."""
FEW_VALIDATION_TILES = 5
"""Fewer validation tiles than this make a class's recall say little."""


def background_separation(model) -> tuple[float, float, float] | None:
    """How well validation told background from the painted classes.

    Parameters
    ----------
    model : TileClassifier
        A trained model with a training record.

    Returns
    -------
    (J, background recall, painted recall), or None
        ``painted recall`` is the share of painted-class validation tiles predicted as any
        painted class; ``J = background recall + painted recall - 1`` is 1 for a perfect
        two-way decision and about 0 for a guess. None without a background class, or with
        fewer than :data:`FEW_VALIDATION_TILES` validation tiles of either kind.
    """
    table = model.class_table
    final = (model.record or {}).get("final") or {}
    confusion = np.asarray(final.get("confusion") or [], dtype=np.float64)
    if 0 not in table.values or confusion.shape != (len(table), len(table)):
        return None
    b = table.values.index(0)
    painted = [k for k in range(len(table)) if k != b]
    background_tiles = confusion[b].sum()
    painted_tiles = confusion[painted].sum()
    if background_tiles < FEW_VALIDATION_TILES or painted_tiles < FEW_VALIDATION_TILES:
        return None
    background_recall = confusion[b, b] / background_tiles
    painted_recall = confusion[np.ix_(painted, painted)].sum() / painted_tiles
    return float(background_recall + painted_recall - 1.0), float(background_recall), float(painted_recall)


def background_advice(model) -> str | None:
    """A warning with the fix when the background could not be told from the painted classes.

    Returns
    -------
    str or None
        None when the model has no background class, no validation figures, or tells
        background apart well enough (:data:`SEPARATION_NEEDED`).
    """
    found = background_separation(model)
    if found is None or found[0] >= SEPARATION_NEEDED:
        return None
    _, background_recall, painted_recall = found
    return (f"the background (everything unpainted) could hardly be told apart from the painted classes "
            f"(validation recall: background {background_recall:.2f}, painted classes {painted_recall:.2f}). "
            "If every region of the image is one of your classes (textures, tissue types), train again with "
            "background='none'; otherwise paint the classes wherever they appear, so that what stays unpainted "
            "is truly background")


def validation_advice(model) -> str | None:
    """A warning naming the classes with too few validation tiles for their recall to mean much."""
    val = ((model.record or {}).get("tiles") or {}).get("val") or {}
    few = {name: n for name, n in val.items() if 0 < n < FEW_VALIDATION_TILES}
    if not few:
        return None
    listed = ", ".join(f"{name!r} {n}" for name, n in few.items())
    return (f"too few validation tiles to judge some classes ({listed}); their recall says little: paint each "
            "class in more places apart")


def advice(model) -> list[str]:
    """Every warning the user should read after training (see the functions above)."""
    return [text for text in (validation_advice(model), background_advice(model)) if text]


def kept_epoch(record: dict) -> str:
    """Which epoch a model's weights come from, from its training record.

    Examples
    --------
    >>> kept_epoch(model.record)        # doctest: +SKIP
    'kept: epoch 6 of 11 run (of 20 planned), stopped early (no progress for 5 epochs)'
    """
    final, run = (record.get("final") or {}), record.get("epochs_run", 0)
    planned = (record.get("parameters") or {}).get("epochs", run)
    if record.get("stopped"):
        why = ", stopped by the user"
    elif run < planned:
        why = f", stopped early (no progress for {(record.get('parameters') or {}).get('patience')} epochs)"
    else:
        why = ""
    return f"kept: epoch {final.get('epoch')} of {run} run (of {planned} planned){why}"
