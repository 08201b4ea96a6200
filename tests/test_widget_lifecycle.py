"""Layers and the viewer going away during a run, in a real viewer (both docks).

Closing the viewer, removing the input layer or removing the output layer while a run goes
on: no exception reaches ``sys.excepthook``, Qt's handlers or stderr, the worker's thread
ends, and nothing is left behind (no output layer, no progress bar, idle controls).
"""

from __future__ import annotations

import sys

import pytest
from napari.utils import progress
from widget_helpers import fast_settings

from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.plugin.batch_widget import BatchWidget

#: A run that would last minutes: it only ends because the test makes it end.
LONG = {"n_channels": 16, "max_iter": 100_000, "min_labels": 1, "plateau_iter": 0}


@pytest.fixture
def tracebacks(monkeypatch, qtbot, capsys):
    """Every exception that reaches sys.excepthook, a Qt handler or stderr during the test."""
    seen: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(repr(value)))
    with qtbot.capture_exceptions() as captured:
        yield seen
    seen += [repr(value) for _, value, _ in captured]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err
    assert not seen, seen


def add_image(viewer, name: str = "img"):
    image, _ = noisy_regions((64, 64), seed=1)
    return viewer.add_image(image, name=name, rgb=True)


def start_long_run(dock, viewer, qtbot, layer):
    """Start a run that trains until stopped; wait for its first preview."""
    fast_settings(dock.params, LONG, "st")
    dock.params.preview_every.value = 5  # 1 floods a loaded machine's event loop
    if isinstance(dock, BatchWidget):
        dock.segment([layer])
    else:
        dock.segment(layer)
    output = viewer.layers[f"{layer.name} segmentation"]
    qtbot.waitUntil(lambda: output.data.max() > 0, timeout=60_000)
    run = dock.controls._run
    assert run is not None and run.worker.is_running
    return run, output


def wait_worker_end(qtbot, run) -> None:
    """The worker's thread ends by itself (the job returns at its next check)."""
    qtbot.waitUntil(lambda: not run.worker.is_running and run.finished, timeout=10_000)


def assert_idle(dock) -> None:
    controls = dock.controls
    assert not controls.running and controls._bar is None
    assert controls.run_button.enabled and not controls.stop_button.enabled


def open_docks(viewer):
    _, segment = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment image")
    _, batch = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment layers (batch)")
    return {"segment": segment, "batch": batch}


@pytest.mark.parametrize("dock_name", ["segment", "batch"])
def test_removing_the_input_layer_ends_the_run(viewer, qtbot, tracebacks, dock_name):
    dock = open_docks(viewer)[dock_name]
    layer = add_image(viewer)
    before = set(progress._all_instances)
    run, output = start_long_run(dock, viewer, qtbot, layer)
    viewer.layers.remove(layer)
    assert_idle(dock)  # at once
    assert [layer.name for layer in viewer.layers] == []  # its result went with it
    wait_worker_end(qtbot, run)
    assert run.stop.abandoned
    assert set(progress._all_instances) == before  # no progress bar left open
    qtbot.wait(100)  # late signals of the worker change nothing
    assert [layer.name for layer in viewer.layers] == []


@pytest.mark.parametrize("dock_name", ["segment", "batch"])
def test_removing_the_output_layer_ends_the_run(viewer, qtbot, tracebacks, dock_name):
    dock = open_docks(viewer)[dock_name]
    layer = add_image(viewer)
    before = set(progress._all_instances)
    data = layer.data.copy()
    run, output = start_long_run(dock, viewer, qtbot, layer)
    viewer.layers.remove(output)
    assert_idle(dock)
    wait_worker_end(qtbot, run)
    assert set(progress._all_instances) == before
    qtbot.wait(100)
    assert [layer.name for layer in viewer.layers] == ["img"]
    assert (layer.data == data).all()  # the input is untouched
    # the dock works again
    fast_settings(dock.params, LONG, "st", max_iter=2)
    second = dock.segment([layer]) if dock_name == "batch" else dock.segment(layer)
    second = second[0] if isinstance(second, list) else second
    qtbot.waitUntil(lambda: not dock.controls.running, timeout=60_000)
    assert second.data.min() >= 1


def test_closing_the_viewer_during_runs_of_both_docks(make_napari_viewer, qtbot, tracebacks):
    viewer = make_napari_viewer()
    docks = open_docks(viewer)
    runs = []
    for name, dock in docks.items():
        layer = add_image(viewer, name)
        runs.append(start_long_run(dock, viewer, qtbot, layer)[0])
    viewer.close()
    for run in runs:
        wait_worker_end(qtbot, run)
        assert run.stop.abandoned
    qtbot.wait(200)  # the workers' last signals arrive after the docks are gone
    assert all(run.bar is None for run in runs)
    assert not [p for p in progress._all_instances if p in {run.bar for run in runs}]


def test_removing_one_input_of_a_batch_keeps_the_others(viewer, qtbot, tracebacks):
    batch = open_docks(viewer)["batch"]
    first, second = add_image(viewer, "a"), add_image(viewer, "b")
    fast_settings(batch.params, LONG, "st", max_iter=12)
    batch.params.preview_every.value = 5
    batch.segment([first, second])
    output = viewer.layers["a segmentation"]
    qtbot.waitUntil(lambda: output.data.max() > 0, timeout=60_000)
    viewer.layers.remove(first)
    assert "a segmentation" not in viewer.layers and batch.controls.running
    qtbot.waitUntil(lambda: not batch.controls.running, timeout=120_000)
    assert [layer.name for layer in viewer.layers] == ["b", "b segmentation"]
    assert viewer.layers["b segmentation"].data.min() >= 1
