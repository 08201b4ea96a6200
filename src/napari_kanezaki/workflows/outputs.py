"""Output files of a segmentation: their names, their temporary names while being written,
and what the overlay shows.

`output_paths` names the results of one image ``<stem>_labels.tif`` (or a zarr store
``<stem>_labels.zarr``), ``<stem>_overlay.png``, ``<stem>_model.pt`` and, when objects
are asked for, ``<stem>_objects.tif`` (instance labels, see `imaging.objects`). Writers
write each one under `partial_path` first and rename it at the end, the labels last, so a
half-written file never has a final name and the labels mark a complete job.

Importing this module imports neither torch nor dask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "OutputPaths",
    "output_paths",
    "partial_path",
    "display_image",
    "display_plane",
    "plane_chunks",
]


@dataclass(frozen=True)
class OutputPaths:
    """Where the results of one image go."""

    labels: Path
    overlay: Path
    model: Path | None
    objects: Path | None = None

    def all(self) -> list[Path]:
        """Every output path (the model's and the objects' only when they are written)."""
        return [p for p in (self.model, self.overlay, self.objects, self.labels)
                if p is not None]


def output_paths(
    outdir: str | Path,
    stem: str,
    *,
    model: bool = True,
    zarr: bool = False,
    objects: bool = False,
) -> OutputPaths:
    """``<stem>_labels.tif``, ``<stem>_overlay.png``, ``<stem>_model.pt`` in `outdir`.

    An empty `stem` gives the bare names ``labels.tif``, ``overlay.png``, ``model.pt``;
    `zarr` makes the labels a zarr store ``<stem>_labels.zarr``; `objects` adds
    ``<stem>_objects.tif`` (int32 instance labels).
    """
    outdir = Path(outdir)
    prefix = f"{stem}_" if stem else ""
    return OutputPaths(
        labels=outdir / f"{prefix}labels.{'zarr' if zarr else 'tif'}",
        overlay=outdir / f"{prefix}overlay.png",
        model=outdir / f"{prefix}model.pt" if model else None,
        objects=outdir / f"{prefix}objects.tif" if objects else None,
    )


def partial_path(path: Path) -> Path:
    """The temporary name `path` is written under before being renamed to `path`."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def display_image(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """The image as the overlay shows it: channels last (first three), 2-D."""
    array = np.asarray(image)
    if channel_axis is not None:
        array = np.moveaxis(array, channel_axis, -1)
        if array.shape[-1] > 3:
            array = array[..., :3]
        elif array.shape[-1] == 2:
            array = array.mean(axis=-1)
    return array


def display_plane(plane: np.ndarray) -> np.ndarray:
    """A normalised ``(C, H, W)`` plane as the overlay shows it: grey or the first 3 channels."""
    if plane.shape[0] == 1:
        return plane[0]
    if plane.shape[0] == 2:
        return plane.mean(axis=0)
    return np.moveaxis(plane[:3], 0, -1)


def plane_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """zarr chunks of one plane (capped at 4096 x 4096)."""
    return (1,) * (len(shape) - 2) + tuple(min(n, 4096) for n in shape[-2:])
