"""Objects (cells, nuclei) from the learned classes: `to_objects`, segment(), the CLI, widgets."""

from __future__ import annotations

import pickle

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from cli_helpers import exit_status
from widget_helpers import fast_settings

from napari_kanezaki import segment
from napari_kanezaki.cli import main
from napari_kanezaki.imaging.objects import choose_background, to_objects
from napari_kanezaki.workflows.jobs import Job, run_job

#: Five discs of radius 10: (1, 2) overlap by two pixels, (3, 4) touch, 5 is alone.
CENTRES = [(22, 22), (22, 40), (64, 28), (76, 44), (44, 76)]
#: A network configuration that segments the disc image reliably in about a second: SP
#: with a few hundred superpixels (seeds 0-5 all give the 5 discs; ST without scribbles
#: breaks the noisy discs into several classes at this speed).
FAST_SP = {"n_channels": 16, "max_iter": 20, "n_segments": 300}
RUNTIME = {"seed": 0, "device": "cpu", "precision": "fp32"}


def discs(shape=(96, 96), radius=10, centres=CENTRES) -> np.ndarray:
    """Ground truth: disc i has id i, background 0."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return truth


def disc_image(noise: float = 0.08, seed: int = 0) -> np.ndarray:
    """Bright discs on a dark background with Gaussian noise, uint8."""
    rng = np.random.default_rng(seed)
    image = np.where(discs() > 0, 0.75, 0.2) + rng.normal(0, noise, (96, 96))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def classes_of(truth: np.ndarray, background: int = 1, foreground: int = 2) -> np.ndarray:
    """The ideal two-class label image of `truth`."""
    return np.where(truth > 0, foreground, background).astype(np.int32)


def assert_matches(objects: np.ndarray, truth: np.ndarray, iou: float = 0.9) -> None:
    """One object per true object, each overlapping it with at least `iou`."""
    assert objects.max() == truth.max() == len(np.unique(objects)) - 1
    for i in range(1, truth.max() + 1):
        inside = truth == i
        best = np.bincount(objects[inside]).argmax()
        assert best > 0
        mine = objects == best
        assert (inside & mine).sum() / (inside | mine).sum() >= iou, i


def assert_raster_order(objects: np.ndarray) -> None:
    flat = objects.ravel()
    ids, first = np.unique(flat[flat > 0], return_index=True)
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))
    assert np.all(np.diff(first) > 0)


# -- to_objects ------------------------------------------------------------------------------
def test_touching_discs_are_split_into_five_objects():
    truth = discs()
    objects = to_objects(classes_of(truth))
    assert objects.dtype == np.int32 and objects.shape == truth.shape
    assert_matches(objects, truth)
    assert_raster_order(objects)
    # the split is the watershed's: the connected components are only three
    assert to_objects(classes_of(truth), split_touching=False).max() == 3
    # ids of the classes do not matter: the background is the class on the border
    assert_matches(to_objects(classes_of(truth, background=7, foreground=3)), truth)


def test_noise_holes_do_not_split_and_specks_are_removed():
    truth = discs()
    classes = classes_of(truth)
    rng = np.random.default_rng(1)
    holes = (truth > 0) & (rng.random(truth.shape) < 0.03)  # background pixels in the discs
    classes[holes] = 1
    specks = [(4, 60), (88, 6), (50, 50)]
    for y, x in specks:
        classes[y : y + 3, x : x + 3] = 2  # 9-pixel specks of the disc class
    objects = to_objects(classes, min_size=20)
    assert objects.max() == 5
    assert_matches(np.where(holes, 0, objects), np.where(holes, 0, truth), iou=0.85)
    assert all(objects[y + 1, x + 1] == 0 for y, x in specks)
    without_holes = np.where(holes, 2, classes)
    assert to_objects(without_holes, min_size=1).max() == 5 + len(specks)
    assert to_objects(classes, min_size=400).max() == 0  # every disc has ~317 pixels


def test_touching_balls_with_anisotropic_spacing():
    spacing = (2.0, 1.0, 1.0)  # Z planes twice as far apart as the pixels
    shape, radius = (24, 48, 64), 8.0
    centres = [(6, 24, 20), (14, 24, 20), (10, 24, 46)]  # balls 1 and 2 touch along Z
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    truth = np.zeros(shape, np.int32)
    for i, centre in enumerate(centres, 1):
        cz, cy, cx = (c * s for c, s in zip(centre, spacing, strict=True))
        truth[(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    classes = classes_of(truth)
    objects = to_objects(classes, spacing=spacing)
    assert objects.shape == shape and objects.dtype == np.int32
    assert_matches(objects, truth)
    assert_raster_order(objects)
    # min_distance is physical (in pixels of the finest axis): the touching balls' centres
    # are 16 apart, 8 planes. With the spacing a min_distance of 10 still splits them;
    # read as voxels it would not.
    assert_matches(to_objects(classes, spacing=spacing, min_distance=10), truth)
    assert to_objects(classes, min_distance=10).max() == 2
    with pytest.raises(ValueError, match="spacing must hold 3"):
        to_objects(classes, spacing=(1.0, 1.0))


def cell_sheet() -> np.ndarray:
    """Packed cells (class 5) covering the border, separated by membranes (class 7)."""
    classes = np.full((96, 96), 5, np.int32)
    for line in (23, 47, 71):
        classes[line : line + 2] = 7
        classes[:, line : line + 2] = 7
    return classes


def test_background_from_scribbles_or_given_explicitly():
    classes = cell_sheet()
    # automatic: the class on most of the border is the cells' interior here...
    assert choose_background(classes) == 5
    # ...so say which class is the background: paint it with scribble label 1
    scribbles = np.zeros(classes.shape, np.uint8)
    scribbles[47:49, 10:30] = 1  # on a membrane
    scribbles[5:10, 5:10] = 2  # other labels do not matter
    assert choose_background(classes, scribbles) == 7
    by_scribbles = to_objects(classes, scribbles=scribbles)
    assert by_scribbles.max() == 16  # 4 x 4 cells
    assert np.all(by_scribbles[classes == 7] == 0)
    assert_raster_order(by_scribbles)
    # or give it: one id or several (the explicit choice wins over the scribbles)
    np.testing.assert_array_equal(to_objects(classes, background=7), by_scribbles)
    np.testing.assert_array_equal(to_objects(classes, background=[7], scribbles=scribbles * 0),
                                  by_scribbles)
    assert to_objects(classes, background=[5, 7]).max() == 0
    # scribbles without label 1: the automatic rule
    np.testing.assert_array_equal(to_objects(classes, scribbles=scribbles * 2),
                                  to_objects(classes))
    # the border beats the size: discs covering most of the image are still the objects
    big = classes_of(discs(radius=40, centres=[(48, 48)]))
    assert (big == 2).sum() > (big == 1).sum() and choose_background(big) == 1


def test_label_zero_classes_merged_or_apart_and_stacks():
    truth = discs()
    classes = classes_of(truth)
    classes[:, -8:] = 0  # e.g. a cropped bar: never an object
    classes[40:50, 0:12] = 4  # an elongated object of another class
    yy, xx = np.mgrid[:96, :96]
    nucleus = (yy - 44) ** 2 + (xx - 76) ** 2 <= 16
    classes[nucleus] = 3  # a nucleus class inside disc 5
    objects = to_objects(classes)
    assert np.all(objects[:, -8:] == 0)
    assert objects.max() == 6 and len(np.unique(objects[40:50, 0:12])) == 1
    # merged: the disc and its nucleus are one object
    assert len(np.unique(objects[truth == 5])) == 1
    # apart: the nucleus is an object of its own, beside its cytoplasm
    apart = to_objects(classes, per_class=True)
    assert apart.max() == 7
    assert len(np.unique(apart[nucleus])) == 1 and len(np.unique(apart[truth == 5])) == 2
    # leading axes one by one, ids continued: plane 1's objects follow plane 0's
    stack = np.stack([classes_of(truth), classes_of(truth[:, ::-1])])
    planes = to_objects(stack, ndim=2)
    assert planes.max() == 10
    np.testing.assert_array_equal(planes[0], to_objects(stack[0]))
    np.testing.assert_array_equal(planes[1], np.where(planes[1] > 0, to_objects(stack[1]) + 5, 0))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        to_objects(stack[None])
    with pytest.raises(ValueError, match="integers"):
        to_objects(classes.astype(float))


def test_inputs_are_never_modified():
    classes = classes_of(discs())
    scribbles = np.zeros(classes.shape, np.uint8)
    scribbles[0:3, :] = 1
    kept = classes.copy(), scribbles.copy()
    classes.setflags(write=False)  # any write would raise
    scribbles.setflags(write=False)
    objects = to_objects(classes, scribbles=scribbles, min_size=5)
    assert objects.max() == 5 and objects.flags.writeable
    np.testing.assert_array_equal(classes, kept[0])
    np.testing.assert_array_equal(scribbles, kept[1])
    volume = np.repeat(classes[None], 3, axis=0)
    volume.setflags(write=False)
    to_objects(volume, spacing=(3, 1, 1))


# -- segment() -------------------------------------------------------------------------------
def test_segment_returns_the_objects_of_its_labels():
    image = disc_image()
    before = image.copy()
    labels = segment(image, "sp", **FAST_SP, **RUNTIME)  # unchanged without objects
    assert labels.min() >= 1 and labels.max() >= 2
    objects = segment(image, "sp", objects=True, **FAST_SP, **RUNTIME)
    assert objects.dtype == np.int32 and objects.shape == image.shape
    assert_matches(objects, discs(), iou=0.85)
    np.testing.assert_array_equal(objects, to_objects(labels))
    np.testing.assert_array_equal(image, before)
    # options go to to_objects; they are checked before any training
    huge = segment(image, "sp", objects=True, object_options={"min_size": 400},
                   **FAST_SP, **RUNTIME)
    assert huge.max() == 0
    filled = segment(image, "sp", objects=True, object_options={"fill": np.inf},
                     **FAST_SP, **RUNTIME)
    np.testing.assert_array_equal(filled, to_objects(labels, fill=np.inf))
    assert objects.min() == 0 and filled.min() >= 1  # the background went to the objects
    with pytest.raises(ValueError, match="unknown object option"):
        segment(image, "sp", objects=True, object_options={"min_sise": 3})
    with pytest.raises(ValueError, match="objects=True"):
        segment(image, "sp", object_options={"min_size": 3})
    with pytest.raises(ValueError, match="out"):
        segment(image, "sp", objects=True, out="never.zarr")


# -- files -----------------------------------------------------------------------------------
TINY = ["--n-channels", "16", "--max-iter", "20", "--n-segments", "300", "--method", "sp",
        "--device", "cpu", "--precision", "fp32", "-q"]


def test_cli_objects_options_of_the_microscopy_workflow(tmp_path, capsys):
    image = tmp_path / "cells.png"
    iio.imwrite(image, disc_image())
    out = tmp_path / "out"
    options = ["--objects", "--background", "membranes", "--fill", "inf",
               "--no-split-touching"]
    assert main(["segment", str(image), *options, "-o", str(out), *TINY]) == 0
    labels = tifffile.imread(out / "cells_labels.tif")
    objects = tifffile.imread(out / "cells_objects.tif")
    expected = to_objects(labels, background="membranes", fill=np.inf, split_touching=False)
    np.testing.assert_array_equal(objects, expected)
    assert objects.min() >= 1  # filled: no background left
    # the classes darker than the image are the background: the bright discs are the objects
    dark = tmp_path / "dark"
    assert main(["segment", str(image), "--objects", "--background", "dark", "-o",
                 str(dark), *TINY]) == 0
    labels = tifffile.imread(dark / "cells_labels.tif")
    objects = tifffile.imread(dark / "cells_objects.tif")
    np.testing.assert_array_equal(
        objects, to_objects(labels, background="dark", image=iio.imread(image)))
    assert objects.max() == discs().max()
    # ids and the word do not mix; a negative fill and options without --objects are refused
    for bad in (["--objects", "--background", "membranes", "1"],
                ["--objects", "--fill", "-1"], ["--fill", "2"], ["--no-split-touching"]):
        status = exit_status(["segment", str(image), *bad, "-o", str(tmp_path / "x"), *TINY])
        assert status == 2
        assert not (tmp_path / "x").exists()
    err = capsys.readouterr().err
    assert "membranes, bright, dark alone" in err and "need --objects" in err and "distance >= 0" in err


def test_cli_writes_objects_beside_the_labels_and_never_overwrites(tmp_path, capsys):
    image = tmp_path / "cells.png"
    iio.imwrite(image, disc_image())
    out = tmp_path / "out"
    assert main(["segment", str(image), "--objects", "-o", str(out), *TINY]) == 0
    labels = tifffile.imread(out / "cells_labels.tif")
    objects = tifffile.imread(out / "cells_objects.tif")
    assert objects.dtype == np.int32 and objects.shape == labels.shape == (96, 96)
    np.testing.assert_array_equal(objects, to_objects(labels))
    assert_matches(objects, discs(), iou=0.85)
    assert not [p.name for p in out.iterdir() if ".partial" in p.name]
    # a rerun finds the labels (written last) and leaves everything alone
    stamp = (out / "cells_objects.tif").stat().st_mtime_ns
    assert main(["segment", str(image), "--objects", "-o", str(out), *TINY]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert (out / "cells_objects.tif").stat().st_mtime_ns == stamp
    # an objects file without labels is not replaced either...
    (out / "cells_labels.tif").unlink()
    assert main(["segment", str(image), "--objects", "-o", str(out), *TINY]) == 1
    assert "cells_objects.tif" in capsys.readouterr().err
    assert (out / "cells_objects.tif").stat().st_mtime_ns == stamp
    assert not (out / "cells_labels.tif").exists()
    # ...unless asked: --overwrite, with the options
    assert main(["segment", str(image), "--objects", "--min-object-size", "400",
                 "--overwrite", "-o", str(out), *TINY]) == 0
    assert tifffile.imread(out / "cells_objects.tif").max() == 0
    # refused combinations
    assert main(["segment", str(image), "--objects", "--zarr", "-o", str(tmp_path / "z"),
                 *TINY]) == 2
    assert main(["segment", str(image), "--background", "2", "-o", str(tmp_path / "b"),
                 *TINY]) == 2
    assert "need --objects" in capsys.readouterr().err


def test_job_carries_the_object_options_to_stacks(tmp_path):
    stack = np.stack([disc_image(seed=0), disc_image(seed=1)[:, ::-1]])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    job = Job(name="stack", image=tmp_path / "stack.tif", outdir=tmp_path / "out",
              config={"method": "sp", **FAST_SP, "max_iter": 10}, device="cpu",
              precision="fp32", stack_mode="independent", objects=True, background=(1,),
              min_object_size=30)
    assert pickle.loads(pickle.dumps(job)) == job  # goes to Dask workers as it is
    assert job.object_options == {"min_size": 30, "background": (1,)}
    result = run_job(job)
    assert result.status == "done", result.message
    labels = tifffile.imread(tmp_path / "out" / "stack_labels.tif")
    objects = tifffile.imread(tmp_path / "out" / "stack_objects.tif")
    assert objects.shape == labels.shape == (2, 96, 96)
    # per plane, ids continued over the planes
    np.testing.assert_array_equal(
        objects, to_objects(labels, ndim=2, background=1, min_size=30))
    assert len(np.intersect1d(objects[0][objects[0] > 0], objects[1][objects[1] > 0])) == 0


# -- widgets ---------------------------------------------------------------------------------
def test_widget_adds_an_objects_layer(widget, viewer, qtbot):
    image = viewer.add_image(disc_image(), name="cells", scale=(0.5, 0.5), translate=(3, -2))
    fast_settings(widget.params, FAST_SP, "sp", plateau_iter=0)
    assert widget.objects.min_size.native.isHidden()  # shown with the checkbox
    widget.objects.enabled_box.value = True
    assert not widget.objects.min_size.native.isHidden()
    widget.controls.run_button.changed.emit()
    found = viewer.layers["cells objects"]  # created at once, beside the class labels
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    labels = viewer.layers["cells segmentation"]
    assert found.data.dtype == np.int32 and found.data.max() == 5
    assert_matches(found.data, discs(), iou=0.85)
    np.testing.assert_array_equal(found.data, to_objects(labels.data))
    np.testing.assert_array_equal(found.scale, image.scale)
    np.testing.assert_array_equal(found.translate, image.translate)
    # off: no objects layer (the run replaces the previous result, objects included)
    widget.objects.enabled_box.value = False
    widget.segment(image)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells segmentation"]


def test_batch_widget_adds_objects_per_layer(viewer, qtbot):
    from napari_kanezaki.plugin.batch_widget import BatchWidget

    batch = BatchWidget(viewer)
    layers = [viewer.add_image(disc_image(seed=s), name=f"img{s}") for s in range(2)]
    fast_settings(batch.params, FAST_SP, "sp", plateau_iter=0)
    batch.objects.enabled_box.value = True
    batch.objects.min_size.value = 25
    batch.segment(layers)
    qtbot.waitUntil(lambda: not batch.controls.running, timeout=60_000)
    for s in range(2):
        labels = viewer.layers[f"img{s} segmentation"].data
        found = viewer.layers[f"img{s} objects"].data
        np.testing.assert_array_equal(found, to_objects(labels, min_size=25))
        assert found.max() >= 1


def test_widget_objects_options_of_the_microscopy_workflow(widget, viewer, qtbot):
    from napari_kanezaki.plugin.batch_widget import BatchWidget

    image = viewer.add_image(disc_image(), name="cells")
    fast_settings(widget.params, FAST_SP, "sp", plateau_iter=0)
    widget.objects.enabled_box.value = True
    assert not widget.objects.fill.native.isHidden()
    widget.objects.background.value = "membranes"
    widget.objects.fill.value = 2.5
    widget.objects.split.value = False
    widget.segment(image)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    labels = viewer.layers["cells segmentation"].data
    expected = to_objects(labels, background="membranes", fill=2.5, split_touching=False)
    np.testing.assert_array_equal(viewer.layers["cells objects"].data, expected)
    # the batch dock takes the same options
    batch = BatchWidget(viewer)
    fast_settings(batch.params, FAST_SP, "sp", plateau_iter=0)
    batch.objects.enabled_box.value = True
    batch.objects.fill.value = 1e6  # every background pixel
    other = viewer.add_image(disc_image(seed=1), name="more")
    batch.segment([other])
    qtbot.waitUntil(lambda: not batch.controls.running, timeout=60_000)
    found = viewer.layers["more objects"].data
    assert found.min() >= 1
    np.testing.assert_array_equal(
        found, to_objects(viewer.layers["more segmentation"].data, fill=1e6))


def test_widget_objects_with_the_background_chosen_by_intensity(widget, viewer, qtbot):
    from napari_kanezaki.imaging.sources import grey_image
    from napari_kanezaki.plugin.batch_widget import BatchWidget

    image = viewer.add_image(disc_image(), name="cells")
    before = image.data.copy()
    fast_settings(widget.params, FAST_SP, "sp", plateau_iter=0)
    widget.objects.enabled_box.value = True
    widget.objects.background.value = "dark"  # the dark classes: the bright discs are objects
    widget.segment(image)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    labels = viewer.layers["cells segmentation"].data
    found = viewer.layers["cells objects"].data
    np.testing.assert_array_equal(found, to_objects(labels, background="dark", image=before))
    assert found.max() >= 1
    np.testing.assert_array_equal(image.data, before)
    # the batch dock reads its layers likewise
    batch = BatchWidget(viewer)
    fast_settings(batch.params, FAST_SP, "sp", plateau_iter=0)
    batch.objects.enabled_box.value = True
    batch.objects.background.value = "bright"
    other = viewer.add_image(disc_image(seed=1), name="more")
    batch.segment([other])
    qtbot.waitUntil(lambda: not batch.controls.running, timeout=60_000)
    np.testing.assert_array_equal(
        viewer.layers["more objects"].data,
        to_objects(viewer.layers["more segmentation"].data, background="bright",
                   image=disc_image(seed=1)))
    # a volume in 3d mode: the whole volume's intensity, as the network saw it
    data = np.random.default_rng(0).random((5, 24, 24)).astype(np.float32)
    data[:, 6:18, 12:] += 1.0
    volume = viewer.add_image(data, name="vol")
    fast_settings(widget.params, {"n_channels": 8, "max_iter": 6, "min_labels": 1}, "st")
    widget.stack_mode.value = "3d"
    widget.objects.background.value = "bright"
    widget.objects.min_size.value = 3
    widget.segment(volume)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    np.testing.assert_array_equal(
        viewer.layers["vol objects"].data,
        to_objects(viewer.layers["vol segmentation"].data, background="bright",
                   image=grey_image(data), min_size=3, ndim=3, spacing=(1.0, 1.0, 1.0)))


@pytest.mark.parametrize("mode", ["3d", "independent"])
def test_widget_objects_of_a_volume_follow_the_stack_mode(widget, viewer, qtbot, mode):
    data = np.random.default_rng(0).random((5, 24, 24)).astype(np.float32)
    data[:, 6:18, 12:] += 1.0
    image = viewer.add_image(data, name="vol", scale=(2.0, 0.5, 0.5))
    scribbles = viewer.add_labels(np.zeros((5, 24, 24), np.uint8), name="marks")
    scribbles.data[:, 1:3, 1:10] = 1  # the background, painted with label 1
    widget.reset_choices()
    # only the background is painted: unpainted classes must stay (painted_only off)
    fast_settings(widget.params, {"n_channels": 8, "max_iter": 6, "min_labels": 1,
                                  "painted_only": False})
    widget.stack_mode.value = mode
    widget.objects.enabled_box.value = True
    widget.objects.min_size.value = 3
    widget.segment(image, scribbles)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    labels = viewer.layers["vol segmentation"].data
    found = viewer.layers["vol objects"].data
    ndim = 3 if mode == "3d" else 2
    expected = to_objects(labels, scribbles=scribbles.data, min_size=3, ndim=ndim,
                          spacing=(2.0, 0.5, 0.5)[-ndim:])
    np.testing.assert_array_equal(found, expected)
    assert found.max() >= 1
    np.testing.assert_array_equal(viewer.layers["vol objects"].scale, image.scale)
