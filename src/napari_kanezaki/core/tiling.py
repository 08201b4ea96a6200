"""Bounded-memory training and prediction: random crops, tiles with overlap, exact stitching.

An image or volume whose network working set exceeds a memory budget is

1. **trained on random crops**: every iteration is one update on a batch of ``n_crops``
   crops; a new set of crops is drawn every ``resample_every`` updates (seeded), the
   optimizer and its momentum carry on. SP superpixels are computed per crop with the
   superpixel density of the whole image;
2. **given whole-image BatchNorm statistics**: the published code predicts with BatchNorm in
   training mode, i.e. normalised with the statistics of the image being predicted. Tiles
   would each get their own statistics and disagree at their borders. Instead, each
   BatchNorm layer's mean and (biased) variance over the *whole* image are accumulated tile
   by tile, layer after layer (one pass per BatchNorm layer, each with the previous layers
   already fixed), and stored as the layer's running statistics;
3. **predicted tile by tile** in eval mode with those fixed statistics. Each tile is read
   with a margin of ``n_conv`` pixels (the receptive-field radius of the ``n_conv`` 3x3
   convolutions; the final 1x1 adds none), so its core is computed exactly as in the whole
   image: the stitched argmax equals the untiled one (up to float rounding) and has no seams.
   Labels are numbered once over the whole image (largest segment first) in a second pass.

The input is only ever read region by region (see `ImageSource`; tile geometry in
`imaging.tiles`), so dask and zarr data are never loaded whole; the output can be a zarr
array on disk. Every entry point calls `imaging.heap.bound_heap`, so that the blocks of
crops and tiles freed go back to the system instead of piling up as heap fragments.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_kanezaki.core.config import SPConfig
from napari_kanezaki.imaging.heap import bound_heap
from napari_kanezaki.imaging.images import ImageError, segment_numbering
from napari_kanezaki.imaging.tiles import Source, Tile

if TYPE_CHECKING:
    from napari_kanezaki.core.segmenter import Segmenter, TrainingState

__all__ = ["train_on_crops", "fix_batchnorm_statistics", "predict_tiles"]


# -- training -----------------------------------------------------------------------------
def train_on_crops(
    segmenter: Segmenter,
    source: Source,
    crop_shape: Sequence[int],
    *,
    n_crops: int = 4,
    resample_every: int = 20,
    scribbles: np.ndarray | None = None,
) -> Iterator[TrainingState]:
    """Train `segmenter` on random crops of `source`, yielding a state after every update.

    Parameters
    ----------
    segmenter : Segmenter
        Its config gives the method and budget (``max_iter``, stop rule); a fresh model is
        made (seeded by the segmenter's seed; the crops by the same seed).
    source : ImageSource
        The image; its leading axes beyond the crop's are plane axes (a random plane per
        crop), e.g. time points of a 3-D movie.
    crop_shape : sequence of int
        Crop size on the model axes (2 or 3 of them: the network's dimensionality).
    n_crops : int
        Crops per update (one batch).
    resample_every : int
        Draw new crops every this many updates.
    scribbles : numpy.ndarray, optional
        ST only: napari-style scribbles of the source's spatial shape.

    Yields
    ------
    TrainingState
    """
    import torch

    from napari_kanezaki.core.optim import make_optimizer
    from napari_kanezaki.core.stopping import StopRule
    from napari_kanezaki.core.training import batch_superpixels, scribble_classes
    from napari_kanezaki.imaging.images import prepare_scribbles

    bound_heap()
    cfg = segmenter.config
    shape = tuple(source.spatial_shape)
    crop = tuple(int(c) for c in crop_shape)
    model_dims = len(crop)
    n_lead = len(shape) - model_dims
    if model_dims not in (2, 3) or n_lead < 0 or any(
        c > n for c, n in zip(crop, shape[n_lead:], strict=True)
    ):
        raise ImageError(f"crop shape {crop} does not fit an image of spatial shape {shape}.")
    if n_crops < 1 or resample_every < 1:
        raise ImageError("n_crops and resample_every must be at least 1.")
    targets = prepare_scribbles(scribbles, shape, cfg.n_channels)
    segmenter.keep_ids, min_labels = scribble_classes(targets, cfg)
    segmenter._prepare_model(source.n_channels, warm_start=False, spatial_dims=model_dims)
    model = segmenter.model
    assert model is not None
    optimizer = make_optimizer(cfg, model.parameters())
    rng = np.random.default_rng(segmenter.seed)
    density = math.prod(crop) / math.prod(shape[n_lead:])
    rule = StopRule(cfg.max_iter, min_labels, cfg.plateau_iter, cfg.plateau_tol,
                    segmenter._check_every)
    step = x = None
    for iteration in range(1, cfg.max_iter + 1):
        if (iteration - 1) % resample_every == 0:
            indices = [_random_crop(rng, shape, crop) for _ in range(n_crops)]
            arrays = [source.read(index) for index in indices]
            x = segmenter._to_device(np.stack(arrays))
            superpixels = scribble_tensor = None
            if isinstance(cfg, SPConfig):
                superpixels = batch_superpixels(arrays, cfg, segmenter.device,
                                                spacing=segmenter.spacing, density=density)
            if targets is not None:
                crops = np.stack([targets[index] for index in indices])
                if (crops >= 0).any():  # crops without any scribble train like plain ST
                    scribble_tensor = torch.from_numpy(crops).to(segmenter.device)
            step = segmenter._make_step((n_crops, *crop), superpixels, scribble_tensor,
                                        optimizer=optimizer)
            rule.new_view()
        assert step is not None and x is not None
        loss, channels, n_labels = step(x)
        reason = rule.update(iteration, n_labels, channels)
        yield segmenter._state(iteration, cfg.max_iter, n_labels, reason, loss, channels)
        if reason:
            return


def _random_crop(
    rng: np.random.Generator, shape: tuple[int, ...], crop: tuple[int, ...]
) -> tuple[int | slice, ...]:
    n_lead = len(shape) - len(crop)
    index: list[int | slice] = [int(rng.integers(0, n)) for n in shape[:n_lead]]
    for n, c in zip(shape[n_lead:], crop, strict=True):
        start = int(rng.integers(0, n - c + 1))
        index.append(slice(start, start + c))
    return tuple(index)


# -- fixed BatchNorm statistics -----------------------------------------------------------
def fix_batchnorm_statistics(
    segmenter: Segmenter, source: Source, tiles: Sequence[Tile]
) -> Generator[int, None, None]:
    """Set every BatchNorm layer's running statistics to those of the whole image.

    One pass over the tiles per BatchNorm layer: the layer's input is computed on each tile
    (earlier layers already fixed), only the tile's core counts, and the per-tile means and
    variances are merged exactly (Chan et al.). In eval mode the network then computes on
    every tile what training-mode BatchNorm computes on the whole image at once.

    Parameters
    ----------
    segmenter : Segmenter
        A trained segmenter; its model is left in eval mode.
    source : ImageSource
        The image (or stack of planes) to be predicted.
    tiles : sequence of Tile
        From `iter_tiles` with a margin of at least ``n_conv``.

    Yields
    ------
    int
        Tiles processed so far (``len(tiles)`` per BatchNorm layer).
    """
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    bound_heap()
    model = segmenter.model
    assert model is not None
    layers = model.layers
    norms = [i for i, layer in enumerate(layers) if isinstance(layer, _BatchNorm)]
    model.eval()
    done = 0
    with torch.no_grad():
        for index in norms:
            norm = layers[index]
            count = 0
            mean = torch.zeros(norm.num_features, dtype=torch.float64)
            m2 = torch.zeros(norm.num_features, dtype=torch.float64)
            for tile in tiles:
                x = segmenter._to_device(source.read(tile.read)[np.newaxis])
                with segmenter._autocast():
                    h = layers[:index](x)
                core = h[(slice(None), slice(None), *tile.inner)].float()
                dims = [0, *range(2, core.ndim)]
                n = core.numel() // core.shape[1]
                var_t, mean_t = torch.var_mean(core, dim=dims, correction=0)
                mean_t, var_t = mean_t.double().cpu(), var_t.double().cpu()
                total = count + n
                delta = mean_t - mean
                mean = mean + delta * (n / total)
                m2 = m2 + var_t * n + delta**2 * (count * n / total)
                count = total
                done += 1
                yield done
            norm.running_mean.copy_(mean.to(norm.running_mean))
            norm.running_var.copy_((m2 / count).to(norm.running_var))


# -- prediction ---------------------------------------------------------------------------
def predict_tiles(
    segmenter: Segmenter,
    source: Source,
    tiles: Sequence[Tile],
    output: Any,
    prefix: tuple[int, ...] = (),
) -> Generator[int, None, None]:
    """Predict every tile with the model as it is (eval mode: fixed statistics) and number.

    The argmax channels of every tile core are written to ``output[prefix + core]``; then a
    second pass renumbers them 1..K over all the tiles together, largest segment first
    (scribbled classes keep their ids), like `Segmenter.predict`.

    Parameters
    ----------
    segmenter : Segmenter
        With fixed BatchNorm statistics (`fix_batchnorm_statistics`).
    source : ImageSource
    tiles : sequence of Tile
    output : numpy.ndarray or zarr.Array
        int32 destination.
    prefix : tuple of int
        Index of the source inside `output` (a plane of a stack).

    Yields
    ------
    int
        Number of tiles predicted so far.
    """
    import torch

    from napari_kanezaki.core.training import predicted_channels

    bound_heap()
    model = segmenter.model
    assert model is not None
    n_channels = segmenter.config.n_channels
    counts = np.zeros(n_channels, dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for i, tile in enumerate(tiles, start=1):
            x = segmenter._to_device(source.read(tile.read)[np.newaxis])
            with segmenter._autocast():
                response = model(x)
            channels = predicted_channels(response, segmenter.keep_ids,
                                          getattr(segmenter.config, "painted_only", False))[0]
            core = channels[tile.inner].cpu().numpy().astype(np.int32)
            counts += np.bincount(core.ravel(), minlength=n_channels)
            output[prefix + tile.core] = core
            yield i
    lookup = segment_numbering(counts, n_channels, segmenter.keep_ids)
    for tile in tiles:
        index = prefix + tile.core
        output[index] = lookup[np.asarray(output[index])]
