"""The main dock widget: segment one Image layer, optionally guided by scribbles.

A thin magicgui `Container` over the core: it collects an image, optional extra channel
layers (e.g. the layers napari makes of a multichannel file opened with ``channel_axis``),
an optional scribble Labels layer and the settings of a `ParameterPanel`, and runs a job in
a thread worker through `RunControls`: a 2-D layer the way `runner.image_job` chooses (the
batch dock's path too: in memory when it fits the memory budget, otherwise lazy reading,
random crops and exact tiles; a pyramid at its finest level whose labels fit), a stack or
volume with `jobs.segment_stack`.
With "objects" on, the job is wrapped by `with_objects`, which turns the final class labels
into instance labels (`imaging.objects.to_objects`) for a second Labels layer.
Importing this module does not import torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels

from napari_kanezaki.imaging.images import ImageError
from napari_kanezaki.imaging.objects import DEFAULT_MIN_SIZE, SPLIT_SEEDS, needs_image
from napari_kanezaki.imaging.sources import grey_image
from napari_kanezaki.plugin.jobs import Job, Update, segment_stack
from napari_kanezaki.plugin.notify import notify_info, report_errors
from napari_kanezaki.plugin.parameters import ParameterPanel
from napari_kanezaki.plugin.runner import (
    LayerInput,
    RunControls,
    add_output_layer,
    image_job,
    layer_data,
    layer_image,
    layer_input,
    spatial_ndim,
    spatial_shape,
    with_scrolling_settings,
)

if TYPE_CHECKING:
    import napari

__all__ = [
    "SegmentWidget",
    "STACK_CHOICES",
    "ObjectControls",
    "combine_channels",
    "with_consensus",
    "with_objects",
]

#: Stack modes offered for layers with more than two spatial axes (see `stacks`).
STACK_CHOICES = [
    ("independent: a model per plane", "independent"),
    ("shared: one model for all planes", "shared"),
    ("3d: a 3-D network", "3d"),
]


#: The objects' background choices: (shown text, `to_objects` value).
BACKGROUND_CHOICES = [
    ("automatic: painted label 1, else the border's class", None),
    ("membranes: the thinnest class spanning the image", "membranes"),
    ("bright: classes brighter than the image (fluorescence)", "bright"),
    ("dark: classes darker than the image (EM)", "dark"),
]


class ObjectControls(Container):
    """The "objects" checkbox and the options of `to_objects` (also used by the batch widget)."""

    def __init__(self) -> None:
        self.enabled_box = CheckBox(
            name="objects",
            text="objects (cells, nuclei)",
            value=False,
            tooltip="Also add '<image> objects': every class but the background is "
            "foreground (the classes merged), one object per connected region, touching ones "
            "split by a watershed on the distance transform, numbered 1..N. Background: the "
            "class painted with scribble label 1, else the class covering most of the image "
            "border",
        )
        self.min_size = SpinBox(
            name="min_object_size",
            label="min object size",
            min=1,
            max=10**9,
            value=DEFAULT_MIN_SIZE,
            tooltip="Smaller objects are removed: pixels (2-D) or voxels (3-D)",
        )
        self.background = ComboBox(
            name="object_background", label="background", choices=BACKGROUND_CHOICES,
            value=None,
            tooltip="Which class is the background of the objects: automatic (the class "
            "painted with scribble label 1, else the class covering most of the image border), "
            "membranes (the thinnest class spanning the image: cells between stained "
            "membranes, e.g. EM slices), bright (the classes brighter than the image: stained "
            "membranes in fluorescence) or dark (the classes darker than the image)",
        )
        self.fill = FloatSpinBox(
            name="object_fill", label="fill (px)", min=0.0, max=1e6, step=0.5, value=0.0,
            tooltip="Background pixels within this distance of an object join it (0 = none; "
            "1.5 for EM slices; a large value fills every background pixel)",
        )
        self.split = CheckBox(
            name="split_touching", text="split touching objects", value=True,
            tooltip="Split touching objects of one connected region by a watershed on the "
            "distance transform (off for EM slices, where membranes already part the cells)",
        )
        self.split_seeds = ComboBox(
            name="split_seeds", label="split seeds", choices=SPLIT_SEEDS, value="distance",
            tooltip="Seeds of the split: distance (the centres of the regions' bulges), "
            "dark (the image's darkest points: cells between bright membranes, e.g. a "
            "confocal membrane stain) or bright (its brightest points: cells between dark "
            "membranes)",
        )
        self.runs = SpinBox(
            name="object_runs", label="runs (vote)", min=1, max=99, value=1,
            tooltip="Train this many networks (seeds seed, seed+1, ...) and make the objects "
            "of their majority vote: background where most runs put their background "
            "classes. Outvotes a run whose membranes came out with gaps; takes that many "
            "times as long (confocal membranes: 3). The segmentation layer shows the runs in "
            "turn and ends with the first run's labels",
        )
        super().__init__(widgets=[self.enabled_box, self.min_size, self.background, self.fill,
                                  self.split, self.split_seeds, self.runs], labels=True)
        self.margins = (0, 0, 0, 0)
        self.enabled_box.changed.connect(self._update_visibility)
        self._update_visibility()

    @property
    def wanted(self) -> bool:
        """True when objects are asked for."""
        return bool(self.enabled_box.value)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of `to_objects` the controls describe (scribbles, spacing aside)."""
        options: dict[str, Any] = {"min_size": int(self.min_size.value)}
        if self.background.value is not None:
            options["background"] = self.background.value
        if self.fill.value:
            options["fill"] = float(self.fill.value)
        if not self.split.value:
            options["split_touching"] = False
        elif self.split_seeds.value != "distance":
            options["split_seeds"] = self.split_seeds.value
        return options

    @property
    def n_runs(self) -> int:
        """Networks to train for the objects' vote (1 without objects)."""
        return int(self.runs.value) if self.wanted else 1

    def _update_visibility(self, *_args) -> None:
        for widget in (self.min_size, self.background, self.fill, self.split, self.split_seeds,
                       self.runs):
            widget.visible = self.wanted


class SegmentWidget(Container):
    """Unsupervised segmentation of one image (SP or ST method), with optional scribbles.

    The result appears at once as a Labels layer ``"<image> segmentation"`` with the
    image's scale and translate, is refreshed during training, and finally holds
    ``Segmenter.predict(image)``. Input layers are never modified.

    With "objects" checked, a second Labels layer ``"<image> objects"`` (same scale and
    translate) receives the objects of the final labels (`imaging.objects.to_objects`:
    2-D per plane, 3-D per volume in ``3d`` mode; the background is the class painted with
    scribble label 1, else the class covering most of the image border).

    "extra channels" offers the other Image layers of the selected image's spatial shape
    (only those); the selected ones are stacked with the image as channels (image first,
    then the layer list's order) before segmenting, see `combine_channels`.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are offered and receive the result.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self._viewer = napari_viewer
        self.image = ComboBox(
            name="image", choices=self._image_choices,
            tooltip="The Image layer to segment: 2-D grey or RGB, a stack or a volume",
        )
        self.scribbles = ComboBox(
            name="scribbles",
            choices=self._scribble_choices,
            nullable=True,
            value=None,
            tooltip="ST only: a Labels layer of the image's shape, 0 = unlabelled, k = class k",
        )
        self.extra_channels = Select(
            name="extra_channels",
            label="extra channels",
            choices=self._channel_choices,
            tooltip="Other Image layers of the image's shape (e.g. the channels of one file "
            "opened as several layers), used as additional channels; Ctrl/Shift-click to "
            "select several",
        )
        new_scribbles = PushButton(
            name="new_scribbles", text="New scribble layer",
            tooltip="Add an empty Labels layer of the image's shape, ready to paint: paint "
            "class 1, then raise the label ('=' key) for class 2, ...; then Run with ST",
        )
        self.not_offered_label = Label(
            name="not_offered", label="",
            tooltip="Layers of another shape than the image cannot be scribbles or channels",
        )
        self.not_offered_label.native.setWordWrap(True)
        self.stack_mode = ComboBox(
            name="stack_mode",
            choices=STACK_CHOICES,
            value="shared",
            tooltip="Only for stacks and volumes: how planes are segmented",
        )
        self.params = ParameterPanel()
        self.objects = ObjectControls()
        self.replace_previous = CheckBox(
            name="replace_previous", text="replace previous result", value=True,
            tooltip="Each run replaces the result layers of this dock's previous run; "
            "untick to keep every run (its layers are named with the method and run number)",
        )
        self._previous_outputs: list = []
        self._runs = 0
        self.controls = RunControls(napari_viewer, self._on_run)
        # Settings scroll; the Run/Stop row stays visible on any screen height.
        self.settings = Container(
            widgets=[self.image, self.extra_channels, self.stack_mode, self.scribbles,
                     self.not_offered_label, new_scribbles, self.params, self.objects,
                     self.replace_previous],
        )
        super().__init__(widgets=[self.controls], labels=False)
        with_scrolling_settings(self, self.settings)
        self.image.changed.connect(self.scribbles.reset_choices)
        self.image.changed.connect(self.extra_channels.reset_choices)
        self.image.changed.connect(self._update_channels_visibility)
        self.image.changed.connect(self._update_stack_mode)
        self.image.changed.connect(self._update_not_offered)
        self.extra_channels.changed.connect(self._update_channels_visibility)
        self._update_stack_mode()
        self._update_not_offered()
        new_scribbles.changed.connect(self._on_new_scribbles)

    # -- layer choices ----------------------------------------------------------------------
    def _image_choices(self, _widget: ComboBox) -> list[Image]:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _scribble_choices(self, _widget: ComboBox) -> list[Labels]:
        """Labels layers whose shape is the selected image's spatial shape."""
        return self._layers_shaped_like_image(Labels)

    def _channel_choices(self, _widget: Select) -> list[Image]:
        """Image layers other than the selected image with the same spatial shape."""
        return self._layers_shaped_like_image(Image)

    def _layers_shaped_like_image(self, kind: type) -> list:
        """Layers of `kind`, other than the selected image, of its spatial shape."""
        image = self.image.value
        if image is None:
            return []
        shape = spatial_shape(image)
        return [
            layer
            for layer in self._viewer.layers
            if isinstance(layer, kind) and layer is not image and spatial_shape(layer) == shape
        ]

    def not_offered(self) -> str:
        """Why some Labels/Image layers are not offered as scribbles or channels ("" if none).

        Layers of another spatial shape than the selected image's cannot be used with it;
        the dock says so under the scribble choice instead of hiding them without a word.
        """
        image = self.image.value
        if image is None:
            return ""
        shape = spatial_shape(image)
        others = [
            f"{layer.name!r} {spatial_shape(layer)}"
            for layer in self._viewer.layers
            if isinstance(layer, (Labels, Image)) and layer is not image
            and spatial_shape(layer) != shape
            and not layer.name.endswith((" segmentation", " objects"))
        ]
        if not others:
            return ""
        return (f"not offered, other shape than {image.name!r} {shape}: "
                + ", ".join(others[:4]) + (" …" if len(others) > 4 else ""))

    def reset_choices(self, *args, **kwargs) -> None:
        """Refresh every layer choice (called by napari when layers change)."""
        super().reset_choices(*args, **kwargs)
        self.settings.reset_choices(*args, **kwargs)  # in the scroll area, not a child
        self._update_channels_visibility()
        self._update_not_offered()

    def _update_not_offered(self, *_args) -> None:
        text = self.not_offered()
        self.not_offered_label.value = text
        self.not_offered_label.visible = bool(text)

    def _update_channels_visibility(self, *_args) -> None:
        """Show "extra channels" only when some layer can be combined with the image."""
        self.extra_channels.visible = bool(self.extra_channels.choices)

    def _update_stack_mode(self) -> None:
        """Offer the stack modes only for layers with more than two spatial axes."""
        image = self.image.value
        self.stack_mode.visible = image is not None and spatial_ndim(image) > 2

    # -- actions ----------------------------------------------------------------------------
    def add_scribble_layer(self, image: Image | None = None) -> Labels:
        """Add an empty Labels layer ``"<image> scribbles"`` of the image's shape and select it.

        Parameters
        ----------
        image : napari.layers.Image, optional
            Default: the selected image.

        Returns
        -------
        napari.layers.Labels
            Selected, in paint mode with label 1 and a brush of about 1/60 of the image's
            side: paint classes 1..k on it, then run the ST method.
        """
        image = image if image is not None else self.image.value
        if image is None:
            raise ImageError("no Image layer selected: open or add an image first.")
        layer = add_output_layer(self._viewer, image, suffix="scribbles")
        self.image.reset_choices()
        self.image.value = image  # the scribbles belong to this image's run
        self.scribbles.reset_choices()
        self.scribbles.value = layer
        # Ready to paint: the layer selected, the brush, label 1, a brush for the image's size.
        self._viewer.layers.selection.active = layer
        layer.selected_label = 1
        layer.brush_size = max(2, round(min(spatial_shape(image)[-2:]) / 60))
        layer.mode = "paint"
        return layer

    def segment(
        self,
        image: Image,
        scribbles: Labels | None = None,
        stack_mode: str | None = None,
        channels: Sequence[Image] = (),
        objects: bool | None = None,
    ) -> Labels:
        """Start segmenting `image` with the panel's settings in the background.

        Parameters
        ----------
        image : napari.layers.Image
            Input layer: 2-D grey or RGB, or a stack/volume (any number of leading axes),
            NumPy or lazy (dask, zarr).
        scribbles : napari.layers.Labels, optional
            Scribbles for the ST method, of the image's spatial shape.
        stack_mode : {"independent", "shared", "3d"}, optional
            For stacks (default: the widget's choice). In ``"3d"`` mode the layer's scale
            is the voxel spacing.
        channels : sequence of napari.layers.Image
            Extra Image layers of the image's spatial shape, stacked with it as channels
            (see `combine_channels`; their data is copied, the layers are not modified).
        objects : bool, optional
            Also add ``"<image> objects"`` with the objects of the final labels (default:
            the "objects" checkbox; the smallest size is the widget's "min object size").

        Returns
        -------
        napari.layers.Labels
            The class labels' output layer, already in the viewer; it fills as training
            proceeds.

        Raises
        ------
        ConfigError, ImageError
            Invalid settings, or scribbles or channel layers whose shape differs from the
            image's.
        """
        config = self.params.config()
        combined = combine_channels(image, channels) if channels else None
        stack_data = None
        scribble_data = None
        if scribbles is not None:
            if tuple(scribbles.data.shape) != spatial_shape(image):
                raise ImageError(
                    f"scribble layer {scribbles.name!r} has shape {tuple(scribbles.data.shape)} "
                    f"but image {image.name!r} has spatial shape {spatial_shape(image)}; "
                    "use 'New scribble layer' to make one of the right shape."
                )
            scribble_data = layer_image(scribbles)
        runtime = self.params.runtime()
        preview_every = self.params.preview_every.value
        ndim = spatial_ndim(image)
        mode = None
        make_job: Callable[[Mapping[str, Any]], Callable[[threading.Event], Job]]
        if ndim > 2:
            mode = stack_mode if stack_mode is not None else self.stack_mode.value
            spacing = tuple(float(s) for s in image.scale[-ndim:]) if mode == "3d" else None
            stack_data = layer_data(image) if combined is None else combined
            make_job = partial(
                partial,
                segment_stack,
                image.name,
                stack_data,
                config,
                stack_mode=mode,
                scribbles=scribble_data,
                rgb=bool(image.rgb) if combined is None else None,
                channel_axis=None if combined is None else -1,
                spacing=spacing,
                preview_every=preview_every,
            )
            source = None
        else:
            # The Python API's path: in memory when it fits the memory budget, otherwise
            # lazy reading, random crops and exact tiles; a pyramid's finest fitting level.
            if combined is None:
                source = layer_input(image)
            else:
                scale = tuple(float(s) for s in image.scale[-2:])
                source = LayerInput(combined, False, 0, 1, scale, channel_axis=-1)
            make_job = partial(_image_job_with, image.name, source, config,
                               scribbles=scribble_data, preview_every=preview_every)
        wants_objects = self.objects.wanted if objects is None else objects
        n_runs = self.objects.n_runs if wants_objects else 1
        first_seed = int(runtime.get("seed", 0))
        jobs = [make_job({**runtime, "seed": first_seed + k}) for k in range(n_runs)]
        job = jobs[0]
        if self.controls.running:
            raise RuntimeError("a run is already in progress; stop it first.")
        self._runs += 1
        run_name = ""
        if self.replace_previous.value:
            for layer in self._previous_outputs:
                if layer in self._viewer.layers:
                    self._viewer.layers.remove(layer)
        else:
            run_name = f" ({config.method.upper()}, run {self._runs})"
        outputs = {image.name: add_output_layer(self._viewer, image,
                                                suffix=f"segmentation{run_name}", source=source)}
        if wants_objects:
            object_ndim = 3 if mode == "3d" else 2
            spacing = tuple(float(s) for s in image.scale[-object_ndim:])
            if source is not None:
                spacing = source.scale
                if scribble_data is not None:
                    scribble_data = source.resample(scribble_data)
            options = {
                **self.objects.options(),
                "scribbles": scribble_data,
                "spacing": spacing,
                "ndim": object_ndim,
            }
            if needs_image(options):  # read in the worker, at the end
                options["image"] = (
                    partial(grey_image, source.data, rgb=source.rgb,
                            channel_axis=source.channel_axis) if source is not None
                    else partial(grey_image, stack_data, rgb=bool(image.rgb)
                                 if combined is None else None,
                                 channel_axis=None if combined is None else -1))
            key = (image.name, "objects")
            if n_runs == 1:
                job = partial(with_objects, job, {image.name: (key, options)})
            else:
                job = partial(with_consensus, jobs, image.name, (key, options))
            outputs[key] = add_output_layer(self._viewer, image, suffix=f"objects{run_name}",
                                            source=source)
        self._previous_outputs = list(outputs.values())
        note = source.note() if source is not None else ""
        if note:
            notify_info(f"{image.name}: multiscale layer, segmented at {note}, the finest "
                        "level whose labels fit the memory budget")
        self.controls.start(job, outputs, f"{image.name}: {note or 'starting'}",
                            inputs={key: image for key in outputs})
        return outputs[image.name]

    def _on_run(self) -> None:
        with report_errors():
            if self.image.value is None:
                raise ImageError("no Image layer selected: open or add an image first.")
            self.segment(
                self.image.value,
                self.scribbles.value,
                channels=self._selected_channels(),
            )

    def _selected_channels(self) -> list[Image]:
        """The selected extra channel layers, in the layer list's order."""
        chosen = list(self.extra_channels.value or [])
        return [layer for layer in self.extra_channels.choices if layer in chosen]

    def _on_new_scribbles(self) -> None:
        with report_errors():
            self.add_scribble_layer()


def with_objects(
    job: Callable[[threading.Event], Job],
    objects: Mapping[Hashable, tuple[Hashable, Mapping[str, Any]]],
    stop: threading.Event,
) -> Job:
    """Run ``job(stop)`` and follow the final labels of some outputs with their objects.

    Every update of the job is passed on. When an output's labels are final (the job moves
    on to another output, or ends), an `Update` for its objects key follows with
    ``to_objects(labels, **options)``. Nothing follows an abandoned stop (see
    `jobs.StopRequest`): nobody waits for the result.

    Parameters
    ----------
    job : callable
        A job of `plugin.jobs` taking the stop event (e.g. a `functools.partial`).
    objects : mapping
        Output key -> (objects key, keyword arguments of `imaging.objects.to_objects`).
    stop : threading.Event
        The run's stop event, passed to `job`.

    Yields
    ------
    Update

    Returns
    -------
    JobResult
        The job's.
    """
    generator = job(stop)
    final: dict[Hashable, Update] = {}
    try:
        while True:
            try:
                update = next(generator)
            except StopIteration as done:
                result = done.value
                break
            if update.key is not None:
                for key in [k for k in final if k != update.key]:
                    yield from _objects_update(final.pop(key), objects[key], stop)
            if update.key in objects and update.labels is not None:
                final[update.key] = update
            yield update
        for key in list(final):
            yield from _objects_update(final.pop(key), objects[key], stop)
    finally:
        generator.close()
    return result


def with_consensus(
    jobs: Sequence[Callable[[threading.Event], Job]],
    key: Hashable,
    target: tuple[Hashable, Mapping[str, Any]],
    stop: threading.Event,
) -> Job:
    """Run the same segmentation with several seeds, then the objects of their vote.

    The jobs run in turn (`jobs.in_turn`, one progress over all) and show their labels
    under `key` as they train; the final labels of each are kept and, at the end, an
    `Update` for the objects key carries `consensus_objects` of them. The labels shown last
    are the first run's again, as the command line writes them. A stop ends the runs
    early: the objects are the vote of the runs finished so far (the stopped one
    included), announced as such; nothing follows an abandoned stop.

    Parameters
    ----------
    jobs : sequence of callable
        One job per seed, each showing its labels under `key`.
    key : hashable
        Output key of the class labels.
    target : (hashable, mapping)
        Objects key and keyword arguments of `consensus_objects` (``image`` may be a
        callable that reads it).
    stop : threading.Event

    Yields
    ------
    Update

    Returns
    -------
    JobResult
        The last run's.
    """
    from napari_kanezaki.plugin.jobs import _relayed, in_turn

    finals: list[Update] = []

    def recording(job: Callable[[threading.Event], Job]) -> Callable[[threading.Event], Job]:
        def run(event: threading.Event) -> Job:
            last: list[Update] = []  # this run's latest labels of `key`

            def seen(update: Update) -> Update:
                if update.key == key and update.labels is not None:
                    last[:] = [update]
                return update

            result = yield from _relayed(job(event), seen)
            finals.extend(last)
            return result
        return run

    latest = [Update(0, 0, "")]  # the last update over all runs (step and total)

    def over_all(update: Update) -> Update:
        latest[0] = update
        return update

    result = yield from _relayed(in_turn([recording(job) for job in jobs], stop), over_all)
    progress = latest[0]
    if not finals or getattr(stop, "abandoned", False):
        return result
    objects_key, options = target
    if callable(options.get("image")):  # the grey image, read only when it is needed
        options = {**options, "image": options["image"]()}
    from napari_kanezaki.imaging.objects import consensus_objects

    step, total = progress.step, progress.total
    yield Update(step, total, f"{key}: the first run's labels", key, finals[0].labels)
    found = consensus_objects([np.asarray(f.labels) for f in finals], **options)
    runs = f"{len(finals)} of {len(jobs)} runs" if len(finals) < len(jobs) else (
        f"{len(finals)} runs")
    yield Update(step, total, f"{key}: {int(found.max())} objects, vote of {runs}",
                 objects_key, found)
    return result


def _image_job_with(key: Hashable, source: LayerInput, config: Any,
                    runtime: Mapping[str, Any], **kwargs: Any
                    ) -> Callable[[threading.Event], Job]:
    """`runner.image_job` with the runtime settings last (to build one job per seed)."""
    return image_job(key, source, config, runtime, **kwargs)


def _objects_update(
    update: Update, target: tuple[Hashable, Mapping[str, Any]], stop: threading.Event
) -> Iterator[Update]:
    """The `Update` of the objects of `update`'s labels (none after an abandoned stop)."""
    if getattr(stop, "abandoned", False):
        return
    from napari_kanezaki.imaging.objects import to_objects

    key, options = target
    if callable(options.get("image")):  # the grey image, read only when it is needed
        options = {**options, "image": options["image"]()}
    found = to_objects(np.asarray(update.labels), **options)
    text = f"{update.key}: {int(found.max())} objects"
    yield Update(update.step, update.total, text, key, found)


def combine_channels(image: Image, layers: Sequence[Image]) -> np.ndarray:
    """Stack an image layer and other Image layers of its spatial shape as channels.

    Parameters
    ----------
    image : napari.layers.Image
        The main layer: grey (one channel) or RGB(A) (its first three channels).
    layers : sequence of napari.layers.Image
        Further layers of the same spatial shape, each grey or RGB(A) likewise.

    Returns
    -------
    numpy.ndarray
        A new array ``(*spatial, C)``, channels last in the order given (the image first),
        of the common dtype (every channel is normalised on its own later). The layers'
        data is copied, never modified.

    Raises
    ------
    ImageError
        When a layer's spatial shape differs from the image's, or a layer is the image.
    """
    shape = spatial_shape(image)
    if any(layer is image for layer in layers):
        raise ImageError(f"layer {image.name!r} is the image itself; choose other layers.")
    parts = []
    for layer in (image, *layers):
        if spatial_shape(layer) != shape:
            raise ImageError(
                f"layer {layer.name!r} has spatial shape {spatial_shape(layer)} but image "
                f"{image.name!r} has {shape}; only layers of the same shape can be combined "
                "as channels (resample or crop the layer first)."
            )
        data = layer_image(layer)
        parts.append(data[..., :3] if getattr(layer, "rgb", False) else data[..., np.newaxis])
    return np.concatenate(parts, axis=-1)
