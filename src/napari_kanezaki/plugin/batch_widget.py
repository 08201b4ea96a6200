"""The batch dock widget: segment several Image layers with one progress bar.

Three modes, each a job of `_jobs`:

- ``"each"``: a fresh model per layer (the seed's ``base_folder`` configuration);
- ``"reference"``: one model trained on chosen reference layers (`Segmenter.fit_iter`),
  then applied to every selected layer without retraining;
- ``"saved"``: a model file written by `Segmenter.save` applied to every selected layer.

With "objects" checked (any mode), each layer also gets ``"<image> objects"``, the objects of
its final labels (`segment_widget.with_objects`).

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
from napari_kanezaki.plugin.jobs import apply_saved, fit_and_apply, segment_each
from napari_kanezaki.plugin.notify import report_errors
from napari_kanezaki.plugin.parameters import ParameterPanel
from napari_kanezaki.plugin.runner import (
    RunControls,
    add_output_layer,
    layer_image,
    with_scrolling_settings,
)
from napari_kanezaki.plugin.segment_widget import ObjectControls, with_objects

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
        self.images = Select(name="images", label="layers", choices=self._image_choices)
        self.mode = ComboBox(name="mode", choices=list(MODES), value="each")
        self.references = Select(
            name="references", label="reference layers", choices=self._image_choices
        )
        self.model_file = FileEdit(
            name="model_file", label="model file", mode="r", filter="*.pt"
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
        self.mode.changed.connect(self._update_visibility)
        self._update_visibility()

    def reset_choices(self, *args, **kwargs) -> None:
        """Refresh every layer choice (called by napari when layers change)."""
        super().reset_choices(*args, **kwargs)
        self.settings.reset_choices(*args, **kwargs)  # in the scroll area, not a child

    def _image_choices(self, _widget: Select) -> list[Image]:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

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
        runtime = self.params.runtime()
        targets = {layer.name: layer_image(layer) for layer in images}
        if mode == "each":
            config = self.params.config()
            inputs = {name: (image, None) for name, image in targets.items()}
            preview_every = self.params.preview_every.value
            job = partial(segment_each, inputs, config, runtime, preview_every=preview_every)

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
        outputs = {layer.name: add_output_layer(self._viewer, layer) for layer in images}
        labels = list(outputs.values())
        if self.objects.wanted if objects is None else objects:
            targets = {}
            for layer in images:
                key = (layer.name, "objects")
                outputs[key] = add_output_layer(self._viewer, layer, suffix="objects")
                spacing = tuple(float(s) for s in layer.scale[-2:])
                targets[layer.name] = (key, {"min_size": int(self.objects.min_size.value),
                                             "spacing": spacing, "ndim": 2})
            job = partial(with_objects, job, targets)
        self.controls.start(job, outputs, f"batch of {len(images)} layer(s): starting")
        return labels

    def _on_run(self) -> None:
        with report_errors():
            self.segment(
                self.images.value, self.mode.value, self.references.value, self.model_file.value
            )

    def _update_visibility(self) -> None:
        mode = self.mode.value
        self.references.visible = mode == "reference"
        self.model_file.visible = mode == "saved"
        self.params.visible = mode != "saved"
