"""``napari-kanezaki tune``: Optuna search of the hyper-parameters against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_kanezaki.cli.inputs import expand_inputs
from napari_kanezaki.cli.main import CLIError
from napari_kanezaki.cli.parser import _config_options, _runtime_options, _subparser, build_config

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the ``tune`` subcommand to the subparsers `sub`; return its parser (runs `run`)."""
    p = _subparser(sub, "tune", "Optuna (TPE) search of the hyper-parameters maximising "
                   "mean best-match IoU against ground truth; writes the best config")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders or globs")
    p.add_argument("--gt", nargs="+", required=True, metavar="GT",
                   help="ground truth matched to the images by file stem")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="CONFIG",
                   help="best configuration file to write (.toml/.yaml)")
    p.add_argument("--trials", type=int, default=20,
                   help="total number of trials of the study (a resumed study runs the "
                   "missing ones)")
    p.add_argument("--storage", default=None, metavar="FILE|URL",
                   help="Optuna storage to resume from: a journal file path, or a database "
                   "URL (sqlite:///study.db); default: in memory, not resumable")
    p.add_argument("--study-name", default="napari-kanezaki",
                   help="study name inside the storage")
    p.add_argument("--space", action="append", default=[],
                   metavar="project|seed|NAME=LOW:HIGH|NAME=VALUE",
                   help="search space, repeatable. A bare name chooses the space: 'project' "
                   "(the default: n_channels 16-128, n_conv 1-4, lr 0.01-0.5, max_iter "
                   "50-500, augment_clahe; SP: superpixel algorithm and its parameters; ST: "
                   "w_sim, w_con 0.1-10) or 'seed' (the seed project's Optuna space, value "
                   "for value: int/float [low, high, step] ranges and categorical lr lists "
                   "per method; ST also samples the optimizer, with the seed's weight decay: "
                   "sgd 0.02, adam/asgd 0, and w_scr). NAME=LOW:HIGH changes a range of the "
                   "chosen space (max_iter=50:300), NAME=VALUE fixes a parameter "
                   "(augment_clahe=false); e.g. --space seed --space max_iter=1000:1000. "
                   "Full tables: napari_kanezaki.workflows.tuning")
    p.add_argument("--ignore", type=int, default=None,
                   help="ground-truth value left out of the scores")
    _config_options(p)
    _runtime_options(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the study; write the best configuration and print its parameters.

    Takes the parsed options; returns the exit status (0).
    """
    from napari_kanezaki.workflows.tuning import parse_space, search_space, tune

    config = build_config(args)
    space_name, overrides = parse_space(args.space)
    search_space(overrides, space_name, config.method)  # a bad --space fails before any work
    if args.output.exists() and not args.overwrite:
        raise CLIError(f"{args.output} already exists; pass --overwrite or choose another -o.")
    images = expand_inputs(args.inputs)
    gts = expand_inputs(args.gt, "ground-truth")
    result = tune(
        images, gts, config,
        n_trials=args.trials, storage=args.storage, study_name=args.study_name,
        space=overrides, space_name=space_name, seed=args.seed, device=args.device,
        precision=args.precision, channel_axis=args.channel_axis, ignore=args.ignore,
        progress=not args.quiet,
    )
    result.config.to_file(args.output, overwrite=args.overwrite)
    print(f"best mean IoU {result.value:.4f} (trial {result.trial}, {result.n_trials} trials); "
          f"wrote {args.output}")
    for key, value in sorted(result.params.items()):
        print(f"  {key} = {value!r}")
    return 0
