"""``napari-kanezaki evaluate``: score predicted label images against ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_kanezaki.cli.inputs import expand_inputs
from napari_kanezaki.cli.main import CLIError
from napari_kanezaki.cli.parser import _subparser

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to the subparsers `sub`; return its parser (runs `run`)."""
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
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the per-image and mean scores; optionally write them as CSV and JSON.

    Takes the parsed options; returns the exit status (0).
    """
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
    print(f"{'mean':<{width}}  {mean['miou']:7.4f}  {mean['ari']:7.4f}  "
          f"({mean['n_images']} images)")
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
