"""The napari plugin layer in a real viewer: manifest, dock widgets, runs, batch, errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManifest
from widget_helpers import fast_settings

from napari_kanezaki import SPConfig, STConfig
from napari_kanezaki.core.config import load_preset
from napari_kanezaki.imaging.images import ImageError
from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.plugin.batch_widget import BatchWidget
from napari_kanezaki.plugin.segment_widget import SegmentWidget

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_MANIFEST = ROOT / "src" / "napari_kanezaki" / "plugin" / "napari.yaml"
FAST = {"n_channels": 24, "max_iter": 12, "min_labels": 1}


def set_params(panel, method: str = "st", **values) -> None:
    fast_settings(panel, FAST, method, **values)


def wait_done(qtbot, controls, timeout: int = 30_000) -> None:
    qtbot.waitUntil(lambda: not controls.running, timeout=timeout)


def add_regions(viewer, name: str = "regions", shape=(48, 48), seed: int = 0, **kwargs):
    image, truth = noisy_regions(shape, seed=seed)
    return viewer.add_image(image, name=name, rgb=True, **kwargs), truth


# -- packaging ----------------------------------------------------------------------------
def test_manifest_validates_and_is_installed():
    manifest = PluginManifest.from_file(PACKAGE_MANIFEST)
    installed = PluginManifest.from_distribution("napari-kanezaki")
    assert installed.name == manifest.name == "napari-kanezaki"
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment image",
        "Segment layers (batch)",
        "Enhance membranes",
    }
    # The top-level napari.yaml is a symlink to the packaged one: same bytes.
    assert (ROOT / "napari.yaml").read_bytes() == PACKAGE_MANIFEST.read_bytes()


def test_widget_import_does_not_import_torch():
    code = (
        "import sys, napari_kanezaki.plugin.segment_widget, napari_kanezaki.plugin.batch_widget, "
        "napari_kanezaki.plugin.sample_data, napari_kanezaki.plugin.membranes_widget; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_sample_data_and_batch_widget_dock(viewer):
    viewer.open_sample("napari-kanezaki", "immunohistochemistry")
    assert viewer.layers["immunohistochemistry"].data.shape == (256, 256, 3)
    assert viewer.layers["immunohistochemistry"].rgb
    _, batch = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment layers (batch)")
    assert isinstance(batch, BatchWidget)
    assert [layer.name for layer in batch.images.choices] == ["immunohistochemistry"]


# -- parameters ---------------------------------------------------------------------------
def test_defaults_sections_and_config_files(widget, tmp_path, errors):
    panel = widget.params
    assert isinstance(widget, SegmentWidget)
    # the interactive preset: the papers' method, ending by itself
    assert panel.preset.value == "interactive"
    assert panel.config() == load_preset("interactive", "st")
    assert panel.device.choices[0] == "auto" and "cpu" in panel.device.choices
    assert panel.advanced.native.isHidden() and panel.sp_group.native.isHidden()
    panel.show_advanced.value = True
    panel.method.value = "sp"
    assert not panel.advanced.native.isHidden() and panel.st_group.native.isHidden()
    assert panel.config() == load_preset("interactive", "sp")
    panel.preset.value = "paper"  # the papers' exact settings, one click away
    assert panel.config() == SPConfig()
    panel.preset.value = "seed"
    assert panel.config().n_conv == 5 and panel.config().superpixel == "felzenszwalb"
    panel.preset.value = "paper"

    panel.fields["superpixel"].value = "felzenszwalb"
    panel.fields["max_iter"].value = 77
    panel.fields["ref_size"].value = 0
    path = panel.save_file(tmp_path / "sp.toml")
    assert SPConfig.from_file(path) == SPConfig(superpixel="felzenszwalb", max_iter=77, ref_size=0)

    STConfig(w_con=5.0, n_conv=3).to_file(tmp_path / "st.yaml")
    panel.load_file(tmp_path / "st.yaml")
    assert panel.method.value == "st"
    assert panel.config() == STConfig(w_con=5.0, n_conv=3)

    widget.controls.run_button.changed.emit()
    assert errors[-1] == "no Image layer selected: open or add an image first."
    add_regions(widget._viewer)
    panel.fields["min_labels"].value = 500
    widget.controls.run_button.changed.emit()
    assert "min_labels=500 is larger than n_channels" in errors[-1]
    assert [layer.name for layer in widget._viewer.layers] == ["regions"]


# -- single runs --------------------------------------------------------------------------
def test_run_creates_aligned_labels_and_keeps_input(widget, viewer, qtbot):
    image, _ = add_regions(viewer, scale=(2.0, 0.5), translate=(10.0, -3.0))
    before = image.data.copy()
    set_params(widget.params, method="sp", n_segments=200, compactness=10.0, max_iter=15)
    widget.params.preview_every.value = 5
    widget.controls.run_button.changed.emit()
    assert widget.controls.running and not widget.controls.run_button.enabled
    output = viewer.layers["regions segmentation"]  # created at once
    wait_done(qtbot, widget.controls)
    assert widget.controls.run_button.enabled and widget.controls.save_button.enabled
    assert output.data.shape == (48, 48) and output.data.min() >= 1
    np.testing.assert_array_equal(output.scale, image.scale)
    np.testing.assert_array_equal(output.translate, image.translate)
    np.testing.assert_array_equal(image.data, before)
    segmenter = widget.controls.result.segmenter
    np.testing.assert_array_equal(output.data, segmenter.predict(before))


def test_scribble_ids_are_kept(widget, viewer, qtbot):
    image, truth = add_regions(viewer)
    scribbles = widget.add_scribble_layer()
    assert scribbles.name == "regions scribbles" and scribbles.data.shape == (48, 48)
    assert widget.scribbles.value is scribbles or widget.scribbles.value.name == scribbles.name
    # ready to paint: selected, paint mode, label 1, a brush for the image's size
    assert viewer.layers.selection.active.name == scribbles.name
    assert (str(scribbles.mode), scribbles.selected_label, scribbles.brush_size) == (
        "paint", 1, 2)
    big = viewer.add_image(np.zeros((600, 900), np.uint8), name="big")
    assert widget.add_scribble_layer(big).brush_size == 10
    viewer.layers.remove("big scribbles")
    viewer.layers.remove(big)
    ids = {1: 4, 2: 7, 3: 9}  # user ids for truth regions 1, 2, 3
    data = np.zeros((48, 48), np.uint8)
    for region, user_id in ids.items():
        rows, cols = np.nonzero(truth == region)
        data[rows[::15], cols[::15]] = user_id
    scribbles.data = data
    set_params(widget.params, max_iter=40)
    output = widget.segment(image, scribbles)
    wait_done(qtbot, widget.controls)
    assert set(ids.values()) <= set(np.unique(output.data))
    scribbled = data > 0
    assert np.mean(output.data[scribbled] == data[scribbled]) > 0.75
    assert scribbles.data is data or np.array_equal(scribbles.data, data)


def test_stop_ends_long_run_quickly(widget, viewer, qtbot):
    add_regions(viewer, shape=(64, 64))
    set_params(widget.params, max_iter=100_000)
    widget.params.preview_every.value = 2
    widget.controls.run_button.changed.emit()
    output = viewer.layers["regions segmentation"]
    qtbot.waitUntil(lambda: output.data.max() > 0, timeout=20_000)  # a live preview arrived
    started = time.perf_counter()
    widget.controls.stop_button.changed.emit()
    wait_done(qtbot, widget.controls, timeout=5_000)
    assert time.perf_counter() - started < 1.0
    assert widget.controls.result.stopped
    assert output in viewer.layers and output.data.shape == (64, 64) and output.data.min() >= 1
    np.testing.assert_array_equal(
        output.data, widget.controls.result.segmenter.predict(viewer.layers["regions"].data)
    )


def test_mismatched_and_invalid_inputs_are_refused(widget, viewer, qtbot, errors):
    image, _ = add_regions(viewer)
    other = viewer.add_labels(np.zeros((30, 30), np.uint8), name="other shape")
    good = viewer.add_labels(np.zeros((48, 48), np.uint8), name="good shape")
    widget.reset_choices()
    offered = [layer.name for layer in widget.scribbles.choices if layer is not None]
    assert offered == ["good shape"]
    with pytest.raises(ImageError, match="spatial shape"):
        widget.segment(image, other)
    # A core error raised in the worker (SP does not take scribbles) becomes a notification.
    good.data[5:8, 5:8] = 1
    set_params(widget.params, method="sp")
    widget.segment(image, good)
    wait_done(qtbot, widget.controls)
    assert errors and "scribbles are supported by the ST method only" in errors[-1]
    assert "regions segmentation" not in viewer.layers  # the empty output was removed
    assert widget.controls.run_button.enabled


# -- batch --------------------------------------------------------------------------------
def test_batch_per_layer_reference_and_saved_model(viewer, qtbot, tmp_path):
    _, batch = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment layers (batch)")
    layers = [add_regions(viewer, f"img{i}", seed=i)[0] for i in range(3)]
    set_params(batch.params, max_iter=8)
    batch.reset_choices()
    batch.images.value = layers
    batch.controls.run_button.changed.emit()
    wait_done(qtbot, batch.controls)
    outputs = [viewer.layers[f"img{i} segmentation"] for i in range(3)]
    assert all(o.data.shape == (48, 48) and o.data.min() >= 1 for o in outputs)

    for layer in outputs:
        viewer.layers.remove(layer)
    set_params(batch.params, max_iter=1, max_update=6, ref_size=32)
    batch.segment(layers[1:], mode="reference", references=layers[:1])
    wait_done(qtbot, batch.controls)
    assert [o.name for o in viewer.layers if o.name.endswith("segmentation")] == [
        "img1 segmentation",
        "img2 segmentation",
    ]
    model = batch.controls.save_model(tmp_path / "model.pt")
    expected = viewer.layers["img2 segmentation"].data.copy()

    batch.mode.value = "saved"  # a saved model: only where and how it runs applies
    assert batch.params.method.native.isHidden() and batch.params.seed.native.isHidden()
    assert not batch.params.device.native.isHidden()
    batch.segment(layers[2:], mode="saved", model_file=model)
    wait_done(qtbot, batch.controls)
    np.testing.assert_array_equal(viewer.layers["img2 segmentation [1]"].data, expected)


def test_batch_stop_between_and_within_layers(viewer, qtbot):
    batch = BatchWidget(viewer)
    layers = [add_regions(viewer, f"img{i}", shape=(64, 64), seed=i)[0] for i in range(3)]
    set_params(batch.params, max_iter=100_000)
    batch.segment(layers)
    qtbot.waitUntil(lambda: batch.controls._bar is not None and batch.controls._bar.n > 3)
    batch.controls.stop()
    wait_done(qtbot, batch.controls, timeout=5_000)
    names = [layer.name for layer in viewer.layers]
    assert "img0 segmentation" in names  # stopped within: keeps its current result
    assert "img1 segmentation" not in names and "img2 segmentation" not in names


# -- screenshot ---------------------------------------------------------------------------
def test_screenshot_with_docked_widget(widget, viewer, qtbot, tmp_path):
    add_regions(viewer, shape=(64, 64))
    set_params(widget.params)
    widget.controls.run_button.changed.emit()
    wait_done(qtbot, widget.controls)
    path = tmp_path / "viewer.png"
    pixels = viewer.screenshot(path, canvas_only=False)
    assert path.is_file()
    assert pixels.shape[1] > 400 and pixels[..., :3].std() > 10


def test_runs_replace_the_previous_result_unless_asked_to_keep_it(widget, viewer, qtbot):
    add_regions(viewer)
    set_params(widget.params, max_iter=3)
    for _ in range(2):
        widget.controls.run_button.changed.emit()
        wait_done(qtbot, widget.controls)
    names = [layer.name for layer in viewer.layers]
    assert names == ["regions", "regions segmentation"]
    widget.replace_previous.value = False
    widget.controls.run_button.changed.emit()
    wait_done(qtbot, widget.controls)
    names = [layer.name for layer in viewer.layers]
    assert names == ["regions", "regions segmentation", "regions segmentation (ST, run 3)"]
    assert np.asarray(viewer.layers["regions segmentation (ST, run 3)"].data).min() >= 1


def test_docks_fit_a_1000_pixel_screen_with_every_section_open(widget, viewer, qtbot):
    _, batch = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment layers (batch)")
    for dock, modes in ((widget, [None]), (batch, ["each", "reference", "saved"])):
        dock.params.show_advanced.value = True
        dock.params.method.value = "sp"
        dock.objects.enabled_box.value = True
        for mode in modes:
            if mode is not None:
                batch.mode.value = mode
            qtbot.wait(50)
            assert dock.native.sizeHint().height() <= 1000
            assert dock.native.minimumSizeHint().height() <= 300
        # the Run/Stop row is outside the scroll area: always in the dock
        assert dock.controls.native.parent() is dock.native


def test_layers_of_another_shape_are_explained_not_hidden(widget, viewer):
    add_regions(viewer)
    viewer.add_labels(np.zeros((10, 12), np.uint8), name="old marks")
    viewer.add_image(np.zeros((48, 48), np.uint8), name="channel 2")
    widget.reset_choices()
    assert [layer.name for layer in widget.scribbles.choices if layer] == []
    assert [layer.name for layer in widget.extra_channels.choices] == ["channel 2"]
    text = widget.not_offered_label.value
    assert "'old marks' (10, 12)" in text and "'regions' (48, 48)" in text
    assert not widget.not_offered_label.native.isHidden()
    assert "regions" not in [layer.name for layer in widget.extra_channels.choices]
    viewer.layers.remove("old marks")
    widget.reset_choices()
    assert widget.not_offered_label.value == "" and widget.not_offered_label.native.isHidden()
