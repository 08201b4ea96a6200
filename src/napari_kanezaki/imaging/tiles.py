"""Tile geometry and memory sizes: where to cut an image so each piece fits a budget.

The tiles of `iter_tiles` overlap by a margin, so that a network whose receptive field is
no larger than the margin computes every tile's core exactly as in the whole image (see
`core.tiling`). `create_output` makes the label array results are written to, in memory or
as a zarr store on disk.

A memory budget bounds a run's peak memory above the interpreter's baseline: `fixed_bytes`
is what does not shrink with the tiles (the torch runtime, an in-memory input, in-memory
labels), `network_budget` what is left to the crops and tiles, which `working_set_bytes`
sizes (`imaging.heap.bound_heap` keeps freed tiles from staying resident). Pure NumPy (zarr
on demand): no torch, Qt or napari.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_kanezaki.imaging.images import ImageError

__all__ = [
    "default_memory_budget",
    "MIN_TILE",
    "Source",
    "Tile",
    "working_set_bytes",
    "fits_budget",
    "fixed_bytes",
    "network_budget",
    "shape_for_budget",
    "check_tile_shape",
    "iter_tiles",
    "create_output",
]

#: Smallest tile or crop side accepted.
MIN_TILE = 8
#: Share of the memory available at the start of a run that the default budget takes.
DEFAULT_BUDGET_SHARE = 0.6
#: Default budget where the available memory cannot be read.
FALLBACK_MEMORY_BUDGET = 4 * 1024**3
# float32 copies of the C-channel response alive per pixel: training (activations kept for
# the backward pass, gradients, the loss's buffers) and prediction without gradients.
# Measured peak above the interpreter for a 1000x1000 RGB image, C=100, n_conv=2: 9.5
# copies in float32, 5.0 with bfloat16 autocast.
_TRAIN_COPIES = 10
_PREDICT_COPIES = 4
#: Memory torch takes on the first training update whatever the image's size (thread pools,
#: oneDNN kernels, autograd): measured 99 MiB above the interpreter for a 16x16 crop on a
#: 2-core CPU (torch 2.x); counted in every budget.
RUNTIME_BYTES = 100 * 1024**2


class Source(Protocol):
    """What the tiling functions read: an `ImageSource` or a plane of one."""

    spatial_shape: tuple[int, ...]
    n_channels: int

    def read(self, index: tuple[int | slice, ...] = ()) -> np.ndarray: ...


@dataclass(frozen=True)
class Tile:
    """One tile: where its labels go and what to read for them.

    Attributes
    ----------
    core : tuple
        Index of the tile's own pixels in the full spatial shape (ints for plane axes).
    read : tuple
        Index of the region to read: the core plus the margin, clipped to the image.
    inner : tuple of slice
        The core inside the read region (model axes only).
    """

    core: tuple[int | slice, ...]
    read: tuple[int | slice, ...]
    inner: tuple[slice, ...]


# -- sizes --------------------------------------------------------------------------------
def default_memory_budget() -> int:
    """The memory budget used when none is given: 60 % of the memory available now.

    Read from ``MemAvailable`` in ``/proc/meminfo`` (Linux), else from the physical memory
    (`os.sysconf`), else `FALLBACK_MEMORY_BUDGET`; at least 1 GiB. The API, the command
    line and the widgets all decide with it whether an image trains whole or on crops.

    Returns
    -------
    int
        Bytes.
    """
    import os

    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):
            return FALLBACK_MEMORY_BUDGET
    return max(1024**3, int(available * DEFAULT_BUDGET_SHARE))


def working_set_bytes(n_pixels: int, n_channels: int, training: bool) -> int:
    """Estimated bytes the network needs for `n_pixels` pixels (or voxels).

    Parameters
    ----------
    n_pixels : int
        Pixels in one forward pass (all crops of a batch together).
    n_channels : int
        The network's feature channels C.
    training : bool
        With the backward pass (more buffers) or prediction only.

    Returns
    -------
    int
    """
    copies = _TRAIN_COPIES if training else _PREDICT_COPIES
    return int(n_pixels) * int(n_channels) * 4 * copies


def fits_budget(spatial_shape: Sequence[int], n_channels: int, budget: int) -> bool:
    """True if training on the whole image fits `budget` bytes.

    Raises
    ------
    ImageError
        `budget` is not a positive integer (e.g. ``"1GB"``: the API takes bytes).
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= 0:
        raise ImageError(f"memory_budget must be a positive number of bytes, got {budget!r}.")
    return working_set_bytes(math.prod(spatial_shape), n_channels, True) <= budget


def fixed_bytes(source: Source, labels_in_memory: bool) -> int:
    """Bytes of a run that do not depend on the crop and tile sizes.

    The torch runtime (`RUNTIME_BYTES`), the input when it is an in-memory NumPy array (a
    memory map, dask or zarr array is read region by region: not counted), and the int32
    labels when they are kept in memory.

    Parameters
    ----------
    source : ImageSource
        The input (its ``data`` is inspected, nothing is read).
    labels_in_memory : bool
        False when the labels go to a zarr store.

    Returns
    -------
    int
    """
    labels = 4 * math.prod(source.spatial_shape) if labels_in_memory else 0
    return RUNTIME_BYTES + _in_memory_bytes(getattr(source, "data", None)) + labels


def _in_memory_bytes(data: Any) -> int:
    """Bytes of `data` held in memory: a NumPy array not backed by a file, else 0."""
    import mmap

    if not isinstance(data, np.ndarray):
        return 0
    base: Any = data
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return 0
        base = getattr(base, "base", None)
    return int(data.nbytes)


def network_budget(budget: int, source: Source, labels_in_memory: bool) -> int:
    """The part of `budget` left to the network's working set (crops, tiles).

    The memory budget bounds the peak memory of a run above the interpreter's baseline:
    the input, the labels and the torch runtime count (`fixed_bytes`), the network's
    crops and tiles get what is left, but never less than a quarter of `budget` (a budget
    below 4/3 of the fixed part cannot be met; the crops and tiles are then as small as
    that quarter makes them).

    Parameters
    ----------
    budget : int
        The whole budget in bytes.
    source : ImageSource
        The input.
    labels_in_memory : bool
        False when the labels go to a zarr store.

    Returns
    -------
    int
        Bytes.
    """
    return max(int(budget) - fixed_bytes(source, labels_in_memory), int(budget) // 4)


def shape_for_budget(
    spatial_shape: Sequence[int], n_pixels: int, minimum: int = MIN_TILE
) -> tuple[int, ...]:
    """The largest near-cubic block of at most `n_pixels` pixels inside `spatial_shape`.

    Parameters
    ----------
    spatial_shape : sequence of int
        Shape of the model axes of the image.
    n_pixels : int
        Pixel budget of one block.
    minimum : int
        Smallest side; an error is raised if the budget allows less.

    Returns
    -------
    tuple of int
    """
    shape = tuple(int(n) for n in spatial_shape)
    if math.prod(shape) <= n_pixels:
        return shape
    low, high = 1, max(shape)
    while low < high:  # largest side s with prod(min(n, s)) <= n_pixels
        mid = (low + high + 1) // 2
        if math.prod(min(n, mid) for n in shape) <= n_pixels:
            low = mid
        else:
            high = mid - 1
    block = tuple(min(n, low) for n in shape)
    if min(block) < min(minimum, min(shape)):
        raise ImageError(
            f"the memory budget allows blocks of only {math.prod(block)} pixels, i.e. tiles "
            f"of {block}, smaller than the minimum side {minimum}; raise memory_budget or "
            "lower n_channels."
        )
    return block


def check_tile_shape(tile_shape: Sequence[int], model_dims: int) -> tuple[int, ...]:
    """Validate a user tile shape: one side >= `MIN_TILE` per model axis."""
    try:
        tile = tuple(int(t) for t in tile_shape)
    except (TypeError, ValueError) as exc:
        raise ImageError(
            f"tile_shape must be a sequence of integers, got {tile_shape!r}."
        ) from exc
    if len(tile) != model_dims:
        raise ImageError(
            f"tile_shape {tile} must have {model_dims} entries, one per axis of the "
            f"{model_dims}-D network."
        )
    if min(tile) < MIN_TILE:
        raise ImageError(
            f"tile_shape {tile} is too small: every side must be at least {MIN_TILE} pixels "
            "(tiles are read with an overlap margin of n_conv pixels); use larger tiles."
        )
    return tile


def iter_tiles(
    spatial_shape: Sequence[int], tile_shape: Sequence[int], margin: int
) -> list[Tile]:
    """Tiles covering an image, with overlap `margin` on every model axis.

    Parameters
    ----------
    spatial_shape : sequence of int
        Full spatial shape; its first ``len(spatial_shape) - len(tile_shape)`` axes are
        plane axes, visited one index at a time.
    tile_shape : sequence of int
        Core size of a tile on the model axes (the last axes).
    margin : int
        Extra pixels read on each side (clipped at the image border).

    Returns
    -------
    list of Tile
    """
    shape = tuple(int(n) for n in spatial_shape)
    n_lead = len(shape) - len(tile_shape)
    model_shape = shape[n_lead:]
    tiles = []
    for lead in np.ndindex(*shape[:n_lead]):
        starts = [range(0, n, t) for n, t in zip(model_shape, tile_shape, strict=True)]
        for corner in np.ndindex(*(len(r) for r in starts)):
            core, read, inner = [], [], []
            for axis, k in enumerate(corner):
                start = starts[axis][k]
                stop = min(start + tile_shape[axis], model_shape[axis])
                lo = max(start - margin, 0)
                hi = min(stop + margin, model_shape[axis])
                core.append(slice(start, stop))
                read.append(slice(lo, hi))
                inner.append(slice(start - lo, stop - lo))
            lead_index = tuple(int(i) for i in lead)
            tiles.append(Tile(lead_index + tuple(core), lead_index + tuple(read), tuple(inner)))
    return tiles


def create_output(
    shape: Sequence[int],
    out: str | Path | None = None,
    *,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Any:
    """The int32 label array results are written to: in memory, or a zarr array on disk.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the labels.
    out : str or Path, optional
        A zarr store path (e.g. ``"labels.zarr"``); None keeps the labels in memory.
    chunks : sequence of int, optional
        zarr chunk shape (the tile grid, so that every tile writes whole chunks).
    overwrite : bool
        Replace an existing store; otherwise an existing path is an error.

    Returns
    -------
    numpy.ndarray or zarr.Array
    """
    shape = tuple(int(n) for n in shape)
    if out is None:
        return np.zeros(shape, dtype=np.int32)
    import zarr

    path = Path(out)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; choose another output path or pass overwrite=True."
        )
    return zarr.open_array(
        str(path),
        mode="w",
        shape=shape,
        chunks=tuple(int(c) for c in chunks) if chunks is not None else None,
        dtype=np.int32,
        fill_value=0,
    )


