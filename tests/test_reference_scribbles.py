"""Scribbles in reference mode (the seed's ``ref`` configuration with DIR_SCRIBBLE_PATH)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_kanezaki import ConfigError, ImageError, Segmenter, SPConfig, STConfig
from napari_kanezaki.cli import main
from napari_kanezaki.imaging.samples import noisy_regions

FAST = {"device": "cpu", "precision": "fp32", "seed": 2}


def _strokes(truth: np.ndarray, ids: dict[int, int]) -> np.ndarray:
    scribbles = np.zeros_like(truth)
    for region, label in ids.items():
        ys, xs = np.nonzero(truth == region)
        scribbles[ys[::7], xs[::7]] = label
    return scribbles


def test_one_reference_image_with_scribbles_trains_like_a_scribbled_run():
    image, truth = noisy_regions((30, 36), seed=4)
    scribbles = _strokes(truth, {1: 5, 2: 9})
    config = STConfig(n_channels=12, ref_size=0, max_update=6, min_labels=1, max_iter=6)
    fitted = Segmenter(config, **FAST).fit([image], scribbles=[scribbles])
    single = Segmenter(config, **FAST)
    for _ in single.run(image, scribbles):
        pass
    for a, b in zip(fitted.model.state_dict().values(), single.model.state_dict().values(),
                    strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert fitted.keep_ids == (5, 9)
    labels = fitted.predict(image)
    assert {5, 9} <= set(np.unique(labels).tolist())


def test_scribbles_resized_with_the_references_and_mixed_with_unscribbled_images():
    images, truths = zip(*(noisy_regions((40, 50), seed=s) for s in range(3)))
    scribbles = [_strokes(truths[0], {1: 3}), None, _strokes(truths[2], {2: 4})]
    config = STConfig(n_channels=12, ref_size=24, max_update=3)
    segmenter = Segmenter(config, **FAST)
    states = list(segmenter.fit_iter(list(images), scribbles=scribbles))
    assert len(states) == 9 and segmenter.keep_ids == (3, 4)
    with pytest.raises(ImageError, match="2 scribble images for 3 reference images"):
        Segmenter(config, **FAST).fit(list(images), scribbles=scribbles[:2])
    with pytest.raises(ConfigError, match="ST method only"):
        Segmenter(SPConfig(n_channels=12, ref_size=0, max_update=2), **FAST).fit(
            [images[0]], scribbles=[scribbles[0]])


def test_cli_train_takes_a_scribble_folder(tmp_path):
    import imageio.v3 as iio

    refs, scribble_dir = tmp_path / "refs", tmp_path / "scribbles"
    refs.mkdir()
    scribble_dir.mkdir()
    for s in range(2):
        image, truth = noisy_regions((32, 32), seed=s)
        iio.imwrite(refs / f"r{s}.png", image)
    iio.imwrite(scribble_dir / "r0_scribbles.png", _strokes(truth, {1: 6}).astype(np.uint8))
    model = tmp_path / "model.pt"
    assert main(["train", str(refs), "--scribbles", str(scribble_dir), "-o", str(model),
                 "--n-channels", "12", "--max-update", "2", "--ref-size", "0", "--device",
                 "cpu", "-q"]) == 0
    assert Segmenter.load(model, device="cpu").keep_ids == (6,)
