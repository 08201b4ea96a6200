"""Training and prediction: the `Segmenter` facade shared by scripts, the CLI and the widgets.

The update itself is `core.training.make_step`, the optimiser `core.optim`, the model file
`core.checkpoint` and the reference-image batches `core.reference`: this module only
sequences them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from napari_kanezaki.core import checkpoint, cuda_graph
from napari_kanezaki.core.config import Config, ConfigError, SPConfig, STConfig, config_for_method
from napari_kanezaki.core.devices import (
    autocast,
    reproducible_kernels,
    resolve_device,
    resolve_precision,
    to_device,
)
from napari_kanezaki.core.network import KanezakiNet, build_network, check_input
from napari_kanezaki.core.optim import make_optimizer
from napari_kanezaki.core.reference import reference_batches, train_in_turn, train_on_batches
from napari_kanezaki.core.stopping import StopRule
from napari_kanezaki.core.training import (
    Step,
    TrainingState,
    axis_weights,
    batch_superpixels,
    check_spacing,
    make_step,
    predicted_channels,
    scribble_classes,
)
from napari_kanezaki.imaging.heap import resident_heap
from napari_kanezaki.imaging.images import ImageError, number_segments, prepare_scribbles
from napari_kanezaki.imaging.preprocessing import make_augmenter, prepare_network_input

__all__ = ["Segmenter", "TrainingState"]


class Segmenter:
    """Unsupervised segmentation by a small CNN trained on the image itself.

    Parameters
    ----------
    config : SPConfig or STConfig, optional
        Method and hyper-parameters (default: `STConfig()`, the TIP 2020 method).
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
    seed : int
        Seed of the initial weights; the same seed on the same device gives the same labels.
    precision : {"auto", "fp32", "bf16"}
        ``"auto"``: bfloat16 autocast where the hardware supports it natively (several times
        faster, same segmentation quality); ``"fp32"``: the published arithmetic.
    spacing : sequence of float, optional
        Pixel/voxel size per spatial axis (e.g. ``(2.0, 0.5, 0.5)``): SLIC's spacing (SP)
        and, for ST, the continuity weight ``min(spacing) / spacing[axis]`` of each axis.

    Examples
    --------
    >>> seg = Segmenter(SPConfig(max_iter=100), seed=1)
    >>> for state in seg.run(image):
    ...     print(state.iteration, state.n_labels, state.loss)
    >>> labels = seg.predict(image)
    """

    def __init__(self, config: Config | None = None, device: str | torch.device = "auto",
                 seed: int = 0, precision: str = "auto",
                 spacing: Sequence[float] | None = None) -> None:
        config = STConfig() if config is None else config
        if not isinstance(config, (SPConfig, STConfig)):
            raise TypeError(
                f"config must be an SPConfig or STConfig, got {type(config).__name__}."
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}.")
        self.config, self.seed, self.precision = config, int(seed), precision
        self.device = resolve_device(device)
        self._autocast_dtype = resolve_precision(precision, self.device)
        # Host reads of the label count stall a GPU: check the stop rule every 10 updates there.
        self._check_every = 1 if self.device.type == "cpu" else 10
        self.model: KanezakiNet | None = None
        self.keep_ids: tuple[int, ...] = ()
        self.spacing = check_spacing(spacing)
        #: The membrane filter (`imaging.membranes.membrane_filter`) the training images
        #: went through, saved with the model and applied again by `stacks.predict_iter`
        #: (the command line's ``predict``, the batch dock's saved models); `predict` itself
        #: takes the network's input as it is given.
        self.membranes: dict | None = None

    @property
    def method(self) -> str:
        """``"sp"`` or ``"st"``."""
        return self.config.method

    def __repr__(self) -> str:
        return (f"Segmenter({self.config!r}, device={str(self.device)!r}, seed={self.seed}, "
                f"precision={self.precision!r})")

    def run(self, image: np.ndarray, scribbles: np.ndarray | None = None, *,
            channel_axis: int | None = None, warm_start: bool = False) -> Iterator[TrainingState]:
        """Train on one image, yielding a `TrainingState` after every update.

        Stop iterating at any time to cancel: the model keeps its last weights and `predict`
        gives the current result; after a complete run ``predict(image)`` is the output.

        Parameters
        ----------
        image : array_like
            2-D image or volume (see `to_network_input` for layouts and dtypes).
        scribbles : array_like, optional
            ST only: labels of the image's spatial shape, 0 = not scribbled, k = class k.
            Scribbled classes keep their ids; `min_labels` becomes their number.
        channel_axis : int, optional
            Channel axis of a multichannel image.
        warm_start : bool
            Continue from the current weights (e.g. after `load`) instead of a fresh model.

        Yields
        ------
        TrainingState
        """
        return self._training(self._run_states(image, scribbles, channel_axis, warm_start))

    def _run_states(self, image: np.ndarray, scribbles: np.ndarray | None,
                    channel_axis: int | None, warm_start: bool) -> Iterator[TrainingState]:
        cfg = self.config
        array, geometry = prepare_network_input(image, cfg, channel_axis)
        targets = prepare_scribbles(geometry.apply(scribbles), array.shape[1:], cfg.n_channels)
        self.keep_ids, min_labels = scribble_classes(targets, cfg)
        x = self._to_device(array[np.newaxis])
        self._prepare_model(array.shape[0], warm_start, spatial_dims=array.ndim - 1)
        scribble_tensor = None
        if targets is not None:
            scribble_tensor = torch.from_numpy(targets[np.newaxis]).to(self.device)
        superpixels = None
        if isinstance(cfg, SPConfig):
            superpixels = batch_superpixels([array], cfg, self.device, spacing=self.spacing)
        step = self._make_step((1, *array.shape[1:]), superpixels, scribble_tensor)
        if cuda_graph.use_cuda_graph(cfg, self.device):
            step = cuda_graph.GraphedStep(step)
        augment = make_augmenter(cfg, self.seed)
        rule = StopRule(cfg.max_iter, min_labels, cfg.plateau_iter, cfg.plateau_tol,
                        self._check_every)
        for iteration in range(1, cfg.max_iter + 1):
            if augment is not None:  # the seed's random CLAHE, new at every iteration
                x = self._to_device(augment(array)[np.newaxis])
            loss, channels, n_labels = step(x)
            reason = rule.update(iteration, n_labels, channels)
            state = self._state(iteration, cfg.max_iter, n_labels, reason, loss, channels)
            yield state if geometry.identity else dataclasses.replace(
                state, _restore=geometry.restore)
            if reason:
                return

    def fit_iter(self, images: Sequence[np.ndarray], *, channel_axis: int | None = None,
                 scribbles: Sequence[np.ndarray | None] | None = None,
                 ) -> Iterator[TrainingState]:
        """Train one model on several images (reference mode), yielding a state per update.

        The TIP 2020 code's reference-image mode: every image resized to ``ref_size``
        squared (bilinear, unless 0), then for each of ``n_epochs`` epochs and each of the
        ``len(images) // batch_size`` batches, ``max_update`` consecutive updates on that
        batch, with one optimiser for the whole fit. No stop rule. Afterwards `predict`
        segments any image at full resolution.

        Parameters
        ----------
        images : sequence of array_like
            Reference images, all with the same number of channels.
        channel_axis : int, optional
            Channel axis of multichannel images.
        scribbles : sequence of array_like or None, optional
            ST only, as the seed's reference mode: one scribble image (0 = not scribbled,
            k = class k) or None per image. Scribbled classes keep their ids.

        Yields
        ------
        TrainingState
            ``max_iter`` is the total number of updates of the whole fit.
        """
        batches, targets = reference_batches(images, self.config, channel_axis, scribbles)
        first = batches[0][0]
        self._prepare_model(first.shape[0], warm_start=False, spatial_dims=first.ndim - 1)
        ids = {int(i) for t in (targets or []) if t is not None for i in np.unique(t[t >= 0])}
        self.keep_ids = tuple(sorted(ids))
        return self._training(train_on_batches(self, batches, targets))

    def fit_in_turn(self, images: Sequence[np.ndarray], *,
                    channel_axis: int | None = None) -> Iterator[TrainingState]:
        """Train one model on images of one size in turn, ``max_iter`` updates in all.

        Batches of ``batch_size`` images are visited cyclically; the plateau stop compares
        each batch's labels with its previous visit (the label-count rule is off). This is
        the ``shared`` stack mode: one budget for all planes, unlike `fit_iter`.

        Parameters
        ----------
        images : sequence of array_like
            Images (or `NormalizedImage` planes) of one shape and channel count.
        channel_axis : int, optional
            Channel axis of multichannel images.

        Yields
        ------
        TrainingState
        """
        arrays = [prepare_network_input(image, self.config, channel_axis)[0] for image in images]
        if not arrays or len({a.shape for a in arrays}) != 1:
            raise ImageError("fit_in_turn needs one or more images of one shape and layout.")
        self._prepare_model(arrays[0].shape[0], warm_start=False,
                            spatial_dims=arrays[0].ndim - 1)
        self.keep_ids = ()
        return self._training(train_in_turn(self, arrays))

    def fit(self, images: Sequence[np.ndarray], *, channel_axis: int | None = None,
            scribbles: Sequence[np.ndarray | None] | None = None) -> Segmenter:
        """Train one model on several reference images (see `fit_iter`) and return self."""
        for _ in self.fit_iter(images, channel_axis=channel_axis, scribbles=scribbles):
            pass
        return self

    @torch.no_grad()
    def predict(self, image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
        """Segment an image with the current model, without training.

        As published, BatchNorm normalises with the statistics of the image segmented.

        Parameters
        ----------
        image : array_like
            Image with the same number of channels as the training images.
        channel_axis : int, optional
            Channel axis of a multichannel image.

        Returns
        -------
        numpy.ndarray
            int32 labels 1..K of the image's spatial shape, largest segment first; scribbled
            classes keep their ids.
        """
        if self.model is None:
            raise RuntimeError("no trained model: call run(), fit() or Segmenter.load() first.")
        array, geometry = prepare_network_input(image, self.config, channel_axis)
        check_input(self.model, array.shape[0], spatial_dims=array.ndim - 1)
        with self._autocast(), reproducible_kernels(self.device):
            response = self.model(self._to_device(array[np.newaxis]))
        channels = predicted_channels(response, self.keep_ids,
                                      getattr(self.config, "painted_only", False))
        labels = number_segments(channels[0].cpu().numpy(), self.config.n_channels, self.keep_ids)
        return geometry.restore(labels)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the weights and the full configuration to one file (see `core.checkpoint`).

        Parameters
        ----------
        path : str or Path
            Destination (conventionally ``.pt``).
        overwrite : bool
            Replace an existing file; otherwise an existing file raises `FileExistsError`.

        Returns
        -------
        Path
        """
        if self.model is None:
            raise RuntimeError("nothing to save: train with run() or fit() first.")
        return checkpoint.write_model(path, self.model, self.config, seed=self.seed,
                                      spacing=self.spacing, keep_ids=self.keep_ids,
                                      membranes=self.membranes, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto",
             precision: str = "auto") -> Segmenter:
        """Load a file written by `save`, without executing any pickled code.

        Parameters
        ----------
        path : str or Path
            Model file.
        device, precision
            As for the constructor.

        Returns
        -------
        Segmenter
            Ready for `predict`, or for `run(..., warm_start=True)`.
        """
        payload = checkpoint.read_model(path)
        config_dict = dict(payload["config"])
        try:
            config = config_for_method(config_dict.get("method", "")).from_dict(config_dict)
        except ConfigError as exc:
            raise ConfigError(f"model file {path} holds an invalid configuration: {exc}") from exc
        segmenter = cls(config, device=device, seed=payload["seed"], precision=precision,
                        spacing=payload.get("spacing"))
        segmenter.model = build_network(
            payload["in_channels"], config.n_channels, config.n_conv,
            spatial_dims=payload["spatial_dims"], seed=segmenter.seed, device=segmenter.device)
        checkpoint.load_weights(segmenter.model, payload["state_dict"], Path(path), config)
        segmenter.keep_ids = tuple(int(i) for i in payload["keep_ids"])
        segmenter.membranes = payload["membranes"]
        return segmenter

    # -- shared with core.tiling's crop training and tiled prediction -------------------------
    def _training(self, states: Iterator[TrainingState]) -> Iterator[TrainingState]:
        """`states`, with freed activations kept for the next update on the CPU
        (`imaging.heap.resident_heap`) from the set-up to the end or cancel."""
        heap = resident_heap() if self.device.type == "cpu" else contextlib.nullcontext()
        with heap:
            yield from states

    def _autocast(self):
        return autocast(self.device, self._autocast_dtype)

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        return to_device(batch, self.device)

    def _prepare_model(self, in_channels: int, warm_start: bool, spatial_dims: int = 2) -> None:
        """A fresh seeded model, the checkpoint's weights, or (warm start) the current one."""
        cfg = self.config
        if warm_start:
            if self.model is None:
                raise RuntimeError("warm_start=True needs a model: load one or train first.")
            check_input(self.model, in_channels, spatial_dims)
            return
        self.model = build_network(in_channels, cfg.n_channels, cfg.n_conv,
                                   spatial_dims=spatial_dims, seed=self.seed, device=self.device)
        if cfg.checkpoint:
            weights = checkpoint.read_weights(cfg.checkpoint)
            checkpoint.load_weights(self.model, weights, Path(cfg.checkpoint), cfg)

    def _make_step(self, batch_shape: tuple[int, ...],
                   superpixels: tuple[torch.Tensor, int] | None = None,
                   scribbles: torch.Tensor | None = None,
                   optimizer: torch.optim.Optimizer | None = None) -> Step:
        assert self.model is not None
        if optimizer is None:
            optimizer = make_optimizer(self.config, self.model.parameters())
        return make_step(self.model, self.config, optimizer, batch_shape,
                         autocast=self._autocast, superpixels=superpixels, scribbles=scribbles,
                         continuity_weights=axis_weights(self.spacing, len(batch_shape) - 1))

    def _state(self, iteration: int, max_iter: int, n_labels: torch.Tensor, reason: str,
               loss: torch.Tensor, channels: torch.Tensor) -> TrainingState:
        return TrainingState(iteration=iteration, max_iter=max_iter, _n_labels=n_labels,
                             done=bool(reason), stop_reason=reason, _loss=loss,
                             _channels=channels, _n_channels=self.config.n_channels,
                             _keep_ids=self.keep_ids)

