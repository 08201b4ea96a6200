"""Stacks, volumes and large images: the three stack modes and bounded-memory runs.

Stack modes (a stack is any image with more than two spatial axes, e.g. ``(Z, Y, X)`` or
``(T, Z, Y, X)``, plus an optional channel axis):

``"independent"``
    Every 2-D plane (every index of all axes but the last two) gets its own fresh model,
    trained and predicted on that plane alone. Fast; label ids are independent per plane.
``"shared"``
    One 2-D model is trained on all planes in turn (`Segmenter.fit_in_turn`: one update
    per batch of ``batch_size`` planes, ``max_iter`` updates in all, the plateau stop
    comparing each plane with its previous visit), then every plane is predicted with
    BatchNorm statistics of the whole stack and the labels are numbered over the whole
    stack, so the same material gets the same id in every plane and every time point.
``"3d"``
    A Conv3d/BatchNorm3d network on the last three spatial axes, with the continuity loss
    along all three axes (ST) or SLIC supervoxels (SP). With a voxel ``spacing``, the
    continuity term of each axis is weighted by ``min(spacing) / spacing[axis]`` and SLIC
    gets the spacing. Extra leading axes (time) share one 3-D model trained on random
    volumes of them.

Every image is normalised once for the whole data set (per channel, see `ImageSource`).
Whenever training on a whole image or volume would exceed ``memory_budget``, training uses
random crops and prediction goes tile by tile with whole-image BatchNorm statistics (see
`tiling`); the input is then only read region by region (dask and zarr stay lazy) and the
labels can be written to a zarr store. `predict_iter` applies an already trained 2-D model
the same way: whole when its prediction fits the budget, else in exact tiles.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_kanezaki.core.config import Config, SPConfig
from napari_kanezaki.core.tiling import fix_batchnorm_statistics, predict_tiles, train_on_crops
from napari_kanezaki.imaging.images import ImageError, NormalizedImage
from napari_kanezaki.imaging.planes import preprocess_planes
from napari_kanezaki.imaging.preprocessing import is_active
from napari_kanezaki.imaging.sources import ImageSource
from napari_kanezaki.imaging.tiles import (
    check_tile_shape,
    create_output,
    default_memory_budget,
    fits_budget,
    iter_tiles,
    network_budget,
    shape_for_budget,
    working_set_bytes,
)
from napari_kanezaki.workflows.results import Progress, SegmentationResult, StopFlag

if TYPE_CHECKING:
    from napari_kanezaki.core.segmenter import Segmenter

__all__ = ["STACK_MODES", "check_stack_mode", "segment_iter", "predict_iter", "run_to_end"]

STACK_MODES = ("independent", "shared", "3d")
_LOG = logging.getLogger("napari_kanezaki")


@dataclass(frozen=True)
class _Plane:
    """One plane of an `ImageSource` (fixed leading indices), read like a source."""

    source: ImageSource
    lead: tuple[int, ...]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.source.spatial_shape[len(self.lead) :]

    @property
    def n_channels(self) -> int:
        return self.source.n_channels

    def read(self, index: tuple[int | slice, ...] = ()) -> np.ndarray:
        return self.source.read(self.lead + tuple(index))


class _NeverStop:
    def is_set(self) -> bool:
        return False


def segment_iter(
    image: Any,
    config: Config,
    *,
    stack_mode: str | None = None,
    scribbles: np.ndarray | None = None,
    channel_axis: int | None = None,
    rgb: bool | None = None,
    spacing: Sequence[float] | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    memory_budget: int | None = None,
    tile_shape: Sequence[int] | None = None,
    n_crops: int = 4,
    resample_every: int = 20,
    out: str | Path | None = None,
    overwrite: bool = False,
    stop: StopFlag | None = None,
    preview_every: int = 0,
) -> Generator[Progress, None, SegmentationResult]:
    """Segment an image, stack or volume, yielding progress; return a `SegmentationResult`.

    Parameters
    ----------
    image : array_like or ImageSource
        NumPy, dask or zarr array (read lazily region by region when tiling), or an
        `ImageSource` (e.g. `ImageSource.from_normalized` of preprocessed data). Grey,
        RGB(A) (last axis) or any number of channels on `channel_axis`; uint8 is divided by
        255, other dtypes (uint16, float) are scaled per channel by robust percentiles of
        the whole data set.
    config : SPConfig or STConfig
        Method and settings.
    stack_mode : {"independent", "shared", "3d"}, optional
        Required for images with more than two spatial axes, refused for 2-D images.
    scribbles : array_like, optional
        ST only, napari-style (0 = none, k = class k), of the image's spatial shape.
        Not available with ``stack_mode="shared"``.
    channel_axis : int, optional
        Axis of the channels.
    rgb : bool, optional
        Whether the last axis is RGB(A); default guessed (length 3 or 4).
    spacing : sequence of float, optional
        Pixel/voxel size for every spatial axis (or for the network's axes only).
    seed, device, precision
        As for `Segmenter`.
    memory_budget : int, optional
        Bytes the network may use (default: `default_memory_budget`, 60 % of the memory
        available). Inputs whose training would need more are trained on random crops and
        predicted in tiles.
    tile_shape : sequence of int, optional
        Force tiling with this tile core size (one entry per network axis).
    n_crops, resample_every : int
        Crops per training update, and how often new crops are drawn (tiled training).
    out : str or Path, optional
        Write the labels to a new zarr store at this path (returned as a zarr array).
    overwrite : bool
        Allow replacing an existing `out`.
    stop : threading.Event, optional
        When set, training stops after the current update; the current image, volume or
        plane is still predicted, remaining planes (independent mode) stay 0.
    preview_every : int
        Attach the current label image to every this many training progress steps.

    Yields
    ------
    Progress
        Over all training updates, planes and tiles.

    Returns
    -------
    SegmentationResult
    """
    source = _source_of(image, channel_axis, rgb)
    job = _Job(
        source=source,
        config=config,
        runtime={"seed": seed, "device": device, "precision": precision},
        spacing=spacing,
        # The budget bounds the run's peak above the interpreter's baseline: the input, the
        # labels and the torch runtime take their part, the network's working set the rest.
        budget=network_budget(
            default_memory_budget() if memory_budget is None else _check_budget(memory_budget),
            source, labels_in_memory=out is None,
        ),
        tile_shape=tile_shape,
        n_crops=int(n_crops),
        resample_every=int(resample_every),
        stop=stop if stop is not None else _NeverStop(),
        preview_every=int(preview_every),
    )
    shape = source.spatial_shape
    model_dims = check_stack_mode(source, stack_mode)
    if isinstance(config, SPConfig) and scribbles is not None:
        raise ImageError("scribbles are supported by the ST method only; use method='st'.")
    if scribbles is not None:
        scribbles = np.asarray(scribbles)
        if scribbles.shape != shape:
            raise ImageError(
                f"scribbles have shape {scribbles.shape} but the image's spatial shape is "
                f"{shape}; paint them on a Labels layer of the image's size."
            )
        if stack_mode == "shared":
            raise ImageError(
                "scribbles are not supported with stack_mode='shared' (the planes train in "
                "turn without a scribble term); use stack_mode='3d' or 'independent'."
            )
    job.spacing = _model_spacing(spacing, shape, model_dims)
    if tile_shape is not None:
        job.tile_shape = check_tile_shape(tile_shape, model_dims)
    tiled = job.needs_tiling(shape[-model_dims:], has_lead=source.spatial_ndim > model_dims)
    fresh_out = out is not None and not Path(out).exists()
    try:
        output, segmenter = yield from _run_mode(job, source, stack_mode, shape, model_dims,
                                                 tiled, out, overwrite, scribbles)
    except Exception:
        if fresh_out and Path(out).exists():  # no half-written store is left at `out`
            shutil.rmtree(out) if Path(out).is_dir() else Path(out).unlink()
        raise
    return SegmentationResult(output, segmenter, job.stop.is_set())


def _run_mode(job, source, stack_mode, shape, model_dims, tiled, out, overwrite, scribbles):
    """Create the output and run the stack mode's training and prediction into it."""
    if stack_mode == "independent":
        tiled = job.needs_tiling(shape[-2:], has_lead=False)
        chunks = (1,) * (len(shape) - 2) + (job.predict_tile(shape[-2:]) if tiled else shape[-2:])
        output = create_output(shape, out, chunks=chunks, overwrite=overwrite)
        segmenter = yield from job.independent(output, scribbles)
    elif stack_mode == "shared":
        tile = job.predict_tile(shape[-2:])
        chunks = (1,) * (len(shape) - 2) + tile
        output = create_output(shape, out, chunks=chunks, overwrite=overwrite)
        segmenter = yield from job.shared(output, tile)
    else:
        n_lead = len(shape) - model_dims
        model_shape = shape[n_lead:]
        chunks = (1,) * n_lead + (job.predict_tile(model_shape) if tiled else model_shape)
        output = create_output(shape, out, chunks=chunks, overwrite=overwrite)
        segmenter = yield from job.single(source, model_dims, output, (), scribbles, 0, 1)
    return output, segmenter


def predict_iter(
    segmenter: Segmenter,
    image: Any,
    *,
    channel_axis: int | None = None,
    rgb: bool | None = None,
    memory_budget: int | None = None,
    tile_shape: Sequence[int] | None = None,
    stop: StopFlag | None = None,
) -> Generator[Progress, None, SegmentationResult]:
    """Label a 2-D image with a trained model, in bounded memory, yielding progress.

    When the network's prediction working set fits `memory_budget` (and no `tile_shape` is
    forced), the image is read whole and labelled by `Segmenter.predict` (BatchNorm with
    the image's own statistics, as published). Otherwise the statistics of every BatchNorm
    layer over the whole image are accumulated tile by tile (`fix_batchnorm_statistics`)
    and the image is predicted in tiles read with a margin of ``n_conv`` pixels (the
    receptive field), so the labels equal those of the whole prediction up to float
    rounding; dask and zarr data are then only read region by region (not with a model
    trained on the membrane response, `Segmenter.membranes`: its filter is applied to the
    whole image first, as at training). The configuration's
    preprocessing (``median_blur``, ``resize_multiple``, ``clahe``, ``crop_bottom``) works
    on the whole image: with it on, the normalised image is held in memory, the network's
    working set is still tiled, and the labels are mapped back to the image's shape.

    Parameters
    ----------
    segmenter : Segmenter
        A trained (`Segmenter.run`, `Segmenter.fit`) or loaded (`Segmenter.load`) 2-D
        model; its model is left in training mode (as `Segmenter.predict` expects).
    image : array_like or ImageSource
        2-D NumPy, dask or zarr image, grey, RGB(A) (last axis) or with `channel_axis`,
        with the model's number of channels; normalised as in `segment_iter`.
    channel_axis : int, optional
        Axis of the channels.
    rgb : bool, optional
        Whether the last axis is RGB(A); default guessed (length 3 or 4).
    memory_budget : int, optional
        Bytes the prediction may use (default: `default_memory_budget`).
    tile_shape : sequence of int, optional
        Force tiled prediction with this tile core size (two entries).
    stop : threading.Event, optional
        When set, tiled prediction ends after the current tile and the labels are all 0.

    Yields
    ------
    Progress
        One step per BatchNorm statistics tile and per predicted tile (one step in all
        for a whole prediction).

    Returns
    -------
    SegmentationResult
        int32 labels of the image's spatial shape, `segmenter`, and whether it was stopped.

    Raises
    ------
    RuntimeError
        The segmenter has no model.
    ImageError
        The image is not 2-D, or the budget or tile shape is invalid.
    """
    if segmenter.model is None:
        raise RuntimeError("no trained model: call run(), fit() or Segmenter.load() first.")
    if segmenter.membranes is not None:  # trained on the membrane response: the same here
        from napari_kanezaki.imaging.membranes import apply_membrane_filter

        if rgb or channel_axis is not None:
            raise ImageError(
                "this model was trained on the membrane response of grey images "
                "(--enhance-membranes); give a grey image of the membrane stain."
            )
        image = apply_membrane_filter(image, segmenter.membranes)
    source = _source_of(image, channel_axis, rgb)
    check_stack_mode(source, None)
    stop = stop if stop is not None else _NeverStop()
    config = segmenter.config
    shape = source.spatial_shape
    budget = network_budget(
        default_memory_budget() if memory_budget is None else _check_budget(memory_budget),
        source, labels_in_memory=True,
    )
    per_pixel = working_set_bytes(1, config.n_channels, training=False)
    if tile_shape is None and per_pixel * math.prod(shape) <= budget:
        labels = segmenter.predict(NormalizedImage(source.read()))
        yield Progress(1, 1, f"{int(labels.max())} labels")
        return SegmentationResult(labels, segmenter, False)
    geometry = None
    if is_active(config):  # whole-image steps: preprocess the normalised image at once
        planes, geometry = preprocess_planes(source.read(), config)
        source = ImageSource.from_normalized(planes)
    model_shape = source.spatial_shape
    if tile_shape is not None:
        tile = check_tile_shape(tile_shape, 2)
    else:  # leave room for the margin on every side of the tile
        tile = shape_for_budget(model_shape, max(1, int(budget / per_pixel / 1.2)))
    tiles = iter_tiles(model_shape, tile, config.n_conv)
    _LOG.info("prediction over the memory budget (%.1f GiB): predicting in tiles of %s",
              budget / 1024**3, tile)
    n_norms = config.n_conv + 1  # BatchNorm layers: one per convolution
    total = len(tiles) * (n_norms + 1)
    output = create_output(model_shape)
    passes = (
        (fix_batchnorm_statistics(segmenter, source, tiles), 0, "BatchNorm statistics, tile",
         len(tiles) * n_norms),
        (predict_tiles(segmenter, source, tiles, output), len(tiles) * n_norms,
         "predicting tile", len(tiles)),
    )
    try:
        for counter, start, what, n in passes:
            for i in counter:
                yield Progress(start + i, total, f"{what} {i}/{n}")
                if stop.is_set():
                    counter.close()
                    return SegmentationResult(np.zeros(shape, np.int32), segmenter, True)
    finally:
        segmenter.model.train()  # as published: `Segmenter.predict` uses batch statistics
    labels = output if geometry is None else geometry.restore(output)
    return SegmentationResult(labels, segmenter, False)


def check_stack_mode(source: ImageSource, stack_mode: str | None) -> int:
    """Check that `stack_mode` suits the image; return the network's number of axes.

    Parameters
    ----------
    source : ImageSource
        The image (only its shape is used: nothing is read).
    stack_mode : {"independent", "shared", "3d"} or None
        Required for images with more than two spatial axes, refused for 2-D images.

    Returns
    -------
    int
        2, or 3 for ``"3d"``.

    Raises
    ------
    ImageError
        Naming the problem and the choices.
    """
    shape = source.spatial_shape
    if stack_mode is None:
        if source.spatial_ndim != 2:
            raise ImageError(
                f"the image has {source.spatial_ndim} spatial axes (spatial shape {shape}); "
                "choose stack_mode='independent' (a model per plane), 'shared' (one model for "
                "all planes) or '3d' (a 3-D network), or pass channel_axis if one of them "
                "holds channels."
            )
        return 2
    if stack_mode not in STACK_MODES:
        raise ImageError(
            f"unknown stack_mode {stack_mode!r}; use one of {', '.join(STACK_MODES)}."
        )
    if source.spatial_ndim < 3:
        raise ImageError(
            f"stack_mode={stack_mode!r} needs a stack or volume, but the image has only 2 "
            f"spatial axes (spatial shape {shape}); leave stack_mode out for a 2-D image."
        )
    return 3 if stack_mode == "3d" else 2


def run_to_end(
    generator: Generator[Progress, None, SegmentationResult],
    on_progress: Callable[[Progress], None] | None = None,
) -> SegmentationResult:
    """Exhaust a `segment_iter` or `predict_iter` generator and return its result.

    Parameters
    ----------
    generator : generator
        Yields `Progress`, returns a `SegmentationResult`.
    on_progress : callable, optional
        Called with every `Progress` on the way.

    Returns
    -------
    SegmentationResult
    """
    while True:
        try:
            progress = next(generator)
        except StopIteration as done:
            return done.value
        if on_progress is not None:
            on_progress(progress)


def _source_of(image: Any, channel_axis: int | None, rgb: bool | None) -> ImageSource:
    """`image` as an `ImageSource` (an `ImageSource` as it is, without channel options)."""
    if isinstance(image, ImageSource):
        if channel_axis is not None or rgb is not None:
            raise ImageError(
                "an ImageSource already knows its channels; do not pass channel_axis or rgb "
                "with it."
            )
        return image
    return ImageSource(image, channel_axis=channel_axis, rgb=rgb)


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= 0:
        raise ImageError(f"memory_budget must be a positive number of bytes, got {budget!r}.")
    return int(budget)


def _model_spacing(
    spacing: Sequence[float] | None, shape: tuple[int, ...], model_dims: int
) -> tuple[float, ...] | None:
    """The spacing of the network's axes, from one per spatial axis or one per model axis."""
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) not in (len(shape), model_dims):
        raise ImageError(
            f"spacing {values} must have one entry per spatial axis ({len(shape)}) or per "
            f"network axis ({model_dims})."
        )
    return values[-model_dims:]


@dataclass
class _Job:
    source: ImageSource
    config: Config
    runtime: dict[str, Any]
    spacing: tuple[float, ...] | None
    budget: int
    tile_shape: tuple[int, ...] | None
    n_crops: int
    resample_every: int
    stop: StopFlag
    preview_every: int
    step: int = 0
    total: int = 0

    # -- sizes ----------------------------------------------------------------------------
    def needs_tiling(self, model_shape: Sequence[int], has_lead: bool) -> bool:
        return (
            has_lead
            or self.tile_shape is not None
            or not fits_budget(model_shape, self.config.n_channels, self.budget)
        )

    def predict_tile(self, model_shape: Sequence[int]) -> tuple[int, ...]:
        if self.tile_shape is not None:
            return self.tile_shape
        per_pixel = working_set_bytes(1, self.config.n_channels, training=False)
        # Leave room for the margin on every side of the tile.
        return shape_for_budget(model_shape, max(1, int(self.budget / per_pixel / 1.2)))

    def crop_shape(self, model_shape: Sequence[int]) -> tuple[int, ...]:
        per_pixel = working_set_bytes(1, self.config.n_channels, training=True)
        return shape_for_budget(model_shape, max(1, self.budget // per_pixel // self.n_crops))

    def segmenter(self) -> Segmenter:
        from napari_kanezaki.core.segmenter import Segmenter

        return Segmenter(self.config, spacing=self.spacing, **self.runtime)

    # -- progress ---------------------------------------------------------------------------
    def _training(self, states, key: str, n_updates: int | None = None):
        """Yield Progress for training states; stop early when asked. Returns the last state."""
        start = self.step
        for state in states:
            self.step = start + state.iteration
            labels = None
            if self.preview_every and state.iteration % self.preview_every == 0 and not state.done:
                labels = state.labels()
            text = f"{key}{state.status()}"
            yield Progress(self.step, self.total, text, labels)
            if self.stop.is_set():
                break
        self.step = start + (self.config.max_iter if n_updates is None else n_updates)

    def _tiles_progress(self, counter, n: int, key: str, what: str):
        start = self.step
        for i in counter:
            self.step = start + i
            yield Progress(self.step, self.total, f"{key}{what} {i}/{n}")

    # -- one image or volume ---------------------------------------------------------------
    def single(
        self,
        source: ImageSource | _Plane,
        model_dims: int,
        output: Any,
        prefix: tuple[int, ...],
        scribbles: np.ndarray | None,
        index: int,
        count: int,
    ):
        """Train a fresh model on `source` and predict it into ``output[prefix]``."""
        shape = tuple(source.spatial_shape)
        n_lead = len(shape) - model_dims
        model_shape = shape[n_lead:]
        tiled = self.needs_tiling(model_shape, has_lead=n_lead > 0)
        key = f"plane {index + 1}/{count}: " if count > 1 else ""
        segmenter = self.segmenter()
        n_norms = self.config.n_conv + 1
        if not tiled:
            if self.total == 0:
                self.total = count * (self.config.max_iter + 1)
            x = NormalizedImage(source.read())
            yield from self._training(segmenter.run(x, scribbles), key)
            labels = segmenter.predict(x)
            output[prefix] = labels
            self.step += 1
            yield Progress(self.step, self.total, f"{key}{int(labels.max())} labels")
            return segmenter
        crop = self.crop_shape(model_shape)
        tile = self.predict_tile(model_shape)
        _LOG.info("%s: working set over the memory budget (%.1f GiB): training on random "
                  "crops of %s, predicting in tiles of %s", key or "image",
                  self.budget / 1024**3, crop, tile)
        crop_key = f"{key}random crops {'x'.join(map(str, crop))}: "
        tiles = iter_tiles(shape, tile, self.config.n_conv)
        if self.total == 0:
            self.total = count * (self.config.max_iter + len(tiles) * (n_norms + 1))
        states = train_on_crops(
            segmenter,
            source,
            crop,
            n_crops=self.n_crops,
            resample_every=self.resample_every,
            scribbles=scribbles,
        )
        yield from self._training(states, crop_key)
        try:
            n = len(tiles)
            yield from self._tiles_progress(
                fix_batchnorm_statistics(segmenter, source, tiles), n * n_norms, key,
                "BatchNorm statistics, tile",
            )
            yield from self._tiles_progress(
                predict_tiles(segmenter, source, tiles, output, prefix), n, key, "predicting tile"
            )
        finally:
            assert segmenter.model is not None
            segmenter.model.train()  # as published: `Segmenter.predict` uses batch statistics
        return segmenter

    # -- independent planes ----------------------------------------------------------------
    def independent(self, output: Any, scribbles: np.ndarray | None):
        lead_shape = self.source.spatial_shape[:-2]
        planes = list(np.ndindex(*lead_shape))
        segmenter = None
        for i, lead in enumerate(planes):
            if self.stop.is_set():
                break
            lead = tuple(int(j) for j in lead)
            plane_scribbles = None if scribbles is None else scribbles[lead]
            if plane_scribbles is not None and not plane_scribbles.any():
                plane_scribbles = None  # nothing scribbled on this plane
            segmenter = yield from self.single(
                _Plane(self.source, lead), 2, output, lead, plane_scribbles, i, len(planes)
            )
        return segmenter

    # -- one shared model over planes ------------------------------------------------------
    def shared(self, output: Any, tile: tuple[int, ...]):
        from napari_kanezaki.core.segmenter import Segmenter

        shape = self.source.spatial_shape
        lead_shape = shape[:-2]
        planes = [tuple(int(j) for j in lead) for lead in np.ndindex(*lead_shape)]
        config = self.config
        tiles = iter_tiles(shape, tile, config.n_conv)
        n_norms = config.n_conv + 1
        self.total = config.max_iter + len(tiles) * (n_norms + 1)
        segmenter = Segmenter(config, spacing=self.spacing, **self.runtime)
        images = _PlaneList(self.source, planes)
        states = segmenter.fit_in_turn(images)
        yield from self._training(states, f"shared model ({len(planes)} planes): ")
        try:
            yield from self._tiles_progress(
                fix_batchnorm_statistics(segmenter, self.source, tiles),
                len(tiles) * n_norms,
                "",
                "BatchNorm statistics of the stack, tile",
            )
            yield from self._tiles_progress(
                predict_tiles(segmenter, self.source, tiles, output), len(tiles), "",
                "predicting tile",
            )
        finally:
            assert segmenter.model is not None
            segmenter.model.train()
        return segmenter


class _PlaneList(Sequence):
    """The planes of a stack as a sequence of `NormalizedImage`, read on access."""

    def __init__(self, source: ImageSource, planes: list[tuple[int, ...]]) -> None:
        self._source = source
        self._planes = planes

    def __len__(self) -> int:
        return len(self._planes)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return NormalizedImage(self._source.read(self._planes[i]))

