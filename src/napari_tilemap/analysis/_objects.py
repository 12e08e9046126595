"""Object-level matching and average precision on map-resolution arrays.

An *object* is a connected region (8-connectivity) of map cells: a predicted region is
a connected set of cells predicted as one class, a truth region a connected set of cells
in which that class is present. Everything here works on small (H', W') arrays, one
class at a time.

Rules
-----
- **Match.** A predicted region and a truth region match when they share a cell or when
  their closest cells are at most ``distance`` cells apart along each axis (Chebyshev
  distance, so ``distance=1`` also accepts regions that touch diagonally).
- **One-to-one, greedy.** Predicted regions are taken in order of decreasing score (ties
  in label order); each takes the still unmatched candidate truth region it overlaps most
  (ties: the lowest truth label). A predicted region without one is a false alarm, a
  truth region never taken a miss.
- **Average precision.** Ranking the predicted regions by score gives, after each rank
  k, precision P_k = TP_k / k and recall R_k = TP_k / (truth objects). AP is the all-point
  interpolated area under that curve, ``sum_k (R_k - R_{k-1}) * max_{j >= k} P_j``
  (PASCAL VOC 2010 onwards). Because matching is greedy in score order, the matches of
  the top k regions are exactly those made when only they are kept, so the curve is the
  one obtained by sweeping a threshold on the region score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True, eq=False)
class ObjectMatch:
    """Predicted regions of one class, their scores and whether each found a truth region.

    Attributes
    ----------
    scores : ndarray (n_predicted,)
        Region score: the highest score of the class inside the region.
    matched : ndarray (n_predicted,) bool
        Whether the region was matched one-to-one to a truth region.
    truth_objects : int
        Number of truth regions.
    """

    scores: np.ndarray
    matched: np.ndarray
    truth_objects: int

    @property
    def predicted_objects(self) -> int:
        return len(self.scores)

    @property
    def true_positives(self) -> int:
        return int(self.matched.sum())

    def at_least(self, score: float) -> ObjectMatch:
        """The regions whose score is at least ``score``: with matching greedy by score, exactly
        what matching only those regions gives."""
        strong = self.scores >= score
        return ObjectMatch(self.scores[strong], self.matched[strong], self.truth_objects)

    @staticmethod
    def concatenate(matches: list[ObjectMatch]) -> ObjectMatch:
        """Pool the objects of several images (matching stays within each image)."""
        return ObjectMatch(
            np.concatenate([m.scores for m in matches]) if matches else np.zeros(0, np.float32),
            np.concatenate([m.matched for m in matches]) if matches else np.zeros(0, bool),
            sum(m.truth_objects for m in matches),
        )


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions (8-connectivity) of a boolean map, labelled 1..n."""
    from skimage.measure import label

    labels, n = label(np.asarray(mask, bool), connectivity=2, return_num=True)
    return labels, int(n)


def match_objects(
    predicted: np.ndarray,
    score: np.ndarray,
    truth: np.ndarray,
    distance: int = 1,
    keep: np.ndarray | None = None,
) -> ObjectMatch:
    """Match the regions of ``predicted`` to those of ``truth`` (both boolean (H', W') maps).

    Parameters
    ----------
    predicted : ndarray of bool
        Cells predicted as the class.
    score : ndarray of float
        The class's score per cell; a region's score is its maximum.
    truth : ndarray of bool
        Cells where the class is present in the truth.
    distance : int
        Largest gap, in cells along each axis, between matching regions (0: must overlap).
    keep : ndarray of bool, optional
        Predicted regions that do not come within ``distance`` of a ``keep`` cell are left
        out (neither hits nor false alarms): with sparse truth, regions far from any
        painted pixel cannot be judged.

    Examples
    --------
    >>> pred = np.array([[1, 1, 0, 0, 1]], bool)
    >>> truth = np.array([[0, 0, 1, 0, 0]], bool)
    >>> m = match_objects(pred, pred * 0.9, truth, distance=1)
    >>> m.matched.tolist(), m.truth_objects
    ([True, False], 1)
    """
    pred_labels, n_pred = label_regions(predicted)
    truth_labels, n_truth = label_regions(truth)
    index = np.arange(1, n_pred + 1)
    scores = np.asarray(ndi.maximum(score, pred_labels, index), np.float32).reshape(n_pred)
    if keep is not None:
        near = np.unique(_pairs(pred_labels, np.asarray(keep, np.int64), distance)[0])
        kept = np.isin(index, near)
    else:
        kept = np.ones(n_pred, bool)
    assigned = _greedy(pred_labels, truth_labels, scores, kept, distance)
    return ObjectMatch(scores[kept], assigned[kept] > 0, n_truth)


def average_precision(scores: np.ndarray, matched: np.ndarray, truth_objects: int) -> tuple[float, np.ndarray, np.ndarray]:
    """All-point interpolated average precision and the precision–recall curve.

    Returns
    -------
    ap : float
        NaN when there are no truth objects (undefined); 0 when nothing was predicted.
    recall, precision : ndarray
        The curve after each rank, predicted regions sorted by decreasing score.

    Examples
    --------
    >>> ap, r, p = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3)
    >>> round(ap, 4)  # 1/3 * 1 + 1/3 * 2/3
    0.5556
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.asarray(matched, bool)[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    if truth_objects == 0:
        return float("nan"), np.full(len(hits), np.nan), precision
    recall = tp / truth_objects
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    ap = float(np.sum(np.diff(recall, prepend=0.0) * envelope))
    return ap, recall, precision


def _pairs(pred_labels: np.ndarray, truth_labels: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """All (predicted label, truth label) pairs of cells at most ``distance`` apart along each axis."""
    ys, xs = np.nonzero(pred_labels)
    p = pred_labels[ys, xs]
    h, w = truth_labels.shape
    found_p, found_t = [], []
    for dy in range(-distance, distance + 1):
        for dx in range(-distance, distance + 1):
            y, x = ys + dy, xs + dx
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            t = truth_labels[y[inside], x[inside]]
            hit = t > 0
            found_p.append(p[inside][hit])
            found_t.append(t[hit])
    if not found_p:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_p).astype(np.int64), np.concatenate(found_t).astype(np.int64)


def _greedy(pred_labels, truth_labels, scores, kept, distance: int) -> np.ndarray:
    """The truth label each predicted region takes (0: none), greedy by decreasing score."""
    n_pred = len(scores)
    assigned = np.zeros(n_pred, np.int64)
    if n_pred == 0 or not truth_labels.any():
        return assigned
    n_truth = int(truth_labels.max())
    p, t = _pairs(pred_labels, truth_labels, distance)
    candidates = np.unique(p * (n_truth + 1) + t)
    both = (pred_labels > 0) & (truth_labels > 0)
    shared, counts = np.unique(pred_labels[both].astype(np.int64) * (n_truth + 1) + truth_labels[both], return_counts=True)
    overlap = dict(zip(shared.tolist(), counts.tolist()))
    by_pred: dict[int, list[tuple[int, int]]] = {}
    for key in candidates.tolist():
        by_pred.setdefault(key // (n_truth + 1), []).append((-overlap.get(key, 0), key % (n_truth + 1)))
    taken = set()
    for i in np.argsort(-scores, kind="stable"):
        if not kept[i]:
            continue
        free = [c for c in sorted(by_pred.get(int(i) + 1, [])) if c[1] not in taken]
        if free:
            assigned[i] = free[0][1]
            taken.add(free[0][1])
    return assigned
