"""The command line on stacks, volumes and large images: stack modes, zarr, preprocessing."""

from __future__ import annotations

import argparse
import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from test_stacks import blob_volume

from napari_kanezaki import Segmenter, STConfig, load_config, segment
from napari_kanezaki.cli import main
from napari_kanezaki.cli.parser import parse_bytes
from napari_kanezaki.imaging.planes import preprocess_planes, restore_planes
from napari_kanezaki.imaging.preprocessing import preprocess
from napari_kanezaki.workflows.outputs import output_paths
from napari_kanezaki.workflows.processing import process_stack

TINY = ["--n-channels", "16", "--max-iter", "5", "--device", "cpu", "--precision", "fp32",
        "-q"]
# The shared mode spends max_iter updates over the planes, here 6 planes per update.
SHARED = ["--batch-size", "6"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A grey uint16 volume (6, 24, 24), its (Z, C, Y, X) 3-channel version, one plane."""
    root = tmp_path_factory.mktemp("stacks")
    image, truth = blob_volume((6, 24, 24), seed=0)
    tifffile.imwrite(root / "vol.tif", image[..., 0])
    tifffile.imwrite(root / "multi.tif", np.ascontiguousarray(np.moveaxis(image, -1, 1)),
                    photometric="minisblack")
    tifffile.imwrite(root / "plane.tif", image[3, ..., 0])
    return root, image, truth


@pytest.mark.parametrize("mode", ["3d", "shared", "independent"])
def test_each_stack_mode_end_to_end(files, tmp_path, mode):
    root, image, truth = files
    out = tmp_path / "out"
    extra = SHARED if mode == "shared" else []
    assert main(["segment", str(root / "vol.tif"), "--stack-mode", mode, "-o", str(out),
                 *TINY, *extra]) == 0
    labels = tifffile.imread(out / "vol_labels.tif")
    assert labels.shape == truth.shape and labels.dtype == np.int32 and labels.min() >= 1
    assert iio.imread(out / "vol_overlay.png").shape == (24, 24, 3)  # the middle plane
    record = json.loads((out / "run.json").read_text())
    assert record["stack_mode"] == mode and record["seed"] == 0
    config = load_config(out / "config.toml")
    assert config.n_channels == 16 and config.max_iter == 5
    # independent: every plane has its own model, none is written
    assert (out / "vol_model.pt").exists() == (mode != "independent")
    if mode == "3d":
        model = Segmenter.load(out / "vol_model.pt", device="cpu", precision="fp32")
        assert model.model.spatial_dims == 3


def test_zarr_output_is_lazy_equals_the_core_and_is_never_overwritten(files, tmp_path, capsys):
    root, image, _ = files
    out = tmp_path / "out"
    args = ["segment", str(root / "vol.tif"), "--stack-mode", "3d", "--zarr",
            "--tile-shape", "8", "16", "16", "--memory-budget", "1GiB", "-o", str(out), *TINY]
    assert main(args) == 0
    store = out / "vol_labels.zarr"
    assert store.is_dir() and not (out / "vol_labels.tif").exists()
    labels = zarr.open_array(str(store), mode="r")
    assert labels.shape == (6, 24, 24) and labels.dtype == np.int32
    expected = segment(image[..., 0], "st", config=STConfig(n_channels=16, max_iter=5),
                       stack_mode="3d", tile_shape=(8, 16, 16), memory_budget=2**30,
                       seed=0, device="cpu", precision="fp32")
    np.testing.assert_array_equal(labels[:], expected)
    record = json.loads((out / "run.json").read_text())
    assert record["zarr"] is True and record["memory_budget"] == 2**30
    assert record["tile_shape"] == [8, 16, 16]
    # a rerun skips the finished image; the store is left alone
    stamp = sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file())
    assert main(args) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()) == stamp
    # the function itself refuses an existing store
    outputs = output_paths(out, "vol", model=False, zarr=True)
    with pytest.raises(FileExistsError, match="vol_labels.zarr"):
        process_stack(image[..., 0], outputs, STConfig(n_channels=16, max_iter=2),
                      stack_mode="3d", device="cpu", precision="fp32")


def test_stack_mode_on_a_2d_image_and_a_stack_without_it_exit_2(files, tmp_path, capsys):
    root, _, _ = files
    assert main(["segment", str(root / "plane.tif"), "--stack-mode", "3d",
                 "-o", str(tmp_path / "a"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "plane.tif" in err and "needs a stack or volume" in err and "--stack-mode" in err
    assert main(["segment", str(root / "vol.tif"), "-o", str(tmp_path / "b"), *TINY]) == 2
    assert "choose stack_mode" in capsys.readouterr().err
    assert main(["segment", str(root / "vol.tif"), "--spacing", "2", "1", "1",
                 "-o", str(tmp_path / "c"), *TINY]) == 2
    assert "--spacing" in capsys.readouterr().err
    assert main(["segment", str(root / "vol.tif"), "--stack-mode", "3d", "--augment-clahe",
                 "-o", str(tmp_path / "d"), *TINY]) == 2
    assert "augment_clahe" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "d" / "vol_labels.tif").exists()
    with pytest.raises(SystemExit) as info:
        main(["segment", str(root / "vol.tif"), "--memory-budget", "lots", "-o",
              str(tmp_path / "e")])
    assert info.value.code == 2


def test_multichannel_uint16_stack_with_channel_axis_spacing_and_preprocessing(files, tmp_path):
    root, _, truth = files
    out = tmp_path / "out"
    assert main(["segment", str(root / "multi.tif"), "--channel-axis", "1", "--stack-mode",
                 "3d", "--spacing", "2", "1", "1", "--resize-multiple", "16", "--clahe",
                 "--median-blur", "3", "-o", str(out), *TINY]) == 0
    labels = tifffile.imread(out / "multi_labels.tif")
    assert labels.shape == truth.shape and labels.min() >= 1
    assert np.unique(labels).size >= 2
    record = json.loads((out / "run.json").read_text())
    assert record["channel_axis"] == 1 and record["spacing"] == [2.0, 1.0, 1.0]
    model = Segmenter.load(out / "multi_model.pt", device="cpu", precision="fp32")
    assert model.model.in_channels == 3 and tuple(model.spacing) == (2.0, 1.0, 1.0)
    assert model.config.resize_multiple == 16  # what a later predict must apply
    # a channel axis that does not exist is refused before any work
    assert main(["segment", str(root / "multi.tif"), "--channel-axis", "5", "--stack-mode",
                 "3d", "-o", str(tmp_path / "bad"), *TINY]) == 2


def test_a_folder_of_stacks_goes_through_the_dask_batch(files, tmp_path, capsys):
    root, image, _ = files
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "one.tif", image[:4, ..., 0], photometric="minisblack")
    tifffile.imwrite(folder / "two.tif", image[2:, ..., 1], compression="zlib",
                     photometric="minisblack")  # compressed: read, not memory-mapped
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--stack-mode", "3d", "--workers", "2",
                 "--threads", "1", "-o", str(out), *TINY]) == 0
    assert "2 segmented" in capsys.readouterr().out
    assert tifffile.imread(out / "one_labels.tif").shape == (4, 24, 24)
    assert tifffile.imread(out / "two_labels.tif").shape == (4, 24, 24)


def test_predict_refuses_stacks_with_a_pointer_to_segment(files, tmp_path, capsys):
    root, _, _ = files
    model = tmp_path / "m.pt"
    plane = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    Segmenter(STConfig(n_channels=8, max_iter=1, n_epochs=1, max_update=1), device="cpu",
              precision="fp32").fit([plane]).save(model)
    assert main(["predict", str(model), str(root / "vol.tif"), "-o", str(tmp_path / "o"),
                 "-q"]) == 2
    assert "segment --stack-mode" in capsys.readouterr().err


def test_preprocessing_of_a_stack_is_the_2d_preprocessing_of_every_plane():
    rng = np.random.default_rng(0)
    stack = rng.random((2, 3, 30, 26), dtype=np.float32)  # (C, Z, Y, X)
    config = STConfig(crop_bottom=4, resize_multiple=8, clahe=True, median_blur=3)
    out, geometry = preprocess_planes(stack, config)
    assert out.shape == (2, 3, 24, 24)
    for z in range(3):
        plane, _ = preprocess(stack[:, z], config)
        np.testing.assert_array_equal(out[:, z], plane)
    labels = np.arange(3 * 24 * 24, dtype=np.int32).reshape(3, 24, 24) % 7 + 1
    restored = restore_planes(labels, geometry)
    assert restored.shape == (3, 30, 26) and (restored[:, -4:] == 0).all()
    assert stack.shape == (2, 3, 30, 26)  # input untouched


@pytest.mark.parametrize("text, value", [("2GiB", 2 * 1024**3), ("500MB", 500 * 1000**2),
                                         ("1.5g", int(1.5 * 1024**3)), ("4096", 4096)])
def test_memory_budget_units(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["lots", "2 parsecs", "0", "-1GiB"])
def test_memory_budget_nonsense_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="memory"):
        parse_bytes(text)


def test_zarr_output_of_a_reshaping_preprocessing_is_mapped_back(files, tmp_path):
    root, _, truth = files
    args = ["segment", str(root / "vol.tif"), "--stack-mode", "3d", "--resize-multiple", "16",
            *TINY]
    assert main([*args, "--zarr", "-o", str(tmp_path / "z")]) == 0
    assert main([*args, "-o", str(tmp_path / "t")]) == 0
    labels = zarr.open_array(str(tmp_path / "z" / "vol_labels.zarr"), mode="r")
    assert labels.shape == truth.shape  # 24 -> 16 for the network, back to 24
    np.testing.assert_array_equal(labels[:], tifffile.imread(tmp_path / "t" / "vol_labels.tif"))
