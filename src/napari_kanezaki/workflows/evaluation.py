"""Segmentation scores: best-match mIoU and the adjusted Rand index, and file evaluation.

NumPy only (plus scikit-image for connected components and SciPy for ``.mat`` ground
truth), vectorised through a sparse contingency table. Definitions follow
``shared/data/README.md``:

- best-match mIoU: split every predicted label into its connected components; for each
  ground-truth segment take the best IoU with any predicted component; average over the
  segments (then over annotators, then over images);
- ARI: scikit-learn's ``adjusted_rand_score`` of the flattened maps (the same formula, here
  without scikit-learn), on the predicted labels as they are (not split).

Pixels whose ground truth equals ``ignore`` (VOC's void, 255) are left out of both scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "AnnotatorScores",
    "ImageScore",
    "evaluate_files",
    "read_ground_truth",
    "read_labels",
    "summarize",
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
    prediction: np.ndarray,
    annotations: Sequence[np.ndarray],
    connectivity: int = 1,
    ignore: int | None = None,
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
    ignore : int, optional
        Ground-truth value left out of both scores (e.g. 255, VOC's void).

    Returns
    -------
    AnnotatorScores
        Mean best-match mIoU and mean ARI over annotators.
    """
    if len(annotations) == 0:
        raise ValueError("need at least one annotation.")
    prediction = np.asarray(prediction)
    for gt in annotations:
        if np.shape(gt) != prediction.shape:
            raise ValueError(
                f"prediction has shape {prediction.shape} but a ground truth has shape "
                f"{np.shape(gt)}; evaluate predictions of the ground truth's image size."
            )
    segments = split_connected(prediction, connectivity)
    mious, aris = [], []
    for gt in annotations:
        gt = np.asarray(gt)
        keep = slice(None) if ignore is None else gt != ignore
        gt_kept, seg_kept, pred_kept = gt[keep], segments[keep], prediction[keep]
        if gt_kept.size == 0:
            raise ValueError(f"every ground-truth pixel equals ignore={ignore}; nothing to score.")
        mious.append(best_match_iou(gt_kept, seg_kept).mean())
        aris.append(adjusted_rand_index(gt_kept, pred_kept))
    return AnnotatorScores(float(np.mean(mious)), float(np.mean(aris)))


# -- files ----------------------------------------------------------------------------------
class ImageScore(NamedTuple):
    """Scores of one predicted image."""

    #: Name of the image (the prediction's file stem).
    name: str
    #: Best-match mIoU, mean over annotators.
    miou: float
    #: Adjusted Rand index, mean over annotators.
    ari: float
    #: Number of annotations it was compared with.
    n_annotations: int


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label image (TIFF or PNG) as a 2-D integer array.

    Parameters
    ----------
    path : str or Path
        Label file: one integer id per pixel. A palette PNG gives its indices.

    Returns
    -------
    numpy.ndarray
    """
    from napari_kanezaki.imaging.io import read_image

    path = Path(path)
    array = read_image(path)
    if path.suffix.lower() == ".png":
        array = _png_indices(path, array)
    array = np.squeeze(np.asarray(array))
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(
            f"{path} is not a label image: expected a 2-D integer array, got {array.dtype} "
            f"{array.shape}. Save labels as single-channel integer TIFF/PNG (e.g. the "
            "*_labels.tif files of `napari-kanezaki segment`)."
        )
    return array


def read_ground_truth(path: str | Path) -> list[np.ndarray]:
    """Read ground truth: a label image, or a BSDS500 ``.mat`` file with several annotators.

    Parameters
    ----------
    path : str or Path
        ``.mat`` (``gt_seg[k, 0]`` is annotator k's map, as in ``shared/data``) or any
        file `read_labels` reads.

    Returns
    -------
    list of numpy.ndarray
        One label map per annotator.
    """
    path = Path(path)
    if path.suffix.lower() != ".mat":
        return [read_labels(path)]
    from scipy.io import loadmat

    try:
        cell = loadmat(path)["gt_seg"]
    except Exception as exc:
        raise ValueError(
            f"{path} has no readable 'gt_seg' cell array (BSDS500 format): {exc}"
        ) from exc
    return [np.asarray(cell[k, 0]) for k in range(cell.shape[0])]


def evaluate_files(
    predictions: Sequence[str | Path],
    ground_truths: Sequence[str | Path],
    *,
    connectivity: int = 1,
    ignore: int | None = None,
) -> list[ImageScore]:
    """Score prediction files against ground-truth files matched by file stem.

    A prediction ``X_labels.tif`` (as written by the CLI) or ``X.*`` matches the ground
    truth ``X.*``; ground-truth names may also end in ``_gt``, ``_label(s)`` or ``_mask``.

    Parameters
    ----------
    predictions, ground_truths : sequence of path
        Files (see `read_labels`, `read_ground_truth`).
    connectivity, ignore
        See `score_annotators`.

    Returns
    -------
    list of ImageScore
        In the order of `predictions`.
    """
    gt_by_key: dict[str, Path] = {}
    for path in map(Path, ground_truths):
        key = _match_key(path.stem)
        if key in gt_by_key:
            raise ValueError(
                f"ground truths {gt_by_key[key]} and {path} have the same name {key!r}; "
                "pass files with distinct names."
            )
        gt_by_key[key] = path
    pairs = []
    missing = []
    for path in map(Path, predictions):
        key = _match_key(path.stem)
        if key in gt_by_key:
            pairs.append((path, gt_by_key[key]))
        else:  # never paired by position: an unrelated file would score silently
            missing.append(path.name)
    if missing:
        raise ValueError(
            f"no ground truth with the same name for {', '.join(missing)} (ground truths: "
            f"{', '.join(sorted(gt_by_key))}); name each ground truth like its image."
        )
    scores = []
    for pred_path, gt_path in pairs:
        annotations = read_ground_truth(gt_path)
        result = score_annotators(read_labels(pred_path), annotations, connectivity, ignore)
        scores.append(
            ImageScore(_match_key(pred_path.stem), result.miou, result.ari, len(annotations))
        )
    return scores


def summarize(scores: Sequence[ImageScore]) -> dict[str, float]:
    """Mean mIoU and ARI over images.

    Parameters
    ----------
    scores : sequence of ImageScore

    Returns
    -------
    dict
        ``{"miou": ..., "ari": ..., "n_images": ...}``.
    """
    if not scores:
        raise ValueError("no scores to summarise.")
    return {
        "miou": float(np.mean([s.miou for s in scores])),
        "ari": float(np.mean([s.ari for s in scores])),
        "n_images": len(scores),
    }


_SUFFIXES = ("_labels", "_label", "_gt", "_mask", "_prediction", "_pred")


def _match_key(stem: str) -> str:
    for suffix in _SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _png_indices(path: Path, array: np.ndarray) -> np.ndarray:
    """Palette PNGs hold class indices: read them without the palette's colours."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            if img.mode == "P":
                return np.asarray(img)
    except ImportError:  # pragma: no cover - imageio brings Pillow
        pass
    return array
