"""Classical baselines on the evaluation data, scored exactly as `quality.py` scores the project.

What a user would pick instead of this plugin, implemented with scikit-image here (not in
the package), on the same images and with the same scores (best-match mIoU with predicted
labels split into connected components, ARI; mean over annotators, then images):

- BSDS500 (101027, 108004, 196062), no scribbles: Felzenszwalb (scale 400, sigma 0.8,
  min_size 50) and k-means on Lab colours (k = 4, seeded);
- VOC 2012 images with the paper's scribbles: the random walker seeded by the same
  scribbles (void 255 ignored in the scores).

Runs in seconds; prints a markdown table to put beside `quality.py`'s rows.

    python benchmarks/baselines.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_kanezaki.workflows.evaluation import score_annotators

from common import (
    BSDS_IDS,
    load_bsds_ground_truth,
    load_bsds_image,
    load_voc_class_map,
    load_voc_image,
    load_voc_scribbles,
    voc_scribbled_ids,
)

VOC_VOID = 255


def felzenszwalb(image: np.ndarray) -> np.ndarray:
    """Felzenszwalb's graph segmentation, scale 400."""
    from skimage.segmentation import felzenszwalb as segment

    return segment(image, scale=400, sigma=0.8, min_size=50) + 1


def kmeans_lab(image: np.ndarray, k: int = 4, seed: int = 0) -> np.ndarray:
    """k-means (Lloyd, k-means++ start) of the Lab colours."""
    from scipy.cluster.vq import kmeans2
    from skimage.color import rgb2lab

    lab = rgb2lab(image).reshape(-1, 3)
    _, labels = kmeans2(lab, k, minit="++", seed=seed)
    return labels.reshape(image.shape[:2]) + 1


def random_walker(image: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """The random walker seeded by the scribbles (0 = not scribbled), on the colour image."""
    from skimage.segmentation import random_walker as walk

    return walk(image.astype(np.float64) / 255, scribbles, beta=90, mode="cg_j",
                channel_axis=-1)


def score(labels: np.ndarray, annotations: list[np.ndarray],
          ignore: int | None = None) -> tuple[float, float]:
    """Best-match mIoU and ARI, as `quality.py` computes them."""
    result = score_annotators(labels, annotations, 1, ignore=ignore)
    return result.miou, result.ari


def run(rows: list[dict], name: str, data: str,
        cases: Sequence[tuple[str, Callable[[], tuple[float, float]]]]) -> None:
    scores = [compute() for _, compute in cases]
    rows.append({"data": data, "baseline": name, "images": [c for c, _ in cases],
                 "miou": float(np.mean([s[0] for s in scores])),
                 "ari": float(np.mean([s[1] for s in scores]))})


def main(argv: Sequence[str] | None = None) -> int:
    """Score the baselines, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    bsds = [(i, load_bsds_image(i), load_bsds_ground_truth(i)) for i in BSDS_IDS]
    run(rows, "Felzenszwalb (scale 400)", "BSDS500",
        [(i, lambda im=im, gt=gt: score(felzenszwalb(im), gt)) for i, im, gt in bsds])
    run(rows, "k-means on Lab (k = 4)", "BSDS500",
        [(i, lambda im=im, gt=gt: score(kmeans_lab(im), gt)) for i, im, gt in bsds])
    voc = [(i, load_voc_image(i), load_voc_class_map(i), load_voc_scribbles(i))
           for i in voc_scribbled_ids()]
    run(rows, "random walker, same scribbles", "VOC with scribbles",
        [(i, lambda im=im, gt=gt, s=s: score(random_walker(im, s), [gt], VOC_VOID))
         for i, im, gt, s in voc])
    print("| data | baseline | best-match mIoU | ARI |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['data']} ({len(row['images'])} images) | {row['baseline']} | "
              f"{row['miou']:.3f} | {row['ari']:.3f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
