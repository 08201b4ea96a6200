"""The segment widget on stacks and volumes, in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import fast_settings

from napari_kanezaki.plugin.segment_widget import SegmentWidget

FAST = {"n_channels": 8, "max_iter": 6, "min_labels": 1}


def set_params(panel, **values) -> None:
    fast_settings(panel, FAST, **values)


def volume_layer(viewer, name="cells", shape=(5, 24, 24)):
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    data[:, :, shape[2] // 2 :] += 1.0
    return viewer.add_image(
        data, name=name, scale=(2.0, 0.5, 0.5), translate=(10.0, -4.0, 3.0),
        axis_labels=("z", "y", "x"),
    )


@pytest.mark.parametrize("mode", ["3d", "shared", "independent"])
def test_volume_layer_gets_stack_modes_and_an_aligned_result(widget, viewer, qtbot, mode):
    assert isinstance(widget, SegmentWidget)
    flat = viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="flat", rgb=True)
    widget.reset_choices()
    widget.image.value = flat
    assert widget.stack_mode.native.isHidden()  # 2-D RGB: no stack modes
    image = volume_layer(viewer)
    before = image.data.copy()
    widget.reset_choices()
    widget.image.value = image
    assert not widget.stack_mode.native.isHidden()
    assert [c for c in widget.stack_mode.choices] == ["independent", "shared", "3d"]
    widget.stack_mode.value = mode
    set_params(widget.params, max_update=4)
    widget.controls.run_button.changed.emit()
    output = viewer.layers["cells segmentation"]
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    assert output in viewer.layers
    assert output.data.shape == image.data.shape and np.asarray(output.data).min() >= 1
    np.testing.assert_array_equal(output.scale, image.scale)
    np.testing.assert_array_equal(output.translate, image.translate)
    assert tuple(output.axis_labels) == ("z", "y", "x")
    np.testing.assert_array_equal(image.data, before)
    assert widget.controls.result.segmenter is not None
    expected_dims = 3 if mode == "3d" else 2
    assert widget.controls.result.segmenter.model.spatial_dims == expected_dims
