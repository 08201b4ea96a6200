"""Superpixels and the vectorised majority vote."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_kanezaki.core.superpixels import compute_superpixels, refine_by_superpixels


def published_refinement(target: np.ndarray, superpixels: np.ndarray) -> np.ndarray:
    """The ICASSP 2018 code's per-superpixel loop, verbatim in spirit."""
    im_target = target.reshape(-1).copy()
    labels = superpixels.reshape(-1)
    l_inds = [np.where(labels == u)[0] for u in np.unique(labels)]
    for inds in l_inds:
        labels_per_sp = im_target[inds]
        u_labels_per_sp = np.unique(labels_per_sp)
        hist = np.zeros(len(u_labels_per_sp))
        for j, u in enumerate(u_labels_per_sp):
            hist[j] = np.sum(labels_per_sp == u)
        im_target[inds] = u_labels_per_sp[np.argmax(hist)]
    return im_target.reshape(target.shape)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_vote_equals_published_loop(seed):
    rng = np.random.default_rng(seed)
    shape, n_labels = (23, 31), 7
    # few labels and tiny superpixels: many ties, which must go to the smallest label
    target = rng.integers(0, n_labels, shape)
    superpixels = rng.integers(0, 60, shape)
    _, superpixels = np.unique(superpixels, return_inverse=True)
    superpixels = superpixels.reshape(shape)
    expected = published_refinement(target, superpixels)
    got = refine_by_superpixels(
        torch.from_numpy(target), torch.from_numpy(superpixels), int(superpixels.max()) + 1, n_labels
    )
    np.testing.assert_array_equal(got.numpy(), expected)


def test_tie_goes_to_smallest_label():
    target = torch.tensor([[5, 2, 2, 5]])
    superpixels = torch.zeros((1, 4), dtype=torch.long)
    assert refine_by_superpixels(target, superpixels, 1, 6).tolist() == [[2, 2, 2, 2]]


def test_slic_and_felzenszwalb_give_consecutive_ids(rgb_image):
    image = rgb_image / 255.0
    slic = compute_superpixels(image, "slic", n_segments=50, compactness=10)
    fz = compute_superpixels(image, "felzenszwalb", scale=10, sigma=0.8, min_size=10)
    for seg in (slic, fz):
        assert seg.shape == image.shape[:2] and seg.dtype == np.int64
        np.testing.assert_array_equal(np.unique(seg), np.arange(seg.max() + 1))
    assert 10 < slic.max() + 1 <= 80
    with pytest.raises(ValueError, match="unknown superpixel algorithm"):
        compute_superpixels(image, "quickshift")
