"""Segmentation quality of both methods on the three BSDS500 images of the evaluation data.

Each method runs with the paper presets (only ``max_iter`` changed, see ``--max-iter``) on
BSDS500 101027, 108004 and 196062 from ``../shared/data``, through the project's default
path and optionally in float32 (``--precisions auto fp32``) and through the published code
(``--baseline``). Scores, as defined in ``shared/data/README.md``:

- best-match mIoU: predicted labels split into connected components, best IoU of every
  ground-truth segment with a component, mean over segments, then annotators, then images;
- ARI: adjusted Rand index of the predicted labels, mean over annotators, then images.

The papers train for up to 1000 iterations; the default here is 300 to keep a CPU run short
(the label count usually plateaus well before); pass ``--max-iter 1000`` for the papers'
budget. When ``../shared/data`` is absent the script says so and exits with status 0.

Run from the project root, e.g.::

    python benchmarks/quality.py --max-iter 1000 --precisions auto fp32 --baseline

**Presets** (``--presets interactive paper``): run each named shipped preset as it is
(``load_preset(name, method)``, its own ``max_iter``, plateau stop and superpixel count;
``--max-iter`` then overrides the budget only when given) on the datasets of
``--datasets``:

- ``bsds``: the three BSDS500 images, SP and ST without scribbles, scored against the five
  annotators as above;
- ``voc``: the VOC 2012 images that have the TIP 2020 paper's scribbles
  (``voc2012/scribbles/<id>_scribble.png``, 255 = not scribbled, converted with
  ``scribbles_from_published``), ST with those scribbles, scored against
  ``SegmentationClass/<id>.png`` with the void value 255 left out.

Runs go preset by preset, then seed (``--seeds 0 1``), dataset, method, precision, image;
each row records the iterations done and the stop reason (``min_labels``, ``plateau`` or
``max_iter``). With ``--json`` the file is rewritten after every run, so a stopped
evaluation keeps what it finished. E.g.::

    python benchmarks/quality.py --presets interactive paper --datasets bsds voc \
        --seeds 0 1 --device cpu --threads 2 --json quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from napari_kanezaki import Segmenter, SPConfig, STConfig
from napari_kanezaki.core.config import PRESETS, Config, load_preset
from napari_kanezaki.core.devices import resolve_device
from napari_kanezaki.workflows.evaluation import score_annotators

from common import (
    BSDS_IDS,
    DATA_DIR,
    add_run_arguments,
    bsds_image_path,
    format_machine_info,
    load_bsds_ground_truth,
    load_bsds_image,
    load_voc_class_map,
    load_voc_image,
    load_voc_scribbles,
    machine_info,
    voc_scribbled_ids,
)
from published_baseline import run_published

METHODS = ("sp", "st")
PRECISIONS = ("auto", "fp32", "bf16")
DATASETS = ("bsds", "voc")
#: VOC's void value in the class maps, left out of the scores.
VOC_VOID = 255


def segment_project(
    image: np.ndarray,
    method: str,
    max_iter: int,
    device: torch.device,
    precision: str,
    seed: int,
    plateau_iter: int = 0,
) -> tuple[np.ndarray, int]:
    """Segment an image with the project's `Segmenter` and the paper presets.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 RGB image.
    method : {"sp", "st"}
        Method.
    max_iter : int
        Iteration budget (the stop rule ``min_labels=3`` applies).
    device : torch.device
        Device of the model.
    precision : {"auto", "fp32", "bf16"}
        Precision of the `Segmenter`.
    seed : int
        Seed of the initial weights.
    plateau_iter : int
        Plateau stop after this many stable iterations (0: off, the papers).

    Returns
    -------
    labels : numpy.ndarray
        int32 labels 1..K of ``predict`` after training.
    iterations : int
        Iterations done.
    """
    config_class = SPConfig if method == "sp" else STConfig
    config = config_class(max_iter=max_iter, plateau_iter=plateau_iter)
    labels, iterations, _ = run_config(image, config, device, precision, seed)
    return labels, iterations


def run_config(
    image: np.ndarray,
    config: Config,
    device: torch.device,
    precision: str,
    seed: int,
    scribbles: np.ndarray | None = None,
) -> tuple[np.ndarray, int, str]:
    """Train a `Segmenter` with a configuration on one image and predict.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 RGB image.
    config : SPConfig or STConfig
        The settings, used as they are.
    device : torch.device
        Device of the model.
    precision : {"auto", "fp32", "bf16"}
        Precision of the `Segmenter`.
    seed : int
        Seed of the initial weights.
    scribbles : numpy.ndarray, optional
        ST only: napari-style scribbles (0 = not scribbled, k = class k).

    Returns
    -------
    labels : numpy.ndarray
        int32 labels of ``predict`` after training.
    iterations : int
        Iterations done.
    stop_reason : str
        Why training ended: ``"min_labels"``, ``"plateau"`` or ``"max_iter"``.
    """
    segmenter = Segmenter(config, device=device, seed=seed, precision=precision)
    iterations, reason = 0, ""
    for state in segmenter.run(image, scribbles):
        iterations, reason = state.iteration, state.stop_reason
    return segmenter.predict(image), iterations, reason


def evaluate(
    image_ids: Sequence[str],
    methods: Sequence[str],
    max_iter: int,
    device: torch.device,
    precisions: Sequence[str],
    baseline: bool,
    seed: int,
    connectivity: int,
    plateau_iter: int = 0,
) -> list[dict[str, Any]]:
    """Segment and score every image with every method and variant.

    Parameters
    ----------
    image_ids : sequence of str
        BSDS500 image ids.
    methods : sequence of {"sp", "st"}
        Methods to run.
    max_iter : int
        Iteration budget of every run.
    device : torch.device
        Device of every run.
    precisions : sequence of str
        Precisions of the project runs (one run each).
    baseline : bool
        Also run the published code.
    seed : int
        Seed of the initial weights.
    connectivity : int
        Connectivity of the connected-component split (1 = 4-, 2 = 8-connected).
    plateau_iter : int
        If > 0, also run the default precision with the plateau stop (variant
        ``"plateau/auto"``).

    Returns
    -------
    list of dict
        One row per (image, method, variant): ``image``, ``method``, ``variant``
        (``"project/<precision>"`` or ``"published"``), ``iterations``, ``segments``
        (distinct labels), ``miou``, ``ari`` and ``seconds`` (training and prediction).
    """
    rows = []
    for image_id in image_ids:
        image = load_bsds_image(image_id)
        annotations = load_bsds_ground_truth(image_id)
        for method in methods:
            variants = [f"project/{p}" for p in precisions]
            variants += ["plateau/auto"] if plateau_iter else []
            variants += ["published"] if baseline else []
            for variant in variants:
                start = time.perf_counter()
                if variant == "published":
                    run = run_published(image, method, max_iter, seed, device=device)
                    labels, iterations = run.labels, len(run.iter_seconds)
                else:
                    kind, precision = variant.split("/", 1)
                    plateau = plateau_iter if kind == "plateau" else 0
                    labels, iterations = segment_project(
                        image, method, max_iter, device, precision, seed, plateau
                    )
                seconds = time.perf_counter() - start
                scores = score_annotators(labels, annotations, connectivity)
                row = {
                    "image": image_id,
                    "method": method,
                    "variant": variant,
                    "iterations": iterations,
                    "segments": int(np.unique(labels).size),
                    "miou": scores.miou,
                    "ari": scores.ari,
                    "seconds": seconds,
                }
                rows.append(row)
                print(_format_row(row), flush=True)
    return rows


def mean_scores(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average `evaluate` rows over images, per (method, variant), in first-seen order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["variant"]), []).append(row)
    means = []
    for (method, variant), group in groups.items():
        mean = {"image": "mean", "method": method, "variant": variant}
        for key in ("iterations", "segments", "miou", "ari", "seconds"):
            mean[key] = float(np.mean([r[key] for r in group]))
        means.append(mean)
    return means


# -- presets on datasets -------------------------------------------------------------------
class Sample(NamedTuple):
    """One evaluation image with its ground truth (and scribbles)."""

    dataset: str
    image_id: str
    image: np.ndarray
    annotations: list[np.ndarray]
    scribbles: np.ndarray | None
    ignore: int | None


def dataset_samples(
    dataset: str, bsds_ids: Sequence[str], voc_ids: Sequence[str]
) -> list[Sample]:
    """Load the images of a dataset of the evaluation data.

    Parameters
    ----------
    dataset : {"bsds", "voc"}
        ``"bsds"``: BSDS500 images, every annotator, no scribbles; ``"voc"``: VOC 2012
        images with the published scribbles (napari convention), the class map as the one
        annotation, void (255) ignored.
    bsds_ids, voc_ids : sequence of str
        Image ids of each dataset.

    Returns
    -------
    list of Sample
    """
    if dataset == "bsds":
        return [
            Sample("bsds", i, load_bsds_image(i), load_bsds_ground_truth(i), None, None)
            for i in bsds_ids
        ]
    return [
        Sample(
            "voc", i, load_voc_image(i), [load_voc_class_map(i)], load_voc_scribbles(i), VOC_VOID
        )
        for i in voc_ids
    ]


def evaluate_presets(
    presets: Sequence[str],
    samples: dict[str, list[Sample]],
    methods: Sequence[str],
    seeds: Sequence[int],
    device: torch.device,
    precisions: Sequence[str] = ("auto",),
    max_iter: int | None = None,
    connectivity: int = 1,
    on_row: Any = None,
    changes: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run every shipped preset (as it is, or with `changes`) on every dataset, seed, method
    and image.

    Order: preset, seed, dataset, method, precision, image (so that a stopped run has the
    first presets and seeds complete). VOC images run ST only, with their scribbles.

    Parameters
    ----------
    presets : sequence of str
        Names of shipped presets (`napari_kanezaki.core.config.PRESETS`).
    samples : dict
        Dataset name -> its `Sample` list (see `dataset_samples`).
    methods : sequence of {"sp", "st"}
        Methods, in the order to run them.
    seeds : sequence of int
        Seeds of the initial weights.
    device : torch.device
        Device of every run.
    precisions : sequence of str
        Precisions (one run each).
    max_iter : int, optional
        Override of the presets' budget (default: the preset's own).
    connectivity : int
        Connectivity of the connected-component split of the mIoU.
    on_row : callable, optional
        Called with the list of rows so far after every run (e.g. to save them).
    changes : dict of str, optional
        Settings changed in every preset, as text (``{"n_channels": "32"}``); the rows'
        ``preset`` then reads e.g. ``"interactive n_channels=32"``.

    Returns
    -------
    list of dict
        One row per run: ``dataset``, ``image``, ``method``, ``preset``, ``precision``,
        ``seed``, ``scribbles`` (bool), ``max_iter``, ``plateau_iter``, ``iterations``,
        ``stop_reason``, ``segments``, ``miou``, ``ari``, ``seconds`` and ``config`` (every
        setting of the run).
    """
    # Read every preset before the first run: a long evaluation must not pick up a preset
    # file edited while it runs.
    configs = {}
    changes = changes or {}
    for preset in presets:
        for method in methods:
            config = load_preset(preset, method)
            if max_iter is not None:
                config = config.replace(max_iter=max_iter)
            configs[preset, method] = config.replace(**{
                key: _setting_value(getattr(config, key), value)
                for key, value in changes.items()
            })
    rows: list[dict[str, Any]] = []
    suffix = "".join(f" {key}={value}" for key, value in changes.items())
    for preset in presets:
        for seed in seeds:
            for dataset, dataset_samples_ in samples.items():
                for method in methods:
                    if dataset == "voc" and method != "st":
                        continue  # the scribbles belong to the ST method
                    config = configs[preset, method]
                    for precision in precisions:
                        for sample in dataset_samples_:
                            row = _run_sample(
                                sample, preset + suffix, method, config, device, precision,
                                seed, connectivity,
                            )
                            rows.append(row)
                            print(_format_preset_row(row), flush=True)
                            if on_row is not None:
                                on_row(rows)
    return rows


def _setting_value(current: Any, text: str) -> Any:
    """`text` as a value of the type of the setting's `current` value."""
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes", "on")
    return type(current)(text)


def _run_sample(
    sample: Sample,
    preset: str,
    method: str,
    config: Config,
    device: torch.device,
    precision: str,
    seed: int,
    connectivity: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    labels, iterations, reason = run_config(
        sample.image, config, device, precision, seed, sample.scribbles
    )
    seconds = time.perf_counter() - start
    scores = score_annotators(labels, sample.annotations, connectivity, ignore=sample.ignore)
    return {
        "dataset": sample.dataset,
        "image": sample.image_id,
        "method": method,
        "preset": preset,
        "precision": precision,
        "seed": seed,
        "scribbles": sample.scribbles is not None,
        "max_iter": config.max_iter,
        "plateau_iter": config.plateau_iter,
        "iterations": iterations,
        "stop_reason": reason,
        "segments": int(np.unique(labels).size),
        "miou": scores.miou,
        "ari": scores.ari,
        "seconds": seconds,
        "config": config.to_dict(),
    }


PRESET_KEYS = ("dataset", "method", "preset", "precision", "seed")


def mean_preset_scores(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average `evaluate_presets` rows over images, per (dataset, method, preset, precision,
    seed), in first-seen order; then, where a setting has several seeds, a row
    ``seed = "mean"`` after its last seed: the mean over seeds on the images that every
    seed finished, with ``miou_spread`` / ``ari_spread`` (largest minus smallest per-seed
    mean on those images).

    Rows carry ``images`` (how many), ``stops`` (``{reason: count}``) and the means of
    ``iterations``, ``segments``, ``miou``, ``ari`` and ``seconds``.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in PRESET_KEYS), []).append(row)
    by_setting: dict[tuple[Any, ...], list[list[dict[str, Any]]]] = {}
    for key, group in groups.items():
        by_setting.setdefault(key[:-1], []).append(group)
    out = []
    for key, seed_groups in by_setting.items():
        for group in seed_groups:
            out.append(_mean_of(dict(zip(PRESET_KEYS, (*key, group[0]["seed"]), strict=True)),
                                group))
        if len(seed_groups) < 2:
            continue
        common = set.intersection(*({r["image"] for r in g} for g in seed_groups))
        if not common:
            continue
        head = dict(zip(PRESET_KEYS, (*key, "mean"), strict=True))
        means = [_mean_of(head, [r for r in g if r["image"] in common]) for g in seed_groups]
        combined = dict(head)
        combined["images"] = len(common)
        stops: dict[str, int] = {}
        for m in means:
            for reason, count in m["stops"].items():
                stops[reason] = stops.get(reason, 0) + count
        combined["stops"] = stops
        for k in ("iterations", "segments", "miou", "ari", "seconds"):
            combined[k] = float(np.mean([m[k] for m in means]))
        for k in ("miou", "ari"):
            values = [m[k] for m in means]
            combined[f"{k}_spread"] = float(max(values) - min(values))
        out.append(combined)
    return out


def _mean_of(head: dict[str, Any], group: Sequence[dict[str, Any]]) -> dict[str, Any]:
    mean = dict(head)
    mean["images"] = len(group)
    stops: dict[str, int] = {}
    for row in group:
        stops[row["stop_reason"]] = stops.get(row["stop_reason"], 0) + 1
    mean["stops"] = stops
    for key in ("iterations", "segments", "miou", "ari", "seconds"):
        mean[key] = float(np.mean([r[key] for r in group]))
    return mean


PRESET_HEADER = (
    f"{'dataset':<8}{'image':<13}{'method':<7}{'preset':<13}{'prec':<6}{'seed':<6}"
    f"{'iters':>7}  {'stop':<12}{'mIoU':>7}{'ARI':>8}{'seconds':>9}"
)


def _format_preset_row(row: dict[str, Any]) -> str:
    if "stops" in row:
        image = f"mean of {row['images']}"
        stop = ",".join(f"{k}:{v}" for k, v in row["stops"].items())
    else:
        image, stop = row["image"], row["stop_reason"]
    line = (
        f"{row['dataset']:<8}{image:<13}{row['method'].upper():<7}{row['preset'] + ' ':<13}"
        f"{row['precision']:<6}{str(row['seed']):<6}{row['iterations']:>7.0f}  {stop:<12}"
        f"{row['miou']:>7.3f}{row['ari']:>8.3f}{row['seconds']:>9.1f}"
    )
    if "miou_spread" in row:
        line += f"   (seed spread: mIoU {row['miou_spread']:.3f}, ARI {row['ari_spread']:.3f})"
    return line


HEADER = (
    f"{'image':<8}{'method':<7}{'variant':<15}{'iters':>7}{'segments':>9}"
    f"{'mIoU':>8}{'ARI':>8}{'seconds':>9}"
)


def _format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['image']:<8}{row['method'].upper():<7}{row['variant']:<15}"
        f"{row['iterations']:>7.0f}{row['segments']:>9.0f}"
        f"{row['miou']:>8.3f}{row['ari']:>8.3f}{row['seconds']:>9.1f}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description=(
            "Best-match mIoU and ARI of the SP and ST methods (paper presets) on the BSDS500 "
            "images of ../shared/data, mean over annotators, then images."
        )
    )
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="iteration budget of every run (default: 300 to keep CPU runs short; the "
        "papers use 1000; with --presets: each preset's own). The stop rule min_labels=3 "
        "applies as published.",
    )
    add_run_arguments(parser, METHODS, "run")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="SEED",
        help="several seeds, one run each (instead of --seed)",
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        choices=PRESETS,
        metavar="PRESET",
        help="run these shipped presets as they are (choices: " + ", ".join(PRESETS) + ") on "
        "--datasets, instead of the paper settings with --max-iter",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="with --presets: change these settings in every preset, e.g. --set "
        "n_channels=32 (the rows' preset names say so)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=DATASETS,
        default=["bsds"],
        help="with --presets: bsds (the BSDS500 images, SP and ST) and/or voc (the VOC "
        "images with the paper's scribbles, ST with scribbles, void ignored); default: bsds",
    )
    parser.add_argument(
        "--voc-images",
        nargs="+",
        metavar="ID",
        help="VOC image ids (default: every image with published scribbles)",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="run nothing: merge the rows of these --presets JSON files (e.g. of runs split "
        "over several processes) and print the mean table, as text and as markdown",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (torch.set_num_threads; default: torch's choice)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=["auto"],
        help="precisions of the project runs, one run each (default: auto, the project's "
        "default path; add fp32 to compare with float32)",
    )
    parser.add_argument(
        "--plateau-iter",
        type=int,
        default=0,
        help="also run the default path with the plateau stop after this many stable "
        "iterations (variant plateau/auto; default: 0, off)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run the published code (float32, NCHW, NumPy superpixel loop; slow)",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        choices=BSDS_IDS,
        default=list(BSDS_IDS),
        help="BSDS500 image ids (default: all three)",
    )
    parser.add_argument(
        "--connectivity",
        type=int,
        choices=(1, 2),
        default=1,
        help="connected-component split of the predictions before matching: 1 = "
        "4-connected, 2 = 8-connected (default: 1)",
    )
    parser.add_argument(
        "--json", metavar="OUT", type=Path, help="also write settings, rows and means here"
    )
    args = parser.parse_args(argv)
    if args.max_iter is not None and args.max_iter < 1:
        parser.error("--max-iter must be >= 1.")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1.")
    if args.presets and (args.baseline or args.plateau_iter):
        parser.error("--baseline and --plateau-iter apply without --presets only.")
    if args.set and not args.presets:
        parser.error("--set applies with --presets only.")
    changes = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in SPConfig.__dataclass_fields__ | STConfig.__dataclass_fields__:
            parser.error(f"--set {item!r}: give KEY=VALUE with KEY a setting, e.g. n_channels=32.")
        changes[key] = value
    args.set = changes
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation, print per-image and mean scores, optionally write JSON."""
    args = parse_args(argv)
    if args.report:
        return report(args.report, args.json)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.presets:
        return main_presets(args)
    if args.max_iter is None:
        args.max_iter = 300
    seeds = args.seeds or [args.seed]
    missing = [i for i in args.images if not bsds_image_path(i).is_file()]
    if missing:
        names = ", ".join(f"{i}.jpg" for i in missing)
        print(f"skipped: BSDS500 evaluation data not found under {DATA_DIR} ({names}).")
        return 0
    device = resolve_device(args.device)
    info = machine_info(device)
    print(format_machine_info(info))
    print(f"max_iter {args.max_iter}, seeds {seeds}, connectivity {args.connectivity}\n")
    all_rows, all_means = [], []
    for seed in seeds:
        if len(seeds) > 1:
            print(f"seed {seed}")
        print(HEADER)
        print("-" * len(HEADER))
        rows = evaluate(
            args.images,
            args.methods,
            args.max_iter,
            device,
            args.precisions,
            args.baseline,
            seed,
            args.connectivity,
            args.plateau_iter,
        )
        means = mean_scores(rows)
        print("-" * len(HEADER))
        for mean in means:
            print(_format_row(mean))
        print()
        all_rows += [{**row, "seed": seed} for row in rows]
        all_means += [{**mean, "seed": seed} for mean in means]
    if args.json is not None:
        _write_json(args, info, all_rows, all_means)
        print(f"wrote {args.json}")
    return 0


def main_presets(args: argparse.Namespace) -> int:
    """`main` with ``--presets``: every preset on every dataset, seed, method and image."""
    seeds = args.seeds or [args.seed]
    samples: dict[str, list[Sample]] = {}
    for dataset in args.datasets:
        if dataset == "bsds":
            missing = [i for i in args.images if not bsds_image_path(i).is_file()]
            if missing:
                names = ", ".join(f"{i}.jpg" for i in missing)
                print(f"skipped bsds: BSDS500 data not found under {DATA_DIR} ({names}).")
                continue
            samples["bsds"] = dataset_samples("bsds", args.images, [])
        else:
            available = voc_scribbled_ids()
            ids = args.voc_images or available
            unknown = sorted(set(ids) - set(available))
            if not available or unknown:
                print(
                    f"skipped voc: no image, class map and scribbles under {DATA_DIR} for "
                    f"{', '.join(unknown) or 'any image'}."
                )
                continue
            samples["voc"] = dataset_samples("voc", [], ids)
    if not samples:
        return 0
    device = resolve_device(args.device)
    info = machine_info(device)
    print(format_machine_info(info))
    budget = "each preset's" if args.max_iter is None else str(args.max_iter)
    print(
        f"presets {' '.join(args.presets)}; datasets "
        + ", ".join(f"{d} ({len(s)} images)" for d, s in samples.items())
        + f"; seeds {seeds}; max_iter {budget}; connectivity {args.connectivity}\n"
    )
    print(PRESET_HEADER)
    print("-" * len(PRESET_HEADER))

    def save(rows: list[dict[str, Any]]) -> None:
        if args.json is not None:
            _write_json(args, info, rows, mean_preset_scores(rows))

    rows = evaluate_presets(
        args.presets,
        samples,
        args.methods,
        seeds,
        device,
        args.precisions,
        args.max_iter,
        args.connectivity,
        on_row=save,
        changes=args.set,
    )
    print("-" * len(PRESET_HEADER))
    for mean in mean_preset_scores(rows):
        print(_format_preset_row(mean))
    if args.json is not None:
        print(f"\nwrote {args.json}")
    return 0


def report(paths: Sequence[Path], out: Path | None = None) -> int:
    """Merge the rows of ``--presets`` JSON files, print the means as text and markdown.

    Parameters
    ----------
    paths : sequence of Path
        JSON files written by ``--presets ... --json``.
    out : Path, optional
        Also write the merged rows and means here.
    """
    rows: list[dict[str, Any]] = []
    machines = []
    for path in paths:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        rows += payload["rows"]
        machines.append(payload["machine"])
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    rows.sort(
        key=lambda r: (
            presets.index(r["preset"]), datasets.index(r["dataset"]), -ord(r["method"][1]),
            r["precision"], r["seed"], r["image"],
        )
    )
    means = mean_preset_scores(rows)
    print(PRESET_HEADER)
    print("-" * len(PRESET_HEADER))
    for mean in means:
        print(_format_preset_row(mean))
    print()
    print(markdown_table(means))
    if out is not None:
        payload = {"machines": machines, "sources": [str(p) for p in paths], "rows": rows,
                   "means": means}
        out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"\nwrote {out}")
    return 0


def markdown_table(means: Sequence[dict[str, Any]]) -> str:
    """Render `mean_preset_scores` rows as a markdown table."""
    lines = [
        "| data | method | preset | seed | images | best-match mIoU | ARI | iterations "
        "| seconds | stops |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in means:
        miou, ari = f"{m['miou']:.3f}", f"{m['ari']:.3f}"
        if "miou_spread" in m:
            miou += f" (±{m['miou_spread'] / 2:.3f})"
            ari += f" (±{m['ari_spread'] / 2:.3f})"
        stops = ", ".join(f"{k} {v}" for k, v in m["stops"].items())
        lines.append(
            f"| {m['dataset'].upper()} | {m['method'].upper()} | {m['preset']} | {m['seed']} "
            f"| {m['images']} | {miou} | {ari} | {m['iterations']:.0f} | {m['seconds']:.0f} "
            f"| {stops} |"
        )
    return "\n".join(lines)


def _write_json(
    args: argparse.Namespace,
    info: dict[str, Any],
    rows: list[dict[str, Any]],
    means: list[dict[str, Any]],
) -> None:
    """Write settings, machine, rows and means (replacing the file atomically)."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"machine": info, "settings": settings, "rows": rows, "means": means}
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    tmp.replace(args.json)


if __name__ == "__main__":
    sys.exit(main())
