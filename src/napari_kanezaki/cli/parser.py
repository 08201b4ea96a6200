"""The argument parser: `build_parser`, the option groups the subcommands share, `build_config`.

Each command module (`segment`, `train`, `predict`, `evaluate`, `tune`, `demo`) adds its own
subparser with ``register(subparsers)``, built from the groups here (`_config_options`,
`_runtime_options`, `_stack_options`, `_batch_options`, `_output_dir`). `build_parser`
imports those modules when it is called, not when this module is imported (they import
this one). Nothing here imports torch or other heavy libraries, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from napari_kanezaki.cli.main import CLIError

__all__ = ["DEFAULT_PRESET", "build_config", "build_parser", "parse_bytes"]

#: The preset the command line starts from (``--preset paper`` for the papers' exact ones).
DEFAULT_PRESET = "interactive"

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" unless the help already says it or there is no default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, argparse.SUPPRESS)
                or action.option_strings == ["-h", "--help"]):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand.

    Returns
    -------
    argparse.ArgumentParser
        ``napari-kanezaki`` with the subcommands segment, train, predict, evaluate, tune and
        demo; each sets ``handler`` (its module's ``run``) in the parsed namespace.
    """
    from napari_kanezaki.cli import demo, evaluate, predict, segment, train, tune

    parser = argparse.ArgumentParser(
        prog="napari-kanezaki",
        description="Unsupervised image segmentation by backpropagation (Kanezaki 2018, "
        "SP; Kim, Kanezaki & Tanaka 2020, ST).",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (segment, train, predict, evaluate, tune, demo):
        command.register(sub)
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
    """The configuration group: preset or file, then one option per setting.

    Each setting's option, help and choices come from `core.settings.SETTINGS`.
    """
    from napari_kanezaki.core.config import PRESETS, load_preset
    from napari_kanezaki.core.settings import SETTINGS

    group = p.add_argument_group(
        "configuration",
        "Settings start from --preset (or --config), then the options below change single "
        "fields. Defaults shown are the interactive preset's (the papers' settings with the "
        "plateau stop and, for SP, a superpixel count that follows the image size).",
    )
    group.add_argument("--method", choices=("sp", "st"), default=None,
                       help="sp: superpixels (ICASSP 2018); st: similarity + continuity "
                       "(TIP 2020); default: the --config file's method, else st")
    group.add_argument("--preset", choices=PRESETS, default=None,
                       help="interactive: the papers' settings ending by themselves "
                       "(plateau stop); paper: the publications' exact settings (1000 "
                       "iterations); seed: the seed project's values (default: interactive)")
    group.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="TOML/YAML config file (e.g. a config.toml of an earlier run); "
                       "replaces the preset, missing keys take the paper defaults")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       dest="set_values", help="set any config field, TOML syntax "
                       "(--set lr=0.05); repeatable")
    defaults = {**load_preset(DEFAULT_PRESET, "st").to_dict(),
                **load_preset(DEFAULT_PRESET, "sp").to_dict()}
    for name, setting in SETTINGS.items():
        text = f"{setting.help} (default: {defaults[name]!r})"
        flag = "--" + name.replace("_", "-")
        if setting.kind is bool:
            group.add_argument(flag, dest=f"field_{name}", default=None,
                               action=argparse.BooleanOptionalAction, help=text)
        elif setting.choices:
            group.add_argument(flag, dest=f"field_{name}", type=str.lower, default=None,
                               choices=setting.choices, help=text)
        else:
            group.add_argument(flag, dest=f"field_{name}", type=setting.kind, default=None,
                               metavar=name.upper(), help=text)


def _scribble_options(p: argparse.ArgumentParser) -> None:
    """``--scribbles`` and ``--scribble-format`` (segment, and train in reference mode)."""
    p.add_argument("--scribbles", type=Path, default=None, metavar="PATH|DIR",
                   help="ST only: a scribble file (one input) or a folder of scribbles "
                   "matched by file stem (X.png, X_scribble.png or X_scribbles.png); "
                   "images without one run unscribbled")
    p.add_argument("--scribble-format", choices=("napari", "published"), default="napari",
                   help="napari: 0 = not scribbled, k = class k; published: the TIP 2020 "
                   "code's files, 255 = not scribbled")


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
    _budget_options(group)
    group.add_argument("--zarr", action="store_true",
                       help="write the labels as a zarr store <stem>_labels.zarr (region by "
                       "region; for outputs too big for a TIFF) instead of <stem>_labels.tif "
                       "(default: TIFF)")


def _budget_options(group) -> None:
    """``--memory-budget`` and ``--tile-shape`` (segment's stack group, predict's own)."""
    group.add_argument("--memory-budget", type=parse_bytes, default=None, metavar="BYTES",
                       help="memory the network may use, bytes or with a unit (2GiB, "
                       "500MB); larger images and volumes train on random crops and are "
                       "predicted tile by tile (default: 60%% of the memory available at "
                       "the start; every image is checked against the budget)")
    group.add_argument("--tile-shape", type=int, nargs="+", default=None, metavar="N",
                       help="force tiled prediction with tiles of this size, one entry per "
                       "network axis (2 for 2-D and shared/independent, 3 for 3d) "
                       "(default: tiles only when over the memory budget)")


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


# -- configuration ---------------------------------------------------------------------------
def build_config(args: argparse.Namespace, *, reference_mode: bool = False):
    """Preset (or config file), then field options and ``--set`` values.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of a subcommand with the configuration group.
    reference_mode : bool
        Training on reference images (``train``): the paper and interactive presets of ST
        are then the published reference-image demo's, whose continuity weight is 5 (not 1).

    Returns
    -------
    SPConfig or STConfig
    """
    from napari_kanezaki.core.config import (
        ConfigError,
        config_for_method,
        load_config,
        load_preset,
    )

    method = args.method
    if args.config is not None:
        if args.preset is not None:
            raise CLIError("--config replaces the preset: pass one of --config and --preset.")
        if method is None:
            base = load_config(args.config)
        else:  # the file's method key may be missing; a different one is refused
            try:
                base = config_for_method(method).from_file(args.config)
            except ConfigError as exc:
                raise CLIError(f"--method {method} and {args.config}: {exc}") from exc
    else:
        preset = args.preset or DEFAULT_PRESET
        base = load_preset(preset, method or "st")
        if reference_mode and preset != "seed" and base.method == "st":
            base = base.replace(w_con=5.0)
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
