"""Segmentation scores used by the papers: best-match mIoU and the adjusted Rand index.

NumPy only (plus scikit-image for connected components), vectorised through a sparse
contingency table, so that the functions can move into the package unchanged. Definitions
follow ``shared/data/README.md``:

- best-match mIoU: split every predicted label into its connected components; for each
  ground-truth segment take the best IoU with any predicted component; average over the
  segments (then, in `score_annotators`, over annotators; callers average over images);
- ARI: scikit-learn's ``adjusted_rand_score`` of the flattened maps (the same formula, here
  without scikit-learn), on the predicted labels as they are (not split).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "AnnotatorScores",
    "Contingency",
    "adjusted_rand_index",
    "best_match_iou",
    "best_match_miou",
    "contingency",
    "score_annotators",
    "split_connected",
]


class Contingency(NamedTuple):
    """Sparse contingency table of two label maps (only the pairs that occur)."""

    #: Row (first map) index of each occurring pair, ``0 .. n_rows - 1``.
    rows: np.ndarray
    #: Column (second map) index of each occurring pair, ``0 .. n_cols - 1``.
    cols: np.ndarray
    #: Number of pixels of each pair (the intersection sizes).
    counts: np.ndarray
    #: Pixels of every label of the first map (row sums).
    row_sizes: np.ndarray
    #: Pixels of every label of the second map (column sums).
    col_sizes: np.ndarray


def contingency(a: np.ndarray, b: np.ndarray) -> Contingency:
    """Count the pixels of every (label of `a`, label of `b`) pair that occurs.

    Labels are first mapped to consecutive indices, so any integer ids work. Only occurring
    pairs are stored: memory is bounded by the number of pixels, however many segments
    there are (a fragmented prediction can have tens of thousands).

    Parameters
    ----------
    a, b : numpy.ndarray
        Integer label maps of the same shape.

    Returns
    -------
    Contingency
        Pairs sorted by row, then column.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} and {b.shape}.")
    a_ids, a_inv = np.unique(a.ravel(), return_inverse=True)
    b_ids, b_inv = np.unique(b.ravel(), return_inverse=True)
    n_cols = b_ids.size
    codes, counts = np.unique(a_inv.astype(np.int64) * n_cols + b_inv, return_counts=True)
    return Contingency(
        rows=codes // n_cols,
        cols=codes % n_cols,
        counts=counts,
        row_sizes=np.bincount(a_inv, minlength=a_ids.size),
        col_sizes=np.bincount(b_inv, minlength=n_cols),
    )


def split_connected(labels: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Give every connected component of every label its own id.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer label map; every value (0 included) is a label, none is background.
    connectivity : int
        Neighbourhood of `skimage.measure.label`: 1 = 4-connected (edges), 2 = 8-connected
        (edges and corners) in 2-D.

    Returns
    -------
    numpy.ndarray
        Component ids ``1 .. N``, the shape of `labels`.
    """
    from skimage.measure import label

    _, inverse = np.unique(np.asarray(labels).ravel(), return_inverse=True)
    consecutive = inverse.reshape(np.shape(labels)) + 1  # no 0: nothing is background
    return label(consecutive, background=0, connectivity=connectivity)


def best_match_iou(ground_truth: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """For every ground-truth segment, its best IoU with any predicted segment.

    Parameters
    ----------
    ground_truth : numpy.ndarray
        Integer label map of the reference segments.
    segments : numpy.ndarray
        Integer label map of the predicted segments (already split into connected
        components if the protocol asks for it), same shape.

    Returns
    -------
    numpy.ndarray
        float64, one value per ground-truth label, in increasing label order.
    """
    table = contingency(ground_truth, segments)
    union = table.row_sizes[table.rows] + table.col_sizes[table.cols] - table.counts
    iou = table.counts / union
    # Pairs are sorted by row, and every row occurs: reduce each row's run of pairs.
    starts = np.flatnonzero(np.r_[True, table.rows[1:] != table.rows[:-1]])
    return np.maximum.reduceat(iou, starts)


def best_match_miou(
    ground_truth: np.ndarray, prediction: np.ndarray, connectivity: int = 1
) -> float:
    """Best-match mean IoU of one prediction against one annotation.

    Parameters
    ----------
    ground_truth : numpy.ndarray
        Integer label map of the reference segments.
    prediction : numpy.ndarray
        Integer label map of the prediction, same shape; split into connected components
        before matching.
    connectivity : int
        Connectivity of the split, see `split_connected`.

    Returns
    -------
    float
        Mean over ground-truth segments of the best IoU with a predicted component.
    """
    return float(best_match_iou(ground_truth, split_connected(prediction, connectivity)).mean())


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted Rand index of two label maps, equal to scikit-learn's ``adjusted_rand_score``.

    Parameters
    ----------
    labels_true, labels_pred : numpy.ndarray
        Integer label maps of the same shape (flattened).

    Returns
    -------
    float
        1.0 for identical partitions, about 0 for independent ones (can be negative).
    """
    table = contingency(labels_true, labels_pred)
    # Pair counts as in sklearn.metrics.cluster.pair_confusion_matrix (ordered pairs), in
    # Python integers: the products below overflow int64 for images of ~10^5 pixels.
    n = int(table.counts.sum())
    sum_squares = int(np.dot(table.counts, table.counts))
    same_true = int(np.dot(table.row_sizes, table.row_sizes)) - sum_squares
    same_pred = int(np.dot(table.col_sizes, table.col_sizes)) - sum_squares
    tp = sum_squares - n
    fp, fn = same_pred, same_true
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


class AnnotatorScores(NamedTuple):
    """Scores of one prediction, averaged over the annotators of an image."""

    #: Best-match mIoU, mean over annotators.
    miou: float
    #: Adjusted Rand index, mean over annotators.
    ari: float


def score_annotators(
    prediction: np.ndarray, annotations: Sequence[np.ndarray], connectivity: int = 1
) -> AnnotatorScores:
    """Score a prediction against every annotator's segmentation of the image.

    Parameters
    ----------
    prediction : numpy.ndarray
        Integer label map.
    annotations : sequence of numpy.ndarray
        One ground-truth label map per annotator, each of the prediction's shape.
    connectivity : int
        Connectivity of the connected-component split for the mIoU.

    Returns
    -------
    AnnotatorScores
        Mean best-match mIoU and mean ARI over annotators.
    """
    if len(annotations) == 0:
        raise ValueError("need at least one annotation.")
    segments = split_connected(prediction, connectivity)
    mious = [best_match_iou(gt, segments).mean() for gt in annotations]
    aris = [adjusted_rand_index(gt, prediction) for gt in annotations]
    return AnnotatorScores(float(np.mean(mious)), float(np.mean(aris)))
