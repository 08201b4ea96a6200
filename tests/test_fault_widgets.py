"""The fault catalogue of the napari widgets (the API and CLI cases: test_faults.py).

Every case sets up a viewer, spoils one thing and presses Run (or loads a settings file) the
way a user does. It states the words of the error notification the user sees, or that the
run succeeds. Common checks: the input layers' data are unchanged, a refused or failed run
leaves no output layer behind, the Run button works again, and a settings file that is
refused leaves the panel's settings as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from widget_helpers import fast_settings

from napari_kanezaki import STConfig
from napari_kanezaki.core.segmenter import Segmenter
from napari_kanezaki.imaging.samples import noisy_regions

FAST = {"n_channels": 8, "max_iter": 3, "min_labels": 1}


@dataclass
class Scene:
    """The viewer of one case, its two docks and a folder for files."""

    viewer: object
    segment: object
    batch: object
    root: Path
    model: Path

    def image(self, data=None, name: str = "img", **kwargs):
        data = noisy_regions((24, 24), seed=0)[0] if data is None else data
        rgb = data.ndim == 3 and data.shape[-1] == 3
        return self.viewer.add_image(data, name=name, rgb=rgb, **kwargs)

    def scribbles(self, value, shape=(24, 24), dtype=np.int32, name: str = "scr"):
        data = np.zeros(shape, dtype)
        data[2:4, 2:4] = value
        return self.viewer.add_labels(data, name=name)


@dataclass(frozen=True)
class WidgetFault:
    """One case: `act` sets the scene up and presses Run; `words` of the error or ""."""

    name: str
    act: Callable[[Scene], None]
    words: str = ""
    marks: tuple = field(default_factory=tuple)


def _run_segment(image=None, scribbles=None, method: str = "st", **values):
    """Choose layers in the "Segment image" dock and press Run."""

    def act(s: Scene) -> None:
        layer = s.image() if image is None else image(s)
        painted = None if scribbles is None else scribbles(s)
        fast_settings(s.segment.params, FAST, method, **values)
        s.segment.reset_choices()
        s.segment.image.value = layer
        if painted is not None:
            s.segment.scribbles.value = painted
        s.segment.controls.run_button.changed.emit()

    return act


def _run_batch(mode: str = "each", images=None, references=False, model=None):
    """Choose layers, a mode (and a model file) in the batch dock and press Run."""

    def act(s: Scene) -> None:
        layers = [s.image()] if images is None else images(s)
        fast_settings(s.batch.params, FAST)
        s.batch.reset_choices()
        s.batch.images.value = layers
        s.batch.mode.value = mode
        if references:
            s.batch.references.value = layers
        if model is not None:
            s.batch.model_file.value = model(s)
        s.batch.controls.run_button.changed.emit()

    return act


def _load_settings(content: bytes | None, name: str = "s.toml"):
    """Load a settings file through the panel's "Load" button (file dialog answered)."""

    def act(s: Scene) -> None:
        path = s.root / name
        if content is not None:
            path.write_bytes(content)
        import napari_kanezaki.plugin.parameters as parameters

        original = parameters.show_file_dialog
        parameters.show_file_dialog = lambda **_kwargs: str(path)
        try:
            s.segment.params._ask_load()
        finally:
            parameters.show_file_dialog = original

    return act


def _nan(s: Scene):
    data = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    data[5, 5] = np.nan
    return s.image(data)


def _folder_model(s: Scene) -> Path:
    (s.root / "models").mkdir()
    return s.root / "models"


def _corrupt_model(s: Scene) -> Path:
    path = s.root / "bad.pt"
    path.write_bytes(b"\x00not a model" * 8)
    return path


WIDGET_CATALOGUE: list[WidgetFault] = [
    WidgetFault("segment: no image layer", lambda s: (
        s.segment.reset_choices(), s.segment.controls.run_button.changed.emit()),
        "no Image layer selected"),
    WidgetFault("segment: min_labels above n_channels", _run_segment(min_labels=500),
                "min_labels=500 is larger than n_channels"),
    WidgetFault("segment: scribbles with SP", _run_segment(
        scribbles=lambda s: s.scribbles(1), method="sp"), "ST method only"),
    WidgetFault("segment: scribble id not below n_channels", _run_segment(
        scribbles=lambda s: s.scribbles(9)), "not smaller than n_channels"),
    WidgetFault("segment: negative scribbles", _run_segment(
        scribbles=lambda s: s.scribbles(-2)), "negative"),
    WidgetFault("segment: scribbles of another shape (programmatic)", lambda s: _report(
        s, lambda: s.segment.segment(s.image(), s.scribbles(1, shape=(10, 10)))),
        "has shape \\(10, 10\\) but image 'img' has spatial shape"),
    WidgetFault("segment: NaN in the image", _run_segment(image=_nan), "NaN or infinite"),
    WidgetFault("segment: a 1-pixel-high image", _run_segment(
        image=lambda s: s.image(np.ones((1, 24), np.float32))), "too small"),
    WidgetFault("segment: extra channel of another shape (programmatic)", lambda s: _report(
        s, lambda: s.segment.segment(s.image(), channels=[
            s.image(np.ones((10, 10), np.float32), name="other")])), "other"),
    WidgetFault("segment: the image as its own channel (programmatic)", lambda s: _report(
        s, lambda: s.segment.segment(layer := s.image(), channels=[layer])),
        "is the image itself"),
    WidgetFault("segment: fitting scribbles", _run_segment(scribbles=lambda s: s.scribbles(1))),
    WidgetFault("segment: a stack in 3d mode", lambda s: (
        fast_settings(s.segment.params, FAST),
        s.segment.segment(s.image(np.stack([noisy_regions((24, 24), seed=0)[0][..., 0]] * 3)),
                          stack_mode="3d"))),
    WidgetFault("batch: no layer selected", _run_batch(images=lambda s: []),
                "select at least one Image layer"),
    WidgetFault("batch: reference mode without references", _run_batch(mode="reference"),
                "select at least one reference layer"),
    WidgetFault("batch: saved mode without a model file", _run_batch(
        mode="saved", model=lambda s: s.root / "missing.pt"), "choose an existing model file"),
    WidgetFault("batch: saved mode with a folder as model", _run_batch(
        mode="saved", model=_folder_model), "choose an existing model file"),
    WidgetFault("batch: saved mode with a damaged model file", _run_batch(
        mode="saved", model=_corrupt_model), "not a readable model file"),
    WidgetFault("batch: saved RGB model on a grey layer", _run_batch(
        mode="saved", model=lambda s: s.model,
        images=lambda s: [s.image(np.ones((24, 24), np.float32))]),
        "trained on 3-channel images"),
    WidgetFault("batch: NaN in one layer", _run_batch(images=lambda s: [_nan(s)]),
                "NaN or infinite"),
    WidgetFault("batch: two layers segmented", _run_batch(
        images=lambda s: [s.image(), s.image(name="img2")])),
    WidgetFault("settings: not TOML", _load_settings(b"method = st\n[[["), "not valid TOML"),
    WidgetFault("settings: unknown key", _load_settings(b'method = "st"\nspeed = 2\n'),
                "unknown ST setting"),
    WidgetFault("settings: value out of range", _load_settings(b'method = "st"\nlr = -1.0\n'),
                "lr must be > 0"),
    WidgetFault("settings: missing file", _load_settings(None), "does not exist"),
    WidgetFault("settings: a folder", lambda s: (
        (s.root / "dir.toml").mkdir(), _load_settings(None, "dir.toml")(s)), "is a folder"),
]


def _report(s: Scene, call: Callable[[], object]) -> None:
    """Run a programmatic call the way the dock's Run button does (errors notified)."""
    from napari_kanezaki.plugin.notify import report_errors

    with report_errors():
        call()


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> Path:
    segmenter = Segmenter(STConfig(n_channels=8, max_iter=2), device="cpu", precision="fp32")
    for _ in segmenter.run(noisy_regions((24, 24), seed=0)[0]):
        pass
    return segmenter.save(tmp_path_factory.mktemp("model") / "rgb.pt")


@pytest.mark.parametrize(
    "fault", [pytest.param(f, id=f.name, marks=f.marks) for f in WIDGET_CATALOGUE]
)
def test_widget_fault_catalogue(fault, viewer, qtbot, errors, tmp_path, rgb_model):
    from napari_kanezaki.plugin.batch_widget import BatchWidget
    from napari_kanezaki.plugin.segment_widget import SegmentWidget

    scene = Scene(viewer, SegmentWidget(viewer), BatchWidget(viewer), tmp_path, rgb_model)
    settings = scene.segment.params.config()
    snapshots: dict[int, np.ndarray] = {}

    def remember(event) -> None:  # every input layer as it was when added
        layer = event.value
        snapshots[id(layer)] = np.array(layer.data, copy=True)

    viewer.layers.events.inserted.connect(remember)
    fault.act(scene)
    for controls in (scene.segment.controls, scene.batch.controls):
        qtbot.waitUntil(lambda c=controls: not c.running, timeout=60_000)
    outputs = [layer for layer in viewer.layers
               if layer.name.endswith(("segmentation", "objects"))]
    if fault.words:
        assert errors, "no error was shown"
        assert any(__import__("re").search(fault.words, e) for e in errors), errors
        assert not outputs, [layer.name for layer in outputs]
    else:
        assert not errors, errors
        assert outputs and all(o.data.min() >= 1 for o in outputs)
    for layer in viewer.layers:
        if id(layer) in snapshots and layer not in outputs:
            np.testing.assert_array_equal(layer.data, snapshots[id(layer)])
    assert scene.segment.controls.run_button.enabled
    assert scene.batch.controls.run_button.enabled
    if fault.name.startswith("settings:"):
        assert scene.segment.params.config() == settings


def test_the_widget_catalogue_holds_its_cases():
    assert len(WIDGET_CATALOGUE) >= 20
    assert len({f.name for f in WIDGET_CATALOGUE}) == len(WIDGET_CATALOGUE)
