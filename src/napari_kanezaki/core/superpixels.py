"""Superpixels for the SP method and the vectorised majority-vote refinement."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["compute_superpixels", "histogram", "refine_by_superpixels"]


def compute_superpixels(
    image: np.ndarray,
    algorithm: str = "slic",
    *,
    n_segments: int = 10000,
    compactness: float = 100.0,
    scale: float = 10.0,
    sigma: float = 0.8,
    min_size: int = 10,
    spatial_dims: int = 2,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Over-segment an image with scikit-image, as the SP method does before training.

    Parameters
    ----------
    image : numpy.ndarray
        Float image, ``(H, W)`` or ``(H, W, C)`` channels-last, values in [0, 1]; with
        ``spatial_dims=3``, ``(D, H, W)`` or ``(D, H, W, C)`` (supervoxels).
    algorithm : {"slic", "felzenszwalb"}
        ``"slic"``: `skimage.segmentation.slic` with `n_segments` and `compactness` (other
        arguments at scikit-image's defaults). ``"felzenszwalb"``:
        `skimage.segmentation.felzenszwalb` with `scale`, `sigma` and `min_size`.
    n_segments, compactness : int, float
        SLIC parameters (paper: 10000, 100).
    scale, sigma, min_size : float, float, int
        Felzenszwalb parameters (seed: 10, 0.8, 10).
    spatial_dims : {2, 3}
        Number of spatial axes of `image`; 3 computes SLIC supervoxels (Felzenszwalb is 2-D
        only).
    spacing : tuple of float, optional
        Voxel size per spatial axis, SLIC's `spacing` (anisotropic volumes).

    Returns
    -------
    numpy.ndarray
        int64 superpixel ids ``0 .. S-1`` (consecutive), the image's spatial shape.
    """
    from skimage.segmentation import felzenszwalb, slic

    if spatial_dims not in (2, 3) or image.ndim not in (spatial_dims, spatial_dims + 1):
        raise ValueError(
            f"an image of shape {image.shape} does not have {spatial_dims} spatial axes "
            "(plus an optional last channel axis)."
        )
    multichannel = image.ndim == spatial_dims + 1
    if algorithm == "felzenszwalb" and spatial_dims == 3:
        raise ValueError(
            "Felzenszwalb superpixels are 2-D only; use superpixel='slic' for 3-D supervoxels."
        )
    if algorithm == "slic":
        # The published code passes 8-bit RGB to SLIC; scikit-image rescales to [0, 1]
        # internally for Lab conversion, so a [0, 1] float gives the same segments.
        segments = slic(
            image,
            n_segments=n_segments,
            compactness=compactness,
            channel_axis=-1 if multichannel else None,
            convert2lab=multichannel and image.shape[-1] == 3,
            spacing=None if spacing is None else np.asarray(spacing, dtype=np.float64),
        )
    elif algorithm == "felzenszwalb":
        segments = felzenszwalb(
            image,
            scale=scale,
            sigma=sigma,
            min_size=min_size,
            channel_axis=-1 if multichannel else None,
        )
    else:
        raise ValueError(
            f"unknown superpixel algorithm {algorithm!r}; use 'slic' or 'felzenszwalb'."
        )
    _, consecutive = np.unique(segments, return_inverse=True)
    return consecutive.reshape(segments.shape).astype(np.int64)


def refine_by_superpixels(
    target: torch.Tensor, superpixels: torch.Tensor, n_superpixels: int, n_labels: int
) -> torch.Tensor:
    """Give every superpixel the most frequent label inside it (ties: the smallest label).

    One histogram of (superpixel, label) pairs and one argmax: no loop over superpixels,
    and the same labels as the published per-superpixel vote.

    Parameters
    ----------
    target : torch.Tensor
        int64 labels in ``[0, n_labels)``, any shape.
    superpixels : torch.Tensor
        int64 superpixel ids in ``[0, n_superpixels)``, same shape as `target`.
    n_superpixels : int
        Number of superpixels S.
    n_labels : int
        Number of possible labels (the network's channels C).

    Returns
    -------
    torch.Tensor
        The refined labels, same shape and device as `target`.
    """
    pairs = superpixels.reshape(-1) * n_labels + target.reshape(-1)
    counts = histogram(pairs, n_superpixels * n_labels)
    # argmax returns the first maximum, i.e. the smallest label among ties.
    majority = counts.view(n_superpixels, n_labels).argmax(dim=1)
    return majority[superpixels]


def histogram(values: torch.Tensor, size: int) -> torch.Tensor:
    """Count the occurrences of each of ``0..size-1`` in `values`.

    Equal to ``torch.bincount(values, minlength=size)`` for values below `size`, but
    without bincount's host synchronisation on CUDA (it reads the maximum back to size
    its output), and faster on the CPU.

    Parameters
    ----------
    values : torch.Tensor
        int64 values in ``[0, size)``, any shape.
    size : int
        Number of bins.

    Returns
    -------
    torch.Tensor
        int64 counts ``(size,)`` on the device of `values`.
    """
    flat = values.reshape(-1)
    counts = torch.zeros(size, dtype=torch.int64, device=values.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))
