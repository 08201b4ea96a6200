"""The batch dock widget: segment several Image layers with one progress bar.

Three modes, each a job of `_jobs`:

- ``"each"``: a fresh model per layer (the seed's ``base_folder`` configuration);
- ``"reference"``: one model trained on chosen reference layers (`Segmenter.fit_iter`),
  then applied to every selected layer without retraining;
- ``"saved"``: a model file written by `Segmenter.save` applied to every selected layer.

With "objects" checked (any mode), each layer also gets ``"<image> objects"``, the objects of
its final labels (`segment_widget.with_objects`); in the ``"each"`` mode with *runs (vote)*
above 1, every layer is trained that many times with consecutive seeds and its objects are
their majority vote (`segment_widget.with_consensus`).

The dock offers the 2-D Image layers (grey or RGB) and starts with all of them selected (new
ones join the selection until the user changes it); it shows only the settings of the chosen
mode (`ParameterPanel.show_for`). Every layer is read as `runner.layer_input` reads it: a
pyramid at its finest level whose labels fit the memory budget (said in a notification); in
the ``"each"`` mode each layer then takes the Python API's path (`runner.image_job`: lazy
reading, random crops and exact tiles over the budget), and in the ``"reference"`` and
``"saved"`` modes the model predicts each layer with `stacks.predict_iter` (whole within the
budget, otherwise exact tiles over lazily read regions).

Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FileEdit, Select
from napari.layers import Image, Labels

from napari_kanezaki.imaging.images import ImageError
from napari_kanezaki.imaging.objects import needs_image
from napari_kanezaki.imaging.sources import grey_image
from napari_kanezaki.plugin.jobs import apply_saved, fit_and_apply, in_turn
from napari_kanezaki.plugin.notify import notify_info, report_errors
from napari_kanezaki.plugin.parameters import ParameterPanel
from napari_kanezaki.plugin.runner import (
    RunControls,
    add_output_layer,
    image_job,
    layer_image,
    layer_input,
    spatial_ndim,
    with_scrolling_settings,
)
from napari_kanezaki.plugin.segment_widget import (
    ObjectControls,
    with_consensus,
    with_objects,
)

if TYPE_CHECKING:
    import napari

__all__ = ["BatchWidget", "MODES"]

MODES = (
    ("one model per layer", "each"),
    ("one model from reference layers", "reference"),
    ("saved model file", "saved"),
)


class BatchWidget(Container):
    """Segment several Image layers: per layer, from reference layers, or with a saved model.

    Each selected layer gets its own ``"<image> segmentation"`` Labels layer, and with
    "objects" checked an ``"<image> objects"`` layer (instance labels of its final labels,
    the background being the class covering most of the image border). Stop ends the
    batch between or within layers; finished layers keep their results.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose Image layers are offered and receive the results.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self._viewer = napari_viewer
        self.images = Select(
            name="images", label="layers", choices=self._image_choices,
            tooltip="The 2-D Image layers to segment (all of them at first); "
            "Ctrl/Shift-click to change the selection",
        )
        self.mode = ComboBox(
            name="mode", choices=list(MODES), value="each",
            tooltip="A fresh model trained on each layer; one model trained on reference "
            "layers and applied to every layer; or a model saved earlier (Save model…)",
        )
        self.references = Select(
            name="references", label="reference layers", choices=self._image_choices,
            tooltip="Reference mode: the layers the one model is trained on",
        )
        self.model_file = FileEdit(
            name="model_file", label="model file", mode="r", filter="*.pt",
            tooltip="Saved-model mode: a model file written by 'Save model…'",
        )
        self.params = ParameterPanel()
        self.objects = ObjectControls()
        self.controls = RunControls(napari_viewer, self._on_run)
        # Settings scroll; the Run/Stop row stays visible on any screen height.
        self.settings = Container(
            widgets=[self.images, self.mode, self.references, self.model_file, self.params,
                     self.objects],
        )
        super().__init__(widgets=[self.controls], labels=False)
        with_scrolling_settings(self, self.settings)
        # Every eligible layer is selected until the user changes the selection.
        self._follow_layers = True
        self._select_all_eligible()
        self.images.changed.connect(self._on_images_chosen)
        self.mode.changed.connect(self._update_visibility)
        self._update_visibility()

    def reset_choices(self, *args, **kwargs) -> None:
        """Refresh every layer choice (called by napari when layers change)."""
        super().reset_choices(*args, **kwargs)
        self.settings.reset_choices(*args, **kwargs)  # in the scroll area, not a child
        if self._follow_layers:
            self._select_all_eligible()

    def _image_choices(self, _widget: Select) -> list[Image]:
        """The 2-D Image layers (grey or RGB); stacks and volumes go to 'Segment image'."""
        return [layer for layer in self._viewer.layers
                if isinstance(layer, Image) and spatial_ndim(layer) == 2]

    def _select_all_eligible(self) -> None:
        with self.images.changed.blocked():
            self.images.value = list(self.images.choices)

    def _on_images_chosen(self, *_args) -> None:
        self._follow_layers = False

    def segment(
        self,
        images: Sequence[Image],
        mode: str = "each",
        references: Sequence[Image] = (),
        model_file: str | Path | None = None,
        objects: bool | None = None,
    ) -> list[Labels]:
        """Start segmenting several layers in the background.

        Parameters
        ----------
        images : sequence of napari.layers.Image
            Layers to segment; each gets an output Labels layer.
        mode : {"each", "reference", "saved"}
            One model per layer, one model trained on `references`, or the model in
            `model_file`.
        references : sequence of napari.layers.Image
            Training layers of the ``"reference"`` mode.
        model_file : str or Path, optional
            Model of the ``"saved"`` mode.
        objects : bool, optional
            Also add an ``"<image> objects"`` layer per image (default: the "objects"
            checkbox; the smallest size is the widget's "min object size").

        Returns
        -------
        list of napari.layers.Labels
            The class labels' output layers, in the order of `images`.
        """
        if not images:
            raise ImageError("select at least one Image layer to segment.")
        wants_objects = self.objects.wanted if objects is None else objects
        n_runs = self.objects.n_runs if wants_objects else 1
        if n_runs > 1 and mode != "each":
            raise ValueError(
                f"runs (vote) = {n_runs} trains a model per run and layer: it needs the mode "
                "'a fresh model per layer'; set runs to 1 for one shared or saved model."
            )
        runtime = self.params.runtime()
        # A pyramid is read at its finest level whose labels fit the memory budget.
        sources = {layer.name: layer_input(layer) for layer in images}
        # Reference and saved-model modes predict each layer with `stacks.predict_iter`:
        # whole within the memory budget, otherwise in exact tiles read region by region.
        targets = {name: (source.data, source.rgb) for name, source in sources.items()}
        if mode == "each":
            # Each layer as the Python API would: in memory when it fits the budget,
            # otherwise read lazily, trained on random crops and predicted in exact tiles;
            # with runs > 1, one job per seed (the vote's runs, see `with_consensus`).
            config = self.params.config()
            preview_every = self.params.preview_every.value
            first_seed = int(runtime.get("seed", 0))
            per_layer = {
                name: [image_job(name, source, config, {**runtime, "seed": first_seed + k},
                                 preview_every=preview_every) for k in range(n_runs)]
                for name, source in sources.items()
            }
            job = partial(in_turn, [jobs[0] for jobs in per_layer.values()])

        elif mode == "reference":
            if not references:
                raise ImageError("select at least one reference layer to train on.")
            config = self.params.config()
            training = [layer_image(layer) for layer in references]
            job = partial(fit_and_apply, training, targets, config, runtime)

        elif mode == "saved":
            path = Path(model_file) if model_file else None
            if path is None or not path.is_file():
                raise FileNotFoundError(f"choose an existing model file (got {model_file}).")
            job = partial(apply_saved, path, targets, runtime)

        else:
            raise ValueError(f"unknown mode {mode!r}; choose 'each', 'reference' or 'saved'.")
        if self.controls.running:
            raise RuntimeError("a run is already in progress; stop it first.")
        outputs = {layer.name: add_output_layer(self._viewer, layer,
                                                source=sources[layer.name])
                   for layer in images}
        inputs = {layer.name: layer for layer in images}
        labels = list(outputs.values())
        if wants_objects:
            targets_objects = {}
            for layer in images:
                key = (layer.name, "objects")
                source = sources[layer.name]
                outputs[key] = add_output_layer(self._viewer, layer, suffix="objects",
                                                source=source)
                inputs[key] = layer
                options = {**self.objects.options(), "spacing": source.scale, "ndim": 2}
                if needs_image(options):  # read in the worker, at the end
                    options["image"] = partial(grey_image, source.data, rgb=source.rgb,
                                               channel_axis=source.channel_axis)
                targets_objects[layer.name] = (key, options)
            if n_runs == 1:
                job = partial(with_objects, job, targets_objects)
            else:
                job = partial(in_turn, [
                    partial(with_consensus, per_layer[name], name, targets_objects[name])
                    for name in per_layer
                ])
        levels = [f"{name}: {source.note()}" for name, source in sources.items()
                  if source.note()]
        if levels:
            notify_info("Multiscale layers are segmented at the finest level whose labels fit "
                        "the memory budget: " + "; ".join(levels))
        self.controls.start(job, outputs, f"batch of {len(images)} layer(s): starting",
                            inputs=inputs)
        return labels

    def _on_run(self) -> None:
        with report_errors():
            self.segment(
                self.images.value, self.mode.value, self.references.value, self.model_file.value
            )

    def _update_visibility(self) -> None:
        """Show only the fields of the chosen mode (see `ParameterPanel.show_for`)."""
        mode = self.mode.value
        self.references.visible = mode == "reference"
        self.model_file.visible = mode == "saved"
        self.params.show_for(mode)
