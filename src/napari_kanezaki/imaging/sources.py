"""Normalised, region-by-region reading of any (possibly lazy) N-D image: `ImageSource`.

Pure NumPy: no torch, Qt or napari. Dask and zarr arrays are indexed, never loaded whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_kanezaki.imaging.images import (
    DEFAULT_PERCENTILES,
    ImageError,
    check_dtype,
    check_finite,
    scale_into,
)

__all__ = ["ImageSource", "grey_image"]


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
        check_dtype(dtype)
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
            raise ImageError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}."
            )
        self.percentiles = (float(low_p), float(high_p))
        self._max_stat_elements = int(max_stat_elements)
        self._ranges_cache: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_header(cls, path: str | Path, channel_axis: int | None = None) -> ImageSource:
        """An `ImageSource` of a file's shape and dtype, from its header only.

        No pixel is read: for checking layouts and sizes before any work. Reading from it
        gives zeros.

        Parameters
        ----------
        path : str or Path
            An image file (see `io.image_header`).
        channel_axis : int, optional
            As for the constructor.

        Raises
        ------
        ValueError
            For an unreadable header; `ImageError` for a layout the core refuses.
        """
        from napari_kanezaki.imaging.io import image_header

        shape, dtype = image_header(path)
        return cls(np.broadcast_to(np.zeros((), dtype), shape), channel_axis=channel_axis)

    @classmethod
    def from_normalized(cls, array: np.ndarray) -> ImageSource:
        """A source over data that is already normalised: read as it is, never rescaled.

        For inputs prepared outside the engine (e.g. stacks preprocessed plane by plane
        with `planes.preprocess_planes`), whose values must reach the network
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
        check_finite(block)
        out = np.empty(block.shape, dtype=np.float32)
        for c in range(block.shape[0]):
            scale_into(block[c], low[c], high[c], out[c])
        return out

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
        check_finite(samples)
        samples = samples.astype(np.float64, copy=False)
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
            for n, s in zip(shape[-2:], side, strict=True):
                start = int(rng.integers(0, n - s + 1))
                index.append(slice(start, start + s))
            parts.append(self._read_raw(tuple(index)).reshape(self.n_channels, -1))
        return np.concatenate(parts, axis=1)


def grey_image(image: Any, *, channel_axis: int | None = None,
               rgb: bool | None = None) -> np.ndarray:
    """The image as the network sees it, its channels averaged: float of its spatial shape.

    Parameters
    ----------
    image : array_like or ImageSource
        Any image `ImageSource` reads (read whole here).
    channel_axis : int, optional
        Axis of the channels.
    rgb : bool, optional
        Whether the last axis is RGB(A) (default: guessed).

    Returns
    -------
    numpy.ndarray
        The normalised channels' mean, of the image's spatial shape (e.g. for
        ``to_objects(..., background="bright", image=...)``).
    """
    source = image if isinstance(image, ImageSource) else ImageSource(
        image, channel_axis=channel_axis, rgb=rgb)
    return np.asarray(source.read()).mean(axis=0)
