"""Turning user images and scribbles into network inputs, and outputs into label images.

Pure NumPy: no torch, Qt or napari.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "ImageError",
    "to_network_input",
    "normalize_intensity",
    "prepare_scribbles",
    "number_segments",
    "scribbles_from_published",
    "segment_numbering",
    "NormalizedImage",
]

#: Percentiles mapped to 0 and 1 for images that are not 8-bit.
DEFAULT_PERCENTILES = (1.0, 99.8)


class ImageError(ValueError):
    """An image or scribble array cannot be used; the message says why and what to do."""


def to_network_input(
    image: np.ndarray,
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Convert a 2-D image to a float32 ``(C, H, W)`` array with values in [0, 1].

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (alpha is dropped), or
        any 3-D array with an explicit `channel_axis`.
    channel_axis : int, optional
        Axis holding the channels. If omitted, a last axis of length 3 or 4 is read as
        RGB(A); any other 3-D shape is an error that asks for `channel_axis`.
    percentiles : (float, float)
        Used for images that are not uint8 or bool, see `normalize_intensity`.

    Returns
    -------
    numpy.ndarray
        float32, ``(C, H, W)``, C-contiguous. The input is never modified.
    """
    if isinstance(image, NormalizedImage):
        if channel_axis is not None:
            raise ImageError(
                "a NormalizedImage is already channels-first; do not pass channel_axis with it."
            )
        return image.array
    array = np.asarray(image)
    check_dtype(array.dtype)
    if array.ndim == 2:
        array = array[np.newaxis]
    elif array.ndim == 3:
        if channel_axis is None:
            if array.shape[-1] not in (3, 4):
                raise ImageError(
                    f"got a 3-D image of shape {array.shape} without channel_axis: pass "
                    "channel_axis=<axis of the channels> for a multichannel image, or segment "
                    "each plane of a stack separately."
                )
            channel_axis = -1
            if array.shape[-1] == 4:
                array = array[..., :3]
        try:
            array = np.moveaxis(array, channel_axis, 0)
        except np.exceptions.AxisError as exc:
            raise ImageError(
                f"channel_axis={channel_axis} is not an axis of an image of shape {array.shape}."
            ) from exc
    else:
        raise ImageError(
            f"expected a 2-D image (H, W) or (H, W, channels), got shape {array.shape}; "
            "squeeze singleton axes or pick one plane."
        )
    if min(array.shape[1:]) < 2:
        raise ImageError(f"image is too small to segment: spatial shape {array.shape[1:]}.")
    return normalize_intensity(array, percentiles)


def normalize_intensity(
    channels: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Scale a channels-first array to float32 in [0, 1].

    uint8 data is divided by 255, as in the papers; bool becomes 0/1. Every other dtype
    (uint16, other integers, floats) is normalised per channel: the low and high
    `percentiles` map to 0 and 1 and values outside are clipped, which is robust to hot
    pixels and to the unused headroom of 12- and 16-bit cameras. A constant channel becomes 0.

    Parameters
    ----------
    channels : numpy.ndarray
        ``(C, ...)`` array.
    percentiles : (float, float)
        Low and high percentile, ``0 <= low < high <= 100``.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.
    """
    low_p, high_p = percentiles
    if not 0 <= low_p < high_p <= 100:
        raise ImageError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    if channels.dtype == np.uint8:
        return np.ascontiguousarray(channels, dtype=np.float32) / np.float32(255)
    if channels.dtype == bool:
        return np.ascontiguousarray(channels, dtype=np.float32)
    check_dtype(channels.dtype)
    check_finite(channels)
    flat = channels.reshape(channels.shape[0], -1)
    low, high = np.percentile(flat, [low_p, high_p], axis=1)  # float64
    out = np.empty(channels.shape, dtype=np.float32)
    for c in range(channels.shape[0]):
        scale_into(channels[c], low[c], high[c], out[c])
    return out


def check_dtype(dtype: np.dtype) -> None:
    """Refuse what cannot be an image: non-numeric and complex data (`ImageError`).

    The one check of input dtypes, used by `to_network_input` and `ImageSource`.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise ImageError(
            f"image is complex ({dtype}); choose what to segment, e.g. its magnitude "
            "np.abs(image) or its real part image.real."
        )
    if dtype.kind == "O" or not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
        raise ImageError(f"image must be a numeric array, got dtype {dtype}.")


def check_finite(values: np.ndarray) -> None:
    """Refuse NaN and infinite values, tested in the data's own dtype (`ImageError`)."""
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise ImageError(
            "image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first."
        )


def scale_into(values: np.ndarray, low: float, high: float, out: np.ndarray) -> None:
    """Write ``clip((values - low) / (high - low), 0, 1)`` into the float32 `out`.

    Computed in float64 for 64-bit and wide integer data, so that values beyond float32's
    range do not overflow and large offsets keep their precision; a constant channel
    (``high == low``) becomes 0.
    """
    span = float(high) - float(low)
    if not span > 0:
        out[...] = 0
        return
    if values.dtype.itemsize >= 8 or (np.issubdtype(values.dtype, np.integer)
                                     and values.dtype.itemsize >= 4):
        out[...] = (values.astype(np.float64) - float(low)) / span
    else:
        np.subtract(values, np.float32(low), out=out, casting="unsafe")
        out /= np.float32(span)
    np.clip(out, 0, 1, out=out)


def prepare_scribbles(
    scribbles: np.ndarray | None, spatial_shape: tuple[int, ...], n_channels: int
) -> np.ndarray | None:
    """Check a napari-style scribble image and return it as int64 targets.

    Parameters
    ----------
    scribbles : array_like or None
        Integer (or bool) label image of the image's spatial shape: 0 = not scribbled,
        k >= 1 = class k.
    spatial_shape : tuple of int
        Spatial shape of the image.
    n_channels : int
        Network channels; every class id must be smaller.

    Returns
    -------
    numpy.ndarray or None
        int64 array with -1 where not scribbled and the class id elsewhere, or None (with a
        warning) when nothing is scribbled.
    """
    if scribbles is None:
        return None
    array = np.asarray(scribbles)
    if array.ndim == len(spatial_shape) + 1 and array.shape[-1] in (3, 4):
        raise ImageError(
            f"scribbles have shape {array.shape}, which looks like an RGB image; scribbles must "
            "be a single-channel label image (0 = not scribbled, k = class k), e.g. a napari "
            "Labels layer. Convert each colour to an integer class id first."
        )
    if array.shape != tuple(spatial_shape):
        raise ImageError(
            f"scribbles have shape {array.shape} but the image's spatial shape is "
            f"{tuple(spatial_shape)}; paint them on a Labels layer of the image's size."
        )
    if array.dtype == bool:
        array = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ImageError("scribbles must hold integer class ids; got non-integer values.")
    elif not np.issubdtype(array.dtype, np.integer):
        raise ImageError(f"scribbles must be an integer label image, got dtype {array.dtype}.")
    if array.size and int(array.min()) < 0:
        raise ImageError("scribbles must not be negative: use 0 for 'not scribbled'.")
    top = int(array.max()) if array.size else 0  # before any cast: uint64 ids stay exact
    if top >= n_channels:
        raise ImageError(
            f"scribble id {top} is not smaller than n_channels={n_channels}: class ids are "
            "used as channel indices. Relabel the scribbles to 1..k (e.g. "
            "skimage.segmentation.relabel_sequential) or raise n_channels."
        )
    array = array.astype(np.int64, copy=True)
    if top == 0:
        warnings.warn(
            "the scribble image is empty (all 0); running without scribbles.", stacklevel=3
        )
        return None
    array[array == 0] = -1
    return array


def number_segments(
    channel_map: np.ndarray,
    n_channels: int,
    keep_ids: np.ndarray | tuple[int, ...] = (),
) -> np.ndarray:
    """Renumber an argmax channel map into labels 1..K, largest segment first.

    Parameters
    ----------
    channel_map : numpy.ndarray
        Integer argmax channels in ``[0, n_channels)``.
    n_channels : int
        Number of channels.
    keep_ids : sequence of int
        Channel ids that keep their own number (the scribbled classes). The other segments
        are numbered from ``max(keep_ids) + 1`` upwards.

    Returns
    -------
    numpy.ndarray
        int32 labels of the same shape; no pixel is 0. Ties in size go to the smaller
        channel id, so the numbering is deterministic.
    """
    counts = np.bincount(channel_map.ravel(), minlength=n_channels)
    return segment_numbering(counts, n_channels, keep_ids)[channel_map]


def segment_numbering(
    counts: np.ndarray, n_channels: int, keep_ids: np.ndarray | tuple[int, ...] = ()
) -> np.ndarray:
    """The lookup table of `number_segments`, from per-channel pixel counts.

    Lets labels computed piece by piece (tiles, planes) be numbered as a whole.

    Parameters
    ----------
    counts : numpy.ndarray
        Pixels of every channel, length `n_channels`.
    n_channels : int
    keep_ids : sequence of int
        Channel ids that keep their own number.

    Returns
    -------
    numpy.ndarray
        int32 lookup, ``labels = lookup[channel_map]``.
    """
    counts = np.asarray(counts)
    keep = np.zeros(n_channels, dtype=bool)
    keep[np.asarray(keep_ids, dtype=np.int64)] = True
    lookup = np.zeros(n_channels, dtype=np.int32)
    lookup[keep] = np.flatnonzero(keep)
    others = np.flatnonzero((counts > 0) & ~keep)
    order = others[np.argsort(-counts[others], kind="stable")]
    start = int(np.flatnonzero(keep).max()) + 1 if keep.any() else 1
    lookup[order] = np.arange(start, start + order.size, dtype=np.int32)
    return lookup


def scribbles_from_published(scribbles: np.ndarray) -> np.ndarray:
    """Convert a scribble image of the published TIP 2020 code to napari's convention.

    The published files are single-channel 8-bit images where 255 means "not scribbled"
    and any other value v is a class (0 included); napari Labels use 0 for "not
    scribbled". Class v becomes label v + 1.

    Parameters
    ----------
    scribbles : array_like
        2-D uint8 image (255 = not scribbled). An RGB image is refused with an explanation.

    Returns
    -------
    numpy.ndarray
        int32 labels, 0 = not scribbled, v + 1 = published class v.
    """
    array = np.asarray(scribbles)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        raise ImageError(
            "this scribble file is RGB; the published format is a single-channel 8-bit image "
            "(255 = not scribbled). Save the scribbles as grey/palette indices."
        )
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ImageError(
            f"expected a 2-D integer scribble image, got {array.dtype} {array.shape}."
        )
    return np.where(array == 255, 0, array.astype(np.int32) + 1).astype(np.int32)


class NormalizedImage:
    """A network input that is already prepared: float32 ``(C, *spatial)`` in [0, 1].

    `to_network_input` (and so `Segmenter.run`, `Segmenter.predict`) uses it as it is, with
    no further normalisation. This is how stacks and tiles, normalised once with the
    statistics of the whole data set (see `ImageSource`), reach the network; the number of
    spatial axes (2 or 3) chooses the network's dimensionality.

    Parameters
    ----------
    array : numpy.ndarray
        float32, ``(C, H, W)`` or ``(C, D, H, W)``, values in [0, 1].
    """

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.dtype != np.float32 or array.ndim not in (3, 4):
            raise ImageError(
                "NormalizedImage takes a float32 (C, H, W) or (C, D, H, W) array, got "
                f"{array.dtype} of shape {array.shape}; use ImageSource.read to make one."
            )
        if min(array.shape[1:]) < 2:
            raise ImageError(f"image is too small to segment: spatial shape {array.shape[1:]}.")
        self.array = np.ascontiguousarray(array)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, *spatial)``."""
        return self.array.shape
