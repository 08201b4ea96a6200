"""The microscopy workflow: the ``microscopy`` preset, membranes as background, fill, volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_objects import cell_sheet

from napari_kanezaki import SPConfig, STConfig, segment
from napari_kanezaki.core.config import PRESETS, load_preset
from napari_kanezaki.imaging.objects import (
    choose_background,
    classes_by_intensity,
    membrane_class,
    to_objects,
)
from napari_kanezaki.imaging.preprocessing import median_blur, preprocess


def tissue_truth(shape=(96, 96), n_cells: int = 20, seed: int = 3) -> np.ndarray:
    """Voronoi cells 1..N of random centres, between membranes (0) about 2 pixels wide."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n_cells, len(shape))) * np.asarray(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    distance = np.linalg.norm(grid[..., None, :] - centres, axis=-1)
    nearest = np.sort(distance, axis=-1)
    return np.where(nearest[..., 1] - nearest[..., 0] > 2.0, distance.argmin(-1) + 1, 0)


def em_like(seed: int = 0) -> np.ndarray:
    """Bright cells between dark membranes with Gaussian noise, uint8 (an EM slice)."""
    rng = np.random.default_rng(seed)
    image = np.where(tissue_truth() > 0, 0.7, 0.25) + rng.normal(0, 0.06, (96, 96))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def assert_cells(objects: np.ndarray, truth: np.ndarray, iou: float) -> None:
    """One object per cell, each overlapping its cell with at least `iou`."""
    assert objects.max() == truth.max() == len(np.unique(objects)) - 1
    for i in range(1, truth.max() + 1):
        inside = truth == i
        best = np.bincount(objects[inside]).argmax()
        mine = objects == best
        assert best > 0 and (inside & mine).sum() / (inside | mine).sum() >= iou, i


# -- the preset --------------------------------------------------------------------------------
def test_microscopy_preset_values_and_the_paper_preset_unchanged():
    assert "microscopy" in PRESETS
    assert load_preset("microscopy", "sp") == SPConfig(
        n_channels=32, min_labels=2, plateau_iter=20, superpixel="felzenszwalb")
    assert load_preset("microscopy", "st") == STConfig(
        n_channels=16, min_labels=2, plateau_iter=20, painted_only=True, median_blur=3)
    assert load_preset("paper", "sp") == SPConfig()
    assert load_preset("paper", "st") == STConfig()


def test_microscopy_workflow_finds_the_cells_between_membranes():
    image, truth = em_like(), tissue_truth()
    # A single run depends on its seed: on this image seeds 1, 3, 4 find all 20 cells,
    # seed 0 18 (two pairs merged), seeds 2 and 5 collapse (the vote of several runs,
    # `consensus_objects`, is the remedy; tested in test_consensus.py).
    labels = segment(image, "sp", config=load_preset("microscopy", "sp"), seed=1,
                     device="cpu")
    cells = to_objects(labels, background="membranes", split_touching=False)
    assert_cells(cells, truth, iou=0.95)
    # the fill shares the membranes out: the same cells, grown over most membrane pixels
    filled = to_objects(labels, background="membranes", split_touching=False, fill=1.5)
    assert filled.max() == cells.max()
    np.testing.assert_array_equal(filled[cells > 0], cells[cells > 0])
    assert (filled[truth == 0] > 0).mean() > 0.5 > 0.1 > (cells[truth == 0] > 0).mean()


# -- membranes as background, fill -------------------------------------------------------------
def test_membranes_background_is_the_thin_class_across_the_image():
    classes = cell_sheet()
    assert choose_background(classes) == 5  # the border rule takes the cells here...
    assert membrane_class(classes) == 7  # ...the membrane network spans the image
    np.testing.assert_array_equal(to_objects(classes, background="membranes"),
                                  to_objects(classes, background=7))
    assert to_objects(classes, background="membranes").max() == 16
    # per plane of a stack, and 0 for an image of label 0 only
    stack = np.stack([classes, np.where(classes == 7, 2, 9)])
    assert to_objects(stack, background="membranes", ndim=2).max() == 32
    assert membrane_class(np.zeros((4, 4), np.int32)) == 0
    with pytest.raises(ValueError, match="membranes"):
        to_objects(classes, background="membrane")


def test_bright_or_dark_background_is_chosen_by_the_image():
    classes = cell_sheet()  # 7: membranes, 5: cells
    classes[10:12, 10:12] = 3  # a third class: a bright speck inside one cell
    rng = np.random.default_rng(0)
    stained = np.where(classes == 7, 0.6, 0.2) + rng.normal(0, 0.05, classes.shape)
    stained[classes == 3] += 0.5
    assert classes_by_intensity(classes, stained, bright=True) == [3, 7]
    assert classes_by_intensity(classes, -stained, bright=False) == [3, 7]
    assert classes_by_intensity(classes, stained, bright=False) == [5]
    before = stained.copy()
    expected = to_objects(classes, background=[3, 7])
    assert expected.max() == 16
    np.testing.assert_array_equal(to_objects(classes, background="bright", image=stained),
                                  expected)
    np.testing.assert_array_equal(stained, before)  # the image is not modified
    # channels on a last axis are averaged
    rgb = np.repeat(stained[..., None], 3, axis=-1)
    np.testing.assert_array_equal(to_objects(classes, background="bright", image=rgb),
                                  expected)
    # per plane of a stack, each plane with its own classes
    stack = np.stack([classes, np.where(classes == 7, 2, 9)])
    images = np.stack([-stained, np.where(classes == 7, 0.1, 0.8)])
    second = to_objects(stack[1], background=2)
    np.testing.assert_array_equal(
        to_objects(stack, background="dark", image=images, ndim=2),
        np.stack([expected, np.where(second > 0, second + 16, 0)]))
    assert classes_by_intensity(np.zeros((4, 4), np.int32), np.zeros((4, 4)), bright=True) == []
    with pytest.raises(ValueError, match="image="):
        to_objects(classes, background="bright")
    with pytest.raises(ValueError, match="shape"):
        to_objects(classes, background="dark", image=stained[:-1])
    with pytest.raises(ValueError, match="'bright' or 'dark'"):
        to_objects(classes, background="brightest", image=stained)


def test_segment_api_passes_the_image_for_a_background_by_intensity():
    image = em_like()
    options = dict(config=load_preset("microscopy", "sp"), seed=0, device="cpu", max_iter=30)
    labels = segment(image, "sp", **options)
    cells = segment(image, "sp", objects=True, object_options={"background": "dark"},
                    **options)
    np.testing.assert_array_equal(cells, to_objects(labels, background="dark", image=image))
    assert_cells(cells, tissue_truth(), iou=0.9)


def test_fill_shares_the_membranes_out_among_the_cells():
    classes = cell_sheet()
    classes[:, -3:] = 0  # label 0 (e.g. a cropped bar) stays 0
    plain = to_objects(classes, background=7)
    tiled = to_objects(classes, background=7, fill=math.inf)
    assert tiled.max() == plain.max() == 16
    assert np.all(tiled[classes != 0] > 0) and np.all(tiled[classes == 0] == 0)
    np.testing.assert_array_equal(tiled[plain > 0], plain[plain > 0])  # cells keep their ids
    # a membrane pixel goes to the nearest cell: row 23 to the cell above, row 24 below
    assert tiled[23, 10] == plain[22, 10] and tiled[24, 10] == plain[25, 10]
    # a distance: the 2-pixel membranes are covered but the crossings' centres are not
    near = to_objects(classes, background=7, fill=1)
    assert (near == 0).sum() == 9 * 4 + 3 * 96
    with pytest.raises(ValueError, match="fill"):
        to_objects(classes, fill=-1)


# -- volumes -----------------------------------------------------------------------------------
def test_median_blur_of_a_volume_is_plane_by_plane():
    rng = np.random.default_rng(0)
    volume = rng.random((1, 4, 12, 10)).astype(np.float32)
    out, geometry = preprocess(volume, STConfig(median_blur=3))
    assert geometry.identity and out.shape == volume.shape
    for z in range(4):
        np.testing.assert_array_equal(out[:, z], median_blur(volume[:, z], 3))
    with pytest.raises(ValueError, match="crop_bottom and resize_multiple"):
        preprocess(volume, STConfig(crop_bottom=2))


def test_microscopy_st_preset_runs_on_a_volume_in_3d():
    # the preset's median filter works plane by plane on volumes (it used to be refused)
    rng = np.random.default_rng(0)
    truth = np.repeat(tissue_truth((40, 40), n_cells=6)[None], 6, axis=0)
    raw = np.where(truth > 0, 60.0, 200.0) + rng.normal(0, 25, truth.shape)  # bright membranes
    volume = np.clip(raw, 0, 4095).astype(np.uint16)
    config = load_preset("microscopy", "st").replace(max_iter=5)
    labels = segment(volume, "st", config=config, stack_mode="3d", seed=0, device="cpu")
    assert labels.shape == volume.shape and labels.min() >= 1


# -- the faces ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sp", "st"])
def test_cli_preset_option_loads_the_microscopy_preset(method):
    from napari_kanezaki.cli.parser import build_config, build_parser

    args = build_parser().parse_args(["segment", "image.tif", "-o", "out", "--method", method,
                                      "--preset", "microscopy"])
    assert build_config(args) == load_preset("microscopy", method)


def test_widget_preset_chooser_offers_the_microscopy_preset(widget):
    panel = widget.params
    assert "microscopy" in panel.preset.choices
    panel.preset.value = "microscopy"
    assert panel.config() == load_preset("microscopy", "st")
    panel.method.value = "sp"
    panel.preset.value = "paper"
    panel.preset.value = "microscopy"
    assert panel.config() == load_preset("microscopy", "sp")
