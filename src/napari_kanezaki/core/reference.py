"""Training one model on several images: the published reference mode, and in turn.

`reference_batches` and `train_on_batches` are the TIP 2020 code's reference-image mode
(``max_update`` updates per batch, no stop rule); `train_in_turn` spends one budget of
``max_iter`` updates over the images in turn, with the plateau stop (the ``shared`` stack
mode).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_kanezaki.core.config import Config, ConfigError, SPConfig
from napari_kanezaki.core.optim import make_optimizer
from napari_kanezaki.core.stopping import StopRule
from napari_kanezaki.core.training import TrainingState, batch_superpixels
from napari_kanezaki.imaging.images import ImageError, prepare_scribbles
from napari_kanezaki.imaging.preprocessing import make_augmenter, prepare_network_input

if TYPE_CHECKING:
    from napari_kanezaki.core.segmenter import Segmenter

__all__ = ["reference_batches", "train_on_batches", "train_in_turn"]


def reference_batches(
    images: Sequence[np.ndarray],
    config: Config,
    channel_axis: int | None = None,
    scribbles: Sequence[np.ndarray | None] | None = None,
) -> tuple[list[list[np.ndarray]], list[np.ndarray | None] | None]:
    """Reference images as network inputs, resized to ``ref_size`` and grouped in batches.

    Parameters
    ----------
    images : sequence of array_like
        Reference images, all with the same number of channels.
    config : SPConfig or STConfig
        ``ref_size`` (0 keeps the size), ``batch_size`` and the preprocessing settings.
    channel_axis : int, optional
        Channel axis of multichannel images.
    scribbles : sequence of array_like or None, optional
        ST only (the seed's reference mode with scribbles): one napari-style scribble image
        (or None) per image, preprocessed and resized with the image (nearest neighbour).

    Returns
    -------
    batches : list of list of numpy.ndarray
        Batches of float32 ``(C, *spatial)`` arrays; the arrays of a batch share a shape.
        As in the published code there are ``len(images) // batch_size`` batches: the
        images of a partial last batch are not trained on.
    targets : list of numpy.ndarray or None
        Per batch, int64 class targets ``(batch, *spatial)`` (-1 = not scribbled), or None
        for a batch without scribbles; None without scribbles at all.

    Raises
    ------
    ImageError
        For no images, a bare array instead of a list, mixed channel counts, fewer images
        than ``batch_size`` or a batch of different sizes.
    """
    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise ImageError("fit expects a sequence of images; wrap a single image in a list.")
    if len(images) == 0:
        raise ImageError("fit needs at least one reference image.")
    if scribbles is not None and len(scribbles) != len(images):
        raise ImageError(
            f"{len(scribbles)} scribble images for {len(images)} reference images; give one "
            "per image (None for an image without scribbles)."
        )
    if scribbles is not None and all(s is None for s in scribbles):
        scribbles = None
    inputs = [_reference_input(image, config, channel_axis,
                               None if scribbles is None else scribbles[i])
              for i, image in enumerate(images)]
    arrays = [array for array, _ in inputs]
    in_channels = {a.shape[0] for a in arrays}
    if len(in_channels) != 1:
        raise ImageError(
            f"reference images have different channel counts {sorted(in_channels)}; "
            "convert them to the same layout (e.g. all RGB)."
        )
    size = config.batch_size
    if size > len(arrays):
        raise ImageError(
            f"batch_size={size} is larger than the number of reference images "
            f"({len(arrays)}): no full batch to train on. Lower batch_size or add images."
        )
    # As published: int(len(images) / batch_size) batches, a partial last batch is dropped.
    starts = range(0, len(arrays) // size * size, size)
    batches = [arrays[i : i + size] for i in starts]
    for batch in batches:
        if len({a.shape for a in batch}) != 1:
            raise ImageError(
                "images of one batch must have the same size: set ref_size (resize) or "
                "batch_size=1."
            )
    if scribbles is None:
        return batches, None
    targets = []
    for i, batch in zip(starts, batches, strict=True):
        own = [target for _, target in inputs[i : i + size]]
        if all(target is None for target in own):
            targets.append(None)
            continue
        targets.append(np.stack([
            np.full(a.shape[1:], -1, np.int64) if target is None else target
            for a, target in zip(batch, own, strict=True)
        ]))
    return batches, targets


def _reference_input(
    image: np.ndarray, config: Config, channel_axis: int | None, scribbles: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    array, geometry = prepare_network_input(image, config, channel_axis)
    targets = prepare_scribbles(geometry.apply(scribbles), array.shape[1:], config.n_channels)
    if targets is not None and isinstance(config, SPConfig):
        raise ConfigError(
            "scribbles are supported by the ST method only; use STConfig or method='st'."
        )
    size = config.ref_size
    if size == 0 or array.shape[1:] == (size, size):
        return array, targets
    from skimage.transform import resize

    # As published (OpenCV's bilinear cv2.resize): no anti-aliasing, edges replicated. The
    # published code resized the 8-bit image; here the normalised one (not rounded to 8 bits).
    resized = resize(array, (array.shape[0], size, size), order=1, mode="edge",
                     anti_aliasing=False)
    if targets is not None:
        targets = resize(targets, (size, size), order=0, mode="edge", anti_aliasing=False,
                         preserve_range=True).astype(np.int64)
    return resized.astype(np.float32), targets


def train_on_batches(
    segmenter: Segmenter,
    batches: list[list[np.ndarray]],
    targets: list[np.ndarray | None] | None = None,
) -> Iterator[TrainingState]:
    """The reference mode's loops: per epoch, per batch, ``max_update`` updates on it.

    Parameters
    ----------
    segmenter : Segmenter
        With a fresh model (`Segmenter.fit_iter` prepares it).
    batches : list of list of numpy.ndarray
        From `reference_batches`.
    targets : list of numpy.ndarray or None, optional
        Per-batch scribble targets from `reference_batches`.

    Yields
    ------
    TrainingState
        ``max_iter`` is the total number of updates; the last state is ``done``.
    """
    cfg = segmenter.config
    assert segmenter.model is not None
    # As published: one optimiser for the whole fit, its momentum carried across batches
    # and epochs.
    optimizer = make_optimizer(cfg, segmenter.model.parameters())
    augment = make_augmenter(cfg, segmenter.seed)
    total = cfg.n_epochs * len(batches) * cfg.max_update
    sp_cache: dict[int, tuple] = {}
    iteration = 0
    for _ in range(cfg.n_epochs):
        for b, batch in enumerate(batches):
            x = segmenter._to_device(np.stack(batch))
            superpixels = None
            if isinstance(cfg, SPConfig):
                if b not in sp_cache:
                    sp_cache[b] = batch_superpixels(batch, cfg, segmenter.device,
                                                    spacing=segmenter.spacing)
                superpixels = sp_cache[b]
            scribble_tensor = None
            if targets is not None and targets[b] is not None:
                scribble_tensor = torch.from_numpy(targets[b]).to(segmenter.device)
            step = segmenter._make_step((x.shape[0], *x.shape[2:]), superpixels,
                                        scribble_tensor, optimizer=optimizer)
            for _ in range(cfg.max_update):
                iteration += 1
                if augment is not None:  # the seed's random CLAHE, new at every update
                    x = segmenter._to_device(np.stack([augment(a) for a in batch]))
                loss, channels, n_labels = step(x)
                reason = "max_iter" if iteration == total else ""
                yield segmenter._state(iteration, total, n_labels, reason, loss, channels)


def train_in_turn(
    segmenter: Segmenter, arrays: Sequence[np.ndarray]
) -> Iterator[TrainingState]:
    """One update per batch of ``batch_size`` images taken in turn, ``max_iter`` in all.

    The images are visited cyclically (batches wrap around the end), with one optimiser.
    The plateau stop compares each image's labels with its own labels at its previous
    visit; the label-count rule is off (one image may hold fewer segments than the set).

    Parameters
    ----------
    segmenter : Segmenter
        With a fresh model of the arrays' layout.
    arrays : sequence of numpy.ndarray
        Network inputs ``(C, *spatial)`` of one shape.

    Yields
    ------
    TrainingState
        ``max_iter`` is the budget; the last state is ``done``.
    """
    cfg = segmenter.config
    assert segmenter.model is not None
    optimizer = make_optimizer(cfg, segmenter.model.parameters())
    rule = StopRule(cfg.max_iter, 0, cfg.plateau_iter, cfg.plateau_tol, segmenter._check_every)
    size = min(cfg.batch_size, len(arrays))
    shape = (size, *arrays[0].shape[1:])
    steps: dict[tuple[int, ...], Any] = {}
    start = 0
    for iteration in range(1, cfg.max_iter + 1):
        indices = tuple((start + j) % len(arrays) for j in range(size))
        start = (start + size) % len(arrays)
        batch = [arrays[i] for i in indices]
        if indices not in steps:  # SP: superpixels once per batch of images
            superpixels = None
            if isinstance(cfg, SPConfig):
                superpixels = batch_superpixels(batch, cfg, segmenter.device,
                                                spacing=segmenter.spacing)
            steps[indices] = segmenter._make_step(shape, superpixels, optimizer=optimizer)
        loss, channels, n_labels = steps[indices](segmenter._to_device(np.stack(batch)))
        reason = rule.update(iteration, n_labels, channels, key=indices)
        yield segmenter._state(iteration, cfg.max_iter, n_labels, reason, loss, channels)
        if reason:
            return
