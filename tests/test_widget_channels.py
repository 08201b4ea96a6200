"""The segment widget combining Image layers as channels, in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from widget_helpers import fast_settings

from napari_kanezaki.imaging.images import ImageError
from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.plugin.segment_widget import SegmentWidget, combine_channels

FAST = {"n_channels": 24, "max_iter": 12, "min_labels": 1}


def set_params(panel, **values) -> None:
    fast_settings(panel, FAST, **values)


def channel_layers(viewer, shape=(48, 48)):
    """A 3-material image as three uint16 single-channel layers (napari's channel_axis)."""
    rgb, truth = noisy_regions(shape, noise=0.05, seed=2)
    data = rgb.astype(np.uint16) * 257
    layers = viewer.add_image(data, channel_axis=-1, name=["c0", "c1", "c2"])
    return layers, truth


def test_three_channel_layers_are_combined_and_left_unchanged(widget, viewer, qtbot):
    assert isinstance(widget, SegmentWidget)
    (c0, c1, c2), truth = channel_layers(viewer)
    other = viewer.add_image(np.zeros((40, 48), np.uint16), name="other")  # different shape
    before = [layer.data.copy() for layer in (c0, c1, c2)]
    widget.reset_choices()
    widget.image.value = c0
    assert set(widget.extra_channels.choices) == {c1, c2}  # not c0 itself, not "other"
    assert other not in widget.extra_channels.choices
    assert not widget.extra_channels.native.isHidden()
    widget.extra_channels.value = [c2, c1]
    set_params(widget.params)
    widget.controls.run_button.changed.emit()
    output = viewer.layers["c0 segmentation"]
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    labels = np.asarray(output.data)
    assert labels.shape == truth.shape and labels.min() >= 1
    assert np.unique(labels).size >= 3
    assert widget.controls.result.segmenter.model.in_channels == 3  # all three were used
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) > 0.3
    for layer, data in zip((c0, c1, c2), before, strict=True):
        np.testing.assert_array_equal(layer.data, data)
        assert layer.data.dtype == np.uint16
    # a single-channel image without partners of its shape offers nothing
    widget.image.value = other
    assert widget.extra_channels.choices == ()
    assert widget.extra_channels.native.isHidden()


def test_mismatched_layer_is_refused_with_a_notification(widget, viewer, errors):
    (c0, c1, _), _ = channel_layers(viewer)
    small = viewer.add_image(np.ones((24, 48), np.uint16), name="small")
    widget.reset_choices()
    widget.image.value = c0
    assert small not in widget.extra_channels.choices
    with pytest.raises(ImageError, match="'small' has spatial shape \\(24, 48\\)"):
        widget.segment(c0, channels=[c1, small])
    with pytest.raises(ImageError, match="the image itself"):
        combine_channels(c0, [c0])
    widget._selected_channels = lambda: [small]  # as if it had been offered
    set_params(widget.params)
    widget.controls.run_button.changed.emit()
    assert "small" in errors[-1] and "same shape" in errors[-1]
    assert "c0 segmentation" not in viewer.layers
    assert not widget.controls.running


def test_channel_layers_of_a_volume_run_in_3d(widget, viewer, qtbot):
    rng = np.random.default_rng(0)
    base = np.zeros((4, 20, 20), np.float32)
    base[:, :, 10:] = 1
    layers = viewer.add_image(
        np.stack([base + rng.normal(0, 0.1, base.shape), 1 - base], axis=0).astype(np.float32),
        channel_axis=0, name=["a", "b"], scale=(2.0, 1.0, 1.0),
    )
    widget.reset_choices()
    widget.image.value = layers[0]
    widget.extra_channels.value = [layers[1]]
    widget.stack_mode.value = "3d"
    set_params(widget.params, n_channels=8, max_iter=4)
    widget.controls.run_button.changed.emit()
    output = viewer.layers["a segmentation"]
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    assert np.asarray(output.data).shape == (4, 20, 20) and np.asarray(output.data).min() >= 1
    assert widget.controls.result.segmenter.model.in_channels == 2
    assert tuple(output.scale) == (2.0, 1.0, 1.0)
