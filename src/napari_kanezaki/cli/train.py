"""``napari-kanezaki train``: train one model on reference images and save it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_kanezaki.cli.inputs import _find_scribbles, expand_inputs
from napari_kanezaki.cli.main import CLIError
from napari_kanezaki.cli.parser import (
    _config_options,
    _runtime_options,
    _scribble_options,
    _subparser,
    build_config,
)

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to the subparsers `sub`; return its parser (runs `run`)."""
    p = _subparser(sub, "train", "train one model on reference images (the seed's 'ref' "
                   "configuration, TIP 2020 reference mode) and save it; ST uses the "
                   "published reference demo's w_con = 5 unless --preset seed")
    p.add_argument("inputs", nargs="+", metavar="REF", help="reference images, folders or globs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL",
                   help="model file to write (.pt); its config is written beside it (.toml)")
    _scribble_options(p)
    _config_options(p)
    _runtime_options(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Train on the reference images; write the model and its config beside it.

    Takes the parsed options; returns the exit status (0).
    """
    from tqdm.auto import tqdm

    from napari_kanezaki.core.segmenter import Segmenter
    from napari_kanezaki.imaging.io import read_image

    config = build_config(args, reference_mode=True)
    refs = expand_inputs(args.inputs, "reference image")
    model_path: Path = args.output
    config_path = model_path.with_suffix(".toml")
    if model_path.suffix.lower() in (".toml", ".yaml", ".yml"):
        raise CLIError(f"-o {model_path} is a config file name; give the model file (.pt).")
    for path in (model_path, config_path):
        if path.exists() and not args.overwrite:
            raise CLIError(f"{path} already exists; pass --overwrite or choose another -o.")
    found = _find_scribbles(args.scribbles, refs)
    if found and config.method != "st":
        raise CLIError("--scribbles needs the ST method (--method st).")
    images = [read_image(p) for p in refs]
    scribbles = None
    if found:
        scribbles = [None if p not in found else _read_scribbles(found[p], args.scribble_format)
                     for p in refs]
    segmenter = Segmenter(config, device=args.device, seed=args.seed, precision=args.precision)
    started = time.perf_counter()
    bar = None
    for state in segmenter.fit_iter(images, channel_axis=args.channel_axis,
                                    scribbles=scribbles):
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


def _read_scribbles(path: Path, scribble_format: str):
    from napari_kanezaki.imaging.images import scribbles_from_published
    from napari_kanezaki.imaging.io import read_image

    scribbles = read_image(path)
    return scribbles_from_published(scribbles) if scribble_format == "published" else scribbles
