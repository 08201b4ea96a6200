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
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_kanezaki import Segmenter, SPConfig, STConfig
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
    machine_info,
)
from published_baseline import run_published

METHODS = ("sp", "st")
PRECISIONS = ("auto", "fp32", "bf16")


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
    segmenter = Segmenter(
        config_class(max_iter=max_iter, plateau_iter=plateau_iter),
        device=device,
        seed=seed,
        precision=precision,
    )
    iterations = 0
    for state in segmenter.run(image):
        iterations = state.iteration
    return segmenter.predict(image), iterations


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
        default=300,
        help="iteration budget of every run (default: 300 to keep CPU runs short; the "
        "papers use 1000). The stop rule min_labels=3 applies as published.",
    )
    add_run_arguments(parser, METHODS, "run")
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
    if args.max_iter < 1:
        parser.error("--max-iter must be >= 1.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation, print per-image and mean scores, optionally write JSON."""
    args = parse_args(argv)
    missing = [i for i in args.images if not bsds_image_path(i).is_file()]
    if missing:
        names = ", ".join(f"{i}.jpg" for i in missing)
        print(f"skipped: BSDS500 evaluation data not found under {DATA_DIR} ({names}).")
        return 0
    device = resolve_device(args.device)
    info = machine_info(device)
    print(format_machine_info(info))
    print(f"max_iter {args.max_iter}, seed {args.seed}, connectivity {args.connectivity}\n")
    print(HEADER)
    print("-" * len(HEADER))
    rows = evaluate(
        args.images,
        args.methods,
        args.max_iter,
        device,
        args.precisions,
        args.baseline,
        args.seed,
        args.connectivity,
        args.plateau_iter,
    )
    means = mean_scores(rows)
    print("-" * len(HEADER))
    for mean in means:
        print(_format_row(mean))
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        payload = {"machine": info, "settings": settings, "rows": rows, "means": means}
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
