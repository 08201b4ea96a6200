"""The napari-kanezaki command line, end to end on small generated images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_kanezaki import Segmenter, SPConfig, STConfig, load_config
from napari_kanezaki.cli import build_parser, main
from napari_kanezaki.imaging.samples import noisy_regions

TINY = ["--n-channels", "16", "--max-iter", "5", "--device", "cpu", "--precision", "fp32",
        "-q"]


@pytest.fixture
def folder(tmp_path):
    """Two small RGB images (PNG and TIFF) with ground truth."""
    images, gts = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gts.mkdir()
    for i, name in enumerate(["a", "b"]):
        image, truth = noisy_regions((36, 40), noise=0.05, seed=i)
        if name == "a":
            iio.imwrite(images / "a.png", image)
        else:
            tifffile.imwrite(images / "b.tif", image)
        tifffile.imwrite(gts / f"{name}.tif", truth)
    return tmp_path


def test_every_subcommand_has_help_with_defaults(capsys):
    for command in ["segment", "train", "predict", "evaluate", "tune", "demo"]:
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert "default" in text
    assert build_parser().prog == "napari-kanezaki"


def test_importing_the_cli_imports_no_heavy_library():
    code = ("import sys, napari_kanezaki, napari_kanezaki.cli, napari_kanezaki.workflows.batch, "
            "napari_kanezaki.workflows.jobs, napari_kanezaki.workflows.processing, "
            "napari_kanezaki.workflows.outputs, "
            "napari_kanezaki.workflows.tuning, napari_kanezaki.workflows.evaluation; "
            "napari_kanezaki.cli.build_parser(); "
            "heavy = {'torch', 'dask', 'optuna', 'distributed'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_segment_one_image_writes_everything_and_refuses_to_overwrite(folder, capsys):
    out = folder / "out"
    image = folder / "images" / "a.png"
    assert main(["segment", str(image), "--method", "sp", "--n-segments", "50",
                 "-o", str(out), *TINY]) == 0
    labels = tifffile.imread(out / "a_labels.tif")
    assert labels.shape == (36, 40) and labels.dtype == np.int32 and labels.min() >= 1
    assert iio.imread(out / "a_overlay.png").shape == (36, 40, 3)
    config = load_config(out / "config.toml")  # the interactive preset: the plateau stop on
    assert config == SPConfig(n_channels=16, max_iter=5, n_segments=50, plateau_iter=20)
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    model = Segmenter.load(out / "a_model.pt", device="cpu", precision="fp32")
    np.testing.assert_array_equal(model.predict(iio.imread(image)), labels)
    # rerun: resumes (skips), nothing rewritten
    before = (out / "a_labels.tif").stat().st_mtime_ns
    assert main(["segment", str(image), "--method", "sp", "--n-segments", "50",
                 "-o", str(out), *TINY]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert (out / "a_labels.tif").stat().st_mtime_ns == before
    # another configuration into the same folder is refused
    assert main(["segment", str(image), "--method", "sp", "-o", str(out), *TINY]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_segment_folder_with_scribbles_and_preprocessing(folder):
    scribbles = folder / "scribbles"
    scribbles.mkdir()
    marks = np.zeros((36, 40), np.uint8)
    marks[2:6, 2:6] = 4
    marks[20:26, 25:32] = 5
    iio.imwrite(scribbles / "b_scribble.png", marks)
    out = folder / "out"
    code = main(["segment", str(folder / "images"), "--method", "st", "--scribbles",
                 str(scribbles), "--crop-bottom", "4", "--resize-multiple", "32", "--clahe",
                 "--median-blur", "3", "-o", str(out), "--workers", "1", *TINY])
    assert code == 0
    a, b = tifffile.imread(out / "a_labels.tif"), tifffile.imread(out / "b_labels.tif")
    assert a.shape == b.shape == (36, 40)
    assert (b[-4:] == 0).all() and (b[:-4] > 0).all()  # cropped bar: label 0
    assert {4, 5} <= set(np.unique(b))  # scribbled ids intact
    cfg = load_config(out / "config.toml")
    assert (cfg.crop_bottom, cfg.resize_multiple, cfg.clahe, cfg.median_blur) == (4, 32, True, 3)


def test_paper_preset_is_one_option_away(folder):
    out = folder / "paper"
    assert main(["segment", str(folder / "images" / "a.png"), "--method", "sp", "--preset",
                 "paper", "-o", str(out), *TINY]) == 0
    assert load_config(out / "config.toml") == SPConfig(n_channels=16, max_iter=5)


def test_train_then_predict_with_the_same_labels(folder):
    model = folder / "model.pt"
    images = folder / "images"
    assert main(["train", "--method", "st", str(images), "-o", str(model), "--ref-size", "32",
                 "--max-update", "3", *TINY]) == 0
    # the paper preset in reference mode is the published reference demo's: w_con = 5
    assert load_config(folder / "model.toml") == STConfig(
        n_channels=16, max_iter=5, ref_size=32, max_update=3, w_con=5.0, plateau_iter=20,
        painted_only=True)
    out = folder / "pred"
    assert main(["predict", str(model), str(images / "*.png"), "-o", str(out), "--device",
                 "cpu", "--precision", "fp32", "-q"]) == 0
    labels = tifffile.imread(out / "a_labels.tif")
    expected = Segmenter.load(model, device="cpu", precision="fp32").predict(
        iio.imread(images / "a.png"))
    np.testing.assert_array_equal(labels, expected)
    assert load_config(out / "config.toml").ref_size == 32
    # an existing model is not overwritten
    assert main(["train", "--method", "st", str(images), "-o", str(model), *TINY]) == 2


def test_predict_over_the_memory_budget_goes_tile_by_tile(folder, monkeypatch, capsys):
    import napari_kanezaki.workflows.stacks as stacks

    model = folder / "model.pt"
    images = folder / "images"
    assert main(["train", "--method", "st", str(images), "-o", str(model), "--ref-size", "32",
                 "--max-update", "3", *TINY]) == 0
    tiles = []
    real = stacks.predict_tiles

    def counting(*args, **kwargs):
        for done in real(*args, **kwargs):
            tiles.append(done)
            yield done

    monkeypatch.setattr(stacks, "predict_tiles", counting)
    expected = Segmenter.load(model, device="cpu", precision="fp32").predict(
        iio.imread(images / "a.png"))
    runtime = ["--device", "cpu", "--precision", "fp32", "--workers", "1", "-q"]
    for option, n_tiles in ((["--tile-shape", "16", "16"], 9), (["--memory-budget", "300KB"], 0)):
        out = folder / f"tiled{len(tiles)}"
        before = len(tiles)
        assert main(["predict", str(model), str(images / "a.png"), *option, "-o", str(out),
                     *runtime]) == 0
        labels = tifffile.imread(out / "a_labels.tif")
        assert (labels == expected).mean() >= 0.999  # the whole prediction's labels
        assert len(tiles) - before >= max(n_tiles, 2)  # 36 x 40 pixels: 3 x 3 tiles of 16
    # a tile shape of the wrong length is refused before anything is written
    bad = folder / "bad"
    assert main(["predict", str(model), str(images / "a.png"), "--tile-shape", "16", "-o",
                 str(bad), *runtime]) == 2
    assert not bad.exists()
    assert "--tile-shape" in capsys.readouterr().err


def test_config_file_without_method_takes_the_method_option(folder, capsys):
    config = folder / "no-method.toml"
    config.write_text("n_channels = 16\nmax_iter = 4\n", encoding="utf-8")
    image = folder / "images" / "a.png"
    assert main(["segment", str(image), "--method", "sp", "--config", str(config),
                 "-o", str(folder / "out"), "--device", "cpu", "-q"]) == 0
    assert load_config(folder / "out" / "config.toml") == SPConfig(n_channels=16, max_iter=4)
    assert main(["segment", str(image), "--config", str(config), "-o", str(folder / "o2"),
                 "-q"]) == 2
    assert "no 'method' key" in capsys.readouterr().err
    STConfig(n_channels=16).to_file(folder / "st.toml")
    assert main(["segment", str(image), "--method", "sp", "--config", str(folder / "st.toml"),
                 "-o", str(folder / "o3"), "-q"]) == 2
    assert "for method 'st', not 'sp'" in capsys.readouterr().err


def test_evaluate_prints_and_writes_known_scores(folder, capsys):
    preds = folder / "preds"
    preds.mkdir()
    truth = tifffile.imread(folder / "gt" / "a.tif")
    tifffile.imwrite(preds / "a_labels.tif", truth + 10)  # perfect, other ids
    shifted = truth.copy()
    shifted[:] = 1  # one segment: IoU of each gt segment = its area fraction
    tifffile.imwrite(preds / "b_labels.tif", shifted)
    gt_b = tifffile.imread(folder / "gt" / "b.tif")
    expected_b = np.mean([np.mean(gt_b == k) for k in np.unique(gt_b)])
    csv, js = folder / "scores.csv", folder / "scores.json"
    assert main(["evaluate", str(preds), "--gt", str(folder / "gt"), "--csv", str(csv),
                 "--json", str(js)]) == 0
    table = capsys.readouterr().out
    assert "mean" in table and "1.0000" in table
    data = json.loads(js.read_text())
    assert data["images"][0]["miou"] == 1.0 and data["images"][0]["ari"] == 1.0
    assert data["images"][1]["miou"] == pytest.approx(expected_b)
    assert data["images"][1]["ari"] == pytest.approx(0.0)
    assert data["mean"]["miou"] == pytest.approx((1 + expected_b) / 2)
    assert csv.read_text().splitlines()[0] == "image,miou,ari,n_annotations"
    assert main(["evaluate", str(preds), "--gt", str(folder / "gt"), "--csv", str(csv)]) == 2


def test_clear_errors_for_bad_inputs(folder, capsys):
    out = folder / "out"
    assert main(["segment", str(folder / "nothing.png"), "-o", str(out), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["segment", str(folder / "images"), "--lr", "-1", "-o", str(out), *TINY]) == 2
    assert "lr must be > 0" in capsys.readouterr().err
    assert main(["segment", str(folder / "images"), "--set", "speed=3", "-o", str(out),
                 *TINY]) == 2
    assert "unknown ST setting(s) speed" in capsys.readouterr().err
    assert main(["segment", str(folder / "images"), "--method", "st", "--n-segments", "5",
                 "-o", str(out), *TINY]) == 2
    assert "n_segments" in capsys.readouterr().err


@pytest.mark.parametrize("shape, dtype, channel_axis, hint", [
    ((20, 20), np.complex64, None, False),  # the values, not the layout
    ((1, 20), np.uint8, None, False),  # too small whatever the channels
    ((20, 20, 1), np.uint8, None, True),  # its last axis holds the channel
    ((20, 20), np.uint8, 0, True),  # the channel axis leaves one spatial axis
])
def test_the_channel_axis_hint_only_where_an_axis_could_hold_channels(
    shape, dtype, channel_axis, hint, tmp_path, capsys
):
    image = tmp_path / "x.tif"
    tifffile.imwrite(image, np.ones(shape, dtype))
    axis = [] if channel_axis is None else ["--channel-axis", str(channel_axis)]
    assert main(["segment", str(image), "-o", str(tmp_path / "out"), *axis, *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{image} (shape {shape})" in err
    assert ("(set with --channel-axis)" in err) == hint, err
    assert not (tmp_path / "out").exists()


def test_inputs_with_one_name_are_refused_before_anything_is_written(folder, capsys):
    images, out = folder / "images", folder / "out"
    iio.imwrite(folder / "b.png", noisy_regions((36, 40), seed=2)[0])
    assert main(["segment", str(images), str(folder / "b.png"), "-o", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{images / 'b.tif'} and {folder / 'b.png'} have the same name 'b'" in err
    assert "Rename one of them" in err
    assert main(["segment", str(images), str(images / "a.png"), "-o", str(out), *TINY]) == 2
    assert f"{images / 'a.png'} is given twice" in capsys.readouterr().err
    model = folder / "model.pt"
    assert main(["train", str(images / "a.png"), "-o", str(model), *TINY]) == 0
    assert main(["predict", str(model), str(images), str(folder / "b.png"), "-o", str(out),
                 "-q"]) == 2
    assert "have the same name 'b'" in capsys.readouterr().err
    assert not out.exists()


def test_objects_of_an_earlier_run_are_not_taken_for_images(folder, capsys):
    images = folder / "images"
    tifffile.imwrite(images / "a_objects.tif", np.ones((36, 40), np.int32))
    assert main(["segment", str(images), "-o", str(images), *TINY]) == 2
    assert "a_objects.tif looks like an output of an earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "a_objects.tif", "b.tif"]


def test_run_files_are_written_atomically(tmp_path, monkeypatch):
    """A run killed while writing run.json leaves no half-written file under its name."""
    from napari_kanezaki.cli.main import CLIError
    from napari_kanezaki.cli.records import write_run_files

    out, config = tmp_path / "out", STConfig(n_channels=16)
    real_write_text = Path.write_text

    def disk_full(path, text, *args, **kwargs):
        real_write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_run_files(out, config, {"seed": 0}, overwrite=False)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == []  # no config.toml, run.json or temp
    write_run_files(out, config, {"seed": 0}, overwrite=False)
    assert load_config(out / "config.toml") == config
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    write_run_files(out, config, {"seed": 0}, overwrite=False)  # the same run: accepted
    write_run_files(out, config, {"seed": 1}, overwrite=True)  # replaced, atomically too
    assert json.loads((out / "run.json").read_text())["seed"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "run.json"]
    (out / "run.json").write_text('{"seed": 1, "devi')  # e.g. from an older version
    with pytest.raises(CLIError, match="run.json is not a readable run record"):
        write_run_files(out, config, {"seed": 1}, overwrite=False)


def test_the_summary_names_images_claimed_by_another_run(tmp_path, capsys):
    from napari_kanezaki.cli.records import _summary
    from napari_kanezaki.workflows.jobs import JobResult

    results = [JobResult("a", "done"), JobResult("b", "skipped", "outputs exist"),
               JobResult("c", "skipped", "claimed by another run (pid 7 on n1 since ...)"),
               JobResult("d", "failed", "cannot read d.png\ndetails")]
    assert _summary(results, 0.0, tmp_path) == 1
    out, err = capsys.readouterr()
    assert out.startswith("1 segmented, 1 skipped (outputs exist), 1 skipped (claimed by "
                          "another run), 1 failed in ")
    assert "  SKIPPED c: claimed by another run (pid 7 on n1 since ...)" in out
    assert "SKIPPED b" not in out and err == "  FAILED d: cannot read d.png\n"
    assert _summary(results[:2], 0.0, tmp_path) == 0
    assert capsys.readouterr().out.startswith("1 segmented, 1 skipped (outputs exist), 0 failed")


def test_config_file_and_seed_preset(folder):
    cfg_path = SPConfig(n_channels=16, max_iter=5, n_segments=40).to_file(folder / "my.toml")
    out = folder / "out"
    assert main(["segment", str(folder / "images" / "a.png"), "--config", str(cfg_path),
                 "--no-model", "-o", str(out), *TINY[4:]]) == 0
    assert load_config(out / "config.toml") == load_config(cfg_path)
    assert not (out / "a_model.pt").exists()
    out2 = folder / "out2"
    # the seed's 65-row crop is for its SEM images: this 36-row image turns it off
    assert main(["segment", str(folder / "images" / "a.png"), "--method", "sp", "--preset",
                 "seed", "--crop-bottom", "0", "-o", str(out2), *TINY]) == 0
    seed = load_config(out2 / "config.toml")
    assert (seed.superpixel, seed.weight_decay, seed.n_conv) == ("felzenszwalb", 0.02, 5)


def test_demo_writes_the_readme_files(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--max-iter", "3", "--size", "48", "--device", "cpu",
            "-q"]
    assert main(args) == 0
    for name in ("labels.tif", "overlay.png", "config.toml", "model.pt"):
        assert (out / name).is_file()
    assert load_config(out / "config.toml") == SPConfig(max_iter=3, plateau_iter=20,
                                                        n_segments=0, n_channels=48)
    assert main(args) == 2  # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_example_script_calls_the_cli_demo(tmp_path):
    script = Path(__file__).resolve().parents[1] / "examples" / "segment_sample.py"
    text = script.read_text()
    assert "main([\"demo\"" in text
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, check=True)
    assert "--max-iter" in result.stdout


def test_readme_commands_match_the_project():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    demo, tests = blocks
    assert demo.endswith("napari-kanezaki demo --output demo-output")
    assert "-c constraints.txt" in demo
    assert tests == "bash scripts/run_tests.sh"
    assert "bash scripts/run_tests.sh" in (root / ".ci" / "run").read_text(encoding="utf-8")
    assert "torch==2.13.0" in (root / "constraints.txt").read_text(encoding="utf-8")
    assert "QUALITY_" not in readme and "SPEED_TABLE" not in readme  # no placeholders left
