"""The work the widgets run in a background thread, as generators of progress updates.

No Qt or napari here: each job is a generator that iterates the core's `Segmenter` and
yields `Update` objects (progress over the whole job, plus label images to show), checks a
`threading.Event` after every update and between set-up phases to stop early, and returns a
`JobResult`. Stopping keeps the model's last weights and still predicts the image being
trained, so a stopped run leaves a consistent result, unless the stop is a `StopRequest`
that was abandoned (the widget no longer waits for the job): then the job returns at its
next check without predicting. torch is imported only when a job runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_kanezaki.core.config import Config

if TYPE_CHECKING:
    from napari_kanezaki.core.segmenter import Segmenter

__all__ = [
    "StopRequest",
    "Update",
    "JobResult",
    "Job",
    "segment_each",
    "segment_stack",
    "in_turn",
    "fit_and_apply",
    "apply_saved",
]


@dataclass(frozen=True)
class Update:
    """Progress of a job.

    Attributes
    ----------
    step, total : int
        Steps done and planned over the whole job (training updates plus predictions).
    text : str
        Human-readable status, e.g. ``"cells: iteration 20/1000, 7 labels"``.
    key : hashable, optional
        The output the labels belong to.
    labels : numpy.ndarray, optional
        A preview or the final label image of output `key`.
    """

    step: int
    total: int
    text: str
    key: Hashable | None = None
    labels: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class JobResult:
    """What a job leaves behind.

    Attributes
    ----------
    segmenter : Segmenter or None
        The last model trained or loaded (None if the job stopped before making one).
    stopped : bool
        True if the job was stopped early.
    """

    segmenter: Segmenter | None
    stopped: bool


Job = Generator[Update, None, JobResult]

#: Longest layer name shown in progress texts (longer ones are elided in the middle).
NAME_CHARS = 14


class StopRequest(threading.Event):
    """The stop event of a job, which can also be abandoned.

    `set` asks the job to stop after its current step (it still predicts the image being
    trained). `abandon` also tells it that nobody waits for its result any more: it then
    returns at its next check without predicting, so its thread ends as soon as possible.
    """

    def __init__(self) -> None:
        super().__init__()
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        """True once `abandon` was called."""
        return self._abandoned

    def abandon(self) -> None:
        """Stop, and skip the work that only serves a result nobody will show."""
        self._abandoned = True
        self.set()


def _abandoned(stop: threading.Event) -> bool:
    return bool(getattr(stop, "abandoned", False))


def _relayed(generator: Generator[Any, None, Any],
             convert: Callable[[Any], Update]) -> Generator[Update, None, Any]:
    """Yield ``convert(item)`` for every item of `generator`; return what it returns."""
    while True:
        try:
            item = next(generator)
        except StopIteration as done:
            return done.value
        yield convert(item)


def short_name(key: Hashable) -> str:
    """`key` as text of at most `NAME_CHARS` characters (elided in the middle)."""
    text = str(key)
    if len(text) <= NAME_CHARS:
        return text
    head = (NAME_CHARS - 1) // 2
    return f"{text[:head]}…{text[len(text) - (NAME_CHARS - 1 - head):]}"


def segment_each(
    images: Mapping[Hashable, tuple[np.ndarray, np.ndarray | None]],
    config: Config,
    runtime: Mapping[str, Any],
    stop: threading.Event,
    preview_every: int = 10,
) -> Job:
    """Train a fresh model on each image and predict it (the seed's ``base``/``base_folder``).

    Parameters
    ----------
    images : mapping
        Output key -> (image, scribbles or None).
    config : SPConfig or STConfig
        Settings of every run.
    runtime : mapping
        ``seed``, ``device`` and ``precision`` for `Segmenter`.
    stop : threading.Event
        Set it to stop after the current iteration; the current image is still predicted
        (not if `stop` is an abandoned `StopRequest`).
    preview_every : int
        Yield the current labels every this many iterations (0: only the final result).

    Yields
    ------
    Update
    """
    from napari_kanezaki.core.segmenter import Segmenter

    total = len(images) * config.max_iter
    done = 0
    segmenter = None
    for key, (image, scribbles) in images.items():
        if stop.is_set():  # also after importing torch (seconds the first time)
            break
        name = short_name(key)
        # A check point before the set-up of `run` (normalisation, superpixels, first
        # update), which itself cannot be interrupted.
        yield Update(done, total, f"{name}: preparing…", key)
        if stop.is_set():
            break
        segmenter = Segmenter(config, **runtime)
        for state in segmenter.run(image, scribbles):
            preview = None
            if preview_every and state.iteration % preview_every == 0 and not state.done:
                preview = state.labels()
            text = f"{name}: {state.status()}"
            yield Update(done + state.iteration, total, text, key, preview)
            if stop.is_set():
                break
        done += config.max_iter
        if _abandoned(stop):
            break
        labels = segmenter.predict(image)
        text = f"{name}: {int(labels.max())} labels"
        yield Update(done, total, text, key, labels)
    return JobResult(segmenter, stop.is_set())


def segment_stack(
    key: Hashable,
    image: Any,
    config: Config,
    runtime: Mapping[str, Any],
    stop: threading.Event,
    *,
    stack_mode: str | None,
    scribbles: np.ndarray | None = None,
    rgb: bool | None = None,
    spacing: Sequence[float] | None = None,
    memory_budget: int | None = None,
    preview_every: int = 10,
    channel_axis: int | None = None,
) -> Job:
    """Segment a stack or volume (or a large image) with `stacks.segment_iter`.

    Progress runs over all training updates, planes and tiles. Stopping ends training
    after the current update and still predicts the current plane or volume (an abandoned
    `StopRequest` ends the job at the next update instead).

    Parameters
    ----------
    key : hashable
        Output key of the labels.
    image : array_like
        NumPy, dask or zarr data (lazy data stays lazy when tiling).
    config, runtime, stop
        As for `segment_each`.
    stack_mode : {"independent", "shared", "3d"} or None
        None for a 2-D image.
    scribbles, rgb, spacing, memory_budget
        As for `stacks.segment_iter`.
    preview_every : int
        Yield the current labels every this many updates when they have the output's shape.
    channel_axis : int, optional
        Axis of the channels (e.g. layers combined as channels).

    Yields
    ------
    Update
    """
    from napari_kanezaki.workflows.stacks import segment_iter

    name = short_name(key)
    yield Update(0, 0, f"{name}: preparing…", key)  # a check point after importing torch
    if stop.is_set():
        return JobResult(None, True)
    generator = segment_iter(
        image,
        config,
        stack_mode=stack_mode,
        scribbles=scribbles,
        rgb=rgb,
        channel_axis=channel_axis,
        spacing=spacing,
        memory_budget=memory_budget,
        stop=stop,
        preview_every=preview_every,
        **runtime,
    )
    shape: tuple[int, ...] | None = None
    total = 0
    while True:
        try:
            progress = next(generator)
        except StopIteration as done:
            result = done.value
            break
        total = progress.total
        labels = progress.labels
        if labels is not None:
            shape = shape or _spatial_shape_of(image, rgb, channel_axis)
            if labels.shape != shape:
                labels = None  # a plane or crop preview: not the output's shape
        yield Update(progress.step, progress.total, f"{name}: {progress.text}", key, labels)
        if _abandoned(stop):  # skip the prediction that follows a stop
            generator.close()
            return JobResult(None, True)
    labels = result.labels
    top = int(np.max(labels)) if isinstance(labels, np.ndarray) else None
    text = f"{name}: {top} labels" if top is not None else f"{name}: done"
    yield Update(total, total, text, key, labels)
    return JobResult(result.segmenter, result.stopped)


def in_turn(jobs: Sequence[Callable[[threading.Event], Job]], stop: threading.Event) -> Job:
    """Run several jobs one after the other, with one progress over all of them.

    Steps count in the jobs' own units (training updates, tiles); a job's total is known
    only once it runs, so the total assumes that the jobs still to come are as long as the
    current one (exact for layers of one size). After a stop, no further job starts.

    Parameters
    ----------
    jobs : sequence of callable
        Jobs of this module taking the stop event (e.g. `functools.partial` objects).
    stop : threading.Event
        The run's stop event, passed to every job.

    Yields
    ------
    Update

    Returns
    -------
    JobResult
        The last job's model; ``stopped`` when `stop` was set.
    """
    result = JobResult(None, False)
    done = total = 0
    for i, job in enumerate(jobs):
        if stop.is_set():
            break
        generator = job(stop)
        length = 0
        while True:
            try:
                update = next(generator)
            except StopIteration as finished:
                result = finished.value
                break
            if update.total:
                length = update.total
                total = done + length * (len(jobs) - i)
            yield Update(done + update.step, total, update.text, update.key, update.labels)
        done += length
    return JobResult(result.segmenter, stop.is_set())


def _spatial_shape_of(
    image: Any, rgb: bool | None, channel_axis: int | None = None
) -> tuple[int, ...]:
    shape = tuple(int(n) for n in image.shape)
    if channel_axis is not None:
        axis = channel_axis % len(shape)
        return shape[:axis] + shape[axis + 1 :]
    return shape[:-1] if rgb else shape


def fit_and_apply(
    references: Sequence[np.ndarray],
    targets: Mapping[Hashable, tuple[Any, bool | None]],
    config: Config,
    runtime: Mapping[str, Any],
    stop: threading.Event,
    memory_budget: int | None = None,
) -> Job:
    """Train one model on reference images, then predict other images without retraining.

    The reference-image mode of the TIP 2020 code (`Segmenter.fit_iter`). Every target is
    predicted by `stacks.predict_iter`: whole when its prediction fits the memory budget,
    otherwise in exact tiles, reading lazy data region by region. Stopping during training
    keeps the weights reached so far (they can still be saved) but predicts nothing;
    stopping during prediction skips the target being tiled and the remaining ones.

    Parameters
    ----------
    references : sequence of numpy.ndarray
        Training images.
    targets : mapping
        Output key -> (2-D image, whether its last axis is RGB(A)); NumPy, dask or zarr
        data, only read.
    config, runtime, stop
        As for `segment_each`.
    memory_budget : int, optional
        Bytes a prediction may use (default: `imaging.tiles.default_memory_budget`).

    Yields
    ------
    Update
    """
    from napari_kanezaki.core.segmenter import Segmenter

    yield Update(0, 0, "references: preparing…")  # a check point after importing torch
    if stop.is_set():
        return JobResult(None, True)
    segmenter = Segmenter(config, **runtime)
    n_updates = 0
    for state in segmenter.fit_iter(list(references)):
        n_updates = state.max_iter
        text = f"training on references: {state.status()}"
        yield Update(state.iteration, n_updates + len(targets), text)
        if stop.is_set():
            break
    yield from _predict_all(segmenter, targets, n_updates, stop, memory_budget)
    return JobResult(segmenter, stop.is_set())


def apply_saved(
    path: str | Path,
    targets: Mapping[Hashable, tuple[Any, bool | None]],
    runtime: Mapping[str, Any],
    stop: threading.Event,
    memory_budget: int | None = None,
) -> Job:
    """Segment images with a model file written by `Segmenter.save`.

    Parameters
    ----------
    path : str or Path
        Model file.
    targets : mapping
        Output key -> (2-D image, whether its last axis is RGB(A)), predicted as in
        `fit_and_apply`.
    runtime : mapping
        ``device`` and ``precision`` (a ``seed`` entry is ignored).
    stop : threading.Event
        Set it to skip the image being tiled and the remaining ones.
    memory_budget : int, optional
        Bytes a prediction may use (default: `imaging.tiles.default_memory_budget`).

    Yields
    ------
    Update
    """
    from napari_kanezaki.core.segmenter import Segmenter

    if stop.is_set():  # stopped while torch was imported
        return JobResult(None, True)
    segmenter = Segmenter.load(path, device=runtime["device"], precision=runtime["precision"])
    yield from _predict_all(segmenter, targets, 0, stop, memory_budget)
    return JobResult(segmenter, stop.is_set())


def _predict_all(
    segmenter: Segmenter,
    targets: Mapping[Hashable, tuple[Any, bool | None]],
    start: int,
    stop: threading.Event,
    memory_budget: int | None,
) -> Generator[Update, None, None]:
    """Predict every target in turn (`stacks.predict_iter`), one progress step each.

    Tiles report their progress in the text; `stop` ends the run between tiles or targets.
    """
    from napari_kanezaki.workflows.stacks import predict_iter

    total = start + len(targets)
    for i, (key, (image, rgb)) in enumerate(targets.items(), start=1):
        if stop.is_set():
            return
        name = short_name(key)
        generator = predict_iter(segmenter, image, rgb=rgb, memory_budget=memory_budget,
                                 stop=stop)
        result = yield from _relayed(
            generator, lambda progress, step=start + i - 1, name=name, key=key: Update(
                step, total, f"{name}: {progress.text}", key))
        if result.stopped:
            return
        labels = result.labels
        yield Update(start + i, total, f"{name}: {int(labels.max())} labels", key, labels)
