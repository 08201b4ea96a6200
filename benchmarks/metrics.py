"""Segmentation scores for the benchmarks: re-exported from `napari_kanezaki.evaluation`.

The definitions (best-match mIoU, adjusted Rand index, annotator averaging) live in the
package so that the CLI's ``evaluate``/``tune`` and the benchmarks compute the same numbers.
"""

from __future__ import annotations

from napari_kanezaki.evaluation import (  # noqa: F401
    AnnotatorScores,
    Contingency,
    adjusted_rand_index,
    best_match_iou,
    best_match_miou,
    contingency,
    score_annotators,
    split_connected,
)

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
