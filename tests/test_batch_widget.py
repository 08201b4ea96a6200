"""The batch dock in a real viewer: fields of the chosen mode only, preselected layers,
lazy and multiscale layers on the bounded-memory path (shared with the Segment dock), and a
tooltip on every control of both docks."""

from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np
import pytest
from magicgui.widgets import Container
from widget_helpers import fast_settings

from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.plugin.batch_widget import BatchWidget

FAST = {"n_channels": 16, "max_iter": 3, "min_labels": 1, "plateau_iter": 0}


@pytest.fixture
def batch(viewer) -> BatchWidget:
    """The batch dock, docked through the plugin manifest."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment layers (batch)")
    return widget


@pytest.fixture
def infos(monkeypatch) -> list[str]:
    """Messages shown as napari info notifications."""
    shown: list[str] = []
    monkeypatch.setattr("napari_kanezaki.plugin.notify.show_info", shown.append)
    return shown


def shown(widget) -> bool:
    """Not hidden explicitly (the dock itself need not be on screen)."""
    return not widget.native.isHidden()


def regions(size: int = 48, seed: int = 0) -> np.ndarray:
    return noisy_regions((size, size), seed=seed)[0]


# -- fields of the mode -------------------------------------------------------------------
def test_only_the_fields_of_the_chosen_mode_are_shown(batch):
    params = batch.params
    fields = params.fields
    params.show_advanced.value = True
    reference_settings = ("ref_size", "batch_size", "n_epochs", "max_update")
    stop_settings = ("max_iter", "min_labels", "plateau_iter", "plateau_tol")

    assert batch.mode.value == "each"
    assert not shown(batch.references) and not shown(batch.model_file)
    assert not any(shown(fields[n]) for n in reference_settings)
    assert all(shown(fields[n]) for n in stop_settings)
    assert shown(params.preview_every) and shown(params.seed)

    batch.mode.value = "reference"  # a fixed number of updates per batch: no stop rule
    assert shown(batch.references) and not shown(batch.model_file)
    assert all(shown(fields[n]) for n in reference_settings)
    assert not any(shown(fields[n]) for n in stop_settings)
    assert not shown(params.preview_every)  # no preview while training on references
    assert shown(fields["n_channels"]) and shown(params.seed) and shown(params.method)

    batch.mode.value = "saved"  # the model file decides the rest
    assert shown(batch.model_file) and not shown(batch.references)
    assert not any(shown(w) for w in fields.values())
    assert not any(shown(w) for w in (params.method, params.preset, params.seed,
                                      params.st_group, params.sp_group))
    assert shown(params.device) and shown(params.precision)
    assert shown(batch.objects)

    batch.mode.value = "each"
    assert not shown(batch.model_file) and shown(params.method) and shown(fields["max_iter"])
    assert not any(shown(fields[n]) for n in reference_settings)


def test_the_segment_dock_hides_the_reference_settings(widget):
    widget.params.show_advanced.value = True
    assert not shown(widget.params.fields["ref_size"])
    assert shown(widget.params.fields["plateau_iter"]) and shown(widget.params.preview_every)


# -- preselection -------------------------------------------------------------------------
def test_eligible_layers_are_preselected_until_the_user_chooses(viewer):
    viewer.add_image(regions(seed=0), name="a", rgb=True)
    viewer.add_image(np.zeros((5, 32, 32), np.uint8), name="volume")  # for 'Segment image'
    viewer.add_labels(np.zeros((48, 48), np.int32), name="marks")
    viewer.add_image(regions(seed=1)[..., 0], name="b")
    _, batch = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment layers (batch)")
    assert [layer.name for layer in batch.images.choices] == ["a", "b"]
    assert [layer.name for layer in batch.images.value] == ["a", "b"]
    viewer.add_image(regions(seed=2), name="c", rgb=True)  # napari resets the choices
    assert [layer.name for layer in batch.images.value] == ["a", "b", "c"]
    batch.images.value = [viewer.layers["b"]]  # the user's choice is kept from now on
    viewer.add_image(regions(seed=3), name="d", rgb=True)
    assert [layer.name for layer in batch.images.value] == ["b"]
    assert batch.references.value == []


# -- lazy and multiscale layers -----------------------------------------------------------
def pyramid(size: int = 512) -> list[da.Array]:
    """Three levels of an RGB image as dask arrays (each half the previous)."""
    full = np.kron(regions(size // 8, seed=5), np.ones((8, 8, 1), np.uint8))
    return [da.from_array(np.ascontiguousarray(full[::f, ::f]), chunks=(64, 64, 3))
            for f in (1, 2, 4)]


@pytest.fixture
def crop_runs(monkeypatch) -> list[tuple]:
    """The crop shapes of every run trained on random crops (the bounded-memory path)."""
    from napari_kanezaki.workflows import stacks

    calls: list[tuple] = []
    original = stacks.train_on_crops

    def watched(segmenter, source, crop, **kwargs):
        calls.append((type(source.data).__name__, tuple(source.spatial_shape), tuple(crop)))
        return original(segmenter, source, crop, **kwargs)

    monkeypatch.setattr(stacks, "train_on_crops", watched)
    return calls


#: A memory budget that holds the labels of the pyramid's level 1 (256 x 256 int32 = 256
#: KiB) but not of level 0 (1 MiB), and is far too small to train even 64 x 64 pixels
#: whole; a quarter of it still gives crops and tiles of at least 8 x 8 pixels.
BUDGET = 1_000_000


@pytest.mark.parametrize("dock_name", ["batch", "segment"])
def test_lazy_and_multiscale_layers_take_the_bounded_memory_path(
    viewer, qtbot, monkeypatch, crop_runs, infos, dock_name
):
    monkeypatch.setattr("napari_kanezaki.plugin.runner.default_memory_budget", lambda: BUDGET)
    levels = pyramid()
    big = viewer.add_image(levels, name="pyramid", rgb=True, multiscale=True, scale=(0.5, 0.5))
    lazy = viewer.add_image(da.from_array(regions(64), chunks=(32, 32, 3)), name="lazy",
                            rgb=True)
    if dock_name == "batch":
        _, dock = viewer.window.add_plugin_dock_widget("napari-kanezaki",
                                                       "Segment layers (batch)")
        fast_settings(dock.params, FAST)
        dock.segment([big, lazy])
    else:
        _, dock = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment image")
        fast_settings(dock.params, FAST)
        dock.segment(big)
    qtbot.waitUntil(lambda: not dock.controls.running, timeout=120_000)

    # The finest level whose labels fit: level 1, said in a notification.
    assert any("level 1 of 3 (256 x 256)" in text for text in infos), infos
    output = viewer.layers["pyramid segmentation"]
    assert output.data.shape == (256, 256) and output.data.min() >= 1
    np.testing.assert_allclose(output.scale, (1.0, 1.0))  # same world extent as the layer
    # Read lazily (the dask level itself), trained on random crops, predicted in tiles.
    assert crop_runs[0][:2] == ("Array", (256, 256))
    if dock_name == "batch":
        assert crop_runs[1][:2] == ("Array", (64, 64))
        lazy_out = viewer.layers["lazy segmentation"]
        assert lazy_out.data.shape == (64, 64) and lazy_out.data.min() >= 1
    assert len(crop_runs) == (2 if dock_name == "batch" else 1)
    assert isinstance(big.data[0], da.Array) and isinstance(lazy.data, da.Array)


def test_a_pyramid_is_read_at_its_finest_level_whose_labels_fit(viewer):
    from napari_kanezaki.plugin.runner import layer_input

    levels = pyramid(128)
    big = viewer.add_image(levels, name="pyramid", rgb=True, multiscale=True)
    source = layer_input(big)
    assert (source.level, source.levels, source.shape) == (0, 3, (128, 128))
    assert source.note() == "level 0 of 3 (128 x 128)"
    assert layer_input(big, memory_budget=64 * 64 * 4).shape == (64, 64)
    assert layer_input(big, memory_budget=64 * 64 * 4 - 1).shape == (32, 32)
    assert layer_input(big, memory_budget=1).level == 2  # none fits: the coarsest


# -- tooltips -----------------------------------------------------------------------------
def controls_of(container: Container):
    """Every widget inside a magicgui container, recursively (containers excluded)."""
    for widget in container:
        if isinstance(widget, Container):
            yield from controls_of(widget)
        else:
            yield widget


@pytest.mark.parametrize("dock_name", ["Segment image", "Segment layers (batch)"])
def test_every_control_of_both_docks_has_a_tooltip(viewer, dock_name):
    _, dock = viewer.window.add_plugin_dock_widget("napari-kanezaki", dock_name)
    widgets = [*controls_of(dock.settings), *controls_of(dock.controls)]
    assert len(widgets) > 40
    missing = [w.name for w in widgets if not (w.tooltip or "").strip()]
    assert not missing, missing
    # what Qt shows on hover is the same text
    assert all(w.native.toolTip() for w in widgets)


# -- several layers in turn ---------------------------------------------------------------
def test_jobs_in_turn_share_one_progress_and_stop_between_jobs():
    import threading

    from napari_kanezaki.plugin.jobs import JobResult, Update, in_turn

    started: list[str] = []

    def job(name: str, n: int, stop: threading.Event):
        started.append(name)
        for step in range(1, n + 1):
            yield Update(step, n, f"{name} {step}", name)
        return JobResult(None, stop.is_set())

    stop = threading.Event()
    updates = list(in_turn([partial(job, "a", 4), partial(job, "b", 4)], stop))
    assert [(u.step, u.total) for u in updates] == [(i, 8) for i in range(1, 9)]
    assert [u.key for u in updates] == ["a"] * 4 + ["b"] * 4

    started.clear()
    runner = in_turn([partial(job, "a", 4), partial(job, "b", 4)], stop)
    next(runner)
    stop.set()  # during the first job: it goes on to its end, the second never starts
    rest = list(runner)
    assert started == ["a"] and [u.key for u in rest] == ["a"] * 3


def test_scribbles_of_a_pyramid_follow_the_level_read(widget, viewer, qtbot, monkeypatch,
                                                      errors, infos):
    monkeypatch.setattr("napari_kanezaki.plugin.runner.default_memory_budget", lambda: BUDGET)
    big = viewer.add_image(pyramid(), name="pyramid", rgb=True, multiscale=True)
    truth = np.kron(noisy_regions((64, 64), seed=5)[1], np.ones((8, 8), np.int32))
    painted = np.zeros_like(truth)
    rows = np.random.default_rng(0).random(truth.shape) < 0.05  # 5 % of the pixels
    painted[rows & (truth != 3)] = truth[rows & (truth != 3)]  # classes 1 and 2 only
    scribbles = viewer.add_labels(painted, name="marks")  # drawn at full resolution
    fast_settings(widget.params, FAST)
    widget.params.fields["painted_only"].value = True
    widget.segment(big, scribbles)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=120_000)
    assert not errors, errors
    assert any("level 1 of 3" in text for text in infos), infos
    labels = np.asarray(viewer.layers["pyramid segmentation"].data)
    assert labels.shape == (256, 256)
    assert set(np.unique(labels)) == {1, 2}  # every pixel in a painted class
    np.testing.assert_array_equal(scribbles.data, painted)  # the scribbles are untouched


# -- a trained model on a lazy layer over the budget: exact tiled prediction --------------
@pytest.fixture
def whole_reads() -> list[int]:
    """Sizes of the dask blocks the run's thread computes (napari's drawing is not counted)."""
    import threading

    import dask
    from dask.callbacks import Callback

    sizes: list[int] = []

    def posttask(key, result, dsk, state, worker_id):
        if threading.current_thread() is not threading.main_thread():
            sizes.append(int(getattr(result, "size", 0)))

    with dask.config.set(scheduler="synchronous"), Callback(posttask=posttask):
        yield sizes


@pytest.fixture
def predicted_tiles(monkeypatch) -> list[int]:
    """The number of tiles of every tiled prediction of a trained model."""
    from napari_kanezaki.workflows import stacks

    counts: list[int] = []
    original = stacks.predict_tiles

    def watched(segmenter, source, tiles, output, prefix=()):
        counts.append(len(tiles))
        return original(segmenter, source, tiles, output, prefix)

    monkeypatch.setattr(stacks, "predict_tiles", watched)
    return counts


@pytest.mark.parametrize("mode", ["reference", "saved"])
def test_a_trained_model_predicts_a_lazy_layer_over_the_budget_in_exact_tiles(
    batch, viewer, qtbot, monkeypatch, tmp_path, errors, whole_reads, predicted_tiles, mode
):
    from napari_kanezaki import Segmenter, STConfig

    # 250 kB for the network: the 16-channel prediction of 96 x 96 pixels needs 2.4 MB
    monkeypatch.setattr("napari_kanezaki.workflows.stacks.default_memory_budget",
                        lambda: BUDGET)
    image = regions(96, seed=6)
    lazy = viewer.add_image(da.from_array(image, chunks=(32, 32, 3)), name="lazy", rgb=True)
    reference = viewer.add_image(regions(48, seed=7), name="reference", rgb=True)
    model_file = None
    if mode == "saved":
        model = Segmenter(STConfig(n_channels=16, ref_size=32, max_update=3), seed=0,
                          device="cpu", precision="fp32")
        model.fit([regions(48, seed=7)])
        model_file = model.save(tmp_path / "model.pt")
    fast_settings(batch.params, {"n_channels": 16, "ref_size": 32, "max_update": 3})
    batch.segment([lazy], mode=mode, references=[reference], model_file=model_file)
    qtbot.waitUntil(lambda: not batch.controls.running, timeout=120_000)
    assert not errors, errors

    assert len(predicted_tiles) == 1 and predicted_tiles[0] > 4  # predicted in tiles
    assert whole_reads and max(whole_reads) < image.size / 2  # never read whole
    labels = np.asarray(viewer.layers["lazy segmentation"].data)
    segmenter = batch.controls.result.segmenter
    whole = segmenter.predict(image)  # the whole image at once, as published
    assert np.mean(labels == whole) > 0.999 and set(np.unique(labels)) == set(np.unique(whole))
    assert isinstance(lazy.data, da.Array)
