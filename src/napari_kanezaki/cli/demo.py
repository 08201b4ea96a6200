"""``napari-kanezaki demo``: segment the bundled sample and write the README's result files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_kanezaki.cli.main import CLIError
from napari_kanezaki.cli.parser import _runtime_options, _subparser
from napari_kanezaki.cli.records import write_run_files

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to the subparsers `sub`; return its parser (runs `run`)."""
    p = _subparser(sub, "demo", "segment the bundled immunohistochemistry sample and write "
                   "labels.tif, overlay.png, config.toml and model.pt")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"), metavar="OUTDIR",
                   help="output folder")
    p.add_argument("--method", choices=("sp", "st"), default="sp",
                   help="sp: superpixel refinement (ICASSP 2018); st: similarity + "
                   "continuity (TIP 2020)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="most training iterations (default: the interactive preset's 1000; "
                   "the plateau stop ends the run long before)")
    p.add_argument("--size", type=int, default=256, help="side of the sample crop (8-512)")
    _runtime_options(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The README's main job: segment the bundled sample, write the four result files.

    Takes the parsed options; returns the exit status (0).
    """
    from tqdm.auto import tqdm

    from napari_kanezaki.core.config import load_preset
    from napari_kanezaki.imaging.samples import immunohistochemistry
    from napari_kanezaki.workflows.outputs import output_paths
    from napari_kanezaki.workflows.processing import process_image

    image = immunohistochemistry(args.size)
    config = load_preset("interactive", args.method)
    if args.max_iter is not None:
        config = config.replace(max_iter=args.max_iter)
    outputs = output_paths(args.output, "")
    targets = [*outputs.all(), args.output / "config.toml"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.overwrite:
        raise CLIError(f"{', '.join(existing)} already exist; use --overwrite or another -o.")
    print(f"{args.method.upper()} on a {image.shape[0]}x{image.shape[1]} RGB sample, "
          f"seed {args.seed}")
    bar = tqdm(total=config.max_iter, unit="it", desc="training", disable=args.quiet)
    last = []

    def progress(state):
        bar.update(state.iteration - bar.n)
        bar.set_postfix(labels=state.n_labels, loss=f"{state.loss:.3f}", refresh=False)
        last[:] = [state]

    started = time.perf_counter()
    try:
        labels, segmenter = process_image(
            image, outputs, config, seed=args.seed, device=args.device,
            precision=args.precision, overwrite=args.overwrite, progress=progress)
    finally:
        bar.close()
    reason = last[0].stop_reason if last else ""
    print(f"stopped ({reason}) after {time.perf_counter() - started:.1f} s with "
          f"{int(labels.max())} segments on {segmenter.device}")
    write_run_files(args.output, config, {"command": "demo", "seed": args.seed,
                                          "device": str(segmenter.device),
                                          "precision": args.precision}, overwrite=True)
    for path in targets:
        print(f"wrote {path}")
    return 0
