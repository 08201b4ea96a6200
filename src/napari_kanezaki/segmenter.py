"""Training and prediction: the `Segmenter` object shared by scripts, the CLI and the widgets."""

from __future__ import annotations

import contextlib
import math
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, ConfigError, SPConfig, STConfig, config_for_method
from .devices import resolve_device, resolve_precision
from .images import ImageError, number_segments, prepare_scribbles, to_network_input
from .losses import pixel_weights, self_training_loss
from .network import KanezakiNet
from .superpixels import compute_superpixels, refine_by_superpixels

__all__ = ["Segmenter", "TrainingState"]

MODEL_FORMAT = "napari-kanezaki-model/1"


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
        (the quantity the stop rule looks at).
    done : bool
        True for the last state of a run (stop rule met or budget spent).
    stop_reason : str
        ``"min_labels"``, ``"max_iter"`` or ``""`` while running.
    """

    iteration: int
    max_iter: int
    n_labels: int
    done: bool
    stop_reason: str
    _loss: torch.Tensor = dataclasses.field(repr=False)
    _channels: torch.Tensor = dataclasses.field(repr=False)
    _n_channels: int = dataclasses.field(repr=False)
    _keep_ids: tuple[int, ...] = dataclasses.field(repr=False)

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
        return number_segments(channels, self._n_channels, self._keep_ids)


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
        self.model: KanezakiNet | None = None
        self.keep_ids: tuple[int, ...] = ()

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
        array = to_network_input(image, channel_axis)
        targets = prepare_scribbles(scribbles, array.shape[1:], cfg.n_channels)
        if targets is not None and isinstance(cfg, SPConfig):
            raise ConfigError(
                "scribbles are supported by the ST method only; use STConfig or method='st'."
            )
        x = self._to_device(array[np.newaxis])
        self._prepare_model(array.shape[0], warm_start)
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
            superpixels, scribble_tensor, getattr(cfg, "w_con", 0.0), (1, *array.shape[1:])
        )
        for iteration in range(1, cfg.max_iter + 1):
            loss, channels, n_labels = step(x)
            reason = ""
            if n_labels <= min_labels:
                reason = "min_labels"
            elif iteration == cfg.max_iter:
                reason = "max_iter"
            yield self._state(iteration, cfg.max_iter, n_labels, reason, loss, channels)
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
        self._prepare_model(in_channels.pop(), warm_start=False)
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
                    superpixels, None, getattr(cfg, "w_con", 0.0), (x.shape[0], *x.shape[2:])
                )
                for _ in range(cfg.max_update):
                    iteration += 1
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
        array = to_network_input(image, channel_axis)
        self._check_channels(array.shape[0])
        x = self._to_device(array[np.newaxis])
        with self._autocast():
            channels = self.model(x).argmax(dim=1)
        return number_segments(channels[0].cpu().numpy(), self.config.n_channels, self.keep_ids)

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
        segmenter = cls(config, device=device, seed=payload["seed"], precision=precision)
        segmenter._prepare_model(int(payload["in_channels"]), warm_start=False)
        assert segmenter.model is not None
        segmenter.model.load_state_dict(payload["state_dict"])
        segmenter.keep_ids = tuple(int(i) for i in payload["keep_ids"])
        return segmenter

    # -- internals --------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return tensor.to(self.device).contiguous(memory_format=self._memory_format())

    def _prepare_model(self, in_channels: int, warm_start: bool) -> None:
        cfg = self.config
        if warm_start:
            if self.model is None:
                raise RuntimeError("warm_start=True needs a model: load one or train first.")
            self._check_channels(in_channels)
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = KanezakiNet(in_channels, cfg.n_channels, cfg.n_conv)
        # Always in training mode: BatchNorm uses the current image's statistics, as published.
        self.model = model.to(self.device, memory_format=self._memory_format()).train()

    def _check_channels(self, in_channels: int) -> None:
        assert self.model is not None
        if in_channels != self.model.in_channels:
            raise ImageError(
                f"the model was trained on {self.model.in_channels}-channel images but this "
                f"image has {in_channels} channel(s); convert it to the same layout."
            )

    def _reference_input(self, image: np.ndarray, channel_axis: int | None) -> np.ndarray:
        array = to_network_input(image, channel_axis)
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
    ):
        """Return a function doing one update on a batch: (loss, argmax, label count)."""
        cfg = self.config
        model = self.model
        assert model is not None
        optimizer = _make_optimizer(cfg, model.parameters())
        n_channels = cfg.n_channels
        weights: torch.Tensor | float
        if isinstance(cfg, STConfig):
            weights = pixel_weights(scribbles, batch_shape, cfg.w_sim, cfg.w_scr)
        else:
            weights = 1.0 / math.prod(batch_shape)

        def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                response = model(x)
            channels = response.detach().argmax(dim=1)
            if superpixels is not None:
                sp_map, n_sp = superpixels
                target = refine_by_superpixels(channels, sp_map, n_sp, n_channels)
            else:
                target = channels if scribbles is None else torch.where(scribbles >= 0, scribbles, channels)
            loss = self_training_loss(response, target, weights, w_con)
            loss.backward()
            optimizer.step()
            counts = torch.bincount(channels.reshape(-1), minlength=n_channels)
            return loss.detach(), channels, int(counts.count_nonzero())

        return step

    def _state(
        self,
        iteration: int,
        max_iter: int,
        n_labels: int,
        reason: str,
        loss: torch.Tensor,
        channels: torch.Tensor,
    ) -> TrainingState:
        return TrainingState(
            iteration=iteration,
            max_iter=max_iter,
            n_labels=n_labels,
            done=bool(reason),
            stop_reason=reason,
            _loss=loss,
            _channels=channels,
            _n_channels=self.config.n_channels,
            _keep_ids=self.keep_ids,
        )


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
