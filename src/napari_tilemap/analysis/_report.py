"""An evaluation report on disk: ``evaluation.json`` and three pictures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .._errors import TilemapInputError
from ._evaluate import Evaluation

REPORT_FILES = ("evaluation.json", "confusion.png", "scores.png", "precision_recall.png")


def check_report_folder(folder, *, overwrite: bool = False) -> None:
    """Refuse a report folder before any work: a missing parent, a file, or an earlier report.

    Raises
    ------
    TilemapInputError
        Naming the problem; an earlier report is replaced only with ``overwrite=True``.
    """
    folder = Path(folder)
    if not folder.absolute().parent.is_dir():
        raise TilemapInputError(f"the folder above the report {str(folder)!r} does not exist; create it first")
    if folder.exists() and not folder.is_dir():
        raise TilemapInputError(f"the report folder {str(folder)!r} is a file; choose a folder")
    if not overwrite and any((folder / name).exists() for name in REPORT_FILES):
        raise TilemapInputError(f"{str(folder)!r} already holds a report; choose another folder or pass "
                                "overwrite=True")


def write_report(evaluation: Evaluation, folder, *, overwrite: bool = False) -> list[Path]:
    """Write ``evaluation.json``, ``confusion.png``, ``scores.png`` and ``precision_recall.png``.

    ``folder`` is created if missing (its parent must exist). Every file is written under
    a temporary name and renamed into place, so a report file is never half written. An
    earlier report in ``folder`` is replaced only with ``overwrite=True``.

    - ``confusion.png``: the cell confusion matrix, coloured by row share, with counts.
    - ``scores.png``: per true class, the histogram of every class's score over its cells.
    - ``precision_recall.png``: the object precision–recall curve of each painted class,
      with its average precision.

    Returns
    -------
    list of Path
        The four files, in the order above (JSON first).

    Examples
    --------
    >>> paths = write_report(evaluate(model, image, truth), "report")   # doctest: +SKIP
    >>> [p.name for p in paths]                                          # doctest: +SKIP
    ['evaluation.json', 'confusion.png', 'scores.png', 'precision_recall.png']
    """
    folder = Path(folder)
    check_report_folder(folder, overwrite=overwrite)
    folder.mkdir(exist_ok=True)
    text = json.dumps(evaluation.to_dict(), indent=1, allow_nan=False)
    paths = [_atomic(folder / REPORT_FILES[0], lambda tmp: tmp.write_text(text, encoding="utf-8"))]
    for name, figure in zip(REPORT_FILES[1:], figures(evaluation).values()):
        paths.append(_atomic(folder / name, lambda tmp, fig=figure: fig.savefig(tmp, format="png", dpi=110)))
    return paths


def figures(evaluation: Evaluation) -> dict:
    """The report's pictures as matplotlib figures (no pyplot), by title: confusion matrix,
    score histograms, precision–recall curves."""
    return {
        "confusion": _draw_confusion(evaluation),
        "scores": _draw_scores(evaluation),
        "precision–recall": _draw_precision_recall(evaluation),
    }


def _atomic(path: Path, write) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _figure(**kw):
    # a bare Figure draws with Agg and leaves pyplot (and napari's Qt backend) alone
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kw)


def _colour(evaluation: Evaluation, k: int):
    r, g, b, _ = evaluation.class_colors[k]
    return (r, g, b, 1.0)


def _draw_confusion(evaluation: Evaluation):
    counts = evaluation.confusion
    names = list(evaluation.class_names)
    columns = list(evaluation.column_names)
    if not (evaluation.thresholded or counts[:, -1].any()):
        counts, columns = counts[:, :-1], names
    share = np.nan_to_num(evaluation.confusion_normalised[:, : len(columns)])
    k = len(names)
    fig = _figure(figsize=(1.6 + 0.9 * len(columns), 1.4 + 0.8 * k))
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(counts):
        ax.text(j, i, f"{v}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"cells: accuracy {_pct(evaluation.accuracy)}, balanced {_pct(evaluation.balanced_accuracy)}",
                 fontsize=9)
    return fig


def _draw_scores(evaluation: Evaluation):
    present = [t for t in range(len(evaluation.class_names)) if evaluation.support[t] > 0]
    fig = _figure(figsize=(5.5, 1.2 + 1.9 * max(1, len(present))))
    axes = fig.subplots(max(1, len(present)), 1, sharex=True, squeeze=False)[:, 0]
    edges = evaluation.score_bins
    for ax, t in zip(axes, present):
        for c, name in enumerate(evaluation.class_names):
            counts = evaluation.score_histograms[t, c]
            ax.stairs(counts, edges, color=_colour(evaluation, c), label=f"score of {name}", linewidth=1.4)
        if evaluation.score_histograms[t].any():
            ax.set_yscale("log")
        ax.set_ylabel("cells")
        ax.set_title(f"true class: {evaluation.class_names[t]} ({evaluation.support[t]} cells)", fontsize=9)
        ax.legend(fontsize=7)
    if not present:
        axes[0].text(0.5, 0.5, "no cells with truth", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("score")
    axes[-1].set_xlim(0, 1)
    return fig


def _draw_precision_recall(evaluation: Evaluation):
    fig = _figure(figsize=(5, 4.2))
    ax = fig.add_subplot()
    drawn = False
    for p, k in enumerate(evaluation.object_classes):
        recall, precision = evaluation.pr_curves[p]
        if len(recall) == 0 or np.isnan(recall).all():
            continue
        ax.plot(np.r_[0.0, recall], np.r_[precision[0], precision], drawstyle="steps-post",
                color=_colour(evaluation, k),
                label=f"{evaluation.class_names[k]}: AP {_fmt(evaluation.average_precision[p])}")
        drawn = True
    if drawn:
        ax.legend(fontsize=8, loc="lower left")
    else:
        ax.text(0.5, 0.5, "no predicted objects where the truth has objects", ha="center", va="center")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("object recall")
    ax.set_ylabel("object precision")
    ax.set_title(f"objects (region score sweep): mAP {_fmt(evaluation.mean_average_precision)}, "
                 f"match within {evaluation.distance_pixels} px", fontsize=9)
    return fig


def _fmt(x) -> str:
    return "-" if x is None or np.isnan(x) else f"{x:.3f}"


def _pct(x) -> str:
    return "-" if x is None or np.isnan(x) else f"{x:.1%}"
