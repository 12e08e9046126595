"""Evaluate a model or a classification map against ground truth: cells, objects, scores.

The truth is read window by window and reduced to map resolution as it is read, and the
map block by block, so memory depends on the block size and the map (S² times smaller
than the image), never on the full-resolution image.

Rules
-----
- **Truth of a cell.** Cell (i, j) is judged by the truth pixel
  ``(i*S + S//2, j*S + S//2)``, clipped to the image: the pixel at (odd S) or just after
  (even S) the cell's geometric centre ``offset + (i*S, j*S)``, ``offset = (S-1)/2``
  (docs/design.md, "Map geometry").
- **Unlabelled pixels.** ``unlabelled="background"``: value 0 is background, a class like
  any other. ``unlabelled="ignore"`` (sparse painting): only painted pixels (value != 0)
  count; cells whose centre pixel is 0 are left out.
- **Predicted class.** The argmax of the cell's scores. With a ``threshold``, a cell whose
  best score is below its predicted class's threshold is *unknown*: it fills the extra
  ``unknown`` column of the confusion matrix, counts as wrong for recall and accuracy, and
  is not a prediction for precision (nor part of any predicted object).
- **Objects** (painted classes only): connected regions (8-connectivity) of the cells
  predicted as the class, against connected regions of the truth *presence map*: a cell
  where the class is present, i.e. any truth pixel of the class lies in the cell's S×S
  block. Regions match one-to-one, greedily by decreasing region score (the class's
  highest score in the region), when they overlap or their closest cells are at most
  ``distance`` cells (``distance*S`` pixels) apart along each axis; see
  :mod:`napari_tilemap.analysis._objects`. With ``unlabelled="ignore"``, predicted regions farther
  than ``distance`` from every painted pixel are left out: they cannot be judged.
- **Average precision** per painted class: the all-point interpolated area under the
  object precision–recall curve swept by a threshold on the region score; ``mAP`` is its
  mean over the painted classes with truth objects.
- **Suggested threshold** per class: the lowest threshold ``t`` on the 0.001 grid such that
  the cells predicted as the class (argmax) with best score ≥ ``t`` have precision ≥
  ``target_precision``; None when no threshold reaches it.
- **Peak score** (``min_score``): predicted regions whose region score is below the class's
  ``min_score`` are *unknown*, as on a map with that min score
  (:meth:`ClassificationMap.with_min_score`): left out of the object figures, their cells
  counted in the ``unknown`` column. Because matching is greedy by decreasing score, the
  regions kept match exactly as they do without the others; the average precision, the
  curves and the suggested min score are those of every region.
- **Suggested min score** per painted class: the region-score cut that maximises object F1
  on the pooled precision–recall curve (the lowest such cut when several tie), placed
  halfway between the weakest region kept and the strongest dropped (0 when none is
  dropped); None when no region is a hit. It is measured on these images: check it on
  images of its own.
- **Several images.** Counts are summed and objects pooled (matching stays within each
  image): every figure is over all images.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._classes import ClassTable
from .._errors import TilemapInputError
from .._geometry import MapGeometry
from .._progress import Cancelled, CancelToken, is_cancelled
from ..io._sources import ImageSource, open_image
from ..maps._blockrun import block_grid
from ..maps._mapstore import ClassificationMap
from ._objects import ObjectMatch, average_precision, match_objects
from ._regions import peak_score_floor

SCORE_BINS = 50
"""Bins of the score histograms, on [0, 1]."""
THRESHOLD_GRID = 1000
"""Suggested thresholds are searched on the grid 0, 1/THRESHOLD_GRID, 2/THRESHOLD_GRID, ..."""
_WINDOW_PIXELS = 16 << 20
"""Upper bound on the pixels of one truth window (64 MB as float32)."""
_INVALID = -2
_IGNORED = -1
_UNKNOWN = 255


@dataclass(frozen=True)
class EvaluationProgress:
    """Progress of :func:`evaluate`: ``done`` of ``total`` blocks of ``stage`` on image ``image``.

    ``stage`` is ``"truth"`` (reading the truth), ``"predict"`` (computing the map) or
    ``"compare"`` (reading the map against the truth).
    """

    stage: str
    done: int
    total: int
    image: int = 0


@dataclass(frozen=True, eq=False)
class Evaluation:
    """All figures of an evaluation; arrays follow ``class_names`` (K classes) or
    ``object_class_names`` (the P painted classes).

    Attributes
    ----------
    confusion : ndarray (K, K+1) int64
        Cell counts, rows true class, columns predicted class then ``unknown`` (zero
        without a threshold).
    precision, recall, f1 : ndarray (K,)
        Cell-level, NaN where undefined (no predictions, no support).
    support : ndarray (K,)
        Cells of each true class.
    accuracy, balanced_accuracy : float
        Share of cells predicted right; mean recall over the classes present in the truth.
    truth_objects, predicted_objects, true_positives : ndarray (P,)
        Object counts per painted class.
    object_precision, object_recall, object_f1, average_precision : ndarray (P,)
        Object-level figures, NaN where undefined.
    mean_average_precision : float
        Mean AP over the painted classes that have truth objects.
    pr_curves : tuple of (recall, precision) arrays
        Object precision–recall curve of each painted class, by decreasing region score.
    score_histograms : ndarray (K, K, SCORE_BINS)
        ``[t, c]``: histogram of the score of class c over the cells of true class t.
    suggested_thresholds : dict
        Class name → lowest threshold reaching ``target_precision`` (None if none does).
    min_scores : tuple of float
        The peak score each painted class's regions needed to count as objects (0: none;
        always 0 for background, which has no objects).
    suggested_min_scores : dict
        Painted class name → the ``min_score`` giving the highest object F1 (None if none).
    best_object_f1 : ndarray (P,)
        The object F1 at the suggested min score (NaN where there is none).
    """

    class_names: tuple[str, ...]
    class_values: tuple[int, ...]
    class_colors: tuple[tuple[float, float, float, float], ...]
    step: int
    images: int
    unlabelled: str
    thresholds: tuple[float, ...]
    distance: int
    target_precision: float
    confusion: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    accuracy: float
    balanced_accuracy: float
    object_classes: tuple[int, ...]
    truth_objects: np.ndarray
    predicted_objects: np.ndarray
    true_positives: np.ndarray
    object_precision: np.ndarray
    object_recall: np.ndarray
    object_f1: np.ndarray
    average_precision: np.ndarray
    mean_average_precision: float
    pr_curves: tuple[tuple[np.ndarray, np.ndarray], ...]
    score_bins: np.ndarray
    score_histograms: np.ndarray
    suggested_thresholds: dict = field(default_factory=dict)
    min_scores: tuple[float, ...] = ()
    suggested_min_scores: dict = field(default_factory=dict)
    best_object_f1: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def cells(self) -> int:
        """Cells that were judged (all images)."""
        return int(self.confusion.sum())

    @property
    def thresholded(self) -> bool:
        return any(t > 0 for t in self.thresholds)

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of the confusion-matrix columns: the classes, then ``unknown``."""
        return (*self.class_names, "unknown")

    @property
    def confusion_normalised(self) -> np.ndarray:
        """``confusion`` divided by its row sums (NaN rows for classes absent from the truth)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.confusion / self.confusion.sum(1, keepdims=True)

    @property
    def object_class_names(self) -> tuple[str, ...]:
        return tuple(self.class_names[k] for k in self.object_classes)

    @property
    def distance_pixels(self) -> int:
        """The matching distance in image pixels (``distance * step``)."""
        return self.distance * self.step

    def to_dict(self) -> dict:
        """JSON-ready figures (undefined values are None, never NaN)."""
        names = list(self.class_names)
        normalised = self.confusion_normalised
        per_class = [
            {"class": n, "value": int(v), "precision": _num(p), "recall": _num(r), "f1": _num(f),
             "support": int(s), "predicted": int(c)}
            for n, v, p, r, f, s, c in zip(names, self.class_values, self.precision, self.recall, self.f1,
                                           self.support, self.confusion[:, :-1].sum(0))
        ]
        objects = [
            {"class": self.class_names[k], "value": int(self.class_values[k]), "truth_objects": int(nt),
             "predicted_objects": int(npred), "true_positives": int(tp), "precision": _num(p), "recall": _num(r),
             "f1": _num(f), "average_precision": _num(ap),
             "suggested_min_score": _num(self.suggested_min_scores.get(self.class_names[k])),
             "f1_at_suggested_min_score": _num(best),
             "curve": {"recall": [_num(x) for x in curve[0]], "precision": [_num(x) for x in curve[1]]}}
            for k, nt, npred, tp, p, r, f, ap, best, curve in zip(
                self.object_classes, self.truth_objects, self.predicted_objects, self.true_positives,
                self.object_precision, self.object_recall, self.object_f1, self.average_precision,
                self.best_object_f1, self.pr_curves)
        ]
        return {
            "format": "napari-tilemap-evaluation",
            "version": 1,
            "classes": {"names": names, "values": [int(v) for v in self.class_values]},
            "settings": {
                "images": self.images, "step": self.step, "unlabelled": self.unlabelled,
                "thresholds": {n: (t if t > 0 else None) for n, t in zip(names, map(float, self.thresholds))},
                "min_scores": {n: (t if t > 0 else None) for n, t in zip(names, map(float, self.min_scores))},
                "distance_cells": self.distance, "distance_pixels": self.distance_pixels,
                "target_precision": self.target_precision,
            },
            "cells": {
                "count": self.cells, "accuracy": _num(self.accuracy), "balanced_accuracy": _num(self.balanced_accuracy),
                "per_class": per_class,
                "confusion": {"rows": names, "columns": list(self.column_names),
                              "counts": self.confusion.astype(int).tolist(),
                              "normalised": [[_num(x) for x in row] for row in normalised]},
            },
            "objects": {"per_class": objects, "mean_average_precision": _num(self.mean_average_precision)},
            "scores": {
                "bins": [float(b) for b in self.score_bins],
                "histograms": [
                    {"true_class": t, "class": c, "counts": self.score_histograms[i, j].astype(int).tolist()}
                    for i, t in enumerate(names) for j, c in enumerate(names)
                ],
                "suggested_thresholds": [{"class": n, "threshold": _num(self.suggested_thresholds.get(n))}
                                         for n in names],
            },
        }

    def headline(self) -> str:
        """One line: accuracy, balanced accuracy, mAP, cells and images."""
        images = f"{self.images} image" + ("s" if self.images != 1 else "")
        return (f"cell accuracy {_fmt(self.accuracy)}, balanced accuracy {_fmt(self.balanced_accuracy)}, "
                f"object mAP {_fmt(self.mean_average_precision)} ({self.cells:,} cells, {images})")

    def summary(self) -> str:
        """Aligned text tables: cells per class, confusion matrix, objects with AP, thresholds.

        The first line is :meth:`headline`.
        """
        names = list(self.class_names)
        predicted = self.confusion[:, :-1].sum(0)
        cells = _table(
            ["class", "precision", "recall", "f1", "support", "predicted"],
            [[n, _fmt(p), _fmt(r), _fmt(f), str(s), str(c)]
             for n, p, r, f, s, c in zip(names, self.precision, self.recall, self.f1, self.support, predicted)],
        )
        columns = list(self.column_names) if self.thresholded or self.confusion[:, -1].any() else names
        confusion = _table(["true \\ predicted", *columns],
                           [[n, *(str(v) for v in row[: len(columns)])] for n, row in zip(names, self.confusion)])
        objects = _table(
            ["class", "truth", "predicted", "hits", "precision", "recall", "f1", "AP", "min score*", "f1 at it"],
            [[n, str(a), str(b), str(c), _fmt(p), _fmt(r), _fmt(f), _fmt(ap),
              _fmt_cut(self.suggested_min_scores.get(n)), _fmt(best)]
             for n, a, b, c, p, r, f, ap, best in zip(
                 self.object_class_names, self.truth_objects, self.predicted_objects, self.true_positives,
                 self.object_precision, self.object_recall, self.object_f1, self.average_precision,
                 self.best_object_f1)],
        )
        applied = [f"{n} {t:g}" for n, t in zip(names, self.min_scores) if t > 0]
        suggested = _table(["class", "threshold"], [[n, _fmt(self.suggested_thresholds.get(n))] for n in names])
        how = "sparse truth: unpainted pixels ignored" if self.unlabelled == "ignore" else "value 0 is background"
        return "\n".join([
            self.headline(),
            "",
            f"cells (judged by the truth pixel at each cell's centre; {how}):",
            cells,
            "",
            "confusion matrix (cells; rows: true, columns: predicted):",
            confusion,
            "",
            f"objects (8-connected regions; matched within {self.distance} cell(s) = {self.distance_pixels} px"
            + (f"; regions with a peak score below min score left out: {', '.join(applied)}" if applied else "")
            + "):",
            objects,
            (f"mAP {_fmt(self.mean_average_precision)}; * suggested min score: the peak-score cut with the highest "
             "object F1 here (pass it as min_score / --min-score to regions, exports and evaluate)"),
            "",
            f"suggested thresholds (lowest best-score threshold giving cell precision >= {self.target_precision:g}):",
            suggested,
        ])

    def __str__(self) -> str:
        return self.summary()


def evaluate(
    model_or_map,
    images,
    truth,
    *,
    unlabelled: str = "background",
    threshold: float | dict | None = None,
    min_score: float | dict | str | None = None,
    distance: int | None = None,
    target_precision: float = 0.95,
    block_size: int = 1024,
    device: str = "auto",
    tta: bool = False,
    callback: Callable[[EvaluationProgress], None] | None = None,
    cancel: CancelToken = None,
) -> Evaluation:
    """Measure a model (or its maps) against ground-truth label images.

    Parameters
    ----------
    model_or_map : TileClassifier or ClassificationMap or sequence of ClassificationMap
        A model (each image is predicted block by block) or one map per image.
    images : array_like or path, or a sequence of them, or None
        The images (numpy, dask, zarr or a path). Needed with a model; with maps they are
        optional and only checked for shape.
    truth : array_like or path, or a sequence of them
        One label image per image, in the model's class values (0 = background/unlabelled).
    unlabelled : {'background', 'ignore'}
        Whether value 0 is background (full truth) or unpainted and ignored (sparse truth).
    threshold : float or dict, optional
        Cells whose best score is below the threshold of their predicted class are
        ``unknown``. A dict maps class names or label values to thresholds; classes not in
        it have none. Maps are judged with their own threshold unless one is given.
    min_score : float or dict, optional
        Predicted regions whose peak score is below this (a float, or a dict like
        ``threshold``) are *unknown*, as in ``ClassificationMap.with_min_score``: left out of
        the object figures and counted as unknown cells. The average precision, PR curves and
        suggested min scores are those of every region. Unless one is given, maps are judged
        with their own min score and a model with the one its maps get by default, the
        suggestion of its training (:attr:`TileClassifier.min_score`; ``"model"`` names it);
        0 judges every region.
    distance : int, optional
        Largest gap in cells between matching objects (default 1 cell, ``step`` pixels).
    target_precision : float
        Cell precision the suggested thresholds aim for.
    block_size : int
        Side of a work block in image pixels (prediction and reading).
    device : str
        'auto', 'cpu', 'cuda' or 'mps' for prediction.
    tta : bool
        Predict with test-time augmentation (see :func:`~napari_tilemap.predict`); with a model only.
    callback : callable, optional
        Called with an :class:`EvaluationProgress` after every block.
    cancel : threading.Event or callable, optional
        Checked after every block; when set, :class:`Cancelled` is raised.

    Returns
    -------
    Evaluation

    Raises
    ------
    TilemapInputError
        Truth of another shape than its image, truth values that are not classes of the
        model, a threshold outside [0, 1], mismatched counts of maps, images and truths.

    Examples
    --------
    >>> result = evaluate(model, "wafer.tif", "wafer-truth.tif", threshold=0.6)  # doctest: +SKIP
    >>> print(result.summary())                                                   # doctest: +SKIP
    >>> result.average_precision, result.mean_average_precision                  # doctest: +SKIP
    """
    if unlabelled not in ("background", "ignore"):
        raise TilemapInputError(f"unlabelled must be 'background' or 'ignore', got {unlabelled!r}")
    distance = 1 if distance is None else distance
    if isinstance(distance, bool) or not float(distance).is_integer() or distance < 0:
        raise TilemapInputError(f"distance is a whole number of map cells >= 0, got {distance!r}")
    if not 0 < float(target_precision) <= 1:
        raise TilemapInputError(f"target_precision must lie in (0, 1], got {target_precision!r}")
    if int(block_size) < 1:
        raise TilemapInputError(f"block_size must be a positive number of pixels, got {block_size!r}")
    maps, model = _maps_or_model(model_or_map)
    if model is not None:  # None: as predict makes its maps
        from ..maps._predict import model_min_score

        min_score = model_min_score(model, "model" if min_score is None else min_score)
    elif isinstance(min_score, str) and min_score == "model":
        raise TilemapInputError("min_score='model' needs a model: pass the model, or the maps' min score itself")
    if tta and model is None:
        raise TilemapInputError("tta applies when evaluating a model: predict the maps with tta=True instead")
    if tta:
        from ..maps._dense import trained_orientations

        trained_orientations(model)  # refused before any work
    table = model.class_table if model is not None else maps[0].class_table
    truths = _as_list(truth)
    if not truths:
        raise TilemapInputError("no truth images given; pass at least one label image")
    if model is not None:
        if images is None:
            raise TilemapInputError("evaluating a model needs the images: pass them with their truth")
        image_list = _as_list(images)
    else:
        image_list = [None] * len(maps) if images is None else _as_list(images)
        if len(maps) != len(truths):
            raise TilemapInputError(f"got {len(maps)} map(s) but {len(truths)} truth image(s); give one truth per map")
    if len(image_list) != len(truths):
        raise TilemapInputError(f"got {len(image_list)} image(s) but {len(truths)} truth image(s); "
                                "give one truth per image")
    if maps is not None:  # maps are judged as they are, unless told otherwise
        threshold, min_score = (_recorded(value, maps, what) for value, what in
                                ((threshold, "threshold"), (min_score, "min_score")))
    thresholds = _thresholds(threshold, table)
    floors = peak_score_floor(table, min_score)[list(table.values)]
    tally = _Tally(table, unlabelled, thresholds, int(distance), floors)
    for n, (image, truth_spec) in enumerate(zip(image_list, truths)):
        label = f"truth {n + 1} of {len(truths)}" if len(truths) > 1 else "the truth"
        source = _open_truth(truth_spec, label)
        image_source = None if image is None else open_image(image)
        if image_source is not None and image_source.shape != source.shape:
            raise TilemapInputError(
                f"{label} has shape {source.shape[0]}x{source.shape[1]} but its image {image_source.shape[0]}x"
                f"{image_source.shape[1]}; pass the labels drawn on this image"
            )
        with contextlib.ExitStack() as stack:
            if model is not None:
                geometry = model.geometry(source.shape)
            else:
                geometry = maps[n].geometry
                if tuple(geometry.image_shape) != source.shape:
                    raise TilemapInputError(
                        f"{label} has shape {source.shape[0]}x{source.shape[1]} but its map was computed on an image "
                        f"of {geometry.image_shape[0]}x{geometry.image_shape[1]}; pass the labels of that image"
                    )
            report = _reporter(callback, cancel, n)
            cells = max(1, int(block_size) // geometry.step)
            centre, presence = reduce_truth(source, geometry, table, unlabelled, cells, label,
                                            functools.partial(report, "truth"))
            if model is not None:
                cmap = _predict(model, image_source, int(block_size), device, stack, report, cancel, tta)
            else:
                cmap = maps[n]
            tally.add_map(cmap, centre, presence, cells, functools.partial(report, "compare"))
    return tally.result(target_precision, len(truths))


def reduce_truth(
    source: ImageSource,
    geometry: MapGeometry,
    table: ClassTable,
    unlabelled: str,
    cells: int,
    label: str = "the truth",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The truth at map resolution, read window by window.

    Returns
    -------
    centre : ndarray (H', W') int16
        Class index of each cell's centre pixel (module docstring), -1 where ignored.
    presence : ndarray (P, H', W') bool
        Whether painted class p (the classes with value != 0, in table order) has a pixel
        in the cell's S×S block: a block-wise max-pool of the class masks.

    Examples
    --------
    >>> table = ClassTable.from_values([1])
    >>> truth = np.zeros((8, 8), np.uint8); truth[0, 0] = 1
    >>> c, p = reduce_truth(open_image(truth), MapGeometry(6, 4, (8, 8)), table, "background", 2)
    >>> c.tolist(), p[0].astype(int).tolist()
    ([[0, 0], [0, 0]], [[1, 0], [0, 0]])
    """
    from skimage.measure import block_reduce

    lut = np.full(256, _INVALID, np.int16)
    lut[list(table.values)] = np.arange(len(table), dtype=np.int16)
    if unlabelled == "ignore":
        lut[0] = _IGNORED
    painted = [k for k, v in enumerate(table.values) if v != 0]
    s = geometry.step
    h, w = geometry.image_shape
    centre = np.full(geometry.map_shape, _IGNORED, np.int16)
    presence = np.zeros((len(painted), *geometry.map_shape), bool)
    windows = _truth_windows(geometry.map_shape, cells, s)
    for done, (rows, cols) in enumerate(windows, 1):
        y0, x0 = rows[0] * s, cols[0] * s
        window = source.read((y0, min(rows[1] * s, h)), (x0, min(cols[1] * s, w)))[..., 0]
        index = lut[_label_values(window, lut, table, unlabelled, label)]
        ys = np.minimum(np.arange(*rows) * s + s // 2, h - 1) - y0
        xs = np.minimum(np.arange(*cols) * s + s // 2, w - 1) - x0
        centre[rows[0] : rows[1], cols[0] : cols[1]] = index[np.ix_(ys, xs)]
        for p, k in enumerate(painted):
            presence[p, rows[0] : rows[1], cols[0] : cols[1]] = block_reduce(index == k, (s, s), np.max)
        if progress is not None:
            progress(done, len(windows))
    return centre, presence


class _Tally:
    """Counts summed over images and objects pooled over images."""

    def __init__(self, table: ClassTable, unlabelled: str, thresholds: np.ndarray, distance: int,
                 floors: np.ndarray) -> None:
        k = len(table)
        self.table, self.unlabelled, self.thresholds, self.distance = table, unlabelled, thresholds, distance
        self.floors = floors
        self.step: int | None = None
        self.painted = [i for i, v in enumerate(table.values) if v != 0]
        self.confusion = np.zeros((k, k + 1), np.int64)
        self.histograms = np.zeros((k, k, SCORE_BINS), np.int64)
        self.predicted_at = np.zeros((k, THRESHOLD_GRID), np.int64)
        self.correct_at = np.zeros((k, THRESHOLD_GRID), np.int64)
        self.objects: list[list[ObjectMatch]] = [[] for _ in self.painted]

    def add_map(self, cmap: ClassificationMap, centre: np.ndarray, presence: np.ndarray, cells: int,
                progress: Callable[[int, int], None]) -> None:
        self.step = cmap.step
        k = len(self.table)
        predicted = np.full(cmap.shape, _UNKNOWN, np.uint8)
        best = np.zeros(cmap.shape, np.float32)
        blocks = block_grid(cmap.shape, cells)
        for done, (rows, cols) in enumerate(blocks, 1):
            r, c = slice(*rows), slice(*cols)
            scores = np.asarray(cmap.scores[:, r, c], np.float32)
            truth = centre[r, c].astype(np.int64)
            top, score = scores.argmax(0), scores.max(0)
            predicted[r, c] = np.where(score < self.thresholds[top], _UNKNOWN, top)
            best[r, c] = score
            v = truth >= 0
            t, top, score, scores = truth[v], top[v], score[v], scores[:, v]
            bins = np.minimum((scores * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
            flat = (t[None] * k + np.arange(k)[:, None]) * SCORE_BINS + bins
            self.histograms += np.bincount(flat.ravel(), minlength=k * k * SCORE_BINS).reshape(k, k, SCORE_BINS)
            grid = np.minimum((score * THRESHOLD_GRID).astype(np.int64), THRESHOLD_GRID - 1)
            at = top * THRESHOLD_GRID + grid
            self.predicted_at += np.bincount(at, minlength=k * THRESHOLD_GRID).reshape(k, THRESHOLD_GRID)
            self.correct_at += np.bincount(at[top == t], minlength=k * THRESHOLD_GRID).reshape(k, THRESHOLD_GRID)
            progress(done, len(blocks))
        keep = presence.any(0) if self.unlabelled == "ignore" else None
        for p, cls in enumerate(self.painted):
            self.objects[p].append(match_objects(predicted == cls, best, presence[p], self.distance, keep))
        _drop_weak_regions(predicted, best, self.floors, self.painted)
        v = centre >= 0
        column = np.where(predicted[v] == _UNKNOWN, k, predicted[v]).astype(np.int64)
        self.confusion += np.bincount(centre[v].astype(np.int64) * (k + 1) + column,
                                      minlength=k * (k + 1)).reshape(k, k + 1)

    def result(self, target_precision: float, images: int) -> Evaluation:
        table, confusion = self.table, self.confusion
        hits = np.diag(confusion[:, :-1]).astype(np.float64)
        support = confusion.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = hits / confusion[:, :-1].sum(0)
            recall = hits / support
            f1 = _f1(precision, recall)
        accuracy = float(hits.sum() / support.sum()) if support.sum() else float("nan")
        balanced = float(recall[support > 0].mean()) if (support > 0).any() else float("nan")
        pooled = [ObjectMatch.concatenate(m) for m in self.objects]
        curves, aps, cuts = [], [], []
        for m in pooled:
            ap, r, p = average_precision(m.scores, m.matched, m.truth_objects)
            aps.append(ap)
            curves.append((r, p))
            cuts.append(best_cut(m))
        pooled = [m.at_least(self.floors[cls]) for m, cls in zip(pooled, self.painted)]
        tp = np.array([m.true_positives for m in pooled], np.int64)
        n_truth = np.array([m.truth_objects for m in pooled], np.int64)
        n_pred = np.array([m.predicted_objects for m in pooled], np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            o_precision, o_recall = tp / n_pred, tp / n_truth
            o_f1 = _f1(o_precision, o_recall)
        aps_arr = np.array(aps, np.float64)
        defined = aps_arr[~np.isnan(aps_arr)]
        return Evaluation(
            class_names=tuple(table.names), class_values=tuple(table.values), class_colors=tuple(table.colors),
            step=int(self.step or 0), images=images, unlabelled=self.unlabelled,
            thresholds=tuple(float(t) for t in self.thresholds), distance=self.distance,
            target_precision=float(target_precision), confusion=confusion, precision=precision, recall=recall,
            f1=f1, support=support, accuracy=accuracy, balanced_accuracy=balanced,
            object_classes=tuple(self.painted), truth_objects=n_truth, predicted_objects=n_pred,
            true_positives=tp, object_precision=o_precision, object_recall=o_recall, object_f1=o_f1,
            average_precision=aps_arr, mean_average_precision=float(defined.mean()) if defined.size else float("nan"),
            pr_curves=tuple(curves), score_bins=np.linspace(0.0, 1.0, SCORE_BINS + 1),
            score_histograms=self.histograms,
            suggested_thresholds=dict(zip(table.names, self._suggest(target_precision))),
            min_scores=tuple(float(max(f, 0.0)) if k in self.painted else 0.0 for k, f in enumerate(self.floors)),
            suggested_min_scores={table.names[k]: c[0] for k, c in zip(self.painted, cuts)},
            best_object_f1=np.array([c[1] for c in cuts], np.float64),
        )

    def _suggest(self, target: float) -> list[float | None]:
        """Lowest grid threshold whose cell precision (argmax class, best score >= t) reaches ``target``."""
        out = []
        for predicted, correct in zip(self.predicted_at, self.correct_at):
            n = np.cumsum(predicted[::-1])[::-1]
            ok = np.cumsum(correct[::-1])[::-1]
            reached = np.flatnonzero((n > 0) & (ok >= target * n))
            out.append(float(reached[0] / THRESHOLD_GRID) if reached.size else None)
        return out


def _drop_weak_regions(predicted: np.ndarray, best: np.ndarray, floors: np.ndarray, painted: list[int]) -> None:
    """Set the cells of every region of ``predicted`` (class indices) whose peak ``best`` score is
    below its class's floor to unknown, in place: the min score rule of ``ClassificationMap.with_min_score``."""
    from scipy import ndimage as ndi
    from skimage.measure import label

    for cls in painted:
        if not np.isfinite(floors[cls]):
            continue
        regions = label(predicted == cls, connectivity=2)
        n = int(regions.max())
        if n:
            peak = np.asarray(ndi.maximum(best, regions, np.arange(1, n + 1)), np.float64).reshape(n)
            predicted[np.r_[False, peak < floors[cls]][regions]] = _UNKNOWN


def best_cut(objects: ObjectMatch) -> tuple[float | None, float]:
    """The peak-score cut with the highest object F1 (the lowest of ties) and that F1.

    The cut lies halfway between the weakest region it keeps and the strongest it drops (0
    when it drops none), so that it is not tuned to the last digit of these images.
    Returns ``(None, nan)`` when no region is a hit.

    Examples
    --------
    >>> m = ObjectMatch(np.array([0.875, 0.75, 0.625, 0.5], np.float32), np.array([True, False, True, False]), 2)
    >>> best_cut(m)  # keep the top three: P 2/3, R 1; halfway to the fourth
    (0.5625, 0.8)
    """
    order = np.argsort(-objects.scores, kind="stable")
    scores = objects.scores[order].astype(np.float64)
    tp = np.cumsum(objects.matched[order])
    if not len(tp) or tp[-1] == 0:
        return None, float("nan")
    kept = np.arange(1, len(tp) + 1)
    f1 = 2 * tp / (kept + objects.truth_objects)
    last_of_tie = np.r_[scores[1:] < scores[:-1], True]  # a cut keeps every region of an equal score
    f1 = np.where(last_of_tie, f1, -1.0)
    i = int(np.flatnonzero(f1 == f1.max())[-1])
    if i + 1 == len(scores):
        return 0.0, float(f1[i])
    kept, dropped = float(scores[i]), float(scores[i + 1])
    return _short_cut((kept + dropped) / 2, dropped, kept), float(f1[i])


def _short_cut(cut: float, dropped: float, kept: float) -> float:
    """``cut`` written with at most 4 decimals where that still drops ``dropped`` and keeps ``kept``."""
    for short in (round(cut, 4), math.floor(kept * 1e4) / 1e4):
        if dropped < short <= kept:
            return short
    return (dropped + kept) / 2 if dropped < (dropped + kept) / 2 <= kept else kept


def _predict(model, source: ImageSource, block_size: int, device: str, stack: contextlib.ExitStack, report,
             cancel: CancelToken, tta: bool = False) -> ClassificationMap:
    """The model's map of ``source``: in memory when it fits in one block, else in a temporary store."""
    from ..maps._predict import predict_to_read

    return predict_to_read(model, source, stack, block_size=block_size, prefix="tilemap-evaluate-", device=device,
                           tta=tta, min_score=None, cancel=cancel,
                           callback=lambda e: report("predict", e.done, e.total, check=False))


def _reporter(callback, cancel: CancelToken, image: int):
    def report(stage: str, done: int, total: int, check: bool = True) -> None:
        if callback is not None:
            callback(EvaluationProgress(stage, done, total, image))
        if check and is_cancelled(cancel):
            raise Cancelled(f"evaluation stopped while reading ({stage}) block {done} of {total}")

    return report


def _maps_or_model(obj) -> tuple[list[ClassificationMap] | None, object]:
    if isinstance(obj, ClassificationMap):
        _check_map(obj)
        return [obj], None
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(m, ClassificationMap) for m in obj):
        if len({m.class_table for m in obj}) > 1 or len({m.step for m in obj}) > 1:
            raise TilemapInputError("the maps have different class tables or steps; evaluate maps of one model together")
        for m in obj:
            _check_map(m)
        return list(obj), None
    from ..learn._model import TileClassifier

    if isinstance(obj, TileClassifier):
        return None, obj
    raise TilemapInputError(
        f"evaluate needs a TileClassifier or ClassificationMap(s), got {type(obj).__name__}; "
        "load a model with load_model() or a map with open_map()"
    )


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _open_truth(spec, label: str) -> ImageSource:
    source = open_image(spec)
    if source.channels != 1:
        raise TilemapInputError(f"{label} has {source.channels} channels; it must be a single-channel label image")
    return source


def _check_map(cmap: ClassificationMap) -> None:
    if not cmap.complete:
        where = f" {str(cmap.path)!r}" if cmap.path is not None else ""
        raise TilemapInputError(f"the map{where} is incomplete; run the prediction again to finish it")
    expected = (len(cmap.class_table), *cmap.shape)
    if tuple(cmap.scores.shape) != expected:
        raise TilemapInputError(f"the map's scores have shape {tuple(cmap.scores.shape)}, expected {expected}")


def _recorded(value, maps: list[ClassificationMap], what: str):
    """``value``, or when None the ``threshold`` or ``min_score`` (``what``) all ``maps`` record."""
    if value is not None:
        return value
    recorded = [getattr(m, what) for m in maps]
    if any(r != recorded[0] for r in recorded[1:]):
        raise TilemapInputError(f"the maps have different {what}s; pass {what}= to judge them all by one")
    return recorded[0]


def _thresholds(threshold, table: ClassTable) -> np.ndarray:
    """One threshold per class (0: none) from a threshold as ``ClassificationMap.with_threshold`` takes it."""
    from ..maps._threshold import normalize_threshold, threshold_lut

    if threshold is None:
        return np.zeros(len(table))
    return np.maximum(threshold_lut(normalize_threshold(threshold, table))[list(table.values)], 0.0)


def _label_values(window: np.ndarray, lut: np.ndarray, table: ClassTable, unlabelled: str, label: str) -> np.ndarray:
    """The window as uint8 label values, after checking every value is a class (or 0 when ignored)."""
    whole = window.size and window.min() >= 0 and window.max() <= 255 and not np.any(window % 1)
    if whole:
        values = window.astype(np.uint8)
        present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
        bad = present[lut[present] == _INVALID]
    else:
        present = np.unique(window)
        inside = (present >= 0) & (present <= 255) & (present % 1 == 0)
        bad = present[~inside | (lut[np.clip(present, 0, 255).astype(np.int64)] == _INVALID)]
    if len(bad):
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        known = ", ".join(f"{v} ({n})" for n, v in zip(table.names, table.values))
        hint = ("; value 0 cannot be background for a model without a background class: pass "
                "unlabelled='ignore'" if 0 in bad and 0 not in table.values else "")
        raise TilemapInputError(
            f"{label} holds label values {shown} that are not classes of the model (its values: {known}){hint}; "
            "relabel the truth to the model's values (or set unknown values to 0 with unlabelled='ignore')"
        )
    return values


def _truth_windows(map_shape: tuple[int, int], cells: int, step: int) -> list:
    """Windows of map cells for reading the truth: ``cells`` rows, as wide as ~_WINDOW_PIXELS allow."""
    wide = max(cells, _WINDOW_PIXELS // (cells * step * step))
    h, w = map_shape
    return [((r, min(r + cells, h)), (c, min(c + wide, w))) for r in range(0, h, cells) for c in range(0, w, wide)]


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return np.where((precision == 0) & (recall == 0), 0.0, f1)


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _fmt(x) -> str:
    v = _num(x)
    return "-" if v is None else f"{v:.3f}"


def _fmt_cut(x) -> str:
    """A suggested cut, written so that typing it back keeps the same regions (never rounded up)."""
    v = _num(x)
    if v is None:
        return "-"
    return f"{v:.4f}".rstrip("0").rstrip(".") if round(v, 4) == v else repr(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns right-aligned, the first left-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(n) if i == 0 else str(v).rjust(n) for i, (v, n) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
