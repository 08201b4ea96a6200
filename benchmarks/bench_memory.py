"""Peak resident memory of large inputs segmented on CPU with bounded memory (issue 5).

Each case runs in its own subprocess; the figure is that process's
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the run (Linux: KiB), i.e. its whole
peak resident set: Python, torch, the input, the labels and the network's working set.

Cases (uint8 synthetic data, the paper's network: n_channels=100, n_conv=2):

- ``rgb2048``: a 2048x2048 RGB image (ST), tiled training on random crops + tiled prediction;
- ``volume3d``: a 64x512x512 grey volume, ``stack_mode="3d"`` (ST, 3-D network);
- ``shared``: the same volume, ``stack_mode="shared"`` (2-D model over the 64 planes).

A small ``max_iter`` (default 5) keeps the measurement short: the peak is reached in the
first update and in the prediction, so the budget does not change it.

    python benchmarks/bench_memory.py [--max-iter 5] [--budget-gib 1.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_case(name: str, max_iter: int, budget: int) -> dict:
    import numpy as np

    from napari_kanezaki import STConfig, segment

    rng = np.random.default_rng(0)
    # shared: one update per plane (64 updates), the reference mode's max_update=1.
    config = STConfig(max_iter=max_iter, max_update=1)
    start = time.perf_counter()
    if name == "rgb2048":
        image = rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
        labels = segment(image, config=config, memory_budget=budget, device="cpu")
    else:
        image = rng.integers(0, 256, (64, 512, 512), dtype=np.uint8)
        mode = "3d" if name == "volume3d" else "shared"
        labels = segment(image, config=config, stack_mode=mode, memory_budget=budget,
                         device="cpu")
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": name,
        "shape": list(image.shape),
        "labels_shape": list(labels.shape),
        "max_iter": max_iter,
        "memory_budget_bytes": budget,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak_kib / 1024**2, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--budget-gib", type=float, default=1.5)
    parser.add_argument("--cases", nargs="+", default=["rgb2048", "volume3d", "shared"])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, in-process
    args = parser.parse_args()
    budget = int(args.budget_gib * 1024**3)
    if args.case:
        print(json.dumps(run_case(args.case, args.max_iter, budget)))
        return
    results = []
    for case in args.cases:
        out = subprocess.run(
            [sys.executable, __file__, "--case", case, "--max-iter", str(args.max_iter),
             "--budget-gib", str(args.budget_gib)],
            check=True, capture_output=True, text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{case:10s} {str(tuple(result['shape'])):18s} peak RSS {result['peak_rss_gib']:.2f} GiB"
              f"  {result['seconds']:.0f} s  (max_iter={args.max_iter})", flush=True)
    if args.json:
        with open(args.json, "x") as f:  # never overwrite silently
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
