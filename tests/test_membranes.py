"""Membrane enhancement (`enhance_membranes`): faint and bright membranes alike."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kanezaki import ImageError, enhance_membranes
from napari_kanezaki.plugin.membranes_widget import enhance_membranes_widget


def membrane_grid(shape=(96, 96), contrast: float = 0.1, light: float = 4.0) -> np.ndarray:
    """Cells between membranes two pixels thick, `contrast` above the interiors (0.2),
    under an illumination that brightens `light`-fold from left to right, with noise."""
    rng = np.random.default_rng(0)
    image = np.full(shape, 0.2) + rng.normal(0, 0.005, shape)
    for at in (31, 63):
        image[:, at:at + 2] += contrast
        image[at:at + 2, :] += contrast
    return image * np.linspace(1, light, shape[1])


def test_membranes_stand_out_under_uneven_illumination():
    image = membrane_grid()
    before = image.copy()
    # in the raw image a membrane on the dim side is darker than an interior on the bright
    assert image[5:25, 31:33].mean() < image[5:25, 70:90].mean()
    ridges = enhance_membranes(image)
    np.testing.assert_array_equal(image, before)
    assert ridges.dtype == np.float32 and ridges.shape == image.shape
    assert 0 <= ridges.min() and ridges.max() <= 1
    membranes = [ridges[5:25, 31:33], ridges[31:33, 5:25], ridges[31:33, 70:90]]
    interiors = [ridges[5:25, 5:25], ridges[5:25, 70:90], ridges[70:90, 40:60]]
    assert min(m.mean() for m in membranes) > 0.3 > 0.05 > max(i.mean() for i in interiors)


def test_dark_membranes_and_integer_volumes():
    image = membrane_grid(light=1)
    dark = enhance_membranes(image.max() - image, bright=False)
    assert dark[5:25, 63:65].mean() > 0.3 > 0.05 > dark[5:25, 5:25].mean()
    # the bright filter does not light dark membranes up
    assert enhance_membranes(image.max() - image)[5:25, 63:65].mean() < 0.05
    # a volume of uint16 planes: walls through the whole depth; in 3-D the filter
    # measures lines, so it answers where two walls meet, not in the middle of a wall
    volume = np.stack([(membrane_grid() * 4000).astype(np.uint16)] * 6)
    ridges = enhance_membranes(volume, sigma=1.5)
    assert ridges.shape == volume.shape and ridges.dtype == np.float32
    assert ridges[3, 62:66, 62:66].mean() > 0.3 > 0.05 > ridges[3, 5:25, 5:25].mean()
    assert ridges[3, 5:25, 63:65].mean() < 0.5 * ridges[3, 62:66, 62:66].mean()


def test_flat_image_gives_zeros():
    assert not enhance_membranes(np.full((16, 16), 7, np.uint8)).any()


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [(np.zeros(8), {}, "grey"),
     (np.zeros((2, 2, 8, 8)), {}, "plane by plane"),
     (np.zeros((8, 8), complex), {}, "numbers"),
     (np.zeros((8, 8)), {"sigma": 0}, "sigma"),
     (np.full((8, 8), np.nan), {}, "NaN")],
)
def test_refused_inputs(image, kwargs, message):
    with pytest.raises(ImageError, match=message):
        enhance_membranes(image, **kwargs)


def test_widget_adds_the_response_as_a_new_layer(viewer, qtbot):
    volume = np.stack([(membrane_grid() * 4000).astype(np.uint16)] * 4)
    layer = viewer.add_image(volume, name="cells", scale=(2, 0.5, 0.5), translate=(1, 2, 3))
    before = volume.copy()
    _, widget = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Enhance membranes")
    widget.image.value = layer
    widget.sigma.value = 1.5
    with qtbot.waitSignal(widget().finished, timeout=60_000):  # filtered in a thread
        pass
    qtbot.waitUntil(lambda: "cells membranes" in viewer.layers, timeout=10_000)
    added = viewer.layers["cells membranes"]
    np.testing.assert_array_equal(layer.data, before)
    np.testing.assert_allclose(added.data, enhance_membranes(volume, sigma=1.5))
    assert tuple(added.scale) == (2, 0.5, 0.5) and tuple(added.translate) == (1, 2, 3)
    # run again (dark membranes): the layer of that name is updated, not added again
    widget.bright_membranes.value = False
    with qtbot.waitSignal(widget().finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: not np.allclose(added.data, enhance_membranes(volume, sigma=1.5)),
                    timeout=10_000)
    assert len(viewer.layers) == 2
    np.testing.assert_allclose(added.data, enhance_membranes(volume, bright=False, sigma=1.5))


def test_widget_refuses_rgb_layers_with_the_way_out(viewer):
    layer = viewer.add_image(np.zeros((16, 16, 3), np.uint8), rgb=True, name="colour")
    with pytest.raises(ImageError, match="Split RGB"):
        enhance_membranes_widget(viewer, layer)
    with pytest.raises(ImageError, match="sigma"):
        enhance_membranes_widget(viewer, viewer.add_image(np.zeros((8, 8))), sigma=0)
