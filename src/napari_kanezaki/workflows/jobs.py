"""One job: one image, stack or volume file segmented into its output files.

A `Job` is plain data (paths, the config as a dict, seed, device), so it pickles to any
dask.distributed worker. `run_job` never raises: a failing or unreadable image becomes a
``"failed"`` `JobResult` and the other jobs go on. 2-D images go through
`processing.process_image`; stacks and volumes (a `Job` with ``stack_mode``) and large
images (``memory_budget``, ``tile_shape`` or ``zarr``) through `processing.process_stack`.
A `Job` with ``objects`` also writes ``<stem>_objects.tif`` (instance labels, see
`imaging.objects.to_objects`) before the labels.

Importing this module imports neither torch nor dask (they load when a job runs).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_kanezaki.imaging.membranes import DEFAULT_RIDGE_SIGMA, membrane_filter
from napari_kanezaki.imaging.objects import DEFAULT_MIN_SIZE
from napari_kanezaki.workflows.claims import Claim, ClaimedError, acquire, claim_path
from napari_kanezaki.workflows.outputs import OutputPaths, output_paths
from napari_kanezaki.workflows.processing import process_image, process_stack

__all__ = ["Job", "JobResult", "run_job"]


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
        Bytes the network may use (default: 60 % of the available memory); larger inputs
        are trained on crops and predicted in tiles (with `model`: predicted in tiles).
    tile_shape : tuple of int, optional
        Force tiled prediction with tiles of this size (one entry per network axis).
    zarr : bool
        Write the labels as a zarr store ``<stem>_labels.zarr`` instead of a TIFF.
    objects : bool
        Also write the objects (cells, nuclei: instance labels of `to_objects`) as the
        lossless int32 TIFF ``<stem>_objects.tif`` (not with `zarr`). The background is
        `background`, else the class painted with scribble label 1, else the class covering
        most of the image border.
    background : tuple of int or {"membranes", "bright", "dark"}, optional
        Background class id(s) of the objects, or a rule (see `to_objects`).
    min_object_size : int
        Smallest object kept, in pixels (2-D) or voxels (3-D).
    fill : float
        Background pixels within this distance of an object join it (``inf``: all).
    split_touching : bool
        Split touching objects of one connected region by a watershed.
    split_seeds : {"distance", "dark", "bright"}
        Seeds of that split: the distance transform's maxima, or the image's darkest /
        brightest points (cell centres between bright / dark membranes), see `to_objects`.
    runs : int
        With `objects`: train this many networks (seeds ``seed``, ``seed + 1``, ...) and
        write the objects of their majority vote (`consensus_objects`); labels, overlay
        and model are the first run's.
    membranes : {"bright", "dark"}, optional
        Train on the membrane response of the image (`imaging.membranes.enhance_membranes`)
        instead of its intensity: bright stained membranes or dark ones. The image is read
        whole; grey images only. The model file records it, and predicting with that
        model applies it again. Not with `model` (the file's record decides).
    ridge_sigma : float
        Scale of the membrane filter, pixels.
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
    objects: bool = False
    background: tuple[int, ...] | str | None = None
    min_object_size: int = DEFAULT_MIN_SIZE
    fill: float = 0.0
    split_touching: bool = True
    split_seeds: str = "distance"
    runs: int = 1
    membranes: str | None = None
    ridge_sigma: float = DEFAULT_RIDGE_SIGMA

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
        return output_paths(self.outdir, self.name, model=model, zarr=self.zarr,
                            objects=self.objects)

    @property
    def membrane_filter(self) -> dict[str, Any] | None:
        """The `membrane_filter` record of `membranes` (None: train on the intensity)."""
        if self.membranes is None:
            return None
        return membrane_filter(self.membranes == "bright", self.ridge_sigma)

    @property
    def object_options(self) -> dict[str, Any] | None:
        """Keyword arguments of `to_objects` (None without `objects`)."""
        if not self.objects:
            return None
        options: dict[str, Any] = {"min_size": self.min_object_size}
        if self.background is not None:
            options["background"] = self.background
        if self.fill:
            options["fill"] = self.fill
        if not self.split_touching:
            options["split_touching"] = False
        if self.split_seeds != "distance":
            options["split_seeds"] = self.split_seeds
        return options


@dataclass(frozen=True)
class JobResult:
    """Outcome of one job: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    name: str
    status: str
    message: str = ""
    n_labels: int = 0
    seconds: float = 0.0


def run_job(job: Job, progress: Callable[[Any], None] | None = None) -> JobResult:
    """Run one job; every error becomes a ``"failed"`` result (never raises).

    The image is claimed first (see `claims`): an image another run is segmenting into
    the same folder is ``"skipped"`` with the message ``"claimed by another run (...)"``,
    one that run finished meanwhile is ``"skipped"`` with ``"outputs exist"``. The claim
    is removed when the job finishes or fails, also on `KeyboardInterrupt` (which is
    raised on).

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
        claim = _claim(job)
    except ClaimedError as exc:
        return JobResult(job.name, "skipped", str(exc), 0, time.perf_counter() - start)
    except OSError as exc:  # the output folder cannot be made or written
        return JobResult(job.name, "failed", _folder_problem(Path(job.outdir), exc), 0,
                         time.perf_counter() - start)
    with claim:
        if not job.overwrite and job.outputs.labels.exists():  # finished by another run
            return JobResult(job.name, "skipped", "outputs exist", 0,
                             time.perf_counter() - start)
        return _run_claimed(job, progress, start)


def _run_claimed(job: Job, progress: Callable[[Any], None] | None, start: float) -> JobResult:
    """`run_job`'s work once the image is claimed, with the job's torch threads."""
    previous = _set_torch_threads(job.torch_threads)
    try:
        return _segment_claimed(job, progress, start)
    finally:
        if previous is not None:  # torch's thread count is the whole process's: restore it
            import torch

            torch.set_num_threads(previous)


def _segment_claimed(job: Job, progress: Callable[[Any], None] | None,
                     start: float) -> JobResult:
    try:
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
        if job.model is not None and (job.stack_mode is not None or job.zarr
                                      or job.spacing is not None):
            raise ValueError("predicting with a model file takes 2-D images only, written "
                             "as TIFF.")
        if job.model is None and (job.uses_engine or _over_default_budget(job, config)):
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
                object_options=job.object_options,
                runs=job.runs,
                membranes=job.membrane_filter,
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
            object_options=job.object_options,
            memory_budget=job.memory_budget,
            tile_shape=job.tile_shape,
            runs=job.runs,
            membranes=job.membrane_filter,
        )
    except Exception as exc:  # one bad image must not stop the batch
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (ValueError, OSError, RuntimeError)):
            message += "\n" + traceback.format_exc(limit=3)
        return JobResult(job.name, "failed", message, 0, time.perf_counter() - start)
    return JobResult(job.name, "done", "", int(np.unique(labels).size),
                     time.perf_counter() - start)


# -- internals -----------------------------------------------------------------------------

class _FolderClaim:
    """A `claims.Claim` on a job's image; on release, the output folder goes too if this
    claim created it and nothing else is in it."""

    def __init__(self, claim: Claim, created: Path | None) -> None:
        self._claim = claim
        self._created = created

    def __enter__(self) -> _FolderClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self._claim.release()
        if self._created is not None:
            try:
                self._created.rmdir()
            except OSError:  # not empty: outputs or other runs' claims
                pass


def _claim(job: Job) -> _FolderClaim:
    """Claim `job`'s image in its output folder (made if missing).

    Raises
    ------
    ClaimedError
        Another run holds the claim.
    OSError
        The folder cannot be made or written.
    """
    outdir = Path(job.outdir)
    for _ in range(3):  # the folder may vanish if another job that made it gives up
        created = None if outdir.is_dir() else outdir
        outdir.mkdir(parents=True, exist_ok=True)
        try:
            return _FolderClaim(acquire(claim_path(outdir, job.name)), created)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"the output folder {outdir} keeps disappearing.")


def _folder_problem(outdir: Path, exc: OSError) -> str:
    """The message of an output folder the file system refuses (no bare ``[Errno ...]``)."""
    if outdir.exists() and not outdir.is_dir():
        what = "is a file, not a folder"
    else:
        what = f"cannot be made or written ({exc.strerror or exc})"
    return (f"{type(exc).__name__}: the output folder {outdir} {what}; choose another "
            "output folder or fix its permissions.")


def _over_default_budget(job: Job, config: Any) -> bool:
    """A 2-D image whose training does not fit the default memory budget (header only).

    Such an image takes the bounded-memory path (crops and tiles), as `segment()` and the
    widgets do with it.
    """
    from napari_kanezaki.imaging.sources import ImageSource
    from napari_kanezaki.imaging.tiles import default_memory_budget, fits_budget

    try:
        source = ImageSource.from_header(job.image, job.channel_axis)
    except (ValueError, OSError):
        return False  # unreadable or refused: the whole-image path reports it
    return source.spatial_ndim == 2 and not fits_budget(
        source.spatial_shape, config.n_channels, default_memory_budget())


def _set_torch_threads(threads: int | None) -> int | None:
    """Set torch's CPU threads for a job; return the previous count (None: unchanged)."""
    if threads is None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            return None
        cores = os.cpu_count() or 1
        threads = max(1, cores // max(1, worker.state.nthreads))
    import torch

    previous = torch.get_num_threads()
    if previous == threads:
        return None
    torch.set_num_threads(threads)
    return previous


def _count_labels(labels: Any) -> int:
    """Number of distinct labels, read plane by plane for zarr arrays."""
    if isinstance(labels, np.ndarray):
        return int(np.unique(labels).size)
    seen: set[int] = set()
    shape = labels.shape
    for lead in np.ndindex(*shape[:-2]):
        seen.update(int(v) for v in np.unique(np.asarray(labels[lead])))
    return len(seen)
