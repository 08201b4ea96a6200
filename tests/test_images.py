"""Image and scribble handling: layouts, dtypes, intensity scaling, label numbering."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kanezaki import ImageError
from napari_kanezaki.imaging.images import (
    number_segments,
    prepare_scribbles,
    scribbles_from_published,
    to_network_input,
)


def test_uint8_is_divided_by_255_like_the_papers():
    image = np.array([[0, 51], [255, 102]], dtype=np.uint8)
    out = to_network_input(image)
    assert out.dtype == np.float32 and out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0], image / 255.0, rtol=1e-6)


def test_rgb_rgba_and_channel_axis_layouts():
    rgb = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    assert to_network_input(rgb).shape == (3, 5, 6)
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_network_input(rgba), to_network_input(rgb))
    five = np.random.default_rng(1).random((5, 7, 9))
    assert to_network_input(five, channel_axis=0).shape == (5, 7, 9)
    assert to_network_input(np.moveaxis(five, 0, -1), channel_axis=-1).shape == (5, 7, 9)


def test_uint16_uses_per_channel_percentiles():
    rng = np.random.default_rng(0)
    image = np.stack(
        [rng.integers(100, 200, (30, 30)), rng.integers(1000, 60000, (30, 30))], axis=-1
    ).astype(np.uint16)
    image[0, 0, 0] = 65535  # a hot pixel must not squash the rest
    out = to_network_input(image, channel_axis=-1)
    assert out.min() == 0 and out.max() == 1
    for c in range(2):
        lo, hi = np.percentile(image[..., c], [1, 99.8])
        expected = np.clip((image[..., c] - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(out[c], expected, atol=1e-5)
    assert np.median(out[0]) > 0.3  # not squashed towards 0 by the hot pixel


def test_bool_float_and_constant_images():
    mask = np.zeros((4, 4), bool)
    mask[1:3] = True
    np.testing.assert_array_equal(to_network_input(mask)[0], mask.astype(np.float32))
    assert to_network_input(np.full((4, 4), 7.5)).max() == 0
    ramp = np.linspace(-3, 3, 100).reshape(10, 10)
    out = to_network_input(ramp)
    assert 0 <= out.min() and out.max() <= 1


def test_input_is_never_modified():
    image = np.random.default_rng(0).integers(0, 65535, (8, 8), dtype=np.uint16)
    before = image.copy()
    to_network_input(image)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((4, 5, 6)), {}, "pass channel_axis"),
        (np.zeros((2, 3, 4, 5)), {}, "expected a 2-D image"),
        (np.zeros((4, 5, 3)), {"channel_axis": 3}, "channel_axis=3 is not an axis"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), {}, "NaN or infinite"),
        (np.zeros((1, 9)), {}, "too small"),
        (np.array([["a", "b"], ["c", "d"]]), {}, "numeric array"),
    ],
)
def test_bad_images_are_explained(image, kwargs, message):
    with pytest.raises(ImageError, match=message):
        to_network_input(image, **kwargs)


def test_scribbles_become_targets():
    s = np.zeros((3, 4), np.uint8)
    s[0, 0], s[2, 3] = 2, 5
    out = prepare_scribbles(s, (3, 4), n_channels=10)
    assert out.dtype == np.int64
    assert out[0, 0] == 2 and out[2, 3] == 5 and (out[s == 0] == -1).all()
    assert s[1, 1] == 0  # input untouched


@pytest.mark.parametrize(
    ("scribbles", "message"),
    [
        (np.zeros((3, 4, 3), np.uint8), "looks like an RGB image"),
        (np.zeros((4, 3), np.uint8), "spatial shape is"),
        (np.full((3, 4), 100), "not smaller than n_channels=100"),
        (np.full((3, 4), -1), "must not be negative"),
        (np.full((3, 4), 1.5), "integer class ids"),
    ],
)
def test_bad_scribbles_are_explained(scribbles, message):
    with pytest.raises(ImageError, match=message):
        prepare_scribbles(scribbles, (3, 4), n_channels=100)


def test_empty_scribbles_warn_and_are_ignored():
    with pytest.warns(UserWarning, match="empty"):
        assert prepare_scribbles(np.zeros((3, 4), int), (3, 4), 100) is None


def test_numbering_largest_first_without_zero():
    channels = np.array([[7, 7, 7, 2], [2, 9, 9, 9], [9, 9, 4, 4]])
    labels = number_segments(channels, n_channels=10)
    # sizes: 9 -> 5 px, 7 -> 3, 2 -> 2, 4 -> 2 (tie: smaller channel first)
    expected = {9: 1, 7: 2, 2: 3, 4: 4}
    for c, label in expected.items():
        assert (labels[channels == c] == label).all()
    assert labels.dtype == np.int32 and labels.min() == 1


def test_numbering_keeps_scribble_ids_and_counts_above_them():
    channels = np.array([[3, 3, 0, 0, 0], [1, 5, 5, 5, 5]])
    labels = number_segments(channels, n_channels=8, keep_ids=(1, 3))
    assert (labels[channels == 1] == 1).all() and (labels[channels == 3] == 3).all()
    assert (labels[channels == 5] == 4).all() and (labels[channels == 0] == 5).all()


def test_published_scribble_files_convert_to_napari_convention():
    published = np.array([[255, 0], [3, 255]], np.uint8)
    np.testing.assert_array_equal(scribbles_from_published(published), [[0, 1], [4, 0]])
    with pytest.raises(ImageError, match="RGB"):
        scribbles_from_published(np.zeros((2, 2, 3), np.uint8))
