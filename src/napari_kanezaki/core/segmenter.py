"""Training and prediction: the `Segmenter` object shared by scripts, the CLI and the widgets."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_kanezaki.core.config import Config, ConfigError, SPConfig, STConfig, config_for_method
from napari_kanezaki.core.devices import resolve_device, resolve_precision
from napari_kanezaki.imaging.images import ImageError, number_segments, prepare_scribbles, to_network_input
from napari_kanezaki.core.losses import pixel_weights, self_training_loss
from napari_kanezaki.core.network import KanezakiNet
from napari_kanezaki.imaging.preprocessing import make_augmenter, prepare_network_input
from napari_kanezaki.core.stopping import StopRule
from napari_kanezaki.core.superpixels import compute_superpixels, histogram, refine_by_superpixels

__all__ = ["Segmenter", "TrainingState"]

MODEL_FORMAT = "napari-kanezaki-model/1"
_SEEDED_INIT_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class TrainingState:
    """One training iteration, as yielded by `Segmenter.run` and `Segmenter.fit_iter`.

    Attributes
    ----------
    iteration : int
        Number of updates done so far (1 after the first).
    max_iter : int
        Planned number of updates (the run may stop earlier).
    n_labels : int
        Distinct labels of the network's argmax at this iteration, before its update
        (the quantity the stop rule looks at). Read from the device on access.
    done : bool
        True for the last state of a run (stop rule met or budget spent).
    stop_reason : str
        ``"min_labels"``, ``"plateau"``, ``"max_iter"`` or ``""`` while running.
    """

    iteration: int
    max_iter: int
    _n_labels: torch.Tensor = dataclasses.field(repr=False)
    done: bool
    stop_reason: str
    _loss: torch.Tensor = dataclasses.field(repr=False)
    _channels: torch.Tensor = dataclasses.field(repr=False)
    _n_channels: int = dataclasses.field(repr=False)
    _keep_ids: tuple[int, ...] = dataclasses.field(repr=False)
    #: Maps labels of the preprocessed image back to the input's shape (None: same shape).
    _restore: Any = dataclasses.field(default=None, repr=False)

    @property
    def n_labels(self) -> int:
        """Distinct labels of this iteration's argmax (see the class docstring)."""
        return int(self._n_labels)

    def status(self) -> str:
        """A progress line, ``"iteration 20/1000, 7 labels"``.

        On a GPU the label count is read back (which waits for the device) only every
        10 iterations and at the end, so a progress display does not slow training.
        """
        text = f"iteration {self.iteration}/{self.max_iter}"
        on_host = self._n_labels.device.type == "cpu"
        if on_host or self.done or self.iteration % 10 == 0:
            text += f", {self.n_labels} labels"
        return text

    @property
    def loss(self) -> float:
        """Total loss of this iteration."""
        return float(self._loss)

    def labels(self) -> np.ndarray:
        """Label image of this iteration's argmax, numbered like the final result.

        Computed on request only (it copies the labels from the device).

        Returns
        -------
        numpy.ndarray
            int32, the image's spatial shape (the first image's, in reference mode).
        """
        channels = self._channels[0].cpu().numpy()
        labels = number_segments(channels, self._n_channels, self._keep_ids)
        return labels if self._restore is None else self._restore(labels)


class Segmenter:
    """Unsupervised segmentation by a small CNN trained on the image itself.

    Parameters
    ----------
    config : SPConfig or STConfig, optional
        Method and hyper-parameters (default: `STConfig()`, the TIP 2020 method).
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
    seed : int
        Seed of the network's initial weights; the same seed on the same device gives the
        same labels.
    precision : {"auto", "fp32", "bf16"}
        ``"auto"`` uses bfloat16 autocast where the hardware supports it natively, which is
        several times faster with the same segmentation quality; ``"fp32"`` is the published
        arithmetic.
    spacing : sequence of float, optional
        Pixel/voxel size per spatial axis (e.g. ``(2.0, 0.5, 0.5)`` for a volume): passed
        to SLIC (SP) and, for ST, weights the continuity term of each axis by
        ``min(spacing) / spacing[axis]``. Default: isotropic.

    Examples
    --------
    >>> seg = Segmenter(SPConfig(max_iter=100), seed=1)
    >>> for state in seg.run(image):
    ...     print(state.iteration, state.n_labels, state.loss)
    >>> labels = seg.predict(image)
    """

    def __init__(
        self,
        config: Config | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        precision: str = "auto",
        spacing: Sequence[float] | None = None,
    ) -> None:
        if config is None:
            config = STConfig()
        if not isinstance(config, (SPConfig, STConfig)):
            raise TypeError(f"config must be an SPConfig or STConfig, got {type(config).__name__}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}.")
        self.config = config
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.precision = precision
        self._autocast_dtype = resolve_precision(precision, self.device)
        # Host reads of the label count stall a GPU: check the stop rule every 10 updates there.
        self._check_every = 1 if self.device.type == "cpu" else 10
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: autotune convolutions
        self.model: KanezakiNet | None = None
        self.keep_ids: tuple[int, ...] = ()
        self.spacing = _check_spacing(spacing)

    @property
    def method(self) -> str:
        """``"sp"`` or ``"st"``."""
        return self.config.method

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.config!r}, device={str(self.device)!r}, seed={self.seed}, "
            f"precision={self.precision!r})"
        )

    # -- training on one image ------------------------------------------------------------
    def run(
        self,
        image: np.ndarray,
        scribbles: np.ndarray | None = None,
        *,
        channel_axis: int | None = None,
        warm_start: bool = False,
    ) -> Iterator[TrainingState]:
        """Train on one image, yielding a `TrainingState` after every update.

        Stop iterating at any time to cancel; the model keeps its last weights and
        `predict` gives the current result. After a complete run, ``predict(image)`` is the
        method's output.

        Parameters
        ----------
        image : array_like
            2-D image, see `to_network_input` for the accepted layouts and dtypes.
        scribbles : array_like, optional
            ST only: label image of the image's spatial shape, 0 = not scribbled, k = class
            k (napari's convention). Scribbled classes keep their ids in the output and the
            stop rule's `min_labels` becomes the number of scribbled classes.
        channel_axis : int, optional
            Channel axis of a multichannel image.
        warm_start : bool
            Continue from the current weights (e.g. after `load`) instead of a fresh model.

        Yields
        ------
        TrainingState
        """
        cfg = self.config
        array, geometry = prepare_network_input(image, cfg, channel_axis)
        targets = prepare_scribbles(geometry.apply(scribbles), array.shape[1:], cfg.n_channels)
        if targets is not None and isinstance(cfg, SPConfig):
            raise ConfigError(
                "scribbles are supported by the ST method only; use STConfig or method='st'."
            )
        x = self._to_device(array[np.newaxis])
        if cfg.checkpoint and not warm_start:
            self._load_checkpoint(array.shape[0], spatial_dims=array.ndim - 1)
            warm_start = True
        self._prepare_model(array.shape[0], warm_start, spatial_dims=array.ndim - 1)
        min_labels = cfg.min_labels
        scribble_tensor = None
        self.keep_ids = ()
        if targets is not None:
            ids = np.unique(targets[targets >= 0])
            self.keep_ids = tuple(int(i) for i in ids)
            min_labels = len(ids)
            scribble_tensor = torch.from_numpy(targets[np.newaxis]).to(self.device)
        superpixels = self._superpixels([array]) if isinstance(cfg, SPConfig) else None
        step = self._make_step(
            superpixels,
            scribble_tensor,
            getattr(cfg, "w_con", 0.0),
            (1, *array.shape[1:]),
            axis_weights=self._axis_weights(array.ndim - 1),
        )
        augment = make_augmenter(cfg, self.seed)
        rule = StopRule(
            cfg.max_iter, min_labels, cfg.plateau_iter, cfg.plateau_tol, self._check_every
        )
        for iteration in range(1, cfg.max_iter + 1):
            if augment is not None:  # the seed's random CLAHE, new at every iteration
                x = self._to_device(augment(array)[np.newaxis])
            loss, channels, n_labels = step(x)
            reason = rule.update(iteration, n_labels, channels)
            state = self._state(iteration, cfg.max_iter, n_labels, reason, loss, channels)
            if not geometry.identity:
                state = dataclasses.replace(state, _restore=geometry.restore)
            yield state
            if reason:
                return

    # -- reference mode ---------------------------------------------------------------------
    def fit_iter(
        self, images: Sequence[np.ndarray], *, channel_axis: int | None = None
    ) -> Iterator[TrainingState]:
        """Train one model on several images, yielding a state after every update.

        The reference-image mode of the TIP 2020 code: every image is resized to
        ``ref_size`` squared (unless ``ref_size`` is 0), then for each of ``n_epochs``
        epochs and each batch of ``batch_size`` images, ``max_update`` consecutive updates
        are made on that batch. There is no stop rule. Afterwards `predict` segments any
        image at full resolution without retraining.

        Parameters
        ----------
        images : sequence of array_like
            Reference images, all with the same number of channels.
        channel_axis : int, optional
            Channel axis of multichannel images.

        Yields
        ------
        TrainingState
            ``max_iter`` is the total number of updates of the whole fit.
        """
        cfg = self.config
        if isinstance(images, np.ndarray) and images.ndim == 2:
            raise ImageError("fit expects a sequence of images; wrap a single image in a list.")
        if len(images) == 0:
            raise ImageError("fit needs at least one reference image.")
        arrays = [self._reference_input(img, channel_axis) for img in images]
        in_channels = {a.shape[0] for a in arrays}
        if len(in_channels) != 1:
            raise ImageError(
                f"reference images have different channel counts {sorted(in_channels)}; "
                "convert them to the same layout (e.g. all RGB)."
            )
        batches = [arrays[i : i + cfg.batch_size] for i in range(0, len(arrays), cfg.batch_size)]
        for batch in batches:
            if len({a.shape for a in batch}) != 1:
                raise ImageError(
                    "images of one batch must have the same size: set ref_size (resize) or "
                    "batch_size=1."
                )
        in_channel_count = in_channels.pop()
        if cfg.checkpoint:
            self._load_checkpoint(in_channel_count, spatial_dims=arrays[0].ndim - 1)
        else:
            self._prepare_model(in_channel_count, warm_start=False, spatial_dims=arrays[0].ndim - 1)
        augment = make_augmenter(cfg, self.seed)
        self.keep_ids = ()
        total = cfg.n_epochs * len(batches) * cfg.max_update
        sp_cache: dict[int, Any] = {}
        iteration = 0
        for _ in range(cfg.n_epochs):
            for b, batch in enumerate(batches):
                x = self._to_device(np.stack(batch))
                superpixels = None
                if isinstance(cfg, SPConfig):
                    if b not in sp_cache:
                        sp_cache[b] = self._superpixels(batch)
                    superpixels = sp_cache[b]
                step = self._make_step(
                    superpixels,
                    None,
                    getattr(cfg, "w_con", 0.0),
                    (x.shape[0], *x.shape[2:]),
                    axis_weights=self._axis_weights(x.ndim - 2),
                )
                for _ in range(cfg.max_update):
                    iteration += 1
                    if augment is not None:  # the seed's random CLAHE, new at every update
                        x = self._to_device(np.stack([augment(a) for a in batch]))
                    loss, channels, n_labels = step(x)
                    reason = "max_iter" if iteration == total else ""
                    yield self._state(iteration, total, n_labels, reason, loss, channels)

    def fit(self, images: Sequence[np.ndarray], *, channel_axis: int | None = None) -> "Segmenter":
        """Train one model on several reference images (see `fit_iter`) and return self."""
        for _ in self.fit_iter(images, channel_axis=channel_axis):
            pass
        return self

    # -- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
        """Segment an image with the current model, without training.

        As in the published code, BatchNorm normalises with the statistics of the image
        being segmented.

        Parameters
        ----------
        image : array_like
            2-D image with the same number of channels as the training images.
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
        self._check_channels(array.shape[0], spatial_dims=array.ndim - 1)
        x = self._to_device(array[np.newaxis])
        with self._autocast():
            channels = argmax_channels(self.model(x))
        labels = number_segments(channels[0].cpu().numpy(), self.config.n_channels, self.keep_ids)
        return geometry.restore(labels)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the weights and the full configuration to one file.

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
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True.")
        payload = {
            "format": MODEL_FORMAT,
            "config": self.config.to_dict(),
            "seed": self.seed,
            "in_channels": self.model.in_channels,
            "spatial_dims": self.model.spatial_dims,
            "spacing": None if self.spacing is None else list(self.spacing),
            "keep_ids": list(self.keep_ids),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }
        torch.save(payload, path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "auto", precision: str = "auto"
    ) -> "Segmenter":
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
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist.")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"{path} is not a napari-kanezaki model file (or is damaged): {exc}"
            ) from exc
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            raise ValueError(
                f"{path} is not a napari-kanezaki model file: it was not written by "
                "Segmenter.save. A bare state dict can be loaded with torch.load and "
                "Segmenter.model.load_state_dict after a run."
            )
        config_dict = dict(payload["config"])
        config = config_for_method(config_dict["method"]).from_dict(config_dict)
        segmenter = cls(
            config,
            device=device,
            seed=payload["seed"],
            precision=precision,
            spacing=payload.get("spacing"),
        )
        segmenter._prepare_model(
            int(payload["in_channels"]),
            warm_start=False,
            spatial_dims=int(payload.get("spatial_dims", 2)),
        )
        assert segmenter.model is not None
        segmenter.model.load_state_dict(payload["state_dict"])
        segmenter.keep_ids = tuple(int(i) for i in payload["keep_ids"])
        return segmenter

    def _load_checkpoint(self, in_channels: int, spatial_dims: int = 2) -> None:
        """Fresh model with the weights of ``config.checkpoint`` (warm start).

        Accepts a file of `save` or a bare state dict of a network of the same layout
        (``weights_only`` loading: no pickled code runs).
        """
        path = Path(self.config.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint {path} does not exist; fix the path or set checkpoint = \"\" "
                "to start from fresh weights."
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"checkpoint {path} cannot be read as a model file: {exc}") from exc
        if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
            payload = payload["state_dict"]
        self._prepare_model(in_channels, warm_start=False, spatial_dims=spatial_dims)
        assert self.model is not None
        try:
            self.model.load_state_dict(payload)
        except Exception as exc:
            raise ConfigError(
                f"checkpoint {path} does not fit this network ({in_channels} input channel(s), "
                f"n_channels={self.config.n_channels}, n_conv={self.config.n_conv}): {exc}. "
                "Use the checkpoint's n_channels/n_conv or another checkpoint."
            ) from exc

    # -- internals --------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)

    def _memory_format(self, ndim: int = 4) -> torch.memory_format:
        # 3-D: channels_last_3d BatchNorm/elementwise kernels are ~10x slower on CPU.
        return torch.contiguous_format if ndim == 5 else torch.channels_last

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return tensor.to(self.device).contiguous(memory_format=self._memory_format(tensor.ndim))

    def _prepare_model(self, in_channels: int, warm_start: bool, spatial_dims: int = 2) -> None:
        cfg = self.config
        if warm_start:
            if self.model is None:
                raise RuntimeError("warm_start=True needs a model: load one or train first.")
            self._check_channels(in_channels, spatial_dims)
            return
        # PyTorch's default initialisation draws from the global generator: serialise seeded
        # initialisations so that concurrent runs (threads of a Dask batch, the widgets)
        # cannot interleave their draws and change each other's weights.
        with _SEEDED_INIT_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = KanezakiNet(in_channels, cfg.n_channels, cfg.n_conv, spatial_dims=spatial_dims)
        # Always in training mode: BatchNorm uses the current image's statistics, as published.
        memory_format = self._memory_format(spatial_dims + 2)
        self.model = model.to(self.device, memory_format=memory_format).train()

    def _check_channels(self, in_channels: int, spatial_dims: int | None = None) -> None:
        assert self.model is not None
        if spatial_dims is not None and spatial_dims != self.model.spatial_dims:
            raise ImageError(
                f"the model is a {self.model.spatial_dims}-D network but this input has "
                f"{spatial_dims} spatial axes; segment {self.model.spatial_dims}-D inputs with it."
            )
        if in_channels != self.model.in_channels:
            raise ImageError(
                f"the model was trained on {self.model.in_channels}-channel images but this "
                f"image has {in_channels} channel(s); convert it to the same layout."
            )

    def _reference_input(self, image: np.ndarray, channel_axis: int | None) -> np.ndarray:
        array, _ = prepare_network_input(image, self.config, channel_axis)
        size = self.config.ref_size
        if size == 0 or array.shape[1:] == (size, size):
            return array
        from skimage.transform import resize

        resized = resize(array, (array.shape[0], size, size), order=1, anti_aliasing=True)
        return resized.astype(np.float32)

    def _superpixels(self, arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, int]:
        """Superpixels of a batch, with ids offset so that they are unique in the batch."""
        cfg = self.config
        assert isinstance(cfg, SPConfig)
        maps, offset = [], 0
        for array in arrays:
            segments = compute_superpixels(
                _superpixel_view(array, cfg.superpixel),
                cfg.superpixel,
                spatial_dims=array.ndim - 1,
                spacing=self.spacing if array.ndim - 1 == len(self.spacing or ()) else None,
                n_segments=cfg.n_segments,
                compactness=cfg.compactness,
                scale=cfg.scale,
                sigma=cfg.sigma,
                min_size=cfg.min_size,
            )
            maps.append(segments + offset)
            offset += int(segments.max()) + 1
        return torch.from_numpy(np.stack(maps)).to(self.device), offset

    def _make_step(
        self,
        superpixels: tuple[torch.Tensor, int] | None,
        scribbles: torch.Tensor | None,
        w_con: float,
        batch_shape: tuple[int, ...],
        axis_weights: Sequence[float] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ):
        """Return a function doing one update on a batch: (loss, argmax, label count).

        `axis_weights` weights the continuity term per spatial axis; `optimizer` continues
        an existing optimizer (its momentum) instead of a new one (tiled training).
        """
        cfg = self.config
        model = self.model
        assert model is not None
        if optimizer is None:
            optimizer = _make_optimizer(cfg, model.parameters())
        n_channels = cfg.n_channels
        weights: torch.Tensor | float
        if isinstance(cfg, STConfig):
            weights = pixel_weights(scribbles, batch_shape, cfg.w_sim, cfg.w_scr)
        else:
            weights = 1.0 / math.prod(batch_shape)

        def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                response = model(x)
            channels = argmax_channels(response.detach())
            if superpixels is not None:
                sp_map, n_sp = superpixels
                target = refine_by_superpixels(channels, sp_map, n_sp, n_channels)
            else:
                target = channels if scribbles is None else torch.where(scribbles >= 0, scribbles, channels)
            loss = self_training_loss(response, target, weights, w_con, axis_weights)
            loss.backward()
            optimizer.step()
            counts = histogram(channels, n_channels)
            return loss.detach(), channels, counts.count_nonzero()

        return step

    def _axis_weights(self, spatial_dims: int) -> tuple[float, ...] | None:
        """Continuity weight of each spatial axis: ``min(spacing) / spacing`` (None: all 1)."""
        if self.spacing is None:
            return None
        if len(self.spacing) != spatial_dims:
            raise ImageError(
                f"spacing {self.spacing} has {len(self.spacing)} entries but the image has "
                f"{spatial_dims} spatial axes; give one voxel size per spatial axis."
            )
        smallest = min(self.spacing)
        return tuple(smallest / s for s in self.spacing)

    def _state(
        self,
        iteration: int,
        max_iter: int,
        n_labels: torch.Tensor,
        reason: str,
        loss: torch.Tensor,
        channels: torch.Tensor,
    ) -> TrainingState:
        return TrainingState(
            iteration=iteration,
            max_iter=max_iter,
            _n_labels=n_labels,
            done=bool(reason),
            stop_reason=reason,
            _loss=loss,
            _channels=channels,
            _n_channels=self.config.n_channels,
            _keep_ids=self.keep_ids,
        )


def argmax_channels(response: torch.Tensor) -> torch.Tensor:
    """Label of every pixel: the index of the largest channel, the first one on ties.

    Equal to ``response.argmax(dim=1)``, but reduces over the contiguous channel axis of a
    channels-last tensor with `torch.max`, which is about 2.5x faster than `argmax` there.

    Parameters
    ----------
    response : torch.Tensor
        ``(N, C, *spatial)``.

    Returns
    -------
    torch.Tensor
        int64 ``(N, *spatial)``.
    """
    return response.movedim(1, -1).max(dim=-1).indices


def _superpixel_view(array: np.ndarray, algorithm: str) -> np.ndarray:
    """Channels-last view of a network input, scaled so SLIC's compactness keeps its meaning.

    RGB goes to the superpixel algorithm as is (SLIC converts it to Lab, lightness 0..100).
    Grey is repeated to RGB, which is what the published code did (it always read 3-channel
    images). For SLIC, other channel counts are scaled to 0..100, the range of Lab lightness.
    """
    channels_last = np.moveaxis(array, 0, -1)
    if array.shape[0] == 3 or (algorithm != "slic" and array.shape[0] != 1):
        return channels_last
    if array.shape[0] == 1:
        return np.repeat(channels_last, 3, axis=-1)
    return channels_last * np.float32(100)


def _make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.ASGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"spacing must be a sequence of positive numbers, got {spacing!r}.") from exc
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ImageError(f"spacing must hold positive finite numbers, got {spacing!r}.")
    return values
