"""The ``napari-kanezaki`` command line: segment, train, predict, evaluate, tune, demo.

A thin face over the objects the widgets use (`Segmenter`, `SPConfig`/`STConfig`, the
presets, `io`, `batch`, `evaluation`, `tuning`). Run ``napari-kanezaki <command> --help``
for every option and its default. Exit status: 0 on success, 1 when some images failed
(the others are finished and a summary is printed), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

__all__ = ["main", "main_exit", "build_parser", "build_config", "FIELD_HELP", "IMAGE_SUFFIXES"]

#: File types picked up from folders and globs.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

#: Help of every configuration field (a test checks that none is missing).
FIELD_HELP: dict[str, str] = {
    "n_channels": "feature channels C, the largest possible number of segments",
    "n_conv": "number of 3x3 convolution blocks M",
    "max_iter": "training iterations (one update each)",
    "min_labels": "stop once the number of labels is at most this",
    "plateau_iter": "optional early stop after this many stable iterations (0 = off)",
    "plateau_tol": "plateau stop: largest fraction of pixels changing label",
    "lr": "learning rate",
    "momentum": "SGD momentum (ignored by adam and asgd)",
    "optimizer": "optimizer: sgd, adam or asgd",
    "weight_decay": "L2 weight decay (papers 0, seed 0.02)",
    "ref_size": "reference mode: references resized to this square size (0 = keep)",
    "batch_size": "reference mode: images per batch",
    "n_epochs": "reference mode: passes over the references",
    "max_update": "reference mode: consecutive updates on each batch",
    "checkpoint": "warm start from this model file ('' = fresh weights)",
    "crop_bottom": "preprocessing: cut N pixel rows off the bottom (SEM bar: 65); "
    "those rows get label 0",
    "resize_multiple": "preprocessing: resize H and W to the nearest multiple of N (seed 32; "
    "0 = off); labels are resized back with nearest neighbour",
    "clahe": "preprocessing: CLAHE on the L channel of Lab",
    "clahe_clip": "CLAHE clip limit in OpenCV units (skimage clip_limit = value/256)",
    "clahe_tiles": "CLAHE tiles per axis (8 = 8x8 grid)",
    "augment_clahe": "augmentation: random CLAHE every iteration (clip 2-9, grid 3-9)",
    "median_blur": "preprocessing: median filter size, odd (seed 5; 0 = off)",
    "superpixel": "SP: superpixel algorithm, slic or felzenszwalb",
    "n_segments": "SP, SLIC: number of segments",
    "compactness": "SP, SLIC: compactness",
    "scale": "SP, Felzenszwalb: scale",
    "sigma": "SP, Felzenszwalb: sigma",
    "min_size": "SP, Felzenszwalb: min_size",
    "w_sim": "ST: weight of the feature-similarity loss",
    "w_con": "ST: weight of the spatial-continuity loss",
    "w_scr": "ST: weight of the scribble loss",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" unless the help already says it or there is no default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.option_strings == ["-h", "--help"]:
            return text
        return super()._get_help_string(action)


class CLIError(Exception):
    """A usage error with a message for the user (exit status 2)."""


# -- entry point ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from napari_kanezaki.core.config import ConfigError
    from napari_kanezaki.imaging.images import ImageError

    try:
        return int(args.handler(args) or 0)
    except (CLIError, ConfigError, ImageError, FileExistsError, FileNotFoundError,
            ValueError) as exc:
        print(f"napari-kanezaki {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point: `main` with its status as the exit code."""
    sys.exit(main())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="napari-kanezaki",
        description="Unsupervised image segmentation by backpropagation (Kanezaki 2018, "
        "SP; Kim, Kanezaki & Tanaka 2020, ST).",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _subparser(sub, "segment", "train a fresh model on each image and write its labels "
                   "(one image: the seed's 'base'; folders/globs: 'base_folder')")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (their images) or glob patterns")
    p.add_argument("--scribbles", type=Path, default=None, metavar="PATH|DIR",
                   help="ST only: a scribble file (one input) or a folder of scribbles "
                   "matched by file stem (X.png, X_scribble.png or X_scribbles.png); "
                   "images without one run unscribbled")
    p.add_argument("--scribble-format", choices=("napari", "published"), default="napari",
                   help="napari: 0 = not scribbled, k = class k; published: the TIP 2020 "
                   "code's files, 255 = not scribbled")
    p.add_argument("--no-model", dest="save_model", action="store_false",
                   help="do not write each image's trained model (default: write <stem>_model.pt)")
    _output_dir(p)
    _config_options(p)
    _runtime_options(p)
    _stack_options(p)
    _batch_options(p)
    p.set_defaults(handler=_cmd_segment)

    p = _subparser(sub, "train", "train one model on reference images (the seed's 'ref' "
                   "configuration, TIP 2020 reference mode) and save it")
    p.add_argument("inputs", nargs="+", metavar="REF", help="reference images, folders or globs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL",
                   help="model file to write (.pt); its config is written beside it (.toml)")
    _config_options(p)
    _runtime_options(p)
    p.set_defaults(handler=_cmd_train)

    p = _subparser(sub, "predict", "segment 2-D images with a trained model, without "
                   "retraining (stacks: use segment --stack-mode)")
    p.add_argument("model", type=Path, metavar="MODEL", help="model file (train/segment output)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders or globs")
    _output_dir(p)
    _runtime_options(p, seed=False)
    _batch_options(p)
    p.set_defaults(handler=_cmd_predict)

    p = _subparser(sub, "evaluate", "score predicted label images against ground truth: "
                   "best-match mIoU and adjusted Rand index, per image and mean")
    p.add_argument("predictions", nargs="+", metavar="PRED",
                   help="predicted label images (e.g. *_labels.tif), folders or globs")
    p.add_argument("--gt", nargs="+", required=True, metavar="GT",
                   help="ground-truth label images (or BSDS500 .mat), folders or globs, "
                   "matched to predictions by file stem")
    p.add_argument("--ignore", type=int, default=None,
                   help="ground-truth value left out of the scores (VOC void: 255)")
    p.add_argument("--connectivity", type=int, choices=(1, 2), default=1,
                   help="connectivity of the split of predictions into connected components")
    p.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace existing CSV/JSON files")
    p.set_defaults(handler=_cmd_evaluate)

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
    p.add_argument("--space", action="append", default=[], metavar="NAME=LOW:HIGH|VALUE",
                   help="change a search range (max_iter=50:300) or fix a parameter "
                   "(augment_clahe=false); repeatable. Parameters: see the tuning docs")
    p.add_argument("--ignore", type=int, default=None,
                   help="ground-truth value left out of the scores")
    _config_options(p)
    _runtime_options(p)
    p.set_defaults(handler=_cmd_tune)

    p = _subparser(sub, "demo", "segment the bundled immunohistochemistry sample and write "
                   "labels.tif, overlay.png, config.toml and model.pt")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"), metavar="OUTDIR",
                   help="output folder")
    p.add_argument("--method", choices=("sp", "st"), default="sp",
                   help="sp: superpixel refinement (ICASSP 2018); st: similarity + "
                   "continuity (TIP 2020)")
    p.add_argument("--max-iter", type=int, default=200,
                   help="training iterations (paper: 1000; 200 is plenty here)")
    p.add_argument("--size", type=int, default=256, help="side of the sample crop (8-512)")
    _runtime_options(p)
    p.set_defaults(handler=_cmd_demo)
    return parser


# -- argument groups --------------------------------------------------------------------------
def _subparser(sub, name: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=description, description=description,
                          formatter_class=_HelpFormatter)


def _output_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR",
                   help="output folder: <stem>_labels.tif (lossless, ids intact), "
                   "<stem>_overlay.png, config.toml and run.json")


def _config_options(p: argparse.ArgumentParser) -> None:
    from napari_kanezaki.core.config import PRESETS, SPConfig, STConfig

    group = p.add_argument_group(
        "configuration",
        "Settings start from --preset (or --config), then the options below change single "
        "fields. Defaults shown are the paper preset's.",
    )
    group.add_argument("--method", choices=("sp", "st"), default=None,
                       help="sp: superpixels (ICASSP 2018); st: similarity + continuity "
                       "(TIP 2020); default: the --config file's method, else st")
    group.add_argument("--preset", choices=PRESETS, default=None,
                       help="paper: the publications' defaults; seed: the seed project's "
                       "values (default: paper)")
    group.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="TOML/YAML config file (e.g. a config.toml of an earlier run); "
                       "replaces the preset, missing keys take the paper defaults")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       dest="set_values", help="set any config field, TOML syntax "
                       "(--set lr=0.05); repeatable")
    defaults = {**STConfig().to_dict(), **SPConfig().to_dict()}
    seen = set()
    for cls in (STConfig, SPConfig):
        for f in fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            default = defaults[f.name]
            text = f"{FIELD_HELP.get(f.name, f.name)} (default: {default!r})"
            flag = "--" + f.name.replace("_", "-")
            if isinstance(default, bool):
                group.add_argument(flag, dest=f"field_{f.name}", default=None,
                                   action=argparse.BooleanOptionalAction, help=text)
            else:
                kind = type(default) if default != "" else str
                group.add_argument(flag, dest=f"field_{f.name}", type=kind, default=None,
                                   metavar=f.name.upper(), help=text)


def _runtime_options(p: argparse.ArgumentParser, seed: bool = True) -> None:
    group = p.add_argument_group("run")
    if seed:
        group.add_argument("--seed", type=int, default=0,
                           help="seed of the initial weights (and of the augmentation)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    group.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help="auto: bfloat16 where the hardware runs it natively; fp32: the "
                       "published arithmetic")
    group.add_argument("--channel-axis", type=int, default=None,
                       help="channel axis of multichannel images (RGB is detected)")
    group.add_argument("--overwrite", action="store_true",
                       help="replace existing outputs (default: refuse; folder runs skip "
                       "images whose outputs exist)")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _stack_options(p: argparse.ArgumentParser) -> None:
    from napari_kanezaki.workflows.stacks import STACK_MODES

    group = p.add_argument_group(
        "stacks, volumes and large images",
        "Multi-page TIFF stacks and volumes ((Z, Y, X), (T, Z, Y, X), with --channel-axis "
        "for channels, e.g. 1 for (Z, C, Y, X)) need --stack-mode; 2-D images refuse it. "
        "Preprocessing works plane by plane on the last two axes (crop_bottom cuts the "
        "bottom rows and resize_multiple resizes Y and X of every plane; clahe and "
        "median_blur equalise/filter each plane alone); augment_clahe is refused. The "
        "overlay PNG of a stack shows its middle plane (the middle index of every axis but "
        "Y and X). Uncompressed TIFFs are memory-mapped.",
    )
    group.add_argument("--stack-mode", choices=STACK_MODES, default=None,
                       help="independent: a fresh model per plane (ids per plane, no model "
                       "file written); shared: one 2-D model for all planes (same material, "
                       "same id); 3d: a 3-D network on the last three axes (default: none, "
                       "for 2-D images)")
    group.add_argument("--spacing", type=float, nargs="+", default=None, metavar="SIZE",
                       help="pixel/voxel size per spatial axis, e.g. --spacing 2 0.5 0.5 "
                       "for Z Y X: weights the 3-D continuity term per axis and is SLIC's "
                       "spacing (3d mode); needs --stack-mode (default: isotropic)")
    group.add_argument("--memory-budget", type=parse_bytes, default=None, metavar="BYTES",
                       help="memory the network may use, bytes or with a unit (2GiB, "
                       "500MB); larger images and volumes train on random crops and are "
                       "predicted tile by tile (default: 2GiB)")
    group.add_argument("--tile-shape", type=int, nargs="+", default=None, metavar="N",
                       help="force tiled prediction with tiles of this size, one entry per "
                       "network axis (2 for 2-D and shared/independent, 3 for 3d) "
                       "(default: tiles only when over the memory budget)")
    group.add_argument("--zarr", action="store_true",
                       help="write the labels as a zarr store <stem>_labels.zarr (region by "
                       "region; for outputs too big for a TIFF) instead of <stem>_labels.tif "
                       "(default: TIFF)")


def parse_bytes(text: str) -> int:
    """A number of bytes: ``"2147483648"``, ``"2GiB"``, ``"512 MiB"``, ``"1.5GB"``, ``"2G"``.

    Units: B; kB/KB, MB, GB, TB (powers of 1000); KiB, MiB, GiB, TiB and the single letters
    K, M, G, T (powers of 1024). Case of the unit letter does not matter.

    Parameters
    ----------
    text : str

    Returns
    -------
    int
        Positive number of bytes.
    """
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    units = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
             "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "kib": 1024,
             "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
    if match is None or match.group(2).lower() not in units:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount of memory; give bytes or a number with a unit, "
            "e.g. 2GiB, 512MiB or 4000000000."
        )
    value = int(float(match.group(1)) * units[match.group(2).lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the memory budget must be positive, got {text!r}.")
    return value


def _batch_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("batch (Dask)")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="address of a running dask.distributed scheduler "
                       "(tcp://host:8786); default: in this process")
    group.add_argument("--workers", type=int, default=None,
                       help="in-process parallel images (default: cores // 2 on CPU, 1 on "
                       "GPU)")
    group.add_argument("--threads", type=int, default=None,
                       help="torch threads per image (default: cores // workers)")


# -- configuration ---------------------------------------------------------------------------
def build_config(args: argparse.Namespace):
    """Preset (or config file), then field options and ``--set`` values.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of a subcommand with the configuration group.

    Returns
    -------
    SPConfig or STConfig
    """
    from napari_kanezaki.core.config import ConfigError, load_config, load_preset

    method = args.method
    if args.config is not None:
        if args.preset is not None:
            raise CLIError("--config replaces the preset: pass one of --config and --preset.")
        base = load_config(args.config)
        if method is not None and method != base.method:
            raise CLIError(
                f"--method {method} but {args.config} is a {base.method!r} config; drop "
                "--method or use a config file of that method."
            )
    else:
        base = load_preset(args.preset or "paper", method or "st")
    changes: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("field_") and value is not None:
            changes[key[len("field_"):]] = value
    for item in args.set_values:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--set expects KEY=VALUE, got {item!r} (e.g. --set lr=0.05).")
        changes[key.strip()] = _parse_value(text.strip())
    try:
        return base.replace(**changes) if changes else base
    except ConfigError as exc:
        raise ConfigError(f"{exc} (set with --<name> or --set)") from exc


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# -- inputs ------------------------------------------------------------------------------------
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
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + (".mat",))
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
    resolved = outdir.resolve()
    for img in images:
        if img.resolve().parent == resolved and img.stem.endswith(("_labels", "_overlay")):
            raise CLIError(f"{img} looks like an output of an earlier run in {outdir}; "
                           "choose another output folder.")


# -- run records ---------------------------------------------------------------------------------
def write_run_files(outdir: Path, config, runtime: dict[str, Any], overwrite: bool) -> None:
    """Write ``config.toml`` (the full config) and ``run.json`` (seed, device, ...) once.

    A rerun into the same folder (resume) accepts existing files that describe the same run
    and refuses ones that do not, unless `overwrite`.
    """
    from napari_kanezaki import __version__
    from napari_kanezaki.core.config import load_config

    outdir.mkdir(parents=True, exist_ok=True)
    config_path, run_path = outdir / "config.toml", outdir / "run.json"
    record = {"napari_kanezaki": __version__, **runtime}
    if not overwrite and config_path.exists():
        if load_config(config_path) != config:
            raise CLIError(
                f"{config_path} holds a different configuration from this run's; use another "
                "output folder, the same settings (--config it), or --overwrite."
            )
    if not overwrite and run_path.exists():
        old = json.loads(run_path.read_text(encoding="utf-8"))
        if old.get("seed") != record.get("seed"):
            raise CLIError(f"{run_path} was written with seed {old.get('seed')}, this run uses "
                           f"{record.get('seed')}; use the same seed, another folder or "
                           "--overwrite.")
        return
    config.to_file(config_path, overwrite=True)
    run_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _summary(results, started: float, outdir: Path) -> int:
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    failed = [r for r in results if r.status == "failed"]
    print(f"{done} segmented, {skipped} skipped (outputs exist), {len(failed)} failed in "
          f"{time.perf_counter() - started:.1f} s; results in {outdir}")
    for r in failed:
        print(f"  FAILED {r.name}: {r.message.splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0


# -- commands -----------------------------------------------------------------------------------
def _cmd_segment(args: argparse.Namespace) -> int:
    from napari_kanezaki.workflows.batch import Job, run_jobs

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


def _check_stack_inputs(args: argparse.Namespace, config, images: list[Path]) -> None:
    """Refuse, before any work, stack options that do not suit the inputs (exit status 2).

    Reads only the files' headers: the core's own check (`stacks.check_stack_mode`) on an
    image of the file's shape and dtype.
    """
    from napari_kanezaki.imaging.images import ImageError
    from napari_kanezaki.imaging.preprocessing import check_stack_preprocessing
    from napari_kanezaki.workflows.stacks import check_stack_mode

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
            check_stack_mode(source, args.stack_mode)
        except ImageError as exc:
            raise CLIError(f"{path}: {exc} (set with --stack-mode / --channel-axis)") from exc


def _header_source(path: Path, channel_axis: int | None):
    """An `ImageSource` of a file's shape and dtype, from its header only (no pixel read).

    Returns None for an unreadable file (its job fails later and reports it); a layout the
    core refuses becomes a `CLIError` naming the file.
    """
    import numpy as np

    from napari_kanezaki.imaging.images import ImageError, ImageSource
    from napari_kanezaki.imaging.io import image_header

    try:
        shape, dtype = image_header(path)
    except ValueError:
        return None
    try:
        return ImageSource(np.broadcast_to(np.zeros((), dtype), shape), channel_axis=channel_axis)
    except ImageError as exc:
        raise CLIError(f"{path} (shape {shape}): {exc} (set with --channel-axis)") from exc


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


def _single_with_progress(job, config, quiet: bool):
    """One image in this process, with an iteration progress bar."""
    from tqdm.auto import tqdm

    from napari_kanezaki.workflows.batch import JobResult, run_job

    if not job.overwrite and job.outputs.labels.exists():
        return JobResult(job.name, "skipped", "outputs exist")
    bar = tqdm(total=config.max_iter, unit="it", desc=job.name, disable=quiet)

    def progress(state):
        if hasattr(state, "step"):  # stacks and tiles: a tiling.Progress
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


def _cmd_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from napari_kanezaki.imaging.io import read_image
    from napari_kanezaki.core.segmenter import Segmenter

    config = build_config(args)
    refs = expand_inputs(args.inputs, "reference image")
    model_path: Path = args.output
    config_path = model_path.with_suffix(".toml")
    if model_path.suffix.lower() in (".toml", ".yaml", ".yml"):
        raise CLIError(f"-o {model_path} is a config file name; give the model file (.pt).")
    for path in (model_path, config_path):
        if path.exists() and not args.overwrite:
            raise CLIError(f"{path} already exists; pass --overwrite or choose another -o.")
    images = [read_image(p) for p in refs]
    segmenter = Segmenter(config, device=args.device, seed=args.seed, precision=args.precision)
    started = time.perf_counter()
    bar = None
    for state in segmenter.fit_iter(images, channel_axis=args.channel_axis):
        if bar is None:
            bar = tqdm(total=state.max_iter, unit="update", desc="training", disable=args.quiet)
        bar.update(1)
        if state.iteration % 10 == 0:
            bar.set_postfix(labels=state.n_labels, loss=f"{state.loss:.3f}", refresh=False)
    if bar is not None:
        bar.close()
    model_path.parent.mkdir(parents=True, exist_ok=True)
    segmenter.save(model_path, overwrite=args.overwrite)
    config.to_file(config_path, overwrite=args.overwrite)
    print(f"trained on {len(refs)} image(s) in {time.perf_counter() - started:.1f} s; wrote "
          f"{model_path} and {config_path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from napari_kanezaki.workflows.batch import Job, run_jobs
    from napari_kanezaki.core.segmenter import Segmenter

    model = Segmenter.load(args.model, device="cpu")  # checks the file before any work
    images = expand_inputs(args.inputs)
    _check_outdir(args.output, images)
    _check_2d_inputs(args, images)
    write_run_files(args.output, model.config, {**_runtime(args, "predict", images),
                                                "model": str(args.model), "seed": model.seed},
                    args.overwrite)
    jobs = [
        Job(name=img.stem, image=img, outdir=args.output, model=args.model, device=args.device,
            precision=args.precision, channel_axis=args.channel_axis, overwrite=args.overwrite)
        for img in images
    ]
    started = time.perf_counter()
    results = run_jobs(jobs, scheduler=args.scheduler, workers=args.workers,
                       threads=args.threads, progress=not args.quiet)
    return _summary(results, started, args.output)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_kanezaki.workflows.evaluation import evaluate_files, summarize

    preds = expand_inputs(args.predictions, "prediction")
    gts = expand_inputs(args.gt, "ground-truth")
    for path in (args.csv, args.json):
        if path is not None and path.exists() and not args.overwrite:
            raise CLIError(f"{path} already exists; pass --overwrite or choose another name.")
    scores = evaluate_files(preds, gts, connectivity=args.connectivity, ignore=args.ignore)
    mean = summarize(scores)
    width = max(5, *(len(s.name) for s in scores))
    print(f"{'image':<{width}}  {'mIoU':>7}  {'ARI':>7}  annotators")
    for s in scores:
        print(f"{s.name:<{width}}  {s.miou:7.4f}  {s.ari:7.4f}  {s.n_annotations}")
    print(f"{'mean':<{width}}  {mean['miou']:7.4f}  {mean['ari']:7.4f}  ({mean['n_images']} images)")
    if args.csv is not None:
        lines = ["image,miou,ari,n_annotations"]
        lines += [f"{s.name},{s.miou:.6f},{s.ari:.6f},{s.n_annotations}" for s in scores]
        lines.append(f"mean,{mean['miou']:.6f},{mean['ari']:.6f},")
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        args.csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.json is not None:
        payload = {"images": [s._asdict() for s in scores], "mean": mean,
                   "connectivity": args.connectivity, "ignore": args.ignore}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from napari_kanezaki.workflows.tuning import parse_space_overrides, tune

    config = build_config(args)
    if args.output.exists() and not args.overwrite:
        raise CLIError(f"{args.output} already exists; pass --overwrite or choose another -o.")
    images = expand_inputs(args.inputs)
    gts = expand_inputs(args.gt, "ground-truth")
    result = tune(
        images, gts, config,
        n_trials=args.trials, storage=args.storage, study_name=args.study_name,
        space=parse_space_overrides(args.space), seed=args.seed, device=args.device,
        precision=args.precision, channel_axis=args.channel_axis, ignore=args.ignore,
        progress=not args.quiet,
    )
    result.config.to_file(args.output, overwrite=args.overwrite)
    print(f"best mean IoU {result.value:.4f} (trial {result.trial}, {result.n_trials} trials); "
          f"wrote {args.output}")
    for key, value in sorted(result.params.items()):
        print(f"  {key} = {value!r}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: segment the bundled sample, write the four result files."""
    from tqdm.auto import tqdm

    from napari_kanezaki.workflows.batch import output_paths, process_image
    from napari_kanezaki.core.config import config_for_method
    from napari_kanezaki.imaging.samples import immunohistochemistry

    image = immunohistochemistry(args.size)
    config = config_for_method(args.method)(max_iter=args.max_iter)
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


def _runtime(args: argparse.Namespace, command: str, images: list[Path]) -> dict[str, Any]:
    record = {"command": command, "seed": getattr(args, "seed", None), "device": args.device,
              "precision": args.precision, "channel_axis": args.channel_axis,
              "inputs": [str(p) for p in images]}
    for key in ("stack_mode", "spacing", "memory_budget", "tile_shape", "zarr"):
        if hasattr(args, key):
            record[key] = getattr(args, key)
    return record


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
