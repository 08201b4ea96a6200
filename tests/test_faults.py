"""Fault catalogue: a user's mistake gives a clear error naming the problem and the fix.

Each case states the exception type and the words of its message; through the command line
the same fault exits with status 2 and no traceback.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_kanezaki import ConfigError, Segmenter, STConfig
from napari_kanezaki.cli import main
from napari_kanezaki.imaging.samples import noisy_regions

FAST = {"device": "cpu", "precision": "fp32"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    image = noisy_regions((24, 24), seed=0)[0]
    segmenter = Segmenter(STConfig(n_channels=8, max_iter=2), **FAST)
    for _ in segmenter.run(image):
        pass
    return segmenter.save(tmp_path_factory.mktemp("model") / "model.pt")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def _edited(model_file: Path, tmp_path: Path, edit) -> Path:
    payload = torch.load(model_file, weights_only=True)
    edit(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


def _bad_weights(payload):
    payload["config"]["n_channels"] = 12


MODEL_FAULTS = {
    "missing file": (lambda mf, tmp: tmp / "nope.pt", FileNotFoundError, "does not exist"),
    "a folder": (lambda mf, tmp: tmp, ValueError, "is a folder; give the model file"),
    "corrupt bytes": (lambda mf, tmp: _write(tmp / "c.pt", b"\x00garbage" * 10), ValueError,
                      "not a readable model file"),
    "truncated": (lambda mf, tmp: _write(tmp / "t.pt", mf.read_bytes()[:200]), ValueError,
                  "not a readable model file"),
    "pickle that runs code": (lambda mf, tmp: _torch(tmp / "p.pt", {"x": _RunsCode()}),
                              ValueError, "could run code"),
    "plain pickle": (lambda mf, tmp: _write(tmp / "q.pt", pickle.dumps({"a": 1}, protocol=4)),
                     ValueError, "not a readable model file"),
    "bare state dict": (lambda mf, tmp: _torch(tmp / "s.pt", {"w": torch.zeros(2)}),
                        ValueError, "not written by Segmenter.save"),
    "missing entry": (lambda mf, tmp: _edited(mf, tmp, lambda p: p.pop("keep_ids")),
                      ValueError, "has no 'keep_ids' entry"),
    "mistyped entry": (lambda mf, tmp: _edited(mf, tmp, lambda p: p.update(seed="0")),
                       ValueError, "entry 'seed' is a str"),
    "config without method": (lambda mf, tmp: _edited(mf, tmp, lambda p: p["config"].pop(
        "method")), ConfigError, "invalid configuration"),
    "config not matching weights": (lambda mf, tmp: _edited(mf, tmp, _bad_weights),
                                    ConfigError, "do not fit this network"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _torch(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case", sorted(MODEL_FAULTS))
def test_model_file_faults_are_explained(case, model_file, tmp_path, capsys):
    make, error, words = MODEL_FAULTS[case]
    path = make(model_file, tmp_path)
    with pytest.raises(error, match=words):
        Segmenter.load(path, device="cpu")
    assert "this must never run" not in capsys.readouterr().out
    image = tmp_path / "img.npy"
    # the CLI: exit status 2, the same words, no traceback, nothing written
    import imageio.v3 as iio

    png = tmp_path / "img.png"
    iio.imwrite(png, noisy_regions((24, 24), seed=1)[0])
    out = tmp_path / "out"
    assert main(["predict", str(path), str(png), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err
    assert "weights_only" not in err and "file an issue" not in err
    assert not out.exists() and not image.exists()


def test_warm_start_checkpoint_faults_are_explained(model_file, tmp_path):
    image = noisy_regions((24, 24), seed=0)[0]
    with pytest.raises(ValueError, match="is a folder"):
        list(Segmenter(STConfig(n_channels=8, max_iter=1, checkpoint=str(tmp_path)),
                       **FAST).run(image))
    with pytest.raises(ConfigError, match="do not fit this network"):
        list(Segmenter(STConfig(n_channels=12, max_iter=1, checkpoint=str(model_file)),
                       **FAST).run(image))
    np.testing.assert_array_equal(image, noisy_regions((24, 24), seed=0)[0])


# -- numeric range of images and scribbles (one place: imaging.images) ------------------------
def test_float64_beyond_float32_range_is_normalised_like_the_same_image_scaled_down():
    from napari_kanezaki.imaging.images import to_network_input
    from napari_kanezaki.imaging.sources import ImageSource

    rng = np.random.default_rng(0)
    base = rng.random((20, 24)) * 10 - 5
    huge = base * 1e300  # finite float64, far beyond float32's 3.4e38
    before = huge.copy()
    for convert in (to_network_input, lambda a: ImageSource(a).read()[0]):
        np.testing.assert_allclose(np.squeeze(convert(huge)), np.squeeze(convert(base)),
                                   atol=1e-6)
    np.testing.assert_array_equal(huge, before)


def test_large_integer_offsets_keep_their_precision():
    from napari_kanezaki.imaging.images import to_network_input

    ramp = np.arange(400, dtype=np.int64).reshape(20, 20)
    np.testing.assert_allclose(to_network_input(ramp + 10**12), to_network_input(ramp),
                               atol=1e-6)


@pytest.mark.parametrize("bad, words", [
    (np.full((8, 8), np.nan), "NaN or infinite"),
    (np.full((8, 8), np.inf, np.float32), "NaN or infinite"),
    (np.ones((8, 8), np.complex64), "image is complex"),
    (np.array([["a"] * 8] * 8), "numeric array"),
])
def test_bad_image_values_are_named(bad, words):
    from napari_kanezaki import ImageError, ImageSource, segment

    with pytest.raises(ImageError, match=words):
        segment(bad, max_iter=1, **FAST)
    with pytest.raises(ImageError, match=words):
        ImageSource(bad).read()


def test_huge_unsigned_scribble_id_is_reported_exactly():
    from napari_kanezaki import ImageError
    from napari_kanezaki.imaging.images import prepare_scribbles

    scribbles = np.zeros((8, 8), np.uint64)
    scribbles[0, 0] = 2**63 + 5
    with pytest.raises(ImageError, match=f"scribble id {2**63 + 5} is not smaller"):
        prepare_scribbles(scribbles, (8, 8), 100)
    floats = np.zeros((8, 8))
    floats[1, 1] = 1e30
    with pytest.raises(ImageError, match="is not smaller than n_channels=100"):
        prepare_scribbles(floats, (8, 8), 100)


# -- files and pairing ------------------------------------------------------------------------
def test_evaluate_never_pairs_unrelated_names(tmp_path, capsys):
    import tifffile

    labels = np.ones((10, 10), np.int32)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    tifffile.imwrite(tmp_path / "pred" / "a_labels.tif", labels)
    tifffile.imwrite(tmp_path / "gt" / "b.tif", labels)  # one unrelated ground truth
    assert main(["evaluate", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err
    assert "no ground truth with the same name for a_labels.tif" in err
    assert "Traceback" not in err


def test_non_image_files_in_an_input_folder_are_not_images(tmp_path, capsys):
    import imageio.v3 as iio

    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "a.png", noisy_regions((24, 24), seed=0)[0])
    (folder / "notes.txt").write_text("not an image")
    (folder / "truth.mat").write_bytes(b"MATLAB 5.0")
    out = tmp_path / "out"
    assert main(["segment", str(folder), "-o", str(out), "--n-channels", "8", "--max-iter",
                 "2", "--device", "cpu", "-q"]) == 0
    assert "1 segmented, 0 skipped (outputs exist), 0 failed" in capsys.readouterr().out


# -- outputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [["--workers", "0"], ["--threads", "0"], ["--device", "cuda"],
                                 ["--device", "tpu"]])
def test_bad_run_options_write_nothing_and_the_corrected_rerun_works(bad, tmp_path, capsys):
    import imageio.v3 as iio

    if bad == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the option is valid here")
    folder = tmp_path / "in"
    folder.mkdir()
    for s in range(2):
        iio.imwrite(folder / f"i{s}.png", noisy_regions((20, 20), seed=s)[0])
    out = tmp_path / "out"
    common = ["segment", str(folder), "-o", str(out), "--n-channels", "8", "--max-iter", "2",
              "-q"]
    assert main([*common, *bad]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (out / "config.toml").exists() and not (out / "run.json").exists()
    assert main([*common, "--device", "cpu"]) == 0


def test_a_failing_run_leaves_no_store_at_out_and_the_rerun_works(tmp_path, monkeypatch):
    from napari_kanezaki import segment

    image = noisy_regions((24, 24), seed=0)[0]
    out = tmp_path / "labels.zarr"

    def fail(*_args, **_kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(Segmenter, "predict", fail)
        with pytest.raises(RuntimeError, match="disk full"):
            segment(image, out=out, n_channels=8, max_iter=2, **FAST)
    assert not out.exists()
    labels = segment(image, out=out, n_channels=8, max_iter=2, **FAST)
    assert labels.shape == (24, 24) and out.exists()


@pytest.mark.parametrize("kind", ["a file", "inside a file"])
def test_an_output_path_that_cannot_be_a_folder_is_explained(kind, tmp_path, capsys):
    import imageio.v3 as iio

    image = tmp_path / "a.png"
    iio.imwrite(image, noisy_regions((20, 20), seed=0)[0])
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if kind == "a file" else blocker / "out"
    assert main(["segment", str(image), "-o", str(out), "--n-channels", "8", "--max-iter",
                 "2", "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err and "taken" in err
    assert "[Errno" not in err and "choose another path" in err
    assert blocker.read_text() == "a file"  # nothing of the user's is touched
