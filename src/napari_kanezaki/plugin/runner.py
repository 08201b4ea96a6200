"""Run / Stop / Save-model buttons that run a job in a napari thread worker.

`RunControls` owns the worker of one widget: it disables Run while a job runs, shows a
progress bar in napari's activity dock (whose Cancel button acts like Stop), writes the label
images the job yields into output Labels layers (created at once by `add_output_layer`),
turns errors into notifications and removes output layers that never received labels.

Stop answers within a second whatever the job is doing: it disables itself and shows
"stopping…" at once, gives the job `RunControls.stop_grace` seconds to stop at its next
check (and predict its current image), and otherwise detaches the worker: the controls go
back to idle, the outputs keep the labels they have, and whatever the worker still sends is
ignored (it only ends its thread, at its next check; see `jobs.StopRequest`).

Removing a run's output layer, or its input layer (which takes its outputs along), and
closing the viewer abandon the run the same way when it has no output left: no traceback,
idle controls, the worker ends at its next check, no empty layer or progress bar remains.

`layer_input` and `image_job` are the one path of a 2-D layer in both docks: a pyramid's
finest level whose labels fit the memory budget; in memory when training fits the budget,
otherwise the Python API's engine (lazy reading, random crops, exact tiled prediction).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, PushButton, show_file_dialog
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils import cancelable_progress, progress
from qtpy.QtCore import QThreadPool, QTimer

from napari_kanezaki.imaging.heap import share_main_arena
from napari_kanezaki.imaging.images import NormalizedImage, to_network_input
from napari_kanezaki.imaging.tiles import default_memory_budget, fits_budget
from napari_kanezaki.plugin.jobs import (
    Job,
    JobResult,
    StopRequest,
    Update,
    segment_each,
    segment_stack,
)
from napari_kanezaki.plugin.notify import notify_error, report_errors

__all__ = [
    "RunControls",
    "add_output_layer",
    "with_scrolling_settings",
    "spatial_shape",
    "spatial_ndim",
    "layer_image",
    "layer_data",
    "LayerInput",
    "layer_input",
    "image_job",
]

MODEL_FILTER = "napari-kanezaki model (*.pt)"

#: Longest progress description: with the bar and the Cancel button it then fits the
#: activity dock's default width (520 px, about 500 px inside), so it is never cut off.
DESCRIPTION_CHARS = 44

#: No text after the bar: tqdm's default (e.g. " 20/1000 [00:03<02:30, 6.50it/s]") repeats
#: the step count of the description, pushes the text and Cancel button out of the activity
#: dock, and its time left is mostly wrong anyway when the plateau rule ends a run early.
BAR_FORMAT = "{l_bar}{bar}|"

STOP_TEXT = "Stop"
STOPPING_TEXT = "Stopping…"


def spatial_shape(layer: Image | Labels) -> tuple[int, ...]:
    """Shape of a layer without its RGB(A) axis."""
    shape = tuple(layer.data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def layer_image(layer: Image | Labels) -> np.ndarray:
    """A private NumPy copy of a layer's data (the finest level of a multiscale layer).

    The job works on the copy, so editing or deleting the layer during a run is harmless
    and the layer itself is never modified.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.array(data)


def layer_data(layer: Image | Labels) -> Any:
    """A layer's data for a stack job: a private copy of NumPy data, lazy data as it is.

    dask and zarr data (and the finest level of a multiscale layer) are passed unchanged
    so that tiled jobs read them region by region; they are only read, never written.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.array(data) if isinstance(data, np.ndarray) else data


#: Bytes per pixel of the label image a run writes (int32).
LABEL_BYTES = 4


@dataclass(frozen=True)
class LayerInput:
    """What a run reads of an Image layer: the data of one resolution level, and where.

    Attributes
    ----------
    data : array_like
        A private NumPy copy of NumPy data, or lazy (dask, zarr) data as it is (only read).
    rgb : bool
        Whether the last axis of `data` is RGB(A).
    level, levels : int
        The multiscale level read (0 = finest) and the layer's number of levels (1 for a
        layer that is not multiscale).
    scale : tuple of float
        World size of a pixel of `data` on every spatial axis: the layer's scale times the
        level's downsampling.
    channel_axis : int, optional
        Axis of the channels of `data` (e.g. layers combined as channels; then `rgb` is
        False).
    """

    data: Any
    rgb: bool
    level: int
    levels: int
    scale: tuple[float, ...]
    channel_axis: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of `data`."""
        shape = tuple(int(n) for n in self.data.shape)
        if self.channel_axis is not None:
            axis = self.channel_axis % len(shape)
            return shape[:axis] + shape[axis + 1:]
        return shape[:-1] if self.rgb else shape

    @property
    def lazy(self) -> bool:
        """True when `data` is not in memory (dask, zarr, ...)."""
        return not isinstance(self.data, np.ndarray)

    def note(self) -> str:
        """``"level k of n (H x W)"`` for a multiscale layer, ``""`` otherwise."""
        if self.levels == 1:
            return ""
        return f"level {self.level} of {self.levels} ({' x '.join(map(str, self.shape))})"

    def resample(self, labels: np.ndarray) -> np.ndarray:
        """Labels of the finest level's shape (e.g. scribbles) at this level, nearest pixel.

        Parameters
        ----------
        labels : numpy.ndarray
            Of the layer's full-resolution spatial shape.

        Returns
        -------
        numpy.ndarray
            Of `shape` (the same array when the level is the finest).
        """
        if tuple(labels.shape) == self.shape:
            return labels
        index = np.ix_(*(
            np.minimum((np.arange(n) * (full / n)).astype(np.intp), full - 1)
            for n, full in zip(self.shape, labels.shape, strict=True)
        ))
        return labels[index]


def layer_input(layer: Image, memory_budget: int | None = None) -> LayerInput:
    """The data a run reads of an Image layer (a multiscale layer: its finest fitting level).

    A multiscale (pyramid) layer is read at the finest level whose int32 label image fits
    the memory budget, so that the result fits in memory; training and prediction on that
    level then go through the same bounded-memory path as the Python API (`image_job`).

    Parameters
    ----------
    layer : napari.layers.Image
        The input layer; it is never modified.
    memory_budget : int, optional
        Bytes (default: `imaging.tiles.default_memory_budget`).

    Returns
    -------
    LayerInput
    """
    rgb = bool(getattr(layer, "rgb", False))
    ndim = spatial_ndim(layer)
    scale = tuple(float(s) for s in layer.scale[-ndim:])
    if not getattr(layer, "multiscale", False):
        data = layer.data
        data = np.array(data) if isinstance(data, np.ndarray) else data
        return LayerInput(data, rgb, 0, 1, scale)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    levels = list(layer.data)
    full = levels[0].shape[:ndim]

    def pixels(array: Any) -> int:
        return int(np.prod(array.shape[:ndim], dtype=np.int64))

    fitting = [k for k, array in enumerate(levels) if pixels(array) * LABEL_BYTES <= budget]
    level = fitting[0] if fitting else len(levels) - 1
    data = levels[level]
    data = np.array(data) if isinstance(data, np.ndarray) else data
    factors = (f / n for f, n in zip(full, data.shape[:ndim], strict=True))
    return LayerInput(data, rgb, level, len(levels),
                      tuple(s * f for s, f in zip(scale, factors, strict=True)))


def image_job(
    key: Hashable,
    source: LayerInput,
    config: Any,
    runtime: Mapping[str, Any],
    *,
    scribbles: np.ndarray | None = None,
    preview_every: int = 10,
    memory_budget: int | None = None,
) -> Callable[[threading.Event], Job]:
    """The job segmenting one 2-D image layer with a fresh model, as the Python API would.

    An in-memory image whose training fits the memory budget trains whole and is predicted
    with `Segmenter.predict` (`jobs.segment_each`, the published path); lazy data (dask,
    zarr, a multiscale level) and images over the budget go through the engine of
    `workflows.stacks.segment_iter` (`jobs.segment_stack`), which reads lazy data region by
    region and, over the budget, trains on random crops and predicts exactly in tiles.
    The Segment widget and the batch widget both call this.

    Parameters
    ----------
    key : hashable
        Output key of the labels.
    source : LayerInput
        The layer's data (`layer_input`), 2-D grey or RGB(A).
    config : SPConfig or STConfig
        Settings.
    runtime : mapping
        ``seed``, ``device`` and ``precision``.
    scribbles : numpy.ndarray, optional
        ST scribbles of the layer's full-resolution shape (resampled to the level read).
    preview_every : int
        Label previews every this many iterations.
    memory_budget : int, optional
        Bytes (default: `imaging.tiles.default_memory_budget`).

    Returns
    -------
    callable
        The job, taking the stop event.
    """
    if scribbles is not None:
        scribbles = source.resample(scribbles)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    if not source.lazy and fits_budget(source.shape, config.n_channels, budget):
        data = source.data
        if source.channel_axis is not None:
            data = NormalizedImage(to_network_input(data, channel_axis=source.channel_axis))
        images = {key: (data, scribbles)}
        return partial(segment_each, images, config, runtime, preview_every=preview_every)
    rgb = None if source.channel_axis is not None else source.rgb
    return partial(segment_stack, key, source.data, config, runtime, stack_mode=None,
                   scribbles=scribbles, rgb=rgb, channel_axis=source.channel_axis,
                   memory_budget=budget, preview_every=preview_every)


def spatial_ndim(layer: Image) -> int:
    """Spatial axes of an image layer (the RGB(A) axis excluded)."""
    return len(spatial_shape(layer))


def add_output_layer(
    viewer: Any, image: Image, suffix: str = "segmentation", source: LayerInput | None = None
) -> Labels:
    """Add an empty Labels layer named ``"<image> <suffix>"`` aligned with `image`.

    The scale, translate and axis labels of `image` are copied.

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Image
        The input; its scale and translate are copied.
    suffix : str
        Name suffix.
    source : LayerInput, optional
        The data the run reads of `image`: the layer gets its shape and pixel size (a
        coarser level of a multiscale layer covers the same world extent). Default: the
        layer's full resolution.

    Returns
    -------
    napari.layers.Labels
    """
    dtype = np.uint8 if suffix == "scribbles" else np.int32
    shape = spatial_shape(image) if source is None else source.shape
    scale = image.scale
    if source is not None:
        scale = (*tuple(image.scale)[: len(image.scale) - len(source.scale)], *source.scale)
    return viewer.add_labels(
        np.zeros(shape, dtype=dtype),
        name=f"{image.name} {suffix}",
        scale=scale,
        translate=image.translate,
        axis_labels=tuple(image.axis_labels),
    )


def with_scrolling_settings(dock: Container, settings: Container) -> None:
    """Put `settings` in a vertical scroll area at the top of `dock`.

    What follows in `dock` (the Run/Stop row) stays visible on any screen height. (magicgui
    0.10 re-parents the inner widget of a ``scrollable=True`` container that is nested in
    another container, so the scroll area is made here.)
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea

    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(settings.native)
    scroll.setMinimumWidth(settings.native.minimumSizeHint().width() + 20)
    dock.native.layout().insertWidget(0, scroll)


def short_description(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """`text` elided in the middle to at most `limit` characters."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head):]}"


def _unwrapped(layer: Any) -> Any:
    """The layer itself: napari hands plugins its viewer and layers in proxies."""
    return getattr(layer, "__wrapped__", layer)


class _CancelableProgress(cancelable_progress):
    """A manually updated progress bar whose activity-dock Cancel button calls back at once.

    napari's `cancelable_progress` calls `cancel_callback` only from its iterator, so a
    manually updated bar would just set `is_canceled`.
    """

    def cancel(self) -> None:
        if self.is_canceled:
            return
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class _Run:
    """One started job: its stop request, worker, progress bar, input and output layers."""

    def __init__(
        self, outputs: Mapping[Hashable, Labels], inputs: Mapping[Hashable, Any]
    ) -> None:
        self.stop = StopRequest()
        self.outputs = dict(outputs)
        self.inputs = dict(inputs)
        self.filled: set[Hashable] = set()
        #: Labels received but not shown yet, the latest per key (see `_on_update`).
        self.pending: dict[Hashable, Any] = {}
        self.show_scheduled = False
        self.worker: Any = None
        self.bar: progress | None = None
        self.stopping = False
        self.detached = False
        self.finished = False


class RunControls(Container):
    """Run, Stop and Save-model buttons driving one background job at a time.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer holding the output layers.
    on_run : callable
        Called without arguments when Run is clicked; it should call `start`.
    """

    #: Seconds a stopped job may take to end by itself (keeping its final prediction)
    #: before the controls detach from it.
    stop_grace: float = 0.6

    def __init__(self, viewer: Any, on_run: Callable[[], None]) -> None:
        self._viewer = viewer
        self.run_button = PushButton(
            name="run", text="Run",
            tooltip="Start segmenting in the background; the result layer fills as it trains",
        )
        self.stop_button = PushButton(
            name="stop", text=STOP_TEXT, enabled=False,
            tooltip="Stop training now; the current image is still predicted",
        )
        self.save_button = PushButton(
            name="save_model", text="Save model…", enabled=False,
            tooltip="Write the last run's trained model to a .pt file (reuse it in the batch "
            "dock's saved-model mode, the command line or Python)",
        )
        super().__init__(
            widgets=[self.run_button, self.stop_button, self.save_button],
            layout="horizontal",
            labels=False,
        )
        self.margins = (0, 0, 0, 0)
        self.result: JobResult | None = None
        self._run: _Run | None = None
        self._last: _Run | None = None
        self._detached: list[_Run] = []
        self._queue: deque[Callable[[], None]] = deque()
        self._draining = False
        self._closed = False
        self.run_button.changed.connect(on_run)
        self.stop_button.changed.connect(self.stop)
        self.save_button.changed.connect(self._ask_save)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        # Closing the viewer deletes the dock's Qt widgets: the run is abandoned first.
        self.native.destroyed.connect(self._on_closed)

    @property
    def running(self) -> bool:
        """True while a job runs (and until it was detached after Stop)."""
        return self._run is not None

    @property
    def stopping(self) -> bool:
        """True between a stop request and the end of the job (or its detaching)."""
        return self._run is not None and self._run.stopping

    @property
    def detached_workers(self) -> list[Any]:
        """Workers of stopped jobs that were detached and whose thread has not ended yet."""
        return [run.worker for run in self._detached]

    @property
    def _bar(self) -> progress | None:
        return self._run.bar if self._run is not None else None

    def start(
        self,
        job: Callable[[threading.Event], Job],
        outputs: Mapping[Hashable, Labels],
        description: str,
        inputs: Mapping[Hashable, Any] | None = None,
    ) -> None:
        """Run ``job(stop_event)`` in a thread worker.

        Removing an output layer from the viewer during the run drops its later labels;
        removing an input layer removes the outputs made from it. A run left without
        outputs is abandoned: the controls are idle at once and the worker ends at its next
        check (see `jobs.StopRequest`).

        Parameters
        ----------
        job : callable
            A generator function of `_jobs` (or a `functools.partial` of one) taking the
            stop event (a `jobs.StopRequest`) as its last argument.
        outputs : mapping
            Update key -> Labels layer that receives the label images of that key; removed
            from the viewer when the run is refused because another is going.
        description : str
            Initial text of the progress bar.
        inputs : mapping, optional
            Update key -> the input layer its output is made from.
        """
        if self.running:  # refused: the caller's fresh output layers go again
            for layer in outputs.values():
                if layer in self._viewer.layers:
                    self._viewer.layers.remove(layer)
            raise RuntimeError("a run is already in progress; stop it first.")
        run = _Run(outputs, inputs or {})
        run.bar = _CancelableProgress(
            total=0,
            desc=short_description(description),
            bar_format=BAR_FORMAT,
            cancel_callback=partial(self._stop_run, run),
        )
        connect = {
            "yielded": partial(self._serially, self._on_update, run),
            "returned": partial(self._serially, self._on_returned, run),
            "errored": partial(self._serially, self._on_errored, run),
            "finished": partial(self._serially, self._on_finished, run),
        }
        share_main_arena()  # before the worker's thread allocates: keeps training blocks
        run.worker = thread_worker(job, start_thread=False, connect=connect)(run.stop)
        self._run = self._last = run
        self.run_button.enabled = False
        self.stop_button.text = STOP_TEXT
        self.stop_button.enabled = True
        self._make_room_in_pool()
        run.worker.start()

    def stop(self) -> None:
        """Stop the job: at once in the controls, within `stop_grace` seconds for the job.

        The Stop button is disabled and the progress text says "stopping…" at once. The job
        stops at its next check (after its current training update) and predicts its
        current image; if it has not ended after `stop_grace` seconds (e.g. it is computing
        superpixels), the controls detach from it and are idle again: the output layers keep
        the labels they have (those that never received any are removed) and the worker's
        later results are ignored.
        """
        if self._run is not None:
            self._stop_run(self._run)

    def _stop_run(self, run: _Run) -> None:
        if self._closed or run is not self._run or run.stopping:
            return
        run.stopping = True
        run.stop.set()
        self.stop_button.enabled = False
        self.stop_button.text = STOPPING_TEXT
        QTimer.singleShot(
            max(0, round(self.stop_grace * 1000)), partial(self._serially, self._detach, run)
        )
        self._serially(self._show_stopping, run)

    def save_model(self, path: str | Path) -> Path:
        """Save the model of the last job, replacing an existing file.

        Parameters
        ----------
        path : str or Path
            Destination (``.pt``).

        Returns
        -------
        Path
        """
        if self.result is None or self.result.segmenter is None:
            raise RuntimeError("no model yet: run a segmentation first.")
        return self.result.segmenter.save(path, overwrite=True)

    def _ask_save(self) -> None:
        path = show_file_dialog(mode="w", caption="Save model", filter=MODEL_FILTER)
        if path:
            with report_errors():
                self.save_model(path)

    def _serially(self, handler: Callable[..., None], *args: Any) -> None:
        """Run worker-signal handlers one after the other, in signal order.

        napari's progress widgets call ``QApplication.processEvents``, which would deliver
        the next worker signal (even "finished") in the middle of a handler; queueing keeps
        the handlers from interleaving.
        """
        self._queue.append(partial(handler, *args))
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                self._queue.popleft()()
        finally:
            self._draining = False

    @staticmethod
    def _make_room_in_pool() -> None:
        """Let a new worker start at once even while detached workers still end."""
        pool = QThreadPool.globalInstance()
        if pool.activeThreadCount() >= pool.maxThreadCount():
            pool.setMaxThreadCount(pool.activeThreadCount() + 1)

    def _show_stopping(self, run: _Run) -> None:
        if run is self._run and run.bar is not None:
            run.bar.set_description("stopping…")

    def _on_update(self, run: _Run, update: Update) -> None:
        """Progress at once; labels shown at the next turn of the event loop, latest only.

        Setting a layer's data redraws it: when previews come faster than the viewer draws
        (every iteration, a loaded machine), the ones queued meanwhile are skipped, so the
        main thread stays responsive. The final labels are always shown (`_release`).
        """
        if self._closed or run is not self._run:
            return  # detached or closed: the outputs keep what they have
        if update.labels is not None and update.key in run.outputs:
            run.filled.add(update.key)
            run.pending[update.key] = update.labels
            if not run.show_scheduled:
                run.show_scheduled = True
                QTimer.singleShot(0, partial(self._serially, self._show_pending, run))
        bar = run.bar
        if bar is not None:
            if bar.total != update.total:
                bar.total = update.total
            if not run.stopping:
                bar.set_description(short_description(update.text))
            bar.update(update.step - bar.n)

    def _show_pending(self, run: _Run) -> None:
        """Put the latest labels received of every output into its layer."""
        run.show_scheduled = False
        pending, run.pending = run.pending, {}
        if self._closed or (run is not self._run and run.detached):
            return
        for key, labels in pending.items():
            layer = run.outputs.get(key)
            if layer is not None:
                layer.data = labels

    def _on_returned(self, run: _Run, result: JobResult) -> None:
        if self._closed:
            return
        # A detached job's model is still welcome while no other run has started.
        if run is self._run or (run is self._last and self._run is None):
            self.result = result
            self.save_button.enabled = result.segmenter is not None

    def _on_errored(self, run: _Run, error: BaseException) -> None:
        if run is self._run and not self._closed:
            notify_error(error)

    def _on_finished(self, run: _Run) -> None:
        run.finished = True
        if run in self._detached:
            self._detached.remove(run)
        if run is self._run and not self._closed:
            self._release(run)

    def _on_layer_removed(self, event: Any) -> None:
        """Drop the outputs of a removed layer; abandon a run left without outputs."""
        run = self._run
        if run is None or self._closed:
            return
        layer = _unwrapped(event.value)
        gone = [key for key, output in run.outputs.items() if _unwrapped(output) is layer]
        gone += [key for key, source in run.inputs.items() if _unwrapped(source) is layer]
        for key in gone:
            output = run.outputs.pop(key, None)
            run.filled.discard(key)
            if output is not None and output in self._viewer.layers:
                self._viewer.layers.remove(output)
        if gone and not run.outputs and run is self._run:
            self._abandon(run)

    def _on_closed(self, *_args: Any) -> None:
        """The dock is being deleted (viewer closed): abandon the run, touch no widget."""
        self._closed = True
        run, self._run = self._run, None
        if run is not None:
            run.stop.abandon()
            if run.bar is not None:
                run.bar.close()
                run.bar = None

    def _abandon(self, run: _Run) -> None:
        """Stop waiting for a run whose results have nowhere to go; its thread ends soon."""
        run.detached = True
        run.stop.abandon()
        if not run.finished:
            self._detached.append(run)
        self._release(run)

    def _detach(self, run: _Run) -> None:
        """Stop waiting for a stopped job that has not ended (its thread ends by itself)."""
        if run is not self._run or run.finished:
            return
        run.detached = True
        run.stop.abandon()
        self._detached.append(run)
        # Removing a layer costs napari a full garbage collection (0.3-0.8 s with torch
        # loaded): show the idle controls first, remove the unfilled outputs just after.
        self._release(run, remove=False)
        QTimer.singleShot(50, partial(self._remove_unfilled, run))

    def _release(self, run: _Run, remove: bool = True) -> None:
        """Show its last labels, close the progress bar, drop unfilled outputs, go idle."""
        if not self._closed:
            self._show_pending(run)
        if run.bar is not None:
            run.bar.close()
            run.bar = None
        self._run = None  # first: the removals below are not the user's (`_on_layer_removed`)
        if remove:
            self._remove_unfilled(run)
        self.run_button.enabled = True
        self.stop_button.enabled = False
        self.stop_button.text = STOP_TEXT

    def _remove_unfilled(self, run: _Run) -> None:
        """Remove the output layers of `run` that never received labels."""
        for key, layer in list(run.outputs.items()):
            if key not in run.filled and layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
