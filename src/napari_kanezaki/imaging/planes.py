"""Preprocessing of stacks and volumes, plane by plane.

Every preprocessing step is a 2-D operation and is applied plane by plane, in the seed's
order (crop, median blur, resize down to a multiple, CLAHE; see `imaging.preprocessing`), on
the last two spatial axes of every plane (every index of the leading axes), with the same
parameters for all planes: ``crop_bottom`` cuts the bottom rows (Y) of every plane,
``resize_multiple`` resizes Y and X of every plane down to a multiple (never Z or time),
CLAHE and the median filter work on each plane alone (no smoothing or equalisation across
planes). The stack is normalised once as a whole first (see `ImageSource`), so planes keep
their relative brightness. ``augment_clahe`` is a training-time augmentation of one 2-D
image and is not available for stacks (`check_stack_preprocessing` says so).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_kanezaki.imaging.images import ImageError
from napari_kanezaki.imaging.preprocessing import (
    PREPROCESSING_OFF,
    Geometry,
    is_active,
    preprocess,
)

__all__ = [
    "apply_planes",
    "check_stack_preprocessing",
    "preprocess_planes",
    "restore_planes",
    "without_preprocessing",
]


def without_preprocessing(config: Any) -> Any:
    """The configuration with every deterministic preprocessing step turned off.

    Parameters
    ----------
    config : SPConfig or STConfig

    Returns
    -------
    SPConfig or STConfig
        A copy (``crop_bottom=0, resize_multiple=0, clahe=False, median_blur=0``), or
        `config` itself when nothing was on.
    """
    return config.replace(**PREPROCESSING_OFF) if is_active(config) else config


def check_stack_preprocessing(config: Any) -> None:
    """Raise if the configuration asks for something that has no meaning for stacks.

    Parameters
    ----------
    config : SPConfig or STConfig

    Raises
    ------
    ImageError
        For ``augment_clahe`` (a random CLAHE of one 2-D image at every iteration), naming
        the option and how to turn it off. The other steps work plane by plane
        (`preprocess_planes`).
    """
    if getattr(config, "augment_clahe", False):
        raise ImageError(
            "augment_clahe (a random CLAHE of the 2-D image at every training iteration) is "
            "not available for stacks, volumes and tiled images; turn it off "
            "(--no-augment-clahe, or augment_clahe = false in the config). clahe, "
            "median_blur, crop_bottom and resize_multiple work plane by plane."
        )


def preprocess_planes(array: np.ndarray, config: Any) -> tuple[np.ndarray, Geometry]:
    """Apply the configuration's 2-D preprocessing to every plane of a normalised stack.

    Parameters
    ----------
    array : numpy.ndarray
        float32 ``(C, *lead, H, W)`` in [0, 1], normalised once for the whole stack (e.g.
        ``ImageSource(image).read()``); a 2-D ``(C, H, W)`` array is one plane.
    config : SPConfig or STConfig
        Reads ``crop_bottom``, ``resize_multiple``, ``clahe``, ``clahe_clip``,
        ``clahe_tiles`` and ``median_blur`` (see `preprocess`): every step runs on each
        ``(H, W)`` plane alone, with the same parameters.

    Returns
    -------
    array : numpy.ndarray
        float32 ``(C, *lead, H', W')``, a new array (the input itself when nothing is on).
    geometry : Geometry
        The change of every plane's ``(H, W)``; map labels back with `restore_planes`.
    """
    array = np.asarray(array)
    if array.ndim < 3:
        raise ImageError(
            f"expected a channels-first (C, ..., H, W) array, got shape {array.shape}."
        )
    plane_shape = tuple(array.shape[-2:])
    if not is_active(config):
        return array, Geometry(plane_shape, 0, plane_shape)
    lead_shape = array.shape[1:-2]
    out: np.ndarray | None = None
    geometry = None
    for lead in np.ndindex(*lead_shape):
        index = (slice(None), *lead)
        plane, geometry = preprocess(np.ascontiguousarray(array[index]), config)
        if out is None:
            out = np.empty((array.shape[0], *lead_shape, *plane.shape[1:]), dtype=np.float32)
        out[index] = plane
    assert out is not None and geometry is not None
    return out, geometry


def restore_planes(labels: Any, geometry: Geometry) -> np.ndarray:
    """Map the labels of preprocessed planes back to the input's plane shape.

    Parameters
    ----------
    labels : array_like
        ``(*lead, H', W')`` labels of a stack preprocessed by `preprocess_planes`.
    geometry : Geometry
        Its geometry.

    Returns
    -------
    numpy.ndarray
        ``(*lead, H, W)``: every plane through `Geometry.restore` (nearest neighbour, the
        cropped bottom rows 0).
    """
    labels = np.asarray(labels)
    if geometry.identity:
        return labels
    lead_shape = labels.shape[:-2]
    out = np.empty((*lead_shape, *geometry.input_shape), dtype=labels.dtype)
    for lead in np.ndindex(*lead_shape):
        out[lead] = geometry.restore(labels[lead])
    return out


def apply_planes(labels: np.ndarray | None, geometry: Geometry) -> np.ndarray | None:
    """Map a stack of label images (scribbles) to the preprocessed planes' shape.

    Parameters
    ----------
    labels : numpy.ndarray or None
        ``(*lead, H, W)`` integer labels (None is returned as is).
    geometry : Geometry
        From `preprocess_planes`.

    Returns
    -------
    numpy.ndarray or None
        ``(*lead, H', W')``, every plane through `Geometry.apply`.
    """
    if labels is None or geometry.identity:
        return labels
    labels = np.asarray(labels)
    if labels.ndim < 2 or tuple(labels.shape[-2:]) != tuple(geometry.input_shape):
        raise ImageError(
            f"scribbles have shape {labels.shape} but the image's planes are "
            f"{tuple(geometry.input_shape)}; paint them on a Labels layer of the image's size."
        )
    lead_shape = labels.shape[:-2]
    out = np.empty((*lead_shape, *geometry.network_shape), dtype=labels.dtype)
    for lead in np.ndindex(*lead_shape):
        out[lead] = geometry.apply(labels[lead])
    return out
