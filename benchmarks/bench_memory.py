"""Peak memory above the interpreter's baseline against the memory budget (issue 14).

Each case runs in its own subprocess, which

1. imports numpy, torch and napari_kanezaki and records its resident set: the *baseline*
   (``/proc/self/status`` ``VmRSS``);
2. creates the input (seeded uint8 noise), segments it with ``memory_budget`` on the CPU,
   and records its peak resident set (``VmHWM`` on Linux);
3. reports ``ratio = (peak - baseline) / budget``, which the budget promises to keep at or
   below 1.25: the input array, its normalised copies, the labels and the network's
   working set all count.

Cases (ST, n_channels=64, n_conv=2; a small ``max_iter`` keeps the run short: the peak is
reached in the first update and in prediction):

- ``2d``: a 1536x1536 RGB image, budget 192 MiB (over the budget: trained on random crops,
  predicted in tiles, labels in memory);
- ``tiled``: a 1536x1536 grey image with ``tile_shape=(384, 384)``, labels written to a
  zarr store, budget 192 MiB;
- ``3d``: a 32x192x192 grey volume, ``stack_mode="3d"`` (3-D network on crops and tiles),
  budget 256 MiB.

    python benchmarks/bench_memory.py [--max-iter 3] [--budget-mib MIB] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

#: Input shape, `segment` options and memory budget (MiB) of every case.
CASES = {
    "2d": {"shape": (1536, 1536, 3), "options": {}, "budget_mib": 192},
    "tiled": {"shape": (1536, 1536), "options": {"tile_shape": (384, 384), "zarr": True},
              "budget_mib": 192},
    "3d": {"shape": (32, 192, 192), "options": {"stack_mode": "3d"}, "budget_mib": 256},
}
#: Feature channels of the network (the paper's 100 would make the run several times longer).
N_CHANNELS = 64


def rss_bytes() -> int:
    """The resident set of this process now (Linux ``VmRSS``), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def cpu_model() -> str:
    """The CPU model named by ``/proc/cpuinfo`` (empty where it is not readable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _peak_rss() -> int:
    """This process's peak resident set in bytes.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process's own
    memory (``ru_maxrss`` would also hold the parent's resident set at fork); elsewhere
    ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_case(name: str, max_iter: int, budget: int | None, workdir: Path) -> dict:
    """Segment one case in this process and return its memory figures.

    Parameters
    ----------
    name : str
        A key of `CASES`.
    max_iter : int
        Training iterations.
    budget : int, optional
        ``memory_budget`` in bytes (default: the case's).
    workdir : Path
        Folder for the zarr store of the ``tiled`` case (must not hold one already).

    Returns
    -------
    dict
        Shape, budget, baseline and peak in MiB, their ratio and the time taken.
    """
    import numpy as np
    import torch  # noqa: F401 - part of the baseline

    from napari_kanezaki import STConfig, segment
    from napari_kanezaki.workflows import stacks  # noqa: F401 - part of the baseline

    baseline = rss_bytes()
    case = CASES[name]
    budget = budget or int(case["budget_mib"] * 2**20)
    options = dict(case["options"])
    out = workdir / f"{name}_labels.zarr" if options.pop("zarr", False) else None
    start = time.perf_counter()
    image = np.random.default_rng(0).integers(0, 256, case["shape"], dtype=np.uint8)
    config = STConfig(max_iter=max_iter, n_channels=N_CHANNELS)
    labels = segment(image, config=config, memory_budget=budget,
                     device="cpu", precision="fp32", out=out, **options)
    seconds = time.perf_counter() - start
    peak = _peak_rss()
    return {
        "case": name,
        "shape": list(case["shape"]),
        "labels_shape": list(labels.shape),
        "max_iter": max_iter,
        "budget_mib": round(budget / 2**20, 1),
        "baseline_mib": round(baseline / 2**20, 1),
        "peak_mib": round(peak / 2**20, 1),
        "ratio": round((peak - baseline) / budget, 3),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=3)
    parser.add_argument("--budget-mib", type=float, default=None,
                        help="one budget for every case (default: each case's own)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", help="write the results to this file (must not exist)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, in-process
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = None if args.budget_mib is None else int(args.budget_mib * 2**20)
    if args.case:
        result = run_case(args.case, args.max_iter, budget, Path(args.workdir))
        print(json.dumps(result))
        return
    import tempfile

    print(f"CPU: {cpu_model() or 'unknown'}; max_iter {args.max_iter}")
    print(f"{'case':6s} {'input':16s} {'budget':>8s} {'baseline':>9s} {'peak':>9s} "
          f"{'peak-base':>10s} {'ratio':>6s} {'time':>6s}")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in args.cases:
            command = [sys.executable, __file__, "--case", case, "--max-iter",
                       str(args.max_iter), "--workdir", workdir]
            if args.budget_mib is not None:
                command += ["--budget-mib", str(args.budget_mib)]
            out = subprocess.run(
                command,
                check=True, capture_output=True, text=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            shape = "x".join(map(str, result["shape"]))
            above = result["peak_mib"] - result["baseline_mib"]
            print(f"{case:6s} {shape:16s} {result['budget_mib']:6.0f} M "
                  f"{result['baseline_mib']:7.0f} M {result['peak_mib']:7.0f} M {above:8.0f} M"
                  f" {result['ratio']:6.2f} {result['seconds']:5.0f}s", flush=True)
    if args.json:
        with open(args.json, "x", encoding="utf-8") as f:  # never overwrite silently
            json.dump({"cpu": cpu_model(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
