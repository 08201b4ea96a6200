"""Input files of the command line: expanding files, folders and globs, finding scribbles,
and refusing unsuitable inputs before any work (from the files' headers only)."""

from __future__ import annotations

import argparse
import glob
from collections.abc import Sequence
from pathlib import Path

from napari_kanezaki.cli.main import CLIError

__all__ = ["IMAGE_SUFFIXES", "expand_inputs"]

#: File types picked up from folders and globs.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
#: Endings of the file stems of the image outputs a run writes (see `workflows.outputs`).
OUTPUT_SUFFIXES = ("_labels", "_overlay", "_objects")


def expand_inputs(items: Sequence[str | Path], what: str = "image") -> list[Path]:
    """Files, folders (their image files, sorted) and glob patterns, as a list of files.

    Parameters
    ----------
    items : sequence of str or Path
        What the user typed.
    what : str
        Word for error messages.

    Returns
    -------
    list of Path
    """
    files: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            # BSDS500 ground truth comes as .mat files; images never do.
            suffixes = IMAGE_SUFFIXES + ((".mat",) if what == "ground-truth" else ())
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise CLIError(f"folder {path} has no {what} files ({', '.join(IMAGE_SUFFIXES)}).")
            files += found
        elif path.is_file():
            files.append(path)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not found:
                raise CLIError(f"no {what} file matches {text!r}.")
            files += found
        else:
            raise CLIError(f"{what} {text} does not exist (not a file, folder or glob).")
    return files


def _find_scribbles(spec: Path | None, images: list[Path]) -> dict[Path, Path]:
    if spec is None:
        return {}
    if spec.is_file():
        if len(images) != 1:
            raise CLIError(
                f"--scribbles {spec} is one file but there are {len(images)} images; give a "
                "folder of scribbles named like the images."
            )
        return {images[0]: spec}
    if not spec.is_dir():
        raise CLIError(f"--scribbles {spec} is neither a file nor a folder.")
    by_stem: dict[str, Path] = {}
    for p in sorted(spec.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            stem = p.stem
            for suffix in ("_scribbles", "_scribble"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
            by_stem.setdefault(stem, p)
    return {img: by_stem[img.stem] for img in images if img.stem in by_stem}


def _check_outdir(outdir: Path, images: list[Path]) -> None:
    """Refuse, before anything is written, inputs whose outputs in `outdir` would be wrong.

    Two inputs with the same name (file stem) would write the same output files; an input
    inside `outdir` named like an output (``<stem>_labels``, ``_overlay``, ``_objects``) is
    most likely an output of an earlier run.

    Parameters
    ----------
    outdir : Path
        The output folder (it may not exist yet).
    images : list of Path
        The input files.

    Raises
    ------
    CLIError
        Naming the files and what to do.
    """
    by_stem: dict[str, Path] = {}
    for img in images:
        other = by_stem.setdefault(img.stem, img)
        if other is img:
            continue
        if other.resolve() == img.resolve():
            raise CLIError(f"{img} is given twice (check the files, folders and globs); give "
                           "each image once.")
        raise CLIError(
            f"{other} and {img} have the same name {img.stem!r}; their outputs in {outdir} "
            "would collide. Rename one of them, or segment them into different output "
            "folders."
        )
    resolved = outdir.resolve()
    for img in images:
        if img.resolve().parent == resolved and img.stem.endswith(OUTPUT_SUFFIXES):
            raise CLIError(f"{img} looks like an output of an earlier run in {outdir}; "
                           "choose another output folder.")


def _check_stack_inputs(args: argparse.Namespace, config, images: list[Path]) -> None:
    """Refuse, before any work, stack options that do not suit the inputs (exit status 2).

    Reads only the files' headers: the core's own checks of the stack mode
    (`stacks.check_stack_mode`), of ``--spacing``'s length and of ``--tile-shape``
    (`tiles.check_tile_shape`) on an image of the file's shape and dtype.
    """
    from napari_kanezaki.imaging.images import ImageError
    from napari_kanezaki.imaging.planes import check_stack_preprocessing
    from napari_kanezaki.imaging.tiles import check_tile_shape
    from napari_kanezaki.workflows.stacks import _model_spacing, check_stack_mode

    if args.spacing is not None and args.stack_mode is None:
        raise CLIError("--spacing is the voxel size of a stack or volume; it needs --stack-mode.")
    engine = any(v is not None for v in (args.stack_mode, args.memory_budget, args.tile_shape))
    if engine or args.zarr:
        try:
            check_stack_preprocessing(config)
        except ImageError as exc:
            raise CLIError(str(exc)) from exc
    for path in images:
        if path.suffix.lower() == ".mat":
            continue
        source = _header_source(path, args.channel_axis)
        if source is None:
            continue  # unreadable: its job fails and reports it, the others run
        try:
            model_dims = check_stack_mode(source, args.stack_mode)
        except ImageError as exc:
            raise CLIError(f"{path}: {exc} (set with --stack-mode / --channel-axis)") from exc
        try:
            _model_spacing(args.spacing, source.spatial_shape, model_dims)
        except ImageError as exc:
            raise CLIError(f"{path}: {exc} (set with --spacing)") from exc
        if args.tile_shape is not None:
            try:
                check_tile_shape(args.tile_shape, model_dims)
            except ImageError as exc:
                raise CLIError(f"{path}: {exc} (set with --tile-shape)") from exc


def _header_source(path: Path, channel_axis: int | None):
    """An `ImageSource` of a file's shape and dtype, from its header only (no pixel read).

    Returns None for an unreadable file (its job fails later and reports it); a dtype or
    layout the core refuses becomes a `CLIError` naming the file, with a hint at
    ``--channel-axis`` only where an axis could hold the channels (more than two axes, or
    the option given).
    """
    from napari_kanezaki.imaging.images import ImageError, check_dtype
    from napari_kanezaki.imaging.io import image_header
    from napari_kanezaki.imaging.sources import ImageSource

    try:
        shape, dtype = image_header(path)
    except ValueError:
        return None
    try:
        check_dtype(dtype)
    except ImageError as exc:
        raise CLIError(f"{path} (shape {shape}): {exc}") from exc
    try:
        return ImageSource.from_header(path, channel_axis)
    except ImageError as exc:
        hint = " (set with --channel-axis)" if channel_axis is not None or len(shape) > 2 else ""
        raise CLIError(f"{path} (shape {shape}): {exc}{hint}") from exc


def _check_2d_inputs(args: argparse.Namespace, images: list[Path]) -> None:
    """`predict` takes 2-D images: refuse stacks before any work, saying what to do."""
    for path in images:
        source = _header_source(path, args.channel_axis)
        if source is None:
            continue  # unreadable: its job fails and reports it, the others run
        if source.spatial_ndim != 2:
            raise CLIError(
                f"{path} is a stack or volume (spatial shape {source.spatial_shape}); predict "
                "takes 2-D images. Segment stacks with `napari-kanezaki segment --stack-mode "
                "...`, or pass --channel-axis if one axis holds channels."
            )
