"""Turning user images and scribbles into network inputs, and outputs into label images.

Pure NumPy: no torch, Qt or napari.
"""

from __future__ import annotations

import warnings
from typing import Any

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
    "ImageSource",
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
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == bool
    ):
        raise ImageError(f"image must be a numeric array, got dtype {array.dtype}.")
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
    data = np.asarray(channels, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ImageError(
            "image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first."
        )
    flat = data.reshape(data.shape[0], -1)
    low, high = np.percentile(flat, [low_p, high_p], axis=1)
    span = high - low
    out = np.empty_like(data)
    for c in range(data.shape[0]):
        if span[c] > 0:
            np.subtract(data[c], low[c], out=out[c])
            out[c] /= span[c]
        else:
            out[c] = 0
    return np.clip(out, 0, 1, out=out)


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
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ImageError(f"scribbles must be an integer label image, got dtype {array.dtype}.")
    array = array.astype(np.int64, copy=True)
    if array.size and array.min() < 0:
        raise ImageError("scribbles must not be negative: use 0 for 'not scribbled'.")
    top = int(array.max()) if array.size else 0
    if top == 0:
        warnings.warn(
            "the scribble image is empty (all 0); running without scribbles.", stacklevel=3
        )
        return None
    if top >= n_channels:
        raise ImageError(
            f"scribble id {top} is not smaller than n_channels={n_channels}: class ids are "
            "used as channel indices. Relabel the scribbles to 1..k (e.g. "
            "skimage.segmentation.relabel_sequential) or raise n_channels."
        )
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
        raise ImageError(f"expected a 2-D integer scribble image, got {array.dtype} {array.shape}.")
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


class ImageSource:
    """Normalised, channels-first reading of any (possibly lazy) N-D image.

    The data is only indexed, never loaded as a whole: NumPy, dask and zarr arrays (and
    anything with ``shape``, ``dtype`` and NumPy-style indexing) work, and a read of a region
    loads that region only. The intensity range of every channel is computed once for the
    whole data set, so every plane and every tile is scaled the same way.

    Parameters
    ----------
    data : array_like
        The image. Every axis but the channel axis is spatial (planes, time points, Z, Y, X).
    channel_axis : int, optional
        Axis of the channels (any number of fluorescence channels).
    rgb : bool, optional
        The last axis is RGB(A) (alpha is dropped). Default: guessed like napari does, a
        last axis of length 3 or 4 in an array of 3 or more axes; pass ``rgb=False`` for a
        stack whose last spatial axis happens to have 3 or 4 pixels.
    percentiles : (float, float)
        Robust range of data that is not uint8 or bool: these percentiles of each channel
        map to 0 and 1 (see `normalize_intensity`). uint8 is divided by 255, as in the papers.
    max_stat_elements : int
        Per channel, up to this many values are read to compute the percentiles: all of
        them for smaller images, otherwise random blocks (seeded, so reproducible).

    Attributes
    ----------
    spatial_shape : tuple of int
    n_channels : int
    low, high : numpy.ndarray
        float64 per-channel values mapped to 0 and 1.
    """

    def __init__(
        self,
        data: Any,
        *,
        channel_axis: int | None = None,
        rgb: bool | None = None,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        max_stat_elements: int = 2**22,
    ) -> None:
        for attribute in ("shape", "dtype", "__getitem__"):
            if not hasattr(data, attribute):
                data = np.asarray(data)
                break
        dtype = np.dtype(data.dtype)
        if dtype == object or not (np.issubdtype(dtype, np.number) or dtype == bool):
            raise ImageError(f"image must be a numeric array, got dtype {dtype}.")
        shape = tuple(int(n) for n in data.shape)
        ndim = len(shape)
        if ndim < 2:
            raise ImageError(f"an image needs at least 2 axes, got shape {shape}.")
        if channel_axis is not None:
            if rgb:
                raise ImageError("pass either rgb=True or channel_axis, not both.")
            if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
                raise ImageError(f"channel_axis must be an integer axis, got {channel_axis!r}.")
            if not -ndim <= channel_axis < ndim:
                raise ImageError(
                    f"channel_axis={channel_axis} is out of range for an image of shape {shape} "
                    f"(valid: {-ndim}..{ndim - 1})."
                )
            channel_axis = int(channel_axis) % ndim
            self.rgb = False
        else:
            if rgb is None:
                rgb = ndim >= 3 and shape[-1] in (3, 4)
            elif rgb and shape[-1] not in (3, 4):
                raise ImageError(
                    f"rgb=True needs a last axis of length 3 or 4, got shape {shape}; use "
                    "channel_axis for other channel counts."
                )
            self.rgb = bool(rgb)
            channel_axis = ndim - 1 if rgb else None
        self.data = data
        self.dtype = dtype
        self.channel_axis = channel_axis
        self.spatial_shape = tuple(n for i, n in enumerate(shape) if i != channel_axis)
        if channel_axis is None:
            self.n_channels = 1
        else:
            self.n_channels = 3 if self.rgb else shape[channel_axis]
        if len(self.spatial_shape) < 2:
            raise ImageError(f"an image needs 2 spatial axes, got shape {shape}.")
        if min(self.spatial_shape[-2:]) < 2:
            raise ImageError(f"image is too small to segment: spatial shape {self.spatial_shape}.")
        low_p, high_p = percentiles
        if not 0 <= low_p < high_p <= 100:
            raise ImageError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
        self.percentiles = (float(low_p), float(high_p))
        self._max_stat_elements = int(max_stat_elements)
        self._ranges_cache: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_normalized(cls, array: np.ndarray) -> "ImageSource":
        """A source over data that is already normalised: read as it is, never rescaled.

        For inputs prepared outside the engine (e.g. stacks preprocessed plane by plane
        with `preprocessing.preprocess_planes`), whose values must reach the network
        unchanged.

        Parameters
        ----------
        array : numpy.ndarray
            float32, channels first ``(C, *spatial)`` with at least two spatial axes,
            values in [0, 1].

        Returns
        -------
        ImageSource
            With channel axis 0 and the range [0, 1] for every channel.
        """
        array = np.asarray(array)
        if array.dtype != np.float32 or array.ndim < 3:
            raise ImageError(
                "ImageSource.from_normalized takes a float32 (C, *spatial) array with at least "
                f"two spatial axes, got {array.dtype} of shape {array.shape}."
            )
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ImageError(
                "ImageSource.from_normalized needs values in [0, 1]; use ImageSource(data) "
                "to normalise raw data."
            )
        source = cls(array, channel_axis=0)
        n = source.n_channels
        source._ranges_cache = (np.zeros(n), np.ones(n))
        return source

    @property
    def low(self) -> np.ndarray:
        """Per-channel value mapped to 0 (computed on first use)."""
        return self._channel_ranges()[0]

    @property
    def high(self) -> np.ndarray:
        """Per-channel value mapped to 1 (computed on first use)."""
        return self._channel_ranges()[1]

    def _channel_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        if self._ranges_cache is None:
            self._ranges_cache = self._ranges(self._max_stat_elements)
        return self._ranges_cache

    @property
    def spatial_ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.spatial_shape)

    @property
    def nbytes_float(self) -> int:
        """Size of the whole normalised image in float32 bytes."""
        return 4 * self.n_channels * int(np.prod(self.spatial_shape, dtype=np.int64))

    def read(self, index: tuple[int | slice, ...] = ()) -> np.ndarray:
        """Read and normalise one region.

        Parameters
        ----------
        index : tuple of int or slice
            One entry per spatial axis (missing trailing entries mean the whole axis); an
            integer drops its axis.

        Returns
        -------
        numpy.ndarray
            float32 ``(C, *region)`` in [0, 1], a new array.
        """
        low, high = self._channel_ranges()
        block = self._read_raw(index)
        if not np.issubdtype(block.dtype, np.integer) and block.dtype != bool:
            if not np.isfinite(block).all():
                raise ImageError(
                    "image contains NaN or infinite values; replace them (e.g. np.nan_to_num) "
                    "first."
                )
        out = np.empty(block.shape, dtype=np.float32)
        for c in range(block.shape[0]):
            span = high[c] - low[c]
            if span > 0:
                np.subtract(block[c], np.float32(low[c]), out=out[c], casting="unsafe")
                out[c] /= np.float32(span)
            else:
                out[c] = 0
        return np.clip(out, 0, 1, out=out)

    def _read_raw(self, index: tuple[int | slice, ...]) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.spatial_ndim - len(index))
        if len(index) != self.spatial_ndim:
            raise ImageError(f"index {index} has more entries than the image's spatial axes.")
        full: list[int | slice] = list(index)
        if self.channel_axis is not None:
            full.insert(self.channel_axis, slice(0, 3) if self.rgb else slice(None))
        block = np.asarray(self.data[tuple(full)])
        if self.channel_axis is None:
            return block[np.newaxis]
        position = sum(1 for i in full[: self.channel_axis] if isinstance(i, slice))
        return np.moveaxis(block, position, 0)

    def _ranges(self, max_elements: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.n_channels
        if self.dtype == np.uint8:
            return np.zeros(n), np.full(n, 255.0)
        if self.dtype == bool:
            return np.zeros(n), np.ones(n)
        total = int(np.prod(self.spatial_shape, dtype=np.int64))
        if total <= max_elements:
            samples = self._read_raw(()).reshape(n, -1)
        else:
            samples = self._random_blocks(max_elements)
        samples = samples.astype(np.float64, copy=False)
        if not np.isfinite(samples).all():
            raise ImageError(
                "image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first."
            )
        low, high = np.percentile(samples, self.percentiles, axis=1)
        return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)

    def _random_blocks(self, max_elements: int) -> np.ndarray:
        """Values of random blocks (whole rows of the last two axes, one plane deep)."""
        rng = np.random.default_rng(0)
        shape = self.spatial_shape
        side = [min(n, 256) for n in shape[-2:]]
        per_block = side[0] * side[1]
        n_blocks = max(1, min(64, max_elements // per_block))
        parts = []
        for _ in range(n_blocks):
            index: list[int | slice] = [int(rng.integers(0, n)) for n in shape[:-2]]
            for n, s in zip(shape[-2:], side):
                start = int(rng.integers(0, n - s + 1))
                index.append(slice(start, start + s))
            parts.append(self._read_raw(tuple(index)).reshape(self.n_channels, -1))
        return np.concatenate(parts, axis=1)
