"""Segmenting one image, stack or volume array and writing its outputs.

`process_image` trains a fresh `Segmenter` on a 2-D image (or loads a model file),
predicts it and writes the labels TIFF, the overlay PNG and the model. `process_stack`
runs stacks and volumes (one of the three stack modes) and large images (``memory_budget``,
``tile_shape`` or a zarr output) with `stacks.segment_iter`, tiling within the memory
budget; it applies the 2-D preprocessing plane by plane (`planes.preprocess_planes`),
writes the labels as a TIFF or as a zarr store ``<stem>_labels.zarr``, and the overlay of
the middle plane.

With ``outputs.objects`` set, both also write the objects (instance labels of
`imaging.objects.to_objects`, 2-D per plane or 3-D per volume in ``3d`` mode) as the
lossless int32 TIFF ``<stem>_objects.tif``.

Outputs are written under temporary names (`outputs.partial_path`) and renamed at the end,
the labels last, so an image whose label file exists is complete.

Importing this module imports neither torch nor dask (they load when an image is segmented).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_kanezaki.imaging.membranes import apply_membrane_filter
from napari_kanezaki.imaging.objects import check_runs
from napari_kanezaki.workflows.outputs import (
    OutputPaths,
    display_image,
    display_plane,
    partial_path,
    plane_chunks,
)

__all__ = ["process_image", "process_stack"]


def process_image(
    image: np.ndarray,
    outputs: OutputPaths,
    config: Any,
    *,
    scribbles: np.ndarray | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    channel_axis: int | None = None,
    overwrite: bool = False,
    model: str | Path | None = None,
    progress: Callable[[Any], None] | None = None,
    object_options: Mapping[str, Any] | None = None,
    memory_budget: int | None = None,
    tile_shape: Sequence[int] | None = None,
    runs: int = 1,
    membranes: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """Segment one image array and write its outputs (labels TIFF, overlay PNG, model).

    Parameters
    ----------
    image : numpy.ndarray
        The image (never modified).
    outputs : OutputPaths
        Destinations; ``outputs.model`` None writes no model, ``outputs.objects`` set
        writes the objects.
    config : SPConfig or STConfig
        Settings (ignored when `model` is given).
    scribbles : numpy.ndarray, optional
        napari-style scribbles (ST only).
    seed, device, precision, channel_axis
        As for `Segmenter`.
    overwrite : bool
        Replace existing outputs; otherwise an existing one raises `FileExistsError` before
        any work is done.
    model : path, optional
        Predict with this model file instead of training.
    progress : callable, optional
        Called with every `TrainingState`.
    object_options : mapping, optional
        Keyword arguments of `to_objects` (``background``, ``min_size``, ...) for the
        objects; the background rule also sees `scribbles`.
    memory_budget : int, optional
        With `model`: bytes the prediction may use (default: `default_memory_budget`);
        over it the image is predicted tile by tile (`stacks.predict_iter`, the same labels).
    tile_shape : sequence of int, optional
        With `model`: force tiled prediction with tiles of this size (two entries).
    runs : int
        With objects: train this many networks (seeds ``seed``, ``seed + 1``, ...) and
        write the objects of their majority vote (`consensus_objects`); the labels, overlay
        and model are the first run's.
    membranes : mapping, optional
        Train on the membrane response (`imaging.membranes.membrane_filter` record) instead
        of the image; the model file carries it. With `model`, the file's own record
        applies (`stacks.predict_iter`) and this must be None.

    Returns
    -------
    labels : numpy.ndarray
        int32 labels of the image's spatial shape.
    segmenter : Segmenter
    """
    from napari_kanezaki.core.segmenter import Segmenter
    from napari_kanezaki.imaging.io import save_labels, save_overlay
    from napari_kanezaki.imaging.sources import grey_image

    _refuse_existing(outputs, overwrite)
    check_runs(runs, outputs.objects is not None and model is None)
    if membranes is not None:
        if model is not None:
            raise ValueError("a model file carries its own membrane filter; do not pass "
                             "membranes with model.")
        image = apply_membrane_filter(image, dict(membranes))
    if model is not None:
        from napari_kanezaki.workflows.stacks import predict_iter, run_to_end

        segmenter = Segmenter.load(model, device=device, precision=precision)
        labels = run_to_end(predict_iter(segmenter, image, channel_axis=channel_axis,
                                         memory_budget=memory_budget,
                                         tile_shape=tile_shape)).labels
        every_run = [labels]
    else:
        def train(run_seed: int) -> tuple[np.ndarray, Segmenter]:
            trained = Segmenter(config, device=device, seed=run_seed, precision=precision)
            trained.membranes = None if membranes is None else dict(membranes)
            for state in trained.run(image, scribbles, channel_axis=channel_axis):
                if progress is not None:
                    progress(state)
            return trained.predict(image, channel_axis=channel_axis), trained

        labels, segmenter = train(seed)
        every_run = [labels] + [train(seed + k)[0] for k in range(1, runs)]
    outputs.labels.parent.mkdir(parents=True, exist_ok=True)
    temporary = []
    try:
        if outputs.model is not None:
            temporary.append((segmenter.save(partial_path(outputs.model), overwrite=True),
                              outputs.model))
        temporary.append((save_overlay(partial_path(outputs.overlay),
                                       display_image(image, channel_axis),
                                       labels, overwrite=True), outputs.overlay))
        if outputs.objects is not None:
            temporary.append((_save_objects(outputs.objects, every_run, scribbles, 2, None,
                                            object_options,
                                            lambda: grey_image(image, channel_axis=channel_axis)),
                              outputs.objects))
        temporary.append((save_labels(partial_path(outputs.labels), labels, overwrite=True),
                          outputs.labels))
        for tmp, final in temporary:  # labels last: their presence marks a complete job
            if final.exists() and not overwrite:
                raise FileExistsError(f"{final} appeared while segmenting; not replacing it.")
            os.replace(tmp, final)
    finally:
        for tmp, _ in temporary:
            if tmp.exists():
                tmp.unlink()
    return labels, segmenter


def process_stack(
    image: Any,
    outputs: OutputPaths,
    config: Any,
    *,
    stack_mode: str | None = None,
    scribbles: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    memory_budget: int | None = None,
    tile_shape: Sequence[int] | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    channel_axis: int | None = None,
    overwrite: bool = False,
    progress: Callable[[Any], None] | None = None,
    object_options: Mapping[str, Any] | None = None,
    runs: int = 1,
    membranes: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Segment a stack, volume or large image with `stacks.segment_iter` and write its outputs.

    Parameters
    ----------
    image : array_like
        NumPy array or memory map (e.g. from `io.open_image`; never modified), 2-D or with
        more spatial axes; any dtype (normalised once for the whole stack).
    outputs : OutputPaths
        Destinations: labels ``.tif`` or ``.zarr`` (a zarr store, written region by
        region), the overlay PNG of the middle plane (every leading axis at its middle
        index), the model (None: none written) and the objects TIFF (None: none written;
        not with a zarr store).
    config : SPConfig or STConfig
        Settings. The 2-D preprocessing (``crop_bottom``, ``resize_multiple``, ``clahe``,
        ``median_blur``) is applied to every plane on its last two axes (see
        `planes.preprocess_planes`; this loads the normalised stack in memory) and
        the labels are mapped back plane by plane; ``augment_clahe`` is refused.
    stack_mode : {"independent", "shared", "3d"}, optional
        Required for images with more than two spatial axes, refused for 2-D images.
    scribbles : numpy.ndarray, optional
        ST only, napari-style, of the image's spatial shape.
    spacing, memory_budget, tile_shape, seed, device, precision, channel_axis
        As for `stacks.segment_iter`.
    overwrite : bool
        Replace existing outputs; otherwise an existing one raises `FileExistsError`
        before any work is done.
    progress : callable, optional
        Called with every `results.Progress` (step, total, text).
    object_options : mapping, optional
        Keyword arguments of `to_objects` for the objects: 3-D per volume (with the last
        three entries of `spacing`) in ``3d`` mode, else 2-D per plane (the last two).
    runs : int
        With objects: this many trainings (seeds ``seed``, ``seed + 1``, ...), the objects
        of their majority vote (`consensus_objects`); labels, overlay and model are the
        first run's. The further runs' labels are held in memory.
    membranes : mapping, optional
        Train on the membrane response of the image (read whole; an
        `imaging.membranes.membrane_filter` record); the model file carries it.

    Returns
    -------
    labels : numpy.ndarray or zarr.Array
        int32 labels of the image's spatial shape (the zarr array at ``outputs.labels``
        when it is a ``.zarr`` store).
    segmenter : Segmenter or None
        The model (shared, 3d, 2-D) or the last plane's (independent).
    """
    import shutil

    from napari_kanezaki.imaging.io import save_labels, save_overlay
    from napari_kanezaki.imaging.planes import (
        apply_planes,
        check_stack_preprocessing,
        preprocess_planes,
        restore_planes,
        without_preprocessing,
    )
    from napari_kanezaki.imaging.preprocessing import is_active
    from napari_kanezaki.imaging.sources import ImageSource, grey_image
    from napari_kanezaki.imaging.tiles import create_output
    from napari_kanezaki.workflows.stacks import check_stack_mode, run_to_end, segment_iter

    _refuse_existing(outputs, overwrite)
    to_zarr = outputs.labels.suffix == ".zarr"
    if to_zarr and outputs.objects is not None:
        raise ValueError("objects are written as a TIFF beside TIFF labels, not with a zarr "
                         "store; drop --zarr (zarr=False) or --objects.")
    check_runs(runs, outputs.objects is not None)
    if membranes is not None:
        image = apply_membrane_filter(image, dict(membranes))
    source = ImageSource(image, channel_axis=channel_axis)
    check_stack_mode(source, stack_mode)
    check_stack_preprocessing(config)
    engine_source, engine_config, geometry = source, config, None
    user_scribbles = scribbles  # of the image's shape, as the labels come back
    if is_active(config):
        planes, geometry = preprocess_planes(source.read(), config)
        engine_source = ImageSource.from_normalized(planes)
        engine_config = without_preprocessing(config)
        scribbles = apply_planes(scribbles, geometry)
    reshaped = geometry is not None and not geometry.identity
    outputs.labels.parent.mkdir(parents=True, exist_ok=True)
    tmp_labels = partial_path(outputs.labels)
    temporary: list[tuple[Path, Path]] = []
    try:
        generator = segment_iter(
            engine_source,
            engine_config,
            stack_mode=stack_mode,
            scribbles=scribbles,
            spacing=spacing,
            seed=seed,
            device=device,
            precision=precision,
            memory_budget=memory_budget,
            tile_shape=tile_shape,
            out=tmp_labels if to_zarr and not reshaped else None,
            overwrite=True,
        )
        result = run_to_end(generator, progress)
        labels = result.labels
        if reshaped:
            assert geometry is not None
            labels = restore_planes(labels, geometry)
            if to_zarr:
                store = create_output(labels.shape, tmp_labels, chunks=plane_chunks(labels.shape),
                                      overwrite=True)
                store[...] = labels
        every_run = [labels]
        for k in range(1, runs):  # further runs for the objects' vote: labels in memory
            extra = run_to_end(segment_iter(
                engine_source, engine_config, stack_mode=stack_mode, scribbles=scribbles,
                spacing=spacing, seed=seed + k, device=device, precision=precision,
                memory_budget=memory_budget, tile_shape=tile_shape), progress).labels
            every_run.append(restore_planes(extra, geometry) if reshaped else extra)
        segmenter = result.segmenter
        if outputs.model is not None and segmenter is not None:
            segmenter.config = config  # what a later `predict` must apply to its inputs
            segmenter.membranes = None if membranes is None else dict(membranes)
            temporary.append((segmenter.save(partial_path(outputs.model), overwrite=True),
                              outputs.model))
        middle = tuple(n // 2 for n in source.spatial_shape[:-2])
        temporary.append((
            save_overlay(partial_path(outputs.overlay), display_plane(source.read(middle)),
                         np.asarray(labels[middle]), overwrite=True),
            outputs.overlay,
        ))
        if outputs.objects is not None:
            ndim = 3 if stack_mode == "3d" else 2
            temporary.append((
                _save_objects(outputs.objects, [np.asarray(r) for r in every_run],
                              user_scribbles, ndim,
                              spacing, object_options, lambda: grey_image(source)),
                outputs.objects,
            ))
        if to_zarr:
            temporary.append((tmp_labels, outputs.labels))
        else:
            temporary.append((save_labels(tmp_labels, np.asarray(labels), overwrite=True),
                              outputs.labels))
        for tmp, final in temporary:  # labels last: their presence marks a complete job
            if final.exists():
                if not overwrite:
                    raise FileExistsError(f"{final} appeared while segmenting; not replacing it.")
                if final.is_dir():
                    shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        for tmp in {t for t, _ in temporary} | {tmp_labels}:
            if tmp.is_dir():
                shutil.rmtree(tmp)
            elif tmp.exists():
                tmp.unlink()
    if to_zarr:
        import zarr

        labels = zarr.open_array(str(outputs.labels), mode="r")
    return labels, segmenter


def _refuse_existing(outputs: OutputPaths, overwrite: bool) -> None:
    """Raise `FileExistsError` for existing outputs unless `overwrite` (before any work)."""
    if not overwrite:
        existing = [str(p) for p in outputs.all() if p.exists()]
        if existing:
            raise FileExistsError(
                f"{', '.join(existing)} already exist(s); pass --overwrite (overwrite=True) "
                "or choose another output folder."
            )


def _save_objects(
    path: Path,
    runs: Sequence[np.ndarray],
    scribbles: np.ndarray | None,
    ndim: int,
    spacing: Sequence[float] | None,
    options: Mapping[str, Any] | None,
    read_image: Callable[[], np.ndarray],
) -> Path:
    """Write the objects of the runs' labels under `path`'s temporary name; return that name.

    One run: `to_objects`; several: `consensus_objects`. `read_image` gives the grey image,
    read only for a background chosen by intensity.
    """
    from napari_kanezaki.imaging.io import save_labels
    from napari_kanezaki.imaging.objects import consensus_objects, needs_image, to_objects

    options = dict(options or {})
    objects = (to_objects if len(runs) == 1 else consensus_objects)(
        runs[0] if len(runs) == 1 else runs,
        image=read_image() if needs_image(options) else None,
        scribbles=scribbles,
        spacing=None if spacing is None else tuple(spacing)[-ndim:],
        ndim=ndim,
        **options,
    )
    return save_labels(partial_path(path), objects, overwrite=True)
