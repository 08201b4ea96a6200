"""The published training loops, re-created as the baseline the project is compared against.

This module repeats, operation for operation, what the authors' public ``demo.py`` scripts do
in one training iteration: Kanezaki (ICASSP 2018) for the SP method and Kim, Kanezaki &
Tanaka (IEEE TIP 2020) for the ST method. Everything is float32 in NCHW layout; the response
is permuted to ``(H*W, C)`` with a copy; the SP refinement is the published per-superpixel
NumPy loop; the ST continuity loss is built from two shifted differences and ``L1Loss``
against zero tensors. It is deliberately *not* optimised: it is the yardstick.

Differences from the published scripts, none of which changes the arithmetic of an
iteration:

- the image is passed as an RGB array (the scripts read BGR with OpenCV);
- the middle convolutions live in an ``nn.ModuleList`` as in the TIP code (the ICASSP code
  keeps them in a plain Python list, so its SGD never updates them);
- weights are seeded, and there is no visualisation or printing;
- the final prediction runs under ``torch.no_grad()`` (same values: the model stays in
  training mode, so BatchNorm uses the image's own statistics, as published).

With the same seed the initial weights equal those of `napari_kanezaki.Segmenter`, whose
network creates its convolutions in the same order.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import synchronize

__all__ = ["PublishedNet", "PublishedRun", "run_published", "superpixel_indices"]

#: Paper presets shared by both methods.
N_CHANNELS = 100
N_CONV = 2
LR = 0.1
MOMENTUM = 0.9
#: SP superpixels: SLIC arguments of the ICASSP code.
N_SUPERPIXELS = 10000
COMPACTNESS = 100
#: ST loss weights of the TIP code (``stepsize_sim``, ``stepsize_con``).
W_SIM = 1.0
W_CON = 1.0


class PublishedNet(nn.Module):
    """The published ``MyNet``: conv3x3 -> ReLU -> BN, (M-1) more such blocks, conv1x1 -> BN.

    Parameters
    ----------
    input_dim : int
        Channels of the input image.
    n_channels : int
        Feature channels C.
    n_conv : int
        Number of 3x3 convolution blocks M.
    """

    def __init__(self, input_dim: int, n_channels: int = N_CHANNELS, n_conv: int = N_CONV):
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, n_channels, kernel_size=3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(n_channels)
        self.conv2 = nn.ModuleList()
        self.bn2 = nn.ModuleList()
        for _ in range(n_conv - 1):
            self.conv2.append(
                nn.Conv2d(n_channels, n_channels, kernel_size=3, stride=1, padding=1)
            )
            self.bn2.append(nn.BatchNorm2d(n_channels))
        self.conv3 = nn.Conv2d(n_channels, n_channels, kernel_size=1, stride=1, padding=0)
        self.bn3 = nn.BatchNorm2d(n_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the response map ``(N, C, H, W)``."""
        x = self.conv1(x)
        x = F.relu(x)
        x = self.bn1(x)
        for conv, bn in zip(self.conv2, self.bn2, strict=True):
            x = conv(x)
            x = F.relu(x)
            x = bn(x)
        x = self.conv3(x)
        x = self.bn3(x)
        return x


class PublishedRun(NamedTuple):
    """Result of `run_published`; unpacks as ``(iter_seconds, labels)``."""

    #: Wall-clock seconds of every training iteration, in order.
    iter_seconds: list[float]
    #: ``(H, W)`` int64 argmax channel ids (0..C-1) of a fresh forward pass after training.
    labels: np.ndarray


def superpixel_indices(image: np.ndarray) -> list[np.ndarray]:
    """SLIC superpixels as the ICASSP code prepares them: one flat index array per superpixel.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 RGB image ``(H, W, 3)``.

    Returns
    -------
    list of numpy.ndarray
        For each superpixel id in increasing order, the flat (row-major) pixel indices.
    """
    from skimage import segmentation

    labels = segmentation.slic(image, compactness=COMPACTNESS, n_segments=N_SUPERPIXELS)
    labels = labels.reshape(image.shape[0] * image.shape[1])
    u_labels = np.unique(labels)
    l_inds = []
    for i in range(len(u_labels)):
        l_inds.append(np.where(labels == u_labels[i])[0])
    return l_inds


def _refine(im_target: np.ndarray, l_inds: list[np.ndarray]) -> None:
    """The published superpixel refinement, in place: each superpixel takes its majority label."""
    for i in range(len(l_inds)):
        labels_per_sp = im_target[l_inds[i]]
        u_labels_per_sp = np.unique(labels_per_sp)
        hist = np.zeros(len(u_labels_per_sp))
        for j in range(len(hist)):
            hist[j] = len(np.where(labels_per_sp == u_labels_per_sp[j])[0])
        im_target[l_inds[i]] = u_labels_per_sp[np.argmax(hist)]


def run_published(
    image: np.ndarray,
    method: str,
    n_iter: int = 1000,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    min_labels: int = 3,
) -> PublishedRun:
    """Train and predict as the published code does, timing every iteration.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 RGB image ``(H, W, 3)``.
    method : {"sp", "st"}
        ``"sp"``: ICASSP 2018 (SLIC superpixel refinement, cross-entropy). ``"st"``: TIP 2020
        without scribbles (cross-entropy + continuity loss).
    n_iter : int
        Maximum number of iterations (``maxIter``).
    seed : int
        Seed of the initial weights (``torch.manual_seed`` before the model is built).
    device : str or torch.device
        Where the model runs (the published code uses CUDA when available).
    min_labels : int
        Stop rule (``minLabels``): stop after the iteration whose label count, taken before
        its update, is at most this value. Use 0 to always run `n_iter` iterations.

    Returns
    -------
    PublishedRun
        Per-iteration seconds (superpixels, computed before the loop, are not included; on
        CUDA each iteration ends with a synchronisation) and the final labels.
    """
    method = method.lower()
    if method not in ("sp", "st"):
        raise ValueError(f"method must be 'sp' or 'st', got {method!r}.")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}.")
    device = torch.device(device)
    height, width = image.shape[:2]

    data = torch.from_numpy(np.array([image.transpose((2, 0, 1)).astype("float32") / 255.0]))
    data = data.to(device)
    l_inds = superpixel_indices(image) if method == "sp" else []

    torch.manual_seed(seed)
    model = PublishedNet(data.size(1)).to(device)
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    loss_hpy = torch.nn.L1Loss()
    loss_hpz = torch.nn.L1Loss()
    hpy_target = torch.zeros(height - 1, width, N_CHANNELS, device=device)
    hpz_target = torch.zeros(height, width - 1, N_CHANNELS, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    iter_seconds: list[float] = []
    synchronize(device)
    for _ in range(n_iter):
        start = time.perf_counter()
        optimizer.zero_grad()
        output = model(data)[0]
        output = output.permute(1, 2, 0).contiguous().view(-1, N_CHANNELS)
        if method == "st":
            output_hp = output.reshape((height, width, N_CHANNELS))
            hp_y = output_hp[1:, :, :] - output_hp[0:-1, :, :]
            hp_z = output_hp[:, 1:, :] - output_hp[:, 0:-1, :]
            lhpy = loss_hpy(hp_y, hpy_target)
            lhpz = loss_hpz(hp_z, hpz_target)
        _, target = torch.max(output, 1)
        im_target = target.data.cpu().numpy()
        n_labels = len(np.unique(im_target))
        if method == "sp":
            _refine(im_target, l_inds)
            target = torch.from_numpy(im_target).to(device)
            loss = loss_fn(output, target)
        else:
            loss = W_SIM * loss_fn(output, target) + W_CON * (lhpy + lhpz)
        loss.backward()
        optimizer.step()
        synchronize(device)
        iter_seconds.append(time.perf_counter() - start)
        if n_labels <= min_labels:
            break

    with torch.no_grad():
        output = model(data)[0]
        output = output.permute(1, 2, 0).contiguous().view(-1, N_CHANNELS)
        _, target = torch.max(output, 1)
        labels = target.cpu().numpy().reshape(height, width)
    return PublishedRun(iter_seconds, labels)
