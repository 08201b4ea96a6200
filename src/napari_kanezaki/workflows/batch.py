"""Segmenting many image files: one job per image, run in-process or on a Dask cluster.

A `Job` is plain data (paths, the config as a dict, seed, device), so it pickles to any
dask.distributed worker. `run_job` never raises: a failing or unreadable image becomes a
``"failed"`` `JobResult` and the other jobs go on. Outputs are written under temporary names
and renamed at the end, the label TIFF last, so a job whose label file exists is complete;
`run_jobs` skips such jobs (resume) unless ``overwrite`` is set.

Stacks and volumes (a `Job` with ``stack_mode``) and large images (``memory_budget``,
``tile_shape`` or ``zarr``) go through the same jobs and the same Dask path: `process_stack`
runs them with `stacks.segment_iter` (one of the three stack modes, tiling within the memory
budget), applies the 2-D preprocessing plane by plane (`planes.preprocess_planes`),
writes the labels as a TIFF or, with ``zarr``, as a zarr store ``<stem>_labels.zarr``, and
the overlay of the middle plane.

Importing this module imports neither torch nor dask (they load when jobs run).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Job",
    "JobResult",
    "OutputPaths",
    "output_paths",
    "process_image",
    "process_stack",
    "run_job",
    "run_jobs",
    "plan_workers",
]


@dataclass(frozen=True)
class OutputPaths:
    """Where the results of one image go."""

    labels: Path
    overlay: Path
    model: Path | None

    def all(self) -> list[Path]:
        """Every output path (the model's only when one is written)."""
        return [p for p in (self.model, self.overlay, self.labels) if p is not None]


def output_paths(
    outdir: str | Path, stem: str, *, model: bool = True, zarr: bool = False
) -> OutputPaths:
    """``<stem>_labels.tif``, ``<stem>_overlay.png``, ``<stem>_model.pt`` in `outdir`.

    An empty `stem` gives the bare names ``labels.tif``, ``overlay.png``, ``model.pt``;
    `zarr` makes the labels a zarr store ``<stem>_labels.zarr``.
    """
    outdir = Path(outdir)
    prefix = f"{stem}_" if stem else ""
    return OutputPaths(
        labels=outdir / f"{prefix}labels.{'zarr' if zarr else 'tif'}",
        overlay=outdir / f"{prefix}overlay.png",
        model=outdir / f"{prefix}model.pt" if model else None,
    )


@dataclass(frozen=True)
class Job:
    """One image to segment: train a fresh model on it, or predict it with a model file.

    Attributes
    ----------
    name : str
        Output stem (unique within a run).
    image : Path
        Image file.
    outdir : Path
        Output folder.
    config : dict
        ``Config.to_dict()`` of the run (ignored when `model` is set: the file's config is used).
    seed, device, precision
        `Segmenter` arguments.
    scribbles : Path, optional
        Scribble file (ST only).
    scribble_format : {"napari", "published"}
        ``"napari"``: 0 = not scribbled, k = class k; ``"published"``: the TIP 2020 code's
        8-bit files, 255 = not scribbled.
    model : Path, optional
        Model file: predict with it instead of training.
    save_model : bool
        Write the trained model next to the labels.
    channel_axis : int, optional
        Channel axis of multichannel images.
    overwrite : bool
        Replace existing outputs.
    torch_threads : int, optional
        Intra-op threads of torch for this job (None: leave as is, or on a dask worker
        ``cores // worker threads``).
    stack_mode : {"independent", "shared", "3d"}, optional
        For stacks and volumes (see `stacks`); required for them, refused for 2-D images.
        ``"independent"`` writes no model (every plane has its own).
    spacing : tuple of float, optional
        Pixel/voxel size per spatial axis (e.g. Z, Y, X).
    memory_budget : int, optional
        Bytes the network may use (default 2 GiB); larger inputs are trained on crops and
        predicted in tiles.
    tile_shape : tuple of int, optional
        Force tiled prediction with tiles of this size (one entry per network axis).
    zarr : bool
        Write the labels as a zarr store ``<stem>_labels.zarr`` instead of a TIFF.
    """

    name: str
    image: Path
    outdir: Path
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    scribbles: Path | None = None
    scribble_format: str = "napari"
    model: Path | None = None
    save_model: bool = True
    channel_axis: int | None = None
    overwrite: bool = False
    torch_threads: int | None = None
    stack_mode: str | None = None
    spacing: tuple[float, ...] | None = None
    memory_budget: int | None = None
    tile_shape: tuple[int, ...] | None = None
    zarr: bool = False

    @property
    def uses_engine(self) -> bool:
        """True when the job runs through `process_stack` (stacks, tiling, zarr output)."""
        return (
            self.stack_mode is not None
            or self.memory_budget is not None
            or self.tile_shape is not None
            or self.zarr
            or self.spacing is not None
        )

    @property
    def outputs(self) -> OutputPaths:
        """Output paths of this job."""
        model = self.save_model and self.model is None and self.stack_mode != "independent"
        return output_paths(self.outdir, self.name, model=model, zarr=self.zarr)


@dataclass(frozen=True)
class JobResult:
    """Outcome of one job: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    name: str
    status: str
    message: str = ""
    n_labels: int = 0
    seconds: float = 0.0


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
) -> tuple[np.ndarray, Any]:
    """Segment one image array and write its outputs (labels TIFF, overlay PNG, model).

    Parameters
    ----------
    image : numpy.ndarray
        The image (never modified).
    outputs : OutputPaths
        Destinations; ``outputs.model`` None writes no model.
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

    Returns
    -------
    labels : numpy.ndarray
        int32 labels of the image's spatial shape.
    segmenter : Segmenter
    """
    from napari_kanezaki.core.segmenter import Segmenter
    from napari_kanezaki.imaging.io import save_labels, save_overlay

    if not overwrite:
        existing = [str(p) for p in outputs.all() if p.exists()]
        if existing:
            raise FileExistsError(
                f"{', '.join(existing)} already exist(s); pass --overwrite (overwrite=True) "
                "or choose another output folder."
            )
    if model is not None:
        segmenter = Segmenter.load(model, device=device, precision=precision)
    else:
        segmenter = Segmenter(config, device=device, seed=seed, precision=precision)
        for state in segmenter.run(image, scribbles, channel_axis=channel_axis):
            if progress is not None:
                progress(state)
    labels = segmenter.predict(image, channel_axis=channel_axis)
    outputs.labels.parent.mkdir(parents=True, exist_ok=True)
    temporary = []
    try:
        if outputs.model is not None:
            temporary.append((segmenter.save(_tmp(outputs.model), overwrite=True), outputs.model))
        temporary.append((save_overlay(_tmp(outputs.overlay), _display(image, channel_axis),
                                       labels, overwrite=True), outputs.overlay))
        temporary.append((save_labels(_tmp(outputs.labels), labels, overwrite=True),
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
        index), and the model (None: none written).
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
        Called with every `stacks.Progress` (step, total, text).

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
    from napari_kanezaki.imaging.sources import ImageSource
    from napari_kanezaki.imaging.tiles import create_output
    from napari_kanezaki.workflows.stacks import check_stack_mode, segment_iter

    if not overwrite:
        existing = [str(p) for p in outputs.all() if p.exists()]
        if existing:
            raise FileExistsError(
                f"{', '.join(existing)} already exist(s); pass --overwrite (overwrite=True) "
                "or choose another output folder."
            )
    source = ImageSource(image, channel_axis=channel_axis)
    check_stack_mode(source, stack_mode)
    check_stack_preprocessing(config)
    engine_source, engine_config, geometry = source, config, None
    if is_active(config):
        planes, geometry = preprocess_planes(source.read(), config)
        engine_source = ImageSource.from_normalized(planes)
        engine_config = without_preprocessing(config)
        scribbles = apply_planes(scribbles, geometry)
    to_zarr = outputs.labels.suffix == ".zarr"
    reshaped = geometry is not None and not geometry.identity
    outputs.labels.parent.mkdir(parents=True, exist_ok=True)
    tmp_labels = _tmp(outputs.labels)
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
        while True:
            try:
                state = next(generator)
            except StopIteration as done:
                result = done.value
                break
            if progress is not None:
                progress(state)
        labels = result.labels
        if reshaped:
            assert geometry is not None
            labels = restore_planes(labels, geometry)
            if to_zarr:
                store = create_output(labels.shape, tmp_labels, chunks=_plane_chunks(labels.shape),
                                      overwrite=True)
                store[...] = labels
        segmenter = result.segmenter
        if outputs.model is not None and segmenter is not None:
            segmenter.config = config  # what a later `predict` must apply to its inputs
            temporary.append((segmenter.save(_tmp(outputs.model), overwrite=True), outputs.model))
        middle = tuple(n // 2 for n in source.spatial_shape[:-2])
        temporary.append((
            save_overlay(_tmp(outputs.overlay), _display_plane(source.read(middle)),
                         np.asarray(labels[middle]), overwrite=True),
            outputs.overlay,
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


def run_job(job: Job, progress: Callable[[Any], None] | None = None) -> JobResult:
    """Run one job; every error becomes a ``"failed"`` result (never raises).

    Parameters
    ----------
    job : Job
    progress : callable, optional
        Called with every `TrainingState` of the training.

    Returns
    -------
    JobResult
    """
    start = time.perf_counter()
    try:
        _set_torch_threads(job.torch_threads)
        from napari_kanezaki.core.config import config_for_method
        from napari_kanezaki.imaging.images import scribbles_from_published
        from napari_kanezaki.imaging.io import open_image, read_image

        scribbles = None
        if job.scribbles is not None:
            scribbles = read_image(job.scribbles)
            if job.scribble_format == "published":
                scribbles = scribbles_from_published(scribbles)
        config = None
        if job.model is None:
            config = config_for_method(job.config["method"]).from_dict(job.config)
        if job.uses_engine:
            if job.model is not None:
                raise ValueError("predicting with a model file takes 2-D images only.")
            labels, _ = process_stack(
                open_image(job.image),
                job.outputs,
                config,
                stack_mode=job.stack_mode,
                scribbles=scribbles,
                spacing=job.spacing,
                memory_budget=job.memory_budget,
                tile_shape=job.tile_shape,
                seed=job.seed,
                device=job.device,
                precision=job.precision,
                channel_axis=job.channel_axis,
                overwrite=job.overwrite,
                progress=progress,
            )
            n_labels = _count_labels(labels)
            return JobResult(job.name, "done", "", n_labels, time.perf_counter() - start)
        image = read_image(job.image)
        labels, _ = process_image(
            image,
            job.outputs,
            config,
            scribbles=scribbles,
            seed=job.seed,
            device=job.device,
            precision=job.precision,
            channel_axis=job.channel_axis,
            overwrite=job.overwrite,
            model=job.model,
            progress=progress,
        )
    except Exception as exc:  # one bad image must not stop the batch
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (ValueError, OSError, RuntimeError)):
            message += "\n" + traceback.format_exc(limit=3)
        return JobResult(job.name, "failed", message, 0, time.perf_counter() - start)
    return JobResult(job.name, "done", "", int(np.unique(labels).size),
                     time.perf_counter() - start)


def plan_workers(
    n_jobs: int, workers: int | None = None, threads: int | None = None,
    device: str = "auto", cores: int | None = None,
) -> tuple[int, int]:
    """Choose in-process workers and torch threads so that workers x threads <= cores.

    Parameters
    ----------
    n_jobs : int
        Number of jobs to run.
    workers, threads : int, optional
        Requested values (None: chosen here). Defaults: on a CPU, about two torch threads per
        worker; on a GPU one worker (the GPU is the bottleneck).
    device : str
        The run's device.
    cores : int, optional
        CPU cores (default: those this process may use).

    Returns
    -------
    (workers, threads)
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - macOS, Windows
            cores = os.cpu_count() or 1
    n_jobs = max(1, n_jobs)
    if workers is None:
        if device not in ("auto", "cpu") or (device == "auto" and _has_accelerator()):
            workers = 1
        else:
            workers = max(1, cores // 2) if threads is None else max(1, cores // threads)
        workers = min(workers, n_jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    if threads is None:
        threads = max(1, cores // workers)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    return workers, threads


def run_jobs(
    jobs: Sequence[Job],
    *,
    scheduler: Any = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> list[JobResult]:
    """Run jobs with Dask, skipping those whose outputs exist (resume).

    Parameters
    ----------
    jobs : sequence of Job
        Jobs with unique names.
    scheduler : str or distributed.Client, optional
        None: Dask's threaded scheduler in this process, `workers` threads each running
        torch with `threads` threads (see `plan_workers`). ``"sync"``: one job after the
        other in this thread. An address (``"tcp://host:8786"``) or a ``Client``: submit to
        that dask.distributed cluster (its workers must see the same files and have
        napari-kanezaki installed).
    workers, threads : int, optional
        In-process parallelism (see `plan_workers`).
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    list of JobResult
        In the order of `jobs`.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(
            f"several inputs have the same name {', '.join(dupes)}; their outputs would "
            "collide. Rename them or segment them into different output folders."
        )
    results: dict[str, JobResult] = {}
    todo = []
    for job in jobs:
        if not job.overwrite and job.outputs.labels.exists():
            results[job.name] = JobResult(job.name, "skipped", "outputs exist")
        else:
            todo.append(job)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="image",
               disable=not progress, desc="segmenting")
    try:
        if not todo:
            pass
        elif scheduler is None or scheduler in ("threads", "sync"):
            _run_local(todo, scheduler, workers, threads, bar, results)
        else:
            _run_distributed(todo, scheduler, bar, results)
    finally:
        bar.close()
    return [results[name] for name in names]


# -- internals -----------------------------------------------------------------------------
def _run_local(todo, scheduler, workers, threads, bar, results) -> None:
    import dask
    from dask.callbacks import Callback

    device = todo[0].device
    n_workers, n_threads = plan_workers(len(todo), workers, threads, device)
    if scheduler == "sync":
        n_workers = 1

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, JobResult):
                bar.update(1)
                if result.status == "failed":
                    bar.write(f"failed: {result.name}: {result.message.splitlines()[0]}")

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        tasks = [dask.delayed(run_job, pure=False)(job) for job in todo]
        with _Progress():
            if scheduler == "sync" or n_workers == 1:
                outcomes = dask.compute(*tasks, scheduler="sync")
            else:
                outcomes = dask.compute(*tasks, scheduler="threads", num_workers=n_workers)
    finally:
        torch.set_num_threads(previous)
    for result in outcomes:
        results[result.name] = result


def _run_distributed(todo, scheduler, bar, results) -> None:
    from napari_kanezaki.workflows.extras import require

    distributed = require("distributed", "distributed", "running on a dask.distributed scheduler")
    Client, as_completed = distributed.Client, distributed.as_completed

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = client.map(run_job, todo, pure=False, key=[f"kanezaki-{j.name}-{id(j)}"
                                                             for j in todo])
        name_of = {f.key: j.name for f, j in zip(futures, todo)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # the worker itself died
                result = JobResult(name_of[future.key], "failed", f"{type(exc).__name__}: {exc}")
            results[result.name] = result
            bar.update(1)
            if result.status == "failed":
                bar.write(f"failed: {result.name}: {result.message.splitlines()[0]}")
    finally:
        if own:
            client.close()


def _set_torch_threads(threads: int | None) -> None:
    if threads is None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            return
        cores = os.cpu_count() or 1
        threads = max(1, cores // max(1, worker.state.nthreads))
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _has_accelerator() -> bool:
    from napari_kanezaki.core.devices import resolve_device

    return resolve_device("auto").type != "cpu"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def _display(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """The image as the overlay shows it: channels last (first three), 2-D."""
    array = np.asarray(image)
    if channel_axis is not None:
        array = np.moveaxis(array, channel_axis, -1)
        if array.shape[-1] > 3:
            array = array[..., :3]
        elif array.shape[-1] == 2:
            array = array.mean(axis=-1)
    return array


def _display_plane(plane: np.ndarray) -> np.ndarray:
    """A normalised ``(C, H, W)`` plane as the overlay shows it: grey or the first 3 channels."""
    if plane.shape[0] == 1:
        return plane[0]
    if plane.shape[0] == 2:
        return plane.mean(axis=0)
    return np.moveaxis(plane[:3], 0, -1)


def _plane_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """zarr chunks of one plane (capped at 4096 x 4096)."""
    return (1,) * (len(shape) - 2) + tuple(min(n, 4096) for n in shape[-2:])


def _count_labels(labels: Any) -> int:
    """Number of distinct labels, read plane by plane for zarr arrays."""
    if isinstance(labels, np.ndarray):
        return int(np.unique(labels).size)
    seen: set[int] = set()
    shape = labels.shape
    for lead in np.ndindex(*shape[:-2]):
        seen.update(int(v) for v in np.unique(np.asarray(labels[lead])))
    return len(seen)
