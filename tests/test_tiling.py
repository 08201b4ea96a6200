"""Bounded memory: tiles, exact stitching, lazy inputs, zarr output."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from napari_kanezaki import ImageError, Segmenter, SPConfig, STConfig, segment
from napari_kanezaki.core.tiling import fix_batchnorm_statistics, predict_tiles
from napari_kanezaki.imaging.images import NormalizedImage
from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.imaging.sources import ImageSource
from napari_kanezaki.imaging.tiles import create_output, fixed_bytes, iter_tiles, shape_for_budget
from napari_kanezaki.workflows.stacks import predict_iter, run_to_end

FAST = {"device": "cpu", "precision": "fp32"}


class CountingArray:
    """An array-like that records every region read from it."""

    def __init__(self, array):
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.reads: list[int] = []

    def __getitem__(self, index):
        block = np.asarray(self._array[index])
        self.reads.append(block.size)
        return block


def tiled_prediction(segmenter, source, tile):
    tiles = iter_tiles(source.spatial_shape, tile, segmenter.config.n_conv)
    for _ in fix_batchnorm_statistics(segmenter, source, tiles):
        pass
    output = create_output(source.spatial_shape)
    for _ in predict_tiles(segmenter, source, tiles, output):
        pass
    segmenter.model.train()
    return output, tiles


@pytest.mark.parametrize("config", [STConfig(n_channels=16, max_iter=15, min_labels=1),
                                    SPConfig(n_channels=16, max_iter=15, min_labels=1,
                                             n_segments=150, compactness=10)])
def test_tiled_prediction_equals_the_whole_image_one(config):
    image, _ = noisy_regions((90, 70), seed=1)
    source = ImageSource(image)
    x = NormalizedImage(source.read())
    segmenter = Segmenter(config, seed=0, **FAST)
    for _ in segmenter.run(x):
        pass
    whole = segmenter.predict(x)  # BatchNorm on the whole image, as published
    tiled, tiles = tiled_prediction(segmenter, source, (32, 24))
    assert len(tiles) == 9
    assert adjusted_rand_score(whole.ravel(), tiled.ravel()) >= 0.95
    assert np.mean(whole == tiled) > 0.999  # same ids, not only the same partition
    # no seams: across every tile border the labels agree with the untiled result
    for row in (32, 64):
        np.testing.assert_array_equal(tiled[row - 1 : row + 1], whole[row - 1 : row + 1])
    # predict after tiling still uses batch statistics (the model is back in train mode)
    np.testing.assert_array_equal(segmenter.predict(x), whole)


@pytest.mark.parametrize("preprocessing", [{}, {"median_blur": 3, "resize_multiple": 16}])
def test_predict_iter_of_a_trained_model_over_the_budget_equals_whole_prediction(
    preprocessing, monkeypatch
):
    import napari_kanezaki.workflows.stacks as stacks

    image, _ = noisy_regions((90, 70), seed=1)
    config = STConfig(n_channels=16, max_iter=15, min_labels=1, **preprocessing)
    segmenter = Segmenter(config, seed=0, **FAST)
    for _ in segmenter.run(image):
        pass
    whole = segmenter.predict(image)
    grids = []
    monkeypatch.setattr(stacks, "iter_tiles", lambda *args: grids.append(iter_tiles(*args))
                        or grids[-1])
    counting = CountingArray(image)
    # 250 kB for the network: the 16-channel prediction of 90 x 70 pixels needs 1.6 MB
    generator = predict_iter(segmenter, counting, memory_budget=1_000_000)
    texts = []
    result = run_to_end(generator, lambda progress: texts.append(progress.text))
    assert len(grids) == 1 and len(grids[0]) > 4  # really tiled
    assert texts[-1] == f"predicting tile {len(grids[0])}/{len(grids[0])}"
    if not preprocessing:  # read in tiles; preprocessing works on the whole image
        assert counting.reads and max(counting.reads) < image.size / 2
    tiled = result.labels
    assert not result.stopped and tiled.shape == whole.shape == image.shape[:2]
    assert np.mean(whole == tiled) > 0.999  # same ids, not only the same partition
    assert set(np.unique(tiled)) == set(np.unique(whole))
    np.testing.assert_array_equal(segmenter.predict(image), whole)  # back in train mode
    # within the budget: one whole prediction, no tiles
    grids.clear()
    untiled = run_to_end(predict_iter(segmenter, image, memory_budget=2**30))
    assert not grids
    np.testing.assert_array_equal(untiled.labels, whole)
    import napari_kanezaki

    assert napari_kanezaki.predict_iter is predict_iter  # a public name of the package


def test_predict_iter_stops_between_tiles_and_refuses_stacks():
    import threading

    image, _ = noisy_regions((64, 64), seed=2)
    segmenter = Segmenter(STConfig(n_channels=8, max_iter=3, min_labels=1), seed=0, **FAST)
    for _ in segmenter.run(image):
        pass
    stop = threading.Event()
    generator = predict_iter(segmenter, image, tile_shape=(16, 16), stop=stop)
    next(generator)
    stop.set()
    result = run_to_end(generator)
    assert result.stopped and not result.labels.any()
    with pytest.raises(ImageError, match="stack_mode"):
        run_to_end(predict_iter(segmenter, np.zeros((3, 32, 32), np.float32), rgb=False))
    with pytest.raises(RuntimeError, match="no trained model"):
        run_to_end(predict_iter(Segmenter(STConfig()), image))


def test_tiled_3d_prediction_is_seamless():
    volume = np.random.default_rng(0).random((6, 20, 20)).astype(np.float32)
    volume[:, :, 10:] += 1
    source = ImageSource(volume)
    x = NormalizedImage(source.read())
    segmenter = Segmenter(STConfig(n_channels=8, max_iter=5, min_labels=1), **FAST)
    for _ in segmenter.run(x):
        pass
    whole = segmenter.predict(x)
    tiled, _ = tiled_prediction(segmenter, source, (4, 8, 8))
    assert np.mean(whole == tiled) > 0.999


def test_tiled_run_end_to_end_matches_an_untiled_run():
    image, truth = noisy_regions((96, 96), noise=0.05, seed=2)
    config = STConfig(n_channels=16, max_iter=40)
    untiled = segment(image, config=config, seed=0, **FAST)
    # 30 MB for the network's crops and tiles, on top of the input, labels and runtime
    budget = fixed_bytes(ImageSource(image), labels_in_memory=True) + 30_000_000
    tiled = segment(image, config=config, seed=0, tile_shape=(40, 40), memory_budget=budget,
                    **FAST)
    assert tiled.shape == untiled.shape and tiled.min() >= 1
    assert adjusted_rand_score(untiled.ravel(), tiled.ravel()) >= 0.8
    assert adjusted_rand_score(truth.ravel(), tiled.ravel()) >= 0.8


def test_lazy_input_is_read_in_regions_only():
    image, _ = noisy_regions((128, 128), seed=3)
    counting = CountingArray(image)
    labels = segment(counting, config=STConfig(n_channels=8, max_iter=6), tile_shape=(48, 48),
                     memory_budget=8 * 4 * 14 * 4 * 40 * 40, **FAST)
    assert labels.shape == (128, 128) and labels.min() >= 1
    assert counting.reads and max(counting.reads) < image.size / 2


def test_dask_input_and_zarr_output(tmp_path):
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    image, _ = noisy_regions((96, 96), seed=4)
    lazy = da.from_array(image, chunks=(32, 32, 3))
    computed = []

    class Counter:  # dask's callback: blocks computed
        def __init__(self):
            from dask.callbacks import Callback

            self.callback = Callback(posttask=lambda key, result, dsk, state, id: computed.append(
                getattr(result, "size", 0)))

    counter = Counter()
    store = tmp_path / "labels.zarr"
    with counter.callback:
        labels = segment(lazy, config=STConfig(n_channels=8, max_iter=5), tile_shape=(32, 32),
                         memory_budget=2_000_000, out=store, **FAST)
    assert isinstance(labels, zarr.Array) and labels.shape == (96, 96)
    assert np.asarray(labels[:]).min() >= 1
    assert max(computed) < image.size  # no task ever materialised the whole image
    with pytest.raises(FileExistsError, match="already exists"):
        segment(lazy, config=STConfig(n_channels=8, max_iter=2), out=store, **FAST)
    again = segment(lazy, config=STConfig(n_channels=8, max_iter=2), out=store, overwrite=True,
                    **FAST)
    assert again.shape == (96, 96)


def test_budget_and_tile_errors():
    image = np.zeros((64, 64), np.uint8)
    with pytest.raises(ImageError, match="too small"):
        segment(image, tile_shape=(4, 64))
    with pytest.raises(ImageError, match="one per axis"):
        segment(image, tile_shape=(16, 16, 16))
    with pytest.raises(ImageError, match="memory_budget must be a positive"):
        segment(image, memory_budget=-1)
    with pytest.raises(ImageError, match="raise memory_budget"):
        segment(image, memory_budget=1000)
    assert shape_for_budget((64, 512, 512), 65536) == (40, 40, 40)
    assert shape_for_budget((4, 512), 1024) == (4, 256)
