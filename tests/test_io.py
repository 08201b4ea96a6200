"""Result files: lossless label TIFFs, overlays, no silent overwrites; the sample script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_kanezaki import Segmenter, load_config
from napari_kanezaki.imaging.io import overlay, read_image, save_labels, save_overlay

ROOT = Path(__file__).resolve().parents[1]


def test_labels_round_trip_losslessly(tmp_path):
    labels = np.arange(5 * 300, dtype=np.int32).reshape(5, 300)
    path = save_labels(tmp_path / "labels.tif", labels)
    back = read_image(path)
    assert back.dtype == labels.dtype
    np.testing.assert_array_equal(back, labels)


def test_outputs_are_never_overwritten_silently(tmp_path):
    labels = np.ones((4, 4), np.int32)
    path = tmp_path / "labels.tif"
    save_labels(path, labels)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_labels(path, labels * 2)
    np.testing.assert_array_equal(read_image(path), labels)
    save_labels(path, labels * 2, overwrite=True)
    assert read_image(path).max() == 2
    with pytest.raises(ValueError, match="TIFF"):
        save_labels(tmp_path / "labels.png", labels)


def test_overlay_is_rgb_and_written_as_png(tmp_path, rgb_image):
    labels = np.ones(rgb_image.shape[:2], np.int32)
    labels[:, 20:] = 2
    picture = overlay(rgb_image, labels)
    assert picture.shape == (*rgb_image.shape[:2], 3) and picture.dtype == np.uint8
    assert (picture[:, 20] == 255).all() or (picture[:, 19] == 255).all()  # boundary drawn
    grey = overlay(rgb_image[..., 0].astype(np.uint16), labels)
    assert grey.shape == picture.shape
    path = save_overlay(tmp_path / "o.png", rgb_image, labels)
    np.testing.assert_array_equal(read_image(path), picture)


def test_reading_errors_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "broken.png")


def test_sample_script_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "examples/segment_sample.py"), "-o", str(out),
           "--max-iter", "3", "--device", "cpu"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    labels = read_image(out / "labels.tif")
    assert labels.shape == (256, 256) and labels.min() == 1
    assert read_image(out / "overlay.png").shape == (256, 256, 3)
    assert load_config(out / "config.toml").max_iter == 3
    model = Segmenter.load(out / "model.pt", device="cpu")
    from napari_kanezaki.imaging.samples import immunohistochemistry

    np.testing.assert_array_equal(model.predict(immunohistochemistry(256)), labels)
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode != 0 and "already exist" in rerun.stderr
