"""The built wheel carries the napari manifest and registers it (npe2 discovery)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_a_valid_manifest_and_entry_point(tmp_path):
    pytest.importorskip("setuptools")
    # Build from a copy, so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "demo-output"
    ))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("napari_kanezaki-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "napari-kanezaki = napari_kanezaki.plugin:napari.yaml" in archive.read(
            entry_points
        ).decode()
        assert "napari_kanezaki/core/presets/paper-sp.toml" in names
        archive.extract("napari_kanezaki/plugin/napari.yaml", tmp_path / "unpacked")
    manifest = PluginManifest.from_file(tmp_path / "unpacked" / "napari_kanezaki" / "plugin" / "napari.yaml")
    manifest.validate_imports()
    assert manifest.name == "napari-kanezaki"
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment image",
        "Segment layers (batch)",
    }
