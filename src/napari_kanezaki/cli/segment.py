"""``napari-kanezaki segment``: train a fresh model on each image and write its labels."""

from __future__ import annotations

import argparse
import time

from napari_kanezaki.cli.inputs import (
    _check_outdir,
    _check_stack_inputs,
    _find_scribbles,
    expand_inputs,
)
from napari_kanezaki.cli.main import CLIError
from napari_kanezaki.cli.parser import (
    _batch_options,
    _config_options,
    _output_dir,
    _runtime_options,
    _scribble_options,
    _stack_options,
    _subparser,
    build_config,
)
from napari_kanezaki.cli.records import _runtime, _summary, write_run_files
from napari_kanezaki.imaging.membranes import DEFAULT_RIDGE_SIGMA
from napari_kanezaki.imaging.objects import DEFAULT_MIN_SIZE, SPLIT_SEEDS

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the ``segment`` subcommand to the subparsers `sub`; return its parser (runs `run`)."""
    p = _subparser(sub, "segment", "train a fresh model on each image and write its labels "
                   "(one image: the seed's 'base'; folders/globs: 'base_folder')")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (their images) or glob patterns")
    _scribble_options(p)
    p.add_argument("--no-model", dest="save_model", action="store_false",
                   help="do not write each image's trained model (default: write <stem>_model.pt)")
    _output_dir(p)
    _config_options(p)
    _runtime_options(p)
    _stack_options(p)
    _object_options(p)
    _batch_options(p)
    p.set_defaults(handler=run)
    return p


def _object_options(p: argparse.ArgumentParser) -> None:
    """``--objects``, ``--background`` and ``--min-object-size``."""
    group = p.add_argument_group(
        "objects (cells, nuclei)",
        "--objects also writes <stem>_objects.tif (lossless int32): every class but the "
        "background is foreground (the classes merged), one object per connected region, "
        "touching ones split by a watershed on the distance transform; 0 = background, "
        "objects 1..N. 2-D per plane, 3-D per volume with --stack-mode 3d (using "
        "--spacing). The background is --background, else the class painted with scribble "
        "label 1, else the class covering most of the image border.",
    )
    group.add_argument("--objects", action="store_true",
                       help="also write the objects as <stem>_objects.tif (not with --zarr; "
                       "default: classes only)")
    group.add_argument("--background", nargs="+", default=None, metavar="ID",
                       help="background class id(s) of --objects, e.g. the background and a "
                       "membrane class, or 'membranes': the thinnest class spanning the image "
                       "(cells between stained membranes, EM), or 'bright' / 'dark': the "
                       "classes brighter / darker than the image (stained membranes in "
                       "fluorescence / EM); default: the class painted with scribble label 1, "
                       "else the class covering most of the image border")
    group.add_argument("--min-object-size", type=_positive_int, default=DEFAULT_MIN_SIZE,
                       metavar="N", help="smallest object of --objects, in pixels (2-D) or "
                       "voxels (3-D)")
    group.add_argument("--fill", type=_distance, default=0.0, metavar="PX",
                       help="give background pixels within PX pixels to the nearest object "
                       "('inf': every background pixel; EM slices: 1.5; default: 0, none)")
    group.add_argument("--no-split-touching", dest="split_touching", action="store_false",
                       help="keep touching objects of one connected region together (no "
                       "watershed split; EM slices)")
    group.add_argument("--split-seeds", choices=SPLIT_SEEDS, default="distance",
                       help="seeds of the split of touching objects: the maxima of the "
                       "distance transform, or the darkest / brightest points of the image "
                       "(smoothed): cell centres between bright / dark membranes "
                       "(confocal membrane stain: dark; default: distance)")
    group.add_argument("--runs", type=_positive_int, default=1, metavar="N",
                       help="train N networks (seeds --seed, --seed + 1, ...) and write the "
                       "objects of their majority vote: background where most runs put "
                       "their background classes (labels, overlay and model: the first "
                       "run's; N times the time; confocal workflow: 3; default: 1)")
    membranes = p.add_argument_group(
        "membranes",
        "--enhance-membranes trains on the membrane (ridge) response of the image instead "
        "of its intensity (Sato's filter at one scale, over all axes of a volume; the "
        "image is read whole; grey images only): membranes that are faint or unevenly lit "
        "come out more completely. Written labels, overlay and model are of that response.",
    )
    membranes.add_argument("--enhance-membranes", dest="membranes",
                           choices=("bright", "dark"), default=None,
                           help="bright: stained membranes (fluorescence); dark: membranes "
                           "in EM or brightfield (default: off)")
    membranes.add_argument("--ridge-sigma", type=_positive_float, default=DEFAULT_RIDGE_SIGMA,
                           metavar="PX", help="scale of the membrane filter in pixels, about "
                           f"the membranes' half thickness (default: {DEFAULT_RIDGE_SIGMA})")


def _distance(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a distance >= 0 or 'inf', got {text!r}.")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and value != float("inf")):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}.")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}.")
    return value


def run(args: argparse.Namespace) -> int:
    """Segment every input, one job per image (in this process or on Dask).

    Takes the parsed options; returns the exit status (0, or 1 when some images failed).
    """
    from napari_kanezaki.workflows.batch import run_jobs
    from napari_kanezaki.workflows.jobs import Job

    config = build_config(args)
    images = expand_inputs(args.inputs)
    scribbles = _find_scribbles(args.scribbles, images)
    if scribbles and config.method != "st":
        raise CLIError("--scribbles needs the ST method (--method st).")
    _check_outdir(args.output, images)
    _check_stack_inputs(args, config, images)
    background = _check_object_options(args)
    write_run_files(args.output, config, _runtime(args, "segment", images), args.overwrite)
    jobs = [
        Job(name=img.stem, image=img, outdir=args.output, config=config.to_dict(),
            seed=args.seed, device=args.device, precision=args.precision,
            scribbles=scribbles.get(img), scribble_format=args.scribble_format,
            save_model=args.save_model, channel_axis=args.channel_axis,
            overwrite=args.overwrite, stack_mode=args.stack_mode,
            spacing=None if args.spacing is None else tuple(args.spacing),
            memory_budget=args.memory_budget,
            tile_shape=None if args.tile_shape is None else tuple(args.tile_shape),
            zarr=args.zarr, objects=args.objects,
            background=background, min_object_size=args.min_object_size, fill=args.fill,
            split_touching=args.split_touching, split_seeds=args.split_seeds, runs=args.runs,
            membranes=args.membranes,
            ridge_sigma=args.ridge_sigma)
        for img in images
    ]
    started = time.perf_counter()
    if len(jobs) == 1 and args.scheduler is None:
        results = [_single_with_progress(jobs[0], config, quiet=args.quiet)]
    else:
        results = run_jobs(jobs, scheduler=args.scheduler, workers=args.workers,
                           threads=args.threads, progress=not args.quiet)
    return _summary(results, started, args.output)


def _check_object_options(args: argparse.Namespace) -> tuple[int, ...] | str | None:
    """Check the objects options; return the background as `to_objects` takes it."""
    if args.objects and args.zarr:
        raise CLIError("--objects writes a TIFF beside TIFF labels; drop --zarr or --objects.")
    if not args.objects and (args.background is not None
                             or args.min_object_size != DEFAULT_MIN_SIZE
                             or args.fill != 0 or not args.split_touching or args.runs != 1
                             or args.split_seeds != "distance"):
        raise CLIError("--background, --min-object-size, --fill, --no-split-touching, "
                       "--split-seeds and --runs need --objects.")
    if args.split_seeds != "distance" and not args.split_touching:
        raise CLIError(f"--split-seeds {args.split_seeds} places the seeds of the split of "
                       "touching objects; drop --no-split-touching or --split-seeds.")
    if args.membranes is not None and args.channel_axis is not None:
        raise CLIError("--enhance-membranes takes grey images; drop --channel-axis (or "
                       "write the membrane channel alone to a file and segment that).")
    if args.ridge_sigma != DEFAULT_RIDGE_SIGMA and args.membranes is None:
        raise CLIError("--ridge-sigma needs --enhance-membranes bright|dark.")
    if args.background is None:
        return None
    if len(args.background) == 1 and args.background[0] in ("membranes", "bright", "dark"):
        return args.background[0]
    try:
        return tuple(int(text) for text in args.background)
    except ValueError:
        raise CLIError(
            f"--background {' '.join(args.background)}: give class ids (e.g. --background 0 2) "
            "or one of the words membranes, bright, dark alone."
        ) from None


def _single_with_progress(job, config, quiet: bool):
    """One image in this process, with an iteration progress bar."""
    from tqdm.auto import tqdm

    from napari_kanezaki.workflows.jobs import JobResult, run_job

    if not job.overwrite and job.outputs.labels.exists():
        return JobResult(job.name, "skipped", "outputs exist")
    bar = tqdm(total=config.max_iter, unit="it", desc=job.name, disable=quiet)

    def progress(state):
        if hasattr(state, "step"):  # stacks and tiles: a results.Progress
            bar.total = state.total
            bar.update(state.step - bar.n)
            bar.set_postfix_str(state.text, refresh=False)
            return
        bar.update(state.iteration - bar.n)
        bar.set_postfix(labels=state.n_labels, loss=f"{state.loss:.3f}", refresh=False)

    try:
        return run_job(job, progress=progress)
    finally:
        bar.close()
