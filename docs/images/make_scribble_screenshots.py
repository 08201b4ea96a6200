"""Save the screenshots of docs/scribbles.md: the scribble workflow on the bundled sample.

Opens a napari viewer, loads the immunohistochemistry sample, docks "Segment image" and
goes through the workflow as a user would: *New scribble layer* (napari is left ready to
paint), three classes painted with the brush (1 = pale stroma, 2 = brown stained tissue,
3 = blue nuclei), then *Run* with the ST method and the interactive preset (every pixel in
a painted class). Each step is a screenshot of the whole window, saved as a palette PNG.
Needs a display (e.g. ``xvfb-run``)::

    xvfb-run -a .venv/bin/python docs/images/make_scribble_screenshots.py docs/images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

#: Brush strokes per class: (row, column) points joined by straight lines.
STROKES = {
    1: [[(95, 20), (108, 55)], [(195, 15), (210, 45)], [(150, 225), (155, 250)]],
    2: [[(25, 15), (45, 60), (70, 100)], [(220, 150), (225, 190), (240, 230)],
        [(70, 215), (95, 245)]],
    3: [[(r, c - 2), (r, c + 2)] for r, c in
        ((163, 101), (148, 166), (145, 114), (126, 170), (162, 189), (139, 44), (229, 60))],
}
FILES = ("scribbles_ready.png", "scribbles_painted.png", "scribbles_result.png")


def stroke_points(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every pixel on the polyline through `points`."""
    out = []
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:], strict=True):
        n = max(abs(r1 - r0), abs(c1 - c0)) + 1
        out += list(zip(np.linspace(r0, r1, n).round().astype(int),
                        np.linspace(c0, c1, n).round().astype(int), strict=True))
    return out


def save(viewer, path: Path) -> None:
    """A screenshot of the whole window as a 256-colour PNG (a small file)."""
    from PIL import Image

    viewer.reset_view()
    pixels = viewer.screenshot(canvas_only=False)
    image = Image.fromarray(pixels[..., :3]).quantize(colors=256)
    image.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of the PNG files")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1300, 800)
    viewer.open_sample("napari-kanezaki", "immunohistochemistry")
    _, widget = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment image")
    widget.params.restore_defaults()  # the interactive preset, whatever was remembered
    widget.params.method.value = "st"  # scribbles: the ST method
    widget.params.device.value = "cpu"
    QApplication.processEvents()

    widget.settings["new_scribbles"].changed.emit()  # the button, as a click
    scribbles = viewer.layers["immunohistochemistry scribbles"]
    for _ in range(5):
        QApplication.processEvents()
    save(viewer, args.folder / FILES[0])

    for label, strokes in STROKES.items():
        for points in strokes:
            for point in stroke_points(points):
                scribbles.paint(point, label, refresh=False)
    scribbles.refresh()
    scribbles.selected_label = 3
    for _ in range(5):
        QApplication.processEvents()
    save(viewer, args.folder / FILES[1])

    widget.controls.run_button.changed.emit()
    while widget.controls.running:
        QApplication.processEvents()
    result = viewer.layers["immunohistochemistry segmentation"]
    result.opacity = 0.55
    viewer.layers.selection.active = result
    scribbles.visible = False
    for _ in range(5):
        QApplication.processEvents()
    save(viewer, args.folder / FILES[2])
    print("labels:", np.unique(np.asarray(result.data)).tolist())
    viewer.close()


if __name__ == "__main__":
    main()
