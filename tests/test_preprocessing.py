"""Preprocessing (crop, resize, CLAHE, median, augmentation), its config fields and presets."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import fields

import numpy as np
import pytest

from napari_kanezaki import ConfigError, Segmenter, SPConfig, STConfig
from napari_kanezaki.core.config import PRESETS, load_preset, preset_path
from napari_kanezaki.imaging.images import ImageError, to_network_input
from napari_kanezaki.imaging.preprocessing import (
    AUGMENT_TILES,
    Geometry,
    clahe,
    make_augmenter,
    median_blur,
    multiple_shape,
    preprocess,
    random_clahe,
)

TINY = {"n_channels": 16, "max_iter": 5}


# -- presets and config fields ---------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("method", ["sp", "st"])
def test_presets_hold_every_key(name, method):
    data = tomllib.loads(preset_path(name, method).read_text(encoding="utf-8"))
    cls = SPConfig if method == "sp" else STConfig
    assert set(data) == {"method"} | {f.name for f in fields(cls)}


def test_paper_preset_is_the_dataclass_defaults_and_seed_preset_has_seed_values():
    assert load_preset("paper", "sp") == SPConfig()
    assert load_preset("paper", "st") == STConfig()
    seed_sp, seed_st = load_preset("seed", "sp"), load_preset("seed", "st")
    assert seed_sp.superpixel == "felzenszwalb"
    assert (seed_sp.scale, seed_sp.sigma, seed_sp.min_size) == (10.0, 0.8, 10)
    assert (seed_sp.n_segments, seed_sp.compactness) == (4000, 20.0)
    for cfg in (seed_sp, seed_st):
        assert (cfg.optimizer, cfg.momentum, cfg.weight_decay) == ("sgd", 0.9, 0.02)
    with pytest.raises(ConfigError, match="unknown preset 'fast'; choose one of interactive, paper, seed"):
        load_preset("fast", "st")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"median_blur": 4}, "median_blur must be 0 .off. or an odd size >= 3"),
        ({"median_blur": 1}, "median_blur must be 0"),
        ({"clahe": "yes"}, "clahe must be true or false"),
        ({"augment_clahe": 1}, "augment_clahe must be true or false"),
        ({"clahe_clip": 0}, "clahe_clip must be > 0"),
        ({"clahe_tiles": 0}, "clahe_tiles must be >= 1"),
        ({"crop_bottom": -1}, "crop_bottom must be >= 0"),
        ({"resize_multiple": 2.5}, "resize_multiple must be an integer"),
        ({"checkpoint": None}, "checkpoint must be a path"),
    ],
)
def test_bad_preprocessing_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        STConfig(**kwargs)


def test_new_fields_round_trip_through_files(tmp_path):
    cfg = SPConfig(crop_bottom=65, resize_multiple=32, clahe=True, augment_clahe=True,
                   median_blur=5, checkpoint="model.pt")
    assert type(cfg).from_file(cfg.to_file(tmp_path / "c.toml")) == cfg


# -- pure functions ------------------------------------------------------------------------------
def test_multiple_shape_rounds_down_as_the_seed_and_never_to_zero():
    assert multiple_shape((45, 50), 32) == (32, 32)  # int(w / 32) * 32
    assert multiple_shape((63, 95), 32) == (32, 64)  # nearest would be (64, 96)
    assert multiple_shape((10, 100), 32) == (32, 96)  # shorter than 32: 32, not 0
    assert multiple_shape((64, 96), 32) == (64, 96)
    assert multiple_shape((48, 49), 0) == (48, 49)


def test_clahe_maps_opencv_parameters_to_skimage():
    from skimage.exposure import equalize_adapthist

    rng = np.random.default_rng(0)
    grey = rng.random((1, 64, 48)).astype(np.float32) * 0.5 + 0.2
    expected = equalize_adapthist(grey[0], kernel_size=(8, 6), clip_limit=2 / 256, nbins=256)
    np.testing.assert_allclose(clahe(grey, clip=2.0, tiles=8)[0], expected, atol=1e-6)


def test_clahe_on_rgb_changes_lightness_only():
    rng = np.random.default_rng(1)
    grey_rgb = np.repeat(rng.random((1, 40, 40)).astype(np.float32) * 0.4, 3, axis=0)
    out = clahe(grey_rgb)
    assert out.shape == grey_rgb.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[1], atol=2e-3)  # grey stays grey: a*, b* untouched
    np.testing.assert_allclose(out[1], out[2], atol=2e-3)
    assert out.std() > grey_rgb.std()  # contrast went up


def test_median_blur_removes_isolated_outliers_and_keeps_edges():
    image = np.zeros((1, 20, 20), np.float32)
    image[:, :, 10:] = 1.0
    noisy = image.copy()
    noisy[0, 5, 3] = 1.0
    np.testing.assert_array_equal(median_blur(noisy, 5), image)


def test_random_clahe_is_reproducible_per_seed_and_varies_per_call():
    array = to_network_input(np.random.default_rng(2).integers(0, 255, (32, 32, 3), np.uint8))
    first, second = make_augmenter(STConfig(augment_clahe=True), 7), make_augmenter(
        STConfig(augment_clahe=True), 7
    )
    a1, a2 = first(array), first(array)
    np.testing.assert_array_equal(a1, second(array))
    assert not np.array_equal(a1, a2)
    assert make_augmenter(STConfig(), 7) is None
    assert AUGMENT_TILES == (3, 9)
    rng = np.random.default_rng(0)
    assert random_clahe(array, rng).shape == array.shape


def test_preprocess_geometry_restores_labels_and_maps_scribbles():
    image = np.random.default_rng(3).random((3, 45, 50)).astype(np.float32)
    before = image.copy()
    cfg = STConfig(crop_bottom=5, resize_multiple=16)
    out, geometry = preprocess(image, cfg)
    np.testing.assert_array_equal(image, before)  # input untouched
    assert out.shape == (3, 32, 48)  # (40, 50) down to multiples of 16
    assert geometry == Geometry((45, 50), 5, (32, 48)) and not geometry.identity
    labels = np.zeros((32, 48), np.int32)
    labels[:, 24:] = 7
    labels[:, :24] = 3
    restored = geometry.restore(labels)
    assert restored.shape == (45, 50)
    assert set(np.unique(restored[:40])) == {3, 7}  # nearest neighbour: ids intact
    assert (restored[40:] == 0).all()  # the cropped bar: "not segmented"
    scribbles = np.zeros((45, 50), np.int32)
    scribbles[10:20, 5:15] = 2
    mapped = geometry.apply(scribbles)
    assert mapped.shape == (32, 48) and set(np.unique(mapped)) == {0, 2}
    with pytest.raises(ImageError, match="image's spatial shape is .45, 50."):
        geometry.apply(np.zeros((10, 10), np.int32))
    unchanged, identity = preprocess(image, STConfig())
    assert unchanged is image and identity.identity


def test_crop_larger_than_image_is_a_clear_error():
    with pytest.raises(ImageError, match="lower crop_bottom"):
        preprocess(np.zeros((1, 10, 10), np.float32), STConfig(crop_bottom=9))


def test_preprocessing_module_does_not_import_torch():
    code = ("import sys, napari_kanezaki.imaging.preprocessing, napari_kanezaki.core.config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- through the Segmenter ---------------------------------------------------------------------
def test_segmenter_preprocessing_keeps_the_input_shape(rgb_image):
    cfg = STConfig(**TINY, crop_bottom=4, resize_multiple=32, clahe=True, median_blur=3,
                   augment_clahe=True)
    scribbles = np.zeros(rgb_image.shape[:2], np.int32)
    scribbles[2:8, 2:8] = 5
    scribbles[20:30, 30:40] = 6
    seg = Segmenter(cfg, device="cpu", seed=0, precision="fp32")
    states = list(seg.run(rgb_image, scribbles))
    assert states[-1].labels().shape == rgb_image.shape[:2]
    labels = seg.predict(rgb_image)
    assert labels.shape == rgb_image.shape[:2]
    assert (labels[-4:] == 0).all() and (labels[:-4] > 0).all()
    assert {5, 6} <= set(np.unique(labels))


def test_warm_start_from_checkpoint(tmp_path, rgb_image):
    cfg = STConfig(**TINY)
    first = Segmenter(cfg, device="cpu", seed=0, precision="fp32")
    list(first.run(rgb_image))
    path = first.save(tmp_path / "m.pt")
    # A tiny learning rate: training barely moves the checkpoint's weights.
    warm = Segmenter(cfg.replace(checkpoint=str(path), lr=1e-9, max_iter=1, min_labels=1),
                     device="cpu", seed=99, precision="fp32")
    list(warm.run(rgb_image))
    np.testing.assert_array_equal(warm.predict(rgb_image), first.predict(rgb_image))
    cold = Segmenter(cfg.replace(lr=1e-9, max_iter=1, min_labels=1), device="cpu", seed=99,
                     precision="fp32")
    list(cold.run(rgb_image))
    assert not np.array_equal(cold.predict(rgb_image), first.predict(rgb_image))
    with pytest.raises(ConfigError, match="do not fit this network"):
        list(Segmenter(cfg.replace(n_channels=8, checkpoint=str(path)), device="cpu").run(
            rgb_image))
    with pytest.raises(FileNotFoundError, match="checkpoint .* does not exist"):
        list(Segmenter(cfg.replace(checkpoint=str(tmp_path / "no.pt")), device="cpu").run(
            rgb_image))


def test_parameter_panel_round_trips_the_preprocessing_fields(qtbot):
    pytest.importorskip("magicgui")
    from napari_kanezaki.plugin.parameters import ParameterPanel

    panel = ParameterPanel("sp")
    from napari_kanezaki.core.config import load_preset

    assert panel.config() == load_preset("interactive", "sp")
    cfg = SPConfig(crop_bottom=65, resize_multiple=32, clahe=True, clahe_clip=3.0,
                   clahe_tiles=4, augment_clahe=True, median_blur=5, checkpoint="m.pt")
    panel.set_config(cfg)
    assert panel.config() == cfg
    for name in ("crop_bottom", "clahe", "augment_clahe", "median_blur", "checkpoint"):
        assert panel.fields[name] in list(panel.advanced)
