"""Shared fixtures of the test suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def _own_settings_folder(tmp_path_factory, monkeypatch):
    """Every test remembers panel settings in a folder of its own, never in the user's."""
    folder = tmp_path_factory.mktemp("settings")
    monkeypatch.setenv("NAPARI_KANEZAKI_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The development evaluation data beside the project; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def rgb_image() -> np.ndarray:
    """A small uint8 RGB image with three regions."""
    from napari_kanezaki.imaging.samples import noisy_regions

    return noisy_regions((40, 48), noise=0.05, seed=3)[0]


@pytest.fixture
def errors(monkeypatch):
    """Messages shown as napari error notifications."""
    shown: list[str] = []
    monkeypatch.setattr("napari_kanezaki.plugin.notify.show_error", shown.append)
    return shown


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer (needs a display: Xvfb via pytest-xvfb)."""
    return make_napari_viewer()


@pytest.fixture
def widget(viewer):
    """The "Segment image" dock widget, docked through the plugin manifest."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment image")
    return widget


@pytest.fixture
def load_benchmark(monkeypatch):
    """Import a script of ``benchmarks/`` by name (its sibling `common` importable too)."""
    import importlib.util
    import sys

    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    sys.modules.pop("common", None)
