"""Run / Stop / Save-model buttons that run a job in a napari thread worker.

`RunControls` owns the worker of one widget: it disables Run while a job runs, shows a
progress bar in napari's activity dock, writes the label images the job yields into output
Labels layers (created at once by `add_output_layer`), turns errors into notifications and
removes output layers that never received labels.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, PushButton, show_file_dialog
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils import progress

from napari_kanezaki.plugin.jobs import Job, JobResult, Update
from napari_kanezaki.plugin.notify import notify_error, report_errors

__all__ = [
    "RunControls",
    "add_output_layer",
    "spatial_shape",
    "spatial_ndim",
    "layer_image",
    "layer_data",
]

MODEL_FILTER = "napari-kanezaki model (*.pt)"


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


def spatial_ndim(layer: Image) -> int:
    """Spatial axes of an image layer (the RGB(A) axis excluded)."""
    return len(spatial_shape(layer))


def add_output_layer(viewer: Any, image: Image, suffix: str = "segmentation") -> Labels:
    """Add an empty Labels layer named ``"<image> <suffix>"`` aligned with `image`.

    The scale, translate and axis labels of `image` are copied.

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Image
        The input; its scale and translate are copied.
    suffix : str
        Name suffix.

    Returns
    -------
    napari.layers.Labels
    """
    dtype = np.uint8 if suffix == "scribbles" else np.int32
    return viewer.add_labels(
        np.zeros(spatial_shape(image), dtype=dtype),
        name=f"{image.name} {suffix}",
        scale=image.scale,
        translate=image.translate,
        axis_labels=tuple(image.axis_labels),
    )


class RunControls(Container):
    """Run, Stop and Save-model buttons driving one background job at a time.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer holding the output layers.
    on_run : callable
        Called without arguments when Run is clicked; it should call `start`.
    """

    def __init__(self, viewer: Any, on_run: Callable[[], None]) -> None:
        self._viewer = viewer
        self.run_button = PushButton(name="run", text="Run")
        self.stop_button = PushButton(name="stop", text="Stop", enabled=False)
        self.save_button = PushButton(name="save_model", text="Save model…", enabled=False)
        super().__init__(
            widgets=[self.run_button, self.stop_button, self.save_button],
            layout="horizontal",
            labels=False,
        )
        self.margins = (0, 0, 0, 0)
        self.result: JobResult | None = None
        self._stop = threading.Event()
        self._worker: Any = None
        self._bar: progress | None = None
        self._outputs: dict[Hashable, Labels] = {}
        self._filled: set[Hashable] = set()
        self._queue: deque[Callable[[], None]] = deque()
        self._draining = False
        self.run_button.changed.connect(on_run)
        self.stop_button.changed.connect(self.stop)
        self.save_button.changed.connect(self._ask_save)

    @property
    def running(self) -> bool:
        """True while a job runs."""
        return self._worker is not None

    def start(
        self,
        job: Callable[[threading.Event], Job],
        outputs: Mapping[Hashable, Labels],
        description: str,
    ) -> None:
        """Run ``job(stop_event)`` in a thread worker.

        Parameters
        ----------
        job : callable
            A generator function of `_jobs` (or a `functools.partial` of one) taking the
            stop event as its last argument.
        outputs : mapping
            Update key -> Labels layer that receives the label images of that key.
        description : str
            Initial text of the progress bar.
        """
        if self.running:
            raise RuntimeError("a run is already in progress; stop it first.")
        self._stop = threading.Event()
        self._outputs = dict(outputs)
        self._filled = set()
        self._bar = progress(total=0, desc=description)
        connect = {
            "yielded": partial(self._serially, self._on_update),
            "returned": partial(self._serially, self._on_returned),
            "errored": partial(self._serially, notify_error),
            "finished": partial(self._serially, self._on_finished),
        }
        worker = thread_worker(job, start_thread=False, connect=connect)(self._stop)
        self._worker = worker
        self.run_button.enabled = False
        self.stop_button.enabled = True
        worker.start()

    def stop(self) -> None:
        """Ask the job to stop after its current iteration (it keeps its last result)."""
        self._stop.set()

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

    def _on_update(self, update: Update) -> None:
        layer = self._outputs.get(update.key)
        if update.labels is not None and layer is not None:
            self._filled.add(update.key)
            layer.data = update.labels
        bar = self._bar
        if bar is not None:
            if bar.total != update.total:
                bar.total = update.total
            bar.set_description(update.text)
            bar.update(update.step - bar.n)

    def _on_returned(self, result: JobResult) -> None:
        self.result = result
        self.save_button.enabled = result.segmenter is not None

    def _on_finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for key, layer in self._outputs.items():
            if key not in self._filled and layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        self._outputs = {}
        self._worker = None
        self.run_button.enabled = True
        self.stop_button.enabled = False
