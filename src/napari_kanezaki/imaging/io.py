"""Reading images and writing results: label TIFFs, colour overlays, run configurations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_image", "open_image", "image_header", "save_labels", "save_overlay", "overlay",
           "refuse_existing"]


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file (TIFF through tifffile, other formats through imageio).

    Parameters
    ----------
    path : str or Path
        Image file.

    Returns
    -------
    numpy.ndarray
        The pixel data, dtype as stored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        import imageio.v3 as iio

        return iio.imread(path)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as an image: {exc}") from exc


def open_image(path: str | Path) -> np.ndarray:
    """Open an image file for reading region by region where the format allows it.

    Uncompressed TIFF files (single images, multi-page stacks and volumes, ImageJ
    hyperstacks) are memory-mapped, so a huge volume is not loaded as a whole; other files
    are read like `read_image`.

    Parameters
    ----------
    path : str or Path
        Image file.

    Returns
    -------
    numpy.ndarray
        A read-only memory map or an in-memory array, dtype as stored.
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        import tifffile

        try:
            return tifffile.memmap(path, mode="r")
        except Exception:  # compressed, tiled or otherwise not contiguous: read it
            pass
    return read_image(path)


def image_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an image file, without reading its pixels (TIFF) where possible.

    Parameters
    ----------
    path : str or Path
        Image file.

    Returns
    -------
    shape : tuple of int
    dtype : numpy.dtype
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return tuple(int(n) for n in series.shape), np.dtype(series.dtype)
        import imageio.v3 as iio

        props = iio.improps(path)
        return tuple(int(n) for n in props.shape), np.dtype(props.dtype)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as an image: {exc}") from exc


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise `FileExistsError` for an existing `path` unless `overwrite` (one message)."""
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; choose another name or pass overwrite=True."
        )


def _prepare_destination(path: Path, overwrite: bool) -> None:
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)


def save_labels(path: str | Path, labels: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a label image as a lossless, zlib-compressed TIFF with the ids intact.

    Parameters
    ----------
    path : str or Path
        Destination, ``.tif`` or ``.tiff``.
    labels : numpy.ndarray
        Integer label image.
    overwrite : bool
        Replace an existing file; otherwise an existing file raises `FileExistsError`.

    Returns
    -------
    Path
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"label images are written as TIFF: use a .tif name, not {path.name!r}.")
    _prepare_destination(path, overwrite)
    tifffile.imwrite(path, np.asarray(labels), compression="zlib", photometric="minisblack")
    return path


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a label colouring over an image and draw segment boundaries.

    Parameters
    ----------
    image : numpy.ndarray
        2-D grey or RGB(A) image, any dtype.
    labels : numpy.ndarray
        Label image of the same spatial shape.
    alpha : float
        Opacity of the label colours.

    Returns
    -------
    numpy.ndarray
        uint8 RGB image.
    """
    from skimage.color import label2rgb
    from skimage.exposure import rescale_intensity
    from skimage.segmentation import mark_boundaries

    base = np.asarray(image)
    if base.ndim == 3 and base.shape[-1] == 4:
        base = base[..., :3]
    if base.ndim == 3 and base.shape[-1] != 3:
        base = base.mean(axis=-1)
    base = rescale_intensity(base.astype(np.float64), out_range=(0.0, 1.0))
    coloured = label2rgb(labels, image=base, alpha=alpha, bg_label=-1, image_alpha=1.0)
    bounded = mark_boundaries(coloured, labels, color=(1, 1, 1))
    return (np.clip(bounded, 0, 1) * 255).round().astype(np.uint8)


def save_overlay(
    path: str | Path, image: np.ndarray, labels: np.ndarray, *, overwrite: bool = False
) -> Path:
    """Write `overlay` of an image and its labels as a PNG.

    Parameters
    ----------
    path : str or Path
        Destination ``.png``.
    image, labels : numpy.ndarray
        As for `overlay`.
    overwrite : bool
        Replace an existing file; otherwise an existing file raises `FileExistsError`.

    Returns
    -------
    Path
    """
    import imageio.v3 as iio

    path = Path(path)
    _prepare_destination(path, overwrite)
    iio.imwrite(path, overlay(image, labels), extension=".png")
    return path
