"""Segment the bundled immunohistochemistry sample and write the results.

The same job as ``napari-kanezaki demo`` (this script calls it). Writes, into the output
folder: ``labels.tif`` (the label image, ids intact), ``overlay.png`` (labels over the
image), ``config.toml`` (every setting of the run) with ``run.json`` (seed, device) and
``model.pt`` (weights + configuration, reloadable with ``Segmenter.load``). Existing files
are never replaced unless ``--overwrite`` is given.

    python examples/segment_sample.py --output demo-output
"""

from __future__ import annotations

import sys

from napari_kanezaki.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
