"""Save the README's screenshot: the dock widget and a result on the bundled sample.

Opens a napari viewer, loads the immunohistochemistry sample, docks "Segment image", runs
the SP method through the widget exactly as a user would (Run button), waits for the
result and saves a screenshot of the whole window. Needs a display (e.g. ``xvfb-run``)::

    xvfb-run -a .venv/bin/python scripts/make_screenshot.py docs/images/screenshot.png
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument("--max-iter", type=int, default=60, help="iterations (default: 60)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args()
    if args.output.exists() and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it.")

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 820)
    viewer.open_sample("napari-kanezaki", "immunohistochemistry")
    _, widget = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment image")
    panel = widget.params
    panel.method.value = "sp"
    panel.fields["max_iter"].value = args.max_iter
    widget.controls.run_button.changed.emit()
    while widget.controls.running:
        QApplication.processEvents()
    viewer.layers["immunohistochemistry segmentation"].opacity = 0.6
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(args.output, canvas_only=False)
    viewer.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
