"""One training path: segment(), the CLI and the widget train an image the same way.

Whole when its working set fits the memory budget (by default 60 % of the memory available),
on random crops with tiled prediction otherwise; the same image, seed and thread count give
the same labels through every face.
"""

from __future__ import annotations

import numpy as np
import tifffile
from widget_helpers import fast_settings

from napari_kanezaki import STConfig, segment
from napari_kanezaki.cli import main
from napari_kanezaki.imaging import tiles
from napari_kanezaki.imaging.samples import noisy_regions

SETTINGS = {"n_channels": 8, "max_iter": 4, "min_labels": 1, "plateau_iter": 0}
RUNTIME = ["--device", "cpu", "--precision", "fp32", "--seed", "3", "-q"]


def _three_faces(tmp_path, viewer, qtbot, image):
    api = segment(image, config=STConfig(**SETTINGS), device="cpu", precision="fp32", seed=3)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image)
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--n-channels", "8", "--max-iter", "4",
                 "--min-labels", "1", "--plateau-iter", "0", *RUNTIME]) == 0
    cli = tifffile.imread(out / "big_labels.tif")
    _, widget = viewer.window.add_plugin_dock_widget("napari-kanezaki", "Segment image")
    layer = viewer.add_image(image, name="big", rgb=True)
    fast_settings(widget.params, SETTINGS)
    widget.params.seed.value = 3
    widget.params.preview_every.value = 0
    output = widget.segment(layer)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=120_000)
    return api, cli, np.asarray(output.data)


def test_a_1000_pixel_square_image_trains_whole_and_alike_everywhere(tmp_path, viewer, qtbot,
                                                                     monkeypatch):
    image = noisy_regions((1000, 1000), noise=0.05, seed=1)[0]
    calls = []
    budget = tiles.default_memory_budget
    monkeypatch.setattr(tiles, "default_memory_budget", lambda: calls.append(1) or budget())
    assert tiles.fits_budget((1000, 1000), 8, budget())  # 320 MB at 8 channels
    api, cli, widget = _three_faces(tmp_path, viewer, qtbot, image)
    np.testing.assert_array_equal(api, cli)
    np.testing.assert_array_equal(api, widget)
    assert calls, "the faces must ask the default budget"


def test_over_the_budget_every_face_trains_on_crops_alike(tmp_path, viewer, qtbot,
                                                          monkeypatch, caplog):
    image = noisy_regions((200, 240), noise=0.05, seed=2)[0]
    small = tiles.working_set_bytes(200 * 240, 8, training=True) // 3
    for module in ("napari_kanezaki.imaging.tiles", "napari_kanezaki.workflows.stacks",
                   "napari_kanezaki.plugin.runner"):
        monkeypatch.setattr(f"{module}.default_memory_budget", lambda: small)
    caplog.set_level("INFO", logger="napari_kanezaki")
    api, cli, widget = _three_faces(tmp_path, viewer, qtbot, image)
    assert "training on random crops" in caplog.text
    np.testing.assert_array_equal(api, cli)
    np.testing.assert_array_equal(api, widget)


def test_crop_training_stops_on_a_plateau():
    from napari_kanezaki import Segmenter
    from napari_kanezaki.core.tiling import train_on_crops
    from napari_kanezaki.imaging.sources import ImageSource

    image = noisy_regions((96, 96), noise=0.0, seed=0)[0]
    config = STConfig(n_channels=8, max_iter=400, min_labels=1, plateau_iter=5,
                      plateau_tol=0.05)
    segmenter = Segmenter(config, device="cpu", precision="fp32")
    states = list(train_on_crops(segmenter, ImageSource(image), (48, 48), resample_every=50))
    assert states[-1].stop_reason == "plateau"
    assert len(states) < 400
