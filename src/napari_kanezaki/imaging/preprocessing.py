"""Preprocessing of the seed project: crop, median blur, resize, CLAHE, random-CLAHE augmentation.

Pure NumPy / scikit-image / SciPy (no torch, Qt or napari). Every function works on a network
input: a float32 ``(C, H, W)`` array in [0, 1] as made by `images.to_network_input`, and
returns a new array (inputs are never modified). The steps run in the seed's order:

1. ``crop_bottom``: cut N rows off the bottom (the seed: 65, the information bar of its SEM
   images);
2. ``median_blur``: median filter of an odd size (the seed: 5), edges replicated;
3. ``resize_multiple``: resize height and width **down** to a multiple of N (the seed: 32,
   ``int(w / 32) * 32``; a side shorter than N becomes N), bilinear, anti-aliased when
   shrinking;
4. ``clahe``: contrast-limited adaptive histogram equalisation of the lightness, **or**
   ``augment_clahe`` (training): a random CLAHE at every iteration *instead of* it, never on
   top of it, with an integer clip limit in [2, 9] and an integer tile grid in [3, 9] (the
   seed's ``randint(2, 9)`` and ``randint(3, 9)``, both ends inclusive). With
   ``augment_clahe`` on, `preprocess` skips the fixed CLAHE, so training sees a random CLAHE
   of the un-equalised image and prediction sees the un-equalised image.

**CLAHE parameters.** The seed used OpenCV, ``createCLAHE(clipLimit=2, tileGridSize=(8, 8))``
on the L channel of Lab. Here it is `skimage.exposure.equalize_adapthist` with

- ``clip_limit = clahe_clip / 256``: OpenCV clips each tile histogram at
  ``clipLimit * tile_pixels / 256``, scikit-image at ``clip_limit * tile_pixels`` (256 bins);
- ``kernel_size = (H // clahe_tiles, W // clahe_tiles)``: OpenCV's grid counts tiles per axis,
  scikit-image's kernel is the tile size;
- RGB: L of Lab (`skimage.color.rgb2lab`), equalised and converted back; other channel
  counts: each channel on its own. scikit-image also stretches a channel to its full range
  before and after equalising (OpenCV does not).

Stacks and volumes are preprocessed plane by plane with `imaging.planes`.

**Shapes.** The network sees the preprocessed image; `Geometry.restore` maps its labels back
to the input's shape: resized labels go back with nearest neighbour (ids intact), and the
cropped bottom rows get label 0, "not segmented" (the bar holds no sample; napari shows 0 as
transparent). Scribbles go the other way with `Geometry.apply`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_kanezaki.imaging.images import ImageError, to_network_input

__all__ = [
    "AUGMENT_CLIP",
    "AUGMENT_TILES",
    "PREPROCESSING_OFF",
    "Geometry",
    "clahe",
    "crop_bottom",
    "is_active",
    "make_augmenter",
    "median_blur",
    "prepare_network_input",
    "preprocess",
    "random_clahe",
    "resize_to_multiple",
    "multiple_shape",
]

#: Integer clip limits (OpenCV units) of the random CLAHE augmentation, both ends included
#: (the seed's ``random.randint(2, 9)``).
AUGMENT_CLIP = (2, 9)
#: Integer tile grids (tiles per axis) of the random CLAHE augmentation, both ends included
#: (the seed's ``random.randint(3, 9)``).
AUGMENT_TILES = (3, 9)

#: Config fields of the preprocessing, with their "off" values.
#: The settings that turn every deterministic preprocessing step off.
PREPROCESSING_OFF = {"crop_bottom": 0, "resize_multiple": 0, "clahe": False, "median_blur": 0}


@dataclass(frozen=True)
class Geometry:
    """How preprocessing changed an image's spatial shape, and how to undo it for labels.

    Attributes
    ----------
    input_shape : (int, int)
        Spatial shape of the image given by the user.
    crop_bottom : int
        Rows cut off the bottom.
    network_shape : (int, int)
        Spatial shape the network sees.
    """

    input_shape: tuple[int, ...]
    crop_bottom: int
    network_shape: tuple[int, ...]

    @property
    def cropped_shape(self) -> tuple[int, ...]:
        """Spatial shape after the crop, before resizing."""
        return (self.input_shape[0] - self.crop_bottom, *self.input_shape[1:])

    @property
    def identity(self) -> bool:
        """True when preprocessing kept the shape (labels need no mapping)."""
        return self.crop_bottom == 0 and tuple(self.network_shape) == tuple(self.input_shape)

    def restore(self, labels: np.ndarray) -> np.ndarray:
        """Map labels of the network's shape back to the input's shape.

        Parameters
        ----------
        labels : numpy.ndarray
            Integer labels of shape `network_shape`.

        Returns
        -------
        numpy.ndarray
            Labels of `input_shape`, same dtype: resized back with nearest neighbour (ids
            intact); the cropped bottom rows are 0 ("not segmented").
        """
        labels = np.asarray(labels)
        if self.identity:
            return labels
        if labels.shape != tuple(self.network_shape):
            raise ImageError(
                f"labels have shape {labels.shape}, expected the network's {self.network_shape}."
            )
        restored = _resize_nearest(labels, self.cropped_shape)
        if self.crop_bottom:
            pad = np.zeros((self.crop_bottom, *restored.shape[1:]), dtype=restored.dtype)
            restored = np.concatenate([restored, pad], axis=0)
        return restored

    def apply(self, labels: np.ndarray | None) -> np.ndarray | None:
        """Map a label image (scribbles) of the input's shape to the network's shape.

        Parameters
        ----------
        labels : numpy.ndarray or None
            Label image of `input_shape` (or None, returned as is).

        Returns
        -------
        numpy.ndarray or None
            Cropped, then resized with nearest neighbour; ids intact.
        """
        if labels is None or self.identity:
            return labels
        labels = np.asarray(labels)
        if labels.shape != tuple(self.input_shape):
            if labels.ndim == len(self.input_shape) + 1 and labels.shape[-1] in (3, 4):
                return labels  # prepare_scribbles explains RGB scribbles
            raise ImageError(
                f"scribbles have shape {labels.shape} but the image's spatial shape is "
                f"{tuple(self.input_shape)}; paint them on a Labels layer of the image's size."
            )
        cropped = labels[: self.cropped_shape[0]]
        return _resize_nearest(cropped, self.network_shape)


def is_active(config: Any) -> bool:
    """True if a configuration asks for any deterministic preprocessing step.

    Parameters
    ----------
    config : SPConfig or STConfig
        Configuration (any object with the preprocessing fields).
    """
    return any(getattr(config, name, off) != off for name, off in PREPROCESSING_OFF.items())


def preprocess(array: np.ndarray, config: Any) -> tuple[np.ndarray, Geometry]:
    """Apply the configuration's preprocessing to a network input.

    Parameters
    ----------
    array : numpy.ndarray
        float32 ``(C, H, W)`` in [0, 1] (see `images.to_network_input`), or a volume
        ``(C, *lead, H, W)``: then the steps that keep the shape (``median_blur``,
        ``clahe``) run on every ``(H, W)`` plane alone, and ``crop_bottom`` or
        ``resize_multiple`` raise `ImageError`.
    config : SPConfig or STConfig
        Reads ``crop_bottom``, ``median_blur``, ``resize_multiple``, ``clahe``,
        ``clahe_clip``, ``clahe_tiles`` and ``augment_clahe`` (which replaces ``clahe``: the
        fixed CLAHE is skipped when it is on). Steps in the seed's order: crop, median
        blur, resize down to a multiple, CLAHE.

    Returns
    -------
    array : numpy.ndarray
        float32 ``(C, H', W')`` in [0, 1]; the input itself when nothing is to be done.
    geometry : Geometry
        The shape change, to map labels back with `Geometry.restore`.
    """
    spatial = tuple(array.shape[1:])
    if not is_active(config):
        return array, Geometry(spatial, 0, spatial)
    if array.ndim != 3:
        if array.ndim > 3 and not config.crop_bottom and not config.resize_multiple:
            return _preprocess_planes(array, config), Geometry(spatial, 0, spatial)
        raise ImageError(
            f"crop_bottom and resize_multiple work on 2-D images; this input has spatial "
            f"shape {spatial}. Turn them off (set them to 0) or segment the planes one by "
            "one."
        )
    out = crop_bottom(array, config.crop_bottom)
    out = median_blur(out, config.median_blur)
    out = resize_to_multiple(out, config.resize_multiple)
    if config.clahe and not getattr(config, "augment_clahe", False):
        out = clahe(out, config.clahe_clip, config.clahe_tiles)
    return np.ascontiguousarray(out, dtype=np.float32), Geometry(
        spatial, int(config.crop_bottom), tuple(out.shape[1:])
    )


def _preprocess_planes(array: np.ndarray, config: Any) -> np.ndarray:
    """The shape-keeping steps (median blur, CLAHE) on every plane of ``(C, *lead, H, W)``."""
    out = np.empty(array.shape, np.float32)
    for lead in np.ndindex(*array.shape[1:-2]):
        index = (slice(None), *lead)
        plane = median_blur(array[index], config.median_blur)
        if config.clahe and not getattr(config, "augment_clahe", False):
            plane = clahe(plane, config.clahe_clip, config.clahe_tiles)
        out[index] = plane
    return out


def prepare_network_input(
    image: Any, config: Any, channel_axis: int | None = None
) -> tuple[np.ndarray, Geometry]:
    """`images.to_network_input` followed by the configuration's `preprocess`.

    Parameters
    ----------
    image : array_like
        The user's image (see `images.to_network_input`).
    config : SPConfig or STConfig
        Configuration with the preprocessing fields.
    channel_axis : int, optional
        Channel axis of a multichannel image.

    Returns
    -------
    array : numpy.ndarray
        float32 ``(C, H', W')`` in [0, 1].
    geometry : Geometry
        To map labels back (`Geometry.restore`) and scribbles forward (`Geometry.apply`).
    """
    return preprocess(to_network_input(image, channel_axis), config)


def make_augmenter(
    config: Any, seed: int
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The per-iteration augmentation of a configuration, or None when it has none.

    The augmentation is the seed's random CLAHE, drawn anew at every call. It takes the place
    of the fixed CLAHE (which `preprocess` skips when ``augment_clahe`` is on), so it works on
    the un-equalised image.

    Parameters
    ----------
    config : SPConfig or STConfig
        Reads ``augment_clahe``.
    seed : int
        Seed of the random CLAHE parameters (the run's seed: reproducible runs).

    Returns
    -------
    callable or None
        ``augment(array) -> array``, drawing new parameters at every call.
    """
    if not getattr(config, "augment_clahe", False):
        return None
    rng = np.random.default_rng([int(seed), 0xC1A4E])

    def augment(array: np.ndarray) -> np.ndarray:
        if array.ndim != 3:
            raise ImageError(
                "augment_clahe works on 2-D images; turn it off for this "
                f"{array.ndim - 1}-D input."
            )
        return random_clahe(array, rng)

    return augment


def crop_bottom(array: np.ndarray, rows: int) -> np.ndarray:
    """Cut `rows` rows off the bottom of a ``(C, H, W)`` array.

    Parameters
    ----------
    array : numpy.ndarray
        ``(C, H, W)``.
    rows : int
        Rows to remove (0: none).

    Returns
    -------
    numpy.ndarray
        ``(C, H - rows, W)`` (a view).
    """
    if rows == 0:
        return array
    height = array.shape[1]
    if height - rows < 2:
        raise ImageError(
            f"crop_bottom={rows} leaves {height - rows} row(s) of a {height}-row image; "
            "lower crop_bottom (the seed's 65 is for its SEM images with an information bar)."
        )
    return array[:, : height - rows]


def multiple_shape(shape: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """Each size rounded down to a multiple of `multiple`, as the seed (``int(w / 32) * 32``).

    A size shorter than `multiple` becomes `multiple` (the seed would make it 0 and fail).

    Parameters
    ----------
    shape : tuple of int
        Spatial shape.
    multiple : int
        The multiple (0: keep the shape).
    """
    if multiple == 0:
        return tuple(shape)
    return tuple(max(multiple, (int(s) // multiple) * multiple) for s in shape)


def resize_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """Resize a ``(C, H, W)`` array so that H and W are multiples of `multiple`, rounding down.

    The target is `multiple_shape`: ``int(size / multiple) * multiple`` (the seed's rounding),
    at least `multiple`.

    Parameters
    ----------
    array : numpy.ndarray
        float ``(C, H, W)``.
    multiple : int
        The multiple (the seed: 32); 0 keeps the size.

    Returns
    -------
    numpy.ndarray
        Bilinear resize (anti-aliased when shrinking), float32.
    """
    target = multiple_shape(array.shape[1:], multiple)
    if target == tuple(array.shape[1:]):
        return array
    from skimage.transform import resize

    shrink = any(t < s for t, s in zip(target, array.shape[1:], strict=True))
    out = resize(array, (array.shape[0], *target), order=1, anti_aliasing=shrink,
                 preserve_range=True)
    return np.clip(out, 0, 1).astype(np.float32)


def clahe(array: np.ndarray, clip: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation, parameters in OpenCV's units.

    Parameters
    ----------
    array : numpy.ndarray
        float ``(C, H, W)`` in [0, 1]. Three channels are read as RGB and the L channel of
        Lab is equalised; otherwise every channel is equalised on its own.
    clip : float
        OpenCV's ``clipLimit`` (seed: 2); scikit-image's ``clip_limit`` is ``clip / 256``.
    tiles : int
        OpenCV's tile grid per axis (seed: 8); scikit-image's ``kernel_size`` is the image
        size divided by it.

    Returns
    -------
    numpy.ndarray
        float32 ``(C, H, W)`` in [0, 1].
    """
    from skimage.exposure import equalize_adapthist

    kernel = tuple(max(s // int(tiles), 1) for s in array.shape[1:])

    def equalise(channel: np.ndarray) -> np.ndarray:
        if np.ptp(channel) == 0:
            return channel.astype(np.float64)
        return equalize_adapthist(channel, kernel_size=kernel, clip_limit=clip / 256, nbins=256)

    if array.shape[0] == 3:
        from skimage.color import lab2rgb, rgb2lab

        lab = rgb2lab(np.moveaxis(array, 0, -1).astype(np.float64))
        lab[..., 0] = equalise(lab[..., 0] / 100.0) * 100.0
        with warnings.catch_warnings():  # out-of-gamut colours are clipped, as intended
            warnings.filterwarnings("ignore", message="Conversion from CIE-LAB")
            out = np.moveaxis(lab2rgb(lab), -1, 0)
    else:
        out = np.stack([equalise(c) for c in array])
    return np.clip(out, 0, 1).astype(np.float32)


def random_clahe(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The seed's augmentation: CLAHE with a random integer clip limit and tile grid.

    Parameters
    ----------
    array : numpy.ndarray
        float ``(C, H, W)`` in [0, 1].
    rng : numpy.random.Generator
        Source of the random parameters (seeded by the run's seed for reproducibility).

    Returns
    -------
    numpy.ndarray
        `clahe` with the clip limit an integer in `AUGMENT_CLIP` and the tile grid an
        integer in `AUGMENT_TILES`, both drawn uniformly with both ends included (the
        seed's ``randint(2, 9)`` and ``randint(3, 9)``).
    """
    clip = int(rng.integers(AUGMENT_CLIP[0], AUGMENT_CLIP[1] + 1))
    tiles = int(rng.integers(AUGMENT_TILES[0], AUGMENT_TILES[1] + 1))
    return clahe(array, clip, tiles)


def median_blur(array: np.ndarray, size: int) -> np.ndarray:
    """Median filter of every channel with a ``size x size`` window (edges replicated).

    Parameters
    ----------
    array : numpy.ndarray
        ``(C, H, W)``.
    size : int
        Odd window size (seed: 5); 0 returns the input.

    Returns
    -------
    numpy.ndarray
    """
    if size == 0:
        return array
    from scipy.ndimage import median_filter

    return median_filter(array, size=(1, size, size), mode="nearest")


def _resize_nearest(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if tuple(labels.shape) == tuple(shape):
        return labels
    from skimage.transform import resize

    out = resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False)
    return out.astype(labels.dtype)
