"""ST with scribbles: every pixel in a painted class (``painted_only``) vs the paper's behaviour.

The TIP 2020 method trained with scribbles keeps the scribbled classes and may leave other,
unpainted clusters (the paper's behaviour, ``painted_only = false``); with
``painted_only = true`` the prediction picks, for every pixel, the best of the painted
classes. The option acts at prediction only, so each (preset, seed, image) is trained once
and predicted both ways from the same weights: the two columns differ by the option alone.

Data: the VOC 2012 images of ``../shared/data/voc2012`` that have the paper's published
scribbles (``scribbles/<id>_scribble.png``, 255 = not scribbled). Scores, as defined in
``shared/data/README.md``: best-match mIoU of the connected components of the prediction
against the class map, void (255) left out, and the adjusted Rand index on the same pixels.
When the data is absent the script says so and exits with status 0.

Run from the project root, e.g.::

    python benchmarks/painted_only.py --presets interactive paper --seeds 0 1 \
        --device cpu --threads 2 --json painted_only.json

Each preset runs as shipped (``load_preset(name, "st")``); ``--max-iter`` caps the
training budget of every run (the paper preset has no plateau stop and may otherwise train
its whole 1000 iterations). The markdown table printed at the end has one row per preset
and seed (means over the images) and a mean row per preset. The figures in
``docs/scribbles.md`` come from::

    python benchmarks/painted_only.py --presets interactive paper --seeds 0 1 \
        --max-iter 300 --device cpu --threads 1
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

from napari_kanezaki import Segmenter
from napari_kanezaki.core.config import PRESETS, load_preset
from napari_kanezaki.core.devices import resolve_device
from napari_kanezaki.workflows.evaluation import score_annotators

from common import (
    DATA_DIR,
    load_voc_class_map,
    load_voc_image,
    load_voc_scribbles,
    voc_scribbled_ids,
)

#: VOC's void value in the class maps, left out of the scores.
VOC_VOID = 255
#: The two behaviours compared, by their ``painted_only`` value.
BEHAVIOURS = {"paper": False, "painted_only": True}


def run_image(
    image_id: str, preset: str, seed: int, device: torch.device, max_iter: int | None
) -> dict[str, Any]:
    """Train ST with the image's scribbles once and score both behaviours' predictions.

    Parameters
    ----------
    image_id : str
        VOC image id with published scribbles, e.g. ``"2007_001774"``.
    preset : str
        Shipped preset name (see `napari_kanezaki.core.config.PRESETS`).
    seed : int
        Seed of the initial weights.
    device : torch.device
        Device of the run.
    max_iter : int, optional
        Cap on the training budget (default: the preset's own).

    Returns
    -------
    dict
        ``image``, ``preset``, ``seed``, ``max_iter``, ``iterations``, ``stop_reason``,
        ``seconds`` (training) and, per behaviour (``paper``, ``painted_only``), its
        ``miou``, ``ari`` and ``segments`` (labels in the prediction).
    """
    config = load_preset(preset, "st")
    if max_iter is not None:
        config = config.replace(max_iter=max_iter)
    image, scribbles = load_voc_image(image_id), load_voc_scribbles(image_id)
    class_map = load_voc_class_map(image_id)
    segmenter = Segmenter(config, device=device, seed=seed)
    start = time.perf_counter()
    iterations, reason = 0, ""
    for state in segmenter.run(image, scribbles):
        iterations, reason = state.iteration, state.stop_reason
    row: dict[str, Any] = {
        "image": image_id,
        "preset": preset,
        "seed": seed,
        "max_iter": config.max_iter,
        "iterations": iterations,
        "stop_reason": reason,
        "seconds": time.perf_counter() - start,
    }
    for name, painted_only in BEHAVIOURS.items():
        # painted_only acts in predict() only: the same weights give both behaviours.
        segmenter.config = config.replace(painted_only=painted_only)
        labels = segmenter.predict(image)
        scores = score_annotators(labels, [class_map], ignore=VOC_VOID)
        row[name] = {
            "miou": scores.miou,
            "ari": scores.ari,
            "segments": int(np.unique(labels).size),
        }
    return row


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render the rows as a markdown table: per preset and seed, then per preset.

    Parameters
    ----------
    rows : sequence of dict
        `run_image` results.

    Returns
    -------
    str
        Means over the images of mIoU, ARI and label count for both behaviours.
    """
    lines = [
        "| preset | seed | images | iterations (stop) | mIoU paper | mIoU painted only "
        "| ARI paper | ARI painted only | labels paper | labels painted only |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    for preset in presets:
        of_preset = [r for r in rows if r["preset"] == preset]
        seeds = list(dict.fromkeys(r["seed"] for r in of_preset))
        groups = [(str(s), [r for r in of_preset if r["seed"] == s]) for s in seeds]
        if len(seeds) > 1:
            groups.append(("mean", of_preset))
        for seed, group in groups:
            stops = ", ".join(f"{r['iterations']} ({r['stop_reason']})" for r in group)
            cells = [preset, seed, str(len(group)), stops]
            for key, fmt in (("miou", "{:.3f}"), ("ari", "{:.3f}"), ("segments", "{:.1f}")):
                for behaviour in BEHAVIOURS:
                    cells.append(fmt.format(np.mean([r[behaviour][key] for r in group])))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", choices=PRESETS,
                        default=["interactive", "paper"], help="shipped ST presets to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1],
                        help="seeds of the initial weights (default: 0 1)")
    parser.add_argument("--images", nargs="+", default=None,
                        help="VOC image ids (default: every image with published scribbles)")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="cap on every run's training budget (default: the preset's own)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ... ")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: torch's choice)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the rows here, rewritten after every run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the markdown table; return the exit status."""
    args = parse_args(argv)
    ids = args.images or voc_scribbled_ids()
    if not ids:
        print(f"skipped: no VOC image with scribbles and class map under {DATA_DIR}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows: list[dict[str, Any]] = []
    for preset in args.presets:
        for seed in args.seeds:
            for image_id in ids:
                row = run_image(image_id, preset, seed, device, args.max_iter)
                rows.append(row)
                print(
                    f"{preset} seed {seed} {image_id}: {row['iterations']} it "
                    f"({row['stop_reason']}, {row['seconds']:.0f} s); mIoU paper "
                    f"{row['paper']['miou']:.3f}, painted only {row['painted_only']['miou']:.3f}",
                    flush=True,
                )
                if args.json is not None:
                    args.json.write_text(json.dumps(rows, indent=1))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
