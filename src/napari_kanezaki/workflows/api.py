"""One-call segmentation for scripts and the command line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_kanezaki.core.config import Config, ConfigError, config_for_method

__all__ = ["segment"]

_RUNTIME_OPTIONS = ("seed", "device", "precision", "channel_axis")

#: Keys of `segment`'s ``object_options`` (keyword arguments of `imaging.objects.to_objects`).
OBJECT_OPTIONS = ("background", "per_class", "min_size", "split_touching", "split_seeds",
                  "min_distance", "fill")


def segment(
    image: np.ndarray,
    method: str = "st",
    scribbles: np.ndarray | None = None,
    config: Config | None = None,
    *,
    stack_mode: str | None = None,
    spacing: Sequence[float] | None = None,
    rgb: bool | None = None,
    memory_budget: int | None = None,
    tile_shape: Sequence[int] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    objects: bool = False,
    object_options: Mapping[str, Any] | None = None,
    runs: int = 1,
    **options: Any,
) -> Any:
    """Segment an image without labels: train a fresh network on it and return its labels.

    Parameters
    ----------
    image : array_like
        2-D grey ``(H, W)``, RGB ``(H, W, 3)``, or multichannel with ``channel_axis``;
        stacks and volumes (``(Z, Y, X)``, ``(T, Z, Y, X)``, ...) with `stack_mode`. NumPy,
        dask or zarr arrays; large ones are read region by region. uint8 is scaled by
        1/255 as in the papers; other dtypes (uint16, float) by robust per-channel
        percentiles.
    method : {"st", "sp"}
        ``"st"``: similarity + continuity loss (TIP 2020), the only one that takes
        scribbles; ``"sp"``: superpixel refinement (ICASSP 2018).
    scribbles : array_like, optional
        Label image, 0 = not scribbled, k = class k; scribbled classes keep their ids.
    config : SPConfig or STConfig, optional
        Base settings (default: the paper's). Must match `method`.
    stack_mode : {"independent", "shared", "3d"}, optional
        For images with more than two spatial axes: a model per plane, one model shared
        by all planes (same material, same id in every plane), or a 3-D network. See
        `napari_kanezaki.workflows.stacks`.
    spacing : sequence of float, optional
        Pixel/voxel size per spatial axis (anisotropic volumes: weights the 3-D continuity
        term per axis and is SLIC's spacing).
    rgb : bool, optional
        Whether the last axis is RGB(A) (default: guessed from a length of 3 or 4).
    memory_budget : int, optional
        Bytes the network may use (default: 60 % of the memory available at the call, see
        `imaging.tiles.default_memory_budget`). An image trains whole when
        ``pixels x n_channels x 4 B x 10`` fits it (e.g. 1000x1000 at 100 channels: 4 GB);
        larger inputs are trained on random crops (announced in the progress text and the
        ``napari_kanezaki`` log) and predicted tile by tile with exact stitching. The command
        line and the widgets decide the same way.
    tile_shape : sequence of int, optional
        Force tiled prediction with tiles of this size (one entry per network axis).
    out : str or Path, optional
        Write the labels to a new zarr store here and return the zarr array.
    overwrite : bool
        Allow replacing an existing `out`.
    objects : bool
        Return objects (instance labels: cells, nuclei) instead of the classes: the class
        labels are turned into objects by `imaging.objects.to_objects` (foreground = every
        class but the background, its connected components, touching objects split
        by a watershed on the distance transform, small ones removed). The background is
        ``object_options["background"]``, else the class painted with scribble label 1, else
        the class covering most of the image border. Objects are 2-D per plane, 3-D per
        volume with ``stack_mode="3d"`` (`spacing` is used); ids are unique over the array.
        Not with `out`.
    object_options : mapping, optional
        With `objects`: ``background`` (class id or ids, ``"membranes"``, or ``"bright"``
        / ``"dark"``: the classes brighter / darker than the image), ``per_class`` (default False:
        the foreground classes are merged), ``min_size`` (pixels/voxels, default 20),
        ``split_touching`` (default True), ``min_distance`` (between object centres, in
        pixels of the finest axis, default 5); see `to_objects`.
    runs : int
        With `objects`: train this many networks, with seeds ``seed``, ``seed + 1``, ...,
        and take as background the pixels that more than half of them put in their
        background classes (`imaging.objects.consensus_objects`): runs differ in where
        they draw a thin membrane class, and one that went astray is outvoted. Takes
        `runs` times as long. Default 1: one run, `to_objects`.
    **options
        Any configuration field by name (e.g. ``max_iter=200``, ``n_segments=4000``),
        plus ``seed`` (default 0), ``device`` (default ``"auto"``), ``precision``
        (default ``"auto"``) and ``channel_axis``.

    Returns
    -------
    numpy.ndarray or zarr.Array
        int32 labels 1..K of the image's spatial shape, largest segment first (numbered
        per plane with ``stack_mode="independent"``); a zarr array when `out` is given.
        With ``objects=True``: int32 objects instead, 0 = background, 1..N numbered in
        raster order of their first pixel.

    Examples
    --------
    >>> labels = segment(image, method="sp", max_iter=200, seed=1)
    >>> cells = segment(image, method="sp", objects=True, object_options={"min_size": 50})
    """
    object_options = _check_objects(objects, object_options, out)
    from napari_kanezaki.imaging.objects import check_runs

    check_runs(runs, objects, bool(object_options.get("per_class")))
    first_seed = options.pop("seed", 0)
    labels = [
        _segment(image, method, scribbles, config, stack_mode=stack_mode, spacing=spacing,
                 rgb=rgb, memory_budget=memory_budget, tile_shape=tile_shape, out=out,
                 overwrite=overwrite, seed=first_seed + run, **options)
        for run in range(runs)
    ]
    if not objects:
        return labels[0]
    from napari_kanezaki.imaging.objects import consensus_objects, needs_image, to_objects
    from napari_kanezaki.imaging.sources import grey_image

    ndim = 3 if stack_mode == "3d" else 2
    grey = None
    if needs_image(object_options):
        grey = grey_image(image, channel_axis=options.get("channel_axis"), rgb=rgb)
    return (to_objects if runs == 1 else consensus_objects)(
        labels[0] if runs == 1 else labels,
        image=grey,
        scribbles=scribbles,
        spacing=None if spacing is None else tuple(spacing)[-ndim:],
        ndim=ndim,
        **object_options,
    )


def _check_objects(
    objects: bool, object_options: Mapping[str, Any] | None, out: Any
) -> dict[str, Any]:
    """The keyword arguments of `to_objects` (checked before any training)."""
    options = dict(object_options or {})
    if options and not objects:
        raise ValueError("object_options is given but objects=False; pass objects=True.")
    if objects and out is not None:
        raise ValueError(
            "objects=True returns the objects in memory and cannot be combined with out; "
            "segment to out, then call imaging.objects.to_objects on the labels."
        )
    unknown = sorted(set(options) - set(OBJECT_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown object option(s) {', '.join(unknown)}; valid keys are: "
            f"{', '.join(OBJECT_OPTIONS)}."
        )
    return options


def _segment(
    image: np.ndarray,
    method: str,
    scribbles: np.ndarray | None,
    config: Config | None,
    *,
    stack_mode: str | None,
    spacing: Sequence[float] | None,
    rgb: bool | None,
    memory_budget: int | None,
    tile_shape: Sequence[int] | None,
    out: str | Path | None,
    overwrite: bool,
    **options: Any,
) -> Any:
    """The class labels of `segment`."""
    from napari_kanezaki.core.segmenter import Segmenter

    config_class = config_for_method(method)
    if config is None:
        config = config_class()
    elif not isinstance(config, config_class):
        raise ConfigError(
            f"config is a {type(config).__name__} but method={method!r}; pass a "
            f"{config_class.__name__} or change method."
        )
    runtime = {k: options.pop(k) for k in _RUNTIME_OPTIONS if k in options}
    if options:
        config = config.replace(**options)
    channel_axis = runtime.get("channel_axis")
    if _needs_engine(image, config, channel_axis, stack_mode, rgb, memory_budget, tile_shape, out):
        from napari_kanezaki.workflows.stacks import run_to_end, segment_iter

        result = run_to_end(
            segment_iter(
                image,
                config,
                stack_mode=stack_mode,
                scribbles=scribbles,
                channel_axis=channel_axis,
                rgb=rgb,
                spacing=spacing,
                seed=runtime.get("seed", 0),
                device=runtime.get("device", "auto"),
                precision=runtime.get("precision", "auto"),
                memory_budget=memory_budget,
                tile_shape=tile_shape,
                out=out,
                overwrite=overwrite,
            )
        )
        return result.labels
    segmenter = Segmenter(
        config,
        device=runtime.get("device", "auto"),
        seed=runtime.get("seed", 0),
        precision=runtime.get("precision", "auto"),
        spacing=spacing,
    )
    for _ in segmenter.run(image, scribbles, channel_axis=channel_axis):
        pass
    return segmenter.predict(image, channel_axis=channel_axis)


def _needs_engine(
    image: Any,
    config: Config,
    channel_axis: int | None,
    stack_mode: str | None,
    rgb: bool | None,
    memory_budget: int | None,
    tile_shape: Sequence[int] | None,
    out: str | Path | None,
) -> bool:
    """False for a plain in-memory 2-D image that fits the budget: the published path."""
    if stack_mode is not None or tile_shape is not None or out is not None or rgb is not None:
        return True
    if not isinstance(image, np.ndarray):
        return True  # dask, zarr, lists...: read by ImageSource
    from napari_kanezaki.imaging.sources import ImageSource
    from napari_kanezaki.imaging.tiles import default_memory_budget, fits_budget

    source = ImageSource(image, channel_axis=channel_axis)
    if source.spatial_ndim != 2:
        return True  # the engine explains which stack_mode to choose
    budget = default_memory_budget() if memory_budget is None else memory_budget
    return not fits_budget(source.spatial_shape, config.n_channels, budget)

