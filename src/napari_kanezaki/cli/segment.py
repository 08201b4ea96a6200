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

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the ``segment`` subcommand to the subparsers `sub`; return its parser (handler: `run`)."""
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
    _batch_options(p)
    p.set_defaults(handler=run)
    return p


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
            zarr=args.zarr)
        for img in images
    ]
    started = time.perf_counter()
    if len(jobs) == 1 and args.scheduler is None:
        results = [_single_with_progress(jobs[0], config, quiet=args.quiet)]
    else:
        results = run_jobs(jobs, scheduler=args.scheduler, workers=args.workers,
                           threads=args.threads, progress=not args.quiet)
    return _summary(results, started, args.output)


def _single_with_progress(job, config, quiet: bool):
    """One image in this process, with an iteration progress bar."""
    from tqdm.auto import tqdm

    from napari_kanezaki.workflows.jobs import JobResult, run_job

    if not job.overwrite and job.outputs.labels.exists():
        return JobResult(job.name, "skipped", "outputs exist")
    bar = tqdm(total=config.max_iter, unit="it", desc=job.name, disable=quiet)

    def progress(state):
        if hasattr(state, "step"):  # stacks and tiles: a stacks.Progress
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
