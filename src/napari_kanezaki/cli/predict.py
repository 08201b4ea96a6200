"""``napari-kanezaki predict``: segment 2-D images with a trained model, without retraining."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_kanezaki.cli.inputs import _check_2d_inputs, _check_outdir, expand_inputs
from napari_kanezaki.cli.main import CLIError
from napari_kanezaki.cli.parser import (
    _batch_options,
    _budget_options,
    _output_dir,
    _runtime_options,
    _subparser,
)
from napari_kanezaki.cli.records import _runtime, _summary, write_run_files

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to the subparsers `sub`; return its parser (runs `run`)."""
    p = _subparser(sub, "predict", "segment 2-D images with a trained model, without "
                   "retraining (stacks: use segment --stack-mode)")
    p.add_argument("model", type=Path, metavar="MODEL", help="model file (train/segment output)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders or globs")
    _output_dir(p)
    _runtime_options(p, seed=False)
    _budget_options(p.add_argument_group(
        "large images", "Over the memory budget an image is predicted tile by tile, with "
        "BatchNorm statistics of the whole image: the labels of a whole prediction."))
    _batch_options(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Label every input with the model, one job per image.

    Takes the parsed options; returns the exit status (0, or 1 when some images failed).
    """
    from napari_kanezaki.core.segmenter import Segmenter
    from napari_kanezaki.workflows.batch import run_jobs
    from napari_kanezaki.workflows.jobs import Job

    model = Segmenter.load(args.model, device="cpu")  # checks the file before any work
    if args.tile_shape is not None:
        from napari_kanezaki.imaging.tiles import check_tile_shape

        try:
            check_tile_shape(args.tile_shape, 2)
        except ValueError as exc:
            raise CLIError(f"--tile-shape: {exc}") from exc
    images = expand_inputs(args.inputs)
    _check_outdir(args.output, images)
    _check_2d_inputs(args, images)
    write_run_files(args.output, model.config, {**_runtime(args, "predict", images),
                                                "model": str(args.model), "seed": model.seed},
                    args.overwrite)
    jobs = [
        Job(name=img.stem, image=img, outdir=args.output, model=args.model, device=args.device,
            precision=args.precision, channel_axis=args.channel_axis, overwrite=args.overwrite,
            memory_budget=args.memory_budget,
            tile_shape=None if args.tile_shape is None else tuple(args.tile_shape))
        for img in images
    ]
    started = time.perf_counter()
    results = run_jobs(jobs, scheduler=args.scheduler, workers=args.workers,
                       threads=args.threads, progress=not args.quiet)
    return _summary(results, started, args.output)
