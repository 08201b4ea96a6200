"""Seeds of the split from the image (``split_seeds="dark"`` or ``"bright"``): cell centres."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from cli_helpers import exit_status
from widget_helpers import fast_settings

from napari_kanezaki import consensus_objects, segment, to_objects
from napari_kanezaki.cli import main
from napari_kanezaki.imaging.objects import needs_image
from napari_kanezaki.imaging.sources import grey_image
from napari_kanezaki.workflows.jobs import Job

TINY_ST = ["--method", "st", "--n-channels", "8", "--max-iter", "4", "--device", "cpu",
           "--precision", "fp32", "-q"]


def two_cells() -> tuple[np.ndarray, np.ndarray]:
    """Classes of two square cells whose shared membrane the classes missed, and the image.

    Class 2: the membrane around both cells; class 1: one 48 x 98 rectangle of interior
    (no neck: the distance transform has one ridge). The image still shows the shared
    membrane, fainter than the outer ones, and the membranes' glow (blur) darkens
    towards the cell centres: two dark centres.
    """
    from scipy import ndimage as ndi

    classes = np.full((52, 102), 2, np.int32)
    classes[2:-2, 2:-2] = 1
    membranes = np.where(classes == 2, 1.0, 0.0)
    membranes[:, 50:52] = 0.6
    image = 0.2 + ndi.gaussian_filter(membranes, 8) + membranes
    image += np.random.default_rng(0).normal(0, 0.01, image.shape)
    return classes, image


def assert_two_halves(objects: np.ndarray) -> None:
    assert objects.max() == 2
    left, right = (objects[:, :51] == 1).sum(), (objects[:, 51:] == 2).sum()
    assert left > 0.9 * 48 * 49 and right > 0.9 * 48 * 49


def test_image_seeds_split_cells_whose_membrane_the_classes_missed():
    classes, image = two_cells()
    before = image.copy()
    # the distance transform sees one rectangle: one object
    assert to_objects(classes, background=2).max() == 1
    assert_two_halves(to_objects(classes, background=2, split_seeds="dark", image=image))
    # cells between dark membranes: their bright centres
    assert_two_halves(to_objects(classes, background=2, split_seeds="bright", image=1 - image))
    # a wrong polarity seeds the membranes' side of the cells, not two centres
    assert to_objects(classes, background=2, split_seeds="bright", image=image).max() != 2
    np.testing.assert_array_equal(image, before)
    # planes of a stack each get their own seeds; the image-seed split needs the split on
    stack = to_objects(np.stack([classes, classes]), background=2, split_seeds="dark",
                       image=np.stack([image, image]), ndim=2)
    assert stack.max() == 4
    assert to_objects(classes, background=2, split_seeds="dark", split_touching=False).max() == 1
    assert needs_image({"split_seeds": "dark"}) and not needs_image({"split_seeds": "distance"})
    assert not needs_image({"split_seeds": "dark", "split_touching": False})


def test_image_seeds_refusals_name_the_problem():
    classes, image = two_cells()
    with pytest.raises(ValueError, match="image="):
        to_objects(classes, background=2, split_seeds="dark")
    with pytest.raises(ValueError, match="split_seeds must be one of distance, dark, bright"):
        to_objects(classes, background=2, split_seeds="darkest", image=image)
    with pytest.raises(ValueError, match="split_seeds must be one of"):  # even without split
        to_objects(classes, background=2, split_seeds="Dark", split_touching=False)
    bad = image.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        to_objects(classes, background=2, split_seeds="dark", image=bad)
    with pytest.raises(ValueError, match="shape"):
        to_objects(classes, background=2, split_seeds="dark", image=image[:10])


def test_consensus_objects_seed_from_the_image():
    classes, image = two_cells()
    runs = [classes, classes, np.where(classes == 2, 5, 3)]  # other ids, same classes
    voted = consensus_objects(runs, background="bright", image=image, split_seeds="dark")
    np.testing.assert_array_equal(
        voted, to_objects(classes, background="bright", image=image, split_seeds="dark"))
    assert_two_halves(voted)
    assert consensus_objects(runs, background="bright", image=image).max() == 1


def test_segment_and_cli_pass_the_image_for_its_seeds(tmp_path):
    classes, image = two_cells()
    stained = (image * 1000).astype(np.uint16)
    options = {"background": "bright", "split_seeds": "dark"}
    labels = segment(stained, "st", n_channels=8, max_iter=4, seed=0, device="cpu",
                     precision="fp32")
    objects = segment(stained, "st", n_channels=8, max_iter=4, seed=0, device="cpu",
                      precision="fp32", objects=True, object_options=options)
    np.testing.assert_array_equal(objects, to_objects(labels, image=grey_image(stained),
                                                      **options))
    # the CLI: the same objects, the option recorded, refusals before any work
    tifffile.imwrite(tmp_path / "cells.tif", stained)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "cells.tif"), "-o", str(out), *TINY_ST,
                 "--objects", "--background", "bright", "--split-seeds", "dark"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "cells_labels.tif"), labels)
    np.testing.assert_array_equal(tifffile.imread(out / "cells_objects.tif"), objects)
    assert json.loads((out / "run.json").read_text())["split_seeds"] == "dark"
    assert Job(name="a", image=tmp_path, outdir=tmp_path, objects=True,
               split_seeds="bright").object_options == {"min_size": 20, "split_seeds": "bright"}


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--split-seeds", "dark"], "need --objects"),
     (["--objects", "--split-seeds", "dark", "--no-split-touching"], "drop --no-split-touching"),
     (["--objects", "--split-seeds", "middle"], "invalid choice")],
)
def test_cli_refuses_seeds_that_do_not_fit(tmp_path, capsys, options, message):
    _, image = two_cells()
    tifffile.imwrite(tmp_path / "cells.tif", (image * 1000).astype(np.uint16))
    status = exit_status(["segment", str(tmp_path / "cells.tif"), "-o", str(tmp_path / "x"),
                          *TINY_ST, *options])
    assert status == 2 and not (tmp_path / "x").exists()
    assert message in capsys.readouterr().err


def test_widget_seeds_objects_from_the_layer(widget, viewer, qtbot):
    _, image = two_cells()
    layer = viewer.add_image(image.astype(np.float32), name="cells")
    before = layer.data.copy()
    fast_settings(widget.params, {"n_channels": 8, "max_iter": 4, "min_labels": 1}, "st")
    widget.objects.enabled_box.value = True
    widget.objects.background.value = "bright"
    widget.objects.split_seeds.value = "dark"
    assert widget.objects.options()["split_seeds"] == "dark"
    widget.segment(layer)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=60_000)
    labels = viewer.layers["cells segmentation"].data
    np.testing.assert_array_equal(
        viewer.layers["cells objects"].data,
        to_objects(labels, background="bright", split_seeds="dark", image=grey_image(before)))
    np.testing.assert_array_equal(layer.data, before)
    # without the split, the seeds are not asked for
    widget.objects.split.value = False
    assert "split_seeds" not in widget.objects.options()
    # the batch dock reads each layer for its seeds likewise
    from napari_kanezaki.plugin.batch_widget import BatchWidget

    batch = BatchWidget(viewer)
    fast_settings(batch.params, {"n_channels": 8, "max_iter": 4, "min_labels": 1}, "st")
    batch.objects.enabled_box.value = True
    batch.objects.background.value = "bright"
    batch.objects.split_seeds.value = "dark"
    other = viewer.add_image(np.roll(image, 7, axis=1).astype(np.float32), name="more")
    batch.segment([other])
    qtbot.waitUntil(lambda: not batch.controls.running, timeout=60_000)
    np.testing.assert_array_equal(
        viewer.layers["more objects"].data,
        to_objects(viewer.layers["more segmentation"].data, background="bright",
                   split_seeds="dark", image=grey_image(other.data)))
