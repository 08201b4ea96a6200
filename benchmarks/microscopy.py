"""Cells on the microscopy data: the project's microscopy workflow and the classical pipelines.

Scores, on ``../shared/data/microscopy`` (see its README), the documented microscopy workflow
of the project (the ``microscopy`` preset, then `imaging.objects.to_objects`) and what a
user would do instead (implemented here with scikit-image, not in the package):

- **EM** (ISBI 2012 slices 0-4, 512 x 512 uint8; cells = connected components of the label
  value 255): Otsu threshold + connected components; the same followed by the project's
  ``fill`` (background pixels within 1.5 px join the nearest object), so that the gain of the
  objects step alone is visible; the project: SP with the ``microscopy`` preset, objects
  with ``split_touching=False, fill=1.5``.
- **Confocal** (32 x 200 x 200 uint16 plant tissue, stained membranes, 86 cells): percentile
  clip 1-99.8 %, Gaussian (sigma 2), seeded watershed of the smoothed membrane signal from
  its local minima at least 5 voxels apart, in 3-D and plane by plane; the project: ST with
  the ``microscopy`` preset in ``3d`` stack mode, objects in 3-D with the classes brighter
  than the image as background (``background="bright"``: the stained membranes) and
  ``fill=inf`` (the membranes shared out among the cells, which tile the tissue as in the
  ground truth); and the same plane by plane (``independent`` stack mode, objects 2-D), to
  show what the 3-D network gains. The membrane workflow: the same 3-D run on the ridge
  response of the stack (`enhance_membranes`, Sato, sigma 1) instead of its intensity,
  three runs (seeds ``3 s``, ``3 s + 1``, ``3 s + 2`` for each ``--seeds`` value ``s``)
  whose backgrounds are combined by majority vote (``segment(..., runs=3)``,
  `consensus_objects`), touching cells split from seeds at the darkest points of the
  smoothed ridge response (``split_seeds="dark"``: the cell centres between bright membranes).

Scores (``shared/data/README.md``, cells scored as instances): best-match mIoU, the mean over
ground-truth cells of the best IoU with a predicted segment (predictions split into their
connected components, face connectivity), and the adjusted Rand index over the
ground-truth cells' pixels (the prediction's labels as they are, its background 0 one
label). Confocal results are scored in 3-D and plane by plane (each plane's cell sections
against the plane of the prediction, mean over planes); a per-plane result has no 3-D score.

Run from the project root (EM: about a minute per slice and seed; confocal: one to one and
a half minutes per seed in 3-D and 20 s plane by plane, 2 threads on a quiet 2-core machine)::

    python benchmarks/microscopy.py --seeds 0 1 --threads 2 --json

prints a markdown table and, with ``--json``, writes it with the per-image scores to
``benchmarks/results/microscopy.json`` (or the path given). When the data folder is absent
the script says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_kanezaki import enhance_membranes, segment
from napari_kanezaki.core.config import load_preset
from napari_kanezaki.imaging.objects import to_objects
from napari_kanezaki.workflows.evaluation import (
    adjusted_rand_index,
    best_match_iou,
    split_connected,
)

from common import DATA_DIR, machine_info

MICROSCOPY = DATA_DIR / "microscopy"
EM_SLICES = (0, 1, 2, 3, 4)
RESULTS = Path(__file__).resolve().parent / "results" / "microscopy.json"
#: Objects of the documented workflow on each data set (keyword arguments of to_objects).
EM_OBJECTS = {"background": "membranes", "split_touching": False, "fill": 1.5}
CONFOCAL_OBJECTS = {"background": "bright", "fill": math.inf}
#: The membrane workflow's objects: also seeded at the image's darkest points (cell centres).
MEMBRANE_OBJECTS = {**CONFOCAL_OBJECTS, "split_seeds": "dark"}
#: Runs of the membrane workflow, combined by majority vote.
RUNS = 3
#: The classical watershed: Gaussian sigma and smallest distance between seeds (voxels).
SIGMA, MIN_DISTANCE = 2.0, 5


# -- data and scores --------------------------------------------------------------------------
def load_em(index: int) -> tuple[np.ndarray, np.ndarray]:
    """An ISBI 2012 slice (uint8) and its cells (connected components of the label 255)."""
    import imageio.v3 as iio
    from skimage.measure import label

    root = MICROSCOPY / "isbi2012_em"
    image = iio.imread(root / "image" / f"{index}.png")
    cells = label(iio.imread(root / "label" / f"{index}.png") == 255, connectivity=1)
    return image, cells


def load_confocal() -> tuple[np.ndarray, np.ndarray]:
    """The confocal stack (uint16, Z Y X) and its cell ids (0 = background)."""
    root = MICROSCOPY / "confocal_3d"
    return np.load(root / "raw.npy"), np.load(root / "labels.npy").astype(np.int64)


def score_cells(prediction: np.ndarray, cells: np.ndarray) -> tuple[float, float]:
    """Best-match mIoU over the cells and ARI over the cells' pixels (see the module doc).

    Parameters
    ----------
    prediction : numpy.ndarray
        Integer labels (objects, or classes: both are split into connected components for
        the mIoU).
    cells : numpy.ndarray
        Ground-truth cell ids, 0 = not a cell.

    Returns
    -------
    miou, ari : float
    """
    ious = best_match_iou(cells, split_connected(prediction, 1))
    ids = np.unique(cells)
    inside = cells != 0
    return (float(ious[ids != 0].mean()),
            adjusted_rand_index(cells[inside], np.asarray(prediction)[inside]))


def score_planes(prediction: np.ndarray, cells: np.ndarray) -> tuple[float, float]:
    """`score_cells` of every plane (first axis) alone, mean over the planes with cells."""
    scores = [score_cells(p, c) for p, c in zip(prediction, cells, strict=True) if c.any()]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


# -- the classical pipelines ------------------------------------------------------------------
def otsu_cc(image: np.ndarray) -> np.ndarray:
    """Otsu threshold (bright cell interiors) and face-connected components."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    return label(image > threshold_otsu(image), connectivity=1)


def otsu_cc_fill(image: np.ndarray) -> np.ndarray:
    """`otsu_cc`, then the objects step's min size (20) and fill (1.5 px) of the project."""
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import expand_labels

    return expand_labels(remove_small_objects(otsu_cc(image), max_size=19), 1.5)


def membrane_watershed(raw: np.ndarray) -> np.ndarray:
    """Clip to percentiles 1-99.8, Gaussian, watershed from the local minima (2-D or 3-D)."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian
    from skimage.segmentation import watershed

    low, high = np.percentile(raw, (1, 99.8))
    smooth = gaussian(np.clip((raw - low) / (high - low), 0, 1), SIGMA)
    minima = peak_local_max(-smooth, min_distance=MIN_DISTANCE, exclude_border=False)
    seeds = np.zeros(raw.shape, np.int32)
    seeds[tuple(minima.T)] = np.arange(1, len(minima) + 1)
    return watershed(smooth, seeds)


# -- the project ------------------------------------------------------------------------------
def project_objects(image: np.ndarray, method: str, seed: int, objects: dict[str, Any],
                    stack_mode: str | None = None) -> np.ndarray:
    """The documented workflow: the ``microscopy`` preset, then `to_objects`.

    The image is passed on for a background chosen by intensity (``"bright"``).
    """
    labels = segment(image, method, config=load_preset("microscopy", method),
                     stack_mode=stack_mode, seed=seed, device="cpu")
    return to_objects(labels, ndim=3 if stack_mode == "3d" else 2, image=image, **objects)


def membrane_objects(raw: np.ndarray, seed: int) -> np.ndarray:
    """The membrane workflow: ridge response, `RUNS` 3-D ST runs, objects by majority vote."""
    return segment(enhance_membranes(raw), "st", config=load_preset("microscopy", "st"),
                   stack_mode="3d", seed=seed, device="cpu", objects=True, runs=RUNS,
                   object_options=MEMBRANE_OBJECTS)


# -- runs -------------------------------------------------------------------------------------
def timed(run: Callable[..., np.ndarray], *args: Any) -> tuple[np.ndarray, float]:
    """The result of ``run(*args)`` and its wall-clock seconds."""
    start = time.perf_counter()
    result = run(*args)
    return result, time.perf_counter() - start


def em_rows(seeds: Sequence[int], slices: Sequence[int]) -> list[dict[str, Any]]:
    """Score the EM workflows on `slices`: one row per workflow (per seed for the project)."""
    data = [load_em(i) for i in slices]
    workflows: list[tuple[str, int | None, Callable[[np.ndarray, int], np.ndarray]]] = [
        ("Otsu + connected components", None, lambda im, s: otsu_cc(im)),
        ("Otsu + connected components + fill 1.5 px", None, lambda im, s: otsu_cc_fill(im)),
    ]
    workflows += [
        ("project: microscopy preset, SP, objects (no split, fill 1.5 px)", seed,
         lambda im, s: project_objects(im, "sp", s, EM_OBJECTS))
        for seed in seeds
    ]
    rows = []
    for name, seed, run in workflows:
        per_image = []
        for index, (image, cells) in zip(slices, data, strict=True):
            objects, seconds = timed(run, image, seed)
            miou, ari = score_cells(objects, cells)
            per_image.append({"slice": index, "miou": miou, "ari": ari, "seconds": seconds})
            print(f"  EM {index} {name} seed {seed}: {miou:.3f} / {ari:.3f} ({seconds:.0f} s)",
                  flush=True)
        rows.append(_row("EM (ISBI 2012, 5 slices)", name, seed, "2-D", per_image))
    return rows


def confocal_rows(seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Score the confocal workflows, in 3-D and plane by plane."""
    raw, cells = load_confocal()
    workflows: list[tuple[str, int | None, bool, Callable[[int], np.ndarray]]] = [
        ("clip + Gaussian + seeded watershed, 3-D", None, True,
         lambda s: membrane_watershed(raw)),
        ("clip + Gaussian + seeded watershed, per plane", None, False,
         lambda s: np.stack([membrane_watershed(plane) for plane in raw])),
    ]
    workflows += [
        ("project: microscopy preset, ST 3d, objects 3-D (bright background, fill all)",
         seed, True, lambda s: project_objects(raw, "st", s, CONFOCAL_OBJECTS, stack_mode="3d"))
        for seed in seeds
    ]
    workflows += [
        (f"project: membranes enhanced (Sato, sigma 1), microscopy preset, ST 3d, {RUNS} "
         "runs voted, objects 3-D (bright background, fill all, seeds at the dark centres)",
         RUNS * seed, True,
         lambda s: membrane_objects(raw, s))
        for seed in seeds
    ]
    workflows += [
        ("project: microscopy preset, ST per plane (independent), objects 2-D (bright "
         "background, fill all)", seed, False,
         lambda s: project_objects(raw, "st", s, CONFOCAL_OBJECTS, stack_mode="independent"))
        for seed in seeds
    ]
    rows = []
    for name, seed, volume, run in workflows:
        objects, seconds = timed(run, seed)
        scores = {"planes": score_planes(objects, cells)}
        if volume:
            scores["3-D"] = score_cells(objects, cells)
        for scoring, (miou, ari) in scores.items():
            print(f"  confocal ({scoring}) {name} seed {seed}: {miou:.3f} / {ari:.3f} "
                  f"({seconds:.0f} s)", flush=True)
            rows.append(_row("confocal 32x200x200", name, seed, scoring,
                             [{"miou": miou, "ari": ari, "seconds": seconds}]))
    return rows


def _row(data: str, workflow: str, seed: int | None, scoring: str,
         per_image: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": data, "workflow": workflow, "seed": seed, "scoring": scoring,
        "miou": float(np.mean([p["miou"] for p in per_image])),
        "ari": float(np.mean([p["ari"] for p in per_image])),
        "seconds": float(np.mean([p["seconds"] for p in per_image])),
        "per_image": per_image,
    }


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table; the project's seeds averaged into one row with a range.

    Parameters
    ----------
    rows : sequence of dict
        Rows of `em_rows` and `confocal_rows`.

    Returns
    -------
    str
        Columns: data, scoring, workflow, seeds, best-match mIoU, ARI, seconds per image
        (or per stack).
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["data"], row["scoring"], row["workflow"]), []).append(row)
    lines = ["| data | scored | workflow | seeds | best-match mIoU | ARI | seconds |",
             "|---|---|---|---|---|---|---|"]
    for (data, scoring, workflow), group in groups.items():
        seeds = [r["seed"] for r in group if r["seed"] is not None]
        cells = []
        for key in ("miou", "ari"):
            values = [r[key] for r in group]
            text = f"{np.mean(values):.3f}"
            if len(values) > 1:
                text += f" ({min(values):.3f}-{max(values):.3f})"
            cells.append(text)
        seconds = np.mean([r["seconds"] for r in group])
        lines.append(f"| {data} | {scoring} | {workflow} | "
                     f"{' '.join(map(str, seeds)) or '-'} | {cells[0]} | {cells[1]} | "
                     f"{seconds:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the project's runs (default: 0)")
    parser.add_argument("--confocal-seeds", type=int, nargs="+", default=None,
                        help="seeds of the project's 3-D runs (default: --seeds)")
    parser.add_argument("--datasets", nargs="+", choices=("em", "confocal"),
                        default=["em", "confocal"], help="data sets (default: both)")
    parser.add_argument("--slices", type=int, nargs="+", default=list(EM_SLICES),
                        help="EM slices (default: 0 1 2 3 4)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", nargs="?", type=Path, const=RESULTS, default=None,
                        help=f"write the rows here (default path: {RESULTS})")
    args = parser.parse_args(argv)
    if not MICROSCOPY.is_dir():
        print(f"{MICROSCOPY} not found: nothing to score (see shared/data/README.md).")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    if "em" in args.datasets:
        rows += em_rows(args.seeds, args.slices)
    if "confocal" in args.datasets:
        rows += confocal_rows(args.seeds if args.confocal_seeds is None
                              else args.confocal_seeds)
    print(markdown_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        info = machine_info(torch.device("cpu"))
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n",
                             encoding="utf-8")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
