"""The small fully convolutional network shared by both methods."""

from __future__ import annotations

import threading

import torch
from torch import nn

from napari_kanezaki.core.convolution import conv3x3
from napari_kanezaki.core.devices import memory_format
from napari_kanezaki.core.folded_norm import norm_conv, uses_folded_norm
from napari_kanezaki.imaging.images import ImageError

__all__ = ["KanezakiNet", "build_network", "check_input"]

_SEEDED_INIT_LOCK = threading.Lock()


class KanezakiNet(nn.Module):
    """Feature extractor of Kanezaki (2018) and Kim et al. (2020).

    ``Conv3x3(in -> C) -> ReLU -> BN``, then ``n_conv - 1`` blocks of
    ``Conv3x3(C -> C) -> ReLU -> BN`` (each with its own weights), then
    ``Conv1x1(C -> C) -> BN`` without ReLU: the response map whose argmax over channels is
    the label. BatchNorm comes *after* ReLU, as in the published code. There is no
    down-sampling: the output has the input's spatial size. Layers keep PyTorch's default
    initialisation.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 grey, 3 RGB, any number for multichannel data).
    n_channels : int
        Feature channels C, the maximum number of segments (paper: 100).
    n_conv : int
        Number of 3x3 convolution blocks M (paper: 2).
    spatial_dims : {2, 3}
        2 for images (Conv2d/BatchNorm2d), 3 for volumes (Conv3d/BatchNorm3d).
    """

    def __init__(
        self, in_channels: int, n_channels: int = 100, n_conv: int = 2, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        layers: list[nn.Module] = []
        for i in range(n_conv):
            layers += [
                conv(in_channels if i == 0 else n_channels, n_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                norm(n_channels),
            ]
        layers += [conv(n_channels, n_channels, 1), norm(n_channels)]
        self.layers = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.n_channels = n_channels
        self.n_conv = n_conv
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the response map, shape ``(N, C, *spatial)``.

        The same function, computed faster when training on the CPU in bfloat16: 2-D 3x3
        convolutions go through `core.convolution.conv3x3` (a blocked weight gradient),
        and a BatchNorm followed by a convolution through `core.folded_norm.norm_conv`
        (the normalisation folded into the convolution's weights).
        """
        layers = list(self.layers)
        i = 0
        while i < len(layers):
            layer = layers[i]
            after = layers[i + 1] if i + 1 < len(layers) else None
            if after is not None and uses_folded_norm(x, layer, after):
                x = norm_conv(x, layer, after)
                i += 2
                continue
            x = conv3x3(x, layer) if type(layer) is nn.Conv2d else layer(x)
            i += 1
        return x


def build_network(
    in_channels: int,
    n_channels: int,
    n_conv: int,
    *,
    spatial_dims: int,
    seed: int,
    device: torch.device,
) -> KanezakiNet:
    """A freshly initialised network, the same for the same seed, in training mode.

    PyTorch's default initialisation draws from the global generator: seeded
    initialisations are serialised so that concurrent runs (threads of a Dask batch, the
    widgets) cannot interleave their draws and change each other's weights. The model
    stays in training mode: BatchNorm uses the current image's statistics, as published.

    Parameters
    ----------
    in_channels, n_channels, n_conv, spatial_dims
        As for `KanezakiNet`.
    seed : int
        Seed of the initial weights.
    device : torch.device

    Returns
    -------
    KanezakiNet
    """
    with _SEEDED_INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = KanezakiNet(in_channels, n_channels, n_conv, spatial_dims=spatial_dims)
    return model.to(device, memory_format=memory_format(spatial_dims + 2)).train()


def check_input(model: KanezakiNet, in_channels: int, spatial_dims: int | None = None) -> None:
    """Refuse an input the model was not made for (channel count or dimensionality).

    Raises
    ------
    ImageError
        Naming what differs and what to do.
    """
    if spatial_dims is not None and spatial_dims != model.spatial_dims:
        raise ImageError(
            f"the model is a {model.spatial_dims}-D network but this input has "
            f"{spatial_dims} spatial axes; segment {model.spatial_dims}-D inputs with it."
        )
    if in_channels != model.in_channels:
        raise ImageError(
            f"the model was trained on {model.in_channels}-channel images but this "
            f"image has {in_channels} channel(s); convert it to the same layout."
        )
