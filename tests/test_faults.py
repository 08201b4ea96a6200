"""Fault catalogue: a user's mistake gives a clear error naming the problem and the fix.

Each case states the exception type and the words of its message; through the command line
the same fault exits with status 2 and no traceback.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_kanezaki import ConfigError, ImageError, Segmenter, STConfig
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


# =============================================================================================
# The catalogue: one table of faults over the API and the command line
# =============================================================================================
# Every case sets up a fresh folder (`World`), may spoil something in it (`prepare`), then
# runs the command line (`argv`, with {placeholders} of `World.paths`) or the API (`api`).
# It states the expected outcome: an exception type and the words of its message (API), or
# an exit status and the words on stderr/stdout (CLI; 0 with the result checked by `check`).
# Common checks for every case: the inputs (files and arrays) are unchanged, no temporary
# file or claim is left, a refused run (API error, exit 2) writes nothing at all, a CLI run
# prints no traceback, exit 2 says "error:", exit 1 names every failed image in a summary.
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

RUN = ("--n-channels", "4", "--max-iter", "2", "--device", "cpu", "--precision", "fp32", "-q")


class World:
    """A fresh folder for one case: two images, scribbles, a stack, a model and arrays."""

    def __init__(self, root: Path, model: Path) -> None:
        import imageio.v3 as iio
        import tifffile

        self.root = root
        inputs = root / "in"
        inputs.mkdir()
        self.image = noisy_regions((20, 20), seed=0)[0]
        iio.imwrite(inputs / "a.png", self.image)
        iio.imwrite(inputs / "b.png", noisy_regions((20, 20), seed=1)[0])
        self.scribbles = np.zeros((20, 20), np.uint8)
        self.scribbles[2:5, 2:5], self.scribbles[12:15, 12:15] = 1, 2
        iio.imwrite(root / "scribbles.png", self.scribbles)
        self.stack = np.stack([self.image] * 3)
        tifffile.imwrite(root / "stack.tif", self.stack)
        (root / "empty").mkdir()
        self.paths = {
            "in": str(inputs), "img": str(inputs / "a.png"), "img_b": str(inputs / "b.png"),
            "out": str(root / "out"), "scrib": str(root / "scribbles.png"),
            "stack": str(root / "stack.tif"), "model": str(model), "empty": str(root / "empty"),
            "root": str(root),
        }
        self.arrays = [self.image, self.scribbles, self.stack]

    def path(self, key: str) -> Path:
        return Path(self.paths[key])


@dataclass(frozen=True)
class Fault:
    """One case of the catalogue (see the comment above)."""

    name: str
    argv: tuple[str, ...] = ()
    api: Callable[[World], object] | None = None
    prepare: Callable[[World], None] | None = None
    error: type[BaseException] | None = None
    exit: int = 2
    words: str = ""
    check: Callable[[World], None] | None = None
    marks: tuple = field(default_factory=tuple)


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _put(key: str, data: bytes) -> Callable[[World], None]:
    return lambda w: w.path("root").joinpath(key).write_bytes(data)


def _tif(key: str, array: np.ndarray) -> Callable[[World], None]:
    import tifffile

    return lambda w: tifffile.imwrite(w.path("root") / key, array)


def _png(key: str, array: np.ndarray) -> Callable[[World], None]:
    import imageio.v3 as iio

    return lambda w: iio.imwrite(w.path("root") / key, array)


def _segment(**kwargs) -> Callable[[World], object]:
    from napari_kanezaki import segment

    def call(w: World):
        options = {"n_channels": 4, "max_iter": 2, **FAST, **kwargs}
        image = options.pop("image", w.image)
        if callable(image):
            image = image(w)
        if callable(options.get("scribbles")):
            options["scribbles"] = options["scribbles"](w)
        if callable(options.get("out")):
            options["out"] = options["out"](w)
        return segment(image, **options)

    return call


def _outputs(*names: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        for name in names:
            assert (w.path("out") / name).exists(), name

    return check


def _nan_image() -> np.ndarray:
    image = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    image[3, 3] = np.nan
    return image


def _scribbles(value, dtype=np.int64, shape=(20, 20)) -> Callable[[World], np.ndarray]:
    def make(_w: World) -> np.ndarray:
        scribbles = np.zeros(shape, dtype)
        scribbles[1, 1] = value
        return scribbles

    return make


def _job(w: World, **job_kwargs):
    from napari_kanezaki.workflows.jobs import Job

    options = {"config": {"method": "st", "n_channels": 4, "max_iter": 2}, "device": "cpu",
               "precision": "fp32", "torch_threads": 1, "outdir": w.path("out"), **job_kwargs}
    return Job(name="a", image=w.path("img"), **options)


def _jobs_twice(w: World):
    from napari_kanezaki.workflows.batch import run_jobs

    return run_jobs([_job(w), _job(w)], progress=False)


def _foreign_claim(w: World) -> None:
    """A claim on image a by a run on another host (so never stale here)."""
    w.path("out").mkdir()
    w.path("out").joinpath(".a.claim").write_text(json.dumps(
        {"pid": 1, "host": "node-17.cluster", "start": None, "time": 0, "token": "t"}))


def _fmt(argv: tuple[str, ...], w: World) -> list[str]:
    return [arg.format(**w.paths) for arg in argv]


def _jobs_call(**job_kwargs) -> Callable[[World], object]:
    """Run one job with `run_jobs`; a failed job raises RuntimeError with its message."""

    def call(w: World):
        from napari_kanezaki.workflows.batch import run_jobs

        results = run_jobs([_job(w, **job_kwargs)], scheduler="sync", progress=False)
        if results[0].status == "failed":
            raise RuntimeError(results[0].message)
        return results

    return call


SEG = ("segment", "{img}", "-o", "{out}")
CATALOGUE: list[Fault] = [
    # -- inputs of the command line -----------------------------------------------------------
    Fault("cli: no input", ("segment", "-o", "{out}"), words="arguments are required: INPUT"),
    Fault("cli: missing image file", ("segment", "{root}/nope.png", "-o", "{out}", *RUN),
          words="nope.png"),
    Fault("cli: empty folder", ("segment", "{empty}", "-o", "{out}", *RUN),
          words="has no image files"),
    Fault("cli: folder of non-images", ("segment", "{empty}", "-o", "{out}", *RUN),
          prepare=_put("empty/notes.txt", b"notes"), words="has no image files"),
    Fault("cli: glob matching nothing", ("segment", "{root}/*.jpg", "-o", "{out}", *RUN),
          words=r"\*\.jpg"),
    Fault("cli: a text file given as image", ("segment", "{root}/notes.txt", "-o", "{out}", *RUN),
          prepare=_put("notes.txt", b"notes"), exit=1, words="FAILED notes"),
    Fault("cli: unknown option", (*SEG, "--bogus", *RUN), words="unrecognized arguments"),
    Fault("cli: unknown method", (*SEG, "--method", "xx", *RUN), words="invalid choice"),
    Fault("cli: n_channels 0", (*SEG, *RUN, "--n-channels", "0"), words="n_channels"),
    Fault("cli: n_channels negative", (*SEG, *RUN, "--n-channels", "-3"), words="n_channels"),
    Fault("cli: n_channels not a number", (*SEG, *RUN, "--n-channels", "many"),
          words="invalid int value"),
    Fault("cli: max_iter 0", (*SEG, *RUN, "--max-iter", "0"), words="max_iter"),
    Fault("cli: negative learning rate", (*SEG, *RUN, "--lr", "-1"), words="lr"),
    Fault("cli: unknown device", (*SEG, *RUN, "--device", "tpu"), words="tpu"),
    Fault("cli: absent GPU", (*SEG, *RUN, "--device", "cuda:99"), words="cuda"),
    Fault("cli: unknown precision", (*SEG, *RUN, "--precision", "fp8"), words="fp8"),
    Fault("cli: zero workers", (*SEG, *RUN, "--workers", "0"), words="--workers must be"),
    Fault("cli: zero threads", (*SEG, *RUN, "--threads", "0"), words="--threads must be"),
    Fault("cli: channel axis out of range", (*SEG, *RUN, "--channel-axis", "5"),
          words="channel_axis"),
    # -- config files ----------------------------------------------------------------------
    Fault("cli: missing config file", (*SEG, *RUN, "--config", "{root}/nope.toml"),
          words="nope.toml"),
    Fault("cli: config is a folder", (*SEG, *RUN, "--config", "{empty}"),
          words="is a folder"),
    Fault("cli: config not TOML", (*SEG, *RUN, "--config", "{root}/bad.toml"),
          prepare=_put("bad.toml", b"method = st\n[[["), words="bad.toml"),
    Fault("cli: config with an unknown key", (*SEG, *RUN, "--config", "{root}/k.toml"),
          prepare=_put("k.toml", b'method = "st"\nlearning_speed = 2\n'),
          words="learning_speed"),
    Fault("cli: config value out of range", (*SEG, *RUN, "--config", "{root}/r.toml"),
          prepare=_put("r.toml", b'method = "st"\nlr = -0.5\n'), words="lr"),
    Fault("cli: config value of the wrong type", (*SEG, *RUN, "--config", "{root}/t.toml"),
          prepare=_put("t.toml", b'method = "st"\nmax_iter = "many"\n'), words="max_iter"),
    Fault("cli: config without method, --method given",
          (*SEG, *RUN, "--method", "st", "--config", "{root}/m.toml"),
          prepare=_put("m.toml", b"lr = 0.05\n"), exit=0,
          check=_outputs("a_labels.tif")),
    Fault("cli: binary file as config", (*SEG, *RUN, "--config", "{img}"), words="a.png"),
    # -- scribbles ---------------------------------------------------------------------------
    Fault("cli: scribbles with SP", (*SEG, *RUN, "--method", "sp", "--scribbles", "{scrib}"),
          words="--scribbles needs the ST method"),
    Fault("cli: missing scribble file", (*SEG, *RUN, "--scribbles", "{root}/nope.png"),
          words="nope.png"),
    Fault("cli: scribbles of another shape", (*SEG, *RUN, "--scribbles", "{root}/s.png"),
          prepare=_png("s.png", np.ones((10, 10), np.uint8)), exit=1, words="shape"),
    Fault("cli: scribble id not below n_channels", (*SEG, *RUN, "--scribbles", "{root}/s.png"),
          prepare=_png("s.png", np.full((20, 20), 9, np.uint8)), exit=1,
          words="not smaller than n_channels"),
    Fault("cli: scribbles fitting", (*SEG, *RUN, "--scribbles", "{scrib}"), exit=0,
          check=_outputs("a_labels.tif", "a_model.pt")),
    # -- image files ---------------------------------------------------------------------------
    Fault("cli: corrupt image among good ones", ("segment", "{in}", "-o", "{out}", *RUN),
          prepare=_put("in/c.png", b"\x89PNG not really"), exit=1, words="FAILED c",
          check=_outputs("a_labels.tif", "b_labels.tif")),
    Fault("cli: every image corrupt", ("segment", "{root}/bad", "-o", "{out}", *RUN),
          prepare=lambda w: (w.path("root").joinpath("bad").mkdir(),
                             w.path("root").joinpath("bad", "x.png").write_bytes(b"no")),
          exit=1, words="FAILED x"),
    Fault("cli: empty image file", ("segment", "{root}/z.tif", "-o", "{out}", *RUN),
          prepare=_put("z.tif", b""), exit=1, words="cannot read .*z.tif"),
    Fault("cli: NaN in a float image", ("segment", "{root}/n.tif", "-o", "{out}", *RUN),
          prepare=_tif("n.tif", _nan_image()), exit=1, words="NaN or infinite"),
    Fault("cli: complex image", ("segment", "{root}/c.tif", "-o", "{out}", *RUN),
          prepare=_tif("c.tif", np.ones((20, 20), np.complex64)),
          words=r"complex.*image\.real\.$"),
    Fault("cli: one-pixel-wide image", ("segment", "{root}/w.tif", "-o", "{out}", *RUN),
          prepare=_tif("w.tif", np.ones((1, 20), np.uint8)), words=r"too small to segment"),
    Fault("cli: stack without --stack-mode", ("segment", "{stack}", "-o", "{out}", *RUN),
          words="stack-mode"),
    Fault("cli: --stack-mode for a 2-D image", (*SEG, *RUN, "--stack-mode", "3d"),
          words="2-D"),
    Fault("cli: unknown stack mode", ("segment", "{stack}", "-o", "{out}", *RUN,
                                      "--stack-mode", "4d"), words="invalid choice"),
    Fault("cli: spacing of the wrong length", ("segment", "{stack}", "-o", "{out}", *RUN,
                                               "--stack-mode", "3d", "--spacing", "1", "2"),
          words=r"spacing .* must have one entry per spatial axis .*\(set with --spacing\)"),
    Fault("cli: stack in 3d mode", ("segment", "{stack}", "-o", "{out}", *RUN,
                                    "--stack-mode", "3d"), exit=0,
          check=_outputs("stack_labels.tif")),
    Fault("cli: tiles too small", (*SEG, *RUN, "--tile-shape", "4", "4"),
          words=r"tile_shape .* too small.*\(set with --tile-shape\)"),
    Fault("cli: memory budget zero", (*SEG, *RUN, "--memory-budget", "0"),
          words="memory budget must be positive"),
    Fault("cli: memory budget not a size", (*SEG, *RUN, "--memory-budget", "lots"),
          words="lots"),
    Fault("cli: two inputs with one name", ("segment", "{img}", "{root}/a.tif", "-o", "{out}",
                                            *RUN),
          prepare=_tif("a.tif", np.ones((20, 20), np.uint8)),
          words=r"a\.png and .*a\.tif have the same name 'a'.*Rename one of them"),
    Fault("cli: objects with zarr", (*SEG, *RUN, "--objects", "--zarr"), words="--objects"),
    Fault("cli: background without objects", (*SEG, *RUN, "--background", "1"),
          words="need --objects"),
    Fault("cli: min object size 0", (*SEG, *RUN, "--objects", "--min-object-size", "0"),
          words="positive"),
    # -- output folders ------------------------------------------------------------------------
    Fault("cli: output is a file", ("segment", "{img}", "-o", "{root}/taken", *RUN),
          prepare=_put("taken", b"mine"), words="taken"),
    Fault("cli: output inside a file", ("segment", "{img}", "-o", "{root}/taken/out", *RUN),
          prepare=_put("taken", b"mine"), words="taken"),
    Fault("cli: folder of another configuration", (*SEG, *RUN),
          prepare=lambda w: (w.path("out").mkdir(), w.path("out").joinpath("config.toml")
                             .write_bytes(b'method = "st"\nn_channels = 7\n')),
          words="different configuration"),
    Fault("cli: folder of another seed", (*SEG, *RUN, "--seed", "5"),
          prepare=lambda w: main([*_fmt(SEG, w), *RUN]), words="seed"),
    Fault("cli: rerun resumes", (*SEG, *RUN), prepare=lambda w: main([*_fmt(SEG, w), *RUN]),
          exit=0, words="0 segmented, 1 skipped"),
    Fault("cli: existing outputs replaced with --overwrite", (*SEG, *RUN, "--overwrite"),
          prepare=lambda w: main([*_fmt(SEG, w), *RUN]), exit=0, words="1 segmented"),
    Fault("cli: image being segmented by another run", (*SEG, *RUN), prepare=_foreign_claim,
          exit=0, words=r"SKIPPED a: claimed by another run \(pid 1 on node-17\.cluster"),
    Fault("cli: folder with an image claimed by another run", ("segment", "{in}", "-o",
                                                              "{out}", *RUN),
          prepare=_foreign_claim, exit=0, words="skipped: a: claimed by another run",
          check=_outputs("b_labels.tif")),
    Fault("cli: labels as a zarr store", (*SEG, *RUN, "--zarr"), exit=0,
          check=_outputs("a_labels.zarr", "a_overlay.png")),
    Fault("cli: objects beside the labels", (*SEG, *RUN, "--objects"), exit=0,
          check=_outputs("a_objects.tif", "a_labels.tif")),
    Fault("cli: rerun into the input folder", ("segment", "{in}", "-o", "{in}", *RUN),
          prepare=lambda w: main(["segment", w.paths["img"], "-o", w.paths["in"], *RUN]),
          words="looks like an output of an earlier run"),
    # -- predict and evaluate ------------------------------------------------------------------
    Fault("cli: predict with a missing model", ("predict", "{root}/m.pt", "{img}", "-o",
                                                "{out}", "-q"), words="does not exist"),
    Fault("cli: predict with an image as model", ("predict", "{img}", "{img}", "-o", "{out}",
                                                  "-q"), words="not a readable model file"),
    Fault("cli: predict a stack", ("predict", "{model}", "{stack}", "-o", "{out}", "-q"),
          words="2-D"),
    Fault("cli: predict a grey image with an RGB model",
          ("predict", "{model}", "{root}/grey.png", "-o", "{out}", "-q"),
          prepare=_png("grey.png", np.zeros((20, 20), np.uint8)), exit=1, words="channel"),
    Fault("cli: evaluate a missing folder", ("evaluate", "{root}/nope", "--gt", "{in}"),
          words="nope"),
    Fault("cli: evaluate against an empty ground truth", ("evaluate", "{in}", "--gt",
                                                          "{empty}"),
          words="no ground-truth files"),
    Fault("cli: evaluate labels of another shape", ("evaluate", "{root}/p", "--gt", "{root}/g"),
          prepare=lambda w: ((w.path("root") / "p").mkdir(), (w.path("root") / "g").mkdir(),
                             _tif("p/a_labels.tif", np.ones((20, 20), np.int32))(w),
                             _tif("g/a.tif", np.ones((10, 10), np.int32))(w)),
          words="shape"),
    # -- the API -------------------------------------------------------------------------------
    Fault("api: None as image", api=_segment(image=None), error=ImageError, words="numeric"),
    Fault("api: 1-D image", api=_segment(image=np.zeros(10)), error=ImageError,
          words="at least 2"),
    Fault("api: empty image", api=_segment(image=np.zeros((0, 5))), error=ImageError,
          words="too small"),
    Fault("api: string image", api=_segment(image=np.array([["a"] * 4] * 4)), error=ImageError,
          words="numeric array"),
    Fault("api: NaN image", api=_segment(image=lambda w: _nan_image()), error=ImageError,
          words="NaN or infinite"),
    Fault("api: infinite image", api=_segment(image=np.full((8, 8), -np.inf)),
          error=ImageError, words="NaN or infinite"),
    Fault("api: complex image", api=_segment(image=np.ones((8, 8), np.complex128)),
          error=ImageError, words="complex"),
    Fault("api: unknown method", api=_segment(method="kmeans"), error=ConfigError,
          words="kmeans"),
    Fault("api: n_channels 0", api=_segment(n_channels=0), error=ConfigError,
          words="n_channels"),
    Fault("api: unknown setting", api=_segment(learning_speed=2), error=ConfigError,
          words="learning_speed"),
    Fault("api: setting of the wrong type", api=_segment(max_iter="ten"), error=ConfigError,
          words="max_iter"),
    Fault("api: scribbles of another shape", api=_segment(scribbles=_scribbles(1, shape=(5, 5))),
          error=ImageError, words="shape"),
    Fault("api: negative scribbles", api=_segment(scribbles=_scribbles(-1)), error=ImageError,
          words="negative"),
    Fault("api: fractional scribbles", api=_segment(scribbles=_scribbles(1.5, np.float64)),
          error=ImageError, words="integer"),
    Fault("api: scribble id too large", api=_segment(scribbles=_scribbles(2**63 + 5, np.uint64)),
          error=ImageError, words=str(2**63 + 5)),
    Fault("api: scribbles with SP", api=_segment(method="sp", scribbles=lambda w: w.scribbles),
          error=ConfigError, words="ST method only"),
    Fault("api: channel axis out of range", api=_segment(channel_axis=4), error=ImageError,
          words="channel_axis"),
    Fault("api: stack mode for a 2-D image", api=_segment(stack_mode="3d"), error=ImageError,
          words="needs a stack"),
    Fault("api: stack without stack mode", api=_segment(image=lambda w: w.stack),
          error=ImageError, words="choose stack_mode"),
    Fault("api: unknown stack mode", api=_segment(image=lambda w: w.stack, stack_mode="4d"),
          error=ImageError, words="unknown stack_mode"),
    Fault("api: negative memory budget", api=_segment(memory_budget=-1), error=ImageError,
          words="memory_budget"),
    Fault("api: memory budget as text", api=_segment(memory_budget="1GB"), error=ImageError,
          words="positive number of bytes"),
    Fault("api: tiles too small", api=_segment(tile_shape=(4, 4)), error=ImageError,
          words="tile_shape"),
    Fault("api: tile shape of the wrong length", api=_segment(tile_shape=(8, 8, 8)),
          error=ImageError, words="entries"),
    Fault("api: unknown device", api=_segment(device="tpu"), error=ValueError, words="tpu"),
    Fault("api: out= an existing file", api=_segment(out=lambda w: w.path("img")),
          error=FileExistsError, words="already exists"),
    Fault("api: model file that is an image", api=lambda w: Segmenter.load(w.path("img")),
          error=ValueError, words="not a readable model file"),
    Fault("api: job into an output path that is a file", api=_jobs_call(),
          prepare=_put("out", b"mine"), error=RuntimeError,
          words=r"output folder .*out is a file, not a folder; choose another"),
    Fault("api: job into a folder inside a file", api=_jobs_call(outdir=Path("/dev/null/x")),
          error=RuntimeError, words=r"output folder /dev/null/x cannot be made or written \("),
    Fault("api: job on a corrupt image", api=_jobs_call(), prepare=_put("in/a.png", b"xx"),
          error=RuntimeError, words="cannot read"),
    Fault("api: job with a missing model file", api=_jobs_call(model=Path("/nonexistent.pt")),
          error=RuntimeError, words="does not exist"),
    Fault("api: job with an unknown method", api=_jobs_call(config={"method": "kmeans"}),
          error=RuntimeError, words="kmeans"),
    Fault("api: run_jobs with one name twice", api=lambda w: _jobs_twice(w), error=ValueError,
          words="same name a"),
]


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    "fault", [pytest.param(f, id=f.name, marks=f.marks) for f in CATALOGUE]
)
def test_fault_catalogue(fault: Fault, model_file, tmp_path, capsys):
    world = World(tmp_path, model_file)
    if fault.prepare is not None:
        fault.prepare(world)
    capsys.readouterr()
    before = _tree(tmp_path)
    arrays = [a.copy() for a in world.arrays]
    refused = False
    if fault.api is not None:
        if fault.error is None:
            fault.api(world)
        else:
            with pytest.raises(fault.error, match=fault.words):
                fault.api(world)
            refused = True
    else:
        status, out, err = _run_cli(_fmt(fault.argv, world), capsys)
        assert status == fault.exit, (out, err)
        assert "Traceback" not in err + out
        if fault.exit == 2:
            assert "error:" in err and re.search(fault.words, err, re.M), err
            refused = True
        elif fault.exit == 1:
            assert re.search(r"\d+ segmented, .*[1-9]\d* failed", out), out
            assert "FAILED" in err and re.search(fault.words, err), err
        else:
            assert re.search(fault.words, out + err), (out, err)
    after = _tree(tmp_path)
    for key, data in before.items():  # inputs and everything else there: unchanged
        if not key.startswith("out"):
            assert after.get(key, "gone") == data, f"{key} was changed"
    for a, b in zip(arrays, world.arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    if refused:
        assert after == before, "a refused run wrote or changed files"
    leftovers = [k for k in after if "partial" in k or k.endswith(".claim") and k not in before]
    assert not leftovers, leftovers
    out_dir = tmp_path / "out"
    if out_dir.is_dir():
        assert all(any(p.iterdir()) for p in [out_dir, *out_dir.rglob("*")] if p.is_dir()), \
            "an empty folder was left"
    if fault.check is not None:
        fault.check(world)


def test_the_catalogue_holds_at_least_60_cases():
    assert len(CATALOGUE) >= 60
    assert len({f.name for f in CATALOGUE}) == len(CATALOGUE)
