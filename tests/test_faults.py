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
