"""The package's layers: which subpackage may import which, and what each one loads.

imaging  <-  core  <-  workflows  <-  cli
                                  <-  plugin (napari, Qt, magicgui live only here)

A lower layer never imports a higher one, also not lazily inside a function; the faces do
not import each other. Checked statically on every module's imports and dynamically in
fresh interpreters.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_kanezaki"

#: Subpackages each layer may import from (besides itself and the top-level package).
ALLOWED = {
    "imaging": set(),
    "core": {"imaging"},
    "workflows": {"imaging", "core"},
    "cli": {"imaging", "core", "workflows"},
    "plugin": {"imaging", "core", "workflows"},
}
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions, as absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_the_layers_beneath_them(layer):
    assert _modules(layer), f"no modules in {layer}/"
    for path in _modules(layer):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "napari_kanezaki" or len(parts) < 2:
                continue
            target = parts[1]
            if target in ALLOWED and target != layer:
                assert target in ALLOWED[layer], (
                    f"{path.relative_to(PACKAGE)} imports {name}: {layer} may import only "
                    f"{sorted(ALLOWED[layer]) or 'nothing of the package'}"
                )


@pytest.mark.parametrize("layer", ["imaging", "core", "workflows", "cli"])
def test_only_the_plugin_imports_napari_qt_or_magicgui(layer):
    for path in _modules(layer):
        bad = sorted(n for n in _imports(path) if n.split(".")[0] in GUI)
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_image_handling_never_imports_torch():
    for path in _modules("imaging"):
        assert not any(n.split(".")[0] == "torch" for n in _imports(path)), path.name


def _fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_segmenting_with_the_core_loads_no_gui_module():
    loaded = _fresh(
        "import sys, numpy as np\n"
        "from napari_kanezaki import segment, Segmenter, STConfig\n"
        "image = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)\n"
        "labels = segment(image, method='sp', max_iter=2, n_channels=8, device='cpu')\n"
        "assert labels.shape == (24, 24)\n"
        "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))\n"
    ).split()
    assert "torch" in loaded  # the check below looks at a real run
    assert not set(GUI) & set(loaded), sorted(set(GUI) & set(loaded))


def test_importing_the_package_and_the_widgets_loads_no_torch():
    loaded = _fresh(
        "import sys\n"
        "import napari_kanezaki\n"
        "import napari_kanezaki.plugin.segment_widget, napari_kanezaki.plugin.batch_widget\n"
        "import napari_kanezaki.plugin.sample_data\n"
        "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))\n"
    ).split()
    assert "napari" in loaded and "magicgui" in loaded
    assert "torch" not in loaded
