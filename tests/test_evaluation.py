"""Best-match mIoU and ARI, on hand-made label maps with known scores, and file evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from sklearn.metrics import adjusted_rand_score

from napari_kanezaki.workflows.evaluation import (
    adjusted_rand_index,
    best_match_iou,
    best_match_miou,
    evaluate_files,
    read_ground_truth,
    score_annotators,
    split_connected,
    summarize,
)


def halves() -> np.ndarray:
    gt = np.ones((10, 10), np.int32)
    gt[:, 5:] = 2
    return gt


def test_perfect_prediction_scores_one_whatever_the_ids():
    gt = halves()
    assert best_match_miou(gt, gt * 7 + 3) == 1.0
    assert adjusted_rand_index(gt, 3 - gt) == 1.0


def test_known_iou_of_a_shifted_boundary():
    gt = halves()  # columns 0-4 | 5-9
    pred = np.ones((10, 10), np.int32)
    pred[:, 6:] = 2  # columns 0-5 | 6-9
    # left: 50 / 60; right: 40 / 50
    np.testing.assert_allclose(best_match_iou(gt, pred), [50 / 60, 40 / 50])
    assert best_match_miou(gt, pred) == pytest.approx((50 / 60 + 40 / 50) / 2)


def test_prediction_is_split_into_connected_components_before_matching():
    gt = halves()
    pred = np.ones((10, 10), np.int32)
    pred[:, 2:8] = 2  # label 1 has two disconnected pieces: columns 0-1 and 8-9
    assert split_connected(pred).max() == 3
    # gt left (cols 0-4): best is the middle piece (cols 2-7): 30 / 80 vs piece 0-1: 20 / 50
    # gt right (cols 5-9): middle piece 30 / 80, piece 8-9: 20 / 50
    assert best_match_miou(gt, pred) == pytest.approx(20 / 50)


def test_ari_matches_scikit_learn():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (30, 40)), rng.integers(0, 6, (30, 40))
    b[a == 2] = 9
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a.ravel(), b.ravel()))


def test_ignore_leaves_void_pixels_out():
    gt = halves()
    gt[:, 4] = 255  # void column
    pred = np.ones((10, 10), np.int32)
    pred[:, 4:] = 2  # only wrong on the void column
    scores = score_annotators(pred, [gt], ignore=255)
    assert scores == (1.0, 1.0)
    assert score_annotators(pred, [gt]).miou < 1.0


def test_annotators_are_averaged_and_shapes_checked():
    gt = halves()
    other = np.ones((10, 10), np.int32)
    pred = gt.copy()
    assert score_annotators(pred, [gt, other]).miou == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="prediction has shape"):
        score_annotators(pred[:5], [gt])


def test_evaluate_files_pairs_by_stem(tmp_path):
    gt = halves()
    pred = np.ones((10, 10), np.int32)
    pred[:, 6:] = 2
    tifffile.imwrite(tmp_path / "a_labels.tif", pred)
    tifffile.imwrite(tmp_path / "b_labels.tif", gt)
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.png", gt.astype(np.uint8))
    iio.imwrite(tmp_path / "b_gt.png", gt.astype(np.uint8))
    scores = evaluate_files(
        [tmp_path / "a_labels.tif", tmp_path / "b_labels.tif"],
        [tmp_path / "b_gt.png", tmp_path / "a.png"],
    )
    assert [s.name for s in scores] == ["a", "b"]
    assert scores[0].miou == pytest.approx((50 / 60 + 40 / 50) / 2)
    assert scores[1].miou == 1.0 and scores[1].ari == 1.0
    assert summarize(scores)["miou"] == pytest.approx((scores[0].miou + 1.0) / 2)
    with pytest.raises(ValueError, match="no ground truth with the same name for a_labels.tif"):
        evaluate_files([tmp_path / "a_labels.tif", tmp_path / "b_labels.tif"],
                       [tmp_path / "b_gt.png"])
    with pytest.raises(ValueError, match="have the same name 'b'"):
        evaluate_files([tmp_path / "b_labels.tif"], [tmp_path / "b_gt.png", tmp_path / "b.png"])


def test_bsds_mat_ground_truth_has_every_annotator(tmp_path):
    from scipy.io import savemat

    cell = np.empty((2, 1), dtype=object)
    cell[0, 0] = halves().astype(np.uint32)
    cell[1, 0] = np.ones((10, 10), np.uint32)
    savemat(tmp_path / "x.mat", {"gt_seg": cell})
    maps = read_ground_truth(tmp_path / "x.mat")
    assert len(maps) == 2 and maps[0].shape == (10, 10)
