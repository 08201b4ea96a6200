"""The main dock widget: segment one Image layer, optionally guided by scribbles.

A thin magicgui `Container` over the core: it collects an image, an optional scribble Labels
layer and the settings of a `ParameterPanel`, and runs `_jobs.segment_each` in a thread
worker through `RunControls`. Importing this module does not import torch.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, PushButton
from napari.layers import Image, Labels

from ._jobs import segment_each, segment_stack
from ._notify import report_errors
from ._params import ParameterPanel
from ._runner import (
    RunControls,
    add_output_layer,
    layer_data,
    layer_image,
    spatial_ndim,
    spatial_shape,
)
from .images import ImageError

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentWidget", "STACK_CHOICES"]

#: Stack modes offered for layers with more than two spatial axes (see `stacks`).
STACK_CHOICES = [
    ("independent: a model per plane", "independent"),
    ("shared: one model for all planes", "shared"),
    ("3d: a 3-D network", "3d"),
]


class SegmentWidget(Container):
    """Unsupervised segmentation of one image (SP or ST method), with optional scribbles.

    The result appears at once as a Labels layer ``"<image> segmentation"`` with the
    image's scale and translate, is refreshed during training, and finally holds
    ``Segmenter.predict(image)``. Input layers are never modified.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are offered and receive the result.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self._viewer = napari_viewer
        self.image = ComboBox(name="image", choices=self._image_choices)
        self.scribbles = ComboBox(
            name="scribbles",
            choices=self._scribble_choices,
            nullable=True,
            value=None,
            tooltip="ST only: a Labels layer of the image's shape, 0 = unlabelled, k = class k",
        )
        new_scribbles = PushButton(name="new_scribbles", text="New scribble layer")
        self.stack_mode = ComboBox(
            name="stack_mode",
            choices=STACK_CHOICES,
            value="shared",
            tooltip="Only for stacks and volumes: how planes are segmented",
        )
        self.params = ParameterPanel()
        self.controls = RunControls(napari_viewer, self._on_run)
        super().__init__(
            widgets=[
                self.image,
                self.stack_mode,
                self.scribbles,
                new_scribbles,
                self.params,
                self.controls,
            ]
        )
        self.image.changed.connect(self.scribbles.reset_choices)
        self.image.changed.connect(self._update_stack_mode)
        self._update_stack_mode()
        new_scribbles.changed.connect(self._on_new_scribbles)

    # -- layer choices ----------------------------------------------------------------------
    def _image_choices(self, _widget: ComboBox) -> list[Image]:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _scribble_choices(self, _widget: ComboBox) -> list[Labels]:
        """Labels layers whose shape is the selected image's spatial shape."""
        image = self.image.value
        if image is None:
            return []
        shape = spatial_shape(image)
        return [
            layer
            for layer in self._viewer.layers
            if isinstance(layer, Labels) and tuple(layer.data.shape) == shape
        ]

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
            Paint classes 1..k on it, then run the ST method.
        """
        image = image if image is not None else self.image.value
        if image is None:
            raise ImageError("no Image layer selected: open or add an image first.")
        layer = add_output_layer(self._viewer, image, suffix="scribbles")
        self.scribbles.reset_choices()
        self.scribbles.value = layer
        return layer

    def segment(
        self, image: Image, scribbles: Labels | None = None, stack_mode: str | None = None
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

        Returns
        -------
        napari.layers.Labels
            The output layer, already in the viewer; it fills as training proceeds.

        Raises
        ------
        ConfigError, ImageError
            Invalid settings, or scribbles whose shape differs from the image's.
        """
        config = self.params.config()
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
        if ndim > 2:
            mode = stack_mode if stack_mode is not None else self.stack_mode.value
            spacing = tuple(float(s) for s in image.scale[-ndim:]) if mode == "3d" else None
            job = partial(
                segment_stack,
                image.name,
                layer_data(image),
                config,
                runtime,
                stack_mode=mode,
                scribbles=scribble_data,
                rgb=bool(image.rgb),
                spacing=spacing,
                preview_every=preview_every,
            )
        else:
            images = {image.name: (layer_image(image), scribble_data)}
            job = partial(segment_each, images, config, runtime, preview_every=preview_every)
        output = add_output_layer(self._viewer, image)
        self.controls.start(job, {image.name: output}, f"{image.name}: starting")
        return output

    def _on_run(self) -> None:
        with report_errors():
            if self.image.value is None:
                raise ImageError("no Image layer selected: open or add an image first.")
            self.segment(self.image.value, self.scribbles.value)

    def _on_new_scribbles(self) -> None:
        with report_errors():
            self.add_scribble_layer()
